"""GGUF export against llama.cpp's own tools (issue 7), side by side on the same model
and the same 2 cores:

* speed and peak memory: ``hanpack.gguf.convert_checkpoint`` (safetensors → Q4_K_M, in
  one step) against ``llama_model_quantize`` (llama-cpp-python's binding of
  llama-quantize, nthread=2) from the F32 GGUF of the same weights (llama.cpp's own
  convert step, which would come first, is not counted for it). Each run is a fresh
  process; rounds alternate the two and the best of each is kept (this VM's speed
  swings 30–50% between runs);
* equality: the tensors of both files, byte for byte;
* perplexity in llama.cpp of hanpack's file and of llama.cpp's file, for Q4_0, Q4_K_M and
  Q3_K_M, on text the model knows (TinyStories for stories260k, English wiki for
  SmolLM2).

    python benches/bench_gguf.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quant_quality import smollm2_dir  # noqa: E402
from benchlib import CORPUS, SHARED, machine_basics  # noqa: E402

_HANPACK = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
import hanpack.gguf as hg
t = time.perf_counter()
hg.convert_checkpoint(sys.argv[1], sys.argv[2], file_type=sys.argv[3], progress=False)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
_LLAMA = """
import ctypes, resource, sys, time
import llama_cpp
import hanpack.gguf.mixture as m
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = m.FILE_TYPES[sys.argv[3]][0]
p.nthread = 2
t = time.perf_counter()
assert llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)) == 0
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(script: str, *args: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True).stdout
    seconds, rss_kb = out.split()[-2:]
    return float(seconds), float(rss_kb) / 1024


def identical(a: Path, b: Path) -> tuple[int, int]:
    import hanpack.gguf as hg

    x, y = hg.GGUFFile(a), hg.GGUFFile(b)
    same = sum(n in x.tensors and x.tensors[n].qtype == t.qtype and np.array_equal(x.raw(n), y.raw(n)) for n, t in y.tensors.items())
    return same, len(y.tensors)


def perplexity(path: Path, text: str, n_ctx: int, max_tokens: int) -> float:
    import llama_cpp

    # The extra (AMX, repacked) weight buffers off: llama.cpp 0.3.36's AMX matmul
    # segfaults on small models on AMX CPUs (tests/llamacpp_reference.py: load_llama).
    defaults = llama_cpp.llama.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama.llama_cpp.llama_model_default_params = without_extra_buffers
    try:
        lm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False)
    finally:
        llama_cpp.llama.llama_cpp.llama_model_default_params = defaults
    try:
        toks = lm.tokenize(text.encode("utf-8"), add_bos=False)[:max_tokens]
        nll, n = 0.0, 0
        bos = lm.token_bos()
        for start in range(0, len(toks) - 1, n_ctx - 1):
            chunk = [bos] + toks[start:start + n_ctx - 1]
            lm.reset()
            lm.eval(chunk)
            logits = np.array(lm.scores[: len(chunk)], dtype=np.float64)
            logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
            # Score every token after the first of the chunk (the BOS only conditions).
            tgt = np.array(chunk[2:])
            nll -= logp[np.arange(1, len(chunk) - 1), tgt].sum()
            n += len(tgt)
        return float(np.exp(nll / n))
    finally:
        lm.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    models = {"stories260k": (SHARED / "models" / "stories260k", (SHARED / "models" / "stories260k" / "eval_tinystories_val.txt").read_text(encoding="utf-8"), 256)}
    smol = smollm2_dir()
    if smol is not None:
        models["SmolLM2-135M"] = (smol, (CORPUS / "en_wiki_llamafactory-wiki-demo.txt").read_text(encoding="utf-8")[:60000], 512)
    print(json.dumps(machine_basics()))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, (src, text, n_ctx) in models.items():
            f32 = t / f"{name}-F32.gguf"
            subprocess.run([sys.executable, "-c", _HANPACK, str(src), str(f32), "F32"], check=True, capture_output=True)
            r: dict = {"speed": {}, "ppl": {}}
            hp, lc = [], []
            for _ in range(args.rounds):
                for p in t.glob("*-Q4_K_M-*.gguf"):
                    p.unlink()
                hp.append(run(_HANPACK, str(src), str(t / f"{name}-Q4_K_M-hanpack.gguf"), "Q4_K_M"))
                lc.append(run(_LLAMA, str(f32), str(t / f"{name}-Q4_K_M-llama.gguf"), "Q4_K_M"))
            same = identical(t / f"{name}-Q4_K_M-hanpack.gguf", t / f"{name}-Q4_K_M-llama.gguf")
            h, l_ = min(hp), min(lc)
            r["speed"] = {"hanpack_s": h[0], "llamacpp_s": l_[0], "ratio": l_[0] / h[0], "hanpack_peak_mb": max(x[1] for x in hp),
                          "llamacpp_peak_mb": max(x[1] for x in lc), "hanpack_all_s": [x[0] for x in hp], "llamacpp_all_s": [x[0] for x in lc],
                          "identical_tensors": same}
            print(f"\n{name} Q4_K_M: hanpack {h[0]:.3f} s (safetensors → GGUF), llama.cpp {l_[0]:.3f} s (F32 GGUF → GGUF), "
                  f"hanpack {l_[0] / h[0]:.2f}x faster; peak RSS hanpack {r['speed']['hanpack_peak_mb']:.0f} MB, "
                  f"llama.cpp {r['speed']['llamacpp_peak_mb']:.0f} MB; identical tensors {same[0]}/{same[1]}", flush=True)
            print(f"  all rounds: hanpack {[round(x[0], 3) for x in hp]}, llama.cpp {[round(x[0], 3) for x in lc]}")
            for ft in ("Q4_0", "Q4_K_M", "Q3_K_M"):
                ours, ref = t / f"{name}-{ft}-ours.gguf", t / f"{name}-{ft}-ref.gguf"
                subprocess.run([sys.executable, "-c", _HANPACK, str(src), str(ours), ft], check=True, capture_output=True)
                subprocess.run([sys.executable, "-c", _LLAMA, str(f32), str(ref), ft], check=True, capture_output=True)
                a, b = perplexity(ours, text, n_ctx, 8192), perplexity(ref, text, n_ctx, 8192)
                base = perplexity(f32, text, n_ctx, 8192)
                same = identical(ours, ref)
                r["ppl"][ft] = {"hanpack": a, "llamacpp": b, "f32": base, "rel_diff": a / b - 1, "identical_tensors": same}
                print(f"  {ft}: ppl hanpack {a:.4f}, llama.cpp {b:.4f} ({(a / b - 1) * 100:+.3f}%), F32 {base:.4f}; identical tensors {same[0]}/{same[1]}", flush=True)
            results[name] = r
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}, indent=1))


if __name__ == "__main__":
    main()
