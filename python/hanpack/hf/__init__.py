"""transformers integration: hanpack tokenizers behind ``AutoTokenizer``.

Importing this subpackage imports transformers (``import hanpack`` never does) and
registers :class:`HanpackTokenizer`, so a folder whose ``tokenizer_config.json`` names
``"tokenizer_class": "HanpackTokenizer"`` loads with the stock auto class:

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

from .tokenizer import HanpackTokenizer, convert_tokenizer, register  # noqa: E402

__all__ = ["HanpackTokenizer", "convert_tokenizer", "register"]

register()
