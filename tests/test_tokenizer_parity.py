"""Id-for-id parity with sentencepiece 0.2.3 on whole corpora.

* Models trained here (always) on their own test lines.
* Every shared SentencePiece model and every trained model x every shared corpus file,
  every line: ``encode_batch`` against ``sp.encode`` and ``decode_batch`` of sentencepiece's
  ids against ``sp.decode``. sentencepiece runs once per (model, file).
* llama.cpp's tokenizer test vectors for LLaMA's SentencePiece vocabulary.

Any mismatch fails, on any line of any length (the Unigram Viterbi mirrors sentencepiece
0.2.3's float arithmetic and score reset, so long lines match too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import hanpack
from conftest import (
    CORPUS,
    TOKENIZERS,
    TRAINED,
    corpus_files,
    corpus_lines,
    describe_mismatches,
    llamacpp_vectors,
    load_pair,
    model_id,
    require_shared,
    shared_models,
)

spm = pytest.importorskip("sentencepiece")

def _check_lines(sp, tok: hanpack.Tokenizer, lines: list[str], where: str) -> None:
    """Asserts encode/decode parity on `lines`."""
    assert lines, f"{where}: no lines to test"
    ref = sp.encode(lines)
    got = tok.encode_batch(lines)
    assert len(got) == len(lines)
    bad_encode = [i for i, (r, g) in enumerate(zip(ref, got)) if r != g]

    ref_text = sp.decode(ref)
    got_text = tok.decode_batch(ref)
    bad_decode = [i for i, (r, g) in enumerate(zip(ref_text, got_text)) if r != g]
    one_thread = tok.decode_batch(ref, num_threads=1)  # one thread has a path of its own

    problems = []
    if bad_encode:
        problems.append(f"encode: {len(bad_encode)} of {len(lines)} lines differ")
        problems += describe_mismatches(lines, ref, got)
    if bad_decode:
        problems.append(f"decode of sentencepiece's ids: {len(bad_decode)} of {len(lines)} lines differ")
        problems += describe_mismatches(lines, ref_text, got_text, what="text")
    if one_thread != got_text:
        problems.append("decode_batch on one thread differs from decode_batch on all cores")
    if not problems:
        return
    pytest.fail(f"{where}:\n  " + "\n  ".join(problems), pytrace=False)


# -- models trained here --------------------------------------------------------------


@pytest.mark.parametrize("name", TRAINED)
def test_trained_model_matches_sentencepiece(trained_models, sample_lines, name):
    sp, tok = load_pair(trained_models[name])
    _check_lines(sp, tok, sample_lines, name)
    # Single-text calls and pieces agree too.
    for line in sample_lines:
        assert tok.encode(line) == sp.encode(line), line
        assert tok.encode_as_pieces(line) == sp.encode(line, out_type=str), line


# -- every model x every corpus file ----------------------------------------------------

_MODELS = [pytest.param(("trained", n), id=f"trained:{n}") for n in TRAINED] + [
    pytest.param(("shared", p), id=model_id(p), marks=pytest.mark.shared)
    for p in (shared_models() or [TOKENIZERS])
]
_FILES = corpus_files() or [CORPUS]


@pytest.fixture
def model_path(request, trained_models) -> Path:
    kind, value = request.param
    return trained_models[value] if kind == "trained" else require_shared(value)


@pytest.mark.shared
@pytest.mark.parametrize("corpus", _FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("model_path", _MODELS, indirect=True)
def test_every_corpus_line(model_path: Path, corpus: Path):
    require_shared(corpus)
    sp, tok = load_pair(model_path)
    _check_lines(sp, tok, list(corpus_lines(corpus)), f"{model_path.name} on {corpus.name}")


@pytest.mark.shared
def test_shared_data_is_all_there():
    """Guards the cross product above against silently testing nothing."""
    require_shared(TOKENIZERS)
    require_shared(CORPUS)
    assert len(shared_models()) >= 11, [model_id(p) for p in shared_models()]
    assert len(corpus_files()) >= 25
    assert sum(len(corpus_lines(f)) for f in corpus_files()) > 300_000


# -- llama.cpp test vectors ---------------------------------------------------------------


_llamacpp_vectors = llamacpp_vectors


@pytest.mark.shared
def test_llamacpp_spm_vectors():
    """The vectors are LLaMA's vocabulary with no BOS: they equal ``sp.encode(text)``
    (checked here too), so hanpack must give them with add_bos=False, and with BOS prepended
    for add_bos=True."""
    vectors = _llamacpp_vectors("llama-spm")
    sp, tok = load_pair(require_shared(TOKENIZERS / "llama" / "tokenizer.model"))
    assert [sp.encode(t) for t, _ in vectors] == [want for _, want in vectors]
    texts = [t for t, _ in vectors]
    expected = [want for _, want in vectors]
    problems = describe_mismatches(texts, expected, [tok.encode(t) for t in texts], limit=10)
    problems += describe_mismatches(texts, expected, tok.encode_batch(texts), limit=10)
    assert problems == [], "\n".join(problems)
    assert [tok.encode(t, add_bos=True) for t in texts] == [[sp.bos_id()] + w for w in expected]
    assert tok.decode_batch(expected) == [sp.decode(w) for w in expected]
