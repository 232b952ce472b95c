"""Method ``learned`` (hanpack.learned): QuantizedTensor.from_codes, the learned tensors
written exactly by quantize_checkpoint and loaded by transformers, learning that lowers
the KL to the original where rtn leaves it, and bad input as specific errors with nothing
left behind."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hanpack  # noqa: E402
import hanpack.hf  # noqa: E402,F401  (registers quant_method "hanpack")
from hanpack.checkpoint import load_checkpoint, quantize_checkpoint  # noqa: E402
from hanpack.exceptions import InvalidArgumentError  # noqa: E402
from hanpack.learned import LearnedRounding, learn_rounding  # noqa: E402
from hanpack.quant import QuantizedTensor  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from conftest import SHARED, require_shared  # noqa: E402

STORIES = SHARED / "models" / "stories260k"
FAST = dict(steps=40, samples=16, seq_len=24, batch_size=4, lr=5e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small random Llama (in_features 64 and 80: one whole group of 64, and 80 = 64 + a
    short group of 16 at group_size 64), float32 safetensors."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2)
    dst = tmp_path_factory.mktemp("fp") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def learned3(tiny) -> LearnedRounding:
    return learn_rounding(tiny, bits=3, group_size=64, progress=False, **FAST)


def _reference(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group: int) -> np.ndarray:
    """(q - z) * s in float32, group by group, written out plainly."""
    out = np.empty(codes.shape, np.float32)
    for g in range(scales.shape[1]):
        cols = slice(g * group, (g + 1) * group)
        s = scales[:, g : g + 1].astype(np.float32)
        z = zeros[:, g : g + 1].astype(np.float32)
        out[:, cols] = (codes[:, cols].astype(np.float32) - z) * s
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("cols,group", [(64, 32), (70, 32), (172, 128), (40, 40)])
def test_from_codes_dequantizes_to_the_plain_formula(bits: int, cols: int, group: int) -> None:
    rng = np.random.default_rng(bits * cols)
    codes = rng.integers(0, 1 << bits, size=(5, cols))
    ng = -(-cols // group)
    scales = rng.uniform(0.001, 0.1, (5, ng)).astype(np.float16)
    zeros = rng.uniform(0, (1 << bits) - 1, (5, ng)).astype(np.float16)
    q = QuantizedTensor.from_codes(codes, scales=scales, zeros=zeros, bits=bits, group_size=group)
    assert q.method == "learned" and q.shape == (5, cols) and q.group_size == group
    np.testing.assert_array_equal(q.dequantize(), _reference(codes, scales, zeros, group))
    back = pickle.loads(pickle.dumps(q))
    np.testing.assert_array_equal(back.packed, q.packed)


def test_from_codes_refuses_bad_codes_and_shapes() -> None:
    s = np.ones((2, 1), np.float16)
    with pytest.raises(InvalidArgumentError, match=r"0\.\.15 for int4, got 0\.\.16"):
        QuantizedTensor.from_codes(np.array([[0, 16], [1, 2]]), scales=s, zeros=s, bits=4, group_size=2)
    with pytest.raises(InvalidArgumentError, match="2-D integer array"):
        QuantizedTensor.from_codes(np.zeros((2, 2), np.float32), scales=s, zeros=s, bits=4, group_size=2)
    with pytest.raises(InvalidArgumentError, match="scales must be float16 \\(2, 1\\)"):
        QuantizedTensor.from_codes(np.zeros((2, 4), np.uint8), scales=np.ones((2, 2)), zeros=s, bits=4, group_size=4)
    with pytest.raises(InvalidArgumentError, match="group_size must be an integer in 1..4"):
        QuantizedTensor.from_codes(np.zeros((2, 4), np.uint8), scales=s, zeros=s, bits=4, group_size=8)


def test_learned_tensors_are_written_exactly_and_load_in_transformers(tiny, learned3, tmp_path) -> None:
    assert sorted(learned3) == sorted(n for n in load_checkpoint(tiny) if "proj" in n)
    for name, t in learned3.items():
        assert t.bits == 3 and t.method == "learned" and t.group_size == 64
        assert np.isfinite(t.scales.astype(np.float32)).all() and (t.scales > 0).all()
    src = learned3.source
    assert src["text"] == "sampled by the model from BOS" and src["steps"] == 40 and src["samples"] == 16
    r = quantize_checkpoint(tiny, tmp_path / "q", bits=3, group_size=64, method="learned", learned=learned3,
                            progress=False)
    assert len(r.quantized) == len(learned3)
    got = load_checkpoint(tmp_path / "q")
    for name, t in learned3.items():
        for a in ("packed", "scales", "zeros"):
            np.testing.assert_array_equal(getattr(got[name], a), getattr(t, a), err_msg=f"{name}.{a}")
        assert got[name].method == "learned"
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert cfg["method"] == "learned" and cfg["learned"]["steps"] == 40
    # transformers runs the same product: the fp model with the learned weights put in.
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    fp = LlamaForCausalLM.from_pretrained(tiny)
    ids = torch.tensor([[1, 5, 77, 30, 12, 90]])
    with torch.inference_mode():
        weights = {n: torch.from_numpy(t.dequantize()) for n, t in learned3.items()}
        want = torch.func.functional_call(fp, weights, (ids,)).logits
        got_logits = model(ids).logits
    torch.testing.assert_close(got_logits, want, rtol=1e-4, atol=1e-4)


def _kl(fp, weights, ids) -> float:
    with torch.inference_mode():
        p = fp(ids).logits.log_softmax(-1)
        q = torch.func.functional_call(fp, weights, (ids,)).logits.log_softmax(-1)
        return float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="sum") / ids.numel())


def test_learning_lowers_the_kl_that_rtn_leaves(tiny, learned3) -> None:
    fp = LlamaForCausalLM.from_pretrained(tiny)
    rtn = learn_rounding(tiny, bits=3, group_size=64, progress=False, **{**FAST, "steps": 1, "lr": 1e-12})
    torch.manual_seed(5)
    ids = torch.randint(3, 96, (4, 24))  # text the learning has not seen
    ids[:, 0] = 1
    as_torch = lambda m: {n: torch.from_numpy(t.dequantize()) for n, t in m.items()}  # noqa: E731
    rtn_kl, learned_kl = _kl(fp, as_torch(rtn), ids), _kl(fp, as_torch(learned3), ids)
    # one step at a learning rate of 1e-12 leaves min-max rounding (with an fp16 zero
    # point that need not be an integer, unlike hanpack's rtn), written out in numpy:
    w = fp.model.layers[0].mlp.up_proj.weight.detach().numpy()
    lo, hi = np.minimum(w.min(1, keepdims=True), 0), np.maximum(w.max(1, keepdims=True), 0)
    s = ((hi - lo) / 7).astype(np.float16).astype(np.float32)
    z = (-lo / s).astype(np.float16).astype(np.float32)
    want = (np.clip(np.round(w / s + z), 0, 7) - z) * s
    same = rtn["model.layers.0.mlp.up_proj.weight"].dequantize() == want
    assert same.mean() > 0.999, same.mean()
    assert learned_kl < 0.8 * rtn_kl, (learned_kl, rtn_kl)


def test_learning_is_deterministic_and_learned_rounding_pickles(tiny) -> None:
    a = learn_rounding(tiny, bits=4, group_size=None, progress=False, **{**FAST, "steps": 5})
    b = learn_rounding(tiny, bits=4, group_size=None, progress=False, **{**FAST, "steps": 5})
    c = pickle.loads(pickle.dumps(a))
    assert c.source == a.source
    for n in a:
        assert a[n].group_size == a[n].shape[1]  # per-channel
        for x in (b, c):
            np.testing.assert_array_equal(x[n].packed, a[n].packed)
            np.testing.assert_array_equal(x[n].scales, a[n].scales)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"seq_len": 1}, "seq_len must be an integer >= 2"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"bits": 5}, "bits must be one of"),
        ({"group_size": 48}, "group_size must be a positive multiple of 32"),
        ({"include": ["embed_tokens"], "exclude": []}, "not weights of the model's nn.Linear layers"),
        ({"include": ["no_such_tensor"]}, "no weight to quantize"),
    ],
)
def test_learn_rounding_refuses_bad_arguments(tiny, kw, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        learn_rounding(tiny, progress=False, **{**FAST, **kw})


def test_quantize_checkpoint_checks_what_it_is_given(tiny, learned3, tmp_path) -> None:
    one = dict(list(learned3.items())[1:])
    cases = [
        (dict(method="rtn", learned=learned3), "only written by method='learned'"),
        (dict(method="learned", sym=True, learned=learned3), "asymmetric only"),
        (dict(method="learned", learned=one), "no tensor for 1 weight"),
        (dict(method="learned", bits=4, learned=learned3), "not asymmetric int4 in groups of 64"),
        (dict(method="learned", group_size=32, learned=learned3), "in groups of 32"),
        (dict(method="learned", learned={n: t.dequantize() for n, t in learned3.items()}), "must be a QuantizedTensor"),
    ]
    for i, (kw, match) in enumerate(cases):
        kw = {"bits": 3, "group_size": 64, **kw}
        with pytest.raises(InvalidArgumentError, match=match):
            quantize_checkpoint(tiny, tmp_path / f"bad{i}", progress=False, **kw)
        assert not (tmp_path / f"bad{i}").exists()
    with pytest.raises(InvalidArgumentError, match="must be one of"):
        hanpack.quant.quantize(np.ones((2, 32), np.float32), bits=4, group_size=32, method="learned")


def test_quantizing_on_load_refuses_learned(tiny) -> None:
    cfg = hanpack.hf.HanpackConfig(bits=4, method="learned")
    with pytest.raises(InvalidArgumentError, match="cannot quantize on load"):
        AutoModelForCausalLM.from_pretrained(tiny, quantization_config=cfg)


def test_learning_on_a_given_text(trained_models, tmp_path) -> None:
    spm_model = trained_models["bpe_bytefallback"]
    vocab = hanpack.Tokenizer.from_file(spm_model).vocab_size
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    src = tmp_path / "with-tokenizer"
    LlamaForCausalLM(cfg).save_pretrained(src)
    (src / "tokenizer.model").write_bytes(spm_model.read_bytes())
    text = "今天天气很好，我们去公园散步。The weather is nice today.\n" * 40
    got = learn_rounding(src, bits=4, group_size=32, progress=False, text=text, **{**FAST, "steps": 3, "samples": 6})
    assert got.source["text"] == "given" and got.source["characters"] == len(text) and got.source["samples"] == 6
    with pytest.raises(InvalidArgumentError, match="too few tokens"):
        learn_rounding(src, progress=False, text="", **FAST)


def test_cli_learns_and_refuses_learning_options_for_other_methods(tiny, tmp_path) -> None:
    dst = tmp_path / "cli"
    args = ["--bits", "3", "--group-size", "64", "--method", "learned", "--steps", "3", "--samples", "4", "--seq-len", "8",
            "--quiet"]
    out = subprocess.run([sys.executable, "-m", "hanpack", "quantize", str(tiny), str(dst), *args], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert "learned" in out.stdout
    cfg = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert cfg["learned"]["steps"] == 3 and cfg["learned"]["samples"] == 4
    again = subprocess.run([sys.executable, "-m", "hanpack", "quantize", str(tiny), str(dst), *args], capture_output=True,
                           text=True)
    assert again.returncode != 0 and "already exists" in again.stderr
    bad = subprocess.run([sys.executable, "-m", "hanpack", "quantize", str(tiny), str(tmp_path / "x"), "--steps", "3"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "--steps only apply to --method learned" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_learned_closes_most_of_rtns_gap_on_stories260k(tmp_path) -> None:
    """The real model at int3-g128, 200 steps on 128 sequences it samples (the defaults
    take 1500 on 1024; the bench reports those): perplexity on its validation text."""
    src = require_shared(STORIES)
    from hanpack.evaluate import load_causal_lm, perplexity

    tok = hanpack.Tokenizer.from_file(src / "tokenizer.model")
    text = (src / "eval_tinystories_val.txt").read_text(encoding="utf-8")

    def ppl(d: Path) -> float:
        return perplexity(load_causal_lm(d), text, tokenizer=tok, separator="<|story|>", max_tokens=512).ppl

    learned = learn_rounding(src, bits=3, group_size=128, steps=200, samples=128, lr=2e-3, progress=False)
    quantize_checkpoint(src, tmp_path / "learned", bits=3, group_size=128, method="learned", learned=learned,
                        progress=False)
    quantize_checkpoint(src, tmp_path / "mse", bits=3, group_size=128, method="mse", progress=False)
    base, mse, got = ppl(src), ppl(tmp_path / "mse"), ppl(tmp_path / "learned")
    assert got < mse and (got - base) < 0.5 * (mse - base), (base, mse, got)
