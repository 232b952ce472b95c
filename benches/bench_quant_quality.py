"""Perplexity of stories260k quantized with rtn, mse and hqq, next to the original, on
its in-domain TinyStories validation text (PROVENANCE.md's protocol: each story is BOS +
text, up to 512 tokens; 3,211 predicted tokens), plus the per-weight relative error.

    python benches/bench_quant_quality.py [--bits 4 3] [--groups 128 32] [--sym]

For each bits/group: the share of RTN's perplexity gap that each method closes,
``(ppl_rtn - ppl_method) / (ppl_rtn - ppl_original)``. Needs torch and transformers.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import hanpack
from hanpack.evaluate import load_causal_lm, perplexity

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STORIES = SHARED / "models" / "stories260k"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    ap.add_argument("--groups", type=int, nargs="+", default=[128, 32])
    ap.add_argument("--methods", nargs="+", default=["rtn", "mse", "hqq"])
    ap.add_argument("--sym", action="store_true")
    args = ap.parse_args()
    if not STORIES.exists():
        raise SystemExit(f"needs {STORIES}")
    text = (STORIES / "eval_tinystories_val.txt").read_text(encoding="utf-8")
    tok = hanpack.Tokenizer.from_file(STORIES / "tokenizer.model")

    def ppl(model_dir: Path) -> float:
        return perplexity(load_causal_lm(model_dir), text, separator="<|story|>", max_tokens=512, tokenizer=tok).ppl

    base = ppl(STORIES)
    print(f"stories260k original fp32: perplexity {base:.4f}")
    print(f"{'config':<16}" + "".join(f"{m:>22}" for m in args.methods) + "   best closes of RTN's gap")
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            for group in args.groups:
                res = {}
                for m in args.methods:
                    dst = Path(tmp) / f"{m}{bits}g{group}"
                    r = hanpack.quantize_checkpoint(STORIES, dst, bits=bits, group_size=group, method=m, sym=args.sym, progress=False)
                    num = sum(t.relative_error**2 * _size(t) for t in r.quantized)
                    rel = (num / sum(_size(t) for t in r.quantized)) ** 0.5
                    res[m] = (ppl(dst), rel)
                cells = "".join(f"{p:>9.4f} ({(p / base - 1) * 100:+5.1f}%) e{e:.3f}" for p, e in res.values())
                line = f"int{bits}-g{group}{' sym' if args.sym else ''}".ljust(16) + cells
                if "rtn" in res:
                    gap = res["rtn"][0] - base
                    best = min((p, m) for m, (p, _) in res.items() if m != "rtn")
                    line += f"   {best[1]} {(res['rtn'][0] - best[0]) / gap * 100:.1f}%"
                print(line, flush=True)


def _size(t: hanpack.checkpoint.TensorReport) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
