"""Quantization error (rtn vs mse vs hqq) on stories260k and throughput on a synthetic
4096x4096 weight, at 1 thread and all threads.

    python benches/bench_quant.py [--size 4096]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import hanpack.quant as hq

STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260k" / "model.safetensors"


def errors() -> None:
    from safetensors.numpy import load_file

    ws = {k: v for k, v in load_file(str(STORIES)).items() if v.ndim == 2 and k.endswith("proj.weight")}
    print(f"stories260k: {len(ws)} linear weights, {sum(w.size for w in ws.values())} values; relative Frobenius error")
    for bits, gs in [(4, 64), (4, 32), (3, 64), (3, 32), (2, 32), (8, 64)]:
        row = []
        for method in ("rtn", "mse", "hqq"):
            num = den = 0.0
            for name, w in ws.items():
                d = hq.quantize(w, bits=bits, group_size=gs, method=method, name=name).dequantize()
                num += float(((d.astype(np.float64) - w) ** 2).sum())
                den += float((w.astype(np.float64) ** 2).sum())
            row.append(f"{method} {(num / den) ** 0.5:.4f}")
        print(f"  int{bits}-g{gs}: " + "  ".join(row))


def speed(size: int) -> None:
    w = (np.random.default_rng(0).standard_normal((size, size)) * 0.02).astype(np.float32)
    for method in ("rtn", "mse", "hqq"):
        for threads in (1, os.cpu_count() or 1):
            best = float("inf")
            for _ in range(2):
                t = time.perf_counter()
                hq.quantize(w, bits=4, group_size=128, method=method, num_threads=threads)
                best = min(best, time.perf_counter() - t)
            print(f"  {method} int4-g128 {size}x{size}, {threads} thread(s): {w.size / best / 1e6:.1f} M weights/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    args = ap.parse_args()
    if STORIES.exists():
        errors()
    speed(args.size)
