"""hanpack.calibrate (activation statistics for mse's importance) and
quantize_checkpoint(..., importance=...): the statistics equal E[x²] computed another
way, quantizing with them equals hanpack.quant with the same weights, and bad input is a
specific error with nothing left behind."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import hanpack
import hanpack.quant as hq
from hanpack.calibrate import Importance
from hanpack.checkpoint import load_checkpoint, quantize_checkpoint
from hanpack.exceptions import CheckpointFormatError, InvalidArgumentError

from conftest import SHARED, require_shared

safetensors_numpy = pytest.importorskip("safetensors.numpy")

STORIES = SHARED / "models" / "stories260k"


def _checkpoint(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    w = {
        "model.embed_tokens.weight": rng.standard_normal((40, 96)).astype(np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((64, 96)).astype(np.float32),
        "model.layers.0.mlp.down_proj.weight": (rng.standard_normal((96, 64)) * 0.1).astype(np.float16),
        "model.norm.weight": np.ones(96, np.float32),
    }
    path.mkdir()
    safetensors_numpy.save_file(w, str(path / "model.safetensors"))
    (path / "config.json").write_text('{"model_type": "llama"}')
    return w


def _importance() -> Importance:
    rng = np.random.default_rng(4)
    return Importance(
        {
            "model.layers.0.mlp.up_proj.weight": rng.gamma(0.5, size=96) ** 2,
            "model.layers.0.mlp.down_proj.weight": rng.gamma(0.5, size=64) ** 2,
            "lm_head.weight": np.ones(96),  # not quantized: ignored
        },
        source={"text": "test"},
    )


def test_importance_is_validated_read_only_and_picklable(tmp_path: Path) -> None:
    imp = _importance()
    a = imp["model.layers.0.mlp.up_proj.weight"]
    assert a.dtype == np.float32 and not a.flags.writeable
    back = pickle.loads(pickle.dumps(imp))
    assert back.source == {"text": "test"} and list(back) == list(imp)
    assert all((back[k] == imp[k]).all() for k in imp)
    for bad, why in (({"x": np.ones((2, 2))}, "1-D"), ({"x": [1.0, -1.0]}, "non-negative"), ({"x": [np.nan]}, "finite")):
        with pytest.raises(InvalidArgumentError, match=why):
            Importance(bad)


def test_importance_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    imp = _importance()
    imp.save(tmp_path / "imp.safetensors")
    back = Importance.load(tmp_path / "imp.safetensors")
    assert back.source == imp.source and all((back[k] == imp[k]).all() for k in imp)
    with pytest.raises(FileExistsError):
        imp.save(tmp_path / "imp.safetensors")
    safetensors_numpy.save_file({"w": np.ones((2, 3), np.float32)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CheckpointFormatError, match="1-D F32"):
        Importance.load(tmp_path / "weights.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "imp.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointFormatError):
        Importance.load(tmp_path / "cut.safetensors")


def test_checkpoint_with_importance_equals_quant_with_the_same_weights(tmp_path: Path) -> None:
    w = _checkpoint(tmp_path / "src")
    imp = _importance()
    imp.save(tmp_path / "imp.safetensors")
    for how, arg in (("mapping", imp), ("file", tmp_path / "imp.safetensors")):
        dst = tmp_path / how
        quantize_checkpoint(tmp_path / "src", dst, bits=3, group_size=32, method="mse", importance=arg, progress=False)
        sd = load_checkpoint(dst)
        for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight"):
            ref = hq.quantize(w[name], bits=3, group_size=32, method="mse", importance=imp[name])
            plain = hq.quantize(w[name], bits=3, group_size=32, method="mse")
            assert (sd[name].packed == ref.packed).all() and (sd[name].scales == ref.scales).all() and (sd[name].zeros == ref.zeros).all()
            assert not (sd[name].scales == plain.scales).all()  # the weights changed something
        cfg = json.loads((dst / "config.json").read_text())["quantization_config"]
        assert cfg["importance"] == {"text": "test"} and cfg["method"] == "mse"


def test_checkpoint_importance_errors_leave_nothing(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "src")
    imp = _importance()
    partial = Importance({k: v for k, v in imp.items() if "up_proj" in k})
    cases = [
        (dict(method="hqq", importance=imp), InvalidArgumentError, "only used by method='mse'"),
        (dict(method="mse", importance=partial), InvalidArgumentError, "no entry for 1 tensor.*down_proj"),
        (dict(method="mse", importance={"model.layers.0.mlp.up_proj.weight": np.ones(95),
                                        "model.layers.0.mlp.down_proj.weight": np.ones(64)}), hanpack.exceptions.HanpackError, "95 entries"),
        (dict(method="mse", importance=tmp_path / "missing.safetensors"), OSError, "missing.safetensors"),
    ]
    for i, (kw, exc, why) in enumerate(cases):
        with pytest.raises(exc, match=why):
            quantize_checkpoint(tmp_path / "src", tmp_path / f"out{i}", bits=4, group_size=32, progress=False, **kw)
        assert not (tmp_path / f"out{i}").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _stories() -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return require_shared(STORIES / "model.safetensors").parent


def test_activation_importance_equals_mean_squares_of_the_hidden_states() -> None:
    """With text: the chunks are BOS + 63 tokens; the q_proj statistics of layer i equal
    E[input_layernorm(h_i)²] and lm_head's equal E[h_last²] (transformers' hidden
    states), computed here without hooks."""
    src = _stories()
    import torch

    from hanpack.calibrate import activation_importance
    from hanpack.evaluate import load_causal_lm

    text = (src / "eval_tinystories_val.txt").read_text(encoding="utf-8").replace("<|story|>", "")
    imp = activation_importance(src, text=text, samples=5, seq_len=64, batch_size=2)
    tok = hanpack.Tokenizer.from_file(src / "tokenizer.model")
    ids = tok.encode(text)
    chunks = torch.tensor([[tok.bos_id] + ids[i * 63 : (i + 1) * 63] for i in range(5)])
    lm = load_causal_lm(src)
    with torch.no_grad():
        hs = lm(chunks, output_hidden_states=True).hidden_states
        for i, layer in enumerate(lm.model.layers):
            x = layer.input_layernorm(hs[i]).reshape(-1, hs[i].shape[-1]).double()
            np.testing.assert_allclose(imp[f"model.layers.{i}.self_attn.q_proj.weight"], (x * x).mean(0).numpy(), rtol=1e-5)
        last = hs[-1].reshape(-1, hs[-1].shape[-1]).double()
        np.testing.assert_allclose(imp["lm_head.weight"], (last * last).mean(0).numpy(), rtol=1e-5)
    linears = {n for n, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(imp) == {f"{n}.weight" for n in linears}
    assert imp.source == {"text": "given", "characters": len(text), "samples": 5, "seq_len": 64, "tokens": 320, "dtype": "float32"}
    # The model in bf16 (half the memory): the same statistics to bf16's precision.
    half = activation_importance(src, text=text, samples=5, seq_len=64, batch_size=2, dtype=torch.bfloat16, progress=False)
    assert half.source["dtype"] == "bfloat16"
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.4.mlp.down_proj.weight"):
        np.testing.assert_allclose(half[name], imp[name], rtol=0.1, atol=1e-3 * imp[name].max())


def test_self_sampled_importance_is_seeded_and_leaves_the_rng_alone() -> None:
    src = _stories()
    import torch

    from hanpack.calibrate import activation_importance

    state = torch.get_rng_state()
    a = activation_importance(src, samples=4, seq_len=32, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = activation_importance(src, samples=4, seq_len=32, seed=1)
    c = activation_importance(src, samples=4, seq_len=32, seed=2)
    name = "model.layers.1.mlp.down_proj.weight"
    assert (a[name] == b[name]).all() and not (a[name] == c[name]).all()
    assert a.source["tokens"] == 128 and a.source["text"] == "sampled by the model from BOS"
    assert all(v.shape == (172,) for k, v in a.items() if "down_proj" in k)
    with pytest.raises(InvalidArgumentError, match="seq_len"):
        activation_importance(src, seq_len=1)


def test_self_calibrated_mse_beats_rtn_at_int3_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole path on the real checkpoint: `hanpack calibrate`, then `hanpack quantize
    --method mse --importance`; perplexity well below RTN's at int3-g128 (RESULTS.md has
    the figures)."""
    src = _stories()
    from hanpack.cli import main
    from hanpack.evaluate import perplexity

    assert main(["calibrate", str(src), str(tmp_path / "imp.safetensors")]) == 0
    assert "8192 tokens (sampled by the model from BOS)" in capsys.readouterr().out
    assert main(["calibrate", str(src), str(tmp_path / "imp.safetensors")]) == 1  # exists
    args = ["--bits", "3", "--group-size", "128", "--quiet"]
    assert main(["quantize", str(src), str(tmp_path / "imp3"), "--method", "mse", "--importance", str(tmp_path / "imp.safetensors"), *args]) == 0
    assert main(["quantize", str(src), str(tmp_path / "rtn3"), "--method", "rtn", *args]) == 0
    assert main(["quantize", str(src), str(tmp_path / "hqq3"), "--method", "hqq", "--importance", str(tmp_path / "imp.safetensors"), *args]) == 1
    assert "only used by method='mse'" in capsys.readouterr().err
    text = (src / "eval_tinystories_val.txt").read_text(encoding="utf-8")
    ppl = {n: perplexity(tmp_path / n, text, separator="<|story|>", max_tokens=512).ppl for n in ("imp3", "rtn3")}
    assert ppl["imp3"] < 0.8 * ppl["rtn3"], ppl


def test_gguf_conversion_takes_the_importance_by_checkpoint_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An Importance keyed by the checkpoint's tensor names gives the same GGUF bytes as
    the same statistics under llama.cpp's names (the imatrix), and not those without one."""
    src = _stories()
    import warnings

    import hanpack.gguf as hg
    from hanpack.calibrate import activation_importance
    from hanpack.cli import main
    from hanpack.gguf.convert import gguf_name

    text = (src / "eval_tinystories_val.txt").read_text(encoding="utf-8")
    imp = activation_importance(src, text=text, samples=8, seq_len=128)
    by_gguf = {gguf_name(k): v for k, v in imp.items() if gguf_name(k) is not None}
    assert len(by_gguf) >= 35
    imp.save(tmp_path / "imp.safetensors")
    files = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*normalizes text")
        for how, arg in (("hf", imp), ("gguf", by_gguf), ("none", None)):
            hg.convert_checkpoint(src, tmp_path / f"{how}.gguf", file_type="Q4_K_M", imatrix=arg, progress=False)
            files[how] = hg.GGUFFile(tmp_path / f"{how}.gguf")
        assert main(["quantize", str(src), str(tmp_path / "cli.gguf"), "--format", "gguf", "--type", "Q4_K_M",
                     "--importance", str(tmp_path / "imp.safetensors"), "--quiet"]) == 0
    files["cli"] = hg.GGUFFile(tmp_path / "cli.gguf")
    names = list(files["gguf"].tensors)
    assert all(np.array_equal(files[h].raw(n), files["gguf"].raw(n)) for h in ("hf", "cli") for n in names)
    assert any(not np.array_equal(files["none"].raw(n), files["gguf"].raw(n)) for n in names)
