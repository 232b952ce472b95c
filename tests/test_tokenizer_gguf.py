"""Tokenizers read from llama.cpp GGUF files (``Tokenizer.from_file``).

* Byte-level BPE (``tokenizer.ggml.model = "gpt2"``): llama.cpp's test vectors for the
  vocabularies that exist only as GGUF (gpt-2, falcon, deepseek-llm, deepseek-coder), id
  for id; their ``.out`` files are HF ``tokenizers``' ids, so the same tokenizer saved as
  ``tokenizer.json`` must give them in HF too.
* SentencePiece-style (``"llama"``): the llama-spm and phi-3 vectors, and the ``.model``
  that ``save()`` writes gives them in stock sentencepiece.
* GGUF files written by the test itself (no shared data needed): loading, encoding,
  decoding (the SentencePiece one against sentencepiece), and the errors for truncated,
  lying and unsupported files.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import hanpack
from conftest import TOKENIZERS, llamacpp_vectors, require_shared
from hanpack.exceptions import ModelFormatError, UnsupportedTokenizerError

VOCABS = ["gpt-2", "falcon", "deepseek-llm", "deepseek-coder"]
SPM_VOCABS = ["llama-spm", "phi-3"]


def gguf_path(name: str) -> Path:
    return require_shared(TOKENIZERS / "llamacpp-vocab" / f"ggml-vocab-{name}.gguf")


@pytest.mark.shared
@pytest.mark.parametrize("name", VOCABS)
def test_llamacpp_vectors_from_gguf(name):
    tok = hanpack.Tokenizer.from_file(gguf_path(name))
    vectors = llamacpp_vectors(name)
    bad = [(t, want, got) for t, want in vectors if (got := tok.encode(t, allowed_special="all")) != want]
    assert not bad, f"{len(bad)} of {len(vectors)} llama.cpp {name} vectors differ, first: {bad[0]!r}"


@pytest.mark.shared
@pytest.mark.parametrize("name", VOCABS)
def test_saved_tokenizer_json_gives_the_same_ids_in_hf(tmp_path, name):
    hf = pytest.importorskip("tokenizers")
    tok = hanpack.Tokenizer.from_file(gguf_path(name))
    out = tmp_path / "tokenizer.json"
    tok.save(out)
    ref = hf.Tokenizer.from_file(str(out))
    for text, want in llamacpp_vectors(name):
        assert ref.encode(text, add_special_tokens=False).ids == want, repr(text)
        # Decoding matches HF's ByteLevel decoder (a vocabulary without some byte's
        # token gives U+FFFD in both).
        assert tok.decode(want) == ref.decode(want, skip_special_tokens=False), repr(text)


@pytest.mark.shared
@pytest.mark.parametrize("name", SPM_VOCABS)
def test_sentencepiece_gguf_vectors_and_saved_model(tmp_path, name):
    spm = pytest.importorskip("sentencepiece")
    tok = hanpack.Tokenizer.from_file(gguf_path(name))
    assert tok.model_type == "bpe"
    vectors = llamacpp_vectors(name)
    bad = [(t, want, got) for t, want in vectors if (got := tok.encode(t)) != want]
    assert not bad, f"{len(bad)} of {len(vectors)} llama.cpp {name} vectors differ, first: {bad[0]!r}"
    tok.save(tmp_path / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    for text, want in vectors:
        assert sp.encode(text) == want, repr(text)
        assert tok.decode(want) == sp.decode(want), repr(text)


# -- GGUF files made here ---------------------------------------------------------


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _kv_str(key: str, value: str) -> bytes:
    return _str(key) + struct.pack("<I", 8) + _str(value)


def _kv_strs(key: str, values: list[str]) -> bytes:
    return _str(key) + struct.pack("<IIQ", 9, 8, len(values)) + b"".join(_str(v) for v in values)


def _kv_i32s(key: str, values: list[int]) -> bytes:
    return _str(key) + struct.pack("<IIQ", 9, 5, len(values)) + struct.pack(f"<{len(values)}i", *values)


def _kv_f32s(key: str, values: list[float]) -> bytes:
    return _str(key) + struct.pack("<IIQ", 9, 6, len(values)) + struct.pack(f"<{len(values)}f", *values)


def _kv_u32(key: str, value: int) -> bytes:
    return _str(key) + struct.pack("<II", 4, value)


def make_spm_gguf() -> bytes:
    """A SentencePiece-style vocabulary: specials, byte pieces, a few merges by score."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    words = ["▁", "a", "b", "c", "ab", "▁a", "▁ab", "abc", "▁abc", "汉", "字", "汉字"]
    tokens += words
    types += [1] * len(words)
    scores = [0.0] * (3 + 256) + [-float(i) for i in range(len(words))]
    kvs = [
        _kv_str("tokenizer.ggml.model", "llama"),
        _kv_strs("tokenizer.ggml.tokens", tokens),
        _kv_f32s("tokenizer.ggml.scores", scores),
        _kv_i32s("tokenizer.ggml.token_type", types),
        _kv_u32("tokenizer.ggml.unknown_token_id", 0),
        _kv_u32("tokenizer.ggml.bos_token_id", 1),
        _kv_u32("tokenizer.ggml.eos_token_id", 2),
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def test_sentencepiece_gguf_written_here_matches_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    path = tmp_path / "vocab.gguf"
    path.write_bytes(make_spm_gguf())
    tok = hanpack.Tokenizer.from_file(path)
    assert (tok.vocab_size, tok.unk_id, tok.bos_id, tok.eos_id) == (271, 0, 1, 2)
    tok.save(tmp_path / "vocab.model")
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "vocab.model"))
    for text in ["abc ab a", "  abcabc", "汉字 b 汉", "xyz ü", "", "a\tb\nc"]:
        assert tok.encode(text) == sp.encode(text), repr(text)
        assert tok.decode(sp.encode(text)) == sp.decode(sp.encode(text)), repr(text)
    assert tok.encode_as_pieces("abc ab") == ["▁abc", "▁ab"]


def _byte_level(b: int) -> str:
    """GPT-2's byte → printable character map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if b in printable:
        return chr(b)
    return chr(256 + sorted(set(range(256)) - set(printable)).index(b))


def make_gguf(model: str = "gpt2", pre: str = "gpt-2") -> bytes:
    tokens = [_byte_level(b) for b in range(256)]
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    tokens.append("<|endoftext|>")
    types = [1] * (len(tokens) - 1) + [3]
    kvs = [
        _kv_str("tokenizer.ggml.model", model),
        _kv_str("tokenizer.ggml.pre", pre),
        _kv_strs("tokenizer.ggml.tokens", tokens),
        _kv_i32s("tokenizer.ggml.token_type", types),
        _kv_strs("tokenizer.ggml.merges", merges),
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)


def test_gguf_written_here(tmp_path):
    path = tmp_path / "vocab.gguf"
    path.write_bytes(make_gguf())
    tok = hanpack.Tokenizer.from_file(path)
    assert tok.model_type == "bbpe" and tok.vocab_size == 263
    ids = tok.encode("hello wo<|endoftext|>", allowed_special="all")
    assert [tok.id_to_piece(i) for i in ids] == ["hello", "Ġwo", "<|endoftext|>"]
    assert tok.decode(ids) == "hello wo<|endoftext|>"
    assert tok.decode(ids, skip_special_tokens=True) == "hello wo"
    assert tok.special_tokens == {"<|endoftext|>": 262}


def test_truncated_gguf_files(tmp_path):
    data = make_gguf()
    for cut in [0, 3, 4, 8, 20, 40, len(data) // 2, len(data) - 1]:
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match=f"cut{cut}.gguf") as e:
            hanpack.Tokenizer.from_file(path)
        if cut >= 4:
            assert "GGUF" in str(e.value)


def test_lying_gguf_lengths(tmp_path):
    data = bytearray(make_gguf())
    data[24:32] = struct.pack("<Q", 1 << 62)  # the first key claims 2**62 bytes
    path = tmp_path / "lie.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="more than the"):
        hanpack.Tokenizer.from_file(path)


@pytest.mark.parametrize("model,pre,what", [("bert", "default", '"bert"'), ("gpt2", "no-such-pre", '"no-such-pre"')])
def test_unsupported_gguf_tokenizers(tmp_path, model, pre, what):
    path = tmp_path / "other.gguf"
    path.write_bytes(make_gguf(model, pre))
    with pytest.raises(UnsupportedTokenizerError, match=what):
        hanpack.Tokenizer.from_file(path)
