"""Per-input-channel activation statistics of a causal LM's linear layers: the
``importance`` that ``method="mse"`` weights its squared error with.

    >>> import hanpack  # doctest: +SKIP
    >>> from hanpack.calibrate import activation_importance
    >>> imp = activation_importance("SmolLM2-135M")  # the model writes its own text  # doctest: +SKIP
    >>> hanpack.quantize_checkpoint("SmolLM2-135M", "out", bits=3, method="mse", importance=imp)  # doctest: +SKIP

The statistic is the mean over tokens of each input's square, ``E[x_j²]`` (what
llama.cpp's ``llama-imatrix`` collects). With it, mse minimises
``Σ_j E[x_j²] (w_j − ŵ_j)²``, the expected squared error of the layer's output when its
inputs are uncorrelated, instead of the weight error itself.

Without ``text`` no data beyond the checkpoint is used: the model samples its own
calibration text from BOS (temperature 1, no top-k or top-p, ``seed`` fixed), as
data-free quantization-aware training does (LLM-QAT). With ``text`` the statistics come
from that text, cut into ``seq_len``-token chunks.

Needs torch and transformers (``pip install hanpack[eval]``). The model is loaded whole,
in float32 (or ``dtype``: ``torch.bfloat16`` halves the memory; the statistics are
still summed in float64), on ``device``; the quantizer that reads the statistics still
streams the checkpoint tensor by tensor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union, final

import numpy as np
import numpy.typing as npt

from . import _core
from ._atomic import write_bytes
from .exceptions import CheckpointFormatError, InvalidArgumentError

__all__ = ["Importance", "activation_importance"]

PathLike = Union[str, "os.PathLike[str]"]
_METADATA_KEY = "hanpack.importance"


@final
class Importance(Mapping[str, npt.NDArray[np.float32]]):
    """Tensor name (``"model.layers.0.mlp.up_proj.weight"``) → one non-negative float32
    weight per input feature. ``source`` says how the statistics were made. Saved as a
    safetensors file (``save``/``load``); picklable.

    >>> import numpy as np
    >>> from hanpack.calibrate import Importance
    >>> imp = Importance({"fc.weight": np.ones(4)}, source={"made": "by hand"})
    >>> imp["fc.weight"].dtype, len(imp), imp.source
    (dtype('float32'), 1, {'made': 'by hand'})
    """

    __slots__ = ("_arrays", "_source")

    def __init__(self, arrays: Mapping[str, npt.ArrayLike], *, source: Optional[Mapping[str, Any]] = None) -> None:
        out: Dict[str, npt.NDArray[np.float32]] = {}
        for name, a in arrays.items():
            arr = np.array(a, dtype=np.float32)  # a copy, made read-only below
            if arr.ndim != 1:
                raise InvalidArgumentError(f"importance of {name!r} must be 1-D (one value per input feature), got shape {arr.shape}")
            if not np.isfinite(arr).all() or (arr < 0).any():
                raise InvalidArgumentError(f"importance of {name!r} must be finite and non-negative")
            arr.flags.writeable = False
            out[name] = arr
        self._arrays = out
        self._source: Dict[str, Any] = dict(source or {})

    @property
    def source(self) -> Dict[str, Any]:
        """How the statistics were made (JSON-able; stored in the file's metadata)."""
        return dict(self._source)

    def __getitem__(self, name: str) -> npt.NDArray[np.float32]:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        return f"Importance({len(self)} tensors, source={self._source!r})"

    def __reduce__(self) -> Any:
        return (_rebuild, (self._arrays, self._source))

    def save(self, path: PathLike) -> None:
        """Writes a safetensors file (F32 tensors; ``source`` under the metadata key
        ``hanpack.importance``), atomically. Needs the ``safetensors`` package."""
        try:
            from safetensors.numpy import save
        except ImportError:
            raise ImportError("Importance.save needs the safetensors package (pip install safetensors)") from None
        if os.path.lexists(path):
            raise FileExistsError(17, "the destination already exists (hanpack never overwrites)", str(path))
        write_bytes(path, save(dict(self._arrays), metadata={_METADATA_KEY: json.dumps(self._source)}))

    @classmethod
    def load(cls, path: PathLike) -> "Importance":
        """Reads a file written by :meth:`save` (or any safetensors file of 1-D float
        tensors, e.g. one made by other tools)."""
        reader = _core.SafetensorsReader(path)
        arrays: Dict[str, npt.NDArray[np.float32]] = {}
        for name, dtype, shape in reader.tensors():
            if dtype != "F32" or len(shape) != 1:
                raise CheckpointFormatError(f"{path}: tensor {name!r} is {dtype} {shape}; an importance file holds 1-D F32 tensors")
            arrays[name] = np.frombuffer(reader.read(name)[2], dtype="<f4")
        try:
            source = json.loads(reader.metadata().get(_METADATA_KEY, "{}"))
        except ValueError:
            raise CheckpointFormatError(f"{path}: metadata {_METADATA_KEY!r} is not JSON") from None
        return cls(arrays, source=source if isinstance(source, dict) else {})


def _rebuild(arrays: Mapping[str, npt.ArrayLike], source: Mapping[str, Any]) -> Importance:
    return Importance(arrays, source=source)


def activation_importance(
    model: PathLike,
    *,
    text: Optional[str] = None,
    samples: int = 32,
    seq_len: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: Any = None,
    progress: Optional[bool] = None,
) -> Importance:
    """``E[x²]`` of every input feature of every ``nn.Linear`` in the causal LM at
    ``model`` (a checkpoint directory), over ``samples`` sequences of ``seq_len`` tokens:
    sampled by the model itself from BOS when ``text`` is None, else the first chunks of
    ``text`` (each starting with BOS when the tokenizer has one). Keys are the weights'
    tensor names, as ``quantize_checkpoint`` sees them. ``dtype``: the torch dtype the
    model runs in (default float32). ``progress``: a tqdm bar on stderr (default: when
    stderr is a terminal)."""
    import torch

    from .checkpoint import _progress
    from .evaluate import _tokenizer, load_causal_lm

    for arg, v, low in (("samples", samples, 1), ("seq_len", seq_len, 2), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or v < low:
            raise InvalidArgumentError(f"{arg} must be an integer >= {low}, not {v!r}")
    model_dir = Path(model)
    lm = load_causal_lm(model_dir, dtype=dtype).to(device)
    if text is None:
        bos = lm.config.bos_token_id
        if bos is None:
            bos = getattr(getattr(lm, "generation_config", None), "bos_token_id", None)
        if bos is None:
            raise InvalidArgumentError(f"{model_dir}: the model has no bos_token_id to sample from; pass text=")
        source: Dict[str, Any] = {"text": "sampled by the model from BOS", "temperature": 1.0, "seed": seed}
        bar = _progress(2 * samples, progress, "calibrating", "seq")  # sampling, then the statistics
    else:
        chunks = _chunks(_tokenizer(model_dir), text, samples=samples, seq_len=seq_len)
        source = {"text": "given", "characters": len(text)}
        bar = _progress(len(chunks), progress, "calibrating", "seq")

    linears = {name: m for name, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
    sums = {name: torch.zeros(m.in_features, dtype=torch.float64, device=device) for name, m in linears.items()}
    counts = dict.fromkeys(linears, 0)

    def collector(name: str) -> Any:
        def hook(module: Any, args: Any) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] += (x * x).sum(0)
            counts[name] += x.shape[0]
        return hook

    handles = []
    try:
        if text is None:
            chunks = _sampled(lm, int(bos), samples=samples, seq_len=seq_len, seed=seed, batch_size=batch_size,
                              device=device, bar=bar)
        handles = [m.register_forward_pre_hook(collector(name)) for name, m in linears.items()]
        with torch.inference_mode():
            for batch in _batches(chunks, batch_size):
                lm(torch.tensor(batch, device=device))
                if bar is not None:
                    bar.update(len(batch))
    finally:
        for h in handles:
            h.remove()
        if bar is not None:
            bar.close()
    source.update(samples=len(chunks), seq_len=seq_len, tokens=sum(len(c) for c in chunks), dtype=str(lm.dtype).replace("torch.", ""))
    arrays = {f"{name}.weight": (sums[name] / max(counts[name], 1)).float().cpu().numpy() for name in linears if counts[name]}
    return Importance(arrays, source=source)


def _sampled(lm: Any, bos: int, *, samples: int, seq_len: int, seed: int, batch_size: int, device: str,
             bar: Any = None) -> List[List[int]]:
    import torch

    out: List[List[int]] = []
    with torch.random.fork_rng(devices=[]), torch.inference_mode():  # leaves the caller's RNG as it was
        torch.manual_seed(seed)
        while len(out) < samples:
            n = min(batch_size, samples - len(out))
            start = torch.full((n, 1), bos, dtype=torch.long, device=device)
            ids = lm.generate(
                start, attention_mask=torch.ones_like(start), do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                max_new_tokens=seq_len - 1, min_new_tokens=seq_len - 1, pad_token_id=bos,
            )
            out.extend(ids.tolist())
            if bar is not None:
                bar.update(n)
    return out


def _chunks(tokenizer: Any, text: str, *, samples: int, seq_len: int) -> List[List[int]]:
    with_bos = tokenizer.bos_id >= 0
    body = seq_len - 1 if with_bos else seq_len
    # Only as much of the text as the chunks need is encoded: it is cut after a newline
    # every ~1 MB, and encoding stops once there are enough tokens.
    ids: List[int] = []
    start = 0
    while start < len(text) and len(ids) < samples * body:
        end = text.find("\n", start + (1 << 20))
        end = len(text) if end < 0 else end + 1
        ids += tokenizer.encode(text[start:end])
        start = end
    chunks = [([tokenizer.bos_id] if with_bos else []) + ids[i : i + body] for i in range(0, len(ids), body)][:samples]
    if not chunks or len(chunks[0]) < 2:
        raise InvalidArgumentError("the text has too few tokens to calibrate on (at least 2 per chunk)")
    return chunks


def _batches(chunks: List[List[int]], size: int) -> Iterator[List[List[int]]]:
    """Batches of equally long chunks (only the text's last chunk can be shorter)."""
    by_len: Dict[int, List[List[int]]] = {}
    for c in chunks:
        by_len.setdefault(len(c), []).append(c)
    for group in by_len.values():
        for i in range(0, len(group), size):
            yield group[i : i + size]
