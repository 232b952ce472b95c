"""Group-wise weight quantization (2, 3, 4, 8 bits) of ``[out_features, in_features]``
weights, with numpy arrays in and out.

    >>> import numpy as np, hanpack.quant
    >>> w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    >>> q = hanpack.quant.quantize(w, bits=4, group_size=128, method="rtn")
    >>> q.packed.shape, q.scales.shape, q.bits_per_weight
    ((64, 128), (64, 2), 4.25)
    >>> float(np.abs(q.dequantize() - w).max()) < 0.5
    True

Methods: ``"rtn"`` (min–max), ``"mse"`` (clipping search and least-squares refit of
scale and zero, optionally weighted by a per-input-channel ``importance``), ``"hqq"`` (half-quadratic optimisation of the zero
point, no calibration data). The packed layouts, the code formula
``w ≈ (q - zero) * scale`` and the size rules are specified once, in the Rust module
``hanpack_core::quant::formats``; this module only checks arguments and wraps arrays.

Groups run along the input dimension; ``group_size`` is a multiple of 32 or ``None``
(per-channel: one group per row). When ``in_features`` is not a multiple of it, the
last group of each row is shorter and gets its own parameters.

Inputs are float32, float16 or bfloat16 (an ``ml_dtypes.bfloat16`` array, or a uint16
array of bf16 bits with ``dtype="bfloat16"``). C-contiguous arrays are read in place;
other arrays are copied once. The work runs in Rust with the GIL released.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Tuple, Union, final

import numpy as np
import numpy.typing as npt

from . import _core
from .exceptions import InvalidArgumentError

__all__ = ["QuantizedTensor", "quantize", "METHODS", "BITS"]

METHODS = ("rtn", "mse", "hqq")
BITS = (2, 3, 4, 8)
_BLOCK = 32  # values per packed block; every packed row is a whole number of blocks

Method = Literal["rtn", "mse", "hqq"]


def _row_bytes(bits: int, in_features: int) -> int:
    return -(-in_features // _BLOCK) * 4 * bits


@final
class QuantizedTensor:
    """A quantized weight: ``packed`` codes (uint8 ``[out, row_bytes]``) and fp16
    ``scales`` and ``zeros`` (``[out, n_groups]``). Immutable (its arrays are read-only)
    and picklable.

    >>> import numpy as np, pickle, hanpack.quant
    >>> q = hanpack.quant.quantize(np.ones((2, 64), np.float32), bits=8, group_size=32)
    >>> r = pickle.loads(pickle.dumps(q))
    >>> bool((r.dequantize() == q.dequantize()).all())
    True
    """

    __slots__ = ("_packed", "_scales", "_zeros", "_shape", "_bits", "_group_size", "_sym", "_method")
    _packed: npt.NDArray[np.uint8]
    _scales: npt.NDArray[np.float16]
    _zeros: npt.NDArray[np.float16]
    _shape: Tuple[int, int]
    _bits: int
    _group_size: int
    _sym: bool
    _method: str

    def __init__(
        self,
        *,
        packed: npt.NDArray[np.uint8],
        scales: npt.NDArray[np.float16],
        zeros: npt.NDArray[np.float16],
        shape: Tuple[int, int],
        bits: int,
        group_size: int,
        sym: bool = False,
        method: str = "rtn",
    ) -> None:
        out_f, in_f = (int(shape[0]), int(shape[1]))
        if bits not in BITS:
            raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
        n_groups = -(-in_f // group_size) if group_size > 0 else 0
        want = {"packed": ((out_f, _row_bytes(bits, in_f)), np.uint8), "scales": ((out_f, n_groups), np.float16), "zeros": ((out_f, n_groups), np.float16)}
        arrays = {}
        for key, arr in (("packed", packed), ("scales", scales), ("zeros", zeros)):
            (want_shape, want_dtype) = want[key]
            a = np.ascontiguousarray(arr)
            if a.shape != want_shape or a.dtype != want_dtype:
                raise InvalidArgumentError(
                    f"{key} must be {np.dtype(want_dtype).name} {want_shape} for int{bits} {(out_f, in_f)} "
                    f"group {group_size}, got {a.dtype.name} {a.shape}"
                )
            if a.flags.writeable:
                a = a.view()
                a.flags.writeable = False
            arrays[key] = a
        set_ = object.__setattr__
        set_(self, "_packed", arrays["packed"])
        set_(self, "_scales", arrays["scales"])
        set_(self, "_zeros", arrays["zeros"])
        set_(self, "_shape", (out_f, in_f))
        set_(self, "_bits", int(bits))
        set_(self, "_group_size", int(group_size))
        set_(self, "_sym", bool(sym))
        set_(self, "_method", str(method))

    @classmethod
    def from_codes(
        cls,
        codes: npt.ArrayLike,
        *,
        scales: npt.ArrayLike,
        zeros: npt.ArrayLike,
        bits: int,
        group_size: int,
        sym: bool = False,
        method: str = "learned",
    ) -> "QuantizedTensor":
        """Packs integer ``codes`` (``[out, in]``, each in ``0 .. 2^bits - 1``) chosen
        elsewhere, with their fp16 ``scales`` and ``zeros`` (``[out, n_groups]``), so that
        ``dequantize()`` gives ``(codes - zeros) * scales`` per group of ``group_size``
        inputs (the effective size: at most ``in``; the last group may be shorter).

        >>> import numpy as np
        >>> from hanpack.quant import QuantizedTensor
        >>> q = QuantizedTensor.from_codes(np.array([[0, 1, 2, 3]]), scales=np.array([[0.5]]),
        ...                                zeros=np.array([[1.0]]), bits=2, group_size=4)
        >>> q.dequantize().tolist()
        [[-0.5, 0.0, 0.5, 1.0]]
        """
        c = np.asarray(codes)
        if c.ndim != 2 or not np.issubdtype(c.dtype, np.integer):
            raise InvalidArgumentError(f"codes must be a 2-D integer array, got {c.dtype.name} {c.shape}")
        if bits not in BITS:
            raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
        if c.size and (c.min() < 0 or c.max() > (1 << bits) - 1):
            raise InvalidArgumentError(f"codes must lie in 0..{(1 << bits) - 1} for int{bits}, got {c.min()}..{c.max()}")
        if not isinstance(group_size, int) or not 0 < group_size <= max(c.shape[1], 1):
            raise InvalidArgumentError(f"group_size must be an integer in 1..{c.shape[1]} (the effective size), not {group_size!r}")
        packed = _core.pack_codes(np.ascontiguousarray(c, dtype=np.uint8), bits, group_size)
        return cls(packed=packed.reshape(c.shape[0], -1), scales=np.asarray(scales, dtype=np.float16),
                   zeros=np.asarray(zeros, dtype=np.float16), shape=(c.shape[0], c.shape[1]), bits=bits,
                   group_size=group_size, sym=sym, method=method)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"QuantizedTensor is immutable (cannot set {name!r})")

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_rebuild, (self._packed, self._scales, self._zeros, self._shape, self._bits, self._group_size, self._sym, self._method))

    def __repr__(self) -> str:
        kind = "sym" if self._sym else "asym"
        return (
            f"QuantizedTensor(shape={self._shape}, bits={self._bits}, group_size={self._group_size}, "
            f"{kind}, method={self._method!r}, bits_per_weight={self.bits_per_weight:.3f})"
        )

    @property
    def packed(self) -> npt.NDArray[np.uint8]:
        """Packed codes, uint8 ``[out_features, ceil(in_features / 32) * 4 * bits]``."""
        return self._packed

    @property
    def scales(self) -> npt.NDArray[np.float16]:
        """Per-group scales, float16 ``[out_features, n_groups]`` (negative allowed when sym)."""
        return self._scales

    @property
    def zeros(self) -> npt.NDArray[np.float16]:
        """Per-group zero points in code units, float16 ``[out_features, n_groups]``
        (fractional for hqq; ``2**(bits-1)`` everywhere when sym)."""
        return self._zeros

    @property
    def shape(self) -> Tuple[int, int]:
        return self._shape

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def group_size(self) -> int:
        """Effective group length (``in_features`` for per-channel); the last group of a
        row is shorter when ``in_features`` is not a multiple of it."""
        return self._group_size

    @property
    def sym(self) -> bool:
        return self._sym

    @property
    def method(self) -> str:
        return self._method

    @property
    def nbytes(self) -> int:
        """Bytes of packed codes, scales and zeros together."""
        return int(self._packed.nbytes + self._scales.nbytes + self._zeros.nbytes)

    @property
    def bits_per_weight(self) -> float:
        """Storage per weight, scales, zeros and row padding included (4.25 for int4-g128)."""
        return self.nbytes * 8 / (self._shape[0] * self._shape[1])

    def dequantize(self, dtype: npt.DTypeLike = np.float32, *, num_threads: Optional[int] = None) -> npt.NDArray[Any]:
        """The weight as ``(q - zero) * scale``, float32 or float16, shape ``[out, in]``."""
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise InvalidArgumentError(f"dequantize supports float32 and float16, not {dt.name}")
        flat = _core.dequantize(
            self._packed, self._scales.view(np.uint16), self._zeros.view(np.uint16), self._bits,
            self._shape[0], self._shape[1], self._group_size, dt.name, num_threads,
        )
        return flat.view(dt).reshape(self._shape)


def _rebuild(packed: Any, scales: Any, zeros: Any, shape: Tuple[int, int], bits: int, group_size: int, sym: bool, method: str) -> QuantizedTensor:
    return QuantizedTensor(packed=packed, scales=scales, zeros=zeros, shape=shape, bits=bits, group_size=group_size, sym=sym, method=method)


def _as_input(weight: Any, dtype: Optional[str]) -> Tuple[npt.NDArray[Any], str]:
    """The array the core reads (float32, or uint16 bits of float16/bfloat16) and its dtype name."""
    arr = np.asarray(weight)
    name = arr.dtype.name
    if dtype == "bfloat16":
        if arr.dtype not in (np.dtype(np.uint16),) and name != "bfloat16":
            raise TypeError(f'dtype="bfloat16" needs a uint16 array of bf16 bits (or an ml_dtypes.bfloat16 array), got {name}')
        name = "bfloat16"
    elif dtype is not None and np.dtype(dtype) != arr.dtype:
        raise TypeError(f"dtype={dtype!r} does not match the array's dtype {name}")
    if name not in ("float32", "float16", "bfloat16"):
        raise TypeError(f"weight must be float32, float16 or bfloat16, not {name} (convert with .astype(numpy.float32))")
    if arr.ndim != 2:
        raise InvalidArgumentError(f"weight must be 2-D [out_features, in_features], got shape {arr.shape}")
    arr = np.ascontiguousarray(arr)  # no copy when already C-contiguous
    return (arr if name == "float32" else arr.view(np.uint16)), name


def quantize(
    weight: npt.ArrayLike,
    *,
    bits: int,
    group_size: Optional[int],
    method: Method = "hqq",
    sym: bool = False,
    importance: Optional[npt.ArrayLike] = None,
    name: str = "weight",
    dtype: Union[str, None] = None,
    num_threads: Optional[int] = None,
) -> QuantizedTensor:
    """Quantizes a ``[out_features, in_features]`` weight group-wise along the inputs.

    ``bits``: 2, 3, 4 or 8. ``group_size``: a multiple of 32, or ``None`` for per-channel.
    ``sym``: symmetric grid (zero fixed at ``2**(bits-1)``). ``importance``: per-input
    channel weights of the squared error (``method="mse"`` only). ``name`` appears in
    error messages (a NaN raises :class:`~hanpack.exceptions.NonFiniteWeightError`
    naming the tensor and ``[row, col]``). ``num_threads``: default all cores.

    >>> import numpy as np, hanpack.quant
    >>> w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)
    >>> q = hanpack.quant.quantize(w, bits=8, group_size=None, method="rtn")
    >>> float(np.abs(q.dequantize() - w).max()) < 0.01
    True
    """
    if bits not in BITS:
        raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {METHODS}, not {method!r}")
    if group_size is not None and (not isinstance(group_size, (int, np.integer)) or group_size <= 0 or group_size % _BLOCK):
        raise InvalidArgumentError(f"group_size must be a positive multiple of {_BLOCK} or None (per-channel), not {group_size!r}")
    arr, dt = _as_input(weight, dtype)
    imp = None
    if importance is not None:
        if method != "mse":
            raise InvalidArgumentError(f"importance is only used by method='mse', not {method!r}")
        imp = np.ascontiguousarray(importance, dtype=np.float32)
        if imp.shape != (arr.shape[1],):
            raise InvalidArgumentError(f"importance must have shape ({arr.shape[1]},) (in_features of {name!r}), got {imp.shape}")
    packed, scales, zeros, group = _core.quantize(arr, dt, bits, group_size, sym, method, imp, name, num_threads)
    out_f = arr.shape[0]
    return QuantizedTensor(
        packed=packed.reshape(out_f, -1), scales=scales.view(np.float16).reshape(out_f, -1),
        zeros=zeros.view(np.float16).reshape(out_f, -1), shape=(out_f, arr.shape[1]), bits=bits,
        group_size=group, sym=sym, method=method,
    )
