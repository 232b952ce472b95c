"""Quantization speed, side by side on the same weight in one process: hanpack's rtn,
mse and hqq (1 thread and all cores) against a torch implementation of the same method
(vectorised over groups, all cores) and, for hqq, the `hqq` package's own quantizer on
CPU. Rounds are interleaved (each contender once per round, in turn) and the best of
``--rounds`` is kept, so a slow spell of this noisy machine hits everyone alike. Also
the relative error of every method on stories260k's linear weights, and the projected
time for LLaMA-2-7B's 6.48 B linear weights.

    python benches/bench_quant.py [--size 4096] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # idle BLAS threads spin and steal a core
import numpy as np

import hanpack.quant as hq

STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260k" / "model.safetensors"
LLAMA2_7B_LINEAR = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)


def errors() -> None:
    from safetensors.numpy import load_file

    ws = {k: v for k, v in load_file(str(STORIES)).items() if v.ndim == 2 and k.endswith("proj.weight")}
    print(f"stories260k: {len(ws)} linear weights, {sum(w.size for w in ws.values())} values; relative Frobenius error")
    for bits, gs in [(4, 128), (4, 32), (3, 128), (3, 32), (2, 32), (8, 64)]:
        row = []
        for method in ("rtn", "mse", "hqq"):
            num = den = 0.0
            for name, w in ws.items():
                d = hq.quantize(w, bits=bits, group_size=gs, method=method, name=name).dequantize()
                num += float(((d.astype(np.float64) - w) ** 2).sum())
                den += float((w.astype(np.float64) ** 2).sum())
            row.append(f"{method} {(num / den) ** 0.5:.4f}")
        print(f"  int{bits}-g{gs}: " + "  ".join(row))


# --- torch implementations of the same methods, vectorised over all groups -------------


def _torch_params(lo, hi, qmax):  # type: ignore[no-untyped-def]
    import torch

    s = ((hi - lo) / qmax).abs().half().float()
    z = torch.where(s == 0, torch.zeros_like(s), (-lo / torch.where(s == 0, torch.ones_like(s), s)).round().clamp(0, qmax))
    return s, z.half().float()


def _torch_err(g, s, z, qmax):  # type: ignore[no-untyped-def]
    q = (g / s + z).round().clamp(0, qmax)
    return (((q - z) * s - g) ** 2).sum(dim=1)


def torch_rtn(w, bits: int, gs: int):  # type: ignore[no-untyped-def]
    g = w.reshape(-1, gs)
    qmax = 2**bits - 1
    lo, hi = g.amin(dim=1, keepdim=True).clamp(max=0), g.amax(dim=1, keepdim=True).clamp(min=0)
    s, z = _torch_params(lo, hi, qmax)
    return (g / s + z).round().clamp(0, qmax).to(dtype=__import__("torch").uint8), s.half(), z.half()


def torch_mse(w, bits: int, gs: int):  # type: ignore[no-untyped-def]
    """hanpack's mse in torch: coarse-to-fine clipping search (range shrunk by i/100,
    i < 12), then 4 least-squares refits."""
    import torch

    g = w.reshape(-1, gs)
    qmax = 2**bits - 1
    lo, hi = g.amin(dim=1, keepdim=True).clamp(max=0), g.amax(dim=1, keepdim=True).clamp(min=0)
    def cand(i):  # type: ignore[no-untyped-def]
        p = 1 - i / 100
        s, z = _torch_params(p * lo, p * hi, qmax)
        return s, z, _torch_err(g, s, z, qmax)
    s, z, e = cand(0)
    best_i = torch.zeros(g.shape[0], dtype=torch.long)
    for i in range(4, 12, 4):
        cs, cz, ce = cand(i)
        better = ce < e
        s, z, e = torch.where(better[:, None], cs, s), torch.where(better[:, None], cz, z), torch.where(better, ce, e)
        best_i = torch.where(better, i, best_i)
    for off in (-3, -2, -1, 1, 2, 3):  # the fine pass, all groups at once
        i = (best_i + off).clamp(0, 11)
        p = (1 - i.float() / 100)[:, None]
        cs, cz = _torch_params(p * lo, p * hi, qmax)
        ce = _torch_err(g, cs, cz, qmax)
        better = (ce < e) & (best_i + off >= 0) & (best_i + off < 12)
        s, z, e = torch.where(better[:, None], cs, s), torch.where(better[:, None], cz, z), torch.where(better, ce, e)
    for _ in range(4):
        q = (g / s + z).round().clamp(0, qmax)
        n = g.shape[1]
        sq, sqq, sw, sqw = q.sum(1, keepdim=True), (q * q).sum(1, keepdim=True), g.sum(1, keepdim=True), (q * g).sum(1, keepdim=True)
        det = n * sqq - sq * sq
        a = (n * sqw - sq * sw) / det.clamp(min=1e-12)
        b = (sw - a * sq) / n
        ok = (det > 1e-12) & (a > 0)
        ns, nz = torch.where(ok, a, s).half().float(), torch.where(ok, -b / a.clamp(min=1e-12), z).half().float()
        ne = _torch_err(g, ns, nz, qmax)
        better = ne < e
        s, z, e = torch.where(better[:, None], ns, s), torch.where(better[:, None], nz, z), torch.where(better, ne, e)
    return (g / s + z).round().clamp(0, qmax).to(torch.uint8), s.half(), z.half()


def hqq_package(w, bits: int, gs: int):  # type: ignore[no-untyped-def]
    from hqq.core.quantize import Quantizer

    return Quantizer.quantize(w, nbits=bits, group_size=gs, optimize=True, axis=1, bitpack=False, device="cpu")


def speed(size: int, rounds: int) -> None:
    w = (np.random.default_rng(0).standard_normal((size, size)) * 0.02).astype(np.float32)
    ncpu = os.cpu_count() or 1
    contenders: Dict[str, List[Tuple[str, Callable[[], object]]]] = {m: [] for m in ("rtn", "mse", "hqq")}
    for m in contenders:
        contenders[m].append((f"hanpack {m}, 1 thread", lambda m=m: hq.quantize(w, bits=4, group_size=128, method=m, num_threads=1)))
        contenders[m].append((f"hanpack {m}, {ncpu} threads", lambda m=m: hq.quantize(w, bits=4, group_size=128, method=m, num_threads=ncpu)))
    try:
        import torch

        torch.set_num_threads(ncpu)
        tw = torch.from_numpy(w)
        contenders["rtn"].append((f"torch rtn, {ncpu} threads", lambda: torch_rtn(tw, 4, 128)))
        contenders["mse"].append((f"torch mse, {ncpu} threads", lambda: torch_mse(tw, 4, 128)))
        try:
            import hqq.core.quantize  # noqa: F401

            contenders["hqq"].append((f"hqq package {__import__('hqq').__version__}, {ncpu} threads", lambda: hqq_package(tw, 4, 128)))
        except ImportError as e:
            print(f"(hqq package not available: {e})")
    except ImportError as e:
        print(f"(torch not available: {e})")
    best: Dict[str, float] = {}
    for _ in range(rounds):
        for m, cs in contenders.items():
            for name, f in cs:
                t = time.perf_counter()
                f()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    print(f"\nint4-g128 on a {size}x{size} float32 weight ({w.size / 1e6:.1f} M weights), best of {rounds} interleaved rounds:")
    for m, cs in contenders.items():
        ours = best[cs[1][0]]
        for name, _ in cs:
            rate = w.size / best[name] / 1e6
            extra = "" if name == cs[1][0] else f"   hanpack {ncpu}T is {best[name] / ours:.1f}x faster"
            print(f"  {name:<34} {rate:8.1f} M weights/s{extra}")
        print(f"  -> LLaMA-2-7B linear weights ({LLAMA2_7B_LINEAR / 1e9:.2f} B) with hanpack {m} on {ncpu} cores: {LLAMA2_7B_LINEAR / (w.size / ours) / 60:.1f} min")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if STORIES.exists():
        errors()
    speed(args.size, args.rounds)
