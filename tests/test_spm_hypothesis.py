"""Property tests against sentencepiece on generated text: CJK (Simplified and
Traditional), emoji, combining marks, full-width forms, whitespace runs, control
characters; and streaming decode against one-shot decode."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hanpack
from conftest import TOKENIZERS

spm = pytest.importorskip("sentencepiece")

_PIECES = st.sampled_from(
    list("的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长")
    + list("體與們個這來時說對還問樣裡學會將從經發點開關過書長東車")
    + ["😀", "🎉", "🇨🇳", "👨‍👩‍👧", "e\u0301", "\u0300", "Ａ", "１", "，", "。", "「", "」", "\u3000"]
    + [" ", "  ", "\t", "\n", "\r\n", "\x00", "\x01", "\x7f", "\u200b", "\ufeff"]
    + ["hello", "world", "Tokenizer", "2024", "3.14", "'s", "<tool>", "[SEP]", "中文"]
)
TEXT = st.one_of(
    st.lists(_PIECES, max_size=40).map("".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _pairs(trained_models):
    paths = list(trained_models.values())
    for rel in ("llama/tokenizer.model", "chinese-llama-alpaca/chinese_llama_tokenizer.derived.model",
                "chinese-llama-alpaca/chinese_sp.model"):
        if (TOKENIZERS / rel).exists():
            paths.append(TOKENIZERS / rel)
    return [(spm.SentencePieceProcessor(model_file=str(p)), hanpack.Tokenizer.from_file(p)) for p in paths]


@pytest.fixture(scope="module")
def pairs(trained_models):
    return _pairs(trained_models)


@SETTINGS
@given(text=TEXT)
def test_encode_matches_sentencepiece(pairs, text):
    for sp, tok in pairs:
        assert tok.encode(text) == sp.encode(text)
        assert tok.encode_as_pieces(text) == sp.encode(text, out_type=str)


@SETTINGS
@given(text=TEXT)
def test_decode_matches_sentencepiece(pairs, text):
    for sp, tok in pairs:
        ids = sp.encode(text)
        assert tok.decode(ids) == sp.decode(ids)


@SETTINGS
@given(raw=st.lists(st.integers(min_value=0, max_value=10**6), max_size=40))
def test_decode_of_arbitrary_ids_matches(pairs, raw):
    """Any id sequence, including byte pieces that do not form valid UTF-8."""
    for sp, tok in pairs:
        ids = [i % tok.vocab_size for i in raw]
        assert tok.decode(ids) == sp.decode(ids)


@SETTINGS
@given(text=TEXT, tail=st.lists(st.integers(min_value=0, max_value=10**6), max_size=8))
def test_streaming_decode_equals_one_shot(pairs, text, tail):
    for _, tok in pairs:
        ids = tok.encode(text) + [i % tok.vocab_size for i in tail]
        dec = tok.stream_decoder()
        chunks = [dec.step(i) for i in ids]
        chunks.append(dec.finish())
        whole = tok.decode(ids)
        assert "".join(chunks) == whole
        if "\ufffd" not in whole:
            assert all("\ufffd" not in c for c in chunks)
