"""Perplexity of a causal LM checkpoint on a text, with transformers on the CPU, so that
an original and its quantized copy can be compared on the same tokens.

    >>> from hanpack.evaluate import perplexity  # doctest: +SKIP
    >>> perplexity("stories260k", text, separator="<|story|>").ppl  # doctest: +SKIP
    3.351...

Tokens come from ``hanpack.Tokenizer`` on the directory's ``tokenizer.model`` when it has
one (sentencepiece's ids, which the model was trained on), else its ``tokenizer.json``;
each document is BOS (when the tokenizer has one) + its text. A document longer than ``window`` tokens is scored with
a sliding window (transformers' recipe): windows of ``window`` tokens advanced by
``stride``, each scoring only the tokens the previous one did not, so every token after
the first is predicted exactly once with up to ``window - stride`` tokens of context.

A checkpoint written by :func:`hanpack.quantize_checkpoint` is loaded by building the
model from its ``config.json`` and filling it with the dequantized weights (float32),
which measures the quantization error itself, independent of any kernel.

For encoders without an LM head (sentence-transformers models such as
all-MiniLM-L6-v2), :func:`sentence_embeddings` gives the mean-pooled, normalised
embeddings that such models are used through, to compare an original with its quantized
copy by cosine.

Needs ``torch`` and ``transformers`` (imported when called).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np

from .exceptions import InvalidArgumentError
from .tokenizer import Tokenizer

__all__ = ["perplexity", "Perplexity", "split_documents", "load_causal_lm", "sentence_embeddings"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    #: Mean negative log-likelihood per predicted token, in nats.
    nll: float
    #: Tokens predicted (every token of every document but its first).
    n_tokens: int
    n_documents: int


def split_documents(text: str, separator: Optional[str]) -> List[str]:
    """``text`` cut at lines equal to ``separator`` (``None``: one document), without
    empty documents or the newlines next to the separators."""
    docs: List[str] = []
    if separator is None:
        docs.append(text)
    else:
        cur: List[str] = []
        for line in text.split("\n"):
            if line.strip() == separator:
                docs.append("\n".join(cur))
                cur = []
            else:
                cur.append(line)
        docs.append("\n".join(cur))
    return [d.strip("\n") for d in docs if d.strip()]


def _tokenizer(model_dir: Path) -> Tokenizer:
    for name in ("tokenizer.model", "tokenizer.json"):
        if (model_dir / name).is_file():
            return Tokenizer.from_file(model_dir / name)
    return Tokenizer.from_file(model_dir)


def load_causal_lm(model_dir: PathLike, dtype: Any = None) -> Any:
    """An ``AutoModelForCausalLM`` in eval mode, float32 unless ``dtype`` (a torch dtype)
    says otherwise; a hanpack-quantized checkpoint is dequantized into it (see the module
    comment)."""
    import torch
    import transformers

    dtype = torch.float32 if dtype is None else dtype
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    qc = cfg.get("quantization_config") or {}
    if qc.get("quant_method") != "hanpack":
        loaded: Any = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        return loaded.eval()
    from .checkpoint import load_checkpoint
    from .quant import QuantizedTensor

    config = transformers.AutoConfig.from_pretrained(model_dir)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model: Any = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)  # type: ignore[no-untyped-call]
    state = {}
    for name, t in load_checkpoint(model_dir).items():
        a = t.dequantize(np.float32) if isinstance(t, QuantizedTensor) else t
        if a.dtype.name == "bfloat16":
            a = a.astype(np.float32)
        state[name] = torch.from_numpy(np.array(a))  # a copy: checkpoint arrays are read-only
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if "lm_head" in k} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise InvalidArgumentError(f"{model_dir}: weights do not match the model: missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()
    return model.eval()


def perplexity(
    model: Union[PathLike, Any],
    text: str,
    *,
    separator: Optional[str] = None,
    window: Optional[int] = None,
    stride: Optional[int] = None,
    tokenizer: Optional[Tokenizer] = None,
    max_tokens: Optional[int] = None,
) -> Perplexity:
    """Perplexity of ``model`` (a checkpoint directory, or a loaded model with
    ``tokenizer`` given) on ``text`` cut into documents at ``separator`` lines.
    ``window`` defaults to the model's ``max_position_embeddings``, ``stride`` to half
    the window. ``max_tokens`` cuts each document (BOS included) to that many tokens
    first, as evaluations that score one window per document do."""
    import torch

    lm: Any = model
    if isinstance(model, (str, os.PathLike)):
        model_dir = Path(model)
        tokenizer = tokenizer or _tokenizer(model_dir)
        lm = load_causal_lm(model_dir)
    if tokenizer is None:
        raise InvalidArgumentError("pass tokenizer= with a loaded model")
    context: int = getattr(lm.config, "max_position_embeddings", 2048)
    window = int(window or context)
    stride = int(stride or max(1, window // 2))
    if not 0 < stride <= window:
        raise InvalidArgumentError(f"stride must be in 1..window ({window}), not {stride}")
    docs = split_documents(text, separator)
    if not docs:
        raise InvalidArgumentError("the text has no documents to score")
    total_nll, total_n = 0.0, 0
    with torch.inference_mode():
        for doc in docs:
            ids = tokenizer.encode(doc, add_bos=tokenizer.bos_id >= 0)[:max_tokens]
            prev_end = 1  # the first token (BOS) is never predicted
            for begin in range(0, max(1, len(ids) - 1), stride):
                end = min(begin + window, len(ids))
                chunk = torch.tensor([ids[begin:end]])
                logits = lm(chunk).logits[0, :-1].float()
                targets = chunk[0, 1:]
                nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
                new = end - prev_end  # tokens [prev_end, end) are new in this window
                total_nll += float(nll[-new:].sum()) if new > 0 else 0.0
                total_n += max(new, 0)
                prev_end = end
                if end == len(ids):
                    break
    if total_n == 0:
        raise InvalidArgumentError("the documents have no tokens to predict (each needs at least two)")
    mean = total_nll / total_n
    return Perplexity(ppl=math.exp(mean), nll=mean, n_tokens=total_n, n_documents=len(docs))


def sentence_embeddings(model: Any, tokenizer: Any, lines: List[str], *, batch_size: int = 32, max_length: int = 128) -> Any:
    """L2-normalised mean-pooled last hidden states (sentence-transformers' pooling) of
    ``lines`` through the transformers encoder ``model`` and its HF ``tokenizer``, as a
    float32 tensor ``[len(lines), hidden]``; the cosine of two such rows is their dot
    product."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(lines), batch_size):
            b = tokenizer(lines[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**b).last_hidden_state.float()
            mask = b["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out) if out else torch.empty(0)
