"""transformers integration: hanpack tokenizers behind ``AutoTokenizer``, hanpack-quantized
models behind ``AutoModelForCausalLM``.

Importing this subpackage imports transformers and torch (``import hanpack`` never does)
and registers :class:`HanpackTokenizer` and ``quant_method: "hanpack"``
(:class:`HanpackConfig`, :class:`HanpackHfQuantizer`; see :mod:`hanpack.hf.quantizer`).
A folder whose ``tokenizer_config.json`` names ``"tokenizer_class": "HanpackTokenizer"``
loads with the stock auto class:

    >>> import hanpack.hf                                              # doctest: +SKIP
    >>> hanpack.hf.convert_tokenizer("llama-7b", "llama-7b-hanpack")   # doctest: +SKIP
    >>> from transformers import AutoTokenizer                         # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained("llama-7b-hanpack")        # doctest: +SKIP

Folders written by :func:`convert_tokenizer` also carry ``auto_map`` and a two-line
``tokenization_hanpack.py``, so ``AutoTokenizer.from_pretrained(dir,
trust_remote_code=True)`` works without importing hanpack first.
"""

from __future__ import annotations

try:
    import transformers.tokenization_python  # noqa: F401  (v5's base for non-`tokenizers` tokenizers)
except ImportError as e:  # keep the reason: transformers missing, or a 4.x without this module
    raise ImportError(
        f"hanpack.hf needs transformers >= 5 (pip install 'hanpack[hf]'); importing it failed: {e}"
    ) from e

from . import quantizer as _quantizer  # noqa: E402
from .quantizer import HanpackConfig, HanpackHfQuantizer  # noqa: E402
from .tokenizer import HanpackTokenizer, convert_tokenizer  # noqa: E402
from .tokenizer import register as _register_tokenizer  # noqa: E402

__all__ = ["HanpackTokenizer", "convert_tokenizer", "register", "HanpackConfig", "HanpackHfQuantizer"]


def register() -> None:
    """Registers the tokenizer class and the quantization method with transformers (done
    on import; idempotent)."""
    _register_tokenizer()
    _quantizer.register()


register()
