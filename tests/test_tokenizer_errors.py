"""Bad input gets a specific Python exception, and file errors name the file.

File contents that are not a SentencePiece model (empty, truncated, random bytes, JSON,
another tokenizer format) raise ModelFormatError; a model that parses but breaks
sentencepiece's rules raises InvalidModelError. ``google.protobuf`` (which sentencepiece
ships with) is the oracle for "does this parse as a ModelProto at all".
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

import hanpack
from conftest import LLAMA, TOKENIZERS, load_pair, require_shared
from hanpack.exceptions import (
    UnsupportedTokenizerError,
    HanpackError,
    InvalidArgumentError,
    InvalidModelError,
    ModelFormatError,
    TokenIdError,
)

spm = pytest.importorskip("sentencepiece")
pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
from google.protobuf.message import DecodeError  # noqa: E402  (after the importorskip)


def _parses_as_model_proto(data: bytes) -> bool:
    try:
        pb.ModelProto().ParseFromString(data)
    except DecodeError:
        return False
    return True


def _sentencepiece_loads(path: Path) -> bool:
    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError):
        return False
    return True


@pytest.fixture(scope="module")
def tok(trained_models):
    return hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])


def test_exception_hierarchy():
    assert issubclass(ModelFormatError, HanpackError) and issubclass(ModelFormatError, ValueError)
    assert issubclass(InvalidModelError, HanpackError) and issubclass(InvalidModelError, ValueError)
    assert issubclass(TokenIdError, HanpackError) and issubclass(TokenIdError, IndexError)
    assert issubclass(InvalidArgumentError, HanpackError) and issubclass(InvalidArgumentError, ValueError)


# -- files that are not models ------------------------------------------------------------


def _expect_format_error(path: Path) -> ModelFormatError:
    with pytest.raises(ModelFormatError) as err:
        hanpack.Tokenizer.from_file(path)
    assert str(path) in str(err.value), f"message does not name the file: {err.value}"
    with pytest.raises(ModelFormatError):
        hanpack.Tokenizer.from_bytes(path.read_bytes())
    return err.value


def test_empty_file(tmp_path):
    path = tmp_path / "empty.model"
    path.write_bytes(b"")
    assert not _sentencepiece_loads(path)
    _expect_format_error(path)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes(tmp_path, seed):
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 7, 100, 4096, 65536])))
    path = tmp_path / f"random{seed}.model"
    path.write_bytes(data)
    assert not _sentencepiece_loads(path)
    if _parses_as_model_proto(data):
        with pytest.raises((ModelFormatError, InvalidModelError)) as err:
            hanpack.Tokenizer.from_file(path)
        assert str(path) in str(err.value)
    else:
        _expect_format_error(path)


@pytest.mark.parametrize(
    "content",
    [
        {"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}},  # tokenizer.json
        {"model_type": "llama", "vocab_size": 32000},
        [1, 2, 3],
    ],
    ids=["tokenizer-json", "config-json", "json-list"],
)
def test_json_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(content, indent=2), encoding="utf-8")
    assert not _sentencepiece_loads(path)
    if "model" in content:
        # A tokenizer.json, but not a byte-level one (no ByteLevel pre-tokenizer/decoder).
        with pytest.raises(UnsupportedTokenizerError) as err:
            hanpack.Tokenizer.from_file(path)
        assert str(path) in str(err.value) and "ByteLevel" in str(err.value)
    else:
        _expect_format_error(path)


@pytest.mark.shared
@pytest.mark.parametrize("rel", ["llama3/tokenizer.model", "qwen2/tokenizer.derived.json", "qwen2/vocab.json"])
def test_other_tokenizer_formats(rel):
    """Real files of other formats: tiktoken (named .model!) and Hugging Face JSON are
    detected and load as byte-level BPE; a lone vocab.json is no tokenizer."""
    path = require_shared(TOKENIZERS / rel)
    assert not _sentencepiece_loads(path)
    if rel.endswith("vocab.json"):
        _expect_format_error(path)
    else:
        assert hanpack.Tokenizer.from_file(path).model_type == "bbpe"


@pytest.fixture(scope="module")
def real_model_bytes(trained_models) -> tuple[str, bytes]:
    path = LLAMA if LLAMA.exists() else trained_models["unigram_nfkc"]
    return path.name, path.read_bytes()


def test_truncated_files(tmp_path, real_model_bytes):
    """Cuts at several offsets. Where the cut leaves bytes that no longer parse, it is a
    ModelFormatError; a cut that happens to end on a message boundary parses as a smaller
    model, which must then fail or load exactly as sentencepiece does."""
    name, data = real_model_bytes
    n = len(data)
    cuts = {1, 2, 3, 5, 10, 17, 100, 1000, n // 7, n // 3, n // 2, n - 200, n - 11, n - 2, n - 1}
    # Two cuts right after a whole piece (pieces are field 1, serialized first).
    proto = pb.ModelProto()
    proto.ParseFromString(data)
    for keep in (50, 300):
        prefix = pb.ModelProto()
        prefix.pieces.extend(proto.pieces[:keep])
        boundary = len(prefix.SerializeToString())
        assert data[:boundary] == prefix.SerializeToString()
        cuts.add(boundary)
    cuts = sorted(cuts)
    malformed = 0
    for cut in cuts:
        part = data[:cut]
        path = tmp_path / f"{name}.cut{cut}"
        path.write_bytes(part)
        if not _parses_as_model_proto(part):
            malformed += 1
            _expect_format_error(path)
        elif _sentencepiece_loads(path):
            sp = spm.SentencePieceProcessor(model_file=str(path))
            tok = hanpack.Tokenizer.from_file(path)
            assert tok.encode("Hello 你好 world") == sp.encode("Hello 你好 world"), cut
        else:
            with pytest.raises((ModelFormatError, InvalidModelError)) as err:
                hanpack.Tokenizer.from_file(path)
            assert str(path) in str(err.value)
    assert malformed >= len(cuts) // 2  # the test is mostly about real truncation


def test_model_breaking_sentencepiece_rules(tmp_path, trained_models):
    data = trained_models["bpe_bytefallback"].read_bytes()
    proto = pb.ModelProto()
    proto.ParseFromString(data)
    proto.pieces[5].piece = proto.pieces[6].piece  # a piece defined twice
    path = tmp_path / "dup.model"
    path.write_bytes(proto.SerializeToString())
    assert not _sentencepiece_loads(path)
    with pytest.raises(InvalidModelError) as err:
        hanpack.Tokenizer.from_file(path)
    assert str(path) in str(err.value)

    proto.ParseFromString(data)
    del proto.pieces[:]  # no pieces at all
    path.write_bytes(proto.SerializeToString())
    assert not _sentencepiece_loads(path)
    with pytest.raises((InvalidModelError, ModelFormatError)) as err:
        hanpack.Tokenizer.from_file(path)
    assert str(path) in str(err.value)


def test_unigram_model_without_normal_pieces(tmp_path, trained_models):
    """sentencepiece refuses a Unigram model whose only pieces are <unk>, <s> and </s>
    ("no pieces are loaded"); a BPE model like that loads in both."""
    proto = pb.ModelProto()
    proto.ParseFromString(trained_models["unigram_nfkc"].read_bytes())
    del proto.pieces[3:]
    assert [p.type for p in proto.pieces] == [pb.ModelProto.SentencePiece.UNKNOWN] + [pb.ModelProto.SentencePiece.CONTROL] * 2
    path = tmp_path / "specials-only.model"
    path.write_bytes(proto.SerializeToString())
    assert not _sentencepiece_loads(path)
    with pytest.raises(InvalidModelError) as err:
        hanpack.Tokenizer.from_file(path)
    assert str(path) in str(err.value)

    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    path.write_bytes(proto.SerializeToString())
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert hanpack.Tokenizer.from_file(path).encode("abc 你好") == sp.encode("abc 你好")


def test_from_bytes_names_its_origin():
    with pytest.raises(ModelFormatError) as err:
        hanpack.Tokenizer.from_bytes(b"\xff\xff\xff", origin="my-upload.model")
    assert "my-upload.model" in str(err.value)


# -- paths ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError) as err:
        hanpack.Tokenizer.from_file(path)
    assert str(path) in str(err.value)
    with pytest.raises(FileNotFoundError):
        hanpack.Tokenizer.from_file(str(path))


def test_directory_path(tmp_path):
    with pytest.raises(IsADirectoryError) as err:
        hanpack.Tokenizer.from_file(tmp_path)
    assert str(tmp_path) in str(err.value)


# -- wrong argument types -------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.encode(123),
        lambda t: t.encode(None),
        lambda t: t.encode(b"bytes"),
        lambda t: t.encode(["list"]),
        lambda t: t.encode("x", add_bos=1),
        lambda t: t.encode("x", add_eos="yes"),
        lambda t: t.encode_as_pieces(5),
        lambda t: t.normalize(5),
        lambda t: t.encode_batch("a string"),
        lambda t: t.encode_batch(b"bytes"),
        lambda t: t.encode_batch(["ok", 5]),
        lambda t: t.encode_batch(None),
        lambda t: t.encode_batch(["ok"], num_threads="2"),
        lambda t: t.encode_batch(["ok"], num_threads=1.0),
        lambda t: t.encode_batch_numpy("a string"),
        lambda t: t.encode_batch_numpy([b"x"]),
        lambda t: t.decode(["a"]),
        lambda t: t.decode(None),
        lambda t: t.decode("123"),
        lambda t: t.decode(5),
        lambda t: t.decode([1.0]),
        lambda t: t.decode([1, None]),
        lambda t: t.decode_batch([[1], [None]]),
        lambda t: t.decode_batch("12"),
        lambda t: t.decode_batch(None),
        lambda t: t.id_to_piece("3"),
        lambda t: t.id_to_piece(3.0),
        lambda t: t.piece_to_id(3),
        lambda t: t.piece_score("3"),
        lambda t: t.piece_type(None),
        lambda t: t.stream_decoder().step("3"),
        lambda t: t.stream_decoder().step(None),
        lambda t: hanpack.Tokenizer.from_file(3.5),
        lambda t: hanpack.Tokenizer.from_file(None),
        lambda t: hanpack.Tokenizer.from_bytes("not bytes"),
        lambda t: hanpack.Tokenizer(),
        lambda t: hanpack.StreamDecoder(),
    ],
)
def test_wrong_argument_types(tok, call):
    with pytest.raises(TypeError):
        call(tok)


def test_bad_thread_counts(tok):
    for bad in (0, -1):
        with pytest.raises(ValueError):
            tok.encode_batch(["ok"], num_threads=bad)
        with pytest.raises(ValueError):
            tok.decode_batch([[1]], num_threads=bad)


def test_lone_surrogates(tok):
    with pytest.raises(UnicodeEncodeError):
        tok.encode("bad \udc80 text")
    with pytest.raises(UnicodeEncodeError):
        tok.encode_batch(["fine", "bad \ud800"])


# -- out-of-range ids ---------------------------------------------------------------------


def _id_calls(tok, bad: int):
    return {
        "decode": lambda: tok.decode([1, bad]),
        "decode(numpy)": lambda: tok.decode(np.array([1, bad], dtype=np.int64)),
        "decode_batch": lambda: tok.decode_batch([[1], [2, bad]]),
        "decode_batch(one thread)": lambda: tok.decode_batch([[1]] * 300 + [[2, bad]], num_threads=1),
        "decode_batch(two threads, a later chunk)": lambda: tok.decode_batch([[1]] * 3000 + [[2, bad]], num_threads=2),
        "id_to_piece": lambda: tok.id_to_piece(bad),
        "piece_score": lambda: tok.piece_score(bad),
        "piece_type": lambda: tok.piece_type(bad),
        "stream step": lambda: tok.stream_decoder().step(bad),
    }


@pytest.mark.parametrize("which", ["-1", "vocab_size", "2**40"])
def test_ids_out_of_range(tok, which):
    bad = {"-1": -1, "vocab_size": tok.vocab_size, "2**40": 2**40}[which]
    for name, call in _id_calls(tok, bad).items():
        with pytest.raises(TokenIdError, match="out of range") as err:
            call()
        assert str(bad) in str(err.value), name
    # The largest valid id is fine.
    assert isinstance(tok.decode([tok.vocab_size - 1]), str)
    assert isinstance(tok.id_to_piece(tok.vocab_size - 1), str)


def test_ids_beyond_64_bits_are_token_id_errors(tok):
    """An id too large for a 64-bit integer is still an out-of-range id: TokenIdError (an
    IndexError), as for 2**40, not an OverflowError."""
    failures = []
    for bad in (2**63, 2**64, -(2**63) - 1, 10**30):
        for name, call in _id_calls(tok, bad).items():
            if name == "decode(numpy)":
                continue  # numpy itself cannot hold these values
            try:
                call()
                failures.append(f"{name}({bad}): no error")
            except TokenIdError:
                pass
            except Exception as e:  # noqa: BLE001 - report what was raised instead
                failures.append(f"{name}({bad}): {type(e).__name__}: {e}")
    assert failures == [], "\n".join(failures)


# -- arguments that do not fit the model ------------------------------------------------------


def test_add_bos_add_eos_without_such_pieces(trained_models):
    path = trained_models["bpe_no_bos"]
    sp, tok = load_pair(path)
    assert tok.bos_id == sp.bos_id() == -1 and tok.eos_id == sp.eos_id() == -1
    for kwargs in (dict(add_bos=True), dict(add_eos=True), dict(add_bos=True, add_eos=True)):
        with pytest.raises(InvalidArgumentError, match="BOS" if "add_bos" in kwargs else "EOS"):
            tok.encode("x", **kwargs)
        with pytest.raises(InvalidArgumentError):
            tok.encode_batch(["x", "y"], **kwargs)
        with pytest.raises(InvalidArgumentError):
            tok.encode_batch_numpy(["x"], **kwargs)
    # Without the flags everything works, as in sentencepiece.
    assert tok.encode("hello 你好") == sp.encode("hello 你好")
    assert tok.decode(tok.encode("hello 你好")) == sp.decode(sp.encode("hello 你好"))


def test_ids_are_read_exactly_whatever_their_int_layout(tok):
    """Ids in a list are read from CPython's int layout for plain ints of one digit and
    through the C API otherwise: both give each value exactly (the error names it)."""

    class MyInt(int):
        pass

    valid = [0, 1, 5, tok.vocab_size - 1, True, False, MyInt(3), np.int64(4), np.int32(2)]
    for v in valid:
        assert tok.decode([v]) == tok.decode(np.array([int(v)], dtype=np.int64)), v
    assert tok.decode(valid) == tok.decode(np.array([int(v) for v in valid], dtype=np.int64))
    for bad in (-1, -5, 2**30 - 1, 2**30, -(2**30 - 1), -(2**30), 2**31, MyInt(-7)):
        with pytest.raises(TokenIdError, match="out of range") as err:
            tok.decode([1, bad])
        assert str(int(bad)) in str(err.value)
