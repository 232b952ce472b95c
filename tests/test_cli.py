"""The `hanpack` command line."""

from __future__ import annotations

import subprocess
import sys

import hanpack
from hanpack.cli import main


def test_demo_runs_on_bundled_data(capsys):
    assert main(["demo", "--mb", "1", "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert "MB/s" in out and "tokens:" in out


def test_encode_decode_round_trip(capsys, trained_models):
    model = str(trained_models["bpe_bytefallback"])
    assert main(["encode", "--model", model, "你好，世界"]) == 0
    ids = capsys.readouterr().out.split()
    tok = hanpack.Tokenizer.from_file(model)
    assert [int(i) for i in ids] == tok.encode("你好，世界")
    assert main(["decode", "--model", model, *ids]) == 0
    assert capsys.readouterr().out.strip() == "你好，世界"


def test_errors_are_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    assert main(["encode", "--model", str(bad), "x"]) == 1
    assert "not a valid SentencePiece model" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "hanpack", "--version"], capture_output=True, text=True, check=True)
    assert hanpack.__version__ in out.stdout


def test_bundled_demo_tokenizer_matches_sentencepiece():
    """The bundled demo model (trained by python/hanpack/data/build_default.py) round-trips
    the bundled sample and gives sentencepiece's ids."""
    import pytest

    spm = pytest.importorskip("sentencepiece")
    tok = hanpack.Tokenizer.from_file(hanpack.data.default_model_path())
    lines = hanpack.data.sample_text().splitlines()
    assert all(tok.decode(tok.encode(line)) == line for line in lines)
    sp = spm.SentencePieceProcessor(model_file=str(hanpack.data.default_model_path()))
    assert tok.encode_batch(lines) == [sp.encode(t) for t in lines]


def test_quantize_to_gguf_writes_what_convert_checkpoint_writes(tmp_path, trained_models, capsys):
    """`hanpack quantize SRC OUT.gguf --format gguf --type Q4_K_M` on a small random LLaMA
    (written here; the converter itself is checked against llama.cpp in
    test_gguf_convert.py): the file equals `convert_checkpoint`'s byte for byte, the
    summary names the type mix, and an existing destination is refused untouched."""
    import shutil

    import pytest

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import hanpack.gguf as hg

    tok = hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=tok.vocab_size, hidden_size=256, intermediate_size=512,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=128, bos_token_id=1, eos_token_id=2)
    src = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(cfg).save_pretrained(src)
    shutil.copyfile(trained_models["bpe_bytefallback"], src / "tokenizer.model")

    out = tmp_path / "tiny-Q4_K_M.gguf"
    assert main(["quantize", str(src), str(out), "--format", "gguf", "--type", "q4_k_m", "--quiet"]) == 0
    printed = capsys.readouterr().out
    ref = tmp_path / "api.gguf"
    report = hg.convert_checkpoint(src, ref, file_type="Q4_K_M", progress=False)
    types = list(report.tensor_types.values())
    assert printed.startswith(f"Q4_K_M: {len(types)} tensors (") and f"written to {out}" in printed
    assert f"{types.count('Q4_K')} Q4_K" in printed and types.count("Q6_K") > 0  # llama.cpp's M mix
    assert out.read_bytes() == ref.read_bytes()
    f = hg.GGUFFile(out)
    assert {n: t.qtype for n, t in f.tensors.items()} == report.tensor_types
    assert f.metadata["tokenizer.ggml.model"] == "llama"

    before = out.read_bytes()
    assert main(["quantize", str(src), str(out), "--format", "gguf", "--quiet"]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api.gguf", "tiny-Q4_K_M.gguf", "tiny-llama"]
