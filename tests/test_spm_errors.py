"""Bad input gets a specific Python exception naming the problem; never a crash."""

from __future__ import annotations

import json

import pytest

import hanpack
from hanpack.exceptions import (
    HanpackError,
    InvalidArgumentError,
    InvalidModelError,
    ModelFormatError,
    TokenIdError,
)


@pytest.fixture(scope="module")
def model_bytes(trained_models):
    return trained_models["bpe_bytefallback"].read_bytes()


def test_exception_hierarchy():
    assert issubclass(ModelFormatError, (HanpackError, ValueError))
    assert issubclass(InvalidModelError, (HanpackError, ValueError))
    assert issubclass(TokenIdError, (HanpackError, IndexError))
    assert issubclass(InvalidArgumentError, (HanpackError, ValueError))


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, json.dumps({"model": {"type": "BPE"}}).encode(), bytes(range(256)) * 4])
def test_not_a_model(tmp_path, content):
    path = tmp_path / "bad.model"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError) as err:
        hanpack.Tokenizer.from_file(path)
    assert str(path) in str(err.value)


def test_truncated_files_are_rejected(tmp_path, model_bytes):
    for cut in (1, 2, 10, 100, len(model_bytes) // 3, len(model_bytes) // 2, len(model_bytes) - 1):
        path = tmp_path / f"cut{cut}.model"
        path.write_bytes(model_bytes[:cut])
        with pytest.raises((ModelFormatError, InvalidModelError)) as err:
            hanpack.Tokenizer.from_file(path)
        assert str(path) in str(err.value)


def test_model_breaking_sentencepiece_rules(tmp_path, model_bytes):
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    proto = pb.ModelProto()
    proto.ParseFromString(model_bytes)
    proto.pieces[5].piece = proto.pieces[6].piece  # duplicate piece
    path = tmp_path / "dup.model"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(InvalidModelError, match="defined twice"):
        hanpack.Tokenizer.from_file(path)
    proto.ParseFromString(model_bytes)
    proto.trainer_spec.byte_fallback = False  # byte pieces without byte_fallback
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(InvalidModelError, match="byte_fallback"):
        hanpack.Tokenizer.from_file(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        hanpack.Tokenizer.from_file(tmp_path / "nope.model")
    with pytest.raises(IsADirectoryError):
        hanpack.Tokenizer.from_file(tmp_path)


def test_wrong_argument_types(trained_models):
    tok = hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])
    for call in (
        lambda: tok.encode(123),
        lambda: tok.encode(b"bytes"),
        lambda: tok.encode("x", add_bos=1),
        lambda: tok.encode_batch("a string"),
        lambda: tok.encode_batch(["ok", 5]),
        lambda: tok.encode_batch(["ok"], num_threads="2"),
        lambda: tok.decode(["a"]),
        lambda: tok.decode(None),
        lambda: tok.decode("123"),
        lambda: tok.decode_batch([[1], [None]]),
        lambda: tok.id_to_piece("3"),
        lambda: hanpack.Tokenizer.from_file(3.5),
        lambda: hanpack.Tokenizer(),
    ):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(ValueError):
        tok.encode_batch(["ok"], num_threads=0)


@pytest.mark.parametrize("bad", [-1, 10**6, 2**40])
def test_ids_out_of_range(trained_models, bad):
    tok = hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])
    with pytest.raises(TokenIdError, match="out of range"):
        tok.decode([1, bad])
    with pytest.raises(TokenIdError):
        tok.decode_batch([[1], [bad]])
    with pytest.raises(TokenIdError):
        tok.id_to_piece(bad)
    dec = tok.stream_decoder()
    with pytest.raises(TokenIdError):
        dec.step(bad)


def test_add_bos_without_bos_piece(trained_models):
    tok = hanpack.Tokenizer.from_file(trained_models["bpe_no_bos"])
    assert tok.bos_id == -1
    with pytest.raises(InvalidArgumentError, match="BOS"):
        tok.encode("x", add_bos=True)
    with pytest.raises(InvalidArgumentError):
        tok.encode_batch(["x"], add_bos=True)


def test_lone_surrogates_raise_a_clear_error(trained_models):
    tok = hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])
    with pytest.raises(UnicodeEncodeError):
        tok.encode("bad \udc80 text")
