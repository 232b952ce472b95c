"""hanpack.hf.quantizer: hanpack-quantized checkpoints in AutoModelForCausalLM (packed
QuantLinear layers, never the dequantized matrix), quantize-on-load, save_pretrained
round trips, pipeline() with a hanpack tokenizer, errors on lying checkpoints."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, require_shared

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("hanpack.hf")
import hanpack  # noqa: E402
from hanpack.checkpoint import load_checkpoint  # noqa: E402
from hanpack.evaluate import load_causal_lm, perplexity  # noqa: E402
from hanpack.exceptions import CheckpointFormatError, InvalidArgumentError  # noqa: E402
from hanpack.nn import QuantLinear  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, pipeline  # noqa: E402

STORIES = SHARED / "models" / "stories260k"
PROMPT_IDS = [[1, 5, 77, 300, 12, 90, 45, 8]]


@pytest.fixture(scope="module")
def tokenizer_folder(trained_models, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("tok") / "bpe"
    hf.convert_tokenizer(trained_models["bpe_bytefallback"], dst)
    return dst


@pytest.fixture(scope="module")
def fp_model(tokenizer_folder, tmp_path_factory) -> Path:
    """A small random Llama (in_features 64 and 80: whole and short last groups of 32),
    saved as float32 safetensors with the trained tokenizer next to it."""
    vocab = AutoTokenizer.from_pretrained(tokenizer_folder).vocab_size
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    dst = tmp_path_factory.mktemp("fp") / "tiny-llama"
    model.save_pretrained(dst)
    for f in tokenizer_folder.iterdir():
        shutil.copyfile(f, dst / f.name)
    return dst


def _quantized(src: Path, dst: Path, **kw) -> Path:
    hanpack.quantize_checkpoint(src, dst, progress=False, **kw)
    return dst


def _buffers(model) -> dict:
    return {n: {b: getattr(m, b).clone() for b in ("qweight", "scales", "zeros")}
            for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def _logits(model, ids=PROMPT_IDS):
    with torch.inference_mode():
        return model(torch.tensor(ids)).logits


def test_prequantized_checkpoint_loads_packed_quantlinear(fp_model, tmp_path):
    q = _quantized(fp_model, tmp_path / "q", bits=4, group_size=32)
    model = AutoModelForCausalLM.from_pretrained(q)
    linears = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, QuantLinear))]
    converted = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert set(linears) - set(converted) == {"lm_head"} and len(converted) == 14
    state = model.state_dict()
    assert not any(f"{n}.weight" in state for n in converted)  # no dense matrix anywhere
    packed = load_checkpoint(q)
    for n in converted:
        m = model.get_submodule(n)
        want = packed[f"{n}.weight"]
        assert np.array_equal(m.qweight.numpy(), want.packed)
        assert np.array_equal(m.scales.numpy(), want.scales) and np.array_equal(m.zeros.numpy(), want.zeros)
        assert m.group_size == want.group_size == 32
    assert model.config.quantization_config.bits == 4
    # The fused kernel computes what dense math on the dequantized weights does.
    got, want = _logits(model), _logits(load_causal_lm(q))
    assert float((got - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_casting_a_loaded_model_keeps_the_packed_parameters(fp_model, tmp_path):
    """``model.to(torch.bfloat16)`` after loading gives what loading in bf16 does (it used to
    cast the fp16 scales to bf16, which the kernels then read as fp16 bits)."""
    q = _quantized(fp_model, tmp_path / "q", bits=4, group_size=32)
    cast = AutoModelForCausalLM.from_pretrained(q).to(torch.bfloat16)
    loaded = AutoModelForCausalLM.from_pretrained(q, dtype=torch.bfloat16)
    assert _buffers(cast).keys() == _buffers(loaded).keys()
    for name, bufs in _buffers(cast).items():
        for b, t in bufs.items():
            assert torch.equal(t, _buffers(loaded)[name][b]), (name, b)
    # Up to bf16 rounding (`.to()` also casts the rotary frequencies, which loading in
    # bf16 keeps in fp32); the fp16 scales read as bf16 bits were off by the logits' size.
    got, want = _logits(cast).float(), _logits(loaded).float()
    assert float((got - want).abs().max()) <= 0.02 * float(want.abs().max())


@pytest.mark.parametrize("bits,method", [(4, "hqq"), (3, "rtn"), (8, "mse")])
def test_quantize_on_load_equals_hanpack_quantize(fp_model, tmp_path, bits, method):
    q = _quantized(fp_model, tmp_path / "q", bits=bits, group_size=32, method=method)
    pre = AutoModelForCausalLM.from_pretrained(q)
    cfg = hf.HanpackConfig(bits=bits, group_size=32, method=method)
    onload = AutoModelForCausalLM.from_pretrained(fp_model, quantization_config=cfg)
    a, b = _buffers(pre), _buffers(onload)
    assert a.keys() == b.keys() and len(a) == 14
    for n in a:
        for k in a[n]:
            assert torch.equal(a[n][k], b[n][k]), (n, k)
    assert onload.config.quantization_config.modules_to_not_convert == ["lm_head"]
    assert torch.equal(_logits(pre), _logits(onload))


def test_modules_to_not_convert_keeps_those_layers_float(fp_model):
    cfg = hf.HanpackConfig(bits=4, group_size=32, modules_to_not_convert=["lm_head", "mlp.down_proj"])
    model = AutoModelForCausalLM.from_pretrained(fp_model, quantization_config=cfg)
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, QuantLinear))}
    assert kinds["model.layers.1.mlp.down_proj"] == "Linear" and kinds["model.layers.1.mlp.up_proj"] == "QuantLinear"
    assert sum(k == "QuantLinear" for k in kinds.values()) == 12


@pytest.mark.parametrize("shard", [None, "40KB"])
def test_save_pretrained_round_trip(fp_model, tmp_path, shard):
    cfg = hf.HanpackConfig(bits=4, group_size=32)
    model = AutoModelForCausalLM.from_pretrained(fp_model, quantization_config=cfg)
    out = tmp_path / "saved"
    model.save_pretrained(out, **({} if shard is None else {"max_shard_size": shard}))
    shards = sorted(out.glob("*.safetensors"))
    assert (len(shards) > 1) == (shard is not None)
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "hanpack" and saved["bits"] == 4 and saved["packing"] == hanpack.checkpoint.PACKING == "hanpack-v2"
    again = AutoModelForCausalLM.from_pretrained(out)
    a, b = _buffers(model), _buffers(again)
    assert a.keys() == b.keys() and all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])
    assert torch.equal(_logits(model), _logits(again))
    # hanpack's own reader (eval-ppl, GGUF export) reads the transformers-written folder.
    packed = load_checkpoint(out)
    w = packed["model.layers.0.mlp.down_proj.weight"]
    assert w.shape == (64, 80) and np.array_equal(w.packed, a["model.layers.0.mlp.down_proj"]["qweight"].numpy())


def test_int8_activations_are_configured_saved_and_reloaded(fp_model, tmp_path):
    cfg = hf.HanpackConfig(bits=4, group_size=32, act_bits=8)
    model = AutoModelForCausalLM.from_pretrained(fp_model, quantization_config=cfg)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.act_bits == 8 for m in layers)
    plain = AutoModelForCausalLM.from_pretrained(fp_model, quantization_config=hf.HanpackConfig(bits=4, group_size=32))
    assert not torch.equal(_logits(model), _logits(plain))  # int8 activations change the numbers
    model.save_pretrained(tmp_path / "a8")
    assert json.loads((tmp_path / "a8" / "config.json").read_text())["quantization_config"]["act_bits"] == 8
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "a8")
    assert all(m.act_bits == 8 for m in again.modules() if isinstance(m, QuantLinear))
    assert torch.equal(_logits(model), _logits(again))
    with pytest.raises(InvalidArgumentError, match="act_bits"):
        hf.HanpackConfig(act_bits=4)


def test_pipeline_generates_with_a_hanpack_tokenizer(fp_model, tmp_path):
    q = _quantized(fp_model, tmp_path / "q", bits=4, group_size=32)
    model = AutoModelForCausalLM.from_pretrained(q)
    tok = AutoTokenizer.from_pretrained(q)
    assert type(tok).__name__ == "HanpackTokenizer"
    gen = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")
    prompt = "今天天气很好 and the"
    out = gen(prompt, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        want = model.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert len(want) == 6 and out == tok.decode(want, skip_special_tokens=True)


def _lie(src: Path, dst: Path, edit) -> Path:
    """A copy of the quantized checkpoint ``src`` whose shard ``edit`` rewrote."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    with safe_open(str(f), "np") as h:
        meta = h.metadata()
    tensors = load_file(str(f))
    edit(tensors, meta)
    save_file(tensors, str(f), metadata=meta)
    return dst


def test_lying_checkpoints_raise_naming_the_tensor(fp_model, tmp_path):
    q = _quantized(fp_model, tmp_path / "q", bits=4, group_size=32)
    p = "model.layers.0.mlp.up_proj"

    def drop(t, meta):
        del t[f"{p}.zeros"]

    def reshape(t, meta):
        t[f"{p}.scales"] = t[f"{p}.scales"][:, :1].copy()

    def not_linear(t, meta):
        d = json.loads(meta["hanpack.quantized"])
        d["model.norm"] = d[p]
        meta["hanpack.quantized"] = json.dumps(d)

    def bad_json(t, meta):
        meta["hanpack.quantized"] = "{"

    def no_metadata(t, meta):
        del meta["hanpack.quantized"]

    for edit, words in [(drop, f"{p}.zeros"), (reshape, f"{p}.scales"), (not_linear, "model.norm"),
                        (bad_json, "not JSON"), (no_metadata, "no shard lists")]:
        bad = _lie(q, tmp_path / edit.__name__, edit)
        with pytest.raises(CheckpointFormatError, match=words.replace(".", r"\.")):
            AutoModelForCausalLM.from_pretrained(bad)
    assert load_checkpoint(q)  # the source was only read


def test_config_rejects_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="bits"):
        hf.HanpackConfig(bits=5)
    with pytest.raises(InvalidArgumentError, match="group_size"):
        hf.HanpackConfig(group_size=48)
    with pytest.raises(InvalidArgumentError, match="method"):
        hf.HanpackConfig(method="gptq")
    with pytest.raises(InvalidArgumentError, match="packing"):
        hf.HanpackConfig.from_dict({"quant_method": "hanpack", "bits": 4, "packing": "hanpack-v9"})
    c = hf.HanpackConfig.from_dict({"quant_method": "hanpack", "bits": 3, "group_size": None, "method": "rtn"})
    assert (c.bits, c.group_size, c.method, c.to_dict()["quant_method"]) == (3, None, "rtn", "hanpack")
    # hanpack-v1 differs from v2 in int3 only: other widths read on, int3 asks for a new quantization.
    assert hf.HanpackConfig.from_dict({"quant_method": "hanpack", "bits": 4, "packing": "hanpack-v1"}).packing == "hanpack-v2"
    with pytest.raises(InvalidArgumentError, match="HanpackConfig: int3 in packing 'hanpack-v1'.*quantize the original"):
        hf.HanpackConfig.from_dict({"quant_method": "hanpack", "bits": 3, "packing": "hanpack-v1"})


def _weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def test_stories260k_int4_memory_and_perplexity_match_eval_ppl(tmp_path):
    src = require_shared(STORIES)
    q = _quantized(src, tmp_path / "q", bits=4, group_size=64)
    fp = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    int4 = AutoModelForCausalLM.from_pretrained(q)
    ratio = _weight_bytes(int4) / _weight_bytes(fp)
    assert ratio <= 0.35, ratio
    text = (src / "eval_tinystories_val.txt").read_text(encoding="utf-8")[:20000]
    tok = hanpack.Tokenizer.from_file(src / "tokenizer.model")
    got = perplexity(int4, text, separator="<|story|>", tokenizer=tok)  # QuantLinear kernels
    want = perplexity(q, text, separator="<|story|>")  # what `hanpack eval-ppl` measures
    assert got.n_tokens == want.n_tokens > 1000
    assert math.isclose(got.ppl, want.ppl, rel_tol=1e-5), (got.ppl, want.ppl)
