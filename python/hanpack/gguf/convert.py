"""transformers LLaMA checkpoint (safetensors) → GGUF that llama.cpp runs.

    hanpack quantize MODEL_DIR model-Q4_K_M.gguf --format gguf --type Q4_K_M

What is written, as llama.cpp's ``convert_hf_to_gguf.py`` + ``llama-quantize`` would:

* metadata: ``general.*``, the ``llama.*`` hyper-parameters from ``config.json`` (context
  length, sizes, head counts, rope base and dimension, RMS epsilon, vocabulary size,
  linear rope scaling), ``general.file_type`` and ``general.quantization_version``;
* the tokenizer, embedded: the SentencePiece vocabulary of ``tokenizer.model`` with its
  scores and piece types (``tokenizer.ggml.model = "llama"``), or a byte-level BPE
  ``tokenizer.json``'s tokens, merges and pre-tokenizer name (``"gpt2"``); special ids,
  ``add_bos`` / ``add_eos`` from ``tokenizer_config.json``, the chat template if any. A
  vocabulary smaller than the embedding (extended Chinese models padded to a multiple)
  is padded with ``[PAD{id}]`` pieces as llama.cpp's converter does; a larger one is an
  error naming both sizes;
* tensors under llama.cpp's names (``blk.N.attn_q.weight`` …), ``q``/``k`` rows permuted
  from transformers' rotary layout to llama.cpp's (``convert_hf_to_gguf``'s ``permute``),
  in llama.cpp's order, each with the type :func:`~hanpack.gguf.mixture.tensor_types`
  gives for the file type; 1-D tensors stay float32.

Tensors are read, converted, quantized (in Rust, all cores) and written one at a time:
peak memory is about one tensor in float32 plus its quantized bytes. The file appears
only when complete (temporary file + rename); the source is only read.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from ..checkpoint import _array, _progress, _source_shards, read_headers
from ..exceptions import CheckpointFormatError, InvalidArgumentError, UnsupportedTokenizerError
from .blocks import quantize
from .file import GGUFWriter, TensorSpec, Typed, ValueType
from .mixture import FILE_TYPES, llama_order, tensor_types

__all__ = ["ConversionReport", "convert_checkpoint"]

PathLike = Union[str, "os.PathLike[str]"]

_LAYER_PARTS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
# SentencePiece piece types and llama.cpp's token types share their numbers.
_TOKEN_TYPES = {"NORMAL": 1, "UNKNOWN": 2, "CONTROL": 3, "USER_DEFINED": 4, "UNUSED": 5, "BYTE": 6}


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert_checkpoint` wrote: GGUF name → ggml type, and the sizes."""

    path: Path
    file_type: str
    tensor_types: Dict[str, str]
    n_weights: int
    nbytes: int

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / self.n_weights


@dataclass(frozen=True)
class _Hparams:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    head_dim: int
    n_vocab: int
    context: int
    rope_theta: float
    rms_eps: float
    rope_scaling: Optional[Dict[str, Any]]
    tied: bool


def _hparams(src: Path) -> _Hparams:
    path = src / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(2, "a transformers checkpoint needs config.json", str(path)) from None
    except ValueError as e:
        raise CheckpointFormatError(f"{path}: not JSON ({e})") from None
    arch = (cfg.get("architectures") or [None])[0]
    if cfg.get("model_type") != "llama" and arch != "LlamaForCausalLM":
        raise InvalidArgumentError(f"{path}: GGUF export supports LLaMA-architecture models (model_type 'llama'), not {cfg.get('model_type')!r} / {arch!r}")
    rope = cfg.get("rope_parameters") or {}  # transformers 5 keeps rope_theta here
    try:
        n_head = int(cfg["num_attention_heads"])
        hp = _Hparams(
            n_layer=int(cfg["num_hidden_layers"]), n_embd=int(cfg["hidden_size"]), n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads") or n_head), n_ff=int(cfg["intermediate_size"]),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // n_head), n_vocab=int(cfg["vocab_size"]),
            context=int(cfg.get("max_position_embeddings") or 2048), rope_theta=float(cfg.get("rope_theta") or rope.get("rope_theta", 10000.0)),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_scaling=cfg.get("rope_scaling") or (rope if rope.get("rope_type") not in (None, "default") else None),
            tied=bool(cfg.get("tie_word_embeddings", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointFormatError(f"{path}: missing or invalid LLaMA hyper-parameter ({e!r})") from None
    rs = hp.rope_scaling
    if rs and (rs.get("rope_type") or rs.get("type")) not in ("linear", "default", None):
        raise InvalidArgumentError(f"{path}: rope_scaling {rs!r} is not supported for GGUF export (linear is)")
    return hp


def _metadata(src: Path, hp: _Hparams, file_type: str, name: Optional[str]) -> List[Tuple[str, Any]]:
    md: List[Tuple[str, Any]] = [
        ("general.architecture", "llama"),
        ("general.type", "model"),
        ("general.name", name or src.resolve().name),
        ("general.quantization_version", 2),
        ("general.file_type", FILE_TYPES[file_type][0]),
        ("llama.vocab_size", hp.n_vocab),
        ("llama.context_length", hp.context),
        ("llama.embedding_length", hp.n_embd),
        ("llama.block_count", hp.n_layer),
        ("llama.feed_forward_length", hp.n_ff),
        ("llama.rope.dimension_count", hp.head_dim),
        ("llama.attention.head_count", hp.n_head),
        ("llama.attention.head_count_kv", hp.n_head_kv),
        ("llama.attention.layer_norm_rms_epsilon", hp.rms_eps),
        ("llama.rope.freq_base", hp.rope_theta),
    ]
    if hp.head_dim != hp.n_embd // hp.n_head:
        md += [("llama.attention.key_length", hp.head_dim), ("llama.attention.value_length", hp.head_dim)]
    rs = hp.rope_scaling
    if rs and (rs.get("rope_type") or rs.get("type")) == "linear":
        md += [("llama.rope.scaling.type", "linear"), ("llama.rope.scaling.factor", float(rs["factor"]))]
    return md


def _tokenizer_config(src: Path) -> Dict[str, Any]:
    path = src / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointFormatError(f"{path}: not JSON ({e})") from None
    return cfg if isinstance(cfg, dict) else {}


def _tokenizer_metadata(src: Path, n_embd_rows: int, pre: Optional[str]) -> List[Tuple[str, Any]]:
    from ..tokenizer import Tokenizer

    if (src / "tokenizer.model").is_file():
        tok = Tokenizer.from_file(src / "tokenizer.model")
        if getattr(tok._model, "model_type", None) is not None:  # SentencePiece, not tiktoken
            return _spm_metadata(src, tok, n_embd_rows)
    if (src / "tokenizer.json").is_file():
        return _bpe_metadata(src, n_embd_rows, pre)
    raise UnsupportedTokenizerError(f"{src}: no tokenizer to embed (a SentencePiece tokenizer.model or a byte-level BPE tokenizer.json)")


def _chat_and_flags(cfg: Dict[str, Any], src: Path, add_bos_default: bool) -> List[Tuple[str, Any]]:
    md: List[Tuple[str, Any]] = [
        ("tokenizer.ggml.add_bos_token", bool(cfg.get("add_bos_token", add_bos_default))),
        ("tokenizer.ggml.add_eos_token", bool(cfg.get("add_eos_token", False))),
    ]
    template = cfg.get("chat_template")
    if not isinstance(template, str) and (src / "chat_template.jinja").is_file():
        template = (src / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str):
        md.append(("tokenizer.chat_template", template))
    return md


def _spm_metadata(src: Path, tok: Any, n_embd_rows: int) -> List[Tuple[str, Any]]:
    path = src / "tokenizer.model"
    model = tok._model
    if getattr(model, "model_type", None) != "bpe":
        raise UnsupportedTokenizerError(f"{path}: llama.cpp's 'llama' tokenizer is SentencePiece BPE; this model is {getattr(model, 'model_type', 'byte-level BPE')!r}")
    n = tok.vocab_size
    if n > n_embd_rows:
        raise CheckpointFormatError(f"{path}: the tokenizer has {n} pieces but the embedding has only {n_embd_rows} rows")
    tokens = [tok.id_to_piece(i) for i in range(n)]
    scores = [float(tok.piece_score(i)) for i in range(n)]
    types = [_TOKEN_TYPES[tok.piece_type(i)] for i in range(n)]
    for i in range(n, n_embd_rows):  # llama.cpp's converter pads the same way
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        types.append(_TOKEN_TYPES["UNUSED"])
    probe = model.normalize("a  Ａ")
    add_prefix = probe.startswith("▁")
    body = probe[1:] if add_prefix else probe
    if body != "a▁▁Ａ":
        warnings.warn(f"{path}: the tokenizer normalizes text ({'a  Ａ'!r} → {probe!r}); llama.cpp's SentencePiece tokenizer does not, so its ids differ from sentencepiece's on such text", stacklevel=3)
    md: List[Tuple[str, Any]] = [
        ("tokenizer.ggml.model", "llama"),
        ("tokenizer.ggml.pre", "default"),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.scores", Typed(scores, ValueType.FLOAT32)),
        ("tokenizer.ggml.token_type", Typed(types, ValueType.INT32)),
        ("tokenizer.ggml.add_space_prefix", add_prefix),
    ]
    for key, tid in (("bos", tok.bos_id), ("eos", tok.eos_id), ("unknown", tok.unk_id), ("padding", tok.pad_id)):
        if tid >= 0:
            md.append((f"tokenizer.ggml.{key}_token_id", tid))
    return md + _chat_and_flags(_tokenizer_config(src), src, add_bos_default=True)


# Pre-tokenizer regexes of tokenizer.json → llama.cpp's tokenizer.ggml.pre names.
_PRE_BY_REGEX = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def _pre_name(tj: Dict[str, Any], path: Path) -> str:
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        for p in pre.get("pretokenizers", []):
            regex = (p.get("pattern") or {}).get("Regex") if p.get("type") == "Split" else None
            if regex in _PRE_BY_REGEX:
                return _PRE_BY_REGEX[regex]
    raise UnsupportedTokenizerError(f"{path}: the pre-tokenizer is not one hanpack recognises (gpt-2, llama-bpe, qwen2); pass pre= with llama.cpp's tokenizer.ggml.pre name")


def _bpe_metadata(src: Path, n_embd_rows: int, pre: Optional[str]) -> List[Tuple[str, Any]]:
    path = src / "tokenizer.json"
    try:
        tj = json.loads(path.read_text(encoding="utf-8"))
        model = tj["model"]
        vocab: Dict[str, int] = model["vocab"]
        merges = model["merges"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointFormatError(f"{path}: not a tokenizers BPE file ({e!r})") from None
    if model.get("type", "BPE") != "BPE":
        raise UnsupportedTokenizerError(f"{path}: a {model.get('type')} model; GGUF export embeds BPE")
    added = {int(t["id"]): t for t in tj.get("added_tokens", [])}
    n = max([n_embd_rows - 1, *vocab.values(), *added.keys()]) + 1
    if n > n_embd_rows:
        raise CheckpointFormatError(f"{path}: the tokenizer has {n} tokens but the embedding has only {n_embd_rows} rows")
    tokens: List[Optional[str]] = [None] * n
    types = [_TOKEN_TYPES["NORMAL"]] * n
    for tok, i in vocab.items():
        tokens[i] = tok
    for i, t in added.items():
        tokens[i] = t["content"]
        types[i] = _TOKEN_TYPES["CONTROL"] if t.get("special") else _TOKEN_TYPES["USER_DEFINED"]
    for i in range(n):
        if tokens[i] is None:  # llama.cpp's converter pads the same way
            tokens[i] = f"[PAD{i}]"
            types[i] = _TOKEN_TYPES["UNUSED"]
    merge_lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    pre_tok = tj.get("pre_tokenizer") or {}
    md: List[Tuple[str, Any]] = [
        ("tokenizer.ggml.model", "gpt2"),
        ("tokenizer.ggml.pre", pre or _pre_name(tj, path)),
        ("tokenizer.ggml.tokens", tokens),
        ("tokenizer.ggml.token_type", Typed(types, ValueType.INT32)),
        ("tokenizer.ggml.merges", merge_lines),
        ("tokenizer.ggml.add_space_prefix", bool(pre_tok.get("add_prefix_space", False))),
    ]
    cfg = _tokenizer_config(src)
    ids = {t: i for i, t in enumerate(tokens)}
    for key, field in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")):
        value = cfg.get(field)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value in ids:
            md.append((f"tokenizer.ggml.{key}_token_id", ids[value]))
    post = json.dumps(tj.get("post_processor") or {})
    bos = cfg.get("bos_token")
    return md + _chat_and_flags(cfg, src, add_bos_default=isinstance(bos, str) and f'"id": "{bos}"' in post)


def gguf_name(hf_name: str) -> Optional[str]:
    """llama.cpp's name for a transformers LLaMA tensor (``None``: not exported)."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    m = _HF_LAYER.fullmatch(hf_name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"blk.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}"
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    raise CheckpointFormatError(f"tensor {hf_name!r} has no GGUF name in a LLaMA model")


def _permute(w: npt.NDArray[np.float32], n_head: int) -> npt.NDArray[np.float32]:
    """transformers' rotary layout (halves) → llama.cpp's (interleaved pairs), per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_checkpoint(
    src: PathLike,
    dst: PathLike,
    *,
    file_type: str = "Q4_K_M",
    imatrix: Optional[Mapping[str, npt.ArrayLike]] = None,
    name: Optional[str] = None,
    pre: Optional[str] = None,
    num_threads: Optional[int] = None,
    progress: Optional[bool] = None,
) -> ConversionReport:
    """Writes the transformers LLaMA checkpoint ``src`` (directory with ``config.json``,
    safetensors weights and ``tokenizer.model``) as the GGUF file ``dst`` (which must not
    exist) in llama.cpp's ``file_type`` (``"Q4_K_M"``, ``"Q3_K_M"``, ``"Q4_0"``, ``"F16"``,
    … see :data:`~hanpack.gguf.mixture.FILE_TYPES`). ``imatrix``: tensor name (GGUF's, or
    the checkpoint's, as :func:`hanpack.calibrate.activation_importance` gives) →
    per-column importances (as llama-imatrix computes); those tensors use llama.cpp's
    importance-weighted quantizers. ``pre``: llama.cpp's pre-tokenizer name for a byte-level
    BPE ``tokenizer.json`` (detected for gpt-2, llama-bpe and qwen2). ``progress``: a tqdm bar on stderr (default: when
    stderr is a terminal)."""
    file_type = file_type.upper()
    if file_type not in FILE_TYPES:
        raise InvalidArgumentError(f"unsupported file type {file_type!r}; supported: {', '.join(FILE_TYPES)}")
    src = Path(src)
    hp = _hparams(src)
    shards, _ = _source_shards(src)
    _, where = read_headers(shards)
    names: Dict[str, str] = {}
    for hf in where:
        g = gguf_name(hf)
        if g is not None:
            names[g] = hf
    if hp.tied and "output.weight" in names and "token_embd.weight" in names:
        del names["output.weight"]  # tied: llama.cpp reads token_embd for both
    if "token_embd.weight" not in names:
        raise CheckpointFormatError(f"{src}: no model.embed_tokens.weight")
    shapes = {g: tuple(where[hf][2]) for g, hf in names.items()}
    types = tensor_types(list(shapes.items()), file_type, n_layer=hp.n_layer, n_head=hp.n_head, n_head_kv=hp.n_head_kv, has_imatrix=imatrix is not None)
    order = llama_order(names)
    specs = [TensorSpec(g, shapes[g], types.get(g, "F32")) for g in order]
    metadata = _metadata(src, hp, file_type, name) + _tokenizer_metadata(src, shapes["token_embd.weight"][0], pre)
    bar = _progress(sum(int(np.prod(s.shape)) for s in specs), progress)
    try:
        with GGUFWriter(dst, metadata, specs) as out:
            for spec in specs:
                reader, dtype, shape = where[names[spec.name]]
                _, _, data = reader.read(names[spec.name])
                w = np.asarray(_array(dtype, shape, data, names[spec.name]), dtype=np.float32)
                del data
                if spec.name.endswith("attn_q.weight"):
                    w = _permute(w, hp.n_head)
                elif spec.name.endswith("attn_k.weight"):
                    w = _permute(w, hp.n_head_kv)
                qw = None
                for key in (spec.name, names[spec.name]) if imatrix is not None else ():
                    if key in imatrix:
                        qw = np.asarray(imatrix[key], dtype=np.float32)
                        break
                out.write(spec.name, quantize(w, spec.qtype, imatrix=qw, name=spec.name, num_threads=num_threads))
                if bar is not None:
                    bar.update(w.size)
    finally:
        if bar is not None:
            bar.close()
    return ConversionReport(
        path=Path(dst), file_type=file_type, tensor_types={s.name: s.qtype for s in specs},
        n_weights=sum(int(np.prod(s.shape)) for s in specs), nbytes=sum(s.nbytes for s in specs),
    )

