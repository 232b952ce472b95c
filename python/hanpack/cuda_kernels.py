"""hanpack's CUDA kernels (the sources in ``cuda/``, embedded in the extension): compiled
at first use with NVRTC, cached on disk, launched on torch's current stream, and exposed
as the torch custom op ``torch.ops.hanpack.quant_linear``, which
:class:`hanpack.nn.QuantLinear` calls for CUDA tensors.

    >>> import torch, hanpack.cuda_kernels as hk                        # doctest: +SKIP
    >>> y = hk.quant_linear(x, q.qweight, q.scales, q.zeros, bits=4, group_size=128,
    ...                     in_features=4096)                           # doctest: +SKIP

NVRTC and the CUDA driver API come from NVIDIA's ``cuda-bindings`` package (a dependency
of torch's CUDA wheels; ``pip install cuda-bindings`` otherwise), so no CUDA toolkit is
needed. CUBINs are cached in ``$HANPACK_CACHE_DIR/cuda`` (default
``~/.cache/hanpack/cuda``), keyed by the sources, the architecture, the options and
NVRTC's version.

What runs: int4 and int3 weights with fp16 or bf16 activations take the GEMV
(``cuda/gemv.cu``) for 1 to :data:`MAX_GEMV_BATCH` rows; more rows dequantize the weight
(``cuda/dequantize.cu``) and call cuBLAS through ``F.linear``. Other widths (2 and 8
bits), float32 activations and odd ``in_features`` dequantize with torch ops
(:func:`hanpack.nn.dequantize_torch`) and call ``F.linear``. :func:`unavailable` says why
the kernels cannot run here (no CUDA device, no ``cuda-bindings``), in which case
QuantLinear takes that torch path and warns once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from . import _core
from ._atomic import write_bytes
from .exceptions import CudaKernelError, InvalidArgumentError
from .quant import _row_bytes

__all__ = ["CompiledKernels", "compile_kernels", "quant_linear", "dequantize", "unavailable", "sources",
           "KERNEL_BITS", "MAX_GEMV_BATCH"]

#: Widths the kernels read (others take the torch path).
KERNEL_BITS = (3, 4)
#: Rows of ``x`` up to which the GEMV runs (``HP_MAX_BATCH`` in ``cuda/gemv.cu``).
MAX_GEMV_BATCH = 8
_GEMV_ROWS_PER_BLOCK = 4  # HP_WARPS in cuda/gemv.cu: one warp per output row
_DEQUANT_THREADS = 256
_OPTIONS = ("--std=c++17", "--ptxas-options=-v")
_DTYPES = {torch.float16: "f16", torch.bfloat16: "bf16"}


def sources() -> Dict[str, str]:
    """File name → source of every kernel file (``cuda/*.cu``, ``cuda/common.cuh``)."""
    return dict(_core.CUDA_SOURCES)


@dataclass(frozen=True)
class CompiledKernels:
    """One CUBIN holding every kernel, for ``arch``; ``log`` is NVRTC's (with ptxas's
    register and spill report for each kernel)."""

    arch: str
    cubin: bytes
    log: str


def _nvrtc() -> Any:
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        raise CudaKernelError("hanpack's CUDA kernels need NVIDIA's cuda-bindings package (pip install cuda-bindings)") from None
    return nvrtc


def _cache_dir() -> Path:
    root = os.environ.get("HANPACK_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "hanpack") / "cuda"


def compile_kernels(arch: str, *, cache: bool = True) -> CompiledKernels:
    """Compiles every kernel for ``arch`` (``"sm_80"``, ``"sm_90"``, ...) with NVRTC. Needs
    no GPU. Raises :class:`CudaKernelError` with NVRTC's log when the sources do not
    compile."""
    if not (isinstance(arch, str) and arch.startswith(("sm_", "compute_"))):
        raise InvalidArgumentError(f"arch must look like 'sm_90', not {arch!r}")
    nvrtc = _nvrtc()
    files = sources()
    _, major, minor = nvrtc.nvrtcVersion()
    key = hashlib.sha256(repr((sorted(files.items()), arch, _OPTIONS, major, minor)).encode()).hexdigest()[:32]
    cached = _cache_dir() / f"{arch}-{key}.cubin"
    if cache and cached.is_file():
        return CompiledKernels(arch, cached.read_bytes(), "(cached)")
    units = [n for n in sorted(files) if n.endswith(".cu")]
    unit = "".join(f'#include "{n}"\n' for n in units).encode()  # one module for all kernels
    names = list(files)
    err, prog = nvrtc.nvrtcCreateProgram(unit, b"hanpack_kernels.cu", len(names), [files[n].encode() for n in names],
                                         [n.encode() for n in names])
    _nvrtc_check(nvrtc, err, "nvrtcCreateProgram")
    try:
        options = [f"--gpu-architecture={arch}".encode()] + [o.encode() for o in _OPTIONS]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log_buf = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log_buf)
        log = log_buf.rstrip(b"\0 ").decode(errors="replace")
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CudaKernelError(f"NVRTC could not compile hanpack's kernels for {arch}:\n{log}")
        err, size = nvrtc.nvrtcGetCUBINSize(prog)
        _nvrtc_check(nvrtc, err, "nvrtcGetCUBINSize")
        cubin = b" " * size
        (err,) = nvrtc.nvrtcGetCUBIN(prog, cubin)
        _nvrtc_check(nvrtc, err, "nvrtcGetCUBIN")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    if cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(cached, cubin)
        except OSError:
            pass  # a read-only cache only costs a compile next time
    return CompiledKernels(arch, cubin, log)


def _nvrtc_check(nvrtc: Any, err: Any, what: str) -> None:
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise CudaKernelError(f"{what} failed: {err!r}")


def _driver_check(result: Any, what: str) -> Any:
    """The values after a driver call's status; raises on an error."""
    from cuda.bindings import driver

    err, *values = result if isinstance(result, tuple) else (result,)
    if err != driver.CUresult.CUDA_SUCCESS:
        _, name = driver.cuGetErrorName(err)
        raise CudaKernelError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


_modules: Dict[int, Dict[str, Any]] = {}
_modules_lock = threading.Lock()


def _functions(device: torch.device) -> Dict[str, Any]:
    """The kernels loaded into ``device``'s primary context (torch's), loaded once."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    funcs = _modules.get(index)  # every product comes here: no lock once loaded
    if funcs is not None:
        return funcs
    with _modules_lock:
        if index in _modules:
            return _modules[index]
        _nvrtc()
        from cuda.bindings import driver

        major, minor = torch.cuda.get_device_capability(index)
        compiled = compile_kernels(f"sm_{major}{minor}")
        _driver_check(driver.cuInit(0), "cuInit")
        with torch.cuda.device(index):
            torch.cuda.current_stream()  # makes torch create and bind the primary context
            ctx = _driver_check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
            if not int(ctx):
                dev = _driver_check(driver.cuDeviceGet(index), "cuDeviceGet")
                _driver_check(driver.cuCtxSetCurrent(_driver_check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")),
                              "cuCtxSetCurrent")
            module = _driver_check(driver.cuModuleLoadData(compiled.cubin), "cuModuleLoadData")
            funcs = {}
            for kind in ("gemv", "dequantize"):
                for bits in KERNEL_BITS:
                    for tag in _DTYPES.values():
                        name = f"hanpack_{kind}_int{bits}_{tag}"
                        funcs[name] = _driver_check(driver.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})")
        _modules[index] = funcs
        return funcs


def unavailable(device: Optional[torch.device] = None) -> Optional[str]:
    """``None`` when the kernels can run on ``device`` (default: the current CUDA device),
    else why not. Compiles and loads them on first use."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        _functions(device or torch.device("cuda"))
    except CudaKernelError as e:
        return str(e)
    return None


def _launch(func: Any, device: torch.device, grid: int, block: int, args: Tuple[Tuple[Any, ...], Tuple[Any, ...]]) -> None:
    from cuda.bindings import driver

    stream = driver.CUstream(torch.cuda.current_stream(device).cuda_stream)
    _driver_check(driver.cuLaunchKernel(func, grid, 1, 1, block, 1, 1, 0, stream, args, 0), "cuLaunchKernel")


def _checked(x: Optional[torch.Tensor], qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
             group_size: int, in_features: int) -> Tuple[int, int, int]:
    """``(out_features, n_groups, row_bytes)`` after checking every size, then the devices
    (sizes first, so that their errors read the same on any machine)."""
    if bits not in (2, 3, 4, 8):
        raise InvalidArgumentError(f"bits must be 2, 3, 4 or 8, not {bits!r}")
    if in_features <= 0 or group_size <= 0 or (group_size % 32 and group_size != in_features):
        raise InvalidArgumentError(f"group_size {group_size} must be a multiple of 32 or in_features ({in_features})")
    tensors = {"qweight": qweight, "scales": scales, "zeros": zeros}
    if x is not None:
        tensors["x"] = x
    out_features = qweight.shape[0] if qweight.dim() == 2 else -1
    n_groups = -(-in_features // group_size)
    row_bytes = _row_bytes(bits, in_features)
    if qweight.dtype != torch.uint8 or tuple(qweight.shape) != (out_features, row_bytes):
        raise InvalidArgumentError(f"qweight must be uint8 [out_features, {row_bytes}] for int{bits} with {in_features} inputs, "
                                   f"got {qweight.dtype} {tuple(qweight.shape)}")
    for name in ("scales", "zeros"):
        t = tensors[name]
        if t.dtype != torch.float16 or tuple(t.shape) != (out_features, n_groups):
            raise InvalidArgumentError(f"{name} must be float16 [{out_features}, {n_groups}], got {t.dtype} {tuple(t.shape)}")
    if x is not None and (x.dim() == 0 or x.shape[-1] != in_features):
        raise InvalidArgumentError(f"x must end in {in_features} input features, got shape {tuple(x.shape)}")
    devices = {name: t.device for name, t in tensors.items()}
    if any(d.type != "cuda" for d in devices.values()) or len(set(devices.values())) > 1:
        raise CudaKernelError(f"hanpack's CUDA kernels need every tensor on one CUDA device, got {devices}")
    return out_features, n_groups, row_bytes


def _aligned(t: torch.Tensor, alignment: int) -> torch.Tensor:
    t = t.contiguous()
    return t if t.data_ptr() % alignment == 0 else t.clone()


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int, group_size: int,
               in_features: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """The dense ``[out_features, in_features]`` weight on the tensors' CUDA device, the same
    numbers as :func:`hanpack.nn.dequantize_torch` (int4 and int3 to fp16 or bf16 by the
    kernel; anything else by torch ops)."""
    out_features, n_groups, _ = _checked(None, qweight, scales, zeros, bits=bits, group_size=group_size,
                                         in_features=in_features)
    return _dequantize(qweight, scales, zeros, bits, group_size, in_features, dtype, out_features, n_groups)


def _dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int,
                in_features: int, dtype: torch.dtype, out_features: int, n_groups: int) -> torch.Tensor:
    """:func:`dequantize` on checked arguments."""
    if bits not in KERNEL_BITS or dtype not in _DTYPES:
        from .nn import dequantize_torch

        return dequantize_torch(qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features, dtype=dtype)
    funcs = _functions(qweight.device)
    qweight, scales, zeros = _aligned(qweight, 16), scales.contiguous(), zeros.contiguous()
    out = torch.empty(out_features, in_features, dtype=dtype, device=qweight.device)
    n_blocks = -(-in_features // 32)
    total = out_features * n_blocks
    if total:
        args = ((qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr(), out.data_ptr(), out_features, in_features, group_size,
                 n_groups), (ctypes.c_void_p,) * 4 + (ctypes.c_int,) * 4)
        _launch(funcs[f"hanpack_dequantize_int{bits}_{_DTYPES[dtype]}"], qweight.device, -(-total // _DEQUANT_THREADS),
                _DEQUANT_THREADS, args)
    return out


@torch.library.custom_op("hanpack::quant_linear", mutates_args=())
def _quant_linear_op(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int,
                     group_size: int, in_features: int) -> torch.Tensor:
    out_features, n_groups, _ = _checked(x, qweight, scales, zeros, bits=bits, group_size=group_size, in_features=in_features)
    x2 = x.reshape(-1, in_features)
    rows = x2.shape[0]
    kernel = bits in KERNEL_BITS and x.dtype in _DTYPES
    if kernel and 0 < rows <= MAX_GEMV_BATCH and in_features % 2 == 0:
        funcs = _functions(x.device)
        x2 = _aligned(x2, 4)
        qweight, scales, zeros = _aligned(qweight, 16), scales.contiguous(), zeros.contiguous()
        y = torch.empty(rows, out_features, dtype=x.dtype, device=x.device)
        args = ((x2.data_ptr(), qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr(), y.data_ptr(), rows, out_features,
                 in_features, group_size, n_groups), (ctypes.c_void_p,) * 5 + (ctypes.c_int,) * 5)
        _launch(funcs[f"hanpack_gemv_int{bits}_{_DTYPES[x.dtype]}"], x.device, -(-out_features // _GEMV_ROWS_PER_BLOCK),
                _GEMV_ROWS_PER_BLOCK * 32, args)
    else:
        w = _dequantize(qweight, scales, zeros, bits, group_size, in_features, x.dtype, out_features, n_groups)
        y = F.linear(x2, w)
    return y.reshape(*x.shape[:-1], out_features)


@_quant_linear_op.register_fake
def _(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bits: int, group_size: int,
      in_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


def quant_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                 group_size: int, in_features: int) -> torch.Tensor:
    """``x @ Wᵀ`` for the packed weight ``W`` (``[out_features, in_features]``, hanpack's
    layout), every tensor on one CUDA device; the output has ``x``'s dtype. Raises
    :class:`CudaKernelError` for tensors elsewhere and :class:`InvalidArgumentError`
    naming the sizes that do not fit."""
    return torch.ops.hanpack.quant_linear(x, qweight, scales, zeros, bits, group_size, in_features)
