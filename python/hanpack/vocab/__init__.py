"""Chinese vocabularies for SentencePiece BPE models: training (:func:`train`), extension
of a base model with reachable pieces (:func:`extend`) and the checks that go with them
(:func:`unreachable_pieces`)."""

from __future__ import annotations

from .embeddings import base_token_ids, resize_embeddings
from .extend import AddedPiece, Extension, extend, extend_to_size, unreachable_pieces, write_hf_files
from .scripts import opencc_converter, with_script_variants
from .train import TrainedVocab, model_pieces, read_texts, train

__all__ = [
    "AddedPiece", "Extension", "TrainedVocab", "extend", "extend_to_size", "model_pieces", "opencc_converter",
    "read_texts", "train", "unreachable_pieces", "with_script_variants", "write_hf_files", "resize_embeddings",
    "base_token_ids",
]
