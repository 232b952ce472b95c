"""llama.cpp's own C quantizers, called through ctypes from the ``libggml-base`` that
``llama-cpp-python`` builds from source: ``ggml_quantize_chunk`` is what llama-quantize
runs for every tensor (reference quantizers without an importance matrix, the weighted
ones with it)."""

from __future__ import annotations

import ctypes
import os
from functools import lru_cache
from typing import Optional

import numpy as np
import pytest

import hanpack.gguf as hg


@lru_cache(maxsize=1)
def _quantize_chunk():
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
    f = lib.ggml_quantize_chunk
    f.restype = ctypes.c_size_t
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return f


def quantize(x: np.ndarray, qtype: str, imatrix: Optional[np.ndarray] = None) -> np.ndarray:
    """llama.cpp's bytes for the rows of ``x`` (2-D float32)."""
    f = _quantize_chunk()
    x = np.ascontiguousarray(x, np.float32)
    info = hg.type_info(qtype)
    out = np.zeros((x.shape[0], x.shape[1] // info.block_size * info.type_size), np.uint8)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    n = f(info.id, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], None if im is None else im.ctypes.data)
    assert n == out.size
    return out
