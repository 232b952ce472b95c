"""``quant_method: "hanpack"`` in transformers: :class:`HanpackConfig` and the
``HfQuantizer`` that loads hanpack-quantized checkpoints into :class:`hanpack.nn.QuantLinear`.

    >>> import hanpack.hf                                                        # doctest: +SKIP
    >>> from transformers import AutoModelForCausalLM                           # doctest: +SKIP
    >>> m = AutoModelForCausalLM.from_pretrained("llama-int4")                  # doctest: +SKIP
    >>> cfg = hanpack.hf.HanpackConfig(bits=4, group_size=128, method="hqq")     # doctest: +SKIP
    >>> m = AutoModelForCausalLM.from_pretrained("llama", quantization_config=cfg)  # doctest: +SKIP

Both are registered on ``import hanpack.hf`` (transformers has no ``auto_map`` for
quantizers: without the import it warns about an unknown quantization type and cannot load
the packed tensors).

**Pre-quantized** (a ``config.json`` whose ``quantization_config`` says ``"hanpack"``, as
``hanpack quantize`` and ``save_pretrained`` write): before the weights load, every
``nn.Linear`` whose weight the checkpoint holds packed (the shards'
``__metadata__["hanpack.quantized"]`` lists them, with their bits and group size) becomes
a ``QuantLinear`` on the meta device, and the loader fills its ``qweight``, ``scales``
and ``zeros`` buffers from the file as they are: the dequantized matrix is never made. A
packed tensor whose module is not an ``nn.Linear`` is an error naming it.

**Quantize on load** (``quantization_config=HanpackConfig(...)`` with a float checkpoint):
the same swap, with each weight quantized by hanpack's Rust quantizer as the loader reads
it, so peak memory holds one float weight at a time beside the packed model. The Linear
layers left in float are ``modules_to_not_convert`` when given, else those that
``hanpack quantize`` leaves by default (names matching
:data:`hanpack.checkpoint.DEFAULT_EXCLUDE`) and transformers' usual ones (the output
embedding, tied weights). ``save_pretrained`` writes the packed buffers with the same
metadata, so the folder loads again here and in ``hanpack eval-ppl``.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from transformers.core_model_loading import ConversionOps
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.quantizers_utils import get_module_from_name, should_convert_module
from transformers.utils.quantization_config import QuantizationConfigMixin

from .. import _core
from ..checkpoint import (CHECKPOINT_METHODS, DEFAULT_EXCLUDE, METADATA_KEY, PACKING, check_packing, name_matches,
                          read_headers, unreadable_packing)
from ..exceptions import CheckpointFormatError, InvalidArgumentError
from ..nn import QuantLinear, quantized_buffers
from ..quant import BITS, quantize

__all__ = ["HanpackConfig", "HanpackHfQuantizer", "QUANT_METHOD"]

QUANT_METHOD = "hanpack"


class HanpackConfig(QuantizationConfigMixin):
    """The ``quantization_config`` of a hanpack-quantized model (the keys ``hanpack
    quantize`` writes into ``config.json``).

    ``bits``: 2, 3, 4 or 8. ``group_size``: a multiple of 32, or ``None`` for
    per-channel. ``method``: ``"rtn"``, ``"mse"`` or ``"hqq"`` (used when quantizing on
    load). ``modules_to_not_convert``: Linear module names (or transformers' patterns)
    kept in float; ``None`` for the defaults described in the module documentation.
    ``act_bits``: ``None``, or 8 to quantize activations to int8 on the fly on CPU (see
    :class:`hanpack.nn.QuantLinear`); saved with the model like the other keys.
    ``importance``: how ``quantize_checkpoint`` made mse's error weights, when it had
    them (a record only: quantizing on load does not calibrate). ``method="learned"``
    (and its record ``learned``) loads checkpoints that ``quantize_checkpoint`` wrote
    with :mod:`hanpack.learned`; quantizing on load cannot learn and refuses it.

    >>> HanpackConfig(bits=3, group_size=64).to_dict()["quant_method"]  # doctest: +SKIP
    'hanpack'
    """

    def __init__(
        self,
        bits: int = 4,
        group_size: Optional[int] = 128,
        method: str = "hqq",
        sym: bool = False,
        modules_to_not_convert: Optional[Sequence[str]] = None,
        packing: str = PACKING,
        version: Optional[str] = None,
        act_bits: Optional[int] = None,
        importance: Optional[Dict[str, Any]] = None,
        learned: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("quant_method", None)
        if kwargs:
            warnings.warn(f"HanpackConfig ignores unknown keys {sorted(kwargs)}", stacklevel=2)
        if bits not in BITS:
            raise InvalidArgumentError(f"HanpackConfig: bits must be one of {BITS}, not {bits!r}")
        if method not in CHECKPOINT_METHODS:
            raise InvalidArgumentError(f"HanpackConfig: method must be one of {CHECKPOINT_METHODS}, not {method!r}")
        if group_size is not None and (not isinstance(group_size, int) or group_size <= 0 or group_size % 32):
            raise InvalidArgumentError(
                f"HanpackConfig: group_size must be a positive multiple of 32 or None (per-channel), not {group_size!r}"
            )
        if act_bits not in (None, 8):
            raise InvalidArgumentError(f"HanpackConfig: act_bits must be None or 8, not {act_bits!r}")
        why = unreadable_packing(bits, packing)
        if why is not None:
            raise InvalidArgumentError(f"HanpackConfig: {why}")
        packing = PACKING  # an older name whose layout for these bits is unchanged reads as the current one
        self.quant_method = QUANT_METHOD
        self.bits = int(bits)
        self.group_size = group_size
        self.method = method
        self.sym = bool(sym)
        self.modules_to_not_convert = None if modules_to_not_convert is None else list(modules_to_not_convert)
        self.packing = packing
        self.version = version or _core.__version__
        self.act_bits = act_bits
        self.importance = importance
        self.learned = learned


def _described(checkpoint_files: Optional[Sequence[str]]) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Tuple[str, List[int]]]]:
    """What the shards' headers describe as quantized, and every tensor's dtype and shape."""
    files = list(checkpoint_files or ())
    for f in files:
        if not str(f).endswith(".safetensors"):
            raise CheckpointFormatError(f"{f}: a hanpack-quantized checkpoint is safetensors, not this file")
    described, where = read_headers(files)
    return described, {name: (dtype, shape) for name, (_, dtype, shape) in where.items()}


def _check_packed(prefix: str, q: QuantLinear, tensors: Dict[str, Tuple[str, List[int]]]) -> None:
    """The checkpoint's three arrays for ``prefix`` exist with the dtypes and shapes ``q``
    expects; checked before loading, since transformers re-initialises a missing or
    mis-shaped tensor with a warning, which for packed weights would be silent garbage."""
    for buf, dtype in (("qweight", "U8"), ("scales", "F16"), ("zeros", "F16")):
        name, want = f"{prefix}.{buf}", list(getattr(q, buf).shape)
        if name not in tensors:
            raise CheckpointFormatError(f"the checkpoint describes {prefix!r} as quantized but has no tensor {name!r}")
        if tensors[name] != (dtype, want):
            raise CheckpointFormatError(
                f"{name}: the checkpoint has {tensors[name][0]} {tensors[name][1]}, a {q.bits}-bit group-{q.group_size} "
                f"layer of {q.out_features}x{q.in_features} needs {dtype} {want}"
            )


class HanpackQuantize(ConversionOps):
    """Quantize-on-load: one float ``P.weight`` in, ``P.qweight``/``P.scales``/``P.zeros`` out."""

    def __init__(self, hf_quantizer: "HanpackHfQuantizer") -> None:
        self.hf_quantizer = hf_quantizer

    def convert(self, input_dict: Dict[str, Any], model: Any = None, full_layer_name: Optional[str] = None,
                missing_keys: Any = None, **kwargs: Any) -> Dict[str, torch.Tensor]:
        key, value = next(iter(input_dict.items()))
        value = value[0] if isinstance(value, list) else value
        name = full_layer_name or key
        module, _ = get_module_from_name(model, name)
        cfg = self.hf_quantizer.quantization_config
        w = value.detach().to("cpu")
        if w.dtype == torch.bfloat16:  # the core reads bf16 bits directly: no float32 copy
            arr, dtype = w.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
        elif w.dtype == torch.float16:
            arr, dtype = w.contiguous().numpy(), None
        else:
            arr, dtype = w.to(torch.float32).contiguous().numpy(), None
        q = quantize(arr, bits=module.bits, group_size=cfg.group_size, method=cfg.method, sym=cfg.sym, name=name,
                     dtype=dtype)
        if "weight" in module._parameters:  # the float placeholder the loader filled in
            del module.weight
        if missing_keys is not None:
            missing_keys.discard(name)
        prefix = name.rpartition(".")[0]
        return {f"{prefix}.{k}": t.to(value.device) for k, t in quantized_buffers(q).items()}


class HanpackHfQuantizer(HfQuantizer):
    """Swaps ``nn.Linear`` for :class:`hanpack.nn.QuantLinear` before the weights load
    (see the module documentation)."""

    requires_calibration = False
    quantization_config: HanpackConfig

    def __init__(self, quantization_config: HanpackConfig, **kwargs: Any) -> None:
        super().__init__(quantization_config, **kwargs)
        self._converted: List[str] = []

    def param_needs_quantization(self, model: Any, param_name: str, **kwargs: Any) -> bool:
        module, tensor_name = get_module_from_name(model, param_name)
        return not self.pre_quantized and isinstance(module, QuantLinear) and tensor_name == "weight"

    def get_quantize_ops(self) -> ConversionOps:
        return HanpackQuantize(self)

    def _process_model_before_weight_loading(self, model: Any, checkpoint_files: Optional[Sequence[str]] = None,
                                             **kwargs: Any) -> Any:
        cfg = self.quantization_config
        if not self.pre_quantized and cfg.method == "learned":
            raise InvalidArgumentError("HanpackConfig(method='learned') cannot quantize on load: write the checkpoint with "
                                       "hanpack.quantize_checkpoint(..., method='learned') and load that")
        linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        plan: Dict[str, Dict[str, Any]] = {}
        described, tensors = _described(checkpoint_files) if self.pre_quantized else ({}, {})
        if self.pre_quantized and not described:
            raise CheckpointFormatError(
                f"config.json says quant_method 'hanpack', but no shard lists its quantized tensors under "
                f"__metadata__[{METADATA_KEY!r}] ({', '.join(map(str, checkpoint_files or ())) or 'no shards'})"
            )
        if described:
            for prefix, d in described.items():
                if prefix not in linears:
                    raise CheckpointFormatError(
                        f"the checkpoint holds {prefix!r} quantized, but the model has no nn.Linear of that name "
                        f"(hanpack's transformers loader quantizes only nn.Linear layers)"
                    )
                check_packing(f"{prefix}.weight", d.get("bits"), d.get("packing"))
                try:
                    plan[prefix] = {"bits": int(d["bits"]), "group_size": int(d["group_size"])}
                    if list(d["shape"]) != [linears[prefix].out_features, linears[prefix].in_features]:
                        raise ValueError(f"shape {d['shape']} is not the model's "
                                         f"{[linears[prefix].out_features, linears[prefix].in_features]}")
                except (KeyError, TypeError, ValueError) as e:
                    raise CheckpointFormatError(f"{METADATA_KEY} entry of {prefix!r} is not usable: {e!r}") from None
        else:  # quantize on load: the config decides
            skip = cfg.modules_to_not_convert
            patterns: Sequence[str] = ()
            if skip is None:
                skip = self.get_modules_to_not_convert(model, None, getattr(model, "_keep_in_fp32_modules", None))
                patterns = DEFAULT_EXCLUDE
            for n in linears:
                if should_convert_module(n, skip) and not any(name_matches(n, p) for p in patterns):
                    plan[n] = {"bits": cfg.bits, "group_size": cfg.group_size}
        for n, spec in plan.items():
            lin = linears[n]
            with torch.device("meta"):
                q = QuantLinear(lin.in_features, lin.out_features, bits=spec["bits"], group_size=spec["group_size"],
                                bias=lin.bias is not None, dtype=lin.weight.dtype, act_bits=cfg.act_bits)
                if not self.pre_quantized:  # where the loader puts the float weight before HanpackQuantize
                    q.weight = nn.Parameter(torch.empty(lin.out_features, lin.in_features, dtype=lin.weight.dtype),
                                            requires_grad=False)
            if described:
                _check_packed(n, q, tensors)
            model.set_submodule(n, q)
        if not plan:
            warnings.warn("hanpack: no nn.Linear layer of this model is quantized", stacklevel=2)
        self._converted = sorted(plan)
        # What save_pretrained writes: every Linear left in float, by name.
        cfg.modules_to_not_convert = sorted(set(linears) - set(plan))
        return model

    def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        for n in self._converted:
            m = model.get_submodule(n)
            if "weight" in m._parameters:  # quantize on load never saw this weight
                raise CheckpointFormatError(f"the checkpoint has no {n}.weight to quantize")
        return model

    def get_state_dict_and_metadata(self, model: Any) -> Any:
        cfg = self.quantization_config
        described = {}
        for n, m in model.named_modules():
            if isinstance(m, QuantLinear):
                described[n] = {"shape": [m.out_features, m.in_features], "bits": m.bits, "group_size": m.group_size,
                                "sym": cfg.sym, "method": cfg.method, "packing": PACKING}
        return None, {METADATA_KEY: json.dumps(described, sort_keys=True), "hanpack.version": _core.__version__}

    def is_serializable(self, safe_serialization: Any = None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


_registered = False


def register() -> None:
    """Registers :class:`HanpackConfig` and :class:`HanpackHfQuantizer` for
    ``quant_method: "hanpack"`` (done on ``import hanpack.hf``; idempotent)."""
    global _registered
    if _registered:
        return
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    # Importing hanpack twice (e.g. a reloaded module) must not fail on "already registered".
    if AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD) is not HanpackConfig:
        AUTO_QUANTIZATION_CONFIG_MAPPING.pop(QUANT_METHOD, None)
        register_quantization_config(QUANT_METHOD)(HanpackConfig)
    if AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is not HanpackHfQuantizer:
        AUTO_QUANTIZER_MAPPING.pop(QUANT_METHOD, None)
        register_quantizer(QUANT_METHOD)(HanpackHfQuantizer)
    _registered = True
