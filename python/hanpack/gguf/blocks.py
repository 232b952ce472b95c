"""llama.cpp's block formats: ``quantize`` and ``dequantize`` with the shapes and
conventions of the ``gguf`` package's ``gguf.quants`` (last axis = one row of weights;
quantized rows are bytes), computed in Rust with the GIL released.

Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
IQ4_NL, named by string (``"Q4_K"``), by ggml's number, or by ``gguf``'s
``GGMLQuantizationType``. Without ``imatrix`` the bytes are those of ggml's reference
quantizers (``quantize_row_<type>_ref``, what ``llama-quantize`` writes without an
importance matrix); with one (a non-negative weight per column, as ``llama-imatrix``
computes) those of llama.cpp's importance-weighted quantizers. Block structs, formulas
and bits per weight are documented in the Rust module ``hanpack_core::quant::ggml``.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Union

import numpy as np
import numpy.typing as npt

from .. import _core
from ..exceptions import InvalidArgumentError

__all__ = ["GGML_TYPES", "GgmlTypeInfo", "quantize", "dequantize", "type_info"]


class GgmlTypeInfo(NamedTuple):
    """One ggml tensor type: ``id`` is ggml's number (what GGUF stores); each block of
    ``block_size`` weights takes ``type_size`` bytes."""

    name: str
    id: int
    block_size: int
    type_size: int

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size


GGML_TYPES: Dict[str, GgmlTypeInfo] = {name: GgmlTypeInfo(name, i, bs, ts) for name, i, bs, ts in _core.ggml_types()}
_BY_ID = {t.id: t for t in GGML_TYPES.values()}

QType = Union[str, int]


def type_info(qtype: QType) -> GgmlTypeInfo:
    """The type named ``qtype`` (``"Q4_K"``, ``12`` or ``gguf.GGMLQuantizationType.Q4_K``).

    >>> import hanpack.gguf
    >>> hanpack.gguf.type_info("q4_k").bits_per_weight
    4.5
    """
    if isinstance(qtype, (int, np.integer)) and not isinstance(qtype, bool):
        info = _BY_ID.get(int(qtype))
    elif isinstance(qtype, str):
        info = GGML_TYPES.get(qtype.upper())
    else:
        raise TypeError(f"qtype must be a ggml type name or number, not {type(qtype).__name__}")
    if info is None:
        raise InvalidArgumentError(f"unsupported ggml type {qtype!r}; supported: {', '.join(GGML_TYPES)}")
    return info


def quantize(
    data: npt.ArrayLike,
    qtype: QType,
    *,
    imatrix: Optional[npt.ArrayLike] = None,
    name: str = "tensor",
    num_threads: Optional[int] = None,
) -> npt.NDArray[np.uint8]:
    """Quantizes ``data`` (any float array; its last axis is a row, a multiple of the
    type's block size) to ``qtype``: a uint8 array whose last axis is the row's bytes.
    ``imatrix``: one importance per column (llama.cpp's importance-weighted quantizers).
    NaN or infinity raises :class:`~hanpack.exceptions.NonFiniteWeightError` naming
    ``name`` and the position.

    >>> import numpy as np, hanpack.gguf
    >>> hanpack.gguf.quantize(np.ones((2, 64), np.float32), "Q8_0").shape
    (2, 68)
    """
    info = type_info(qtype)
    arr = np.asarray(data)
    if arr.dtype.kind != "f":
        raise TypeError(f"data must be a float array, not {arr.dtype}")
    if arr.ndim == 0:
        raise InvalidArgumentError("data must have at least one dimension")
    n = arr.shape[-1]
    if n == 0 or n % info.block_size:
        raise InvalidArgumentError(f"{name!r}: rows of {n} weights are not a whole number of {info.name} blocks ({info.block_size} weights)")
    rows = np.ascontiguousarray(arr.reshape(-1, n), dtype=np.float32)
    qw = None
    if imatrix is not None:
        qw = np.ascontiguousarray(imatrix, dtype=np.float32)
        if qw.shape != (n,):
            raise InvalidArgumentError(f"imatrix for {name!r} must have shape ({n},), got {qw.shape}")
    out = _core.ggml_quantize(rows, info.name, qw, name, num_threads)
    return out.reshape(*arr.shape[:-1], n // info.block_size * info.type_size)


def dequantize(data: npt.ArrayLike, qtype: QType, *, num_threads: Optional[int] = None) -> npt.NDArray[np.float32]:
    """Dequantizes ``data`` (bytes of ``qtype``, last axis a whole row of blocks; any
    dtype is viewed as bytes, as ``gguf.quants.dequantize`` does) to float32.

    >>> import numpy as np, hanpack.gguf
    >>> w = np.arange(64, dtype=np.float32).reshape(1, 64)
    >>> bool((hanpack.gguf.dequantize(hanpack.gguf.quantize(w, "F16"), "F16") == w).all())
    True
    """
    info = type_info(qtype)
    arr: Any = np.ascontiguousarray(data)
    if arr.ndim == 0:
        raise InvalidArgumentError("data must have at least one dimension")
    arr = arr.view(np.uint8)
    nbytes = arr.shape[-1]
    if nbytes == 0 or nbytes % info.type_size:
        raise InvalidArgumentError(f"rows of {nbytes} bytes are not a whole number of {info.name} blocks ({info.type_size} bytes)")
    n = nbytes // info.type_size * info.block_size
    out = _core.ggml_dequantize(arr.reshape(-1), info.name, n, num_threads)
    return out.reshape(*arr.shape[:-1], n)
