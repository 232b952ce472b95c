"""Growing a transformers model's embeddings for an extended vocabulary.

Each new row (input embedding and, when it is a separate matrix, output embedding) starts
as the mean of the rows of the tokens the *base* tokenizer splits the piece's text into,
the usual initialisation for vocabulary extension (a new word starts where its parts
point). Base rows are not touched, so the model behaves as before on text the base
vocabulary covers. Needs torch and transformers (imported when called).

    >>> from hanpack.vocab import extend, resize_embeddings          # doctest: +SKIP
    >>> ext = extend("llama/tokenizer.model", ["越来越"])             # doctest: +SKIP
    >>> model = resize_embeddings(model, "llama/tokenizer.model", ext)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, List, Union

from .. import _core
from ..exceptions import InvalidArgumentError
from ..tokenizer import Tokenizer
from .extend import Extension, _model_bytes

__all__ = ["resize_embeddings", "base_token_ids"]

PathLike = Union[str, "os.PathLike[str]"]


def base_token_ids(base: Union[PathLike, bytes, Tokenizer], pieces: List[str]) -> List[List[int]]:
    """The base tokenizer's ids for each piece's own text (``▁`` as a space, without the
    dummy prefix, so ``越来越`` gives the ids of 越, 来, 越 and no extra ``▁``)."""
    data, origin = _model_bytes(base, "base")
    plain = Tokenizer.from_bytes(_core.spm_without_dummy_prefix(data, origin))
    return [list(ids) for ids in plain.encode_batch([p.replace("\u2581", " ") for p in pieces])]


def resize_embeddings(model: Any, base: Union[PathLike, bytes, Tokenizer], extension: Extension) -> Any:
    """Resizes ``model`` (a transformers ``PreTrainedModel``) to ``extension.vocab_size``
    rows and initialises the new ones; returns the model (changed in place)."""
    import torch

    if not isinstance(extension, Extension):
        raise InvalidArgumentError(f"extension must be a hanpack.vocab.Extension, not {type(extension).__name__}")
    emb_in = model.get_input_embeddings()
    old = emb_in.weight.shape[0]
    if old < extension.base_size:
        raise InvalidArgumentError(
            f"the model has {old} embedding rows but the base vocabulary has {extension.base_size} pieces")
    if old > extension.base_size:
        # Padded embeddings (rows past the vocabulary): the new ids would be padding rows.
        raise InvalidArgumentError(
            f"the model has {old} embedding rows, more than the base vocabulary's {extension.base_size}; "
            "new ids would land on padding rows")
    ids = base_token_ids(base, [a.piece for a in extension.added])
    tied = model.get_output_embeddings() is not None and (
        model.get_output_embeddings().weight.data_ptr() == emb_in.weight.data_ptr())
    model.resize_token_embeddings(extension.vocab_size)
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and not tied:
        matrices.append(out.weight)
    with torch.no_grad():
        for w in matrices:
            for a, parts in zip(extension.added, ids):
                if not parts:
                    raise InvalidArgumentError(f"the base tokenizer gives no token for the piece {a.piece!r}")
                w[a.id] = w[torch.tensor(parts, dtype=torch.long)].mean(dim=0)
    return model
