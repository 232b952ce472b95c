"""Byte-level BPE id-for-id parity on the shared corpora (every line of every file).

* LLaMA-3 and Qwen2 ``tokenizer.derived.json`` against HF ``tokenizers`` (encode and decode).
* LLaMA-3's tiktoken ``tokenizer.model`` (loaded by ``from_file``'s format detection)
  against ``tiktoken`` with LLaMA-3's pattern; Qwen2 as a tiktoken rank file made from its
  ``vocab.json`` against ``tiktoken`` with Qwen2's pattern.
* Qwen2's ``vocab.json`` + ``merges.txt`` (with NFC) against HF on a sample of lines.
* llama.cpp's test vectors for the llama-bpe, qwen2 and deepseek-r1-qwen vocabularies.

Special-token text is allowed everywhere (HF always matches added tokens).
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

import pytest

import hanpack
from conftest import TOKENIZERS, corpus_files, corpus_lines, describe_mismatches, llamacpp_vectors, require_shared

hf = pytest.importorskip("tokenizers")

LLAMA3_JSON = TOKENIZERS / "llama3" / "tokenizer.derived.json"
LLAMA3_TIKTOKEN = TOKENIZERS / "llama3" / "tokenizer.model"
QWEN2_JSON = TOKENIZERS / "qwen2" / "tokenizer.derived.json"
QWEN2_DIR = TOKENIZERS / "qwen2"

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")

FILES = corpus_files()
FILE_IDS = [p.name for p in FILES]
ALL = "all"


@lru_cache(maxsize=None)
def hf_pair(path: Path):
    require_shared(path)
    return hf.Tokenizer.from_file(str(path)), hanpack.Tokenizer.from_file(path)


def _fail(where: str, lines, want, got, what: str = "ids") -> None:
    bad = [i for i, (a, b) in enumerate(zip(want, got)) if a != b]
    if bad or len(want) != len(got):
        msg = f"{where}: {len(bad)} of {len(lines)} lines differ ({what})\n  " + "\n  ".join(
            describe_mismatches(lines, want, got, what=what)
        )
        pytest.fail(msg.replace("sentencepiece", "reference"), pytrace=False)


def _no_corpus():
    if not FILES:
        pytest.skip(f"shared data not found: {TOKENIZERS.parent / 'corpus'}")


@pytest.mark.shared
@pytest.mark.parametrize("name", ["llama3", "qwen2"])
@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_hf_json_parity(name, path):
    ref, tok = hf_pair(LLAMA3_JSON if name == "llama3" else QWEN2_JSON)
    lines = list(corpus_lines(path))
    want = [e.ids for e in ref.encode_batch(lines, add_special_tokens=False)]
    _fail(f"{name} x {path.name}", lines, want, tok.encode_batch(lines, allowed_special=ALL))
    _fail(f"{name} x {path.name}", lines, ref.decode_batch(want, skip_special_tokens=False), tok.decode_batch(want), "text")


@lru_cache(maxsize=None)
def tiktoken_pair(name: str):
    tiktoken = pytest.importorskip("tiktoken")
    if name == "llama3":
        tok = hanpack.Tokenizer.from_file(require_shared(LLAMA3_TIKTOKEN))
        ranks = {}
        for line in LLAMA3_TIKTOKEN.read_bytes().splitlines():
            if line:
                b, r = line.split()
                ranks[base64.b64decode(b)] = int(r)
        enc = tiktoken.Encoding("llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=tok.special_tokens)
        return enc, tok
    vocab = json.loads(require_shared(QWEN2_DIR / "vocab.json").read_text(encoding="utf-8"))
    from test_tokenizer_bbpe import byte_chars

    to_byte = {c: b for b, c in enumerate(byte_chars())}
    ranks = {bytes(to_byte[c] for c in piece): i for piece, i in vocab.items()}
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="qwen2-ranks-"))
    rank_file = folder / "qwen2.tiktoken"
    rank_file.write_text("".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in sorted(ranks.items(), key=lambda t: t[1])))
    tok = hanpack.Tokenizer.from_tiktoken(rank_file, pattern="qwen2", special_tokens=specials)
    enc = tiktoken.Encoding("qwen2", pat_str=QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    return enc, tok


@pytest.mark.shared
@pytest.mark.parametrize("name", ["llama3", "qwen2"])
@pytest.mark.parametrize("path", FILES, ids=FILE_IDS)
def test_tiktoken_parity(name, path):
    enc, tok = tiktoken_pair(name)
    lines = list(corpus_lines(path))
    want = enc.encode_batch(lines, allowed_special="all", num_threads=2)
    _fail(f"tiktoken {name} x {path.name}", lines, want, tok.encode_batch(lines, allowed_special=ALL))
    _fail(f"tiktoken {name} x {path.name}", lines, enc.decode_batch(want), tok.decode_batch(want), "text")


@pytest.mark.shared
def test_qwen2_vocab_merges_files():
    ref, _ = hf_pair(QWEN2_JSON)
    tok = hanpack.Tokenizer.from_vocab_merges(
        require_shared(QWEN2_DIR / "vocab.json"), require_shared(QWEN2_DIR / "merges.txt"), pattern="qwen2",
        special_tokens={"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}, nfc=True,
    )
    _no_corpus()
    lines = [line for p in FILES for line in corpus_lines(p)[::50]]
    want = [e.ids for e in ref.encode_batch(lines, add_special_tokens=False)]
    _fail("qwen2 vocab.json + merges.txt", lines, want, tok.encode_batch(lines, allowed_special=ALL))


@pytest.mark.shared
@pytest.mark.parametrize("vocab,path", [("llama-bpe", LLAMA3_JSON), ("qwen2", QWEN2_JSON), ("deepseek-r1-qwen", QWEN2_JSON)])
def test_llamacpp_vectors(vocab, path):
    vectors = llamacpp_vectors(vocab)
    _, tok = hf_pair(path)
    texts = [t for t, _ in vectors]
    want = [w for _, w in vectors]
    _fail(f"llama.cpp {vocab}", texts, want, [tok.encode(t, allowed_special=ALL) for t in texts])
