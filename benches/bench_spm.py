"""Side-by-side SentencePiece benchmark: sentencepiece, transformers and hanpack in one
process, on the same input, with correctness checked in the same run.

    python benches/bench_spm.py                 # Chinese-LLaMA on the Chinese corpora
    python benches/bench_spm.py --all-models    # also LLaMA and the Unigram chinese_sp
    python benches/bench_spm.py --memory        # resident memory of loaded tokenizers

Throughput is UTF-8 input bytes per second, best of --repeat runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
TOKENIZERS = SHARED / "data" / "tokenizers"
CORPUS = SHARED / "data" / "corpus"
DEFAULT_MODEL = TOKENIZERS / "chinese-llama-alpaca" / "chinese_llama_tokenizer.derived.model"
EXTRA_MODELS = [TOKENIZERS / "llama" / "tokenizer.model", TOKENIZERS / "chinese-llama-alpaca" / "chinese_sp.model"]


def read_texts(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if path.suffix == ".jsonl":
            obj = json.loads(line)
            out.extend(v for v in obj.values() if isinstance(v, str))
        else:
            out.append(line)
    return out


def load_lines(prefixes: tuple[str, ...], max_mb: float) -> list[str]:
    lines: list[str] = []
    budget = int(max_mb * 1e6)
    files = sorted(p for p in CORPUS.iterdir() if p.name.startswith(prefixes) and p.suffix in (".txt", ".jsonl"))
    per_file = budget // max(len(files), 1)
    for f in files:
        used = 0
        for t in read_texts(f):
            if not t:
                continue
            lines.append(t)
            used += len(t.encode("utf-8"))
            if used >= per_file:
                break
    return lines


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import sentencepiece
    import transformers

    import hanpack

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, sentencepiece {sentencepiece.__version__}, "
        f"transformers {transformers.__version__}, numpy {numpy.__version__}, hanpack {hanpack.__version__}"
    )


def hf_tokenizer(model: Path):
    """transformers' LlamaTokenizer for a local .model (v5 converts it to HF tokenizers)."""
    from transformers import LlamaTokenizer

    folder = Path(tempfile.mkdtemp(prefix="hanpack-bench-"))
    shutil.copy(model, folder / "tokenizer.model")
    return LlamaTokenizer.from_pretrained(str(folder))


def bench_model(model: Path, lines: list[str], repeat: int, with_hf: bool) -> dict:
    import sentencepiece as spm

    import hanpack

    nbytes = sum(len(t.encode("utf-8")) for t in lines)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tok = hanpack.Tokenizer.from_file(model)
    res: dict = {"model": str(model.relative_to(TOKENIZERS)), "lines": len(lines), "mb": nbytes / 1e6}
    mbps = lambda fn: nbytes / best_time(fn, repeat) / 1e6  # noqa: E731

    ref = sp.encode(lines)
    res["hanpack_mismatches"] = sum(a != b for a, b in zip(ref, tok.encode_batch(lines)))
    res["decode_mismatches"] = sum(sp.decode(r) != d for r, d in zip(ref, tok.decode_batch(ref)))

    enc = {
        "sentencepiece encode (loop, 1 thread)": mbps(lambda: [sp.encode(t) for t in lines]),
        "sentencepiece encode(list), num_threads=1": mbps(lambda: sp.encode(lines, num_threads=1)),
        "sentencepiece encode(list), its default threads": mbps(lambda: sp.encode(lines)),
        "hanpack encode (loop, 1 thread)": mbps(lambda: [tok.encode(t) for t in lines]),
        "hanpack encode_batch, num_threads=1": mbps(lambda: tok.encode_batch(lines, num_threads=1)),
        "hanpack encode_batch_numpy, num_threads=1": mbps(lambda: tok.encode_batch_numpy(lines, num_threads=1)),
        "hanpack encode_batch, all cores": mbps(lambda: tok.encode_batch(lines)),
        "hanpack encode_batch_numpy, all cores": mbps(lambda: tok.encode_batch_numpy(lines)),
    }
    if with_hf:
        hf = hf_tokenizer(model)
        hf_ids = [hf(t, add_special_tokens=False)["input_ids"] for t in lines]
        res["transformers_mismatches"] = sum(a != b for a, b in zip(ref, hf_ids))
        enc["transformers LlamaTokenizer (loop, 1 thread)"] = mbps(lambda: [hf(t, add_special_tokens=False)["input_ids"] for t in lines])
        enc["transformers LlamaTokenizer (batch call)"] = mbps(lambda: hf(lines, add_special_tokens=False)["input_ids"])
    res["encode_MBps"] = enc
    res["decode_MBps"] = {
        "sentencepiece decode (loop)": mbps(lambda: [sp.decode(r) for r in ref]),
        "sentencepiece decode(list), its default threads": mbps(lambda: sp.decode(ref)),
        "hanpack decode (loop)": mbps(lambda: [tok.decode(r) for r in ref]),
        "hanpack decode_batch, num_threads=1": mbps(lambda: tok.decode_batch(ref, num_threads=1)),
        "hanpack decode_batch, all cores": mbps(lambda: tok.decode_batch(ref)),
    }
    return res


def pathological(model: Path, lines: list[str], repeat: int) -> dict:
    """Time per byte of 1 MB pathological inputs relative to ordinary Chinese text."""
    import sentencepiece as spm

    import hanpack

    tok = hanpack.Tokenizer.from_file(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    nbytes = sum(len(t.encode("utf-8")) for t in lines)
    base = best_time(lambda: tok.encode_batch_numpy(lines, num_threads=1), repeat) / nbytes
    sp_base = best_time(lambda: [sp.encode(t) for t in lines], 1) / nbytes
    nospace = "".join("".join(lines).split())
    cut = nospace.encode("utf-8")[:1_000_000].decode("utf-8", "ignore")
    cases = {"1 MB of 'a'": "a" * 1_000_000, "1 MB of '中'": "中" * 333_334, "1 MB of Chinese, no spaces": cut}
    out = {}
    for name, text in cases.items():
        n = len(text.encode("utf-8"))
        ours = best_time(lambda: tok.encode(text), repeat) / n
        theirs = best_time(lambda: sp.encode(text), 1) / n
        out[name] = {"hanpack_vs_ordinary": ours / base, "sentencepiece_vs_its_ordinary": theirs / sp_base,
                     "hanpack_ns_per_byte": ours * 1e9, "sentencepiece_ns_per_byte": theirs * 1e9}
    return out


def memory_report() -> list[dict]:
    code = (
        "import gc,sys\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1])*4096\n"
        "import sentencepiece, hanpack\n"
        "gc.collect(); r0=rss()\n"
        "if sys.argv[2]=='hanpack': t=hanpack.Tokenizer.from_file(sys.argv[1])\n"
        "else: t=sentencepiece.SentencePieceProcessor(model_file=sys.argv[1])\n"
        "gc.collect(); print(rss()-r0)\n"
    )
    rows = []
    for model in sorted(p for p in TOKENIZERS.rglob("*.model") if p.parent.name != "llama3"):
        size = model.stat().st_size
        row = {"model": str(model.relative_to(TOKENIZERS)), "file_bytes": size}
        for lib in ("hanpack", "sentencepiece"):
            out = subprocess.run([sys.executable, "-c", code, str(model), lib], capture_output=True, text=True, check=True)
            row[f"{lib}_rss_ratio"] = int(out.stdout.split()[-1]) / size
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--all-models", action="store_true")
    ap.add_argument("--max-mb", type=float, default=8.0, help="MB of Chinese text (split across the corpus files)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not CORPUS.exists():
        print(f"shared corpora not found: {CORPUS}", file=sys.stderr)
        return 2

    print(f"command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    print(f"machine: {machine()}\n")
    results: dict = {"machine": machine(), "runs": []}
    zh = load_lines(("zh-hans_", "zh-hant_"), args.max_mb)
    en = load_lines(("en_",), args.max_mb / 4)
    models = [args.model] + (EXTRA_MODELS if args.all_models else [])
    for model in models:
        for label, lines in (("Chinese", zh), ("English", en)):
            r = bench_model(model, lines, args.repeat, with_hf=not args.no_transformers)
            r["text"] = label
            results["runs"].append(r)
            print(f"== {r['model']} on {label} corpora: {r['lines']} lines, {r['mb']:.1f} MB; "
                  f"mismatches vs sentencepiece: hanpack encode {r['hanpack_mismatches']}, decode {r['decode_mismatches']}"
                  + (f", transformers {r['transformers_mismatches']} lines" if "transformers_mismatches" in r else ""))
            for section in ("encode_MBps", "decode_MBps"):
                for name, v in r[section].items():
                    print(f"   {name:52s} {v:8.1f} MB/s")
            e, d = r["encode_MBps"], r["decode_MBps"]
            sp1 = e["sentencepiece encode (loop, 1 thread)"]
            print("   ratios:")
            print(f"     single-thread encode, numpy / sentencepiece loop : {e['hanpack encode_batch_numpy, num_threads=1'] / sp1:5.2f}x  (target >= 5)")
            print(f"     single-thread encode, lists / sentencepiece loop : {e['hanpack encode_batch, num_threads=1'] / sp1:5.2f}x")
            if "transformers LlamaTokenizer (loop, 1 thread)" in e:
                hf1 = e["transformers LlamaTokenizer (loop, 1 thread)"]
                print(f"     single-thread encode, numpy / transformers loop  : {e['hanpack encode_batch_numpy, num_threads=1'] / hf1:5.2f}x  (target >= 10)")
                print(f"     single-thread encode, lists / transformers loop  : {e['hanpack encode_batch, num_threads=1'] / hf1:5.2f}x")
            print(f"     encode_batch all cores / one thread (lists)      : {e['hanpack encode_batch, all cores'] / e['hanpack encode_batch, num_threads=1']:5.2f}x  (target >= 1.8)")
            print(f"     encode_batch all cores / one thread (numpy)      : {e['hanpack encode_batch_numpy, all cores'] / e['hanpack encode_batch_numpy, num_threads=1']:5.2f}x")
            print(f"     decode_batch 1 thread / sentencepiece loop       : {d['hanpack decode_batch, num_threads=1'] / d['sentencepiece decode (loop)']:5.2f}x  (target >= 5)")
            print(f"     decode_batch all cores / sentencepiece batch     : {d['hanpack decode_batch, all cores'] / d['sentencepiece decode(list), its default threads']:5.2f}x\n")
        patho = pathological(model, zh, args.repeat)
        results["runs"].append({"model": str(model.relative_to(TOKENIZERS)), "pathological": patho})
        print(f"== no blow-up ({model.relative_to(TOKENIZERS)}): time per byte relative to ordinary Chinese text (target <= 3x)")
        for name, v in patho.items():
            print(f"   {name:28s} hanpack {v['hanpack_vs_ordinary']:6.2f}x ({v['hanpack_ns_per_byte']:6.1f} ns/B)   "
                  f"sentencepiece {v['sentencepiece_vs_its_ordinary']:6.2f}x ({v['sentencepiece_ns_per_byte']:6.1f} ns/B)")
        print()
    if args.memory:
        rows = memory_report()
        results["memory"] = rows
        print("== resident memory growth after loading, / file size (target <= 3x)")
        for row in rows:
            print(f"   {row['model']:60s} {row['file_bytes']:>9d} B   hanpack {row['hanpack_rss_ratio']:5.2f}x   sentencepiece {row['sentencepiece_rss_ratio']:5.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
