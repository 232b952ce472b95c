"""Shared fixtures.

* Fresh-clone fixtures: small SentencePiece models trained here, with the `sentencepiece`
  package, on text this file writes (BPE with byte fallback, Unigram with nmt_nfkc, BPE
  with user-defined symbols and remove_extra_whitespaces). They need no ../shared.
* Shared data: ``../shared`` next to the repository (real tokenizers and corpora). Tests
  that need it skip with a reason naming the missing path.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
TOKENIZERS = SHARED / "data" / "tokenizers"
CORPUS = SHARED / "data" / "corpus"


def require_shared(path: Path) -> Path:
    """`path` if it exists, else skip the test with a reason naming it."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def shared_models() -> list[Path]:
    """Every SentencePiece .model under ../shared/data/tokenizers (not tiktoken files)."""
    if not TOKENIZERS.exists():
        return []
    return sorted(p for p in TOKENIZERS.rglob("*.model") if p.parent.name != "llama3")


def corpus_files() -> list[Path]:
    """Every corpus file, plus sentencepiece's own test texts."""
    files: list[Path] = []
    if CORPUS.exists():
        files += sorted(p for p in CORPUS.iterdir() if p.suffix in (".txt", ".jsonl"))
    testdata = TOKENIZERS / "sentencepiece-testdata"
    files += [p for p in (testdata / "botchan.txt", testdata / "wagahaiwa_nekodearu.txt") if p.exists()]
    return files


def read_lines(path: Path) -> list[str]:
    """Texts of a corpus file: lines of .txt; the string values of each .jsonl object."""
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if path.suffix == ".jsonl":
                obj = json.loads(line)
                values = obj.values() if isinstance(obj, dict) else [obj]
                out.extend(v for v in values if isinstance(v, str))
            else:
                out.append(line)
    return out


def _training_text() -> str:
    """Mixed Simplified/Traditional Chinese and English written for these tests."""
    zh = [
        "今天天气很好，我们去公园散步。", "分词器把文字切成小单位。", "模型训练需要大量的数据。",
        "繁體中文與簡體中文都要支援。", "這個工具的速度非常快。", "我们希望每个字都能被正确编码。",
        "春眠不觉晓，处处闻啼鸟。", "學習語言要多聽多說多讀多寫。", "量化可以让模型在手机上运行。",
        "数据处理是训练的第一步。", "臺灣的學生學習繁體字。", "价格是128元，打八折。",
    ]
    en = [
        "The quick brown fox jumps over the lazy dog.", "Tokenizers must be exact and fast.",
        "Hello world, this is a test of subword units.", "Numbers like 2024 and 3.14 appear too.",
    ]
    rng = random.Random(1234)
    lines = []
    for _ in range(600):
        parts = rng.sample(zh, 2) + rng.sample(en, 1)
        rng.shuffle(parts)
        lines.append(("  " if rng.random() < 0.1 else " ").join(parts))
    return "\n".join(lines)


def _train(**kwargs: object) -> bytes:
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text().splitlines()),
        model_writer=model,
        minloglevel=2,
        hard_vocab_limit=False,
        **kwargs,
    )
    return model.getvalue()


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> .model path, trained once per session."""
    folder = tmp_path_factory.mktemp("models")
    specs = {
        "bpe_bytefallback": dict(
            model_type="bpe", vocab_size=600, byte_fallback=True, character_coverage=0.98,
            normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        ),
        "unigram_nfkc": dict(model_type="unigram", vocab_size=500, character_coverage=0.995),
        "bpe_userdefined": dict(
            model_type="bpe", vocab_size=500, user_defined_symbols=["<tool>", "中文", "[SEP]"],
            character_coverage=0.9995,
        ),
        "bpe_no_bos": dict(model_type="bpe", vocab_size=400, bos_id=-1, eos_id=-1),
    }
    out = {}
    for name, kwargs in specs.items():
        path = folder / f"{name}.model"
        path.write_bytes(_train(**kwargs))
        out[name] = path
    return out


@pytest.fixture(scope="session")
def sample_lines() -> list[str]:
    """Test texts that need no shared data: the training text plus hard cases."""
    hard = [
        "", " ", "   ", "a", " leading", "trailing ", "double  space", "tab\tand\nnewline",
        "全角ＡＢＣ１２３", "emoji 😀🎉🇨🇳 mixed", "combining é e\u0301", "\u3000ideographic space",
        "控制\x01字符\x7f", "繁體與简体混合", "<tool> call [SEP] 中文", "▁literal▁marks",
        "a" * 200, "中" * 200,
    ]
    return _training_text().splitlines()[:200] + hard
