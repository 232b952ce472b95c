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


def load_llama(path, **kwargs):
    """``llama_cpp.Llama(path, **kwargs)`` with llama.cpp's extra weight buffer types
    (AMX and repacked layouts) turned off: on CPUs with AMX (Intel Sapphire Rapids and
    later) llama.cpp 0.3.36's ``ggml_backend_amx_mul_mat`` segfaults on small models'
    matrices (64-wide stories260k rows), and the high-level ``Llama`` class does not
    expose ``use_extra_bufts``. The plain CPU kernels compute the same model."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from llama_cpp import llama as high_level

    defaults = high_level.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    high_level.llama_cpp.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(str(path), verbose=False, **kwargs)
    finally:
        high_level.llama_cpp.llama_model_default_params = defaults
