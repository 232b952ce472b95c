"""Which tensor gets which ggml type in a llama.cpp file type such as Q4_K_M: the rules
of llama.cpp's ``llama_tensor_get_type`` (``src/llama-quant.cpp``) for dense LLaMA
models, so that a file hanpack writes has the tensor types ``llama-quantize`` would give.

    >>> from hanpack.gguf.mixture import tensor_types
    >>> names = [("blk.0.attn_v.weight", (256, 2048)), ("blk.0.ffn_down.weight", (2048, 5632))]
    >>> tensor_types(names, "Q4_K_M", n_layer=1, n_head=32, n_head_kv=4)
    {'blk.0.attn_v.weight': 'Q6_K', 'blk.0.ffn_down.weight': 'Q6_K'}

The rules are a function of each tensor's name, its row length, its place among the
layers and the model's head counts; llama.cpp visits tensors in its own order (layer
number, then name), which :func:`llama_order` reproduces.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Sequence, Tuple

from ..exceptions import InvalidArgumentError
from .blocks import type_info

__all__ = ["FILE_TYPES", "tensor_types", "llama_order", "quantizable"]

# llama.cpp's llama_ftype numbers (general.file_type) and each one's default tensor type.
FILE_TYPES: Dict[str, Tuple[int, str]] = {
    "F32": (0, "F32"),
    "F16": (1, "F16"),
    "Q4_0": (2, "Q4_0"),
    "Q4_1": (3, "Q4_1"),
    "Q8_0": (7, "Q8_0"),
    "Q5_0": (8, "Q5_0"),
    "Q5_1": (9, "Q5_1"),
    "Q2_K": (10, "Q2_K"),
    "Q3_K_S": (11, "Q3_K"),
    "Q3_K_M": (12, "Q3_K"),
    "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"),
    "Q4_K_M": (15, "Q4_K"),
    "Q5_K_S": (16, "Q5_K"),
    "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"),
    "IQ4_NL": (25, "IQ4_NL"),
    "BF16": (32, "BF16"),
}

_UNQUANTIZED = {"F32", "F16", "BF16"}
# llama.cpp's tensor_type_fallback: the type used when a row does not fit the blocks.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_LAYER = re.compile(r"blk\.(\d+)\.")


def llama_order(names: Iterable[str]) -> List[str]:
    """llama.cpp's tensor order: by layer number (tensors outside ``blk.N.`` first), then
    by name."""

    def key(name: str) -> Tuple[int, str]:
        m = _LAYER.match(name)
        return (int(m.group(1)) if m else -1, name)

    return sorted(names, key=key)


def quantizable(name: str, shape: Sequence[int]) -> bool:
    """llama.cpp quantizes 2-D (and 3-D) ``*weight`` tensors other than norms."""
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_types(
    tensors: Sequence[Tuple[str, Sequence[int]]],
    file_type: str,
    *,
    n_layer: int,
    n_head: int,
    n_head_kv: int,
    has_imatrix: bool = False,
) -> Dict[str, str]:
    """The ggml type of every quantizable tensor (``(name, numpy shape)``; llama.cpp's
    GGUF names) in ``file_type``, as llama.cpp decides it. Tensors that stay as they are
    (1-D, norms) are left out."""
    if file_type not in FILE_TYPES:
        raise InvalidArgumentError(f"unsupported file type {file_type!r}; supported: {', '.join(FILE_TYPES)}")
    default = FILE_TYPES[file_type][1]
    shapes = dict(tensors)
    order = [n for n in llama_order(shapes) if quantizable(n, shapes[n])]
    n_attn_v = sum(_category(n) == "attn_v" for n in order)
    tied = "output.weight" not in shapes
    n_gqa = n_head // n_head_kv if n_head_kv else 1
    is_70b = n_layer == 80 and n_head != n_head_kv
    i_attn_v = i_ffn_down = 0
    out: Dict[str, str] = {}
    for name in order:
        cols = int(shapes[name][-1])
        new = default
        if default not in _UNQUANTIZED:
            cat = _category(name)
            if cat == "output" or (tied and cat == "token_embd"):
                if cols % type_info(new).block_size:
                    new = "Q8_0"
                elif new != "Q8_0":
                    new = "Q6_K"
            elif cat == "attn_v":
                if file_type == "Q2_K":
                    new = "Q4_K" if n_gqa >= 4 else "Q3_K"
                elif file_type == "Q3_K_M":
                    new = "Q5_K" if i_attn_v < 2 else "Q4_K"
                elif file_type == "Q3_K_L":
                    new = "Q5_K"
                elif file_type == "IQ4_NL" and n_gqa >= 4:
                    new = "Q5_K"
                elif file_type in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i_attn_v, n_attn_v):
                    new = "Q6_K"
                elif file_type == "Q4_K_S" and i_attn_v < 4:
                    new = "Q5_K"
                if is_70b and new in ("Q3_K", "Q4_K"):
                    new = "Q5_K"
                i_attn_v += 1
            elif cat == "ffn_down":
                i, n = i_ffn_down, n_layer
                if file_type == "Q2_K":
                    new = "Q3_K"
                elif file_type == "Q3_K_M":
                    new = "Q5_K" if i < n // 16 else "Q4_K"
                elif file_type == "Q3_K_L":
                    new = "Q5_K"
                elif file_type == "Q4_K_M":
                    if _use_more_bits(i, n):
                        new = "Q6_K"
                elif i < n // 8 and file_type == "IQ4_NL" and not has_imatrix:
                    new = "Q5_K"
                elif file_type == "Q5_K_M" and _use_more_bits(i, n):
                    new = "Q6_K"
                elif file_type == "Q4_K_S" and i < n // 8:
                    new = "Q5_K"
                elif file_type in ("Q4_0", "Q5_0") and has_imatrix and i < n // 8:
                    new = "Q4_1" if file_type == "Q4_0" else "Q5_1"
                i_ffn_down += 1
            elif cat == "attn_output":
                new = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(file_type, new)
            if cols % type_info(new).block_size:
                new = _FALLBACK.get(new, new)
                if cols % type_info(new).block_size:
                    new = "F16"
        out[name] = new
    return out
