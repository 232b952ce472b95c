"""Property tests against sentencepiece 0.2.3 on generated text.

The text mixes CJK (Simplified, Traditional, rare extension blocks), emoji (ZWJ sequences,
flags, skin tones), combining marks, full-width and half-width forms, whitespace runs
(spaces, tabs, U+3000, newlines), control and format characters, and ASCII. Models: the
ones trained here, and, when ../shared is present, LLaMA, Chinese-LLaMA-2 and the
Chinese-LLaMA Unigram model (nmt_nfkc).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CHINESE_LLAMA, CHINESE_SP_UNIGRAM, LLAMA, TRAINED, load_pair, model_id, require_shared

spm = pytest.importorskip("sentencepiece")

# The `pair` fixture is function-scoped but only hands out models loaded once (load_pair).
# HANPACK_HYPOTHESIS_EXAMPLES raises the example count for a longer bug hunt.
SETTINGS = settings(
    max_examples=int(os.environ.get("HANPACK_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

_SIMPLIFIED = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长这说时对还问样里学会将从经发点开关过书长东车门马鸟鱼龙"
_TRADITIONAL = "體與們個這來時說對還問樣裡學會將從經發點開關過書長東車門馬鳥魚龍國語讀寫聽臺灣繁簡電腦網絡資料"
_EMOJI = ["😀", "🎉", "🦙", "🇨🇳", "🇹🇼", "👨‍👩‍👧", "👍🏽", "❤️", "☃", "🀄", "1️⃣"]
_WHITESPACE = " \t\n\r\u3000\u00a0\u2003\u200b"

cjk = st.one_of(
    st.sampled_from(_SIMPLIFIED),
    st.sampled_from(_TRADITIONAL),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK Unified Ideographs
    st.characters(min_codepoint=0x3400, max_codepoint=0x4DBF),  # Extension A
    st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF),  # Extension B (4-byte UTF-8)
    st.sampled_from(list("，。、；：？！「」『』（）《》…—")),
)
emoji = st.one_of(st.sampled_from(_EMOJI), st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF))
combining = st.one_of(
    st.characters(categories=["Mn"]),
    st.sampled_from(["e\u0301", "a\u0308", "n\u0303", "\u0301\u0301", "\u3099", "か\u3099"]),
)
fullwidth = st.one_of(
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFF5E),  # full-width ASCII
    st.characters(min_codepoint=0xFF61, max_codepoint=0xFF9F),  # half-width katakana
    st.characters(min_codepoint=0xFFE0, max_codepoint=0xFFE6),  # full-width signs
    st.sampled_from(["①", "㈱", "ﬁ", "Ⅻ", "㍻", "™", "½"]),  # NFKC-compatibility characters
)
whitespace = st.text(alphabet=_WHITESPACE, min_size=1, max_size=6)
control = st.one_of(st.characters(categories=["Cc"]), st.characters(categories=["Cf"]))
ascii_words = st.one_of(
    st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True),
    st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["hello", "world", "Tokenizer", "'s", "<tool>", "[SEP]", "中文", "▁", "<unk>", "<s>", "</s>"]),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
)
anything = st.characters(exclude_categories=["Cs"])  # every code point UTF-8 can carry

TEXT = st.lists(
    st.one_of(cjk, cjk, emoji, combining, fullwidth, whitespace, control, ascii_words, ascii_words, anything),
    max_size=40,
).map("".join)


# -- models -----------------------------------------------------------------------------

_SHARED = [LLAMA, CHINESE_LLAMA, CHINESE_SP_UNIGRAM]
_MODELS = [pytest.param(("trained", n), id=f"trained:{n}") for n in TRAINED] + [
    pytest.param(("shared", p), id=model_id(p), marks=pytest.mark.shared) for p in _SHARED
]


@pytest.fixture(params=_MODELS)
def pair(request, trained_models):
    kind, value = request.param
    path: Path = trained_models[value] if kind == "trained" else require_shared(value)
    return load_pair(path)


@pytest.mark.shared
def test_shared_unigram_model_is_unigram():
    """The hypothesis runs cover a shared Unigram model (when ../shared is present)."""
    _, tok = load_pair(require_shared(CHINESE_SP_UNIGRAM))
    assert tok.model_type == "unigram"


# -- properties -------------------------------------------------------------------------


@SETTINGS
@given(text=TEXT)
def test_encode_ids_and_pieces(pair, text):
    sp, tok = pair
    assert tok.encode(text) == sp.encode(text)
    if sp.bos_id() >= 0 and sp.eos_id() >= 0:
        assert tok.encode(text, add_bos=True, add_eos=True) == sp.encode(text, add_bos=True, add_eos=True)
    assert tok.encode_as_pieces(text) == sp.encode(text, out_type=str)
    assert tok.normalize(text) == sp.normalize(text)


@SETTINGS
@given(texts=st.lists(TEXT, max_size=8))
def test_encode_batch(pair, texts):
    sp, tok = pair
    assert tok.encode_batch(texts) == [sp.encode(t) for t in texts]


@SETTINGS
@given(text=TEXT)
def test_decode_of_encode(pair, text):
    sp, tok = pair
    ids = sp.encode(text)
    assert tok.decode(ids) == sp.decode(ids)
    assert tok.decode(tok.encode(text)) == sp.decode(ids)


@SETTINGS
@given(raw=st.lists(st.integers(min_value=0, max_value=2**31 - 1), max_size=40))
def test_decode_of_arbitrary_ids(pair, raw):
    """Any id sequence: control pieces, <unk>, byte pieces that are not valid UTF-8."""
    sp, tok = pair
    ids = [i % tok.vocab_size for i in raw]
    assert tok.decode(ids) == sp.decode(ids)


def _stream(tok, ids: list[int]) -> list[str]:
    dec = tok.stream_decoder()
    chunks = [dec.step(i) for i in ids]
    chunks.append(dec.finish())
    return chunks


def _check_stream(tok, ids: list[int]) -> None:
    whole = tok.decode(ids)
    chunks = _stream(tok, ids)
    assert "".join(chunks) == whole, (ids, chunks)
    if "\ufffd" not in whole:
        assert not any("\ufffd" in c for c in chunks[:-1]), (ids, chunks)


@SETTINGS
@given(text=TEXT, tail=st.lists(st.integers(min_value=0, max_value=2**31 - 1), max_size=8))
def test_streaming_decode(pair, text, tail):
    """Concatenated step outputs + finish == decode(ids); no step emits U+FFFD unless the
    one-shot decode has one. Also for text followed by arbitrary ids."""
    sp, tok = pair
    ids = tok.encode(text)
    _check_stream(tok, ids)
    _check_stream(tok, ids + [i % tok.vocab_size for i in tail])
    # finish() resets: the same decoder gives the same result twice.
    dec = tok.stream_decoder()
    first = "".join(dec.step(i) for i in ids) + dec.finish()
    second = "".join(dec.step(i) for i in ids) + dec.finish()
    assert first == second == sp.decode(ids)


@pytest.fixture
def byte_pair(pair):
    """`pair` and the ids of its byte pieces; skips models without byte fallback."""
    sp, tok = pair
    byte_ids = [i for i in range(tok.vocab_size) if sp.is_byte(i)]
    if not byte_ids:
        pytest.skip("model has no byte-fallback pieces")
    assert len(byte_ids) == 256
    return sp, tok, byte_ids


@SETTINGS
@given(data=st.data())
def test_streaming_decode_of_byte_pieces(byte_pair, data):
    """Byte-fallback pieces that split characters, or that never form valid UTF-8, mixed
    with ordinary pieces."""
    sp, tok, byte_ids = byte_pair
    ids = data.draw(
        st.lists(st.one_of(st.sampled_from(byte_ids), st.integers(0, tok.vocab_size - 1)), max_size=30), label="ids"
    )
    _check_stream(tok, ids)
    assert tok.decode(ids) == sp.decode(ids)
