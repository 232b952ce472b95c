"""Training SentencePiece-compatible BPE vocabularies on text and jsonl files.

Files are streamed in blocks (text files as raw bytes, split into lines in Rust; jsonl
parsed in Python); each block is split into units and counted in parallel in Rust without
the GIL; the count table is bounded (``max_units``). The BPE merges then run
on the distinct units. The model file loads in stock sentencepiece (and, via
:meth:`TrainedVocab.save`, in transformers).

Word-augmented vocabularies (Linly's character+word idea): pass a
:class:`hanpack.Segmenter` so merges stay inside jieba words, and ``whole_words=N`` to add
the N most frequent words as whole pieces (made reachable by :func:`hanpack.vocab.extend`).
Per-input weights balance scripts, e.g. Simplified and Traditional sources.

    >>> from hanpack.vocab import train          # doctest: +SKIP
    >>> v = train(["zh-hans.txt", ("zh-hant.txt", 2.0)], vocab_size=20000)  # doctest: +SKIP
    >>> v.save("my-tokenizer")                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from .. import _core
from .._atomic import new_directory
from ..exceptions import InvalidArgumentError
from ..segment import Segmenter
from ..tokenizer import Tokenizer
from .extend import extend, write_hf_files

__all__ = ["TrainedVocab", "model_pieces", "train", "read_texts"]

PathLike = Union[str, "os.PathLike[str]"]
Input = Union[PathLike, Tuple[PathLike, float]]
#: Weights are applied as integer multiples of 1/WEIGHT_SCALE.
WEIGHT_SCALE = 100


@dataclass(frozen=True)
class TrainedVocab:
    """A trained model and how it was made."""

    model: bytes = field(repr=False)
    vocab_size: int
    alphabet: int
    merges: int
    whole_words: int
    intermediates: int
    lines: int
    bytes: int
    distinct_units: int
    seconds: float

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_bytes(self.model, origin="<trained model>")

    def pieces(self, *, cjk_only: bool = False) -> List[str]:
        """The learned pieces, most important first (merges in order, then characters,
        then whole words); with ``cjk_only``, only those with a CJK character (what
        :func:`hanpack.vocab.extend` accepts)."""
        return model_pieces(self.model, cjk_only=cjk_only)

    def save(self, directory: PathLike) -> Path:
        """Writes ``tokenizer.model`` plus the transformers files into a new folder."""
        with new_directory(directory) as tmp:
            (tmp / "tokenizer.model").write_bytes(self.model)
            write_hf_files(self.model, tmp)
        return Path(directory)


def model_pieces(model: Union[bytes, Tokenizer], *, cjk_only: bool = False) -> List[str]:
    """NORMAL pieces of a SentencePiece model in score order (highest first)."""
    tok = model if isinstance(model, Tokenizer) else Tokenizer.from_bytes(model)
    rows = [(tok.piece_score(i), i) for i in range(tok.vocab_size) if tok.piece_type(i) == "NORMAL"]
    rows.sort(key=lambda r: (-r[0], r[1]))
    out = [tok.id_to_piece(i) for _, i in rows]
    return [p for p in out if _core.has_cjk(p)] if cjk_only else out


def read_texts(path: PathLike, *, jsonl_fields: Optional[Sequence[str]] = None) -> Iterator[str]:
    """The texts of one file, streamed: each line of a text file; for ``.jsonl``, the
    string values of each object (only ``jsonl_fields`` if given, else all but ``id``)."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="strict") as f:
        if path.suffix != ".jsonl":
            for line in f:
                yield line.rstrip("\r\n")
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict):
                raise InvalidArgumentError(f"{path}:{n}: a jsonl line must be a JSON object")
            for k, v in obj.items():
                if isinstance(v, str) and (k in jsonl_fields if jsonl_fields is not None else k != "id"):
                    yield v


def _inputs(inputs: Sequence[Input]) -> List[Tuple[Path, int]]:
    if isinstance(inputs, (str, bytes, os.PathLike)):
        inputs = [inputs]
    out = []
    for item in inputs:
        path, weight = (item if isinstance(item, tuple) else (item, 1.0))
        if not isinstance(weight, (int, float)) or not weight > 0:
            raise InvalidArgumentError(f"the weight of {path} must be a positive number, not {weight!r}")
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(2, "training input not found", str(p))
        out.append((p, max(1, round(weight * WEIGHT_SCALE))))
    if not out:
        raise InvalidArgumentError("no training input given")
    return out


def _text_blocks(path: Path, size: int) -> Iterator[Tuple[int, bytes]]:
    """(offset, bytes) blocks of a text file, each ending after a newline (or at the end):
    Rust splits and checks them, with no Python string per line."""
    offset = 0
    carry = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk:
                if carry:
                    yield offset, carry
                return
            block = carry + chunk
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                continue
            yield offset, block[:cut]
            offset += cut
            carry = block[cut:]


def _batches(path: Path, jsonl_fields: Optional[Sequence[str]], batch_bytes: int) -> Iterator[List[str]]:
    batch: List[str] = []
    size = 0
    for text in read_texts(path, jsonl_fields=jsonl_fields):
        if not text:
            continue
        batch.append(text)
        size += len(text)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def train(
    inputs: Sequence[Input],
    *,
    vocab_size: int,
    character_coverage: float = 0.9995,
    byte_fallback: bool = True,
    max_piece_chars: int = 16,
    min_frequency: int = 2,
    split_digits: bool = True,
    add_dummy_prefix: bool = True,
    hard_vocab_limit: bool = True,
    segmenter: Optional[Segmenter] = None,
    hmm: bool = False,
    whole_words: int = 0,
    jsonl_fields: Optional[Sequence[str]] = None,
    max_units: int = 20_000_000,
    num_threads: Optional[int] = None,
    progress: bool = True,
) -> TrainedVocab:
    """Trains a BPE model of ``vocab_size`` pieces (specials and byte pieces included).

    ``inputs``: paths, or ``(path, weight)`` pairs; each occurrence in a file counts
    ``weight`` times (balance Simplified and Traditional sources this way). ``segmenter``
    keeps merges inside its words (``hmm`` for its HMM); ``whole_words`` adds that many of
    the most frequent multi-character words as whole pieces on top of the BPE pieces,
    within ``vocab_size`` (intermediates the words need for reachability come on top
    and are counted in :attr:`TrainedVocab.intermediates`). As in sentencepiece, a text
    too small for ``vocab_size`` is an error unless ``hard_vocab_limit=False``, which
    returns the smaller vocabulary.
    """
    files = _inputs(inputs)
    for name, value, low in (("vocab_size", vocab_size, 1), ("max_piece_chars", max_piece_chars, 1),
                             ("min_frequency", min_frequency, 1), ("whole_words", whole_words, 0), ("max_units", max_units, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InvalidArgumentError(f"{name} must be an int >= {low}, not {value!r}")
    if whole_words and segmenter is None:
        raise InvalidArgumentError("whole_words needs a segmenter (the words come from it)")
    if segmenter is not None and not isinstance(segmenter, Segmenter):
        raise InvalidArgumentError(f"segmenter must be a hanpack.Segmenter, not {type(segmenter).__name__}")
    if whole_words >= vocab_size:
        raise InvalidArgumentError(f"whole_words ({whole_words}) must be smaller than vocab_size ({vocab_size})")

    t0 = time.perf_counter()
    counter = _core.UnitCounter(add_dummy_prefix=add_dummy_prefix, split_digits=split_digits, hmm=hmm)
    seg_core = segmenter._core if segmenter is not None else None
    bar = _progress(sum(p.stat().st_size for p, _ in files), progress)
    try:
        for path, weight in files:
            if path.suffix == ".jsonl":
                for batch in _batches(path, jsonl_fields, 4 << 20):
                    counter.add_lines(batch, weight, seg_core, num_threads)
                    counter.prune(max_units)
                    if bar is not None:
                        bar.update(sum(len(t.encode("utf-8")) + 1 for t in batch))
                continue
            for offset, block in _text_blocks(path, 16 << 20):
                counter.add_text(block, str(path), offset, weight, seg_core, num_threads)
                counter.prune(max_units)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    lines, nbytes, units, _pruned = counter.stats()
    model, alphabet, merges, _uncovered = counter.train_bpe(
        vocab_size=vocab_size - whole_words,
        character_coverage=float(character_coverage),
        byte_fallback=bool(byte_fallback),
        max_piece_chars=max_piece_chars,
        min_frequency=min_frequency * WEIGHT_SCALE,
        num_threads=num_threads,
    )
    size = Tokenizer.from_bytes(model).vocab_size
    if hard_vocab_limit and size < vocab_size - whole_words:
        raise InvalidArgumentError(
            f"vocab_size {vocab_size} is too high for this text: no pair occurs {min_frequency} times once the "
            f"model has {size} pieces; set vocab_size <= {size + whole_words} or hard_vocab_limit=False")
    words_added = intermediates = 0
    if whole_words:
        have = Tokenizer.from_bytes(model)
        words = [w for w, _ in counter.top_words(whole_words * 2 + 1000, 2, max_piece_chars)
                 if have.piece_to_id(w) == have.unk_id]
        ext = extend(model, words[:whole_words], placement="below", max_piece_chars=max_piece_chars)
        model = ext.model
        words_added, intermediates = ext.count("requested"), ext.count("intermediate")
    return TrainedVocab(
        model=model,
        vocab_size=Tokenizer.from_bytes(model).vocab_size,
        alphabet=alphabet,
        merges=merges,
        whole_words=words_added,
        intermediates=intermediates,
        lines=lines,
        bytes=nbytes,
        distinct_units=units,
        seconds=time.perf_counter() - t0,
    )


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc="counting", leave=False)
