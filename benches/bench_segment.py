"""Word segmentation: hanpack.Segmenter against jieba 0.42 (the reference) and rjieba
(jieba-rs in Rust, the fast competitor), on every line of the shared corpora.

    python benches/bench_segment.py [--hmm both|on|off] [--max-mb 0]

Prints, per mode: lines that differ from jieba (must be 0), and MB/s of jieba, rjieba
and hanpack per line on one thread, and hanpack's cut_batch on 1 thread and all cores.
Contenders run interleaved (each once per round, best of --rounds) on the same lines,
with Python's cyclic GC off while timed (as ``timeit`` does; see ``timed``).
rjieba uses its own copy of jieba's dictionary, so only its speed is compared.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path
from typing import Callable, Dict, List

import jieba

from hanpack.segment import Segmenter, jieba_hmm

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "data" / "corpus"
DICT = SHARED / "data" / "dict" / "jieba_dict.txt"


def corpus_lines(max_mb: float) -> List[str]:
    lines: List[str] = []
    for p in sorted(CORPUS.iterdir()):
        if p.is_file() and p.suffix in (".txt", ".jsonl"):
            text = p.read_text(encoding="utf-8")
            if max_mb:
                text = text[: int(max_mb * 1e6 / 3)]
            lines += text.split("\n")
    return lines


def timed(f: Callable[[], object]) -> float:
    """Seconds ``f()`` takes with the cyclic GC off, as ``timeit`` does: every contender
    builds ~90k lists, and the collections they trigger cost whichever contender runs
    when the heap is biggest (the same code measured 0.95x or 1.11x rjieba depending on
    the order), so with the GC on the order decides, not the segmenter."""
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        f()
        return time.perf_counter() - t
    finally:
        gc.enable()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hmm", choices=["both", "on", "off"], default="both")
    ap.add_argument("--max-mb", type=float, default=0, help="per corpus file (0: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speed-only", action="store_true",
                    help="skip jieba (the reference check and its one timed pass): speed reruns only")
    args = ap.parse_args()
    lines = corpus_lines(args.max_mb)
    nbytes = sum(len(s.encode("utf-8")) for s in lines)
    ref = jieba.Tokenizer(dictionary=str(DICT))
    ref.initialize()
    seg = Segmenter.from_file(DICT, hmm=jieba_hmm())
    try:
        import rjieba
    except ImportError:
        rjieba = None
    ncpu = os.cpu_count() or 1
    print(f"{len(lines)} lines, {nbytes / 1e6:.1f} MB from {CORPUS}")
    for hmm in {"both": (False, True), "on": (True,), "off": (False,)}[args.hmm]:
        want: List[List[str]] = []
        jieba_time = float("nan")
        if not args.speed_only:
            jieba_time = timed(lambda: want.extend(list(ref.cut(s, HMM=hmm)) for s in lines))
            got = seg.cut_batch(lines, hmm=hmm)
            bad = sum(a != b for a, b in zip(want, got))
            del want, got
        contenders: Dict[str, Callable[[], object]] = {
            "hanpack cut per line": lambda: [seg.cut(s, hmm=hmm) for s in lines],
            "hanpack cut_batch, 1 thread": lambda: seg.cut_batch(lines, hmm=hmm, num_threads=1),
            f"hanpack cut_batch, {ncpu} threads": lambda: seg.cut_batch(lines, hmm=hmm, num_threads=ncpu),
        }
        if rjieba is not None:
            contenders["rjieba cut per line"] = lambda: [rjieba.cut(s, hmm=hmm) for s in lines]
        best: Dict[str, float] = {}
        for _ in range(args.rounds):
            for name, f in contenders.items():
                best[name] = min(best.get(name, float("inf")), timed(f))
        if args.speed_only:
            print(f"\nHMM={hmm}: (reference check skipped: --speed-only)")
        else:
            best["jieba cut per line (one pass)"] = jieba_time
            print(f"\nHMM={hmm}: {bad} of {len(lines)} lines differ from jieba")
        for name, secs in sorted(best.items(), key=lambda kv: kv[1]):
            print(f"  {name:<34} {nbytes / secs / 1e6:7.2f} MB/s")
        ours = best["hanpack cut per line"]
        print("  hanpack per line" + ("" if args.speed_only else f" / jieba: {jieba_time / ours:.1f}x"), end="")
        if rjieba is not None:
            print(f"; / rjieba: {best['rjieba cut per line'] / ours:.2f}x", end="")
        print(f"; cut_batch {ncpu} threads / 1 thread: {best['hanpack cut_batch, 1 thread'] / best[f'hanpack cut_batch, {ncpu} threads']:.2f}x")


if __name__ == "__main__":
    main()
