"""hanpack.Segmenter against jieba 0.42 (the reference): a dictionary written here
(fresh clone), hypothesis-generated text, and the shared corpora with jieba's own
dictionary, HMM on and off."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hanpack.exceptions import InvalidArgumentError, ModelFormatError
from hanpack.segment import Segmenter, jieba_hmm

from conftest import SHARED, corpus_files, require_shared

jieba = pytest.importorskip("jieba")

JIEBA_DICT = SHARED / "data" / "dict" / "jieba_dict.txt"

# A small dictionary with overlapping words, a zero-frequency word, ASCII words and a
# repeated entry (later lines win, every line counts towards the total, as in jieba).
OWN_DICT = """我们 1000 r
我 800 r
们 10 k
喜欢 500 v
喜 20 v
欢 20 v
北京 900 ns
北京大学 300 nt
大学 700 n
大学生 200 n
学生 600 n
生活 400 vn
活 5 v
中华人民共和国 50 ns
中华 80 nz
人民 700 n
共和国 90 n
零频词 0 n
C++ 30 nz
AT&T 3 nz
大学 650 n
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> tuple[Segmenter, object]:
    path = tmp_path_factory.mktemp("dict") / "dict.txt"
    path.write_text(OWN_DICT, encoding="utf-8")
    ref = jieba.Tokenizer(dictionary=str(path))
    ref.initialize()
    return Segmenter.from_file(path, hmm=jieba_hmm()), ref


SAMPLES = [
    "我们喜欢北京大学的大学生活",
    "中华人民共和国成立了，人民很高兴！",
    "我们用C++和AT&T的3.5%股份, 零频词  \r\n 不在词典里的词语由隐马尔可夫模型识别",
    "abc 123 x1.5y 天气不错ok吗？\t\u3000全角　空格",
    "",
    "  ",
    "我",
    "\u0085\x1c\xa0标点。。。",
]


@pytest.mark.parametrize("hmm", [False, True])
@pytest.mark.parametrize("text", SAMPLES)
def test_own_dictionary_matches_jieba(own, text: str, hmm: bool) -> None:
    seg, ref = own
    assert seg.cut(text, hmm=hmm) == list(ref.cut(text, HMM=hmm))


_alphabet = st.sampled_from(list("我们喜欢北京大学生活中华人民共和国零频词的了吗") + list("abcXYZ019+#&._%-") + list(" \t\r\n\u3000，。！?") + ["C++", "AT&T", "\r\n", "😀", "é", "\u0301", "龥", "\u9fd6"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_alphabet, max_size=40), hmm=st.booleans())
def test_generated_text_matches_jieba(own, parts: list[str], hmm: bool) -> None:
    seg, ref = own
    text = "".join(parts)
    assert seg.cut(text, hmm=hmm) == list(ref.cut(text, HMM=hmm))


def test_batch_pickle_and_errors(own) -> None:
    seg, _ = own
    assert seg.cut_batch(SAMPLES, num_threads=2) == [seg.cut(t) for t in SAMPLES]
    assert seg.cut_batch(SAMPLES, hmm=False, num_threads=1) == [seg.cut(t, hmm=False) for t in SAMPLES]
    again = pickle.loads(pickle.dumps(seg))
    assert again.cut(SAMPLES[2]) == seg.cut(SAMPLES[2]) and again.has_hmm
    no_hmm = Segmenter.from_text(OWN_DICT)
    assert not no_hmm.has_hmm and no_hmm.cut(SAMPLES[0], hmm=False) == seg.cut(SAMPLES[0], hmm=False)
    with pytest.raises(InvalidArgumentError, match="no HMM"):
        no_hmm.cut("我们")
    with pytest.raises(TypeError):
        seg.cut(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] must be str"):
        seg.cut_batch(["我们", 3])  # type: ignore[list-item]
    with pytest.raises(ModelFormatError, match="line 2"):
        Segmenter.from_text("我们 10 r\n喜欢 many v\n")
    with pytest.raises(InvalidArgumentError, match="emission key"):
        start, trans, emit = jieba_hmm()
        Segmenter.from_text(OWN_DICT, hmm=(start, trans, {**emit, "B": {"ab": -1.0}}))
    with pytest.raises(AttributeError):
        seg._text = ""  # type: ignore[misc]


@pytest.fixture(scope="module")
def shared_pair() -> tuple[Segmenter, object]:
    require_shared(JIEBA_DICT)
    ref = jieba.Tokenizer(dictionary=str(JIEBA_DICT))
    ref.initialize()
    return Segmenter.from_file(JIEBA_DICT, hmm=jieba_hmm()), ref


LINES_PER_FILE = 1500  # the full corpora run in benches/bench_segment.py


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_matches_jieba(shared_pair, path: Path) -> None:
    seg, ref = shared_pair
    lines = path.read_text(encoding="utf-8").split("\n")[:LINES_PER_FILE]
    for hmm in (False, True):
        got = seg.cut_batch(lines, hmm=hmm)
        bad = [(line, g) for line, g in zip(lines, got) if g != list(ref.cut(line, HMM=hmm))]
        assert not bad, f"{len(bad)} lines differ (HMM={hmm}), first: {bad[0][0][:80]!r}"


USER_DICT = """云计算 5
韩玉鉴赏
蓝翔 nz
创新办 3 i
台中
凱特琳 nz
Edu Trust认证 2000
好吃的 0
八一双鹿 x
北京大 0
大学生活 12 n
"""

USER_SAMPLES = [
    "李小福是创新办主任也是云计算方面的专家; 什么是八一双鹿",
    "例如我输入一个带“韩玉赏鉴”的标题，在自定义词库中也增加了此词为N类",
    "「台中」正確應該不會被切開。mac上可分出「石墨烯」；此時又可以分出來凱特琳了。",
    "蓝翔技校好吃的饭菜在北京大学生活区",
    "我们喜欢北京大学的大学生活",
]


@pytest.fixture
def own_user(tmp_path: Path):
    main = tmp_path / "dict.txt"
    main.write_text(OWN_DICT, encoding="utf-8")
    user = tmp_path / "user.txt"
    user.write_text(USER_DICT, encoding="utf-8")
    ref = jieba.Tokenizer(dictionary=str(main))
    ref.initialize()
    before = set(jieba.finalseg.Force_Split_Words)
    ref.load_userdict(str(user))
    yield Segmenter.from_file(main, hmm=jieba_hmm(), user_dicts=[user]), ref
    # jieba keeps force-split words in a module-wide set; leave it as it was.
    jieba.finalseg.Force_Split_Words.intersection_update(before)


@pytest.mark.parametrize("hmm", [False, True])
@pytest.mark.parametrize("text", USER_SAMPLES + SAMPLES)
def test_user_dictionary_matches_jieba(own_user, text: str, hmm: bool) -> None:
    seg, ref = own_user
    assert seg.cut(text, hmm=hmm) == list(ref.cut(text, HMM=hmm))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(["云计算", "创新办", "好吃的", "北京大", "大学生活", "韩玉", "鉴赏", "台中", "Edu", " ", "Trust", "认证"]) | _alphabet, max_size=30), hmm=st.booleans())
def test_generated_text_with_user_words_matches_jieba(own_user, parts: list[str], hmm: bool) -> None:
    seg, ref = own_user
    text = "".join(parts)
    assert seg.cut(text, hmm=hmm) == list(ref.cut(text, HMM=hmm))


def test_user_dictionary_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("云计算 99999999999999999999999\n", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="line 1"):
        Segmenter.from_text(OWN_DICT, user_dicts=[bad.read_text(encoding="utf-8")])
    bad.write_bytes(b"\xff\xfe bad")
    with pytest.raises(InvalidArgumentError, match="not UTF-8"):
        Segmenter.from_file(tmp_path / "bad.txt")


def test_cli_segment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hanpack.cli import main

    d = tmp_path / "dict.txt"
    d.write_text(OWN_DICT, encoding="utf-8")
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join(USER_SAMPLES), encoding="utf-8")
    assert main(["segment", "--dict", str(d), "--file", str(lines), "--sep", "|"]) == 0
    ref = jieba.Tokenizer(dictionary=str(d))
    assert capsys.readouterr().out.splitlines() == ["|".join(ref.cut(t)) for t in USER_SAMPLES]
    assert main(["segment", "--dict", str(d), "--no-hmm", "我们喜欢abc"]) == 0
    assert capsys.readouterr().out.strip() == "我们 / 喜欢 / abc"
