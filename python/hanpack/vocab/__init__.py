"""Chinese vocabularies for SentencePiece BPE models: training (:func:`train`), extension
of a base model with reachable pieces (:func:`extend`) and the checks that go with them
(:func:`unreachable_pieces`)."""

from __future__ import annotations

from .extend import AddedPiece, Extension, extend, unreachable_pieces, write_hf_files
from .train import TrainedVocab, read_texts, train

__all__ = ["AddedPiece", "Extension", "TrainedVocab", "extend", "read_texts", "train", "unreachable_pieces", "write_hf_files"]
