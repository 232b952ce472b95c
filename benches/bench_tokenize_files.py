"""Corpus preprocessing (issue 9): ``hanpack.data.tokenize_files`` against
``datasets.map(batched=True, num_proc=2)`` with transformers' tokenizer, each from the same
files to tokenized output on disk, in one process.

    python benches/bench_tokenize_files.py                  # every Chinese corpus file, 3 rounds
    python benches/bench_tokenize_files.py --rounds 5 --max-mb 16
    python benches/bench_tokenize_files.py --passes 3     # the files listed three times

Inputs: the ``zh-hans_*`` / ``zh-hant_*`` ``.txt`` files (one document per line) and
``.jsonl`` files (field ``text``) under ``../shared/data/corpus``. Tokenizer: Chinese-LLaMA
(``chinese_llama_tokenizer.derived.model``); transformers' ``LlamaTokenizer`` is converted
from the same file. Rows, in MB/s of document text (UTF-8):

* hanpack ``tokenize_files(..., num_threads=1)`` and on all cores: read, encode, write
  the shards (tokens, document offsets, manifest with SHA-256s);
* datasets: ``load_dataset("text" / "json")`` then ``Dataset.map(lambda b: {"input_ids":
  tok(b["text"])["input_ids"]}, batched=True, num_proc=2)`` (cache off, so it writes its
  Arrow output to a temporary folder), timed whole and the map alone.

``--passes N`` lists every file N times (steady-state throughput: a run's fixed costs,
hashing the tokenizer and syncing the last shard and the manifest, about 25 ms, are
spread over more text). Rounds alternate; each row keeps its best round. Targets: all cores >= 1.8x one thread;
all cores >= 5x the datasets pipeline with num_proc=2. The shards are checked against
sentencepiece, document by document (0 expected).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import CORPUS, TOKENIZERS, hanpack_info, import_hanpack, machine_basics, make_hf_fast  # noqa: E402

MODEL = TOKENIZERS / "chinese-llama-alpaca" / "chinese_llama_tokenizer.derived.model"


def corpus_files(max_mb: float) -> list[Path]:
    files = sorted(p for p in CORPUS.iterdir() if p.name.startswith(("zh-hans_", "zh-hant_")) and p.suffix in (".txt", ".jsonl"))
    out, total = [], 0
    for p in files:
        if total >= max_mb * 1e6:
            break
        out.append(p)
        total += p.stat().st_size
    return out


def documents(paths: list[Path]) -> list[str]:
    docs = []
    for p in paths:
        for line in p.read_text(encoding="utf-8").split("\n"):
            if line:
                docs.append(line if p.suffix == ".txt" else json.loads(line)["text"])
    return docs


def run_hanpack(hanpack, tok, paths, folder: Path, threads):
    out = folder / f"hanpack-{threads}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    r = hanpack.data.tokenize_files(paths, tok, out, add_bos=True, num_threads=threads, progress=False)
    return time.perf_counter() - t, r


def run_datasets(tok, paths, num_proc):
    import datasets

    txt = [str(p) for p in paths if p.suffix == ".txt"]
    jsonl = [str(p) for p in paths if p.suffix == ".jsonl"]
    t0 = time.perf_counter()
    parts = []
    if txt:
        parts.append(datasets.load_dataset("text", data_files=txt, split="train"))
    for path in jsonl:  # one at a time: their other fields differ
        parts.append(datasets.load_dataset("json", data_files=path, split="train").select_columns(["text"]))
    ds = datasets.concatenate_datasets(parts)
    t1 = time.perf_counter()
    out = ds.map(lambda b: {"input_ids": tok(b["text"])["input_ids"]}, batched=True, num_proc=num_proc,
                 remove_columns=["text"])
    t2 = time.perf_counter()
    return t2 - t0, t2 - t1, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-mb", type=float, default=1000.0, help="take corpus files until this many MB")
    ap.add_argument("--passes", type=int, default=1, help="list the files this many times")
    args = ap.parse_args()
    hanpack = import_hanpack()
    import datasets
    import sentencepiece

    datasets.disable_caching()
    datasets.disable_progress_bars()
    paths = corpus_files(args.max_mb) * args.passes
    docs = documents(paths)
    nbytes = sum(len(d.encode()) for d in docs)
    print("machine:", machine_basics())
    print("hanpack:", hanpack_info(hanpack))
    print(f"inputs ({args.passes} pass(es)): {len(paths)} files ({sum(p.suffix == '.jsonl' for p in paths)} jsonl), {len(docs)} documents, "
          f"{nbytes / 1e6:.2f} MB of text; load avg {os.getloadavg()}")
    tok = hanpack.Tokenizer.from_file(MODEL)
    hf = make_hf_fast(MODEL)
    ncores = os.cpu_count() or 1
    best: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="bench-tokenize-files-"))
    try:
        for rnd in range(args.rounds):
            timings = {}
            for threads in (1, None):
                s, r = run_hanpack(hanpack, tok, paths, folder, threads)
                timings["hanpack tokenize_files num_threads=1" if threads else f"hanpack tokenize_files all cores ({ncores})"] = s
            whole, map_only, ds_out = run_datasets(hf, paths, 2)
            timings["datasets load + map(num_proc=2), transformers LlamaTokenizer"] = whole
            timings["datasets map(num_proc=2) alone"] = map_only
            for k, v in timings.items():
                best[k] = min(best.get(k, float("inf")), v)
            print(f"round {rnd + 1}: " + ", ".join(f"{k.split(',')[0]} {nbytes / v / 1e6:.1f} MB/s" for k, v in timings.items()))

        sp = sentencepiece.SentencePieceProcessor(model_file=str(MODEL))
        want = sp.encode(docs)
        got = [t[a:b].tolist() for t, o in hanpack.data.read_shards(folder / "hanpack-None") for a, b in zip(o[:-1], o[1:])]
        bad = sum(g != [sp.bos_id()] + w for g, w in zip(got, want)) + abs(len(got) - len(want))
        print(f"\nshards: {r.shards}, {r.tokens} tokens, {r.documents} documents; "
              f"documents differing from sentencepiece: {bad} of {len(want)}; datasets rows: {len(ds_out)} "
              "(its text loader keeps empty lines)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\n== best of {args.rounds} rounds, {nbytes / 1e6:.2f} MB of Chinese documents")
    for k, v in best.items():
        print(f"   {k:<66} {nbytes / v / 1e6:8.2f} MB/s  ({v:.2f} s)")
    one = best["hanpack tokenize_files num_threads=1"]
    allc = best[f"hanpack tokenize_files all cores ({ncores})"]
    ds = best["datasets load + map(num_proc=2), transformers LlamaTokenizer"]
    for name, value, target in [
        ("all cores / one thread", one / allc, 1.8),
        ("all cores / datasets load + map(num_proc=2)", ds / allc, 5.0),
        ("all cores / datasets map(num_proc=2) alone", best["datasets map(num_proc=2) alone"] / allc, 5.0),
    ]:
        print(f"   {name:<66} {value:8.2f}x  target >= {target}: {'PASS' if value >= target else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
