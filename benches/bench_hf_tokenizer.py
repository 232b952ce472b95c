"""hanpack's transformers tokenizer (``hanpack.hf.HanpackTokenizer`` through
``AutoTokenizer``) against the references and against transformers' own tokenizers.

    python benches/bench_hf_tokenizer.py [--max-mb 0] [--map-mb 8] [--rounds 2]

1. **Parity** on every corpus text (``benchlib.read_texts`` of every shared corpus file,
   or the first ``--max-mb`` MB): ``AutoTokenizer.from_pretrained(<converted folder>)``
   with ``add_special_tokens=True`` vs sentencepiece (BOS + ``sp.encode``) for LLaMA,
   Chinese-LLaMA and Chinese-LLaMA-2; vs HF tokenizers (``tokenizer.derived.json``,
   ``add_special_tokens=False``) for Qwen2 and LLaMA-3. For SentencePiece the exact
   comparison loads with ``split_special_tokens=True`` (sentencepiece reads ``"<s>"`` in a
   text as text); the lines that change under transformers' default of parsing it are
   counted too. Also counted: the lines where transformers' own tokenizer for the same
   file (no BOS: its folder has no config) differs from the reference.
2. **datasets.map speed**: ``Dataset.map(lambda b: tok(b["text"]), batched=True)`` over
   the first ``--map-mb`` MB of corpus texts, hanpack vs transformers' tokenizer for the
   same file (LlamaTokenizer converted from the ``.model``; ``TokenizersBackend`` from the
   ``tokenizer.json``), one process and ``num_proc=2``; rounds alternate, best of
   ``--rounds``; the datasets cache is off so every run tokenizes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchlib import CORPUS, load_corpus, machine_basics, make_hf_fast, utf8_len  # noqa: E402

TOK = CORPUS.parent / "tokenizers"
SPM_MODELS = {
    "LLaMA": TOK / "llama" / "tokenizer.model",
    "Chinese-LLaMA": TOK / "chinese-llama-alpaca" / "chinese_llama_tokenizer.derived.model",
    "Chinese-LLaMA-2": TOK / "chinese-llama-alpaca-2" / "tokenizer.model",
}
JSON_MODELS = {"Qwen2": TOK / "qwen2" / "tokenizer.derived.json", "LLaMA-3": TOK / "llama3" / "tokenizer.derived.json"}


def transformers_tokenizer(path: Path):
    """transformers' own tokenizer for a tokenizer file, built offline."""
    from transformers import TokenizersBackend

    if path.suffix == ".model":
        return make_hf_fast(path)
    return TokenizersBackend(tokenizer_file=str(path))


def differing(want: List[List[int]], got: List[List[int]]) -> int:
    return sum(a != b for a, b in zip(want, got))


def parity(lines: List[str], folder: Path) -> Dict[str, Dict[str, int]]:
    import sentencepiece as spm
    import tokenizers
    from transformers import AutoTokenizer

    import hanpack.hf

    out: Dict[str, Dict[str, int]] = {}
    for name, path in {**SPM_MODELS, **JSON_MODELS}.items():
        if not path.exists():
            print(f"  {name}: skipped, {path} not found")
            continue
        hanpack.hf.convert_tokenizer(path, folder / name)
        theirs = transformers_tokenizer(path)
        row: Dict[str, int] = {"lines": len(lines)}
        if path.suffix == ".model":
            sp = spm.SentencePieceProcessor(model_file=str(path))
            plain = sp.encode(lines)
            exact = AutoTokenizer.from_pretrained(folder / name, split_special_tokens=True)
            row["hanpack"] = differing([[sp.bos_id()] + r for r in plain], exact(lines)["input_ids"])
            parsed = AutoTokenizer.from_pretrained(folder / name)(lines, add_special_tokens=False)["input_ids"]
            row["hanpack_parsing_specials"] = differing(plain, parsed)
            row["transformers"] = differing(plain, theirs(lines, add_special_tokens=False)["input_ids"])
            how = ("split_special_tokens=True, BOS + sp.encode; with transformers' default of parsing "
                   f"special-token text: {row['hanpack_parsing_specials']}")
        else:
            ref = tokenizers.Tokenizer.from_file(str(path))
            want = [e.ids for e in ref.encode_batch(lines, add_special_tokens=False)]
            ours = AutoTokenizer.from_pretrained(folder / name)
            row["hanpack"] = differing(want, ours(lines, add_special_tokens=False)["input_ids"])
            row["transformers"] = differing(want, theirs(lines, add_special_tokens=False)["input_ids"])
            how = "add_special_tokens=False vs HF tokenizers"
        out[name] = row
        print(f"  {name:<16} {len(lines)} texts: hanpack differs on {row['hanpack']} ({how}); "
              f"transformers' {type(theirs).__name__} on {row['transformers']} "
              f"({100 * row['transformers'] / len(lines):.1f}%)")
    return out


def map_speed(lines: List[str], folder: Path, rounds: int) -> None:
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_caching()
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"text": lines})
    nbytes = sum(utf8_len(t) for t in lines)
    for name, path in (("LLaMA", SPM_MODELS["LLaMA"]), ("Chinese-LLaMA-2", SPM_MODELS["Chinese-LLaMA-2"]),
                       ("Qwen2", JSON_MODELS["Qwen2"])):
        if not (folder / name).exists():
            continue
        contenders: Dict[str, object] = {"hanpack": AutoTokenizer.from_pretrained(folder / name),
                                         "transformers": transformers_tokenizer(path)}
        for num_proc in (None, 2):
            best: Dict[str, float] = {}
            for _ in range(rounds):
                for who, tok in contenders.items():
                    def run(tok=tok) -> object:
                        return ds.map(lambda b: tok(b["text"]), batched=True, num_proc=num_proc,
                                      remove_columns=["text"])
                    t = time.perf_counter()
                    run()
                    best[who] = min(best.get(who, float("inf")), time.perf_counter() - t)
            ratio = best["transformers"] / best["hanpack"]
            print(f"  {name:<16} num_proc={num_proc}: transformers {nbytes / best['transformers'] / 1e6:6.2f} MB/s "
                  f"({type(contenders['transformers']).__name__}), hanpack {nbytes / best['hanpack'] / 1e6:6.2f} MB/s: "
                  f"{ratio:.2f}x  [target >= 3x]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-mb", type=float, default=0, help="parity text (0: every corpus text)")
    ap.add_argument("--map-mb", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-parity", action="store_true")
    args = ap.parse_args()
    print(machine_basics())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines, _ = load_corpus(("",), args.max_mb)
        print(f"== parity: {len(lines)} texts, {sum(map(utf8_len, lines)) / 1e6:.1f} MB")
        if not args.skip_parity:
            parity(lines, folder)
        else:
            import hanpack.hf

            for name, path in {**SPM_MODELS, **JSON_MODELS}.items():
                hanpack.hf.convert_tokenizer(path, folder / name)
        map_lines, _ = load_corpus(("",), args.map_mb)
        print(f"== datasets.map: {len(map_lines)} texts, {sum(map(utf8_len, map_lines)) / 1e6:.1f} MB")
        map_speed(map_lines, folder, args.rounds)


if __name__ == "__main__":
    main()
