"""hanpack.quantize_checkpoint / load_checkpoint / `hanpack quantize`: what is written,
that it equals hanpack.quant on each tensor, that the reference safetensors reader loads
it, and that bad input gives a specific error with nothing left behind."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hanpack
from hanpack.checkpoint import DEFAULT_EXCLUDE, load_checkpoint, quantize_checkpoint
from hanpack.exceptions import CheckpointFormatError, InvalidArgumentError, NonFiniteWeightError, QuantizationError

from conftest import SHARED, require_shared

safetensors_numpy = pytest.importorskip("safetensors.numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")

STORIES = SHARED / "models" / "stories260k"


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "model.embed_tokens.weight": rng.standard_normal((50, 64)).astype(np.float32),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "model.layers.0.mlp.down_proj.weight": (rng.standard_normal((64, 172)) * 0.05).astype(np.float16),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((172, 64)).astype(ml_dtypes.bfloat16),
        "model.layers.0.input_layernorm.weight": np.ones(64, np.float32),
        "model.position_ids": np.arange(10, dtype=np.int64),
        "lm_head.weight": rng.standard_normal((50, 64)).astype(np.float32),
    }


def _write_checkpoint(root: Path, weights: dict[str, np.ndarray], shards: int = 2) -> Path:
    root.mkdir(parents=True)
    names = sorted(weights)
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: weights[n] for n in names[i::shards]}
        safetensors_numpy.save_file(part, str(root / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    (root / "tokenizer_config.json").write_text("{}")
    (root / "tokenizer.model").write_bytes(b"not really a tokenizer, only copied")
    (root / "pytorch_model.bin").write_bytes(b"must not be copied")
    return root


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return _write_checkpoint(tmp_path / "src", _weights())


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _as_f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


@pytest.mark.parametrize("method", ["rtn", "mse", "hqq"])
@pytest.mark.parametrize("bits,group", [(4, 128), (3, 64), (2, 32), (8, None)])
def test_quantized_checkpoint_equals_per_tensor_quantize(ckpt: Path, tmp_path: Path, method: str, bits: int, group: int | None) -> None:
    before = _snapshot(ckpt)
    dst = tmp_path / "out"
    report = quantize_checkpoint(ckpt, dst, bits=bits, group_size=group, method=method, progress=False)
    assert _snapshot(ckpt) == before  # the source is only read
    src = _weights()
    chosen = {t.name for t in report.quantized}
    assert chosen == {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"}
    loaded = load_checkpoint(dst)
    assert set(loaded) == set(src)
    for name, w in src.items():
        got = loaded[name]
        if name in chosen:
            ref = hanpack.quant.quantize(w, bits=bits, group_size=group, method=method, name=name)
            assert isinstance(got, hanpack.quant.QuantizedTensor)
            np.testing.assert_array_equal(got.packed, ref.packed)
            np.testing.assert_array_equal(got.scales, ref.scales)
            np.testing.assert_array_equal(got.zeros, ref.zeros)
            assert got.shape == w.shape and got.bits_per_weight == ref.bits_per_weight
            # The reported error is the error of what was stored.
            d, x = got.dequantize().astype(np.float64), _as_f32(w).astype(np.float64)
            rep = next(t for t in report.tensors if t.name == name)
            assert rep.relative_error == pytest.approx(np.linalg.norm(d - x) / np.linalg.norm(x), rel=1e-6)
            assert rep.max_abs_error == pytest.approx(float(np.abs(d - x).max()), rel=1e-6)
        else:
            assert got.dtype == w.dtype and got.shape == w.shape
            np.testing.assert_array_equal(np.asarray(got).view(np.uint8), w.view(np.uint8))


def test_output_files_config_index_and_reference_reader(ckpt: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    quantize_checkpoint(ckpt, dst, bits=4, group_size=64, method="hqq", progress=False)
    files = sorted(p.name for p in dst.iterdir())
    assert files == sorted([
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "quantization_report.json", "tokenizer.model", "tokenizer_config.json",
    ])
    assert (dst / "tokenizer.model").read_bytes() == (ckpt / "tokenizer.model").read_bytes()
    qc = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "hanpack" and (qc["bits"], qc["group_size"], qc["sym"], qc["method"]) == (4, 64, False, "hqq")
    assert qc["packing"] == hanpack.checkpoint.PACKING
    assert qc["modules_to_not_convert"] == ["lm_head", "model.embed_tokens"]
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    # The reference reader loads every shard; the index names exactly their tensors.
    on_disk = {}
    total = 0
    for shard in sorted(set(index["weight_map"].values())):
        for name, arr in safetensors_numpy.load_file(str(dst / shard)).items():
            on_disk[name] = shard
            total += arr.nbytes
    assert on_disk == index["weight_map"] and index["metadata"]["total_size"] == total
    assert "model.layers.0.mlp.down_proj.qweight" in on_disk and "model.layers.0.mlp.down_proj.weight" not in on_disk
    report = json.loads((dst / "quantization_report.json").read_text())
    assert len([t for t in report["tensors"] if t["quantized"]]) == 3


def test_include_exclude_patterns(ckpt: Path, tmp_path: Path) -> None:
    r = quantize_checkpoint(ckpt, tmp_path / "a", bits=4, group_size=32, include=["*mlp*"], progress=False)
    assert {t.name for t in r.quantized} == {"model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"}
    r = quantize_checkpoint(ckpt, tmp_path / "b", bits=4, group_size=32, exclude=DEFAULT_EXCLUDE + ("q_proj",), progress=False)
    assert {t.name for t in r.quantized} == {"model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight"}
    r = quantize_checkpoint(ckpt, tmp_path / "c", bits=4, group_size=32, exclude=(), progress=False)
    assert "lm_head.weight" in {t.name for t in r.quantized} and "model.embed_tokens.weight" in {t.name for t in r.quantized}
    with pytest.raises(QuantizationError, match="input_layernorm.*not a 2-D"):
        quantize_checkpoint(ckpt, tmp_path / "d", bits=4, group_size=32, include=["input_layernorm"], exclude=(), progress=False)
    with pytest.raises(QuantizationError, match="position_ids.*dtype I64"):
        quantize_checkpoint(ckpt, tmp_path / "e", bits=4, group_size=32, include=["position_ids"], progress=False)
    with pytest.raises(InvalidArgumentError, match="matches no tensor"):
        quantize_checkpoint(ckpt, tmp_path / "f", bits=4, group_size=32, include=["nothing-like-this"], progress=False)
    assert not any(p.name.startswith((".d", ".e", ".f", "d", "e", "f")) for p in tmp_path.iterdir())


def test_single_file_source(tmp_path: Path) -> None:
    w = {"layer.weight": np.random.default_rng(1).standard_normal((8, 96)).astype(np.float32)}
    safetensors_numpy.save_file(w, str(tmp_path / "one.safetensors"))
    quantize_checkpoint(tmp_path / "one.safetensors", tmp_path / "out", bits=3, group_size=32, method="rtn", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.safetensors", "quantization_report.json"]
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "out")["layer.weight"].packed, hanpack.quant.quantize(w["layer.weight"], bits=3, group_size=32, method="rtn").packed)


def _no_leftovers(parent: Path, dst: Path) -> None:
    assert not dst.exists()
    assert not [p for p in parent.iterdir() if "hanpack-tmp" in p.name]


def test_bad_arguments_and_existing_destination(ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        quantize_checkpoint(ckpt, tmp_path / "exists", progress=False)
    for kwargs, match in [({"bits": 5}, "bits"), ({"method": "gptq"}, "method"), ({"group_size": 48}, "multiple of 32")]:
        with pytest.raises(InvalidArgumentError, match=match):
            quantize_checkpoint(ckpt, tmp_path / "x", progress=False, **kwargs)
    with pytest.raises(FileNotFoundError):
        quantize_checkpoint(tmp_path / "missing", tmp_path / "x", progress=False)
    _no_leftovers(tmp_path, tmp_path / "x")


def _shard(ckpt: Path) -> Path:
    return ckpt / "model-00001-of-00002.safetensors"


def _edit_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
        (lambda p: p.write_bytes(p.read_bytes()[:5]), "shorter than the 8-byte"),
        (lambda p: p.write_bytes(b"\xff" * 8 + p.read_bytes()[8:]), "header length"),
        (lambda p: _edit_header(p, lambda h: h["model.layers.0.mlp.up_proj.weight"].update(shape=[172, 63])), "dtype size"),
        (lambda p: _edit_header(p, lambda h: h["model.layers.0.mlp.up_proj.weight"].update(dtype="F32")), "dtype size"),
        (lambda p: _edit_header(p, lambda h: h["model.layers.0.mlp.up_proj.weight"].update(dtype="F128")), "does not parse"),
        (lambda p: _edit_header(p, lambda h: [t.update(data_offsets=[t["data_offsets"][0] + 2, t["data_offsets"][1] + 2]) for k, t in h.items() if k != "__metadata__"]), "does not start where"),
        (lambda p: p.write_bytes(b"garbage!" + p.read_bytes()[8:]), "header"),
    ],
)
def test_corrupt_source_is_a_specific_error_and_leaves_nothing(ckpt: Path, tmp_path: Path, corrupt, match: str) -> None:
    corrupt(_shard(ckpt))
    before = _snapshot(ckpt)
    with pytest.raises(CheckpointFormatError, match=match) as e:
        quantize_checkpoint(ckpt, tmp_path / "out", progress=False)
    assert str(_shard(ckpt)) in str(e.value)
    assert _snapshot(ckpt) == before
    _no_leftovers(tmp_path, tmp_path / "out")


def test_int3_written_before_its_layout_changed_is_refused(ckpt: Path, tmp_path: Path) -> None:
    # Tensors record their packing; int3 tensors without one were written in hanpack-v1's bit
    # planes, which this version no longer reads (int4 ones read on).
    out = tmp_path / "q3"
    hanpack.quantize_checkpoint(ckpt, out, bits=3, group_size=32, method="rtn")
    shard = sorted(out.glob("*.safetensors"))[0]
    meta = json.loads(hanpack._core.SafetensorsReader(shard).metadata()["hanpack.quantized"])
    assert {d["packing"] for d in meta.values()} == {"hanpack-v2"}
    assert load_checkpoint(out)

    def drop_packing(h: dict) -> None:
        m = json.loads(h["__metadata__"]["hanpack.quantized"])
        for d in m.values():
            del d["packing"]
        h["__metadata__"]["hanpack.quantized"] = json.dumps(m)

    _edit_header(shard, drop_packing)
    with pytest.raises(CheckpointFormatError, match=r"tensor '.*\.weight': int3 in packing 'hanpack-v1'"):
        load_checkpoint(out)


def test_lying_index_and_config(ckpt: Path, tmp_path: Path) -> None:
    (ckpt / "model.safetensors.index.json").write_text('{"weight_map": [1, 2]}')
    with pytest.raises(CheckpointFormatError, match="index"):
        quantize_checkpoint(ckpt, tmp_path / "out", progress=False)
    (ckpt / "model.safetensors.index.json").write_text('{"weight_map": {"a": "../elsewhere.safetensors"}}')
    with pytest.raises(CheckpointFormatError, match="not a file name"):
        quantize_checkpoint(ckpt, tmp_path / "out", progress=False)
    (ckpt / "model.safetensors.index.json").unlink()
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointFormatError, match="config.json"):
        quantize_checkpoint(ckpt, tmp_path / "out", progress=False)
    _no_leftovers(tmp_path, tmp_path / "out")


def test_non_finite_weight_names_the_tensor(ckpt: Path, tmp_path: Path) -> None:
    w = _weights()
    w["model.layers.0.self_attn.q_proj.weight"][3, 7] = np.nan
    src = _write_checkpoint(tmp_path / "nan", w)
    with pytest.raises(NonFiniteWeightError, match=r"q_proj.weight.*\[3, 7\]"):
        quantize_checkpoint(src, tmp_path / "out", progress=False)
    _no_leftovers(tmp_path, tmp_path / "out")


_WRITE_LIMITED = """
import resource, signal, sys
import hanpack
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    hanpack.quantize_checkpoint(sys.argv[1], sys.argv[2], bits=8, group_size=32, progress=False)
except OSError as e:
    print("OSError", e.errno, e)
    sys.exit(3)
"""


@pytest.mark.parametrize("limit", [100, 4000, 20000])
def test_write_error_leaves_nothing(ckpt: Path, tmp_path: Path, limit: int) -> None:
    """A failing write (a file-size limit: the same path through the code as a full
    disk) is an OSError naming the file, and no partial output is left."""
    before = _snapshot(ckpt)
    r = subprocess.run([sys.executable, "-c", _WRITE_LIMITED, str(ckpt), str(tmp_path / "out"), str(limit)], capture_output=True, text=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "cannot write" in r.stdout and ".safetensors" in r.stdout
    assert _snapshot(ckpt) == before
    _no_leftovers(tmp_path, tmp_path / "out")


def test_cli_quantize(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hanpack.cli import main

    assert main(["quantize", str(ckpt), str(tmp_path / "out"), "--bits", "3", "--group-size", "32", "--method", "rtn", "--exclude", "q_proj", "--quiet", "--report"]) == 0
    out = capsys.readouterr().out
    assert "model.layers.0.mlp.down_proj.weight" in out and "SNR dB" in out and "quantized 2 of 7 tensors" in out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]["bits"] == 3
    assert "model.layers.0.self_attn.q_proj" in json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]["modules_to_not_convert"]
    assert main(["quantize", str(ckpt), str(tmp_path / "out"), "--quiet"]) == 1  # exists: an error message, no traceback


def test_stories260k_short_last_group(tmp_path: Path) -> None:
    """The real checkpoint: down_proj's 172 inputs at group 128 give groups of 128 and 44."""
    src = require_shared(STORIES / "model.safetensors").parent
    r = quantize_checkpoint(src, tmp_path / "q", bits=4, group_size=128, method="hqq", progress=False)
    assert len(r.quantized) == 35
    sd = load_checkpoint(tmp_path / "q")
    down = sd["model.layers.0.mlp.down_proj.weight"]
    assert down.shape == (64, 172) and down.scales.shape == (64, 2)
    ref = safetensors_numpy.load_file(str(src / "model.safetensors"))
    rel = np.linalg.norm(down.dequantize() - ref["model.layers.0.mlp.down_proj.weight"]) / np.linalg.norm(ref["model.layers.0.mlp.down_proj.weight"])
    assert 0 < rel < 0.15
    assert (tmp_path / "q" / "tokenizer.model").read_bytes() == (src / "tokenizer.model").read_bytes()


def test_eval_ppl_reproduces_the_provenance_figure(tmp_path: Path) -> None:
    """transformers on the original stories260k gives PROVENANCE.md's 3.351 on 3,211
    tokens; its int8 copy is within 0.5%, its int3 copy clearly worse."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    src = require_shared(STORIES / "model.safetensors").parent
    from hanpack.evaluate import perplexity

    text = (src / "eval_tinystories_val.txt").read_text(encoding="utf-8")
    base = perplexity(src, text, separator="<|story|>", max_tokens=512)
    assert (base.n_tokens, base.n_documents) == (3211, 10)
    assert base.ppl == pytest.approx(3.351, abs=5e-4)
    quantize_checkpoint(src, tmp_path / "q8", bits=8, group_size=32, method="rtn", progress=False)
    quantize_checkpoint(src, tmp_path / "q3", bits=3, group_size=32, method="rtn", progress=False)
    q8 = perplexity(tmp_path / "q8", text, separator="<|story|>", max_tokens=512)
    q3 = perplexity(tmp_path / "q3", text, separator="<|story|>", max_tokens=512)
    assert abs(q8.ppl / base.ppl - 1) < 0.005
    assert q3.ppl > base.ppl * 1.2
    # Sliding windows score every token once, also past the 512-token context.
    full = perplexity(src, text, separator="<|story|>", window=512, stride=256)
    assert full.n_tokens == 3322


def test_cli_eval_ppl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    src = require_shared(STORIES / "model.safetensors").parent
    from hanpack.cli import main

    quantize_checkpoint(src, tmp_path / "q4", bits=4, group_size=32, method="mse", progress=False)
    args = ["eval-ppl", str(src), str(tmp_path / "q4"), "--text", str(src / "eval_tinystories_val.txt"), "--separator", "<|story|>", "--max-tokens", "512"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "perplexity 3.3511 on 3211 tokens, 10 documents" in lines[0]
    assert "% vs" in lines[1] and "q4" in lines[1]


def test_fp8_tensors_pass_through(tmp_path: Path) -> None:
    """A dtype numpy lacks (FP8) is copied byte for byte and counted in the index."""
    w = _weights()
    w["model.fp8_scales"] = np.arange(16, dtype=np.uint8)
    src = _write_checkpoint(tmp_path / "src", w)
    shard = next(f for f, names in _shards_of(src).items() if "model.fp8_scales" in names)
    _edit_header(src / shard, lambda h: h["model.fp8_scales"].update(dtype="F8_E4M3"))
    quantize_checkpoint(src, tmp_path / "out", bits=4, group_size=32, progress=False)
    r = hanpack._core.SafetensorsReader(tmp_path / "out" / shard)
    assert r.read("model.fp8_scales") == ("F8_E4M3", [16], bytes(range(16)))
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    sizes = sum(len(hanpack._core.SafetensorsReader(tmp_path / "out" / f).read(n)[2]) for n, f in index["weight_map"].items())
    assert index["metadata"]["total_size"] == sizes
    with pytest.raises(CheckpointFormatError, match="F8_E4M3 has no numpy equivalent"):
        load_checkpoint(tmp_path / "out")


def _shards_of(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, f in json.loads((root / "model.safetensors.index.json").read_text())["weight_map"].items():
        out.setdefault(f, []).append(name)
    return out
