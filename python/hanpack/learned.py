"""Method ``learned``: codes, scales and zeros fitted to the model's own outputs.

    >>> import hanpack  # doctest: +SKIP
    >>> hanpack.quantize_checkpoint("stories260k", "out", bits=3, method="learned")  # doctest: +SKIP
    >>> from hanpack.learned import learn_rounding  # or fit first, with other options
    >>> tensors = learn_rounding("stories260k", bits=3, steps=3000)  # doctest: +SKIP
    >>> hanpack.quantize_checkpoint("stories260k", "out", bits=3, method="learned", learned=tensors)  # doctest: +SKIP

Each group of a weight ``W`` (along the input, as every hanpack layout) is stored as
``s·(q − z)``. Starting from min–max (rtn), three things are learned per weight
(AutoRound, Cheng et al. 2023): an offset ``v ∈ [−½, ½]`` added before rounding, so
``q = clamp(round(W/s + z + v), 0, 2^bits − 1)``, and two factors that shrink the
group's maximum and minimum, from which ``s`` and ``z`` follow. ``s`` and ``z`` are
rounded to fp16 as they are stored, and rounding passes gradients straight through.

All weights are fitted together, end to end, with Adam (learning rate decaying linearly
to 0), minimising the KL divergence from the original model's next-token distributions
to the quantized model's. The text is the model's own: sequences it samples from BOS
(temperature 1, fixed seed), as data-free quantization-aware training does (LLM-QAT), so
no data beyond the checkpoint is needed; or ``text=`` given.

What it costs: the float32 model in memory, a forward pass of the original model and a
forward and backward pass of the quantized one per step. On 2 CPU cores that is minutes
for stories260k and far too long for 100M+ parameter models (use ``device="cuda"``).
Only the quantized weights change: every other tensor of the checkpoint is copied as it
is. Asymmetric only (``sym=False``).

Needs torch and transformers (``pip install hanpack[eval]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, final

import numpy as np

from .exceptions import InvalidArgumentError
from .quant import BITS, QuantizedTensor

__all__ = ["LearnedRounding", "learn_rounding"]

PathLike = Union[str, "os.PathLike[str]"]


@final
class LearnedRounding(Mapping[str, QuantizedTensor]):
    """Tensor name (``"model.layers.0.mlp.up_proj.weight"``) → its learned
    :class:`~hanpack.quant.QuantizedTensor` (method ``"learned"``); ``source`` records how
    they were fitted. What ``quantize_checkpoint(..., method="learned", learned=)`` takes.
    Picklable."""

    __slots__ = ("_tensors", "_source")
    _tensors: Dict[str, QuantizedTensor]
    _source: Dict[str, Any]

    def __init__(self, tensors: Mapping[str, QuantizedTensor], *, source: Mapping[str, Any]) -> None:
        for name, t in tensors.items():
            if not isinstance(t, QuantizedTensor):
                raise InvalidArgumentError(f"{name!r}: expected a QuantizedTensor, got {type(t).__name__}")
        object.__setattr__(self, "_tensors", dict(tensors))
        object.__setattr__(self, "_source", dict(source))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"LearnedRounding is immutable (cannot set {name!r})")

    @property
    def source(self) -> Dict[str, Any]:
        return dict(self._source)

    def __getitem__(self, name: str) -> QuantizedTensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"LearnedRounding({len(self)} tensors, source={self._source!r})"

    def __reduce__(self) -> Any:
        return (_rebuild, (self._tensors, self._source))


def _rebuild(tensors: Mapping[str, QuantizedTensor], source: Mapping[str, Any]) -> LearnedRounding:
    return LearnedRounding(tensors, source=source)


def learn_rounding(
    model: PathLike,
    *,
    bits: int = 4,
    group_size: Optional[int] = 128,
    include: Optional[Sequence[str]] = None,
    exclude: Optional[Sequence[str]] = None,
    steps: int = 1500,
    samples: int = 1024,
    seq_len: int = 256,
    batch_size: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    text: Optional[str] = None,
    device: str = "cpu",
    progress: Optional[bool] = None,
) -> LearnedRounding:
    """Fits the quantized form of every weight that ``quantize_checkpoint`` would
    quantize in the causal LM at ``model`` (same ``include``/``exclude``), as the module
    documentation describes: ``steps`` Adam steps of ``batch_size`` sequences drawn from
    ``samples`` sequences of ``seq_len`` tokens (sampled by the model from BOS with
    ``seed``, or the first chunks of ``text``). Deterministic for a given ``seed`` on one
    machine. ``progress``: tqdm bars on stderr (default: when stderr is a terminal)."""
    import torch

    from .calibrate import _chunks, _sampled
    from .checkpoint import DEFAULT_EXCLUDE, _choose, _progress, _source_shards, read_headers
    from .evaluate import _tokenizer, load_causal_lm

    if bits not in BITS:
        raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
    if group_size is not None and (not isinstance(group_size, int) or group_size <= 0 or group_size % 32):
        raise InvalidArgumentError(f"group_size must be a positive multiple of 32 or None (per-channel), not {group_size!r}")
    for arg, v, low in (("steps", steps, 1), ("samples", samples, 1), ("seq_len", seq_len, 2), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise InvalidArgumentError(f"{arg} must be an integer >= {low}, not {v!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < float("inf")):
        raise InvalidArgumentError(f"lr must be a positive number, not {lr!r}")

    model_dir = Path(model)
    shards, _ = _source_shards(model_dir)
    _, tensors = read_headers(shards)
    names = _choose(((n, d, s) for n, (_, d, s) in tensors.items()), include,
                    DEFAULT_EXCLUDE if exclude is None else tuple(exclude))
    lm = load_causal_lm(model_dir, dtype=torch.float32).to(device)
    lm.eval()
    linears = {f"{n}.weight": m for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
    not_linear = [n for n in names if n not in linears]
    if not_linear:
        raise InvalidArgumentError(f"{model_dir}: {not_linear[:3]} are not weights of the model's nn.Linear layers, "
                                   "so they cannot be learned; exclude them")
    if not names:
        raise InvalidArgumentError(f"{model_dir}: no weight to quantize")

    if text is None:
        bos = lm.config.bos_token_id
        if bos is None:
            raise InvalidArgumentError(f"{model_dir}: the model has no bos_token_id to sample from; pass text=")
        bar = _progress(samples, progress, "sampling", "seq")
        try:
            chunks = _sampled(lm, int(bos), samples=samples, seq_len=seq_len, seed=seed, batch_size=64, device=device, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        source: Dict[str, Any] = {"text": "sampled by the model from BOS", "temperature": 1.0}
    else:
        chunks = _chunks(_tokenizer(model_dir), text, samples=samples, seq_len=seq_len)
        chunks = [c for c in chunks if len(c) == len(chunks[0])]  # one batch shape: drop a short last chunk
        source = {"text": "given", "characters": len(text)}
    data = torch.tensor(chunks, dtype=torch.long, device=device)

    fits = {n: _GroupFit(linears[n].weight.detach(), bits, group_size) for n in names}
    params = [p for f in fits.values() for p in f.parameters()]
    for p in lm.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bar = _progress(steps, progress, "learning", "step")
    kl = torch.nn.functional.kl_div
    try:
        for step in range(steps):
            ids = data[torch.randint(0, data.shape[0], (batch_size,), generator=gen).to(device)]
            with torch.no_grad():
                teacher = lm(ids).logits.log_softmax(-1)
            weights = {n: f.weight() for n, f in fits.items()}
            student = torch.func.functional_call(lm, weights, (ids,)).logits.log_softmax(-1)
            loss = kl(student, teacher, log_target=True, reduction="batchmean") / ids.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:
                g["lr"] = lr * (1 - step / steps)
            opt.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"kl {loss.item():.4f}")
    finally:
        if bar is not None:
            bar.close()
    source.update(samples=len(chunks), seq_len=seq_len, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                  final_kl=float(loss.item()))
    return LearnedRounding({n: f.quantized(n) for n, f in fits.items()}, source=source)


class _GroupFit:
    """One weight's learnable rounding offsets and clip factors (see the module doc)."""

    def __init__(self, w: Any, bits: int, group_size: Optional[int]) -> None:
        import torch

        self.w = w.float()
        rows, cols = self.w.shape
        self.bits, self.qmax = bits, float((1 << bits) - 1)
        self.group = cols if group_size is None else min(group_size, cols)
        # Groups as `[rows, n_groups, group]` blocks: the whole ones, and a short last one.
        whole = cols // self.group * self.group
        self.parts: List[Tuple[int, int]] = [(0, whole)] + ([(whole, cols)] if whole < cols else [])
        # The weight never changes: its blocks and their extremes are computed once, not per step.
        self.blocks = []
        for a, b in self.parts:
            size = self.group if a == 0 else b - a
            w_ = self.w[:, a:b].reshape(rows, (b - a) // size, size)
            self.blocks.append((w_, w_.amax(-1), w_.amin(-1)))
        self.v = torch.zeros_like(self.w, requires_grad=True)
        n_groups = -(-cols // self.group)
        self.shrink_max = torch.ones(rows, n_groups, requires_grad=True)
        self.shrink_min = torch.ones(rows, n_groups, requires_grad=True)

    def parameters(self) -> List[Any]:
        return [self.v, self.shrink_max, self.shrink_min]

    def _codes(self, hard: bool) -> Iterator[Tuple[Any, Any, Any]]:
        """Per part: codes `q` (straight-through rounded unless `hard`), and `s`, `z`."""
        import torch

        def ste(x: Any, y: Any) -> Any:
            return y if hard else x + (y - x).detach()

        g0 = 0
        for (a, b), (w, w_max, w_min) in zip(self.parts, self.blocks):
            ng = w.shape[1]
            v = self.v[:, a:b].reshape(w.shape).clamp(-0.5, 0.5)
            hi = (w_max * self.shrink_max[:, g0:g0 + ng]).clamp(min=0)
            lo = (w_min * self.shrink_min[:, g0:g0 + ng]).clamp(max=0)
            # fp16's smallest subnormal: a zero group still gets a positive, storable scale.
            s = ((hi - lo) / self.qmax).clamp(min=2.0 ** -24)
            s = ste(s, s.half().float())
            z = ste(-lo / s, (-lo / s).half().float())
            q = (w / s[..., None] + z[..., None] + v)
            q = ste(q, torch.round(q)).clamp(0, self.qmax)
            yield q, s, z
            g0 += ng

    def weight(self) -> Any:
        import torch

        rows = self.w.shape[0]
        return torch.cat([((q - z[..., None]) * s[..., None]).reshape(rows, -1) for q, s, z in self._codes(False)], 1)

    def quantized(self, name: str) -> QuantizedTensor:
        import torch

        rows, cols = self.w.shape
        with torch.no_grad():
            parts = list(self._codes(True))
        codes = np.ascontiguousarray(torch.cat([q.reshape(rows, -1) for q, _, _ in parts], 1).to(torch.uint8).cpu().numpy())
        scales = torch.cat([s for _, s, _ in parts], 1).half().cpu().numpy()
        zeros = torch.cat([z for _, _, z in parts], 1).half().cpu().numpy()
        if not (np.isfinite(scales).all() and np.isfinite(zeros).all()):
            raise InvalidArgumentError(f"{name}: learning gave a scale or zero that fp16 cannot hold")
        return QuantizedTensor.from_codes(codes, scales=scales, zeros=zeros, bits=self.bits, group_size=self.group,
                                          method="learned")
