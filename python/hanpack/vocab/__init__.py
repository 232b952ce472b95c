"""Chinese vocabularies for SentencePiece BPE models: extension with reachable pieces
(:func:`extend`), and the checks that go with it (:func:`unreachable_pieces`)."""

from __future__ import annotations

from .extend import AddedPiece, Extension, extend, unreachable_pieces, write_hf_files

__all__ = ["AddedPiece", "Extension", "extend", "unreachable_pieces", "write_hf_files"]
