"""``QuantLinear``: an ``nn.Linear`` whose weight stays packed (this module imports torch;
``import hanpack`` does not).

    >>> import torch, hanpack.nn                                                # doctest: +SKIP
    >>> lin = torch.nn.Linear(4096, 4096, bias=False)                           # doctest: +SKIP
    >>> q = hanpack.nn.QuantLinear.from_linear(lin, bits=4, group_size=128)     # doctest: +SKIP
    >>> q(torch.randn(1, 4096)).shape                                           # doctest: +SKIP
    torch.Size([1, 4096])

The module holds the three arrays of ``hanpack.quant`` as buffers: ``qweight`` (uint8
``[out, row_bytes]``), ``scales`` and ``zeros`` (float16 ``[out, n_groups]``); the
dequantized matrix is never kept. On CPU the forward pass is hanpack's fused
dequantize + matrix product in Rust (``hanpack_core::quant::matmul``: multi-threaded,
AVX2/FMA or AVX-512 where the CPU has it, GIL released), reading the tensors without
copies; fp32 and bf16 (and fp16) activations, the output in the activation's dtype. bf16
inputs are read as they are and widened to f32 in the kernel: the f32 product of the bf16
inputs (at batch 1 with AVX512-BF16, dot products on the bf16 inputs: on AMD Zen 4 for
int4 and int3, elsewhere for int4 layers whose shapes the f32 table kernel does not
take; see ``hanpack_core::quant::matmul_bf16``). On other devices the weight is
dequantized there, one layer at a time, and ``F.linear`` runs; on CUDA, int4 and int3
layers with fp16 or bf16 activations run hanpack's kernels instead
(:mod:`hanpack.cuda_kernels`: a fused GEMV for up to 8 rows, else a dequantize kernel
and cuBLAS), and when those cannot run (no ``cuda-bindings``) the torch path is taken
with one warning saying why.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _core
from .exceptions import InvalidArgumentError
from .quant import BITS, QuantizedTensor, _row_bytes, quantize

__all__ = ["QuantLinear", "dequantize_torch", "quantized_buffers"]

_BLOCK = 32


def _unpack_codes(qweight: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Codes ``[out, in_features]`` (uint8) from packed rows, with torch ops (any device);
    the block layouts of ``hanpack_core::quant::formats``."""
    out_f = qweight.shape[0]
    blocks = qweight.reshape(out_f, -1, bits * 4)  # [out, n_blocks, block_bytes]
    if bits == 8:
        codes = blocks
    elif bits == 4:  # byte j = q[2j] | q[2j+1] << 4
        codes = torch.stack((blocks & 0xF, blocks >> 4), dim=-1).reshape(out_f, -1, 32)
    elif bits == 2:  # byte j holds values 4j+k in bits 2k..2k+2
        codes = torch.stack([(blocks >> (2 * k)) & 3 for k in range(4)], dim=-1).reshape(out_f, -1, 32)
    elif bits == 3:  # bytes 3t..3t+3 as a little-endian 24-bit u hold values 8t+k at bits 3k..3k+3
        t = blocks.reshape(out_f, -1, 4, 3).to(torch.int32)
        u = t[..., 0] | (t[..., 1] << 8) | (t[..., 2] << 16)
        codes = torch.stack([(u >> (3 * k)) & 7 for k in range(8)], dim=-1).reshape(out_f, -1, 32).to(torch.uint8)
    else:
        raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
    return codes.reshape(out_f, -1)[:, :in_features]


def quantized_buffers(q: QuantizedTensor) -> Dict[str, torch.Tensor]:
    """``q``'s arrays as the CPU tensors a :class:`QuantLinear` holds: ``qweight``
    (uint8), ``scales`` and ``zeros`` (float16)."""
    # np.array(...) makes writable copies: torch refuses to wrap read-only arrays.
    return {
        "qweight": torch.from_numpy(np.array(q.packed)),
        "scales": torch.from_numpy(np.array(q.scales.view(np.int16))).view(torch.float16),
        "zeros": torch.from_numpy(np.array(q.zeros.view(np.int16))).view(torch.float16),
    }


def dequantize_torch(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                     group_size: int, in_features: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(q - zero) * scale`` as a ``[out, in_features]`` tensor on ``qweight``'s device
    (the same numbers as ``QuantizedTensor.dequantize``)."""
    codes = _unpack_codes(qweight, bits, in_features).to(torch.float32)
    idx = torch.arange(in_features, device=qweight.device) // group_size
    s = scales.to(torch.float32)[:, idx]
    z = zeros.to(torch.float32)[:, idx]
    return ((codes - z) * s).to(dtype)


_cuda_state: Dict[int, bool] = {}


def _cuda_kernels_usable(device: torch.device) -> bool:
    """Whether hanpack's CUDA kernels run on ``device``; warns once per device when not."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _cuda_state:
        from .cuda_kernels import unavailable

        why = unavailable(torch.device("cuda", index))
        if why is not None:
            warnings.warn(f"hanpack: CUDA kernels unavailable on cuda:{index} ({why}); QuantLinear dequantizes each "
                          "layer with torch ops and calls F.linear instead", RuntimeWarning, stacklevel=3)
        _cuda_state[index] = why is None
    return _cuda_state[index]


class QuantLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` group-quantized (2, 3, 4 or 8 bits) and kept packed.

    ``act_bits=8`` (opt-in) quantizes the activations to int8 on the fly on CPU, per
    block of 128 inputs with a symmetric scale, as llama.cpp does for its 4-bit formats:
    the result is the dequantized weight times the dequantized activations, and int4
    layers at batch 1 then use AVX512-VNNI integer dot products where the CPU has them
    (several times faster; see ``benches/RESULTS.md``). ``None`` (the default) keeps the
    activations as they are. Other devices ignore it.

    Casting the module or its model (``.to(torch.bfloat16)``, ``.float()``) casts the bias
    only: ``scales`` and ``zeros`` stay fp16 and follow the device.

    >>> QuantLinear(4096, 4096, bits=4, group_size=128, act_bits=8)  # doctest: +SKIP
    """

    def __init__(self, in_features: int, out_features: int, *, bits: int = 4, group_size: Optional[int] = 128,
                 bias: bool = True, dtype: torch.dtype = torch.float32, device: Any = None,
                 act_bits: Optional[int] = None) -> None:
        super().__init__()
        if bits not in BITS:
            raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
        if act_bits not in (None, 8):
            raise InvalidArgumentError(f"act_bits must be None or 8, not {act_bits!r}")
        if in_features <= 0 or out_features <= 0:
            raise InvalidArgumentError(f"in_features and out_features must be positive, not {in_features}, {out_features}")
        group = in_features if group_size is None else min(int(group_size), in_features)
        if group_size is not None and (group_size <= 0 or (group_size % _BLOCK and group != in_features)):
            raise InvalidArgumentError(f"group_size must be a positive multiple of {_BLOCK} or None, not {group_size!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.bits, self.group_size = int(bits), group
        self.act_bits = act_bits
        n_groups = -(-in_features // group)
        self.register_buffer("qweight", torch.zeros(out_features, _row_bytes(bits, in_features), dtype=torch.uint8,
                                                    device=device))
        self.register_buffer("scales", torch.zeros(out_features, n_groups, dtype=torch.float16, device=device))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.float16, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def from_quantized(cls, q: QuantizedTensor, bias: Optional[torch.Tensor] = None, *,
                       act_bits: Optional[int] = None) -> "QuantLinear":
        """A module holding ``q``'s arrays (copied into torch buffers once)."""
        out_f, in_f = q.shape
        m = cls(in_f, out_f, bits=q.bits, group_size=q.group_size, bias=bias is not None,
                dtype=bias.dtype if bias is not None else torch.float32, act_bits=act_bits)
        for name, t in quantized_buffers(q).items():
            getattr(m, name).copy_(t)
        if bias is not None:
            with torch.no_grad():
                m.bias.copy_(bias.detach())
        return m

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int = 4, group_size: Optional[int] = 128, method: str = "hqq",
                    sym: bool = False, act_bits: Optional[int] = None) -> "QuantLinear":
        """Quantizes an ``nn.Linear`` (its weight read as float32 once)."""
        w = linear.weight.detach().to("cpu", torch.float32).contiguous().numpy()
        q = quantize(w, bits=bits, group_size=group_size, method=method, sym=sym)
        m = cls.from_quantized(q, linear.bias, act_bits=act_bits)
        return m.to(linear.weight.device)

    def _apply(self, fn: Any, recurse: bool = True) -> "QuantLinear":
        """``.to(dtype)``, ``.float()``, ``.bfloat16()`` and the like on a model cast every
        floating buffer; the kernels read ``scales`` and ``zeros`` as fp16 bits (a bf16
        copy read that way gave garbage logits) and a round trip through bf16 would lose
        their precision. So they follow the module's device only and stay fp16."""
        kept = {name: self._buffers[name] for name in ("scales", "zeros")}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if old is not None and new is not None and new.dtype != torch.float16:
                self._buffers[name] = old.to(device=new.device)
        return self

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as a dense tensor (for checks; forward never makes it on CPU)."""
        return dequantize_torch(self.qweight, self.scales, self.zeros, bits=self.bits, group_size=self.group_size,
                                in_features=self.in_features, dtype=dtype)

    def _arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """numpy views of the three buffers, made once: each call to ``.numpy()`` costs
        about 2 µs, a fifth of a small layer's forward. Rebuilt when a buffer's storage
        moved (``.to()``, ``load_state_dict(assign=True)``, a copy of the module); an
        in-place ``copy_`` keeps the storage, and the views see the new values."""
        # Through `_buffers`, not attributes: nn.Module's `__getattr__` is Python code, and
        # cold after a product (see `forward`).
        b = self._buffers
        qweight, scales, zeros = b["qweight"], b["scales"], b["zeros"]
        ptrs = (qweight.data_ptr(), scales.data_ptr(), zeros.data_ptr())
        views = self.__dict__.get("_views")
        if views is None or views[0] != ptrs:
            if scales.dtype != torch.float16 or zeros.dtype != torch.float16:
                # Assigned in another dtype (`load_state_dict(assign=True)`, an attribute
                # set directly): their values, as the fp16 the kernels read.
                b["scales"], b["zeros"] = scales.to(torch.float16), zeros.to(torch.float16)
                return self._arrays()
            arrays = (qweight.numpy(), scales.view(torch.int16).numpy().view(np.uint16),
                      zeros.view(torch.int16).numpy().view(np.uint16))
            views = (ptrs, arrays)
            self.__dict__["_views"] = views
        return views[1]

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: nn.Module returns its own __dict__
        state.pop("_views", None)  # views of this process's buffers; rebuilt on use
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The common cases (a float32 or bf16 CPU tensor without grad) make few torch calls
        # and no nn.Module attribute reads (Python code): right after a product has
        # streamed the weight through the caches, each costs 5-20 µs of cold code. With
        # the eleven torch calls and five attribute reads this method used to make, a
        # 4096 x 4096 product took 50-70 µs longer through the module than called
        # directly; now 20-26 µs. numpy does the reshaping instead.
        dtype = x.dtype
        bf16 = dtype is torch.bfloat16 and self.act_bits is None
        if dtype is torch.float32 or bf16:
            try:  # raises for CUDA and grad-tracking tensors
                arr = x.view(torch.int16).numpy().view(np.uint16) if bf16 else x.numpy()
            except (TypeError, RuntimeError):
                return self._forward_other(x)
            if arr.ndim:
                return self._product(arr, bf16, dtype)
        return self._forward_other(x)

    def _forward_other(self, x: torch.Tensor) -> torch.Tensor:
        """Every input but a float32 or bf16 CPU tensor without grad (see :meth:`forward`)."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise InvalidArgumentError(f"QuantLinear expects {self.in_features} input features, got shape "
                                       f"{tuple(x.shape)}")
        if not (x.is_cpu and self.qweight.is_cpu):
            bias = None if self.bias is None else self.bias.to(x.dtype)
            if x.is_cuda and self.qweight.is_cuda and _cuda_kernels_usable(x.device):
                from . import cuda_kernels

                y = cuda_kernels.quant_linear(x, self.qweight, self.scales, self.zeros, bits=self.bits,
                                              group_size=self.group_size, in_features=self.in_features)
                return y if bias is None else y + bias
            w = self.dequantized_weight(x.dtype)
            return F.linear(x, w, bias)
        x = x.detach()
        if x.dtype == torch.bfloat16 and self.act_bits is None:
            return self._product(x.contiguous().view(torch.int16).numpy().view(np.uint16), True, x.dtype)
        return self._product(x.to(torch.float32).numpy(), False, x.dtype)

    def _product(self, arr: np.ndarray, is_bf16: bool, dtype: torch.dtype) -> torch.Tensor:
        """The CPU product of ``arr`` (``[..., in_features]``) as a tensor of ``dtype``."""
        shape = arr.shape
        if shape[-1] != self.in_features:
            raise InvalidArgumentError(f"QuantLinear expects {self.in_features} input features, got shape "
                                       f"{tuple(shape)}")
        qweight, scales, zeros = self._arrays()
        y = _core.quant_matmul(np.ascontiguousarray(arr.reshape(-1, self.in_features)), qweight, scales, zeros,
                               self.bits, self.out_features, self.in_features, self.group_size, is_bf16,
                               act_bits=self.act_bits)
        out = torch.from_numpy(y.reshape(*shape[:-1], self.out_features))
        if dtype is not torch.float32:
            out = out.to(dtype)
        bias = self._parameters.get("bias")  # None when registered as a plain None attribute
        if bias is not None:
            out += bias.to(dtype)
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}"
                + (f", act_bits={self.act_bits}" if self.act_bits is not None else ""))
