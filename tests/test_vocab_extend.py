"""hanpack.vocab.extend: every added piece reachable with stock sentencepiece, text
without Chinese unchanged, base ids kept, and sentencepiece / hanpack / transformers
agreeing id for id on the extended files."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hanpack
from hanpack.exceptions import InvalidArgumentError
from hanpack.vocab import extend, unreachable_pieces

from conftest import CORPUS, LLAMA, TOKENIZERS, corpus_lines, describe_mismatches, require_shared

spm = pytest.importorskip("sentencepiece")
from sentencepiece import sentencepiece_model_pb2 as pb  # noqa: E402

CHINESE_LLAMA_1 = TOKENIZERS / "chinese-llama-alpaca" / "chinese_llama_tokenizer.derived.model"
CHINESE_LLAMA_2 = TOKENIZERS / "chinese-llama-alpaca-2" / "tokenizer.model"

# Words of the test corpus (conftest.training_lines) and words it does not contain, in
# both scripts; several are dead when appended naively (no pair of pieces forms them).
NEW_WORDS = [
    "越来越", "俱乐部", "意大利", "西班牙", "天气很好", "公园散步", "分词器", "模型训练",
    "繁體中文", "簡體中文", "這個工具", "速度非常快", "人工智能", "改变世界", "洗手間",
    "学习", "學習", "北京", "上海和广州", "大城市", "▁中文", "，我们", "。", "的",
    "hello",  # no CJK character: skipped
    "繁體中文",  # duplicate: skipped
]


# The characters extend() treats as Chinese (vocab/extend.rs `is_cjk`).
CJK = re.compile("[\u2e80-\u2fdf\u3000-\u303f\u3100-\u312f\u31a0-\u31ef\u3400-\u4dbf\u4e00-\u9fff"
                 "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U000323af]")


def stock(model: bytes, *, dummy_prefix: bool = True):
    m = pb.ModelProto()
    m.ParseFromString(model)
    if not dummy_prefix:
        m.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def stock_dead(model: bytes, ids) -> list[str]:
    """Pieces among `ids` that stock sentencepiece does not produce for their own text."""
    sp = stock(model, dummy_prefix=False)
    return [sp.id_to_piece(i) for i in ids if sp.encode(sp.id_to_piece(i).replace("\u2581", " ")) != [i]]


def normal_ids(model: bytes, start: int = 0) -> list[int]:
    sp = stock(model)
    return [i for i in range(start, sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))]


@pytest.fixture(scope="module")
def base(trained_models) -> bytes:
    return trained_models["bpe_bytefallback"].read_bytes()


@pytest.fixture(scope="module")
def ext(base):
    return extend(base, NEW_WORDS)


def test_naive_append_leaves_dead_pieces(base):
    # The construction Chinese-LLaMA's merge script used: append with score 0.
    m = pb.ModelProto()
    m.ParseFromString(base)
    have = {p.piece for p in m.pieces}
    first = len(m.pieces)
    for w in dict.fromkeys(NEW_WORDS):
        if w not in have:
            m.pieces.add(piece=w, score=0.0)
    naive = m.SerializeToString()
    dead = stock_dead(naive, range(first, len(m.pieces)))
    assert "越来越" in dead and "俱乐部" in dead
    # hanpack's check finds exactly the pieces stock sentencepiece does not produce.
    assert {p for _, p in unreachable_pieces(naive)} >= set(dead)
    assert sorted(p for _, p in unreachable_pieces(naive)) == sorted(stock_dead(naive, normal_ids(naive)))


def test_every_added_piece_is_reachable_with_stock_sentencepiece(ext):
    assert ext.unreachable == ()
    ids = [a.id for a in ext.added]
    assert stock_dead(ext.model, ids) == []
    assert ext.count("intermediate") > 0  # 越来越 and friends needed them
    assert unreachable_pieces(ext.model) == unreachable_pieces(ext.model[:0] or ext.model) and all(
        i < ext.base_size for i, _ in unreachable_pieces(ext.model))


def test_base_ids_kept_and_new_ids_appended(base, ext):
    b, e = stock(base), stock(ext.model)
    assert e.get_piece_size() == ext.vocab_size == ext.base_size + len(ext.added)
    assert ext.base_size == b.get_piece_size()
    for i in range(b.get_piece_size()):
        assert (e.id_to_piece(i), e.get_score(i), e.is_control(i), e.is_byte(i)) == (
            b.id_to_piece(i), b.get_score(i), b.is_control(i), b.is_byte(i))
    assert [a.id for a in ext.added] == list(range(ext.base_size, ext.vocab_size))
    requested = [a.piece for a in ext.added if a.origin == "requested"]
    assert "越来越" in requested and "▁中文" in requested


def test_skipped_pieces_are_named_with_a_reason(base, ext):
    reasons = dict(ext.skipped)
    assert reasons["hello"] == "no CJK character"
    assert ("繁體中文", "duplicate") in ext.skipped
    b = stock(base)
    for piece, reason in ext.skipped:
        if reason == "already in base":
            assert b.piece_to_id(piece) != b.unk_id()


def test_text_without_chinese_encodes_as_the_base_model(base, ext, sample_lines):
    b, e = stock(base), stock(ext.model)
    lines = [CJK.sub("", s) for s in sample_lines]  # the same lines with Chinese removed
    assert sum(1 for s in lines if s.strip()) > 200
    assert [e.encode(s) for s in lines] == [b.encode(s) for s in lines]


def test_hanpack_equals_sentencepiece_on_the_extended_model(ext, sample_lines):
    sp, tok = stock(ext.model), ext.tokenizer()
    texts = sample_lines + [w for w in NEW_WORDS] + ["越来越多的人去俱乐部", "意大利和西班牙"]
    want = [sp.encode(s) for s in texts]
    got = [list(tok.encode(s)) for s in texts]
    assert want == got, describe_mismatches(texts, want, got)
    # And the new words become single pieces in running text.
    assert sp.encode("越来越", out_type=str) == ["▁", "越来越"]


_ALPHABET = sorted({c for w in NEW_WORDS for c in w} | set("abc ▁12，。的了"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_hypothesis_parity_and_unchanged_non_chinese(ext, base, text):
    sp = stock(ext.model)
    assert list(ext.tokenizer().encode(text)) == sp.encode(text)
    if not CJK.search(text):
        assert sp.encode(text) == stock(base).encode(text)


def test_transformers_loads_the_saved_files_with_identical_ids(ext, sample_lines, tmp_path):
    transformers = pytest.importorskip("transformers")
    out = ext.save(tmp_path / "extended")
    assert sorted(p.name for p in out.iterdir()) == [
        "added_pieces.tsv", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    hf = transformers.AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    tok = hanpack.Tokenizer.from_file(out / "tokenizer.model")
    texts = [s for s in sample_lines if "<" not in s] + ["越来越多的人去俱乐部"]  # literal "<s>" is special to transformers
    want = [sp.encode(s) for s in texts]
    assert [hf.encode(s, add_special_tokens=False) for s in texts] == want
    assert [list(tok.encode(s)) for s in texts] == want
    assert hf.encode("越来越")[0] == sp.bos_id()
    assert hf.decode(sp.encode("越来越多 的人"), skip_special_tokens=True) == "越来越多 的人"


def test_save_never_overwrites(ext, tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError):
        ext.save(tmp_path / "x")


def test_without_repair_dead_pieces_are_skipped(base):
    ext = extend(base, ["越来越", "俱乐部"], repair=False)
    assert dict(ext.skipped).get("越来越") == "unreachable"
    assert ext.count("intermediate") == 0 and ext.unreachable == ()
    assert stock_dead(ext.model, [a.id for a in ext.added]) == []


def test_placement_below_keeps_base_merges_first(base):
    ext = extend(base, ["天气很好"], placement="below")
    sp = stock(ext.model)
    lowest = min(sp.get_score(i) for i in range(ext.base_size) if not (sp.is_control(i) or sp.is_unknown(i)))
    assert ext.added and all(a.score < lowest for a in ext.added)
    assert stock_dead(ext.model, [a.id for a in ext.added]) == []


def test_extension_pickles(ext):
    assert pickle.loads(pickle.dumps(ext)) == ext


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pieces="越来越"), "sequence of str"),
        (dict(pieces=[1, 2]), "sequence of str"),
        (dict(pieces=["越来"], placement="middle"), "placement"),
        (dict(pieces=["越来"], max_piece_chars=0), "max_piece_chars"),
    ],
)
def test_bad_arguments(base, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        extend(base, **kwargs)


def test_unigram_base_is_refused(trained_models):
    with pytest.raises(InvalidArgumentError, match="only BPE models"):
        extend(trained_models["unigram_nfkc"], ["越来越"])


def test_truncated_base_is_a_model_format_error(base):
    with pytest.raises(hanpack.exceptions.ModelFormatError):
        extend(base[: len(base) // 2], ["越来越"])


# -- shared tokenizers -------------------------------------------------------------------


@pytest.mark.parametrize("path, dead", [(CHINESE_LLAMA_1, 539), (CHINESE_LLAMA_2, 658)], ids=["chinese-llama", "chinese-llama-2"])
def test_dead_pieces_of_published_chinese_tokenizers(path, dead):
    data = require_shared(path).read_bytes()
    found = unreachable_pieces(data)
    assert len(found) == dead
    assert sorted(p for _, p in found) == sorted(stock_dead(data, [i for i, _ in found]))
    assert stock_dead(data, normal_ids(data, 32000)) == [p for i, p in found if i >= 32000]


@pytest.fixture(scope="module")
def llama_with_chinese_llama_pieces():
    base = require_shared(LLAMA).read_bytes()
    cl = stock(require_shared(CHINESE_LLAMA_1).read_bytes())
    return base, extend(base, [cl.id_to_piece(i) for i in range(32000, cl.get_piece_size())])


def test_chinese_llama_pieces_on_llama_are_all_reachable(llama_with_chinese_llama_pieces):
    base, ext = llama_with_chinese_llama_pieces
    assert ext.count("requested") > 17000
    assert ext.unreachable == ()
    assert stock_dead(ext.model, [a.id for a in ext.added]) == []


def test_lines_without_chinese_encode_as_llama(llama_with_chinese_llama_pieces):
    base, ext = llama_with_chinese_llama_pieces
    b, e = stock(base), stock(ext.model)
    files = [p for p in sorted(require_shared(CORPUS).iterdir()) if p.suffix in (".txt", ".jsonl")]
    lines = [s for p in files for s in corpus_lines(p)[:2000] if s and not CJK.search(s)]
    assert len(lines) > 5000
    want = [b.encode(s) for s in lines]
    got = [e.encode(s) for s in lines]
    assert want == got, describe_mismatches(lines, want, got)


def test_chinese_llama_pieces_parity_on_corpus(llama_with_chinese_llama_pieces):
    _, ext = llama_with_chinese_llama_pieces
    sp, tok = stock(ext.model), ext.tokenizer()
    lines = [s for p in sorted(require_shared(CORPUS).iterdir()) if p.name.startswith(("zh", "mixed")) for s in corpus_lines(p)[:500]]
    want = [sp.encode(s) for s in lines]
    got = [list(t) for t in tok.encode_batch(lines)]
    assert want == got, describe_mismatches(lines, want, got)
