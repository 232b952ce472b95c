"""The :class:`Tokenizer`: one class for every tokenizer format hanpack reads.

Today it loads SentencePiece ``.model`` files (BPE and Unigram) and encodes and decodes
them id for id like ``sentencepiece.SentencePieceProcessor``, with the GIL released and
batches spread over all cores.

    >>> tok = Tokenizer.from_file(hanpack.data.default_model_path())   # doctest: +SKIP
    >>> tok.decode(tok.encode("你好，世界")) == "你好，世界"             # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

from . import _core
from .exceptions import TokenIdError


if TYPE_CHECKING:  # numpy is only needed by encode_batch_numpy
    import numpy as np

__all__ = ["Tokenizer", "StreamDecoder"]

PathLike = Union[str, "os.PathLike[str]"]


def _check_text(text: object, what: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    return text


def _check_texts(texts: object) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of str, not a single " + type(texts).__name__)
    out = list(texts)  # type: ignore[call-overload]
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be str, not {type(t).__name__}")
    return out


def _check_threads(num_threads: object) -> int | None:
    if num_threads is None:
        return None
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"num_threads must be an int or None, not {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return num_threads


def _check_ids(ids: Any, what: str = "ids") -> Any:
    # Element types are checked in Rust while converting (TypeError there); a Python-level
    # loop here would cost more than decoding itself.
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise TypeError(f"{what} must be a sequence of int, not {type(ids).__name__}")
    return ids


def _check_id(id: object) -> int:
    if isinstance(id, bool) or not isinstance(id, int):
        raise TypeError(f"id must be int, not {type(id).__name__}")
    if not -(2**63) <= id < 2**63:  # would be an OverflowError in the Rust conversion
        raise TokenIdError(f"token id {id} is out of range")
    return id


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be bool, not {type(value).__name__}")
    return value


class Tokenizer:
    """A tokenizer loaded from a file; immutable, thread-safe and picklable.

    >>> tok = Tokenizer.from_file("tokenizer.model")        # doctest: +SKIP
    >>> ids = tok.encode("今天天气很好", add_bos=True)        # doctest: +SKIP
    >>> tok.decode(ids)                                      # doctest: +SKIP
    '今天天气很好'
    """

    __slots__ = ("_model", "_origin")

    _model: _core.SpmTokenizer
    _origin: str

    def __init__(self) -> None:
        raise TypeError("use Tokenizer.from_file(path) or Tokenizer.from_bytes(data)")

    @classmethod
    def _wrap(cls, model: _core.SpmTokenizer, origin: str) -> "Tokenizer":
        self = object.__new__(cls)
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_origin", origin)
        return self

    # -- loading and saving -------------------------------------------------

    @classmethod
    def from_file(cls, path: PathLike) -> "Tokenizer":
        """Loads a SentencePiece ``.model`` file.

        Raises ``FileNotFoundError`` (or another ``OSError``) when the file cannot be
        read, :class:`~hanpack.exceptions.ModelFormatError` when it is not a SentencePiece
        model and :class:`~hanpack.exceptions.InvalidModelError` when the model breaks
        sentencepiece's rules.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be str or os.PathLike, not {type(path).__name__}")
        path = os.fspath(path)
        with open(path, "rb") as f:
            data = f.read()
        return cls._wrap(_core.SpmTokenizer.from_bytes(data, path), path)

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "<bytes>") -> "Tokenizer":
        """Loads a serialized SentencePiece ``ModelProto``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        return cls._wrap(_core.SpmTokenizer.from_bytes(bytes(data), origin), origin)

    def to_bytes(self) -> bytes:
        """The model serialized as a SentencePiece ``ModelProto``."""
        return self._model.to_bytes()

    def save(self, path: PathLike) -> None:
        """Writes a ``.model`` file that stock sentencepiece loads.

        The file is written to a temporary name in the same folder and renamed, so a
        failure never leaves a partial file behind.
        """
        path = os.fspath(path)
        data = self.to_bytes()
        folder = os.path.dirname(os.path.abspath(path))
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __reduce__(self):  # pickling ships the model bytes, never a pickle of Rust state
        return (_from_serialized, (self.to_bytes(), self._origin))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Tokenizer is immutable")

    def __repr__(self) -> str:
        return (
            f"Tokenizer(origin={self._origin!r}, type={self._model.model_type!r}, "
            f"vocab_size={self.vocab_size})"
        )

    # -- encoding -----------------------------------------------------------

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``, as ``SentencePieceProcessor.encode(text)``.

        >>> tok.encode("hello", add_bos=True)  # doctest: +SKIP
        [1, 22172]
        """
        # The exact-type test is the common case and costs less than the checks' calls
        # (per-line encoding of short texts is dominated by such constant costs).
        if text.__class__ is str and add_bos.__class__ is bool and add_eos.__class__ is bool:
            return self._model.encode(text, add_bos, add_eos)
        return self._model.encode(
            _check_text(text), _check_flag(add_bos, "add_bos"), _check_flag(add_eos, "add_eos")
        )

    def encode_batch(
        self,
        texts: Iterable[str],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        num_threads: int | None = None,
    ) -> list[list[int]]:
        """Encodes many texts on all cores (or ``num_threads`` threads)."""
        return self._model.encode_batch(
            _check_texts(texts),
            _check_flag(add_bos, "add_bos"),
            _check_flag(add_eos, "add_eos"),
            _check_threads(num_threads),
        )

    def encode_batch_numpy(
        self,
        texts: Iterable[str],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        num_threads: int | None = None,
    ) -> tuple["np.ndarray", "np.ndarray"]:
        """Encodes many texts into flat ``int32`` ids and ``int64`` row offsets.

        Row ``i`` is ``ids[offsets[i]:offsets[i + 1]]``; no per-token Python objects are made.

        >>> ids, offsets = tok.encode_batch_numpy(["你好", "世界"])  # doctest: +SKIP
        >>> ids[offsets[1]:offsets[2]].tolist() == tok.encode("世界")  # doctest: +SKIP
        True
        """
        return self._model.encode_batch_flat(
            _check_texts(texts),
            _check_flag(add_bos, "add_bos"),
            _check_flag(add_eos, "add_eos"),
            _check_threads(num_threads),
        )

    def encode_as_pieces(self, text: str) -> list[str]:
        """Pieces of ``text`` (``SentencePieceProcessor.encode(text, out_type=str)``)."""
        return self._model.encode_as_pieces(_check_text(text))

    def normalize(self, text: str) -> str:
        """``text`` after the model's normalizer (U+2581 for spaces, charsmap rules)."""
        return self._model.normalize(_check_text(text))

    # -- decoding -----------------------------------------------------------

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, as ``SentencePieceProcessor.decode(ids)``.

        Raises :class:`~hanpack.exceptions.TokenIdError` (an ``IndexError``) for an id
        outside the vocabulary.
        """
        if ids.__class__ is list:  # the common case, without a call
            return self._model.decode(ids)
        return self._model.decode(_check_ids(ids))

    def decode_batch(self, batch: Iterable[Sequence[int]], *, num_threads: int | None = None) -> list[str]:
        """Decodes many id lists on all cores."""
        _check_ids(batch, "batch")
        return self._model.decode_batch(batch, _check_threads(num_threads))

    def stream_decoder(self) -> "StreamDecoder":
        """An incremental decoder for generation: feed ids one at a time, get only
        complete text (never a U+FFFD for a character split across byte pieces).

        >>> dec = tok.stream_decoder()                        # doctest: +SKIP
        >>> "".join(dec.step(i) for i in ids) + dec.finish() == tok.decode(ids)  # doctest: +SKIP
        True
        """
        return StreamDecoder._wrap(self._model.stream_decoder())

    # -- vocabulary ---------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of pieces (``SentencePieceProcessor.get_piece_size()``)."""
        return self._model.vocab_size

    def __len__(self) -> int:
        return self._model.vocab_size

    @property
    def model_type(self) -> str:
        """``"bpe"`` or ``"unigram"``."""
        return self._model.model_type

    @property
    def bos_id(self) -> int:
        """Id of the BOS piece, -1 if the model has none (as sentencepiece)."""
        return self._model.bos_id

    @property
    def eos_id(self) -> int:
        """Id of the EOS piece, -1 if the model has none."""
        return self._model.eos_id

    @property
    def unk_id(self) -> int:
        """Id of the unknown piece, -1 if the model has none."""
        return self._model.unk_id

    @property
    def pad_id(self) -> int:
        """Id of the padding piece, -1 if the model has none."""
        return self._model.pad_id

    def id_to_piece(self, id: int) -> str:
        """The piece text of ``id``; :class:`~hanpack.exceptions.TokenIdError` if out of range."""
        piece = self._model.id_to_piece(_check_id(id))
        if piece is None:
            raise TokenIdError(f"token id {id} is out of range (vocab_size is {self.vocab_size})")
        return piece

    def piece_to_id(self, piece: str) -> int:
        """The id of ``piece``; the unknown id when the piece is not in the vocabulary."""
        return self._model.piece_to_id(_check_text(piece, "piece"))

    def piece_score(self, id: int) -> float:
        """The SentencePiece score of ``id``."""
        self.id_to_piece(id)
        return self._model.piece_score(id)  # type: ignore[return-value]

    def piece_type(self, id: int) -> str:
        """NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED or BYTE."""
        self.id_to_piece(id)
        return self._model.piece_type(id)  # type: ignore[return-value]


class StreamDecoder:
    """Incremental decoding; made by :meth:`Tokenizer.stream_decoder`."""

    __slots__ = ("_dec",)

    _dec: _core.SpmStreamDecoder

    def __init__(self) -> None:
        raise TypeError("use Tokenizer.stream_decoder()")

    @classmethod
    def _wrap(cls, dec: _core.SpmStreamDecoder) -> "StreamDecoder":
        self = object.__new__(cls)
        object.__setattr__(self, "_dec", dec)
        return self

    def step(self, id: int) -> str:
        """Feeds one id; returns the text that is complete so far (maybe ``""``)."""
        return self._dec.step(_check_id(id))

    def finish(self) -> str:
        """Ends the stream, returning what was held back, and resets the decoder."""
        return self._dec.finish()


def _from_serialized(data: bytes, origin: str) -> Tokenizer:
    return Tokenizer._wrap(_core.SpmTokenizer.from_bytes(data, origin), origin)




