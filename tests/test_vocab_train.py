"""hanpack.vocab.train: SentencePiece-compatible BPE training, word-augmented mode,
weights, bounded counting, and the script-variant helper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hanpack
from hanpack.exceptions import InvalidArgumentError
from hanpack.vocab import model_pieces, train, unreachable_pieces, with_script_variants

from conftest import CORPUS, describe_mismatches, require_shared, training_lines

spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("train") / "train.txt"
    p.write_text("\n".join(training_lines(800)) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def trained(corpus):
    return train([corpus], vocab_size=800, progress=False)


def test_model_loads_in_stock_sentencepiece_with_identical_ids(trained, sample_lines):
    sp = spm.SentencePieceProcessor(model_proto=trained.model)
    assert sp.get_piece_size() == trained.vocab_size == 800
    tok = trained.tokenizer()
    want = [sp.encode(s) for s in sample_lines]
    got = [list(tok.encode(s)) for s in sample_lines]
    assert want == got, describe_mismatches(sample_lines, want, got)
    assert [sp.decode(w) for w in want[:50]] == [s for s in sample_lines[:50]]


def test_layout_scores_and_no_dead_pieces(trained):
    sp = spm.SentencePieceProcessor(model_proto=trained.model)
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert all(sp.is_byte(i) for i in range(3, 259))
    scores = [sp.get_score(i) for i in range(259, sp.get_piece_size())]
    assert all(a > b for a, b in zip(scores, scores[1:]))  # distinct, in merge order
    assert trained.merges + trained.alphabet + 259 == trained.vocab_size
    assert unreachable_pieces(trained.model) == []
    # Frequent words of the text became single pieces.
    assert len(sp.encode("今天天气很好")) <= 2  # ▁ and the clause, or ▁ merged in


def test_units_follow_sentencepiece_rules(trained):
    pieces = model_pieces(trained.model)
    assert not any(any(c.isdigit() for c in p) and len(p.lstrip("▁")) > 1 for p in pieces)  # split_digits
    assert not any("▁" in p[1:] for p in pieces)  # ▁ only leads
    assert not any(any("\u4e00" <= c <= "\u9fff" for c in p) and any(c.isascii() and c.isalpha() for c in p) for p in pieces)


def test_text_blocks_split_at_newlines_only(tmp_path):
    from hanpack.vocab.train import _text_blocks

    p = tmp_path / "t.txt"
    p.write_bytes("第一行\r\n第二行\n没有换行".encode("utf-8"))
    blocks = list(_text_blocks(p, 5))
    assert b"".join(b for _, b in blocks) == p.read_bytes()
    assert all(b.endswith(b"\n") for _, b in blocks[:-1])
    assert [o for o, _ in blocks] == [0, len("第一行\r\n".encode()), len("第一行\r\n第二行\n".encode())]


def test_text_and_jsonl_inputs_count_the_same(tmp_path):
    lines = training_lines(300)
    t, j = tmp_path / "a.txt", tmp_path / "a.jsonl"
    t.write_text("\n".join(lines) + "\n", encoding="utf-8")
    j.write_text("".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in lines), encoding="utf-8")
    assert train([t], vocab_size=600, progress=False).model == train([j], vocab_size=600, progress=False).model


def test_deterministic(corpus, trained):
    again = train([corpus], vocab_size=800, progress=False, num_threads=1)
    assert again.model == trained.model


def test_too_high_a_vocab_size_is_an_error_unless_soft(corpus):
    with pytest.raises(InvalidArgumentError, match="too high.*vocab_size <= "):
        train([corpus], vocab_size=5000, progress=False)
    soft = train([corpus], vocab_size=5000, hard_vocab_limit=False, progress=False)
    assert 800 <= soft.vocab_size < 5000


def test_weights_change_what_is_learned(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("甲乙丙丁\n" * 50, encoding="utf-8")
    b.write_text("戊己庚辛\n" * 50, encoding="utf-8")
    light = train([a, (b, 0.01)], vocab_size=290, progress=False, min_frequency=2, hard_vocab_limit=False)
    pieces = model_pieces(light.model)
    assert "▁甲乙丙丁" in pieces and "▁戊己庚辛" not in pieces


def test_word_augmented_mode_keeps_merges_inside_words_and_adds_whole_words(corpus):
    seg = hanpack.Segmenter.from_text("今天 100\n天气 100\n很好 100\n公园 100\n散步 100\n人工智能 100\n改变 100\n世界 100\n")
    v = train([corpus], vocab_size=700, segmenter=seg, whole_words=20, progress=False, hard_vocab_limit=False)
    pieces = model_pieces(v.model)
    assert "今天天" not in pieces and "▁今天天" not in pieces  # never across 今天|天气
    assert v.whole_words > 0 and "人工智能" in pieces
    sp = spm.SentencePieceProcessor(model_proto=v.model)
    assert unreachable_pieces(v.model) == []
    assert sp.encode("人工智能") == list(v.tokenizer().encode("人工智能"))


def test_jsonl_fields_and_bad_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"id": "zzzz", "text": "你好世界"}) + "\n\n" + json.dumps({"id": "q", "text": "你好"}) + "\n", encoding="utf-8")
    v = train([p], vocab_size=265, progress=False, hard_vocab_limit=False)
    assert "z" not in model_pieces(v.model)  # the id field is not text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match="bad.jsonl:2"):
        train([bad], vocab_size=300, progress=False)


def test_bounded_counting_prunes_rare_units(corpus):
    v = train([corpus], vocab_size=700, max_units=50, progress=False, hard_vocab_limit=False)
    assert v.distinct_units <= 50
    assert spm.SentencePieceProcessor(model_proto=v.model).get_piece_size() <= 700


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(vocab_size=10), "too small"),
        (dict(vocab_size=700, whole_words=5), "segmenter"),
        (dict(vocab_size=700, min_frequency=0), "min_frequency"),
        (dict(vocab_size=700, character_coverage=0.0), "character_coverage"),
    ],
)
def test_bad_arguments(corpus, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        train([corpus], progress=False, **kwargs)


def test_missing_input_and_bad_weight(tmp_path, corpus):
    with pytest.raises(FileNotFoundError):
        train([tmp_path / "nope.txt"], vocab_size=700, progress=False)
    with pytest.raises(InvalidArgumentError, match="weight"):
        train([(corpus, -1.0)], vocab_size=700, progress=False)


def test_invalid_utf8_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"ok\n\xff\xfe bad\n")
    with pytest.raises(InvalidArgumentError, match=r"bad.txt: not UTF-8 text \(invalid byte at offset 3\)"):
        train([p], vocab_size=300, progress=False)


def test_save_writes_sentencepiece_and_transformers_files(trained, tmp_path):
    out = trained.save(tmp_path / "v")
    assert sorted(p.name for p in out.iterdir()) == ["special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    assert spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size() == 800


def test_with_script_variants():
    conv = {"软件": "軟體", "网络": "網路"}.get
    assert with_script_variants(["软件", "网络", "的"], conv, limit=1) == ["软件", "軟體", "网络", "的"]
    assert with_script_variants(["软件", "軟體"], conv) == ["软件", "軟體"]
    with pytest.raises(InvalidArgumentError):
        with_script_variants(["x"], conv, limit=-1)


def test_opencc_variants_when_installed():
    pytest.importorskip("opencc")
    from hanpack.vocab import opencc_converter

    assert with_script_variants(["软件"], opencc_converter("s2twp")) == ["软件", "軟體"]


def test_trains_on_the_shared_corpus_like_sentencepiece_loads_it(tmp_path):
    src = require_shared(CORPUS / "zh-hant_wiki_drcd-dev-contexts.txt")
    v = train([src], vocab_size=8000, progress=False)
    sp = spm.SentencePieceProcessor(model_proto=v.model)
    lines = [s for s in src.read_text(encoding="utf-8").splitlines()[:300] if s]
    want = [sp.encode(s) for s in lines]
    got = [list(x) for x in v.tokenizer().encode_batch(lines)]
    assert want == got, describe_mismatches(lines, want, got)
    assert unreachable_pieces(v.model) == []
    assert sum(map(len, lines)) / sum(map(len, want)) > 1.2  # it learned Traditional words (LLaMA: ~0.6)


_ALPHABET = sorted(set("".join(training_lines(50))) | set(" ▁\t12"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=60))
def test_hypothesis_trained_model_parity(trained, text):
    sp = spm.SentencePieceProcessor(model_proto=trained.model)
    assert list(trained.tokenizer().encode(text)) == sp.encode(text)
