"""The :class:`Tokenizer`: one class for every tokenizer format hanpack reads.

It loads SentencePiece ``.model`` files (BPE and Unigram; id for id like
``sentencepiece.SentencePieceProcessor``) and byte-level BPE tokenizers: HF
``tokenizer.json`` (id for id like HF ``tokenizers``), tiktoken rank files (like
``tiktoken``) and ``vocab.json`` + ``merges.txt``. The GIL is released and batches are
spread over all cores.

    >>> tok = Tokenizer.from_file(hanpack.data.default_model_path())   # doctest: +SKIP
    >>> tok.decode(tok.encode("你好，世界")) == "你好，世界"             # doctest: +SKIP
    True
"""

from __future__ import annotations

import errno
import hashlib
import os
from typing import TYPE_CHECKING, AbstractSet, Any, Iterable, Literal, Mapping, Sequence, Union, cast

from . import _core
from ._atomic import write_bytes
from .exceptions import InvalidArgumentError, ModelFormatError, TokenIdError, UnsupportedTokenizerError


if TYPE_CHECKING:  # numpy is only needed by encode_batch_numpy
    import numpy as np

__all__ = ["Tokenizer", "StreamDecoder"]

PathLike = Union[str, "os.PathLike[str]"]
SpecialSet = Union[Literal["all"], AbstractSet[str], Sequence[str]]
_Model = Union[_core.SpmTokenizer, _core.BpeTokenizer]

# LLaMA-3.1+'s special tokens, ids 128000.., as its tokenizer.json lists them (a tiktoken
# rank file does not store them; used when `from_file` meets LLaMA-3's 128000 ranks).
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    "<|image|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(2, 246)]


def _special_names(value: object, name: str) -> list[str] | None:
    """``"all"`` → None (every special token); a collection of str → a list."""
    if value == "all":
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (AbstractSet, Sequence)):
        raise TypeError(f'{name} must be "all" or a set of str, not {type(value).__name__}')
    out = list(value)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{name} must contain str, not {type(v).__name__}")
    return out


def _policy(allowed_special: object, disallowed_special: object) -> tuple[list[str] | None, list[str] | None]:
    # Also called by the Rust `TokenizerBase.encode` when either option is given.
    return _special_names(allowed_special, "allowed_special"), _special_names(disallowed_special, "disallowed_special")


def _is_json(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


def _is_tiktoken(data: bytes) -> bool:
    first = data[:256].split(b"\n", 1)[0].strip()
    parts = first.split(b" ")
    return len(parts) == 2 and parts[1].isdigit() and all(
        c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" for c in parts[0]
    ) and len(parts[0]) > 0


def _load_bytes(data: bytes, origin: str) -> _Model:
    """Detects the format of a file's bytes: tokenizer.json, tiktoken ranks or SentencePiece."""
    if _is_json(data):
        return _core.BpeTokenizer.from_json(data, origin)
    if _is_tiktoken(data):
        n = data.count(b"\n") + (not data.endswith(b"\n"))
        if n != 128000:
            raise InvalidArgumentError(
                f"{origin} is a tiktoken rank file; it does not store its pre-tokenizer pattern or special "
                "tokens, so load it with Tokenizer.from_tiktoken(path, pattern=..., special_tokens=...)"
            )
        specials = [(t, 128000 + i) for i, t in enumerate(LLAMA3_SPECIAL_TOKENS)]
        return _core.BpeTokenizer.from_tiktoken(data, origin, "llama3", specials)
    return _core.SpmTokenizer.from_bytes(data, origin)


def _check_path(path: object, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be str or os.PathLike, not {type(path).__name__}")
    return os.fspath(path)


def _check_specials(special_tokens: object) -> list[tuple[str, int]]:
    if special_tokens is None:
        return []
    if not isinstance(special_tokens, Mapping):
        raise TypeError(f"special_tokens must be a mapping of str to int, not {type(special_tokens).__name__}")
    out = []
    for k, v in special_tokens.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"special_tokens must map str to int, got {k!r}: {v!r}")
        if not 0 <= v < 2**32 - 1:
            raise InvalidArgumentError(f"special token {k!r} has id {v}, outside 0 .. 2**32 - 2")
        out.append((k, v))
    return out


def _check_text(text: object, what: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, not {type(text).__name__}")
    return text


def _check_texts(texts: object) -> list[str]:
    # A list goes to Rust as it is (its items are type-checked there, naming the index).
    if isinstance(texts, list) and texts.__class__ is list:
        return texts
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of str, not a single " + type(texts).__name__)
    out: list[str] = list(texts)  # type: ignore[call-overload]
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


class Tokenizer(_core.TokenizerBase):
    """A tokenizer loaded from a file; immutable, thread-safe and picklable.

    ``encode`` and ``decode`` are methods of the Rust base class (per-line calls then cost
    no Python frame); everything else is here.

    >>> tok = Tokenizer.from_file("tokenizer.model")        # doctest: +SKIP
    >>> ids = tok.encode("今天天气很好", add_bos=True)        # doctest: +SKIP
    >>> tok.decode(ids)                                      # doctest: +SKIP
    '今天天气很好'
    """

    __slots__ = ("_model", "_origin", "_digest")

    _model: _Model
    _origin: str

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("use Tokenizer.from_file(path) or Tokenizer.from_bytes(data)")

    @classmethod
    def _wrap(cls, model: _Model, origin: str) -> "Tokenizer":
        self = cast("Tokenizer", _core.TokenizerBase.__new__(cls, model))
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_origin", origin)
        return self

    # -- loading and saving -------------------------------------------------

    @classmethod
    def from_file(cls, path: PathLike) -> "Tokenizer":
        """Loads a tokenizer, detecting its format.

        ``path`` is a SentencePiece ``.model``, an HF ``tokenizer.json`` (byte-level BPE),
        LLaMA-3's tiktoken ``tokenizer.model``, the tokenizer in a llama.cpp ``.gguf``
        (byte-level BPE, ``tokenizer.ggml.model = "gpt2"``, with the pre-tokenizer that
        ``tokenizer.ggml.pre`` names; or SentencePiece-style, ``"llama"``), or a folder
        holding one of them (looked
        for in that order: ``tokenizer.json``, ``tokenizer.model``, ``vocab.json`` +
        ``merges.txt`` with GPT-2's pattern; a SentencePiece-style ``tokenizer.json``
        next to a ``tokenizer.model``, as LLaMA folders have, defers to the model).

        Raises ``FileNotFoundError`` (or another ``OSError``) when the file cannot be
        read, :class:`~hanpack.exceptions.ModelFormatError` when it is not a tokenizer
        of a known format, :class:`~hanpack.exceptions.InvalidModelError` when it breaks
        its format's rules and :class:`~hanpack.exceptions.UnsupportedTokenizerError`
        when it uses a component hanpack does not implement.

        >>> tok = Tokenizer.from_file("Qwen2-7B/tokenizer.json")   # doctest: +SKIP
        """
        path = _check_path(path)
        if os.path.isdir(path):
            json_path, model_path = os.path.join(path, "tokenizer.json"), os.path.join(path, "tokenizer.model")
            if os.path.isfile(json_path):
                try:
                    return cls.from_file(json_path)
                except UnsupportedTokenizerError:
                    # A LLaMA-style folder: its tokenizer.json describes the SentencePiece
                    # model next to it, which is the reference.
                    if not os.path.isfile(model_path):
                        raise
            if os.path.isfile(model_path):
                return cls.from_file(model_path)
            vocab, merges = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
            if os.path.isfile(vocab) and os.path.isfile(merges):
                return cls.from_vocab_merges(vocab, merges)
            raise IsADirectoryError(
                errno.EISDIR, "the folder holds no tokenizer.json, tokenizer.model or vocab.json + merges.txt", path
            )
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":  # read by Rust, which maps only the metadata
                return cls._wrap(_core.load_gguf(path), path)
            f.seek(0)
            data = f.read()
        return cls._wrap(_load_bytes(data, path), path)

    @classmethod
    def from_tiktoken(
        cls,
        path: PathLike,
        *,
        pattern: str,
        special_tokens: Mapping[str, int] | None = None,
    ) -> "Tokenizer":
        """Loads a tiktoken rank file (one ``base64token rank`` per line).

        ``pattern`` is the pre-tokenizer: ``"llama3"``, ``"cl100k"``, ``"qwen2"``,
        ``"gpt2"`` or a regex. ``special_tokens`` maps their text to their id.

        >>> tok = Tokenizer.from_tiktoken("tokenizer.model", pattern="llama3",
        ...                               special_tokens={"<|begin_of_text|>": 128000})  # doctest: +SKIP
        """
        path = _check_path(path)
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
        specials = _check_specials(special_tokens)
        with open(path, "rb") as f:
            data = f.read()
        return cls._wrap(_core.BpeTokenizer.from_tiktoken(data, path, pattern, specials), path)

    @classmethod
    def from_vocab_merges(
        cls,
        vocab: PathLike,
        merges: PathLike,
        *,
        pattern: str = "gpt2",
        special_tokens: Mapping[str, int] | None = None,
        nfc: bool = False,
    ) -> "Tokenizer":
        """Loads a GPT-2 style ``vocab.json`` + ``merges.txt`` pair.

        ``pattern`` as in :meth:`from_tiktoken`; ``nfc=True`` normalizes text to NFC
        first (Qwen2 does).

        >>> tok = Tokenizer.from_vocab_merges("vocab.json", "merges.txt", pattern="qwen2", nfc=True)  # doctest: +SKIP
        """
        vocab, merges = _check_path(vocab, "vocab"), _check_path(merges, "merges")
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
        specials = _check_specials(special_tokens)
        with open(vocab, "rb") as f:
            vocab_data = f.read()
        with open(merges, "rb") as f:
            merges_data = f.read()
        origin = os.path.dirname(vocab) or "."
        model = _core.BpeTokenizer.from_vocab_merges(
            vocab_data, merges_data, origin, pattern, specials, _check_flag(nfc, "nfc")
        )
        return cls._wrap(model, origin)

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "<bytes>") -> "Tokenizer":
        """Loads a serialized tokenizer: a SentencePiece ``ModelProto`` or ``tokenizer.json`` bytes."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        return cls._wrap(_load_bytes(bytes(data), origin), origin)

    def to_bytes(self) -> bytes:
        """The tokenizer serialized: a SentencePiece ``ModelProto``, or for byte-level BPE
        the ``tokenizer.json`` bytes (the original file when it was loaded from one)."""
        if isinstance(self._model, _core.BpeTokenizer):
            return self._model.to_json()
        return self._model.to_bytes()

    def _sha256(self) -> str:
        """SHA-256 of :meth:`to_bytes`, cached (serializing a model takes milliseconds, and
        ``hanpack.data.tokenize_files`` records it with every run)."""
        digest = getattr(self, "_digest", None)
        if digest is None:
            digest = hashlib.sha256(self.to_bytes()).hexdigest()
            object.__setattr__(self, "_digest", digest)
        return digest

    def save(self, path: PathLike) -> None:
        """Writes a ``.model`` file that stock sentencepiece loads, or for byte-level BPE
        a ``tokenizer.json`` that HF ``tokenizers`` loads.

        The file is written to a temporary name in the same folder and renamed, so a
        failure never leaves a partial file behind.
        """
        write_bytes(path, self.to_bytes())

    def __reduce__(self) -> tuple[Any, tuple[bytes, str]]:  # pickling ships the model bytes, never a pickle of Rust state
        return (_from_serialized, (self.to_bytes(), self._origin))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Tokenizer is immutable")

    def __repr__(self) -> str:
        return (
            f"Tokenizer(origin={self._origin!r}, type={self._model.model_type!r}, "
            f"vocab_size={self.vocab_size})"
        )

    # -- encoding -----------------------------------------------------------

    def encode_batch(
        self,
        texts: Iterable[str],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
        num_threads: int | None = None,
    ) -> list[list[int]]:
        """Encodes many texts on all cores (or ``num_threads`` threads); options as :meth:`encode`."""
        args = (
            _check_texts(texts), _check_flag(add_bos, "add_bos"), _check_flag(add_eos, "add_eos"),
            _check_threads(num_threads),
        )
        if isinstance(self._model, _core.BpeTokenizer):
            return self._model.encode_batch(*args, *_policy(allowed_special, disallowed_special))
        return self._model.encode_batch(*args)

    def encode_batch_numpy(
        self,
        texts: Iterable[str],
        *,
        add_bos: bool = False,
        add_eos: bool = False,
        allowed_special: SpecialSet = (),
        disallowed_special: SpecialSet = "all",
        num_threads: int | None = None,
    ) -> tuple["np.ndarray", "np.ndarray"]:
        """Encodes many texts into flat ``int32`` ids and ``int64`` row offsets.

        Row ``i`` is ``ids[offsets[i]:offsets[i + 1]]``; no per-token Python objects are made.

        >>> ids, offsets = tok.encode_batch_numpy(["你好", "世界"])  # doctest: +SKIP
        >>> ids[offsets[1]:offsets[2]].tolist() == tok.encode("世界")  # doctest: +SKIP
        True
        """
        args = (
            _check_texts(texts), _check_flag(add_bos, "add_bos"), _check_flag(add_eos, "add_eos"),
            _check_threads(num_threads),
        )
        if isinstance(self._model, _core.BpeTokenizer):
            return self._model.encode_batch_flat(*args, *_policy(allowed_special, disallowed_special))
        return self._model.encode_batch_flat(*args)

    def _encode_lines(
        self, source: "bytes | tuple[str, int, int, int]", *, json_field: str | None, narrow: bool, add_bos: bool,
        add_eos: bool, num_threads: int | None,
    ) -> tuple[tuple["np.ndarray", "np.ndarray", "np.ndarray", "np.ndarray", list[tuple[str, int, str]], int], int]:
        """For :mod:`hanpack.data`: the documents of whole ``.txt`` lines (or ``.jsonl``
        lines, text in ``json_field``) encoded on all cores, special-token text as ordinary
        text. ``source``: the lines as bytes, or ``(path, start, end, size)``, the whole
        lines of a file from byte ``start`` (about ``size`` bytes, never past ``end``), read
        without the GIL (``OSError`` when it cannot be). Returns ids (uint16 when
        ``narrow`` and the vocabulary fits, else uint32), document bounds, each document's
        line (from 1) and the byte offset after it, the other lines as ``(kind, line,
        message)`` and the line count; and the bytes of lines read."""
        return self._encode_lines_core(source, json_field, narrow, add_bos, add_eos, num_threads)

    def encode_as_pieces(self, text: str) -> list[str]:
        """Pieces of ``text`` (``SentencePieceProcessor.encode(text, out_type=str)``; for
        byte-level BPE the vocabulary's byte-level strings, special tokens allowed)."""
        return self._model.encode_as_pieces(_check_text(text))

    def normalize(self, text: str) -> str:
        """``text`` after the model's normalizer (SentencePiece: U+2581 for spaces and the
        charsmap rules; byte-level BPE: e.g. NFC, or unchanged)."""
        return self._model.normalize(_check_text(text))

    # -- decoding -----------------------------------------------------------

    def decode_batch(
        self,
        batch: Iterable[Sequence[int]],
        *,
        skip_special_tokens: bool = False,
        num_threads: int | None = None,
    ) -> list[str]:
        """Decodes many id lists on all cores."""
        _check_ids(batch, "batch")
        skip = _check_flag(skip_special_tokens, "skip_special_tokens")
        if isinstance(self._model, _core.BpeTokenizer):
            return self._model.decode_batch(batch, _check_threads(num_threads), skip)
        return self._model.decode_batch(batch, _check_threads(num_threads))

    def stream_decoder(self) -> "StreamDecoder":
        """An incremental decoder for generation: feed ids one at a time, get only
        complete text (never a U+FFFD for a character split across byte pieces).

        >>> dec = tok.stream_decoder()                        # doctest: +SKIP
        >>> "".join(dec.step(i) for i in ids) + dec.finish() == tok.decode(ids)  # doctest: +SKIP
        True
        """
        if isinstance(self._model, _core.BpeTokenizer):
            raise InvalidArgumentError("stream_decoder() is not available for byte-level BPE tokenizers yet")
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
        """``"bpe"`` or ``"unigram"`` (SentencePiece), ``"bbpe"`` (byte-level BPE)."""
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
        if isinstance(self._model, _core.BpeTokenizer):
            return -1
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

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special tokens' text → id (byte-level BPE; empty for SentencePiece models)."""
        if isinstance(self._model, _core.BpeTokenizer):
            return dict(self._model.special_tokens())
        return {}

    def piece_score(self, id: int) -> float:
        """The SentencePiece score of ``id`` (SentencePiece models only: byte-level BPE
        has merge ranks, not piece scores)."""
        if isinstance(self._model, _core.BpeTokenizer):
            raise InvalidArgumentError("piece_score: byte-level BPE tokenizers have merge ranks, not piece scores")
        self.id_to_piece(id)
        return self._model.piece_score(id)  # type: ignore[return-value]

    def piece_type(self, id: int) -> str:
        """NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED or BYTE (for byte-level BPE:
        NORMAL or CONTROL for special tokens)."""
        self.id_to_piece(id)
        if isinstance(self._model, _core.BpeTokenizer):
            return "CONTROL" if self._model.is_special(id) else "NORMAL"
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
    return Tokenizer._wrap(_load_bytes(data, origin), origin)




