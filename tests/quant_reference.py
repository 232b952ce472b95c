"""A plain numpy re-implementation of hanpack.quant, written from the layout and method
docs (rust/hanpack-core/src/quant/), used as the oracle in test_quant.py.

Arithmetic follows the documented order in float32 (numpy float32 ops are IEEE like
Rust's), parameters are rounded to float16 before codes are made, so rtn matches the
Rust core bit for bit. mse and hqq sum errors in float64 in a different order than
Rust does, so near-ties can resolve differently (see the tolerances in test_quant.py).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

F32 = np.float32
BLOCK = 32
MSE_GRID, MSE_STEPS, MSE_COARSE, MSE_REFIT = 100, 12, 4, 4
HQQ_LP, HQQ_BETA, HQQ_KAPPA, HQQ_ITERS = F32(0.7), F32(10.0), F32(1.01), 20


def grid(bits: int) -> Tuple[F32, F32]:
    return F32(2**bits - 1), F32(2 ** (bits - 1))


def codes(w: np.ndarray, s16: np.ndarray, z16: np.ndarray, qmax: F32) -> np.ndarray:
    """q = clamp(rint(w / s + z), 0, qmax); q = clamp(rint(z)) where s == 0."""
    s, z = s16.astype(F32), z16.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.where(s == 0, z, w / np.where(s == 0, F32(1), s) + z)
    return np.clip(np.rint(x), 0, qmax).astype(np.uint8)


def deq(q: np.ndarray, s16: np.ndarray, z16: np.ndarray) -> np.ndarray:
    return (q.astype(F32) - z16.astype(F32)) * s16.astype(F32)


def initial_range(g: np.ndarray, sym: bool) -> Tuple[np.ndarray, np.ndarray]:
    if sym:
        m = g[np.arange(g.shape[0]), np.argmax(np.abs(g), axis=1)]
        return m, m
    return np.minimum(g.min(axis=1), F32(0)), np.maximum(g.max(axis=1), F32(0))


def params(lo: np.ndarray, hi: np.ndarray, bits: int, sym: bool) -> Tuple[np.ndarray, np.ndarray]:
    qmax, mid = grid(bits)
    if sym:
        return (lo / -mid).astype(np.float16), np.full(lo.shape, mid, np.float16)
    s16 = np.abs((hi - lo) / qmax).astype(np.float16)
    s = s16.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s == 0, F32(0), np.clip(np.rint(-lo / np.where(s == 0, F32(1), s)), 0, qmax))
    return s16, z.astype(np.float16)


def sq_error(g: np.ndarray, s16: np.ndarray, z16: np.ndarray, bits: int, imp: Optional[np.ndarray]) -> np.ndarray:
    qmax, _ = grid(bits)
    q = codes(g, s16[:, None], z16[:, None], qmax)
    d = (deq(q, s16[:, None], z16[:, None]) - g).astype(np.float64)
    e = d * d
    if imp is not None:
        e = e * imp.astype(np.float64)[None, :]
    return e.sum(axis=1)


def rtn_params(g: np.ndarray, bits: int, sym: bool, imp: Optional[np.ndarray] = None):
    return params(*initial_range(g, sym), bits, sym)


def mse_params(g: np.ndarray, bits: int, sym: bool, imp: Optional[np.ndarray] = None):
    """Coarse-to-fine clipping search, then least-squares refits (mse.rs's two stages)."""
    lo, hi = initial_range(g, sym)
    cands = [params(lo, hi, bits, sym)]
    for i in range(1, MSE_STEPS):
        p = F32(1) - F32(i) / F32(MSE_GRID)
        cands.append(params(p * lo, p * hi, bits, sym))
    errs = np.stack([sq_error(g, s, z, bits, imp) for s, z in cands])  # [candidate, row]
    rows = np.arange(g.shape[0])
    best_i = np.zeros(g.shape[0], dtype=np.int64)
    for i in range(MSE_COARSE, MSE_STEPS, MSE_COARSE):
        best_i = np.where(errs[i] < errs[best_i, rows], i, best_i)
    centre = best_i.copy()
    for off in range(-(MSE_COARSE - 1), MSE_COARSE):
        i = centre + off
        ok = (i >= 0) & (i < MSE_STEPS) & (i % MSE_COARSE != 0)
        ic = np.clip(i, 0, MSE_STEPS - 1)
        best_i = np.where(ok & (errs[ic, rows] < errs[best_i, rows]), ic, best_i)
    s = np.array([cands[i][0][r] for r, i in enumerate(best_i)], np.float16)
    z = np.array([cands[i][1][r] for r, i in enumerate(best_i)], np.float16)
    out = [_refit(g[r], s[r], z[r], bits, sym, None if imp is None else imp) for r in rows]
    return np.array([o[0] for o in out], np.float16), np.array([o[1] for o in out], np.float16)


def _refit(w: np.ndarray, s: np.float16, z: np.float16, bits: int, sym: bool, imp: Optional[np.ndarray]):
    """Alternate codes and their weighted least-squares (s, z) while the error falls."""
    qmax, mid = grid(bits)
    v = np.ones(w.shape, np.float64) if imp is None else imp.astype(np.float64)
    err = sq_error(w[None, :], np.array([s]), np.array([z]), bits, imp)[0]
    for _ in range(MSE_REFIT):
        q = codes(w, np.float16(s), np.float16(z), qmax).astype(np.float64) - (mid if sym else 0)
        x = w.astype(np.float64)
        sv, sq, sqq, sw, sqw = v.sum(), (v * q).sum(), (v * q * q).sum(), (v * x).sum(), (v * q * x).sum()
        if sym:
            if sqq <= 0:
                break
            a, zz = sqw / sqq, float(mid)
        else:
            det = sv * sqq - sq * sq
            if not det > 1e-12 * sv * sqq:
                break
            a = (sv * sqw - sq * sw) / det
            if not a > 0:
                break
            zz = -((sw - a * sq) / sv) / a
        s2, z2 = np.float16(F32(a)), np.float16(F32(zz))
        if not (np.isfinite(s2) and s2 != 0 and np.isfinite(z2)):
            break
        e2 = sq_error(w[None, :], np.array([s2]), np.array([z2]), bits, imp)[0]
        if not e2 < err:
            break
        s, z, err = s2, z2, e2
    return s, z


def _shrink(x: np.ndarray, beta: F32) -> np.ndarray:
    a = np.abs(x)
    with np.errstate(divide="ignore"):
        t = a - np.power(a, HQQ_LP - F32(1)) / beta
    return np.where(t > 0, np.copysign(t, x), F32(0)).astype(F32)


def _hqq_one(w: np.ndarray, bits: int, sym: bool) -> Tuple[np.float16, np.float16]:
    qmax, mid = grid(bits)
    lo, hi = initial_range(w[None, :], sym)
    s0, z0 = params(lo, hi, bits, sym)
    if s0[0] == 0:
        return s0[0], z0[0]
    beta, best_err = HQQ_BETA, np.inf
    if sym:
        s = lo[0] / -mid
        best = s
        for _ in range(HQQ_ITERS):
            with np.errstate(divide="ignore", invalid="ignore"):
                x = w / s + mid if s != 0 else np.full_like(w, mid)
            c = np.clip(np.rint(x), 0, qmax).astype(F32) - mid
            r = c * s
            e = _shrink(w - r, beta)
            num, den = ((w - e) * c).astype(np.float64).sum(), (c * c).astype(np.float64).sum()
            err = np.abs(w - r).astype(np.float64).mean()
            if err >= best_err:
                break
            best_err, best = err, s
            if den > 0:
                s = F32(num / den)
            beta = F32(beta * HQQ_KAPPA)
        return np.float16(best), np.float16(mid)
    inv = qmax / (hi[0] - lo[0])
    z = -lo[0] * inv
    best = z
    for _ in range(HQQ_ITERS):
        q = np.clip(np.rint(w * inv + z), 0, qmax)
        r = (q - z) / inv
        e = _shrink(w - r, beta)
        sum_z = (q - (w - e) * inv).astype(np.float64).sum()
        err = np.abs(w - r).astype(np.float64).mean()
        if err >= best_err:
            break
        best_err, best = err, z
        z = F32(sum_z / w.size)
        beta = F32(beta * HQQ_KAPPA)
    return np.float16(F32(1) / inv), np.float16(best)


def hqq_params(g: np.ndarray, bits: int, sym: bool, imp: Optional[np.ndarray] = None):
    out = [_hqq_one(row, bits, sym) for row in g]
    return np.array([o[0] for o in out], np.float16), np.array([o[1] for o in out], np.float16)


METHODS = {"rtn": rtn_params, "mse": mse_params, "hqq": hqq_params}


def quantize(w: np.ndarray, bits: int, group_size: Optional[int], method: str, sym: bool, imp: Optional[np.ndarray] = None):
    """Reference (codes [out, in], scales, zeros) for a float32 weight."""
    rows, cols = w.shape
    gs = cols if group_size is None else min(group_size, cols)
    ng = -(-cols // gs)
    q = np.zeros((rows, cols), np.uint8)
    scales, zeros = np.zeros((rows, ng), np.float16), np.zeros((rows, ng), np.float16)
    for k in range(ng):
        sl = slice(k * gs, min((k + 1) * gs, cols))
        g = np.ascontiguousarray(w[:, sl], dtype=F32)
        s, z = METHODS[method](g, bits, sym, None if imp is None else imp[sl])
        scales[:, k], zeros[:, k] = s, z
        q[:, sl] = codes(g, s[:, None], z[:, None], grid(bits)[0])
    return q, scales, zeros


def unpack(packed: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """Codes from the packed layout documented in quant/formats (independent of Rust)."""
    rows = packed.shape[0]
    blocks = packed.reshape(rows, -1, BLOCK * bits // 8)
    if bits == 8:
        q = blocks
    elif bits == 4:
        q = np.stack([blocks & 0xF, blocks >> 4], axis=-1)
    elif bits == 2:
        q = np.stack([(blocks >> (2 * k)) & 3 for k in range(4)], axis=-1)
    else:  # int3: four 3-byte little-endian triples of eight 3-bit values
        t = blocks.reshape(rows, -1, 4, 3).astype(np.uint32)
        u = t[..., 0] | t[..., 1] << 8 | t[..., 2] << 16
        q = ((u[..., None] >> (3 * np.arange(8, dtype=np.uint32))) & 7).astype(np.uint8)
    return q.reshape(rows, -1)[:, :cols].astype(np.uint8)


def dequantize(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, group_size: int) -> np.ndarray:
    cols = q.shape[1]
    s = np.repeat(scales, group_size, axis=1)[:, :cols]
    z = np.repeat(zeros, group_size, axis=1)[:, :cols]
    return deq(q, s, z)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bits, round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, dtype=F32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(F32)
