"""Documents read from input files, in order, with their positions and problems.

Formats, by file name (a ``.gz`` or ``.zst`` suffix adds decompression):

* ``.txt`` — one document per line (lines end at ``\\n``; a ``\\r`` before it is dropped).
  Empty lines are not documents; they are counted as ``empty``.
* ``.jsonl`` / ``.ndjson`` — one JSON object per line (strict JSON, RFC 8259: no NaN);
  the document is its ``text_field``, which must be a string. Empty lines are counted as
  ``empty``.
* ``.parquet`` — one document per row of column ``text_field`` (needs ``pyarrow``).

A file is read as :class:`Part` s. A local run reads each input as one part from where a
previous run stopped; a cluster run splits uncompressed text files into byte ranges that
start at line starts, so workers read their own ranges. A part comes as batches: byte
spans of a plain file (the tokenizer reads them and splits their lines into records:
``hanpack_core::io::records``), whole lines of a decompressed file, or parquet texts.
Records (lines, or parquet rows) are numbered from 1 within the file; batches number
them from their own start and the caller adds the count of the records before them.

A record that cannot become a document is a :class:`Problem` with its kind and line,
never silently dropped: the caller stops or counts it, as its policy says.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

__all__ = ["Part", "Problem", "RawBatch", "PROBLEM_KINDS", "input_format", "line_cuts", "read_part"]

# Every way a record can fail to become a document ("empty" is not an error: it is counted).
PROBLEM_KINDS = (
    "empty", "unreadable", "invalid_utf8", "invalid_json", "missing_field", "not_text", "invalid_unicode",
)
_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".zst")
READ_BYTES = 1 << 16
AFTER_LAST_LINE = -1  # a Problem's record: right after the lines read so far


def input_format(path: str) -> tuple[str, str | None]:
    """``(format, compression)`` from a file name, e.g. ``("jsonl", "zst")``."""
    name = os.path.basename(path).lower()
    compression = None
    for suffix in _COMPRESSIONS:
        if name.endswith(suffix):
            compression, name = suffix[1:], name[: -len(suffix)]
            break
    ext = os.path.splitext(name)[1]
    fmt = _FORMATS.get(ext)
    if fmt is None or (fmt == "parquet" and compression):
        known = ", ".join(sorted(_FORMATS)) + " (text formats also with .gz or .zst)"
        raise ValueError(f"{path}: unknown input format {ext or '(no extension)'!r}; known: {known}")
    return fmt, compression


@dataclass(frozen=True)
class Part:
    """Records of one input to read: from byte ``start`` (uncompressed text) after skipping
    ``skip`` records (compressed text and parquet cannot seek), up to byte ``end`` (None:
    the end of the file)."""

    input: int  # index of the file among the run's inputs
    path: str
    start: int = 0
    end: int | None = None
    skip: int = 0


@dataclass(frozen=True)
class Problem:
    kind: str  # one of PROBLEM_KINDS
    record: int  # line (or row) number within the part, from 1; 0 for the whole file
    message: str


@dataclass
class RawBatch:
    """Either ``data``, whole lines that start at byte ``start_offset`` of the file (-1
    where it cannot seek) after ``skipped_lines`` lines passed over, or ``span``, a byte
    range of a plain file for the tokenizer to read, or ``texts``: documents in order,
    where ``records[i]`` and ``offsets[i]`` are the record count from the batch's start
    and the byte offset after document ``i``, ``n_records`` records in all. Problems are
    numbered from the batch's start too (0: the whole file; AFTER_LAST_LINE)."""

    data: bytes | None = None
    path: str = ""
    span: tuple[int, int] | None = None  # or: bytes [a, b) of the plain file `path`, read by the tokenizer
    json_field: str | None = None  # lines are JSON objects with the text in this field
    skipped_lines: int = 0
    start_offset: int = -1
    n_records: int = 0
    texts: list[str] = field(default_factory=list)
    records: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def line_cuts(path: str, start: int, end: int, size: int) -> list[int]:
    """``start``, line starts about ``size`` bytes apart, and ``end``."""
    cuts = [start]
    with open(path, "rb") as f:
        while cuts[-1] + size < end:
            f.seek(cuts[-1] + size - 1)  # a line starting exactly at the target is kept whole
            f.readline()
            pos = f.tell()
            if pos >= end:
                break
            cuts.append(pos)
    return cuts + [end]


def read_part(part: Part, *, text_field: str, batch_bytes: int) -> Iterator[RawBatch]:
    """Batches of about ``batch_bytes`` from ``part``: whole lines of a text or JSON-lines
    file as bytes (the tokenizer splits them into records and counts them, in parallel),
    or the texts of a parquet file. A file that cannot be opened, or that breaks off (a
    truncated ``.gz``), ends the part with an ``unreadable`` problem."""
    fmt, compression = input_format(part.path)
    if fmt == "parquet":
        yield from _read_parquet(part, text_field, batch_bytes)
        return
    json_field = text_field if fmt == "jsonl" else None
    if compression is None:  # the tokenizer reads plain files itself (no GIL, no copies)
        try:
            end = os.path.getsize(part.path) if part.end is None else part.end
            cuts = line_cuts(part.path, part.start, end, batch_bytes)
        except OSError as e:
            yield RawBatch(problems=[Problem("unreadable", 0, f"cannot be opened: {e}")])
            return
        for a, b in zip(cuts, cuts[1:]):  # independent batches: several can encode at once
            yield RawBatch(path=part.path, span=(a, b), json_field=json_field)
        return
    skipped = 0  # lines passed over to resume in a file that cannot seek
    opened = False
    problems: list[Problem] = []
    try:
        with _open_lines(part.path, compression, part.start) as f:
            opened = True
            offset = part.start if compression is None else -1
            # A compressed file is read in small blocks, so that one that breaks off loses
            # only the block it breaks in; a plain file in batch-sized ones (fewer copies).
            block = READ_BYTES if compression else batch_bytes
            for chunk in _line_chunks(f, batch_bytes, None if part.end is None else part.end - part.start, block):
                if skipped < part.skip:
                    lines = chunk.count(b"\n") + (not chunk.endswith(b"\n"))
                    if skipped + lines <= part.skip:
                        skipped += lines
                        continue
                    chunk = chunk[_after_lines(chunk, part.skip - skipped):]
                    yield RawBatch(data=chunk, json_field=json_field, skipped_lines=part.skip, start_offset=offset)
                    skipped = part.skip
                    continue
                yield RawBatch(data=chunk, json_field=json_field, start_offset=offset)
                if offset >= 0:
                    offset += len(chunk)
    except (OSError, EOFError, _zstd_errors()) as e:
        # AFTER_LAST_LINE: the reader of the batches knows how many lines came before
        problems.append(Problem("unreadable", AFTER_LAST_LINE, str(e)) if opened
                        else Problem("unreadable", 0, f"cannot be opened: {e}"))  # 0: the whole file
    yield RawBatch(problems=problems)


def _line_chunks(f: BinaryIO, size: int, limit: int | None, block_size: int) -> Iterator[bytes]:
    """Chunks of whole lines of at least ``size`` bytes (the last one shorter), up to
    ``limit`` bytes, read ``block_size`` bytes at a time. When the file breaks off (a
    truncated ``.gz``), the whole lines before the failing block come out first."""
    buf = bytearray()
    cut = 0  # end of the last whole line in buf
    while True:
        n = block_size if limit is None else min(block_size, limit)
        try:
            block = f.read(n) if n > 0 else b""
        except (OSError, EOFError, _zstd_errors()):
            if cut:
                yield bytes(memoryview(buf)[:cut])
            raise
        if limit is not None:
            limit -= len(block)
        if not block:
            if buf:
                yield bytes(buf)
            return
        nl = block.rfind(b"\n")  # only new data is searched: linear however long the lines
        if nl >= 0:
            cut = len(buf) + nl + 1
        if not buf and cut == len(block):  # the common case: one block of whole lines
            cut = 0
            yield block
            continue
        buf += block
        if cut >= size:
            yield bytes(memoryview(buf)[:cut])
            del buf[:cut]
            cut = 0


def _after_lines(chunk: bytes, n: int) -> int:
    """Byte position after the first ``n`` lines of ``chunk``."""
    pos = 0
    for _ in range(n):
        pos = chunk.index(b"\n", pos) + 1
    return pos


class _OpenLines:
    """A context manager over a binary line iterator (plain, gzip or zstd)."""

    def __init__(self, path: str, compression: str | None, start: int):
        self._raw = open(path, "rb")
        self.stream: BinaryIO
        if compression == "gz":
            self.stream = gzip.GzipFile(fileobj=self._raw)  # type: ignore[assignment]
        elif compression == "zst":
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(self._raw)
            self.stream = io.BufferedReader(reader)  # type: ignore[arg-type]
        else:
            self._raw.seek(start)
            self.stream = self._raw

    def __enter__(self) -> BinaryIO:
        return self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
        self._raw.close()


def _open_lines(path: str, compression: str | None, start: int) -> _OpenLines:
    return _OpenLines(path, compression, start)


def _zstd_errors() -> type[BaseException]:
    try:
        import zstandard
    except ImportError:
        return OSError
    return zstandard.ZstdError


def _read_parquet(part: Part, text_field: str, batch_bytes: int) -> Iterator[RawBatch]:
    """Rows of a parquet file as texts (records are rows, numbered from 1 within the file)."""
    import pyarrow.parquet as pq

    batch = RawBatch()
    record = counted = nbytes = 0
    try:
        pf = pq.ParquetFile(part.path)
        if text_field not in pf.schema_arrow.names:
            batch.problems.append(Problem("missing_field", 0, f"no column {text_field!r} (columns: {pf.schema_arrow.names})"))
            yield batch
            return
        for chunk in pf.iter_batches(columns=[text_field], batch_size=4096):
            for value in chunk.column(0).to_pylist():
                record += 1
                if record <= part.skip:
                    continue
                if value is None:
                    batch.problems.append(Problem("missing_field", record - counted, f"no {text_field!r} (null)"))
                elif not isinstance(value, str):
                    batch.problems.append(Problem("not_text", record - counted, f"column {text_field!r} holds {type(value).__name__}, not strings"))
                elif not value:
                    batch.problems.append(Problem("empty", record - counted, "empty string"))
                else:
                    batch.texts.append(value)
                    batch.records.append(record - counted)
                    batch.offsets.append(-1)
                    nbytes += len(value)
            if nbytes >= batch_bytes:
                batch.n_records, counted, nbytes = record - counted, record, 0
                yield batch
                batch = RawBatch()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        batch.problems.append(Problem("unreadable", AFTER_LAST_LINE, str(e)) if record
                              else Problem("unreadable", 0, f"cannot be read: {e}"))
    batch.n_records = record - counted
    yield batch
