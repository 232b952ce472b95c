"""hanpack's CUDA kernels against torch fp16 ``F.linear`` (cuBLAS), same process, same GPU
(issue 8). Needs an NVIDIA GPU; prints why and exits 0 without one.

    python benches/bench_cuda.py [--reps 200] [--json out.json]

For each shape of the issue (4096x4096, 4096x14336, 14336x4096, 8192x28672; out x in)
and batch (1, 16, 512): median time of fp16 ``F.linear`` and of hanpack int4-g128 and
int3-g128 (``hanpack.cuda_kernels.quant_linear``), timed with CUDA events over ``--reps``
calls after a warm-up; the speedup over fp16; and, at batch 1, the achieved DRAM
bandwidth (packed weight + scales + zeros + activations + output, read or written once)
as a share of the GPU's copy bandwidth, measured here with a 1 GiB device-to-device copy.
Weights are random (the kernels' speed does not depend on the values); the L2 cache is
flushed before each timed call so that batch-1 products read their weight from DRAM, as
in generation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (this bench needs an NVIDIA GPU)")
        return 0
    import hanpack.cuda_kernels as hk
    import hanpack.quant as hq
    from hanpack.nn import quantized_buffers

    why = hk.unavailable()
    if why is not None:
        print(f"hanpack's kernels cannot run: {why}")
        return 1
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)  # larger than any L2

    def timed(fn, reps: int) -> float:
        for _ in range(10):
            fn()
        times = []
        for _ in range(reps):
            flush.zero_()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e-3)
        return statistics.median(times)

    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), 20)
    copy_bw = 2 * src.numel() / copy_s
    del src, dst
    print(f"{name}: device-to-device copy {copy_bw / 1e9:.0f} GB/s (read + write)")
    rows = []
    for out_f, in_f in ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)):
        rng = np.random.default_rng(0)
        w = rng.standard_normal((out_f, in_f), dtype=np.float32)
        w16 = torch.from_numpy(w).to(dev, torch.float16)
        packed = {}
        for bits in (4, 3):
            b = quantized_buffers(hq.quantize(w, bits=bits, group_size=128, method="rtn"))
            packed[bits] = {k: v.to(dev) for k, v in b.items()}
        del w
        for batch in (1, 16, 512):
            x = torch.randn(batch, in_f, device=dev, dtype=torch.float16)
            t16 = timed(lambda: F.linear(x, w16), args.reps)
            line = f"{out_f:>5}x{in_f:<5} batch {batch:>3}: fp16 {t16 * 1e6:8.1f} us"
            row = {"shape": [out_f, in_f], "batch": batch, "fp16_s": t16}
            for bits, p in packed.items():
                t = timed(lambda: hk.quant_linear(x, p["qweight"], p["scales"], p["zeros"], bits=bits, group_size=128,
                                                  in_features=in_f), args.reps)
                moved = sum(v.numel() * v.element_size() for v in p.values()) + 2 * batch * (in_f + out_f)
                bw = moved / t
                line += f" | int{bits} {t * 1e6:8.1f} us ({t16 / t:4.2f}x"
                line += f", {bw / 1e9:5.0f} GB/s = {bw / copy_bw * 100:3.0f}% of copy)" if batch == 1 else ")"
                row[f"int{bits}_s"] = t
                row[f"int{bits}_bandwidth"] = bw
            print(line, flush=True)
            rows.append(row)
        del w16, packed
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"gpu": name, "copy_bandwidth": copy_bw, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
