"""Hypothesis parity for byte-level BPE: generated text (CJK, emoji, digits, whitespace
runs, apostrophes, mixed scripts, special-token text) encodes id for id like HF
``tokenizers`` and decodes back to the text. Runs on the tokenizer.json built in
test_tokenizer_bbpe (always) and on the shared LLaMA-3 / Qwen2 files when present.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hanpack
from conftest import TOKENIZERS

hf = pytest.importorskip("tokenizers")

PARTS = st.sampled_from([
    "中文", "漢字", "，", "。", "「", "」", "😀", "👨‍👩‍👧", "🇨🇳", "123", "4567", "٣", "１２", " ", "  ", "\t", "\n", "\r\n",
    "\u3000", "'s", "'LL", "don't", "I'm", "abc", "Hello", "ÜBER", "é", "e\u0301", "ﬁ", "<|endoftext|>", "<|im_start|>",
    "<|begin_of_text|>", "<|eot_id|>", "!!", "...", "$", "_", "\x00", "\u200b", "ка", "한국어", "ไทย", "𠀀",
])
TEXT = st.one_of(
    st.lists(PARTS, max_size=30).map("".join),
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Z", "S")), max_size=80),
)


@lru_cache(maxsize=None)
def tokenizers(name: str):
    if name == "tiny":
        import tempfile
        from pathlib import Path

        from test_tokenizer_bbpe import tokenizer_json, write

        path = write(Path(tempfile.mkdtemp(prefix="bbpe-hyp-")), tokenizer_json())
    else:
        path = TOKENIZERS / name / "tokenizer.derived.json"
        if not path.exists():
            pytest.skip(f"shared data not found: {path}")
    return hf.Tokenizer.from_file(str(path)), hanpack.Tokenizer.from_file(path)


@pytest.mark.parametrize("name", ["tiny", "llama3", "qwen2"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_encode_matches_hf(name, text):
    ref, tok = tokenizers(name)
    want = ref.encode(text, add_special_tokens=False).ids
    assert tok.encode(text, allowed_special="all") == want
    assert tok.decode(want) == ref.decode(want, skip_special_tokens=False)


@pytest.mark.parametrize("name", ["tiny", "llama3"])
@settings(max_examples=200, deadline=None)
@given(text=TEXT)
def test_round_trip_without_specials(name, text):
    _, tok = tokenizers(name)
    ids = tok.encode(text, disallowed_special=())
    # Without a normalizer, byte-level BPE is lossless.
    assert tok.decode(ids) == tok.normalize(text)


@lru_cache(maxsize=None)
def _byte_token_ids(name: str) -> list[int]:
    """Ids of tokens that are not whole UTF-8 text (pieces of characters, lone bytes): HF
    decodes each alone to U+FFFD."""
    ref, _ = tokenizers(name)
    return [i for i in range(ref.get_vocab_size()) if "\ufffd" in ref.decode([i], skip_special_tokens=False)]


@pytest.mark.parametrize("name", ["tiny", "llama3", "qwen2"])
@settings(max_examples=300, deadline=None)
@given(data=st.data(), skip=st.booleans())
def test_decode_of_any_ids_matches_hf(name, data, skip):
    """Any id sequence, also one that cuts characters or holds lone bytes (U+FFFD), or
    special tokens to skip, decodes as HF does."""
    ref, tok = tokenizers(name)
    n = ref.get_vocab_size()
    pieces = _byte_token_ids(name)
    some_id = st.integers(0, n - 1)
    ids = data.draw(st.lists(
        st.one_of(some_id, st.sampled_from(pieces), st.sampled_from(tok.encode("中文漢字😀 é"))) if pieces else some_id,
        max_size=40,
    ))
    assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
