"""Atomic outputs: everything is written under a temporary sibling name and renamed into
place at the end, so a failure never leaves a partial file or folder behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]


def write_bytes(path: PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = os.fspath(path)
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


@contextlib.contextmanager
def new_directory(dst: PathLike) -> Iterator[Path]:
    """Yields a temporary folder next to ``dst`` that becomes ``dst`` when the block ends
    without an exception. ``dst`` must not exist: hanpack never overwrites an output."""
    dst = Path(dst)
    if os.path.lexists(dst):
        raise FileExistsError(17, "the destination already exists (hanpack never overwrites)", str(dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.hanpack-tmp-", dir=dst.parent))
    try:
        yield tmp
        if os.path.lexists(dst):
            raise FileExistsError(17, "the destination appeared while writing it", str(dst))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is for while it is incomplete
        os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
