"""hanpack: SentencePiece-exact, many-times-faster tokenization for Chinese-capable LLMs.

    >>> import hanpack
    >>> tok = hanpack.Tokenizer.from_file(hanpack.data.default_model_path())
    >>> tok.decode(tok.encode("汉字")) == "汉字"
    True
"""

from __future__ import annotations

from . import checkpoint, data, exceptions, quant, segment as _segment_module
from ._core import __version__
from .checkpoint import quantize_checkpoint
from .segment import Segmenter, segment
from .tokenizer import StreamDecoder, Tokenizer

__all__ = ["Tokenizer", "StreamDecoder", "Segmenter", "segment", "quantize_checkpoint", "checkpoint", "exceptions", "data", "quant", "__version__"]
