"""Id-for-id parity with sentencepiece 0.2.x: encode and decode, on models trained here and
on every shared SentencePiece model x every shared corpus line."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

import hanpack
from conftest import TOKENIZERS, corpus_files, read_lines, require_shared, shared_models

spm = pytest.importorskip("sentencepiece")


def _mismatches(sp, tok: hanpack.Tokenizer, lines: list[str]) -> list[str]:
    """Human-readable descriptions of lines where encode or decode differ."""
    problems = []
    got = tok.encode_batch(lines)
    ref = sp.encode(lines)
    for line, r, g in zip(lines, ref, got):
        if r != g:
            problems.append(f"encode {line[:60]!r}: sentencepiece {r[:12]} hanpack {g[:12]}")
    for line, r, d in zip(lines, ref, tok.decode_batch(ref)):
        if d != sp.decode(r):
            problems.append(f"decode of {line[:60]!r}: {sp.decode(r)[:40]!r} vs {d[:40]!r}")
    return problems


@pytest.mark.parametrize("name", ["bpe_bytefallback", "unigram_nfkc", "bpe_userdefined", "bpe_no_bos"])
def test_trained_models_match_sentencepiece(trained_models, sample_lines, name):
    path = trained_models[name]
    sp = spm.SentencePieceProcessor(model_file=str(path))
    tok = hanpack.Tokenizer.from_file(path)
    assert _mismatches(sp, tok, sample_lines) == []
    for line in sample_lines:
        assert tok.encode_as_pieces(line) == sp.encode(line, out_type=str), line


@lru_cache(maxsize=None)
def _corpus(path: Path) -> tuple[str, ...]:
    return tuple(read_lines(path))


@pytest.mark.shared
@pytest.mark.parametrize("model", shared_models() or [TOKENIZERS / "missing.model"], ids=lambda p: p.parent.name + "/" + p.name)
def test_shared_model_on_every_corpus_line(model: Path):
    require_shared(model)
    files = corpus_files()
    if not files:
        pytest.skip("shared corpora not found under ../shared/data/corpus")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tok = hanpack.Tokenizer.from_file(model)
    report = []
    total = 0
    for f in files:
        lines = list(_corpus(f))
        total += len(lines)
        bad = _mismatches(sp, tok, lines)
        if bad:
            report.append(f"{f.name}: {len(bad)} mismatches, e.g. {bad[:3]}")
    assert total > 1000
    assert report == [], "\n".join(report)


def _llamacpp_vectors(name: str) -> list[tuple[str, list[int]]]:
    base = require_shared(TOKENIZERS / "llamacpp-vocab" / f"ggml-vocab-{name}.gguf.inp")
    texts = base.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = base.with_suffix(".out").read_text(encoding="utf-8").split("\n")
    assert len(texts) == len(outs)
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


@pytest.mark.shared
def test_llamacpp_spm_vectors():
    """llama.cpp's tokenizer tests for LLaMA's SentencePiece vocabulary (no BOS added)."""
    vectors = _llamacpp_vectors("llama-spm")
    tok = hanpack.Tokenizer.from_file(require_shared(TOKENIZERS / "llama" / "tokenizer.model"))
    failures = [(t, want, tok.encode(t)) for t, want in vectors if tok.encode(t) != want]
    assert len(vectors) >= 40
    assert failures == []
