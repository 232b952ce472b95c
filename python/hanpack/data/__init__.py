"""Files that ship with hanpack, made by the project itself (see ``build_default.py``).

* ``default.model`` — a small SentencePiece BPE tokenizer (byte fallback, LLaMA-style
  settings) trained by ``build_default.py`` on ``sample_zh.txt``.
* ``sample_zh.txt`` — a short Chinese text (Simplified, Traditional and some English)
  written for hanpack and released with it under Apache-2.0.

It also holds corpus preprocessing: :func:`tokenize_files` turns text, JSON-lines and
parquet files into token shards (format: :mod:`hanpack.data.shards`), on all cores or on a
Dask cluster, resumable after an interruption; :func:`read_shards` reads them back.

    >>> import hanpack.data
    >>> hanpack.data.sample_text()[:2]
    '分词'
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

__all__ = ["default_model_path", "sample_text_path", "sample_text", "tokenize_files", "read_shards", "TokenizeResult"]


def __getattr__(name: str) -> object:  # the preprocessing modules import numpy: load on use
    if name in ("tokenize_files", "TokenizeResult"):
        from . import tokenize

        return getattr(tokenize, name)
    if name == "read_shards":
        from .shards import read_shards

        return read_shards
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_model_path() -> Path:
    """Path of the bundled demo tokenizer (``default.model``)."""
    return _HERE / "default.model"


def sample_text_path() -> Path:
    """Path of the bundled Chinese sample text."""
    return _HERE / "sample_zh.txt"


def sample_text() -> str:
    """The bundled Chinese sample text."""
    return sample_text_path().read_text(encoding="utf-8")
