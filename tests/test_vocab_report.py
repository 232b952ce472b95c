"""hanpack.vocab.report and the ``hanpack vocab`` commands."""

from __future__ import annotations

import pytest

import hanpack
from hanpack.cli import main
from hanpack.vocab import extend
from hanpack.vocab.report import format_table, genre_of, plot, report

from conftest import CORPUS, LLAMA, require_shared, training_lines

spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def models(trained_models):
    base = trained_models["bpe_bytefallback"]
    ext = extend(base, ["越来越", "俱乐部", "天气很好", "繁體中文"])
    return base, ext


def test_figures_are_counted_from_the_tokenizers(models):
    base, ext = models
    texts = {"Simplified": training_lines(50), "English": ["hello world", "tokenizers must be exact"]}
    rows = report({"base": base, "ext": ext.tokenizer()}, texts, common=list("的越俱"), traditional=list("體繁"))
    b, e = rows
    sp = spm.SentencePieceProcessor(model_file=str(base))
    lines = [s for s in texts["Simplified"] if s]
    assert b.genres["Simplified"].tokens == sum(len(sp.encode(s)) for s in lines)
    assert b.genres["Simplified"].chars == sum(map(len, lines))
    assert e.genres["Simplified"].chars_per_token > b.genres["Simplified"].chars_per_token
    assert e.genres["English"].tokens == b.genres["English"].tokens  # no Chinese, same ids
    assert e.unreachable == 0 and e.duplicates == 0
    assert e.vocab_size == ext.vocab_size
    assert 0.0 <= b.common_coverage <= e.common_coverage <= 1.0
    table = format_table(rows)
    assert "Simplified c/t (b/t)" in table and table.count("\n") == 3


def test_png_chart(models, tmp_path):
    pytest.importorskip("matplotlib")
    base, ext = models
    rows = report({"base": base, "ext": ext.tokenizer()}, {"Simplified": training_lines(20)})
    out = plot(rows, tmp_path / "c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_genre_of():
    assert [genre_of(n) for n in ("zh-hans_news.txt", "zh-hant_law.jsonl", "mixed_x.txt", "en_wiki.txt", "a.py", "b.bin")] == [
        "Simplified", "Traditional", "mixed", "English", "code", "other"]


def test_report_needs_a_tokenizer():
    with pytest.raises(hanpack.exceptions.InvalidArgumentError):
        report({}, {"x": ["y"]})


def test_cli_train_extend_report(tmp_path, capsys):
    text = tmp_path / "zh-hans_t.txt"
    text.write_text("\n".join(training_lines(400)) + "\n", encoding="utf-8")
    assert main(["vocab", "train", str(text), f"{text}=0.5", "--vocab-size", "600", "--out", str(tmp_path / "v"), "--quiet"]) == 0
    assert "trained 600 pieces" in capsys.readouterr().out
    base = tmp_path / "v" / "tokenizer.model"
    pieces = tmp_path / "p.txt"
    pieces.write_text("越来越\n俱乐部\n", encoding="utf-8")
    assert main(["vocab", "extend", str(base), str(tmp_path / "e"), "--pieces", str(pieces)]) == 0
    out = capsys.readouterr().out
    assert "0 unreachable" in out
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "e" / "tokenizer.model"))
    assert sp.encode("越来越", out_type=str) == ["▁", "越来越"] or sp.encode("越来越", out_type=str) == ["▁越来越"]
    assert main(["vocab", "report", str(base), str(tmp_path / "e"), "--corpus", str(text), "--no-coverage"]) == 0
    assert "Simplified" in capsys.readouterr().out
    # An existing output folder is an error, not an overwrite.
    assert main(["vocab", "extend", str(base), str(tmp_path / "e"), "--pieces", str(pieces)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_cli_extend_to_size_with_variants_on_llama(tmp_path, capsys):
    pytest.importorskip("opencc")
    llama = require_shared(LLAMA)
    pieces = tmp_path / "p.txt"
    pieces.write_text("软件\n网络\n越来越\n俱乐部\n意大利\n", encoding="utf-8")
    assert main(["vocab", "extend", str(llama), str(tmp_path / "e"), "--pieces", str(pieces), "--add", "12",
                 "--variants", "s2twp"]) == 0
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "e" / "tokenizer.model"))
    assert 32000 < sp.get_piece_size() <= 32012
    assert sp.piece_to_id("軟體") != sp.unk_id()


def test_report_on_shared_tokenizers():
    src = require_shared(CORPUS / "zh-hans_news_peoples-daily-199801.txt")
    lines = src.read_text(encoding="utf-8").splitlines()[:200]
    rows = report({"llama": require_shared(LLAMA)}, {"Simplified": lines})
    sp = spm.SentencePieceProcessor(model_file=str(LLAMA))
    assert rows[0].genres["Simplified"].tokens == sum(len(sp.encode(s)) for s in lines if s)
    assert rows[0].unreachable == 0
