"""``tokenize_files``: input files to token shards, on all cores or on a Dask cluster.

Locally, plain text and JSON-lines files are cut into line-aligned spans that the
tokenizer reads, splits into records and encodes itself (GIL released, all cores, a few
spans queued ahead in its pool); compressed and parquet files are read by a background
thread. The caller's thread writes the shards. With ``client=`` (a ``dask.distributed.Client``), the
inputs are cut into parts that the workers read and encode themselves, and this process
writes the results in input order with the same :class:`~hanpack.data.shards.ShardWriter`,
so both give byte-identical shards (the workers must see the input paths; the shards are
written where this process runs).

Policy for records that cannot become documents (``on_error``): ``"stop"`` (default)
raises :class:`~hanpack.exceptions.DataInputError` naming the file and line; ``"skip"``
counts them by kind in the manifest and lists the first ones with file and line. Empty
lines are never documents; they are counted as ``empty``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, Iterator, Sequence, Union

import numpy as np

from .._background import in_background
from ..exceptions import DataInputError, InvalidArgumentError
from .shards import FORMAT, MANIFEST, VERSION, Position, ShardWriter, read_manifest
from .sources import AFTER_LAST_LINE, Part, Problem, RawBatch, input_format, line_cuts, read_part

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

__all__ = ["tokenize_files", "TokenizeResult"]

PathLike = Union[str, "os.PathLike[str]"]
BATCH_BYTES = 4 << 20  # text per encode call: large enough to keep all cores busy
PART_BYTES = 64 << 20  # text per cluster task
# Batches submitted to the encoding pool and not yet written (a few MB each): the pool
# works through them in order while the writer takes the oldest. With only those encoding,
# the workers sat idle whenever the writer was busy (on two cores, 100-140 ms of a 0.9 s
# run, the corpora three times over).
BATCHES_AHEAD = 6


@dataclass(frozen=True)
class TokenizeResult:
    """What a run did: totals of the whole output, and what this run added."""

    out_dir: Path
    shards: int
    tokens: int
    documents: int
    skipped: dict[str, int]
    resumed_shards: int  # shards kept from an interrupted earlier run
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _EncodeOptions:
    """How documents are encoded (special-token text is always ordinary text here)."""

    add_bos: bool
    add_eos: bool
    narrow: bool  # ids as uint16 straight from the tokenizer (line batches)


@dataclass
class _Encoded:
    """One encoded stretch of a part: documents, their part-relative records, problems."""

    ids: np.ndarray
    bounds: np.ndarray
    records: np.ndarray
    offsets: np.ndarray
    problems: list[Problem] = field(default_factory=list)
    n_records: int = 0  # records (lines, rows) the stretch covers, documents or not


def tokenize_files(
    inputs: Sequence[PathLike] | PathLike,
    tokenizer: "Tokenizer | PathLike",
    out_dir: PathLike,
    *,
    text_field: str = "text",
    add_bos: bool = False,
    add_eos: bool = False,
    dtype: str = "auto",
    shard_tokens: int = 100_000_000,
    num_threads: int | None = None,
    on_error: str = "stop",
    progress: bool = True,
    client: Any = None,
    part_bytes: int = PART_BYTES,
) -> TokenizeResult:
    """Tokenizes ``.txt``, ``.jsonl`` (also ``.gz``/``.zst``) and ``.parquet`` files into
    shards (see :mod:`hanpack.data.shards` for the format). Special-token text in the data
    is encoded as ordinary text. Running again into the same ``out_dir`` resumes an
    interrupted run (the inputs, tokenizer and options must be the same) and does nothing
    for a finished one.

    >>> tok = hanpack.Tokenizer.from_file("tokenizer.model")                 # doctest: +SKIP
    >>> tokenize_files(["a.jsonl.zst", "b.txt"], tok, "shards/", add_eos=True)  # doctest: +SKIP
    TokenizeResult(out_dir=PosixPath('shards'), shards=3, tokens=251433014, ...)
    """
    from ..tokenizer import Tokenizer, _check_threads

    started = time.perf_counter()
    paths = _check_inputs(inputs)
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.from_file(tokenizer)
    if on_error not in ("stop", "skip"):
        raise InvalidArgumentError(f'on_error must be "stop" or "skip", not {on_error!r}')
    if not isinstance(shard_tokens, int) or isinstance(shard_tokens, bool) or shard_tokens < 1:
        raise InvalidArgumentError(f"shard_tokens must be a positive int, not {shard_tokens!r}")
    if not isinstance(text_field, str):
        raise InvalidArgumentError(f"text_field must be a str, not {type(text_field).__name__}")
    np_dtype = _token_dtype(dtype, tokenizer.vocab_size)
    tokenizer.encode("", add_bos=add_bos, add_eos=add_eos)  # a BOS/EOS the tokenizer lacks fails before any output
    num_threads = _check_threads(num_threads)
    if on_error == "stop":
        for p in paths:
            if not os.access(p, os.R_OK) or os.path.isdir(p):
                raise DataInputError(p, 0, "unreadable", "cannot be read (missing, a folder, or no permission)")
    out = Path(out_dir)
    wanted = _run_description(paths, tokenizer, text_field, add_bos, add_eos, np_dtype, shard_tokens, on_error)
    manifest = _start_or_resume(out, wanted)
    resumed = len(manifest["shards"])
    writer = ShardWriter(out, manifest, shard_tokens=shard_tokens, dtype=np_dtype, inputs=paths)
    if not manifest["complete"]:
        start = _resume_position(manifest)
        opts = _EncodeOptions(bool(add_bos), bool(add_eos), narrow=np_dtype.itemsize == 2)
        bar = _progress(progress, manifest["tokens"])
        try:
            if client is None:
                stream = _local_stream(paths, start, tokenizer, text_field, opts, num_threads)
            else:
                stream = _cluster_stream(paths, start, tokenizer, text_field, opts, client, part_bytes)
            shown = 0
            try:
                for part, base, enc in stream:
                    _deliver(writer, part, base, enc, paths, on_error)
                    if bar is not None:
                        bar.update(writer.written_tokens - shown)
                        shown = writer.written_tokens
            finally:
                # Closed here, on this thread: left to the garbage collector, the stream's
                # thread pools were shut down inside whatever thread collected it, and a
                # collection inside `Thread.start` deadlocked on threading's own lock.
                stream.close()
            writer.finish()
        except BaseException:
            writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
    return TokenizeResult(
        out_dir=out, shards=len(manifest["shards"]), tokens=manifest["tokens"], documents=manifest["documents"],
        skipped=dict(manifest["skipped"]), resumed_shards=resumed, new_tokens=writer.written_tokens,
        seconds=time.perf_counter() - started,
    )


def _deliver(writer: ShardWriter, part: Part, base: int, enc: _Encoded, paths: list[str], on_error: str) -> None:
    """Problems and documents of one encoded stretch, in record order, to the writer."""
    for p in enc.problems:
        if p.kind != "empty" and on_error == "stop":
            # Documents before it in this stretch are not written: the manifest stays at the
            # last whole shard, so the run can be repeated once the input is fixed.
            raise DataInputError(paths[part.input], base + p.record if p.record else 0, p.kind, p.message)
    for p in enc.problems:
        writer.skip(Position(part.input, base + p.record if p.record else 0), p.kind, p.message)
    if len(enc.bounds) > 1:
        writer.add(part.input, enc.ids, enc.bounds, enc.records + base, enc.offsets)


# -- the local pipeline ------------------------------------------------------------------

def _local_stream(paths, start, tokenizer, text_field, opts, num_threads) -> Generator[tuple[Part, int, _Encoded], None, None]:
    """Reading on a background thread (it holds the GIL), encoding on all cores in the
    tokenizer's pool (a few batches ahead, without the GIL), writing on the caller's
    thread. With ``num_threads=1`` everything runs on this one thread."""
    read = ((part, base, batch) for part, base in _resume_parts(paths, start)
            for batch in read_part(part, text_field=text_field, batch_bytes=BATCH_BYTES))
    if num_threads == 1:
        yield from _encoded_on_this_thread(read, tokenizer, opts)
        return
    batches = in_background(read, "hanpack-reader")
    try:
        yield from _numbered(_encoded_ahead(batches, tokenizer, opts, num_threads))
    finally:
        batches.close()


def _encoded(tokenizer: "Tokenizer", batch: RawBatch, opts: "_EncodeOptions", num_threads: int | None,
             first: Callable[[], tuple[tuple, int]] | None = None) -> list[_Encoded]:
    """One batch encoded, in stretches whose records are each numbered from their own start.
    ``first``, for a span or bytes: returns the first ``_encode_lines`` result, already
    submitted (see :func:`_encoded_ahead`)."""
    common = dict(narrow=opts.narrow, add_bos=opts.add_bos, add_eos=opts.add_eos)
    if batch.span is not None:  # a span of a plain file, cut at line starts: the tokenizer reads it whole
        out: list[_Encoded] = []
        offset, end = batch.span
        while offset < end:  # once, unless the file shrank under the run
            try:
                if first is not None:
                    result, consumed = first()
                    first = None
                else:
                    result, consumed = tokenizer._encode_lines(
                        (batch.path, offset, end, end - offset), json_field=batch.json_field,
                        num_threads=num_threads, **common,
                    )
            except OSError as e:
                out.append(_nothing_but(Problem("unreadable", AFTER_LAST_LINE, str(e))))
                break
            if consumed == 0:  # never loop on a file that shrank under the run
                out.append(_nothing_but(Problem("unreadable", AFTER_LAST_LINE, f"the file ends at byte {offset}, "
                                                f"before the {end} bytes it had when the run began")))
                break
            out.append(_lines_encoded(result, offset))
            offset += consumed
        return out
    if batch.data is not None:
        if first is not None:
            result, _ = first()
        else:
            result, _ = tokenizer._encode_lines(batch.data, json_field=batch.json_field, num_threads=num_threads, **common)
        return [_lines_encoded(result, batch.start_offset)]
    if batch.texts:
        ids, bounds = tokenizer.encode_batch_numpy(
            batch.texts, add_bos=opts.add_bos, add_eos=opts.add_eos, allowed_special=(),
            disallowed_special=(), num_threads=num_threads,
        )
    else:
        ids, bounds = np.zeros(0, np.int32), np.zeros(1, np.int64)
    return [_Encoded(ids, bounds, np.asarray(batch.records, np.int64), np.asarray(batch.offsets, np.int64),
                     list(batch.problems), batch.n_records)]


def _nothing_but(problem: Problem) -> _Encoded:
    return _Encoded(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), [problem], 0)


def _lines_encoded(out: tuple, start_offset: int) -> _Encoded:
    """``Tokenizer._encode_lines``' result (lines numbered from the stretch's start) for
    lines that start at byte ``start_offset`` of the file (-1: cannot seek)."""
    ids, bounds, lines, ends, skipped, n = out
    problems = [Problem(kind, line, message) for kind, line, message in skipped]
    offsets = ends + start_offset if start_offset >= 0 else np.full(len(ends), -1, np.int64)
    return _Encoded(ids, bounds, lines, offsets, problems, n)


def _placed(enc: _Encoded, before: int) -> _Encoded:
    """A stretch numbered from the part's start, ``before`` records of the part preceding it."""
    if before:
        enc.records = enc.records + before
    enc.problems = [
        Problem(p.kind, before + 1, f"breaks off after line {before}: {p.message}") if p.record == AFTER_LAST_LINE
        else Problem(p.kind, p.record + before, p.message) if p.record else p  # 0: the whole file
        for p in enc.problems
    ]
    return enc


def _encoded_ahead(batches: Iterable[tuple[Part, int, RawBatch]], tokenizer: "Tokenizer", opts: "_EncodeOptions",
                   num_threads: int | None) -> Iterator[tuple[Part, int, RawBatch, list[_Encoded]]]:
    """Batches encoded in the tokenizer's pool, :data:`BATCHES_AHEAD` of them submitted
    ahead of the one taken (``_core.LinesStream``: the pool's workers go from one batch to
    the next without waiting for a Python thread), in input order. Parquet texts are
    encoded when their turn comes."""
    stream = tokenizer._lines_stream(opts.narrow, opts.add_bos, opts.add_eos, num_threads)
    pending: deque = deque()  # (item, whether it was submitted)

    def taken(item: tuple[Part, int, RawBatch], submitted: bool) -> tuple[Part, int, RawBatch, list[_Encoded]]:
        return (*item, _encoded(tokenizer, item[2], opts, num_threads, stream.take if submitted else None))

    try:
        for item in batches:
            batch = item[2]
            submitted = False
            if batch.span is not None and batch.span[0] < batch.span[1]:  # an empty file's span reads nothing
                a, b = batch.span
                stream.submit((batch.path, a, b, b - a), batch.json_field)
                submitted = True
            elif batch.data is not None:
                stream.submit(batch.data, batch.json_field)
                submitted = True
            pending.append((item, submitted))
            if len(pending) > BATCHES_AHEAD:
                yield taken(*pending.popleft())
        while pending:
            yield taken(*pending.popleft())
    finally:
        stream.close()


def _encoded_on_this_thread(batches: Iterable[tuple[Part, int, RawBatch]], tokenizer: "Tokenizer",
                            opts: "_EncodeOptions") -> Iterator[tuple[Part, int, _Encoded]]:
    """Batches encoded one after another on the calling thread, numbered as by :func:`_numbered`."""
    return _numbered((*item, _encoded(tokenizer, item[2], opts, 1)) for item in batches)


def _numbered(encoded: Iterable[tuple[Part, int, RawBatch, list[_Encoded]]]) -> Iterator[tuple[Part, int, _Encoded]]:
    """The stretches of batches encoded in input order, numbered from each part's start."""
    current, before = None, 0
    for part, base, batch, stretches in encoded:
        if part is not current:
            current, before = part, 0
        before += batch.skipped_lines
        for enc in stretches:
            enc = _placed(enc, before)
            before += enc.n_records
            yield part, base, enc


def _resume_parts(paths: list[str], start: Position) -> Iterator[tuple[Part, int]]:
    """One part per input from ``start`` on, with the record count before each part."""
    for i in range(start.input, len(paths)):
        if i > start.input or start.record == 0:
            yield Part(i, paths[i]), 0
        elif start.offset >= 0:
            yield Part(i, paths[i], start=start.offset), start.record
        else:
            yield Part(i, paths[i], skip=start.record), 0


# -- the cluster pipeline ----------------------------------------------------------------

def _cluster_stream(paths, start, tokenizer, text_field, opts, client, part_bytes) -> Generator[tuple[Part, int, _Encoded], None, None]:
    """Parts encoded by Dask workers, taken back in input order (a bounded window ahead)."""
    parts: list[tuple[Part, int | None]] = []
    for whole, base in _resume_parts(paths, start):
        pieces = [whole] if whole.skip else _split_from(whole, part_bytes)
        parts += [(p, base if k == 0 else None) for k, p in enumerate(pieces)]
    tok = client.scatter(tokenizer, broadcast=True)
    window = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    pending: deque = deque()
    counted: dict[int, int] = {}  # input -> records before the next part
    for item in parts:
        pending.append((item, client.submit(_encode_part, item[0], tok, text_field, opts, pure=False)))
        if len(pending) >= window:
            yield _taken(pending, counted)
    while pending:
        yield _taken(pending, counted)


def _taken(pending: deque, counted: dict[int, int]) -> tuple[Part, int, _Encoded]:
    (part, base), future = pending.popleft()
    enc = future.result()
    if base is None:
        base = counted[part.input]
    counted[part.input] = base + enc.n_records
    return part, base, enc


def _split_from(part: Part, part_bytes: int) -> list[Part]:
    """``part`` (a plain file from its resume offset on) cut into line-aligned byte ranges
    of about ``part_bytes``; any other file, or one that cannot be read here (its worker
    reports that), stays whole."""
    fmt, compression = input_format(part.path)
    if fmt == "parquet" or compression or part_bytes <= 0:
        return [part]
    try:
        cuts = line_cuts(part.path, part.start, os.path.getsize(part.path), part_bytes)
    except OSError:
        return [part]
    return [Part(part.input, part.path, a, b) for a, b in zip(cuts, cuts[1:])]


def _encode_part(part: Part, tokenizer: "Tokenizer", text_field: str, opts: "_EncodeOptions") -> _Encoded:
    """Runs on a worker: a whole part, read and encoded on one thread (the cluster's workers
    are the parallelism), as one stretch."""
    batches = ((part, 0, b) for b in read_part(part, text_field=text_field, batch_bytes=BATCH_BYTES))
    chunks = [enc for _, _, enc in _encoded_on_this_thread(batches, tokenizer, opts)]
    sizes = np.concatenate([np.diff(c.bounds) for c in chunks])
    return _Encoded(
        ids=np.concatenate([c.ids for c in chunks]),
        bounds=np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes, dtype=np.int64)]),
        records=np.concatenate([c.records for c in chunks]),
        offsets=np.concatenate([c.offsets for c in chunks]),
        problems=[p for c in chunks for p in c.problems],
        n_records=sum(c.n_records for c in chunks),
    )


# -- run description, resume -------------------------------------------------------------

def _check_inputs(inputs: Sequence[PathLike] | PathLike) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if isinstance(inputs, (bytes, bytearray)) or not isinstance(inputs, Iterable):
        raise InvalidArgumentError(f"inputs must be a path or a list of paths, not {type(inputs).__name__}")
    paths = []
    for p in inputs:
        if not isinstance(p, (str, os.PathLike)):
            raise InvalidArgumentError(f"inputs must hold paths, not {type(p).__name__}")
        path = os.fspath(p)
        try:
            input_format(path)
        except ValueError as e:
            raise InvalidArgumentError(str(e)) from None
        paths.append(path)
    if not paths:
        raise InvalidArgumentError("inputs is empty")
    return paths


def _token_dtype(dtype: str, vocab_size: int) -> np.dtype:
    if dtype == "auto":
        return np.dtype("uint16" if vocab_size <= 1 << 16 else "uint32")
    if dtype not in ("uint16", "uint32"):
        raise InvalidArgumentError(f'dtype must be "auto", "uint16" or "uint32", not {dtype!r}')
    if dtype == "uint16" and vocab_size > 1 << 16:
        raise InvalidArgumentError(f"dtype uint16 cannot hold the ids of a {vocab_size}-token vocabulary; use uint32")
    return np.dtype(dtype)


def _run_description(paths, tokenizer, text_field, add_bos, add_eos, dtype, shard_tokens, on_error) -> dict[str, Any]:
    """What must match for a run to resume another: tokenizer, options, the inputs."""
    inputs = []
    for p in paths:
        try:
            st = os.stat(p)
            inputs.append({"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        except OSError:
            inputs.append({"path": p, "size": None, "mtime_ns": None})
    return {
        "format": FORMAT,
        "version": VERSION,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_sha256": tokenizer._sha256(),
        "options": {"text_field": text_field, "add_bos": bool(add_bos), "add_eos": bool(add_eos),
                    "shard_tokens": shard_tokens, "on_error": on_error},
        "inputs": inputs,
    }


def _start_or_resume(out: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    manifest = read_manifest(out) if out.is_dir() else None
    if manifest is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(17, "exists and is not a tokenize_files output (hanpack never overwrites)", str(out))
        out.mkdir(parents=True, exist_ok=True)
        return _fresh_manifest(wanted)
    if not manifest["shards"] and not manifest["complete"]:
        return _start_or_resume_fresh(out, wanted)  # nothing was kept: any run may start over
    for key, value in wanted.items():
        if manifest.get(key) != value:
            raise InvalidArgumentError(
                f"{out}: written by a run with a different {key} ({manifest.get(key)!r}, now {value!r}); "
                "resume with the same inputs, tokenizer and options, or use a new out_dir"
            )
    # A shard written after the last manifest update, and temporary files, go: the run
    # goes on from the last listed shard.
    listed = {f for s in manifest["shards"] for f in (s["tokens_file"], s["offsets_file"])}
    for f in out.iterdir():
        temporary = f.name.startswith((".shard-", f".{MANIFEST}.")) and f.name.endswith(".tmp")
        stale = temporary or (f.name.startswith("shard-") and f.name not in listed)
        if stale:
            f.unlink()
    for s in manifest["shards"]:
        if (out / s["tokens_file"]).stat().st_size != s["tokens"] * np.dtype(manifest["dtype"]).itemsize:
            raise InvalidArgumentError(f"{out / s['tokens_file']}: size does not match the manifest (a damaged output)")
    return manifest


def _fresh_manifest(wanted: dict[str, Any]) -> dict[str, Any]:
    return {**wanted, "complete": False, "tokens": 0, "documents": 0, "shards": [], "skipped": {}, "skipped_examples": []}


def _start_or_resume_fresh(out: Path, wanted: dict[str, Any]) -> dict[str, Any]:
    """A new start in an output that holds no shard yet (its leftovers deleted)."""
    for f in out.iterdir():
        if f.name.startswith(("shard-", ".shard-", f".{MANIFEST}.")):
            f.unlink()
    return _fresh_manifest(wanted)


def _resume_position(manifest: dict[str, Any]) -> Position:
    if not manifest["shards"]:
        return Position(0, 0, 0)
    end = manifest["shards"][-1]["end"]
    return Position(end["input"], end["record"], end["offset"])


def _progress(enabled: bool, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc="tokenize", unit="tok", unit_scale=True, initial=initial)


