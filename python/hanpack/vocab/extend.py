"""Extending a SentencePiece BPE model (LLaMA and its kin) with new pieces that stock
sentencepiece can actually produce.

Chinese-LLaMA's merge script appends every new piece with score 0; pieces such as
``越来越`` then never come out of sentencepiece, because no pair of existing pieces forms
them. :func:`extend` checks every added piece with hanpack's sentencepiece-exact encoder
and adds the intermediate pieces a word needs, scored below everything else so that no
other text changes (the argument is in ``rust/hanpack-core/src/vocab/extend.rs``). Only
pieces with a CJK character are added, so text without one encodes id for id as with the
base model, and base ids never move.

    >>> from hanpack.vocab import extend          # doctest: +SKIP
    >>> ext = extend("llama/tokenizer.model", ["越来越", "俱乐部"])  # doctest: +SKIP
    >>> ext.unreachable                            # doctest: +SKIP
    []
    >>> ext.save("llama-zh")                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Sequence, Tuple, Union

from .. import _core
from .._atomic import new_directory
from ..exceptions import InvalidArgumentError
from ..tokenizer import Tokenizer

__all__ = ["AddedPiece", "Extension", "extend", "extend_to_size", "unreachable_pieces", "write_hf_files"]

PathLike = Union[str, "os.PathLike[str]"]
Placement = Literal["above", "below"]


@dataclass(frozen=True)
class AddedPiece:
    """One piece appended to the base model."""

    piece: str
    id: int
    score: float
    #: ``"requested"``, ``"character"`` (a character of a requested piece that was not a
    #: piece) or ``"intermediate"`` (added so that a longer piece is reachable).
    origin: str


@dataclass(frozen=True)
class Extension:
    """The result of :func:`extend`: the new model and an account of every piece."""

    model: bytes = field(repr=False)
    base_size: int
    added: Tuple[AddedPiece, ...] = field(repr=False)
    #: Requested pieces left out, with the reason (``"already in base"``, ``"no CJK
    #: character"``, ``"too long"``, ``"duplicate"``, ``"changed by the normalizer"``,
    #: ``"unreachable"`` when ``repair=False``).
    skipped: Tuple[Tuple[str, str], ...] = field(repr=False)
    #: Added pieces that sentencepiece would not produce for their own text; empty unless
    #: the repair met a case it cannot fix.
    unreachable: Tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return self.base_size + len(self.added)

    def count(self, origin: str) -> int:
        """How many added pieces have this origin."""
        return sum(1 for a in self.added if a.origin == origin)

    def tokenizer(self) -> Tokenizer:
        """The extended model as a :class:`hanpack.Tokenizer`."""
        return Tokenizer.from_bytes(self.model, origin="<extended model>")

    def save(self, directory: PathLike) -> Path:
        """Writes ``tokenizer.model`` (stock sentencepiece), ``tokenizer.json`` and
        ``tokenizer_config.json`` (transformers), ``special_tokens_map.json`` and
        ``added_pieces.tsv`` (id, piece, score, origin) into a new folder."""
        with new_directory(directory) as tmp:
            (tmp / "tokenizer.model").write_bytes(self.model)
            write_hf_files(self.model, tmp)
            with open(tmp / "added_pieces.tsv", "x", encoding="utf-8") as f:
                f.write("id\tpiece\tscore\torigin\n")
                for a in self.added:
                    f.write(f"{a.id}\t{a.piece}\t{a.score!r}\t{a.origin}\n")
        return Path(directory)


def _model_bytes(base: Union[PathLike, bytes, Tokenizer], what: str) -> Tuple[bytes, str]:
    if isinstance(base, Tokenizer):
        if base.model_type != "bpe":
            raise InvalidArgumentError(f"{what} must be a SentencePiece BPE model, not {base.model_type!r}")
        return base.to_bytes(), repr(base)
    if isinstance(base, (bytes, bytearray)):
        return bytes(base), "<bytes>"
    if isinstance(base, (str, os.PathLike)):
        path = os.fspath(base)
        with open(path, "rb") as f:
            return f.read(), path
    raise InvalidArgumentError(f"{what} must be a path, bytes or a hanpack.Tokenizer, not {type(base).__name__}")


def extend(
    base: Union[PathLike, bytes, Tokenizer],
    pieces: Sequence[str],
    *,
    placement: Placement = "above",
    max_piece_chars: int = 16,
    add_missing_chars: bool = True,
    repair: bool = True,
) -> Extension:
    """Appends ``pieces`` (most important first) to the SentencePiece BPE model ``base``.

    ``placement="above"`` scores the new pieces above every base piece in the given order
    (they win over base merges, as in Chinese-LLaMA); ``"below"`` puts them under. With
    ``repair`` (the default) intermediate pieces are added where a piece would otherwise
    be dead; without it, such pieces are skipped with reason ``"unreachable"``.
    ``add_missing_chars`` adds the characters of new pieces that are not pieces, so that
    nothing in them falls back to bytes.
    """
    data, origin = _model_bytes(base, "base")
    if isinstance(pieces, (str, bytes)) or not all(isinstance(p, str) for p in pieces):
        raise InvalidArgumentError("pieces must be a sequence of str")
    if placement not in ("above", "below"):
        raise InvalidArgumentError(f"placement must be 'above' or 'below', not {placement!r}")
    if not isinstance(max_piece_chars, int) or max_piece_chars < 1:
        raise InvalidArgumentError(f"max_piece_chars must be a positive int, not {max_piece_chars!r}")
    model, base_size, added, skipped, unreachable = _core.extend_spm(
        data,
        origin,
        list(pieces),
        above=placement == "above",
        max_piece_chars=max_piece_chars,
        add_missing_chars=bool(add_missing_chars),
        repair=bool(repair),
    )
    return Extension(
        model=model,
        base_size=base_size,
        added=tuple(AddedPiece(p, i, s, o) for p, i, s, o in added),
        skipped=tuple(skipped),
        unreachable=tuple(unreachable),
    )


def extend_to_size(
    base: Union[PathLike, bytes, Tokenizer], pieces: Sequence[str], added: int, **options: object
) -> Extension:
    """:func:`extend` with the longest prefix of ``pieces`` that adds at most ``added``
    pieces in all (requested, characters and intermediates), found by bisection."""
    if not isinstance(added, int) or added < 1:
        raise InvalidArgumentError(f"added must be a positive int, not {added!r}")
    data, _ = _model_bytes(base, "base")
    pieces = list(pieces)
    best = extend(data, [], **options)  # type: ignore[arg-type]
    lo, hi = 0, len(pieces)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ext = extend(data, pieces[:mid], **options)  # type: ignore[arg-type]
        if len(ext.added) <= added:
            lo, best = mid, ext
        else:
            hi = mid - 1
    return best


def unreachable_pieces(model: Union[PathLike, bytes, Tokenizer]) -> List[Tuple[int, str]]:
    """NORMAL pieces that encoding their own text (without the dummy prefix) does not
    produce: the dead pieces whose embedding rows are never trained."""
    data, origin = _model_bytes(model, "model")
    return [(int(i), p) for i, p in _core.spm_unreachable(data, origin)]


def write_hf_files(model: bytes, directory: PathLike) -> None:
    """Writes ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``
    for a SentencePiece BPE model into an existing folder; transformers'
    ``AutoTokenizer.from_pretrained(directory)`` then gives sentencepiece's ids."""
    directory = Path(directory)
    tok = Tokenizer.from_bytes(model)
    (directory / "tokenizer.json").write_text(_core.spm_to_hf_json(model, "<model>"), encoding="utf-8")
    special = {}
    for name, id_ in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id), ("unk_token", tok.unk_id), ("pad_token", tok.pad_id)):
        if id_ >= 0:
            special[name] = tok.id_to_piece(id_)
    config = {
        # Loads tokenizer.json as written; transformers 5's LlamaTokenizer would rebuild
        # the pre-tokenizer and lose sentencepiece's handling of runs of spaces.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        **special,
    }
    for name, obj in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        with open(directory / name, "x", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
