"""Batch-1 (and small-batch) CPU speed of ``hanpack.nn.QuantLinear`` against torch's
``F.linear`` on the dense weight, same process, same inputs.

    python benches/bench_quantlinear.py [--reps 50] [--batch 1]

Weights: 4096x4096, 11008x4096 (up/gate projections of a 7B LLaMA) and 4096x11008 (down),
random normal, quantized with RTN (the method does not change the kernel's speed).
Contenders, interleaved per round, median of ``--reps`` calls each after warm-up:
torch fp32 ``F.linear``, torch bf16 ``F.linear``, QuantLinear int4-g128 and int3-g128
(fp32 activations; bf16 activations: the same modules called with the bf16 input that
torch bf16 gets; "a8": ``act_bits=8``, fp32 input quantized to int8 on the fly, as
llama.cpp does). torch uses all cores (``torch.get_num_threads()``), as hanpack does.
Prints times, ratios to fp32 and bf16, and the effective weight bandwidth (bytes of the
weight as stored / time). The int3/int4 ratios are also measured with the six QuantLinear
contenders called in turn, one call each per repetition: a slow spell of the machine then
lands on int3 and int4 alike, and no weight is read twice in a row, as when a model's
layers run one after the other (on this VM the in-turn products are slower at the larger
shapes: the weights of six modules do not all stay in the cache it gets).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine_basics  # noqa: E402

import hanpack.nn  # noqa: E402
from hanpack.quant import quantize  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]


def median_time(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def median_times_in_turn(fns: dict, reps: int) -> dict:
    """Median time of each of ``fns``, calling them one after the other ``reps`` times."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    print(machine_basics(), f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    torch.manual_seed(0)
    for out_f, in_f in SHAPES:
        w = torch.randn(out_f, in_f)
        x = torch.randn(args.batch, in_f)
        wb, xb = w.bfloat16(), x.bfloat16()
        mods = {}
        for bits in (4, 3):
            q = quantize(w.numpy(), bits=bits, group_size=128, method="rtn")
            mods[bits] = hanpack.nn.QuantLinear.from_quantized(q)
            mods[bits, 8] = hanpack.nn.QuantLinear.from_quantized(q, act_bits=8)
        contenders = {
            "torch fp32 F.linear": (lambda: F.linear(x, w), w.numel() * 4),
            "torch bf16 F.linear": (lambda: F.linear(xb, wb), w.numel() * 2),
            "hanpack int4-g128": (lambda: mods[4](x), mods[4].qweight.numel() + mods[4].scales.numel() * 4),
            "hanpack int3-g128": (lambda: mods[3](x), mods[3].qweight.numel() + mods[3].scales.numel() * 4),
            "hanpack int4-g128 bf16": (lambda: mods[4](xb), mods[4].qweight.numel() + mods[4].scales.numel() * 4),
            "hanpack int3-g128 bf16": (lambda: mods[3](xb), mods[3].qweight.numel() + mods[3].scales.numel() * 4),
            "hanpack int4-g128 a8": (lambda: mods[4, 8](x), mods[4].qweight.numel() + mods[4].scales.numel() * 4),
            "hanpack int3-g128 a8": (lambda: mods[3, 8](x), mods[3].qweight.numel() + mods[3].scales.numel() * 4),
        }
        with torch.inference_mode():
            best = {name: median_time(fn, args.reps) for name, (fn, _) in contenders.items()}
            again = {name: median_time(fn, args.reps) for name, (fn, _) in contenders.items()}
            ours = {name: fn for name, (fn, _) in contenders.items() if name.startswith("hanpack")}
            turn = median_times_in_turn(ours, args.reps)
            turn_again = median_times_in_turn(ours, args.reps)
        best = {k: min(best[k], again[k]) for k in best}
        turn = {k: min(turn[k], turn_again[k]) for k in turn}
        print(f"\n[{out_f}, {in_f}] batch {args.batch}")
        for name, (_, nbytes) in contenders.items():
            t = best[name]
            print(f"  {name:<24} {t * 1e3:8.3f} ms  {nbytes / t / 1e9:6.1f} GB/s  "
                  f"fp32/this {best['torch fp32 F.linear'] / t:5.2f}x  bf16/this {best['torch bf16 F.linear'] / t:5.2f}x")
        print(f"  targets: int4 >= 2.5x fp32 and >= 1.5x bf16; int3 at least as fast as int4 "
              f"(int3/int4 time {best['hanpack int3-g128'] / best['hanpack int4-g128']:.2f} with f32 "
              f"activations, {best['hanpack int3-g128 bf16'] / best['hanpack int4-g128 bf16']:.2f} with bf16, "
              f"{best['hanpack int3-g128 a8'] / best['hanpack int4-g128 a8']:.2f} with a8)")
        print("  called in turn: " + ", ".join(f"{name[8:]} {t * 1e3:.3f} ms" for name, t in turn.items()))
        print(f"  called in turn, int3/int4 time {turn['hanpack int3-g128'] / turn['hanpack int4-g128']:.2f} with f32 "
              f"activations, {turn['hanpack int3-g128 bf16'] / turn['hanpack int4-g128 bf16']:.2f} with bf16, "
              f"{turn['hanpack int3-g128 a8'] / turn['hanpack int4-g128 a8']:.2f} with a8")
        np.testing.assert_allclose(mods[4](x).numpy(), F.linear(x, mods[4].dequantized_weight()).numpy(),
                                   rtol=1e-3, atol=1e-3)
        # bf16 activations: the f32 product of the bf16 inputs, returned in bf16.
        for bits in (4, 3):
            np.testing.assert_allclose(mods[bits](xb).float().numpy(),
                                       F.linear(xb.float(), mods[bits].dequantized_weight()).bfloat16().float().numpy(),
                                       rtol=1e-2, atol=1e-2)


if __name__ == "__main__":
    main()
