"""Long and repetitive input: exact results and output that grows linearly with the input.
(Speed per byte is a benchmark figure, see benches/; tests never time anything.)"""

from __future__ import annotations

import pytest

import hanpack
from conftest import TOKENIZERS

spm = pytest.importorskip("sentencepiece")

CASES = {
    "ascii_run": lambda n: "a" * n,
    "cjk_run": lambda n: "中" * n,
    "no_spaces": lambda n: ("今天天气很好我们去公园散步吧繁體中文也一樣" * (n // 20 + 1))[:n],
    "space_run": lambda n: " " * n + "x",
}


def _models(trained_models):
    out = [trained_models["bpe_bytefallback"], trained_models["unigram_nfkc"]]
    for rel in ("llama/tokenizer.model", "chinese-llama-alpaca/chinese_sp.model"):
        if (TOKENIZERS / rel).exists():
            out.append(TOKENIZERS / rel)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_long_inputs_are_exact_and_linear(trained_models, case):
    make = CASES[case]
    for path in _models(trained_models):
        sp = spm.SentencePieceProcessor(model_file=str(path))
        tok = hanpack.Tokenizer.from_file(path)
        sizes = []
        for n in (5_000, 20_000, 80_000):
            text = make(n)
            ids = tok.encode(text)
            if n <= 20_000:
                assert ids == sp.encode(text), (path.name, case, n)
            assert tok.decode(ids) == sp.decode(ids)
            sizes.append(len(ids))
        # Output grows in proportion to the input (within rounding at the edges), unless
        # the normalizer collapses it (remove_extra_whitespaces on a run of spaces).
        if sizes[1] >= 10:
            assert sizes[2] == pytest.approx(4 * sizes[1], rel=0.05, abs=4), (path.name, case, sizes)
        else:
            assert sizes[0] == sizes[1] == sizes[2], (path.name, case, sizes)


def test_one_megabyte_inputs_encode(trained_models):
    """1 MB of each pathological kind completes and round-trips (the bench times it)."""
    tok = hanpack.Tokenizer.from_file(trained_models["bpe_bytefallback"])
    for make in CASES.values():
        text = make(1_000_000)
        assert tok.decode(tok.encode(text)) == tok.decode(tok.encode(text))
        assert len(tok.encode(text)) > 0
