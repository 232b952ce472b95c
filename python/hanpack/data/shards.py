"""Token shards: what :func:`hanpack.data.tokenize_files` writes, and how it resumes.

The format (version 1), in ``out_dir``::

    shard-00000.bin           the tokens, little-endian uint16 or uint32, back to back
    shard-00000.offsets.npy   int64 document boundaries: documents + 1 values from 0;
                              document i is tokens[offsets[i]:offsets[i + 1]]
    ...
    manifest.json             dtype, tokenizer, options, inputs, and per shard: tokens,
                              documents, SHA-256 of both files, and the input position
                              after its last document; skipped records by kind

A ``.bin`` reads as nanoGPT's ``np.memmap(path, dtype=np.uint16, mode="r")`` does, and
the offsets give Megatron-style document boundaries (:func:`read_shards` returns both).
Documents are never split across shards: a shard ends after the first document that
brings it to ``shard_tokens`` or more, so the shards depend only on the inputs and
options, never on batching, thread counts or where a run was interrupted.

Every shard is written under a temporary name and renamed, then the manifest is replaced
(also atomically). A run that is killed leaves at worst a shard the manifest does not
list; the next run deletes it and goes on from the last listed shard's position.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from .._atomic import write_bytes
from ..exceptions import InvalidArgumentError

__all__ = ["FORMAT", "ShardWriter", "Position", "read_manifest", "read_shards", "shard_name", "MAX_EXAMPLES"]

FORMAT = "hanpack-token-shards"
VERSION = 1
MANIFEST = "manifest.json"
MAX_EXAMPLES = 1000  # skipped records listed with file and line; all of them are counted
OFFSETS_HEADER_BYTES = 128  # the .npy header of a 1-D int64 array (see _npy_header)
SYNC_BYTES = 4 << 20  # flushed on a helper thread (see _DataSync); what is left waits for the close


class _DataSync:
    """``fdatasync`` of the open shard on a helper thread, one at a time. The writer used to
    wait for each flush itself, and the encoders ran out of queued work meanwhile (on two
    cores 11-15% of a run had no batch encoding). Errors surface at the next
    :meth:`start` or :meth:`wait`; the file must stay open until :meth:`wait` returns."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def start(self, fd: int) -> bool:
        """Starts a flush of ``fd``; False (nothing started) while the last one runs."""
        if self._thread is not None and self._thread.is_alive():
            return False
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(fd,), name="hanpack-shard-sync", daemon=True)
        self._thread.start()
        return True

    def _run(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as e:
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


@dataclass(frozen=True, order=True)
class Position:
    """Where a run stands: ``record`` records of input ``input`` consumed; ``offset`` is the
    byte offset after them (-1 for a file that cannot seek)."""

    input: int
    record: int
    offset: int = -1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``out_dir``, or None when there is none."""
    path = Path(out_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise InvalidArgumentError(f"{path}: not a hanpack manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidArgumentError(f"{path}: not a hanpack token-shard manifest")
    if manifest.get("version") != VERSION:
        raise InvalidArgumentError(f"{path}: manifest version {manifest.get('version')}, this hanpack reads {VERSION}")
    return manifest


def read_shards(out_dir: str | os.PathLike[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(tokens, offsets)`` of each shard listed in the manifest, tokens memory-mapped.

    >>> for tokens, offsets in read_shards("shards"):   # doctest: +SKIP
    ...     first_document = tokens[offsets[0]:offsets[1]]
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(2, "no manifest.json: not a finished tokenize_files output", str(out_dir))
    dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    for shard in manifest["shards"]:
        tokens = np.memmap(out_dir / shard["tokens_file"], dtype=dtype, mode="r") if shard["tokens"] else np.zeros(0, dtype)
        yield tokens, np.load(out_dir / shard["offsets_file"], allow_pickle=False)


class ShardWriter:
    """Appends documents in order and closes a shard whenever it reaches ``shard_tokens``;
    records skipped records with their positions so that the manifest lists exactly those
    before the last shard's end (a resumed run meets the later ones again)."""

    def __init__(self, out_dir: Path, manifest: dict[str, Any], *, shard_tokens: int, dtype: np.dtype, inputs: list[str]):
        self.out_dir = out_dir
        self.manifest = manifest
        self.shard_tokens = shard_tokens
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.inputs = inputs
        self._file: BinaryIO | None = None
        self._offsets_file: BinaryIO | None = None  # the open shard's offsets, header last
        self._documents = 0  # in the open shard
        self._hash = hashlib.sha256()
        self._tokens = 0
        self._unsynced = 0  # bytes of the open shard written since its last flush to disk
        self._sync = _DataSync()
        self._bounds: list[np.ndarray] = []
        self._pending: list[tuple[Position, str, str]] = []  # skipped records not yet committed
        self.written_tokens = 0  # tokens this run added (for the progress bar)

    # -- documents -------------------------------------------------------------------
    def add(self, input: int, ids: np.ndarray, bounds: np.ndarray, records: np.ndarray, offsets: np.ndarray) -> None:
        """Documents ``bounds[i]:bounds[i + 1]`` of ``ids`` (``bounds[0] == 0``), each ending
        at record ``records[i]`` / byte ``offsets[i]`` of input ``input``."""
        n = len(bounds) - 1
        i = 0
        while i < n:
            target = bounds[i] + (self.shard_tokens - self._tokens)
            k = int(np.searchsorted(bounds, target, side="left"))  # first boundary reaching it
            j = min(k, n)
            self._append(ids[bounds[i] : bounds[j]], bounds[i : j + 1] - bounds[i])
            if k <= n:
                self._close(Position(input, int(records[j - 1]), int(offsets[j - 1])))
            i = j

    def skip(self, at: Position, kind: str, message: str) -> None:
        self._pending.append((at, kind, message))

    def finish(self) -> None:
        """Closes the last shard (if it holds any document) and marks the run complete."""
        if self._bounds:
            self._close(None, save=False)  # saved once, below
        self._commit_skipped(None)
        self.manifest["complete"] = True
        self._save_manifest()

    def abort(self) -> None:
        """Drops the open shard's temporary files (the manifest stays at the last shard)."""
        if self._file is not None:
            try:
                self._sync.wait()
            except OSError:
                pass  # the shard is dropped anyway
        for f in (self._file, self._offsets_file):
            if f is not None:
                f.close()
                Path(f.name).unlink(missing_ok=True)
        self._file = self._offsets_file = None

    def _append(self, ids: np.ndarray, bounds: np.ndarray) -> None:
        if self._file is None:
            name = shard_name(len(self.manifest["shards"]))
            self._file = open(self.out_dir / f".{name}.bin.tmp", "wb")
            self._offsets_file = open(self.out_dir / f".{name}.offsets.npy.tmp", "wb")
            self._hash = hashlib.sha256()
            self._tokens = 0
            self._documents = 0
            self._unsynced = 0
            self._bounds = [np.zeros(1, np.int64)]
            # The .npy header is written over these bytes at the close, when the count is known.
            self._offsets_file.write(bytes(OFFSETS_HEADER_BYTES) + self._bounds[0].data)
        data = np.ascontiguousarray(ids.astype(self.dtype, copy=False)).data  # its buffer: no bytes copy
        self._file.write(data)
        self._hash.update(data)
        self._unsynced += data.nbytes
        if self._unsynced >= SYNC_BYTES:
            # Flushed to disk as it grows, while the next batches encode, so that closing
            # the shard does not wait for all of it (the last close is the run's tail).
            self._file.flush()
            if self._sync.start(self._file.fileno()):
                self._unsynced = 0
        ends = (bounds[1:] + self._tokens).astype("<i8", copy=False)
        # Written as the shard grows: at the last close, the run's tail, only the header is left.
        assert self._offsets_file is not None
        self._offsets_file.write(ends.data)
        self._bounds.append(ends)
        self._documents += len(ends)
        self._tokens += len(ids)
        self.written_tokens += len(ids)

    def _close(self, end: Position | None, *, save: bool = True) -> None:
        assert self._file is not None and self._offsets_file is not None
        name = shard_name(len(self.manifest["shards"]))
        # The tokens' last flush runs while the offsets file is finished: the close is the
        # tail of a run, which no encoding overlaps.
        self._file.flush()
        self._sync.wait()
        self._sync.start(self._file.fileno())
        header = _npy_header(self._documents + 1)
        # Hashed on a helper thread while this one finishes the file (hashlib releases the GIL).
        digest: list[str] = []
        pieces = [header] + [b.data for b in self._bounds]
        hasher = threading.Thread(target=lambda: digest.append(_sha256(*pieces)), name="hanpack-offsets-hash", daemon=True)
        hasher.start()
        try:
            f = self._offsets_file
            f.seek(0)
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(f.name, self.out_dir / f"{name}.offsets.npy")
            self._offsets_file = None
        finally:
            hasher.join()
        self._sync.wait()
        tmp = self._file.name
        self._file.close()
        self._file = None
        os.replace(tmp, self.out_dir / f"{name}.bin")
        self.manifest["shards"].append({
            "tokens_file": f"{name}.bin",
            "offsets_file": f"{name}.offsets.npy",
            "tokens": self._tokens,
            "documents": self._documents,
            "sha256": self._hash.hexdigest(),
            "offsets_sha256": digest[0],
            "end": None if end is None else {"input": end.input, "record": end.record, "offset": end.offset},
        })
        self.manifest["tokens"] += self._tokens
        self.manifest["documents"] += self._documents
        self._bounds = []
        self._tokens = 0
        self._commit_skipped(end)
        if save:
            self._save_manifest()

    def _commit_skipped(self, end: Position | None) -> None:
        keep: list[tuple[Position, str, str]] = []
        done: list[tuple[Position, str, str]] = []
        for item in self._pending:
            (done if end is None or (item[0].input, item[0].record) < (end.input, end.record) else keep).append(item)
        self._pending = keep
        skipped = self.manifest["skipped"]
        for at, kind, message in done:
            skipped[kind] = skipped.get(kind, 0) + 1
            if kind != "empty" and len(self.manifest["skipped_examples"]) < MAX_EXAMPLES:
                where = f"{self.inputs[at.input]}:{at.record}" if at.record else self.inputs[at.input]
                self.manifest["skipped_examples"].append(f"{where}: {kind}: {message}")

    def _save_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
        write_bytes(self.out_dir / MANIFEST, data)


def _npy_header(n: int) -> bytes:
    """The header ``np.save`` writes before ``n`` little-endian int64 values (format 1.0:
    :data:`OFFSETS_HEADER_BYTES` long for every ``n`` below 2**63, padding included)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": (n,)})
    header = buf.getvalue()
    if len(header) != OFFSETS_HEADER_BYTES:
        raise RuntimeError(f"an .npy header of {len(header)} bytes for {n} offsets, not {OFFSETS_HEADER_BYTES}")
    return header


def _sha256(*parts: "bytes | memoryview") -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()
