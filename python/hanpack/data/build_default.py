"""Rebuilds ``default.model`` from ``sample_zh.txt`` (a developer tool; not imported).

The demo tokenizer is trained by the project itself on text written for hanpack, so the
wheel bundles nothing taken from elsewhere. It uses LLaMA's settings: BPE, byte fallback,
identity normalization, digits split, a dummy prefix and runs of spaces kept.

    python python/hanpack/data/build_default.py    # needs `pip install sentencepiece`
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm


def main() -> None:
    here = Path(__file__).resolve().parent
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=str(here / "sample_zh.txt"),
        model_writer=model,
        model_type="bpe",
        vocab_size=800,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        max_sentence_length=100_000,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (here / "default.model").write_bytes(model.getvalue())


if __name__ == "__main__":
    main()
