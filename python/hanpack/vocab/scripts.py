"""Simplified and Traditional Chinese side by side: script variants of new pieces.

A vocabulary learned mostly from Simplified text serves Traditional (Taiwan) text poorly:
the same word costs more tokens once converted. :func:`with_script_variants` puts each
piece's converted form (for example OpenCC's ``s2twp``, Simplified to Taiwan Traditional
with Taiwan phrasing) right after it, for the most important pieces, so both scripts get
the same words at nearly the same priority; ``limit`` is the quota that trades
compression on one script for fairness to the other.

    >>> with_script_variants(["软件", "的"], {"软件": "軟體"}.get)
    ['软件', '軟體', '的']
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from ..exceptions import InvalidArgumentError

__all__ = ["opencc_converter", "with_script_variants"]


def opencc_converter(config: str = "s2twp") -> Callable[[str], str]:
    """``OpenCC(config).convert`` from the ``opencc`` package (``pip install opencc``)."""
    try:
        import opencc  # type: ignore[import-untyped]
    except ImportError as e:
        raise ImportError(f"script conversion uses the opencc package, which cannot be imported ({e}); pip install opencc") from e
    try:
        return opencc.OpenCC(config).convert
    except Exception as e:  # opencc raises its own types for unknown configs
        raise InvalidArgumentError(f"OpenCC has no configuration {config!r} ({e})") from e


def with_script_variants(
    pieces: Sequence[str], convert: Callable[[str], Optional[str]], *, limit: Optional[int] = None
) -> List[str]:
    """``pieces`` in order, each of the first ``limit`` (all if None) followed by
    ``convert(piece)`` when that differs; duplicates dropped (first occurrence kept).
    ``convert`` returning None or an empty string means "no variant"."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be a non-negative int or None, not {limit!r}")
    out: List[str] = []
    seen = set()
    for i, piece in enumerate(pieces):
        variants = [piece]
        if limit is None or i < limit:
            other = convert(piece)
            if other:
                variants.append(other)
        for v in variants:
            if v not in seen:
                seen.add(v)
                out.append(v)
    return out
