"""Quantizing whole safetensors checkpoints, tensor by tensor, and reading them back.

    >>> import hanpack  # doctest: +SKIP
    >>> report = hanpack.quantize_checkpoint("llama-7b", "llama-7b-int4", bits=4,
    ...                                      group_size=128, method="hqq")  # doctest: +SKIP

What is quantized: every 2-D F32/F16/BF16 tensor whose name ends in ``.weight``, except
names matching ``exclude`` (default :data:`DEFAULT_EXCLUDE`: embeddings, ``lm_head``,
norms). ``include`` restricts the choice to names matching it. A pattern with ``*``, ``?``
or ``[`` is a glob matched against the whole tensor name (``fnmatch``); any other
pattern matches names that contain it, ignoring case (``"norm"`` matches
``input_layernorm`` and ``LayerNorm``). A tensor that ``include`` names but that cannot
be quantized (not 2-D, an integer dtype) is an error naming it.

``in_features`` need not be a multiple of ``group_size``: the last group of each row is
shorter and has its own scale and zero (nothing is padded). ``group_size`` must be a
multiple of 32, or ``None`` for per-channel.

Output (a new directory; written to a temporary sibling and renamed when complete, so an
error or an interrupt leaves nothing at ``dst``; the source is only read):

* one shard per source shard, same file names, in the layout of
  ``hanpack_core::quant::checkpoint`` (``P.qweight`` uint8, ``P.scales`` and ``P.zeros``
  fp16, the shapes under ``__metadata__["hanpack.quantized"]``); other tensors unchanged;
* ``model.safetensors.index.json`` when the source is sharded;
* ``config.json`` (when the source has one) with a ``quantization_config``;
* ``quantization_report.json``: per-tensor relative error, SNR and largest error;
* the tokenizer and generation files of the source, copied.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._atomic import new_directory
from .exceptions import CheckpointFormatError, InvalidArgumentError
from .quant import BITS, METHODS, QuantizedTensor

__all__ = [
    "quantize_checkpoint",
    "load_checkpoint",
    "CheckpointReport",
    "TensorReport",
    "DEFAULT_EXCLUDE",
    "CHECKPOINT_METHODS",
    "PACKING",
    "READABLE_PACKINGS",
    "check_packing",
    "unreadable_packing",
    "name_matches",
    "read_headers",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Name patterns left unquantized unless ``exclude`` says otherwise.
DEFAULT_EXCLUDE: Tuple[str, ...] = ("embed", "lm_head", "norm", "wte", "wpe")

#: The methods of :data:`hanpack.quant.METHODS` and ``"learned"``
#: (:mod:`hanpack.learned`), whose tensors are fitted with torch and then given.
CHECKPOINT_METHODS: Tuple[str, ...] = METHODS + ("learned",)
#: The packed layouts' name, written with every quantized tensor and to
#: ``quantization_config`` (see ``hanpack.quant``). v2 changed int3 only (eight values
#: per three bytes instead of bit planes), so v1 checkpoints of the other widths read as v2.
PACKING: str = _core.PACKING
#: Earlier layout names that this version still reads, with the widths whose layout
#: has not changed since.
READABLE_PACKINGS: Dict[str, Tuple[int, ...]] = {"hanpack-v1": (2, 4, 8)}
INDEX = "model.safetensors.index.json"
REPORT = "quantization_report.json"
METADATA_KEY = "hanpack.quantized"


def unreadable_packing(bits: Optional[int], packing: Optional[str]) -> Optional[str]:
    """Why int``bits`` data written in ``packing`` (``None``: before the name was
    recorded, i.e. hanpack-v1) cannot be read by this version; ``None`` when it can."""
    packing = packing or "hanpack-v1"
    if packing == PACKING or bits in READABLE_PACKINGS.get(packing, ()):
        return None
    if packing in READABLE_PACKINGS:
        return (f"int{bits} in packing {packing!r}, a layout this hanpack no longer reads "
                f"({PACKING!r} changed it); quantize the original checkpoint again")
    return f"packing {packing!r} is not one this hanpack reads ({PACKING!r}); upgrade hanpack"


def check_packing(name: str, bits: Optional[int], packing: Optional[str]) -> None:
    """Raises :class:`CheckpointFormatError` naming tensor ``name`` unless it is readable
    (see :func:`unreadable_packing`)."""
    why = unreadable_packing(bits, packing)
    if why is not None:
        raise CheckpointFormatError(f"tensor {name!r}: {why}")

_QUANTIZABLE = ("F32", "F16", "BF16")
# Files a loader of the quantized model needs besides weights and config.json.
_SIDE_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.tiktoken",
    "generation_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "LICENSE*",
    "README*",
)


@dataclass(frozen=True)
class TensorReport:
    """One source tensor: quantized (with its error) or copied (error fields ``None``)."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    quantized: bool
    bits_per_weight: Optional[float] = None
    relative_error: Optional[float] = None
    #: ``None`` when the quantized weight is exact (infinite SNR).
    snr_db: Optional[float] = None
    max_abs_error: Optional[float] = None


@dataclass(frozen=True)
class CheckpointReport:
    """What :func:`quantize_checkpoint` did."""

    dst: Path
    tensors: Tuple[TensorReport, ...]
    seconds: float
    src_bytes: int
    dst_bytes: int

    @property
    def quantized(self) -> Tuple[TensorReport, ...]:
        return tuple(t for t in self.tensors if t.quantized)

    @property
    def weights_per_second(self) -> float:
        n = sum(int(np.prod(t.shape)) for t in self.quantized)
        return n / self.seconds if self.seconds > 0 else float("inf")


def name_matches(name: str, pattern: str) -> bool:
    """Whether tensor or module ``name`` matches an ``include``/``exclude`` pattern (see the
    module documentation: a glob when it has ``*?[``, else a case-insensitive substring)."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern.lower() in name.lower()


def _source_shards(src: Path) -> Tuple[List[Path], bool]:
    """The shard files of ``src`` (a directory or one ``.safetensors`` file), and whether
    the source has an index."""
    if src.is_file():
        return [src], False
    if not src.is_dir():
        raise FileNotFoundError(2, "no such checkpoint directory or file", str(src))
    index = src / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointFormatError(f"{index}: not a safetensors index ({e})") from None
        for f in files:
            if not isinstance(f, str) or Path(f).name != f:
                raise CheckpointFormatError(f"{index}: shard name {f!r} is not a file name in the directory")
        return [src / f for f in files], True
    if (src / "model.safetensors").is_file():
        return [src / "model.safetensors"], False
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(2, "no .safetensors files in the checkpoint directory", str(src))
    return shards, len(shards) > 1


def _choose(
    tensors: Iterable[Tuple[str, str, List[int]]], include: Optional[Sequence[str]], exclude: Sequence[str]
) -> List[str]:
    chosen = []
    for name, dtype, shape in tensors:
        if any(name_matches(name, p) for p in exclude):
            continue
        if include is not None:
            if any(name_matches(name, p) for p in include):
                chosen.append(name)  # the core refuses what cannot be quantized, by name
        elif name.endswith(".weight") and len(shape) == 2 and dtype in _QUANTIZABLE:
            chosen.append(name)
    return chosen


def _progress(total: int, enabled: Optional[bool], desc: str = "quantizing", unit: str = "w") -> Any:
    show = sys.stderr.isatty() if enabled is None else enabled
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]
    except ImportError:  # tqdm is a dependency; a broken install just loses the bar
        return None
    return tqdm(total=total, unit=unit, unit_scale=unit == "w", desc=desc, disable=not show)


def quantize_checkpoint(
    src: PathLike,
    dst: PathLike,
    *,
    bits: int = 4,
    group_size: Optional[int] = 128,
    method: str = "hqq",
    sym: bool = False,
    include: Optional[Sequence[str]] = None,
    exclude: Optional[Sequence[str]] = None,
    num_threads: Optional[int] = None,
    progress: Optional[bool] = None,
    importance: Union[None, PathLike, Mapping[str, npt.ArrayLike]] = None,
    learned: Optional[Mapping[str, QuantizedTensor]] = None,
) -> CheckpointReport:
    """Quantizes the safetensors checkpoint ``src`` (a directory, sharded or not, or one
    ``.safetensors`` file) into the new directory ``dst``. See the module documentation
    for what is quantized and written. ``exclude`` replaces :data:`DEFAULT_EXCLUDE`
    (pass ``DEFAULT_EXCLUDE + ("...",)`` to extend it). ``progress``: a tqdm bar on
    stderr (default: when stderr is a terminal). ``importance`` (``method="mse"`` only):
    per-input-feature error weights by tensor name, e.g. from
    :func:`hanpack.calibrate.activation_importance`, or the path of a file it saved; every
    quantized tensor needs one, other entries are ignored. ``method="learned"`` writes
    the tensors of ``learned`` (from :func:`hanpack.learned.learn_rounding`; when None it
    is called here with its defaults, which needs torch and transformers).

    >>> import hanpack, tempfile, os  # doctest: +SKIP
    >>> r = hanpack.quantize_checkpoint("stories260k", "out", bits=4, group_size=64)  # doctest: +SKIP
    >>> len(r.quantized), r.quantized[0].relative_error < 0.2  # doctest: +SKIP
    (35, True)
    """
    if bits not in BITS:
        raise InvalidArgumentError(f"bits must be one of {BITS}, not {bits!r}")
    if method not in CHECKPOINT_METHODS:
        raise InvalidArgumentError(f"method must be one of {CHECKPOINT_METHODS}, not {method!r}")
    if learned is not None and method != "learned":
        raise InvalidArgumentError(f"learned tensors are only written by method='learned', not {method!r}")
    if method == "learned" and sym:
        raise InvalidArgumentError("method='learned' is asymmetric only (sym=False)")
    if group_size is not None and (not isinstance(group_size, int) or group_size <= 0 or group_size % 32):
        raise InvalidArgumentError(f"group_size must be a positive multiple of 32 or None (per-channel), not {group_size!r}")
    src, dst = Path(src), Path(dst)
    if os.path.lexists(dst):
        raise FileExistsError(17, "the destination already exists (hanpack never overwrites)", str(dst))
    shards, indexed = _source_shards(src)
    exclude = DEFAULT_EXCLUDE if exclude is None else tuple(exclude)
    readers = [_core.SafetensorsReader(s) for s in shards]
    plans = [_choose(r.tensors(), include, exclude) for r in readers]
    if include is not None and not any(plans):
        raise InvalidArgumentError(f"include={list(include)!r} matches no tensor of {src}")
    weights, importance_source = _importance(importance, method, [n for names in plans for n in names])
    if method == "learned" and learned is None:
        from .learned import learn_rounding

        learned = learn_rounding(src, bits=bits, group_size=group_size, include=include, exclude=exclude, progress=progress)
    given = _given(learned, [n for names in plans for n in names], bits=bits, group_size=group_size)
    total = sum(int(np.prod(shape)) for r in readers for _, _, shape in r.tensors())
    src_dir = src if src.is_dir() else None

    t0 = time.perf_counter()
    reports: List[TensorReport] = []
    bar = _progress(total, progress)
    try:
        with new_directory(dst) as tmp:
            extra = {"hanpack.version": _core.__version__}
            for shard, names in zip(shards, plans):
                if bar is not None:
                    bar.set_postfix_str(shard.name)
                job = _core.ShardQuantizer(shard, tmp / shard.name, names, bits, group_size, sym, method, extra, num_threads,
                                           {n: weights[n] for n in names} if weights else None,
                                           {n: given[n] for n in names} if given else None)
                while (d := job.step()) is not None:
                    reports.append(_tensor_report(d))
                    if bar is not None:
                        bar.update(d["n_elements"])
                job.finish()
            seconds = time.perf_counter() - t0
            if indexed:
                _write_index(tmp, [tmp / s.name for s in shards])
            spec: Dict[str, Any] = dict(bits=bits, group_size=group_size, sym=sym, method=method)
            if importance_source is not None:
                spec["importance"] = importance_source
            if learned is not None:
                spec["learned"] = getattr(learned, "source", None) or {"text": "given"}
            if src_dir is not None:
                _write_side_files(src_dir, tmp, reports, **spec)
            report = CheckpointReport(
                dst=dst,
                tensors=tuple(reports),
                seconds=seconds,
                src_bytes=sum(s.stat().st_size for s in shards),
                dst_bytes=sum((tmp / s.name).stat().st_size for s in shards),
            )
            _write_json(tmp / REPORT, _report_json(report, **spec))
    finally:
        if bar is not None:
            bar.close()
    return report


def _importance(
    importance: Union[None, PathLike, Mapping[str, npt.ArrayLike]], method: str, quantized: List[str]
) -> Tuple[Optional[Dict[str, List[float]]], Optional[Dict[str, Any]]]:
    """The error weights of the tensors to quantize, and how they were made."""
    if importance is None:
        return None, None
    if method != "mse":
        raise InvalidArgumentError(f"importance is only used by method='mse', not {method!r}")
    from .calibrate import Importance

    imp = importance if isinstance(importance, Importance) else (
        Importance(importance) if isinstance(importance, Mapping) else Importance.load(importance))
    missing = [n for n in quantized if n not in imp]
    if missing:
        raise InvalidArgumentError(f"the importance has no entry for {len(missing)} tensor(s) to quantize, e.g. {missing[:3]}; "
                                   "calibrate this model, or exclude them")
    return {n: imp[n].tolist() for n in quantized}, imp.source or {"text": "given"}


def _given(
    learned: Optional[Mapping[str, QuantizedTensor]], quantized: List[str], *, bits: int, group_size: Optional[int]
) -> Optional[Dict[str, Tuple[Any, Any, Any]]]:
    """The learned tensors' arrays as the core takes them, each checked to be what
    ``bits`` and ``group_size`` make of that tensor."""
    if learned is None:
        return None
    missing = [n for n in quantized if n not in learned]
    if missing:
        raise InvalidArgumentError(f"learned has no tensor for {len(missing)} weight(s) to quantize, e.g. {missing[:3]}")
    out = {}
    for n in quantized:
        t = learned[n]
        if not isinstance(t, QuantizedTensor):
            raise InvalidArgumentError(f"learned[{n!r}] must be a QuantizedTensor, not {type(t).__name__}")
        want_group = t.shape[1] if group_size is None else min(group_size, t.shape[1])
        if t.bits != bits or t.group_size != want_group or t.sym:
            raise InvalidArgumentError(f"learned[{n!r}] is {t!r}, not asymmetric int{bits} in groups of {want_group}")
        out[n] = (t.packed.ravel(), t.scales.view(np.uint16).ravel(), t.zeros.view(np.uint16).ravel())
    return out


def _tensor_report(d: Dict[str, Any]) -> TensorReport:
    base = dict(name=d["name"], dtype=d["dtype"], shape=tuple(d["shape"]))
    if "bits" not in d:
        return TensorReport(**base, quantized=False)
    snr = float(d["snr_db"])
    return TensorReport(
        **base,
        quantized=True,
        bits_per_weight=float(d["bits_per_weight"]),
        relative_error=float(d["relative_error"]),
        snr_db=snr if np.isfinite(snr) else None,
        max_abs_error=float(d["max_abs_error"]),
    )


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "x", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def _write_index(tmp: Path, shards: List[Path]) -> None:
    weight_map: Dict[str, str] = {}
    total = 0
    for s in shards:
        for name, dtype, shape in _core.SafetensorsReader(s).tensors():
            weight_map[name] = s.name
            total += int(np.prod(shape, dtype=np.int64)) * _BITS[dtype] // 8
    _write_json(tmp / INDEX, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def _quantization_config(reports: List[TensorReport], *, bits: int, group_size: Optional[int], sym: bool, method: str,
                         importance: Optional[Dict[str, Any]] = None, learned: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    skipped = [t.name for t in reports if not t.quantized and len(t.shape) == 2 and t.dtype in _QUANTIZABLE]
    extra = {k: v for k, v in (("importance", importance), ("learned", learned)) if v is not None}
    return {
        "quant_method": "hanpack",
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "method": method,
        "packing": PACKING,
        "modules_to_not_convert": sorted({n[: -len(".weight")] if n.endswith(".weight") else n for n in skipped}),
        "version": _core.__version__,
        **extra,
    }


def _write_side_files(src: Path, tmp: Path, reports: List[TensorReport], **spec: Any) -> None:
    for f in sorted(src.iterdir()):
        if f.is_file() and any(fnmatch.fnmatchcase(f.name, p) for p in _SIDE_FILES):
            shutil.copyfile(f, tmp / f.name)  # contents only: a read-only source stays read-only, its copy need not
    config = src / "config.json"
    if config.is_file():
        try:
            cfg = json.loads(config.read_text(encoding="utf-8"))
        except ValueError as e:
            raise CheckpointFormatError(f"{config}: not JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise CheckpointFormatError(f"{config}: not a JSON object")
        cfg["quantization_config"] = _quantization_config(reports, **spec)
        _write_json(tmp / "config.json", cfg)


def _report_json(r: CheckpointReport, **spec: Any) -> Dict[str, Any]:
    return {
        "spec": spec,
        "seconds": round(r.seconds, 3),
        "src_bytes": r.src_bytes,
        "dst_bytes": r.dst_bytes,
        "tensors": [{k: v for k, v in asdict(t).items() if v is not None} for t in r.tensors],
    }


# Bits per element of every safetensors dtype (FP8/FP6/FP4 included, which numpy lacks).
_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
_NUMPY = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def _array(dtype: str, shape: List[int], data: bytes, name: str) -> npt.NDArray[Any]:
    if dtype not in _NUMPY:
        raise CheckpointFormatError(f"tensor {name!r}: dtype {dtype} has no numpy equivalent")
    a = np.frombuffer(data, dtype=_NUMPY[dtype]).reshape(shape)
    if dtype == "BF16":
        try:
            import ml_dtypes
        except ImportError:  # exact: a bf16 value is the top half of its float32
            return (a.astype(np.uint32) << 16).view(np.float32)
        a = a.view(ml_dtypes.bfloat16)
    return a


def read_headers(shards: Sequence[PathLike]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Tuple[Any, str, List[int]]]]:
    """The shards' ``__metadata__["hanpack.quantized"]`` merged (prefix → shape, bits,
    group_size, sym, method), and every tensor's reader, dtype and shape (headers only)."""
    described: Dict[str, Dict[str, Any]] = {}
    where: Dict[str, Tuple[Any, str, List[int]]] = {}
    for shard in shards:
        r = _core.SafetensorsReader(shard)
        raw = r.metadata().get(METADATA_KEY)
        try:
            described.update(json.loads(raw) if raw else {})
        except ValueError as e:
            raise CheckpointFormatError(f"{shard}: __metadata__[{METADATA_KEY!r}] is not JSON ({e})") from None
        for name, dtype, shape in r.tensors():
            where[name] = (r, dtype, list(shape))
    return described, where


def load_checkpoint(path: PathLike) -> Dict[str, Union[QuantizedTensor, npt.NDArray[Any]]]:
    """Every tensor of a checkpoint (directory or file), keyed by its source name:
    a :class:`~hanpack.quant.QuantizedTensor` for each weight that
    :func:`quantize_checkpoint` quantized (``P.weight``), a read-only numpy array for the
    rest (bf16 as ``ml_dtypes.bfloat16`` when installed, else widened exactly to float32).

    >>> sd = hanpack.checkpoint.load_checkpoint("out")  # doctest: +SKIP
    >>> sd["model.layers.0.mlp.up_proj.weight"].dequantize().shape  # doctest: +SKIP
    (172, 64)
    """
    shards, _ = _source_shards(Path(path))
    # A prefix's three arrays may sit in different shards (transformers' save_pretrained
    # splits by size, tensor by tensor), so descriptions and tensors are gathered first.
    described, where = read_headers(shards)
    out: Dict[str, Union[QuantizedTensor, npt.NDArray[Any]]] = {}
    parts = set()
    for prefix, d in described.items():
        names = [f"{prefix}.{k}" for k in ("qweight", "scales", "zeros")]
        check_packing(f"{prefix}.weight", d.get("bits"), d.get("packing"))
        try:
            arrays = [_array(*where[n][0].read(n), n) for n in names]
            out[f"{prefix}.weight"] = QuantizedTensor(
                packed=arrays[0], scales=arrays[1].view(np.float16), zeros=arrays[2].view(np.float16),
                shape=tuple(d["shape"]), bits=d["bits"], group_size=d["group_size"], sym=d["sym"], method=d["method"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointFormatError(f"{path}: quantized tensor {prefix!r} does not match its description ({e!r})") from None
        parts.update(names)
    for name, (r, dtype, shape) in where.items():
        if name not in parts:
            out[name] = _array(dtype, shape, r.read(name)[2], name)
    return out
