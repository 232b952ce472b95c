"""GGUF, llama.cpp's model file format: its tensor types (block formats) in Rust,
byte-identical to llama.cpp's quantizers.

    >>> import numpy as np, hanpack.gguf
    >>> w = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    >>> q = hanpack.gguf.quantize(w, "Q4_K")
    >>> q.dtype, q.shape
    (dtype('uint8'), (4, 144))
    >>> float(np.abs(hanpack.gguf.dequantize(q, "Q4_K") - w).max()) < 0.5
    True
"""

from __future__ import annotations

from .blocks import GGML_TYPES, GgmlTypeInfo, dequantize, quantize, type_info
from .convert import ConversionReport, convert_checkpoint
from .file import GGUFFile, GGUFWriter, TensorInfo, TensorSpec, Typed, ValueType

__all__ = ["GGML_TYPES", "GgmlTypeInfo", "quantize", "dequantize", "type_info", "GGUFFile", "GGUFWriter", "TensorInfo", "TensorSpec", "Typed", "ValueType", "convert_checkpoint", "ConversionReport"]
