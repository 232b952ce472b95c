"""The Tokenizer API against sentencepiece: BOS/EOS, special ids, vocabulary queries,
batch forms and thread counts, pickling (also through multiprocessing), saving, and
immutability."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import weakref
from pathlib import Path

import numpy as np
import pytest

import hanpack
from conftest import LLAMA, TOKENIZERS, TRAINED, load_pair, model_id, require_shared, shared_models

spm = pytest.importorskip("sentencepiece")
pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")

_MODELS = [pytest.param(("trained", n), id=f"trained:{n}") for n in TRAINED] + [
    pytest.param(("shared", p), id=model_id(p), marks=pytest.mark.shared)
    for p in (shared_models() or [TOKENIZERS])
]


@pytest.fixture(params=_MODELS)
def model_path(request, trained_models) -> Path:
    kind, value = request.param
    return trained_models[value] if kind == "trained" else require_shared(value)


@pytest.fixture(scope="module")
def pair(trained_models):
    """The byte-fallback BPE model: (sentencepiece, hanpack)."""
    return load_pair(trained_models["bpe_bytefallback"])


# -- special ids and vocabulary ---------------------------------------------------------


def test_special_ids_vocab_size_and_type(model_path):
    sp, tok = load_pair(model_path)
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id())
    assert tok.vocab_size == len(tok) == sp.get_piece_size()
    proto = pb.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    assert tok.model_type == {pb.TrainerSpec.BPE: "bpe", pb.TrainerSpec.UNIGRAM: "unigram"}[proto.trainer_spec.model_type]
    assert repr(tok).startswith("Tokenizer(") and str(tok.vocab_size) in repr(tok)


def _sp_piece_type(sp, proto, i: int) -> str:
    """The type sentencepiece gives piece `i` (it treats a NUL piece as UNUSED, so its
    is_* queries win over the type stored in the file)."""
    for name, query in (("UNKNOWN", sp.is_unknown), ("CONTROL", sp.is_control), ("UNUSED", sp.is_unused), ("BYTE", sp.is_byte)):
        if query(i):
            return name
    return pb.ModelProto.SentencePiece.Type.Name(proto.pieces[i].type)


def test_vocabulary_queries_match_sentencepiece(model_path):
    sp, tok = load_pair(model_path)
    proto = pb.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    wrong = []
    for i in range(tok.vocab_size):
        piece = tok.id_to_piece(i)
        want = (sp.id_to_piece(i), sp.piece_to_id(piece), sp.get_score(i), _sp_piece_type(sp, proto, i))
        got = (piece, tok.piece_to_id(piece), tok.piece_score(i), tok.piece_type(i))
        if want != got:
            wrong.append(f"id {i}: sentencepiece {want} hanpack {got}")
            if len(wrong) == 5:
                break
    assert wrong == []
    for absent in ("no such piece ☃☃", "", "▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁x", "\x00"):
        assert tok.piece_to_id(absent) == sp.piece_to_id(absent), repr(absent)


# -- BOS / EOS ---------------------------------------------------------------------------


@pytest.mark.parametrize("add_bos", [False, True])
@pytest.mark.parametrize("add_eos", [False, True])
def test_add_bos_add_eos(model_path, sample_lines, add_bos, add_eos):
    sp, tok = load_pair(model_path)
    if (add_bos and sp.bos_id() < 0) or (add_eos and sp.eos_id() < 0):
        pytest.skip("model has no BOS/EOS piece (see test_tokenizer_errors)")
    want = [sp.encode(t, add_bos=add_bos, add_eos=add_eos) for t in sample_lines]
    assert [tok.encode(t, add_bos=add_bos, add_eos=add_eos) for t in sample_lines] == want
    assert tok.encode_batch(sample_lines, add_bos=add_bos, add_eos=add_eos) == want
    ids, offsets = tok.encode_batch_numpy(sample_lines, add_bos=add_bos, add_eos=add_eos)
    assert ids.tolist() == [i for row in want for i in row]
    assert np.diff(offsets).tolist() == [len(row) for row in want]
    # The special pieces decode to nothing.
    assert tok.decode_batch(want) == [sp.decode(r) for r in want]


# -- batch forms and threads -------------------------------------------------------------


def test_encode_batch_numpy_equals_encode_batch(pair, sample_lines):
    _, tok = pair
    rows = tok.encode_batch(sample_lines)
    ids, offsets = tok.encode_batch_numpy(sample_lines)
    assert isinstance(ids, np.ndarray) and isinstance(offsets, np.ndarray)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64
    assert ids.ndim == offsets.ndim == 1
    assert offsets.shape == (len(sample_lines) + 1,)
    assert offsets[0] == 0 and offsets[-1] == len(ids)
    assert bool(np.all(np.diff(offsets) >= 0))
    assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(rows))] == rows
    # The rows contain empty texts ("" encodes to nothing): offsets repeat there.
    assert any(len(r) == 0 for r in rows)


def test_empty_batches(pair):
    _, tok = pair
    assert tok.encode_batch([]) == []
    assert tok.decode_batch([]) == []
    ids, offsets = tok.encode_batch_numpy([])
    assert ids.dtype == np.int32 and offsets.dtype == np.int64
    assert ids.tolist() == [] and offsets.tolist() == [0]
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_id_lists_are_ordinary_lists_outside_the_cyclic_gc(pair, sample_lines):
    """Id lists hold only ints, so they are returned untracked by the cyclic GC (documented
    on ``encode``); they still behave as lists, and are freed by reference counting."""
    sp, tok = pair
    ids = tok.encode(sample_lines[0])
    rows = tok.encode_batch(sample_lines[:3])
    assert type(ids) is list and ids == sp.encode(sample_lines[0])
    assert not gc.is_tracked(ids) and not any(gc.is_tracked(r) for r in rows)
    assert gc.is_tracked(rows)  # the outer list holds lists
    ids.append(7)
    ids.sort()
    assert pickle.loads(pickle.dumps(ids)) == ids

    class Marker:
        pass

    # Reference counting alone frees a list that is no longer referenced (and what it holds).
    holder = tok.encode(sample_lines[0])
    m = Marker()
    ref = weakref.ref(m)
    holder.append(m)
    del holder, m
    assert ref() is None


def test_batches_accept_any_iterable(pair, sample_lines):
    _, tok = pair
    want = tok.encode_batch(sample_lines[:20])
    assert tok.encode_batch(tuple(sample_lines[:20])) == want
    assert tok.encode_batch(t for t in sample_lines[:20]) == want
    assert tok.decode_batch(tuple(tuple(r) for r in want)) == tok.decode_batch(want)


def test_thread_counts_give_equal_results(model_path, sample_lines):
    _, tok = load_pair(model_path)
    lines = sample_lines * 10
    one = tok.encode_batch(lines, num_threads=1)
    assert one == [tok.encode(t) for t in lines]
    assert tok.encode_batch(lines, num_threads=2) == one
    assert tok.encode_batch(lines, num_threads=7) == one  # more threads than cores
    assert tok.encode_batch(lines) == one
    flat1, off1 = tok.encode_batch_numpy(lines, num_threads=1)
    flat2, off2 = tok.encode_batch_numpy(lines, num_threads=2)
    assert np.array_equal(flat1, flat2) and np.array_equal(off1, off2)
    assert flat1.tolist() == [i for row in one for i in row]
    texts = tok.decode_batch(one, num_threads=1)
    assert tok.decode_batch(one, num_threads=2) == texts == [tok.decode(r) for r in one]


def test_decode_accepts_numpy_and_tuples(pair):
    sp, tok = pair
    ids = tok.encode("繁體與简体 mixed 😀 𠀀")
    want = sp.decode(ids)
    for form in (ids, tuple(ids), np.array(ids), np.array(ids, dtype=np.int32), np.array(ids, dtype=np.int64)):
        assert tok.decode(form) == want, type(form)
    flat, offsets = tok.encode_batch_numpy(["繁體與简体 mixed 😀 𠀀", "abc"])
    assert tok.decode(flat[offsets[0] : offsets[1]]) == want


# -- pickling ----------------------------------------------------------------------------


def test_pickle_round_trip(model_path, sample_lines):
    _, tok = load_pair(model_path)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(tok, protocol=protocol))
        assert type(clone) is hanpack.Tokenizer
        assert clone.to_bytes() == tok.to_bytes()
        assert repr(clone) == repr(tok)
        assert (clone.vocab_size, clone.model_type, clone.bos_id, clone.eos_id) == (
            tok.vocab_size, tok.model_type, tok.bos_id, tok.eos_id)
    assert clone.encode_batch(sample_lines) == tok.encode_batch(sample_lines)


def _encode_in_worker(args):
    tok, texts = args
    return tok.encode_batch(texts), [tok.decode(tok.encode(t)) for t in texts]


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_multiprocessing_pool(trained_models, sample_lines, start_method):
    """Tokenizers travel to 2 worker processes by pickle; with fork the parent has already
    run its own worker threads (encode_batch) before forking."""
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{start_method} not available here")
    tok = hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])
    chunks = [sample_lines[i::4] for i in range(4)]
    want = [(tok.encode_batch(c), [tok.decode(tok.encode(t)) for t in c]) for c in chunks]
    with multiprocessing.get_context(start_method).Pool(2) as pool:
        result = pool.map_async(_encode_in_worker, [(tok, c) for c in chunks])
        result.wait(60)
        if not result.ready():
            pytest.fail(f"{start_method} pool workers did not finish encode_batch within 60 s (hang)", pytrace=False)
        got = result.get()
    assert got == want


# -- saving ------------------------------------------------------------------------------


def test_save_loads_in_sentencepiece(model_path, tmp_path, sample_lines):
    sp, tok = load_pair(model_path)
    out = tmp_path / "copy.model"
    tok.save(out)
    assert out.read_bytes() == tok.to_bytes()
    reloaded = spm.SentencePieceProcessor(model_file=str(out))
    assert reloaded.get_piece_size() == sp.get_piece_size()
    assert [reloaded.encode(t) for t in sample_lines] == [sp.encode(t) for t in sample_lines]
    again = hanpack.Tokenizer.from_file(out)
    assert again.encode_batch(sample_lines) == tok.encode_batch(sample_lines)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.model"]  # no temporary file left


def test_save_accepts_str_and_overwrites(pair, tmp_path):
    _, tok = pair
    out = tmp_path / "m.model"
    out.write_bytes(b"old contents")
    tok.save(str(out))
    assert out.read_bytes() == tok.to_bytes()


def test_save_into_missing_folder_fails_cleanly(pair, tmp_path):
    _, tok = pair
    with pytest.raises(FileNotFoundError):
        tok.save(tmp_path / "no" / "such" / "dir" / "m.model")
    assert list(tmp_path.iterdir()) == []


def test_from_bytes_round_trip(pair, sample_lines):
    _, tok = pair
    data = tok.to_bytes()
    for form in (data, bytearray(data), memoryview(data)):
        clone = hanpack.Tokenizer.from_bytes(form, origin="mem")
        assert clone.to_bytes() == data
        assert clone.encode_batch(sample_lines) == tok.encode_batch(sample_lines)


@pytest.mark.shared
@pytest.mark.parametrize("path", shared_models() or [TOKENIZERS], ids=model_id)
def test_to_bytes_reproduces_shared_file(path):
    """to_bytes() is the file, byte for byte, except where sentencepiece itself rewrites the
    model on load (InternLM's NUL piece becomes UNUSED): there it equals sentencepiece's
    serialized_model_proto(), and the only change is that piece type."""
    require_shared(path)
    sp, tok = load_pair(path)
    data = path.read_bytes()
    got = tok.to_bytes()
    ref = sp.serialized_model_proto()
    assert got == ref, f"{model_id(path)}: to_bytes() differs from sentencepiece's serialized_model_proto()"
    if got == data:
        return
    old, new = pb.ModelProto(), pb.ModelProto()
    old.ParseFromString(data)
    new.ParseFromString(got)
    changed = [i for i, (a, b) in enumerate(zip(old.pieces, new.pieces)) if a != b]
    assert len(old.pieces) == len(new.pieces) and changed, model_id(path)
    for i in changed:
        assert old.pieces[i].piece == new.pieces[i].piece == "\x00", (model_id(path), i)
        assert new.pieces[i].type == pb.ModelProto.SentencePiece.UNUSED, (model_id(path), i)
        assert old.pieces[i].score == new.pieces[i].score
    assert (old.trainer_spec, old.normalizer_spec) == (new.trainer_spec, new.normalizer_spec)


# -- immutability --------------------------------------------------------------------------


def test_immutable(pair):
    _, tok = pair
    before = tok.to_bytes()
    for name in ("vocab_size", "bos_id", "model_type", "encode", "_model", "_origin", "anything"):
        with pytest.raises(AttributeError):
            setattr(tok, name, 3)
    with pytest.raises(AttributeError):
        del tok.vocab_size
    assert tok.to_bytes() == before
    with pytest.raises(TypeError):
        hanpack.Tokenizer()
    assert len(tok) == tok.vocab_size


@pytest.mark.shared
def test_loaded_from_llama_has_expected_shape():
    """A fixed point that does not depend on sentencepiece: LLaMA's well-known ids."""
    _, tok = load_pair(require_shared(LLAMA))
    assert (tok.vocab_size, tok.model_type, tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (32000, "bpe", 0, 1, 2, -1)
    assert tok.id_to_piece(3) == "<0x00>" and tok.piece_type(3) == "BYTE"
    assert tok.encode("Hello world") == [15043, 3186]
