"""Documents read from input files, in order, with their positions and problems.

Formats, by file name (a ``.gz`` or ``.zst`` suffix adds decompression):

* ``.txt`` — one document per line (lines end at ``\\n``; a ``\\r`` before it is dropped).
  Empty lines are not documents; they are counted as ``empty``.
* ``.jsonl`` / ``.ndjson`` — one JSON object per line; the document is its ``text_field``,
  which must be a str. Empty lines are counted as ``empty``.
* ``.parquet`` — one document per row of column ``text_field`` (needs ``pyarrow``).

A file is read as :class:`Part` s. A local run reads each input as one part from where a
previous run stopped; a cluster run splits uncompressed text files into byte ranges that
start at line starts, so workers read their own ranges. Records (lines, or parquet rows)
are numbered from 1 within the file; a part that does not know how many records precede
it (a byte range of a split file) numbers them from its own start and the caller adds the
count of the parts before it.

A record that cannot become a document is a :class:`Problem` with its kind and line,
never silently dropped: the caller stops or counts it, as its policy says.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

__all__ = ["Part", "Problem", "RawBatch", "PROBLEM_KINDS", "input_format", "read_part", "split_parts"]

# Every way a record can fail to become a document ("empty" is not an error: it is counted).
PROBLEM_KINDS = (
    "empty", "unreadable", "invalid_utf8", "invalid_json", "missing_field", "not_text", "invalid_unicode",
)
_FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".zst")


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
    """Documents in order; ``records[i]`` and ``offsets[i]`` are the part-relative record
    count and the file byte offset (-1 where the file cannot seek) after document ``i``."""

    texts: list[str] = field(default_factory=list)
    records: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    nbytes: int = 0
    records_read: int = 0  # on a part's last batch: how many records the part held


def split_parts(index: int, path: str, part_bytes: int) -> list[Part]:
    """Byte ranges of about ``part_bytes`` that start at line starts (uncompressed text
    files); any other file is one part."""
    fmt, compression = input_format(path)
    if fmt == "parquet" or compression or part_bytes <= 0:
        return [Part(index, path)]
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] + part_bytes < size:
            f.seek(cuts[-1] + part_bytes - 1)  # a line starting exactly at the target is kept whole
            f.readline()
            pos = f.tell()
            if pos >= size:
                break
            cuts.append(pos)
    return [Part(index, path, a, b) for a, b in zip(cuts, cuts[1:] + [None])]


def read_part(part: Part, *, text_field: str, batch_bytes: int) -> Iterator[RawBatch]:
    """Batches of about ``batch_bytes`` of text from ``part``. A file that cannot be opened,
    or that breaks off (a truncated ``.gz``), ends the part with an ``unreadable`` problem."""
    fmt, compression = input_format(part.path)
    if fmt == "parquet":
        yield from _read_parquet(part, text_field, batch_bytes)
        return
    batch = RawBatch()
    record = 0
    try:
        with _open_lines(part.path, compression, part.start) as f:
            seekable = compression is None
            offset = part.start if seekable else -1
            for raw in f:
                record += 1
                if seekable:
                    offset += len(raw)
                    if part.end is not None and offset > part.end:
                        record -= 1
                        break
                if record <= part.skip:
                    continue
                text = _document(raw, fmt, text_field, record, batch.problems)
                if text is None:
                    continue
                batch.texts.append(text)
                batch.records.append(record)
                batch.offsets.append(offset)
                batch.nbytes += len(raw)
                if batch.nbytes >= batch_bytes:
                    yield batch
                    batch = RawBatch()
    except (OSError, EOFError, _zstd_errors()) as e:
        # line 0: the whole file
        where, line = ("cannot be opened", 0) if record == 0 else (f"breaks off after line {record}", record + 1)
        batch.problems.append(Problem("unreadable", line, f"{where}: {e}"))
    batch.records_read = record
    yield batch


def _document(raw: bytes, fmt: str, text_field: str, record: int, problems: list[Problem]) -> str | None:
    """The document of one line, or None with the reason appended to ``problems``."""
    end = len(raw)
    if end and raw[end - 1] == 0x0A:
        end -= 1
        if end and raw[end - 1] == 0x0D:
            end -= 1
    if end == 0:
        problems.append(Problem("empty", record, "empty line"))
        return None
    try:
        line = raw[:end].decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(Problem("invalid_utf8", record, f"invalid UTF-8 at byte {e.start} of the line"))
        return None
    if fmt == "txt":
        return line
    try:
        obj = json.loads(line)
    except ValueError as e:
        problems.append(Problem("invalid_json", record, f"not JSON: {e}"))
        return None
    if not isinstance(obj, dict) or text_field not in obj:
        what = "an object" if isinstance(obj, dict) else f"a JSON {type(obj).__name__}, not an object"
        problems.append(Problem("missing_field", record, f"{what} without the field {text_field!r}"))
        return None
    text = obj[text_field]
    if not isinstance(text, str):
        problems.append(Problem("not_text", record, f"field {text_field!r} is {type(text).__name__}, not a string"))
        return None
    if "\\u" in line and not _encodable(text):
        problems.append(Problem("invalid_unicode", record, f"field {text_field!r} holds a lone surrogate escape"))
        return None
    return text


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    import pyarrow.parquet as pq

    batch = RawBatch()
    record = 0
    try:
        pf = pq.ParquetFile(part.path)
        if text_field not in pf.schema_arrow.names:
            batch.problems.append(Problem("missing_field", 1, f"no column {text_field!r} (columns: {pf.schema_arrow.names})"))
            yield batch
            return
        for chunk in pf.iter_batches(columns=[text_field], batch_size=4096):
            column = chunk.column(0)
            values = column.to_pylist()
            for value in values:
                record += 1
                if record <= part.skip:
                    continue
                if value is None:
                    batch.problems.append(Problem("missing_field", record, f"row {record} has no {text_field!r} (null)"))
                    continue
                if not isinstance(value, str):
                    batch.problems.append(Problem("not_text", record, f"column {text_field!r} holds {type(value).__name__}, not strings"))
                    continue
                if not value:
                    batch.problems.append(Problem("empty", record, "empty string"))
                    continue
                batch.texts.append(value)
                batch.records.append(record)
                batch.offsets.append(-1)
                batch.nbytes += len(value)
            if batch.nbytes >= batch_bytes:
                yield batch
                batch = RawBatch()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        where, row = ("cannot be read", 0) if record == 0 else (f"breaks off after row {record}", record + 1)
        batch.problems.append(Problem("unreadable", row, f"{where}: {e}"))
    batch.records_read = record
    yield batch
