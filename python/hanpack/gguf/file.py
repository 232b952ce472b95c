"""Reading and writing GGUF files. The header (metadata, tensor descriptions, offsets) is
encoded and parsed in Rust (``hanpack_core::io::gguf``); tensor data is streamed here,
one tensor at a time, so writing a model never holds more than one tensor in memory.

    >>> import numpy as np, os, tempfile, hanpack.gguf as hg
    >>> path = os.path.join(tempfile.mkdtemp(), "t.gguf")
    >>> w = np.ones((2, 32), np.float32)
    >>> with hg.GGUFWriter(path, [("general.architecture", "llama")],
    ...                    [hg.TensorSpec("x.weight", (2, 32), "Q8_0")]) as out:
    ...     out.write("x.weight", hg.quantize(w, "Q8_0"))
    >>> f = hg.GGUFFile(path)
    >>> f.metadata["general.architecture"], f.tensors["x.weight"].qtype
    ('llama', 'Q8_0')
    >>> bool(np.allclose(f.dequantize("x.weight"), w, atol=0.01))
    True
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from .. import _core
from ..exceptions import InvalidArgumentError, ModelFormatError
from .blocks import GGML_TYPES, dequantize, type_info

__all__ = ["ValueType", "Typed", "TensorSpec", "TensorInfo", "GGUFWriter", "GGUFFile"]

PathLike = Union[str, "os.PathLike[str]"]


class ValueType(enum.IntEnum):
    """GGUF's metadata value types (the numbers the file stores)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit type (for arrays: the element type), where the
    defaults (int → UINT32, or INT64 outside its range; float → FLOAT32; lists by their
    first element, ints in lists → INT32) are not what a key needs."""

    value: Any
    type: ValueType


def _infer(value: Any) -> ValueType:
    if isinstance(value, bool):
        return ValueType.BOOL
    if isinstance(value, (int, np.integer)):
        return ValueType.UINT32 if 0 <= value < 2**32 else ValueType.INT64
    if isinstance(value, (float, np.floating)):
        return ValueType.FLOAT32
    if isinstance(value, str):
        return ValueType.STRING
    raise TypeError(f"cannot store a {type(value).__name__} in GGUF metadata")


def _encode(key: str, value: Any) -> Tuple[str, int, Any]:
    explicit = value.type if isinstance(value, Typed) else None
    v = value.value if isinstance(value, Typed) else value
    if isinstance(v, (list, tuple, np.ndarray)):
        items = list(v.tolist() if isinstance(v, np.ndarray) else v)
        if not items:
            raise InvalidArgumentError(f"metadata {key!r}: an empty array has no element type")
        if explicit is not None:
            elem = explicit
        elif isinstance(items[0], (int, np.integer)) and not isinstance(items[0], bool):
            elem = ValueType.INT32
        else:
            elem = _infer(items[0])
        return key, int(ValueType.ARRAY), (int(elem), items)
    return key, int(explicit if explicit is not None else _infer(v)), v


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to write: ``shape`` in numpy order (rows last axis), stored as ``qtype``."""

    name: str
    shape: Tuple[int, ...]
    qtype: str

    @property
    def nbytes(self) -> int:
        info = type_info(self.qtype)
        if not self.shape or self.shape[-1] % info.block_size:
            raise InvalidArgumentError(f"tensor {self.name!r}: rows of {self.shape[-1:]} do not fit {info.name} blocks of {info.block_size}")
        rows = int(np.prod(self.shape[:-1], dtype=np.int64))
        return rows * (self.shape[-1] // info.block_size) * info.type_size


class GGUFWriter:
    """Writes a GGUF file: the header at once, then each tensor's data with :meth:`write`,
    in the order of ``tensors``. Used as a context manager: the file appears at ``path``
    (via a temporary file and a rename) only when every tensor was written and the block
    ended without an exception; ``path`` must not exist."""

    def __init__(self, path: PathLike, metadata: Sequence[Tuple[str, Any]], tensors: Sequence[TensorSpec], *, alignment: int = 32) -> None:
        self.path = os.fspath(path)
        self._specs = list(tensors)
        kv = [_encode(k, v) for k, v in metadata]
        if alignment != 32 and not any(k == "general.alignment" for k, _, _ in kv):
            kv.append(("general.alignment", int(ValueType.UINT32), alignment))
        infos = [(t.name, [int(d) for d in reversed(t.shape)], type_info(t.qtype).id, t.nbytes) for t in self._specs]
        self._header, self._offsets = _core.encode_gguf_header(kv, infos, alignment)
        self._alignment = alignment
        self._next = 0
        self._file: Optional[BinaryIO] = None
        self._tmp = os.path.join(os.path.dirname(os.path.abspath(self.path)), f".{os.path.basename(self.path)}.{os.getpid()}.tmp")

    def __enter__(self) -> "GGUFWriter":
        if os.path.lexists(self.path):
            raise FileExistsError(17, "the destination already exists (hanpack never overwrites)", self.path)
        self._file = open(self._tmp, "xb")
        self._file.write(self._header)
        return self

    def write(self, name: str, data: Union[bytes, npt.NDArray[Any]]) -> None:
        """The data of the next tensor (raw bytes of its type, e.g. from :func:`quantize`)."""
        if self._file is None:
            raise InvalidArgumentError("GGUFWriter.write outside its `with` block")
        if self._next >= len(self._specs) or self._specs[self._next].name != name:
            expected = self._specs[self._next].name if self._next < len(self._specs) else "no more tensors"
            raise InvalidArgumentError(f"GGUF writer: got tensor {name!r}, expected {expected!r}")
        spec = self._specs[self._next]
        buf = memoryview(np.ascontiguousarray(data).view(np.uint8).reshape(-1)) if isinstance(data, np.ndarray) else memoryview(data)
        if buf.nbytes != spec.nbytes:
            raise InvalidArgumentError(f"tensor {name!r}: {buf.nbytes} bytes given, {spec.qtype} {spec.shape} takes {spec.nbytes}")
        self._file.write(buf)
        self._file.write(b"\0" * (-spec.nbytes % self._alignment))
        self._next += 1

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            if exc_type is None and self._next != len(self._specs):
                raise InvalidArgumentError(f"GGUF writer: {len(self._specs) - self._next} tensors were never written (next: {self._specs[self._next].name!r})")
            f.flush()
            if exc_type is None:
                os.fsync(f.fileno())
            f.close()
            if exc_type is None:
                if os.path.lexists(self.path):
                    raise FileExistsError(17, "the destination appeared while writing it", self.path)
                os.replace(self._tmp, self.path)
        finally:
            if not f.closed:
                f.close()
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor in a GGUF file: ``shape`` in numpy order, data at ``offset`` bytes from
    the start of the file."""

    name: str
    shape: Tuple[int, ...]
    qtype: str
    offset: int
    nbytes: int


class GGUFFile:
    """A GGUF file opened for reading: ``metadata`` (key → value; arrays as lists),
    ``metadata_types`` (key → :class:`ValueType`, arrays as ``(ARRAY, element type)``),
    ``tensors`` (name → :class:`TensorInfo`, in file order). Tensor data is memory-mapped
    and read only when asked for; a truncated or lying file raises
    :class:`~hanpack.exceptions.ModelFormatError` naming it."""

    def __init__(self, path: PathLike) -> None:
        self.path = os.fspath(path)
        version, kv, tensors, data_offset = _core.read_gguf_header(self.path)
        self.version: int = version
        self.metadata: Dict[str, Any] = {}
        self.metadata_types: Dict[str, Any] = {}
        for key, t, v in kv:
            if t == ValueType.ARRAY:
                elem, items = v
                self.metadata[key] = items
                self.metadata_types[key] = (ValueType.ARRAY, ValueType(elem))
            else:
                self.metadata[key] = v
                self.metadata_types[key] = ValueType(t)
        size = os.path.getsize(self.path)
        self.tensors: Dict[str, TensorInfo] = {}
        by_id = {t.id: t for t in GGML_TYPES.values()}
        for name, dims, type_id, offset in tensors:
            info = by_id.get(type_id)
            if info is None:
                raise ModelFormatError(f"{self.path}: tensor {name!r} has ggml type {type_id}, which hanpack does not read")
            shape = tuple(int(d) for d in reversed(dims))
            if not shape or shape[-1] % info.block_size:
                raise ModelFormatError(f"{self.path}: tensor {name!r} of shape {shape} is not whole {info.name} blocks")
            nbytes = int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // info.block_size) * info.type_size
            start = data_offset + offset
            if start + nbytes > size:
                raise ModelFormatError(f"{self.path}: tensor {name!r} needs bytes {start}..{start + nbytes}, the file has {size}")
            self.tensors[name] = TensorInfo(name, shape, info.name, start, nbytes)

    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        """The stored bytes of ``name`` (read-only, memory-mapped), rows on the last axis."""
        t = self._info(name)
        rows = t.shape[:-1] or (1,)
        data = np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(t.nbytes,))
        return data.reshape(*rows, -1) if t.shape[:-1] else data.reshape(-1)

    def dequantize(self, name: str) -> npt.NDArray[np.float32]:
        """``name`` as float32, in its numpy shape."""
        t = self._info(name)
        return dequantize(self.raw(name), t.qtype).reshape(t.shape)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path} has no tensor {name!r}") from None
