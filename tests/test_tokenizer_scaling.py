"""Long inputs: exact results and output that grows linearly with the input, and the memory a
loaded model takes. Nothing here is timed (speed is a benchmark figure, see benches/); a
quadratic blow-up shows up as a suite that no longer finishes, and a wrong long-input
algorithm as wrong ids or wrong output lengths.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CHINESE_SP_UNIGRAM, CORPUS, LLAMA, TOKENIZERS, load_pair, model_id, require_shared, shared_models

spm = pytest.importorskip("sentencepiece")

_CJK_NO_SPACE = "今天天气很好我们去公园散步吧繁體中文也一樣分詞器把文字切成小單位模型训练需要大量的数据"
_MIXED_NO_SPACE = "hanpack分词abc123中文Tokenizer測試😀ＡＢＣ"

CASES = {
    "ascii_run": lambda n: "a" * n,
    "cjk_run": lambda n: "中" * n,
    "cjk_no_spaces": lambda n: (_CJK_NO_SPACE * (n // len(_CJK_NO_SPACE) + 1))[:n],
    "mixed_no_spaces": lambda n: (_MIXED_NO_SPACE * (n // len(_MIXED_NO_SPACE) + 1))[:n],
    "emoji_run": lambda n: "😀" * n,  # byte fallback or <unk> runs
    "words": lambda n: ("lorem ipsum dolor sit amet " * (n // 27 + 1))[:n],
}
# Compared with sentencepiece up to this length; longer inputs only check linear output.
COMPARE_UP_TO = 50_000
SIZES = (12_500, 50_000, 200_000, 800_000)


def _models(trained_models) -> list[Path]:
    out = [trained_models["bpe_bytefallback"], trained_models["unigram_nfkc"], trained_models["bpe_userdefined"]]
    out += [p for p in (LLAMA, CHINESE_SP_UNIGRAM) if p.exists()]
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_long_inputs_are_exact_and_linear(trained_models, case):
    make = CASES[case]
    for path in _models(trained_models):
        sp, tok = load_pair(path)
        lengths = []
        for n in SIZES:
            text = make(n)
            ids = tok.encode(text)
            if n <= COMPARE_UP_TO:
                want = sp.encode(text)
                assert ids == want, (
                    f"{path.name} {case} n={n}: {len(ids)} ids vs sentencepiece's {len(want)}, first difference at "
                    f"{next((k for k, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))}"
                )
                assert tok.decode(ids) == sp.decode(want)
            assert tok.encode_batch([text, text[: n // 2]]) == [ids, tok.encode(text[: n // 2])]
            lengths.append(len(ids))
        assert lengths[0] > 0
        if lengths[0] <= 4:
            # A run of unknown characters is one <unk> piece in Unigram models.
            assert len(set(lengths)) == 1, (path.name, case, SIZES, lengths)
            continue
        # Each size is 4x the one before: the output must be 4x as long (a few ids of slack
        # for the edges: the dummy prefix, a partial last repeat, merges at the seams).
        for small, big in zip(lengths, lengths[1:]):
            assert big == pytest.approx(4 * small, rel=0.01, abs=8), (path.name, case, SIZES, lengths)


def test_long_whitespace_runs(trained_models):
    """Whitespace runs: kept by models without remove_extra_whitespaces (then linear),
    collapsed to one by the others (then constant)."""
    for path in _models(trained_models):
        sp, tok = load_pair(path)
        lengths = []
        for n in (10_000, 40_000):
            text = "x" + " " * n + "y" + "\u3000" * n + "z"
            ids = tok.encode(text)
            assert ids == sp.encode(text), (path.name, n)
            lengths.append(len(ids))
        collapsed = tok.normalize("a  b") == tok.normalize("a b")
        if collapsed:
            assert lengths[0] == lengths[1], (path.name, lengths)
        else:
            assert lengths[1] == pytest.approx(4 * lengths[0], rel=0.01, abs=8), (path.name, lengths)


def test_long_batch_of_long_lines(trained_models):
    """Many long lines through the threaded batch paths agree with one-at-a-time encoding."""
    sp, tok = load_pair(trained_models["bpe_bytefallback"])
    lines = [make(20_000 + 997 * i) for i, make in enumerate(CASES.values())] * 3
    rows = tok.encode_batch(lines, num_threads=2)
    assert rows == [sp.encode(t) for t in lines]
    ids, offsets = tok.encode_batch_numpy(lines, num_threads=2)
    assert ids.tolist() == [i for r in rows for i in r]
    assert tok.decode_batch(rows, num_threads=2) == [sp.decode(r) for r in rows]


# -- memory -------------------------------------------------------------------------------

_RSS_CHILD = r"""
import ctypes, gc, os, sys
import hanpack

trim = ctypes.CDLL("libc.so.6").malloc_trim

def anon():
    # Anonymous resident memory: the heap a tokenizer lives in. File-backed pages (the
    # extension's code, paged in on first use) are shared and are not the tokenizer's.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no RssAnon in /proc/self/status")

def settle():  # collect garbage and return free heap pages, so RSS counts live memory
    gc.collect()
    trim(0)

path, sample, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(sample, encoding="utf-8") as f:
    lines = f.read().splitlines()
# The first tokenizer pays the process-wide one-time costs (per-thread buffers, the shared
# cache of id ints); what each further loaded and used one adds is the tokenizer's own cost.
first = hanpack.Tokenizer.from_file(path)
for line in lines:
    first.encode(line)
settle()
before = anon()
kept = []
for _ in range(copies):
    tok = hanpack.Tokenizer.from_file(path)
    for line in lines:
        tok.encode(line)
    kept.append(tok)
settle()
assert all(t.vocab_size == first.vocab_size for t in kept)
print((anon() - before) // copies)
"""


def _sample_text(tmp_path: Path) -> Path:
    """Chinese and English lines to use the tokenizer on: a shared corpus file when there is
    one, else text written here."""
    corpus = sorted(CORPUS.glob("zh-hans_news_*.txt")) if CORPUS.exists() else []
    if corpus:
        lines = corpus[0].read_text(encoding="utf-8").splitlines()[:3000]
    else:
        lines = [_CJK_NO_SPACE, _MIXED_NO_SPACE, "lorem ipsum dolor sit amet"] * 100
    out = tmp_path / "sample.txt"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


@pytest.mark.shared
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc/self/status (Linux)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses glibc's malloc_trim")
@pytest.mark.parametrize("path", shared_models() or [TOKENIZERS], ids=model_id)
def test_loaded_model_memory(path, tmp_path, record_property):
    """A loaded tokenizer, after encoding text, holds at most 3x the size of its .model file
    in anonymous resident memory (averaged over three copies loaded in one fresh process)."""
    require_shared(path)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path), str(_sample_text(tmp_path)), "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    ratio = growth / size
    record_property("rss_growth_ratio", round(ratio, 3))
    assert ratio <= 3.0, f"{model_id(path)}: a loaded tokenizer holds {growth} bytes for a {size}-byte file: {ratio:.2f}x (limit 3x)"
