#!/usr/bin/env python3
"""The key single-thread ratios, measured interleaved: on a shared machine whose speed
changes from one second to the next (contention other processes' CPU time does not show),
timing one library and then the other lets a slow spell land on one side only. Here each
round times every contender once, in turn, on the same input; each contender's figure is
its best round, so all of them had the same chances at a quiet moment.

    python benches/bench_interleaved.py                 # 15 rounds
    python benches/bench_interleaved.py --rounds 30 --max-mb 4
    python benches/bench_interleaved.py --only bpe          # one section

Rows (MB/s of UTF-8 input text, decode too):
  * SentencePiece, Chinese-LLaMA on the Chinese corpora: sentencepiece per-line encode and
    decode; hanpack per-line encode (also with two loaded copies of the model used in turn,
    line by line: each thread keeps the caches of its last few models), encode_batch /
    encode_batch_numpy with 1 thread and all cores, per-line decode, decode_batch with 1
    thread.
  * Byte-level BPE, LLaMA-3 and Qwen2: tiktoken encode_ordinary and decode per line;
    hanpack encode and decode per line, encode_batch with 1 thread and all cores (also
    right after a small untimed call, as calls in a row run: see the comment there).
Ids are compared with the reference's once before timing (must be 0 mismatching lines).
"""

from __future__ import annotations

import argparse
import gc
import time
import unicodedata

from bench_bpe import SPECS, make_tiktoken
from bench_spm import DEFAULT_MODEL
from benchlib import import_hanpack, load_corpus, machine_basics, utf8_len


def best_rounds(contenders: dict, rounds: int) -> dict[str, float]:
    """Each contender is a function, or (prepare, function) with an untimed step first."""
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            gc.collect()
            if isinstance(fn, tuple):
                prepare, fn = fn
                prepare()
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            del out
    return best


def report(title: str, nbytes: int, best: dict[str, float], ratios: list[tuple[str, str, str, float | None]]) -> None:
    """Prints MB/s and the ratios ``theirs / ours`` (time), against a target unless it is None."""
    print(f"\n== {title}")
    for name, t in best.items():
        print(f"   {name:<44} {nbytes / t / 1e6:8.2f} MB/s")
    for label, ours, theirs, target in ratios:
        r = best[theirs] / best[ours]
        verdict = "" if target is None else f"  target >= {target}: {'PASS' if r >= target else 'BELOW TARGET'}"
        print(f"   {label:<58} {r:6.2f}x{verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--max-mb", type=float, default=8.0, help="MB of Chinese text for SentencePiece")
    ap.add_argument("--bpe-mb", type=float, default=2.0, help="MB of Chinese text for byte-level BPE")
    ap.add_argument("--only", choices=["spm", "bpe"], help="run one section (each otherwise runs after the other)")
    args = ap.parse_args()
    hanpack = import_hanpack()
    import sentencepiece

    print("machine:", machine_basics())
    if args.only != "bpe":
        spm_section(hanpack, sentencepiece, args)
    if args.only != "spm":
        bpe_section(hanpack, args)


def spm_section(hanpack, sentencepiece, args) -> None:
    lines, _ = load_corpus(("zh-hans_", "zh-hant_"), args.max_mb)
    nbytes = sum(utf8_len(t) for t in lines)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(DEFAULT_MODEL))
    tok = hanpack.Tokenizer.from_file(DEFAULT_MODEL)
    other = hanpack.Tokenizer.from_file(DEFAULT_MODEL)  # a second loaded model, used in turn with `tok`
    pair = (tok.encode, other.encode)
    ids = [sp.encode(t) for t in lines]
    bad = sum(a != b for a, b in zip(ids, tok.encode_batch(lines)))
    bad += sum(a != b for a, b in zip((sp.decode(i) for i in ids), tok.decode_batch(ids)))
    print(f"SentencePiece: {len(lines)} texts, {nbytes / 1e6:.2f} MB, {bad} mismatching lines (encode + decode)")
    best = best_rounds({
        "sentencepiece encode per line": lambda: [sp.encode(t) for t in lines],
        "hanpack encode per line": lambda: [tok.encode(t) for t in lines],
        "hanpack encode per line, 2 models in turn": lambda: [pair[i & 1](t) for i, t in enumerate(lines)],
        "hanpack encode_batch nt=1": lambda: tok.encode_batch(lines, num_threads=1),
        "hanpack encode_batch all cores": lambda: tok.encode_batch(lines),
        "hanpack encode_batch_numpy nt=1": lambda: tok.encode_batch_numpy(lines, num_threads=1),
        "hanpack encode_batch_numpy all cores": lambda: tok.encode_batch_numpy(lines),
        "sentencepiece decode per line": lambda: [sp.decode(i) for i in ids],
        "hanpack decode per line": lambda: [tok.decode(i) for i in ids],
        "hanpack decode_batch nt=1": lambda: tok.decode_batch(ids, num_threads=1),
    }, args.rounds)
    report(f"SentencePiece {DEFAULT_MODEL.name}, Chinese, best of {args.rounds} interleaved rounds", nbytes, best, [
        ("encode per line: hanpack / sentencepiece", "hanpack encode per line", "sentencepiece encode per line", 5.0),
        ("encode per line, 2 models in turn / one model", "hanpack encode per line, 2 models in turn", "hanpack encode per line", None),
        ("encode_batch nt=1: hanpack / sentencepiece per line", "hanpack encode_batch nt=1", "sentencepiece encode per line", 5.0),
        ("encode_batch_numpy nt=1: hanpack / sentencepiece per line", "hanpack encode_batch_numpy nt=1", "sentencepiece encode per line", 5.0),
        ("encode_batch all cores / nt=1", "hanpack encode_batch all cores", "hanpack encode_batch nt=1", 1.8),
        ("encode_batch_numpy all cores / nt=1", "hanpack encode_batch_numpy all cores", "hanpack encode_batch_numpy nt=1", 1.8),
        ("decode per line: hanpack / sentencepiece", "hanpack decode per line", "sentencepiece decode per line", 5.0),
        ("decode_batch nt=1: hanpack / sentencepiece per line", "hanpack decode_batch nt=1", "sentencepiece decode per line", 5.0),
    ])


def bpe_section(hanpack, args) -> None:
    bpe_lines, _ = load_corpus(("zh-hans_", "zh-hant_"), args.bpe_mb)
    for name in SPECS:
        enc = make_tiktoken(name)
        btok = hanpack.Tokenizer.from_file(SPECS[name][0])
        texts = [t for t in bpe_lines if not any(s in t for s in btok.special_tokens)]
        nb = sum(utf8_len(t) for t in texts)
        bids = [enc.encode_ordinary(t) for t in texts]
        mine = btok.encode_batch(texts)
        # tiktoken does not apply Qwen2's NFC: compare on lines NFC leaves unchanged.
        bad = sum(a != b for t, a, b in zip(texts, bids, mine) if unicodedata.normalize("NFC", t) == t)
        print(f"\n{name}: {len(texts)} texts, {nb / 1e6:.2f} MB, {bad} lines differ from tiktoken")
        best = best_rounds({
            "tiktoken encode_ordinary per line": lambda: [enc.encode_ordinary(t) for t in texts],
            "hanpack encode per line": lambda: [btok.encode(t) for t in texts],
            "hanpack encode_batch nt=1": lambda: btok.encode_batch(texts, num_threads=1),
            "hanpack encode_batch all cores": lambda: btok.encode_batch(texts),
            # The same call right after a small one: what calls in a row get. A call after
            # the pool has been idle (the row above: here the other contenders ran for
            # ~0.2 s) pays about 1 ms to warm up (measured: no page faults; a 1 ms call
            # just before removes it), about 7% of this 2 MB batch.
            "hanpack encode_batch all cores, warm": (lambda: btok.encode_batch(texts[::20]), lambda: btok.encode_batch(texts)),
            "tiktoken decode per line": lambda: [enc.decode(i) for i in bids],
            "hanpack decode per line": lambda: [btok.decode(i) for i in bids],
        }, args.rounds)
        report(f"byte-level BPE {name}, Chinese, best of {args.rounds} interleaved rounds", nb, best, [
            ("encode per line: hanpack / tiktoken", "hanpack encode per line", "tiktoken encode_ordinary per line", 2.0),
            ("encode_batch nt=1: hanpack / tiktoken per line", "hanpack encode_batch nt=1", "tiktoken encode_ordinary per line", 2.0),
            ("encode_batch all cores / nt=1", "hanpack encode_batch all cores", "hanpack encode_batch nt=1", 1.8),
            ("encode_batch all cores, warm / nt=1", "hanpack encode_batch all cores, warm", "hanpack encode_batch nt=1", 1.8),
            ("decode per line: hanpack / tiktoken", "hanpack decode per line", "tiktoken decode per line", 3.0),
        ])


if __name__ == "__main__":
    main()
