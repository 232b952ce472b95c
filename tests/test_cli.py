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
