"""The Tokenizer API: special ids, vocabulary queries, batch forms, threads, pickling,
saving, immutability."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest

import hanpack
from conftest import TOKENIZERS, require_shared

spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def pair(trained_models):
    path = trained_models["bpe_bytefallback"]
    return spm.SentencePieceProcessor(model_file=str(path)), hanpack.Tokenizer.from_file(path)


def test_special_ids_and_vocab_match_sentencepiece(pair):
    sp, tok = pair
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id())
    assert tok.vocab_size == len(tok) == sp.get_piece_size()
    assert tok.model_type == "bpe"
    for i in range(tok.vocab_size):
        piece = tok.id_to_piece(i)
        assert piece == sp.id_to_piece(i)
        assert tok.piece_to_id(piece) == sp.piece_to_id(piece)
        assert tok.piece_score(i) == pytest.approx(sp.get_score(i), abs=0)
        kind = tok.piece_type(i)
        assert (kind == "CONTROL") == sp.is_control(i)
        assert (kind == "BYTE") == sp.is_byte(i)
        assert (kind == "UNKNOWN") == sp.is_unknown(i)
    assert tok.piece_to_id("no such piece ☃☃") == sp.piece_to_id("no such piece ☃☃")


def test_bos_eos(pair, sample_lines):
    sp, tok = pair
    for line in sample_lines[:50]:
        assert tok.encode(line, add_bos=True, add_eos=True) == sp.encode(line, add_bos=True, add_eos=True)
    assert tok.encode_batch(sample_lines[:5], add_bos=True) == [sp.encode(t, add_bos=True) for t in sample_lines[:5]]


def test_numpy_batch_equals_list_batch(pair, sample_lines):
    _, tok = pair
    rows = tok.encode_batch(sample_lines, add_eos=True)
    ids, offsets = tok.encode_batch_numpy(sample_lines, add_eos=True)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64
    assert offsets.shape == (len(sample_lines) + 1,) and offsets[0] == 0 and offsets[-1] == len(ids)
    assert [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(rows))] == rows


def test_thread_counts_agree(pair, sample_lines):
    _, tok = pair
    lines = sample_lines * 20
    one = tok.encode_batch(lines, num_threads=1)
    assert tok.encode_batch(lines, num_threads=2) == one == tok.encode_batch(lines)
    assert tok.decode_batch(one, num_threads=1) == tok.decode_batch(one, num_threads=2) == [tok.decode(r) for r in one]
    ids, offsets = tok.encode_batch_numpy(lines, num_threads=2)
    assert ids.tolist() == [i for row in one for i in row]


def test_decode_accepts_numpy_and_tuples(pair):
    _, tok = pair
    ids = tok.encode("繁體與简体 mixed 😀")
    assert tok.decode(np.array(ids)) == tok.decode(np.array(ids, dtype=np.int32)) == tok.decode(tuple(ids)) == tok.decode(ids)


def _encode_in_child(args):
    tok, text = args
    return tok.encode(text)


def test_pickle_round_trip_and_multiprocessing(pair, sample_lines):
    _, tok = pair
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode_batch(sample_lines) == tok.encode_batch(sample_lines)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        got = pool.map(_encode_in_child, [(tok, t) for t in sample_lines[:8]])
    assert got == [tok.encode(t) for t in sample_lines[:8]]


def test_save_loads_in_sentencepiece(pair, tmp_path, sample_lines):
    sp, tok = pair
    out = tmp_path / "copy.model"
    tok.save(out)
    reloaded = spm.SentencePieceProcessor(model_file=str(out))
    assert [reloaded.encode(t) for t in sample_lines] == [sp.encode(t) for t in sample_lines]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.shared
@pytest.mark.parametrize("rel", ["llama/tokenizer.model", "chinese-llama-alpaca/chinese_sp.model",
                                 "chinese-llama-alpaca-2/tokenizer.model", "yuan2/tokenizer.model"])
def test_save_reproduces_shared_files_byte_for_byte(rel):
    path = require_shared(TOKENIZERS / rel)
    assert hanpack.Tokenizer.from_file(path).to_bytes() == path.read_bytes()


def test_immutable(pair):
    _, tok = pair
    with pytest.raises(AttributeError):
        tok.vocab_size = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        tok.anything = 1  # type: ignore[attr-defined]


def test_bundled_demo_tokenizer_round_trips():
    tok = hanpack.Tokenizer.from_file(hanpack.data.default_model_path())
    text = hanpack.data.sample_text()
    for line in text.splitlines():
        assert tok.decode(tok.encode(line)) == line
    sp = spm.SentencePieceProcessor(model_file=str(hanpack.data.default_model_path()))
    assert tok.encode_batch(text.splitlines()) == [sp.encode(t) for t in text.splitlines()]
