"""hanpack.gguf.convert_checkpoint against llama.cpp itself (``llama-cpp-python``):

* for every file type, the GGUF hanpack writes straight from stories260k's safetensors
  has the same tensors, types, order and bytes as llama.cpp's ``llama_model_quantize``
  of hanpack's F32 GGUF of the same model (the F32 file is hanpack's converter alone:
  names, q/k permutation and metadata are then what llama.cpp accepts and reads);
* llama.cpp loads the files and generates the same greedy continuation as transformers'
  GGUF loader does from the same file;
* an extended-vocabulary Chinese tokenizer (Chinese-LLaMA-2's 55,296 pieces) survives:
  llama.cpp's tokenization of every corpus line equals hanpack's; so does a byte-level
  BPE ``tokenizer.json`` (LLaMA-3's, pre-tokenizer detected as llama-bpe);
* bad inputs raise specific errors, and nothing is written.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, SHARED, corpus_files, corpus_lines, require_shared
from llamacpp_reference import load_llama

import hanpack
import hanpack.gguf as hg
from hanpack.exceptions import CheckpointFormatError, InvalidArgumentError, ModelFormatError

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

STORIES = SHARED / "models" / "stories260k"
ZH_TOKENIZER = SHARED / "data" / "tokenizers" / "chinese-llama-alpaca-2"
LLAMA3_JSON = SHARED / "data" / "tokenizers" / "llama3" / "tokenizer.derived.json"
FILE_TYPES = [t for t in hg.mixture.FILE_TYPES if t != "F32"]


def convert(src: Path, dst: Path, file_type: str) -> hg.ConversionReport:
    with warnings.catch_warnings():
        # stories260k's tokenizer collapses whitespace runs, which llama.cpp does not.
        warnings.filterwarnings("ignore", message=".*normalizes text")
        return hg.convert_checkpoint(src, dst, file_type=file_type, progress=False)


def llama_quantize(src: Path, dst: Path, file_type: str) -> None:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = hg.mixture.FILE_TYPES[file_type][0]
    p.nthread = 2
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) == 0


@pytest.fixture(scope="module")
def stories_f32(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "stories-F32.gguf"
    convert(require_shared(STORIES), out, "F32")
    return out


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_every_file_type_is_byte_identical_to_llama_quantize(stories_f32, tmp_path, file_type):
    ours, ref = tmp_path / "ours.gguf", tmp_path / "ref.gguf"
    report = convert(STORIES, ours, file_type)
    llama_quantize(stories_f32, ref, file_type)
    a, b = hg.GGUFFile(ours), hg.GGUFFile(ref)
    assert list(a.tensors) == list(b.tensors)
    for name, t in b.tensors.items():
        u = a.tensors[name]
        assert (u.qtype, u.shape) == (t.qtype, t.shape), name
        assert np.array_equal(a.raw(name), b.raw(name)), f"{name} ({t.qtype}) differs"
    assert a.metadata == b.metadata
    assert report.tensor_types == {n: t.qtype for n, t in a.tensors.items()}


def test_llamacpp_and_transformers_run_the_file(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "m.gguf"
    convert(require_shared(STORIES), path, "Q8_0")
    lm = load_llama(path, n_ctx=128)
    try:
        prompt = lm.tokenize(b"Once upon a time", add_bos=True)
        ours = hanpack.Tokenizer.from_file(STORIES / "tokenizer.model").encode("Once upon a time", add_bos=True)
        assert prompt == ours
        cont = []
        for tok in lm.generate(prompt, top_k=1, temp=0.0):
            cont.append(tok)
            if len(cont) == 12:
                break
    finally:
        lm.close()
    text = hanpack.Tokenizer.from_file(STORIES / "tokenizer.model").decode(cont)
    assert len(text.split()) >= 5, text  # real words from a real model
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
    assert out[0, len(prompt):].tolist() == cont


def resized_stories(tmp_path: Path, vocab_size: int) -> Path:
    """stories260k with its embedding grown to `vocab_size` rows, as vocabulary extension
    does (the new rows' values do not matter for tokenization)."""
    transformers = pytest.importorskip("transformers")
    ckpt = tmp_path / "ckpt"
    model = transformers.AutoModelForCausalLM.from_pretrained(require_shared(STORIES))
    model.resize_token_embeddings(vocab_size)
    model.save_pretrained(ckpt)
    return ckpt


def llamacpp_mismatches(path: Path, tok: hanpack.Tokenizer, step: int) -> tuple[list, int]:
    lm = load_llama(path, vocab_only=True)
    try:
        bad, total = [], 0
        for f in corpus_files():
            lines = corpus_lines(f)[::step]
            for line, ids in zip(lines, tok.encode_batch(list(lines))):
                if lm.tokenize(line.encode("utf-8"), add_bos=False, special=False) != ids:
                    bad.append((f.name, line[:40]))
            total += len(lines)
    finally:
        lm.close()
    return bad, total


def test_a_byte_level_bpe_tokenizer_json_tokenizes_like_hanpack_in_llamacpp(tmp_path):
    tj = require_shared(LLAMA3_JSON)
    require_shared(CORPUS)
    ckpt = resized_stories(tmp_path, 128256)
    shutil.copy(tj, ckpt / "tokenizer.json")
    out = tmp_path / "l3.gguf"
    hg.convert_checkpoint(ckpt, out, file_type="Q8_0", progress=False)
    md = hg.GGUFFile(out).metadata
    assert (md["tokenizer.ggml.model"], md["tokenizer.ggml.pre"]) == ("gpt2", "llama-bpe")
    bad, total = llamacpp_mismatches(out, hanpack.Tokenizer.from_file(tj), step=5)
    assert total > 50_000
    assert not bad, f"{len(bad)} of {total} lines differ, e.g. {bad[:3]}"


def test_an_extended_chinese_vocabulary_tokenizes_like_hanpack_in_llamacpp(tmp_path):
    tok_path = require_shared(ZH_TOKENIZER / "tokenizer.model")
    require_shared(CORPUS)
    tok = hanpack.Tokenizer.from_file(tok_path)
    ckpt = resized_stories(tmp_path, tok.vocab_size)  # 512 → 55,296 rows
    shutil.copy(tok_path, ckpt / "tokenizer.model")
    shutil.copy(ZH_TOKENIZER / "tokenizer_config.json", ckpt / "tokenizer_config.json")
    out = tmp_path / "zh.gguf"
    hg.convert_checkpoint(ckpt, out, file_type="Q4_K_M", progress=False)
    assert len(hg.GGUFFile(out).metadata["tokenizer.ggml.tokens"]) == 55296
    bad, total = llamacpp_mismatches(out, tok, step=1)
    assert total > 100_000
    assert not bad, f"{len(bad)} of {total} lines differ, e.g. {bad[:3]}"


def test_a_smaller_embedding_than_the_vocabulary_is_an_error(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(require_shared(STORIES), src)
    shutil.copy(require_shared(ZH_TOKENIZER / "tokenizer.model"), src / "tokenizer.model")
    with pytest.raises(CheckpointFormatError, match="55296 pieces but the embedding has only 512 rows"):
        hg.convert_checkpoint(src, tmp_path / "x.gguf", progress=False)
    assert not (tmp_path / "x.gguf").exists()
    assert not list(tmp_path.glob(".x.gguf*"))


def test_bad_arguments_and_inputs(tmp_path):
    src = require_shared(STORIES)
    with pytest.raises(InvalidArgumentError, match="unsupported file type 'Q9_K'"):
        hg.convert_checkpoint(src, tmp_path / "x.gguf", file_type="Q9_K")
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(InvalidArgumentError, match="LLaMA-architecture"):
        hg.convert_checkpoint(other, tmp_path / "x.gguf")
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        convert(src, existing, "Q8_0")
    assert existing.read_bytes() == b"keep"
    truncated = tmp_path / "cut.gguf"
    convert(src, tmp_path / "whole.gguf", "Q8_0")
    truncated.write_bytes((tmp_path / "whole.gguf").read_bytes()[:5000])
    with pytest.raises(ModelFormatError, match="cut.gguf"):
        hg.GGUFFile(truncated)


def test_the_source_checkpoint_is_not_modified(tmp_path):
    src = require_shared(STORIES)
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    convert(src, tmp_path / "m.gguf", "Q4_0")
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir()} == before
