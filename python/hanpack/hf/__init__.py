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

from .tokenizer import HanpackTokenizer, convert_tokenizer, register

__all__ = ["HanpackTokenizer", "convert_tokenizer", "register"]

register()
