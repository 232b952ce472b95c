#!/usr/bin/env python3
"""Side-by-side SentencePiece benchmark: sentencepiece, transformers and hanpack in one
process, on the same input, with hanpack's ids checked against sentencepiece's in the
same run.

    python benches/bench_spm.py                  # Chinese-LLaMA, Chinese + English corpora
    python benches/bench_spm.py --all-models     # also LLaMA (../shared/.../llama/tokenizer.model)
    python benches/bench_spm.py --memory         # RSS growth / file size of every shared .model
    python benches/bench_spm.py --json out.json  # also dump every figure as JSON

Throughput is MB/s = UTF-8 bytes of *input text* per second (for decode too: the bytes of
the text the ids came from), best of --repeat (3) timed runs after one warm-up run, each
timed with time.perf_counter (freeing the result is not timed); a measurement whose run is
shorter than --min-time / 3 gets more runs (up to 30) so its runs total --min-time (1 s).
Before each measurement the script waits (up to --wait-idle s) for other processes to
leave the CPU idle; it records the CPU other processes used while measuring (/proc/stat
minus its own CPU time), measures again (up to --retries times) when that exceeds 0.2
cores, keeps the least disturbed attempt and prints the figure in an "others" column.

Competitors, all built from the same .model file:
  * sentencepiece 0.2.x  SentencePieceProcessor(model_file=...): .encode(line) per line,
    and its batch API .encode(list) with num_threads=1 and with its default
    num_threads=-1 (= all hardware threads).
  * transformers 5.x  LlamaTokenizer (v5: the `tokenizers`-backed class; LlamaTokenizerFast
    is the same class) made by LlamaTokenizer.from_pretrained(<temp folder holding only
    tokenizer.model>), which converts the .model offline with transformers' SentencePiece
    converter. Called as tok(line)["input_ids"] per line and tok(lines)["input_ids"].
    Its ids are compared with sentencepiece's and mismatching lines counted.
  * transformers 5.x  SentencePieceBackend(vocab_file=..., legacy=True): the v5 "slow",
    sentencepiece-backed tokenizer class (Python wrapper around sentencepiece).
  * hanpack  Tokenizer.from_file: encode per line, encode_batch / encode_batch_numpy with
    num_threads=1 and with all cores; decode per line, decode_batch.

The "no blow-up" section times hanpack's encode of one long string (1 MB of 'a', of '中',
and of Chinese corpus text with all whitespace removed) and reports its time per byte
relative to ordinary Chinese text encoded line by line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import (
    CORPUS, TOKENIZERS, Timer, compare, cut_utf8, extension_mtime, flat_to_lists, git_state,
    grow_and_time, hanpack_info, import_hanpack, load_corpus, machine_basics, make_hf_fast, utf8_len,
    wait_idle, with_env,
)
from benchlib import passes as _passes

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # transformers must never reach the network here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DEFAULT_MODEL = TOKENIZERS / "chinese-llama-alpaca" / "chinese_llama_tokenizer.derived.model"
LLAMA_MODEL = TOKENIZERS / "llama" / "tokenizer.model"

TARGETS = {  # the project's targets: (comparison, threshold)
    "encode_1t_vs_sp": (">=", 5.0),
    "encode_vs_hf": (">=", 10.0),
    "batch_scaling": (">=", 1.8),
    "decode_vs_sp": (">=", 5.0),
    "patho": ("<=", 3.0),
    "memory": ("<=", 3.0),
}


def passes(kind: str, value: float) -> str:
    return _passes(TARGETS, kind, value)


def machine_info(hanpack) -> dict:
    import numpy
    import sentencepiece

    info = machine_basics()
    info.update({"sentencepiece": sentencepiece.__version__, "numpy": numpy.__version__})
    info.update(hanpack_info(hanpack))
    info.update({"repo_git": git_state(), "loadavg_at_start": os.getloadavg()})
    try:
        import transformers

        info["transformers"] = transformers.__version__
        import tokenizers

        info["tokenizers"] = tokenizers.__version__
    except ImportError:
        info["transformers"] = "not installed"
    return info


# --------------------------------------------------------------------------- transformers


def make_hf_slow(model: Path):
    """transformers' sentencepiece-backed tokenizer class (v5 SentencePieceBackend)."""
    from transformers import SentencePieceBackend

    return SentencePieceBackend(vocab_file=str(model), legacy=True)


# --------------------------------------------------------------------------- throughput


def bench_corpus(hanpack, model: Path, label: str, lines: list[str], args) -> dict:
    import sentencepiece as spm

    timer = Timer(args.repeat, args.wait_idle, args.min_time, args.retries)
    nbytes = sum(utf8_len(t) for t in lines)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    tok = hanpack.Tokenizer.from_file(model)
    nproc = len(os.sched_getaffinity(0))

    ref = [sp.encode(t) for t in lines]  # the reference: sentencepiece, one line at a time
    ref_text = [sp.decode(r) for r in ref]

    res: dict = {"model": str(model.relative_to(TOKENIZERS)), "text": label, "lines": len(lines), "bytes": nbytes,
                 "tokens": sum(len(r) for r in ref), "encode": {}, "decode": {}, "checks": {}}
    # rows: (key, label, timed function, conversion of its result to comparable ids)
    ident = lambda r: r  # noqa: E731
    enc = [
        ("sp_loop", "sentencepiece  sp.encode(line), per line", lambda: [sp.encode(t) for t in lines], ident),
        ("sp_list_1t", "sentencepiece  sp.encode(lines, num_threads=1)", lambda: sp.encode(lines, num_threads=1), ident),
        ("sp_list_all", f"sentencepiece  sp.encode(lines), default num_threads=-1 ({nproc} threads)", lambda: sp.encode(lines), ident),
    ]
    hf_fast = hf_slow = None
    if not args.no_transformers:
        hf_fast = make_hf_fast(model)
        hf_slow = None if args.no_hf_slow else make_hf_slow(model)
        enc += [
            ("hf_fast_loop", "transformers   LlamaTokenizer tok(line), per line",
             lambda: [hf_fast(t, add_special_tokens=False)["input_ids"] for t in lines], ident),
            ("hf_fast_batch_1t", "transformers   LlamaTokenizer tok(lines), TOKENIZERS_PARALLELISM=false",
             with_env("TOKENIZERS_PARALLELISM", "false", lambda: hf_fast(lines, add_special_tokens=False)["input_ids"]), ident),
            ("hf_fast_batch_all", f"transformers   LlamaTokenizer tok(lines), parallel ({nproc} threads)",
             with_env("TOKENIZERS_PARALLELISM", "true", lambda: hf_fast(lines, add_special_tokens=False)["input_ids"]), ident),
        ]
        if hf_slow is not None:
            enc.append(("hf_slow_loop", "transformers   SentencePieceBackend tok(line), per line",
                        lambda: [hf_slow(t, add_special_tokens=False)["input_ids"] for t in lines], ident))
    enc += [
        ("hp_loop", "hanpack        tok.encode(line), per line", lambda: [tok.encode(t) for t in lines], ident),
        ("hp_batch_1t", "hanpack        encode_batch(lines, num_threads=1)", lambda: tok.encode_batch(lines, num_threads=1), ident),
        ("hp_numpy_1t", "hanpack        encode_batch_numpy(lines, num_threads=1)", lambda: tok.encode_batch_numpy(lines, num_threads=1), flat_to_lists),
        ("hp_batch_all", f"hanpack        encode_batch(lines), all cores ({nproc})", lambda: tok.encode_batch(lines), ident),
        ("hp_numpy_all", f"hanpack        encode_batch_numpy(lines), all cores ({nproc})", lambda: tok.encode_batch_numpy(lines), flat_to_lists),
    ]
    dec = [
        ("sp_loop", "sentencepiece  sp.decode(ids), per line", lambda: [sp.decode(r) for r in ref], ident),
        ("sp_list_1t", "sentencepiece  sp.decode(list_of_ids, num_threads=1)", lambda: sp.decode(ref, num_threads=1), ident),
        ("sp_list_all", f"sentencepiece  sp.decode(list_of_ids), default num_threads=-1 ({nproc} threads)", lambda: sp.decode(ref), ident),
        ("hp_loop", "hanpack        tok.decode(ids), per line", lambda: [tok.decode(r) for r in ref], ident),
        ("hp_batch_1t", "hanpack        decode_batch(list_of_ids, num_threads=1)", lambda: tok.decode_batch(ref, num_threads=1), ident),
        ("hp_batch_all", f"hanpack        decode_batch(list_of_ids), all cores ({nproc})", lambda: tok.decode_batch(ref), ident),
    ]
    for section, table, expected in (("encode", enc, ref), ("decode", dec, ref_text)):
        for key, name, fn, conv in table:
            best, times, result, others, attempts = timer(fn)
            res[section][key] = {"label": name, "seconds": best, "all_seconds": times, "MBps": nbytes / best / 1e6,
                                 "others_cores": others, "attempts": attempts}
            res["checks"][f"{section}:{key}"] = compare(expected, conv(result), lines)
            del result
            print(f"   {name:78s} {nbytes / best / 1e6:8.2f} MB/s  (other processes: {others:.2f} cores; attempts: {attempts})", flush=True)
    return res


def print_run(r: dict) -> None:
    e, d = r["encode"], r["decode"]
    print(f"\n== {r['model']} | {r['text']} corpora: {r['lines']} texts, {r['bytes'] / 1e6:.2f} MB, "
          f"{r['tokens']} tokens ({r['bytes'] / max(r['tokens'], 1):.2f} bytes/token)")
    for section, rows, base_key in (("encode", e, "sp_loop"), ("decode", d, "sp_loop")):
        base = rows[base_key]["MBps"]
        print(f"   {section:78s} {'MB/s':>9s} {'vs sp/line':>11s} {'others':>7s}")
        for v in rows.values():
            print(f"   {v['label']:78s} {v['MBps']:9.2f} {v['MBps'] / base:10.2f}x {v['others_cores']:7.2f}")
    noisy = [v["label"].split("  ")[0] + ": " + v["label"].split("  ", 1)[1].strip() for v in list(e.values()) + list(d.values()) if v["others_cores"] > 0.2]
    print("   others = cores' worth of CPU other processes used while it was measured (0 = quiet machine)"
          + (f"; {len(noisy)} measurement(s) above 0.2: figures disturbed" if noisy else ""))
    print("   correctness (lines differing from sentencepiece's per-line encode/decode):")
    hp = {k: c["mismatching_lines"] for k, c in r["checks"].items() if ":hp_" in k}
    sp_self = {k: c["mismatching_lines"] for k, c in r["checks"].items() if ":sp_" in k}
    hf = {k: c["mismatching_lines"] for k, c in r["checks"].items() if ":hf_" in k}
    print(f"     hanpack  (all encode/decode paths, {len(hp)} checks): {sum(hp.values())} mismatching lines"
          + ("" if not sum(hp.values()) else f"  <-- MUST BE 0: {hp}"))
    print(f"     sentencepiece batch/list APIs vs its per-line API: {sum(sp_self.values())}")
    for k, v in hf.items():
        print(f"     {k:35s} {v} of {r['lines']} lines ({100 * v / max(r['lines'], 1):.1f}%)")
    for k, c in r["checks"].items():
        for ex in c.get("examples", [])[:2]:
            print(f"       e.g. [{k}] {json.dumps(ex, ensure_ascii=False)}")


def key_ratios(r: dict) -> list[tuple[str, float, str | None]]:
    e, d = r["encode"], r["decode"]
    out: list[tuple[str, float, str | None]] = [
        ("encode 1 thread: hanpack encode/line / sentencepiece encode/line", e["hp_loop"]["MBps"] / e["sp_loop"]["MBps"], "encode_1t_vs_sp"),
        ("encode 1 thread: hanpack encode_batch(nt=1) / sentencepiece encode/line", e["hp_batch_1t"]["MBps"] / e["sp_loop"]["MBps"], "encode_1t_vs_sp"),
        ("encode 1 thread: hanpack encode_batch_numpy(nt=1) / sentencepiece encode/line", e["hp_numpy_1t"]["MBps"] / e["sp_loop"]["MBps"], "encode_1t_vs_sp"),
        ("encode 1 thread: hanpack encode_batch(nt=1) / sentencepiece encode(list, nt=1)", e["hp_batch_1t"]["MBps"] / e["sp_list_1t"]["MBps"], "encode_1t_vs_sp"),
    ]
    if "hf_fast_loop" in e:
        out += [
            ("encode 1 thread: hanpack encode/line / transformers LlamaTokenizer per line", e["hp_loop"]["MBps"] / e["hf_fast_loop"]["MBps"], "encode_vs_hf"),
            ("encode 1 thread: hanpack encode_batch(nt=1) / transformers tok(lines) PARALLELISM=false", e["hp_batch_1t"]["MBps"] / e["hf_fast_batch_1t"]["MBps"], "encode_vs_hf"),
            ("encode all cores: hanpack encode_batch / transformers tok(lines) parallel", e["hp_batch_all"]["MBps"] / e["hf_fast_batch_all"]["MBps"], "encode_vs_hf"),
        ]
    if "hf_slow_loop" in e:
        out.append(("encode 1 thread: hanpack encode/line / transformers SentencePieceBackend per line", e["hp_loop"]["MBps"] / e["hf_slow_loop"]["MBps"], "encode_vs_hf"))
    out += [
        ("encode_batch all cores / encode_batch num_threads=1 (lists)", e["hp_batch_all"]["MBps"] / e["hp_batch_1t"]["MBps"], "batch_scaling"),
        ("encode_batch_numpy all cores / num_threads=1", e["hp_numpy_all"]["MBps"] / e["hp_numpy_1t"]["MBps"], "batch_scaling"),
        ("(context) hanpack encode_batch all cores / sentencepiece encode(list) all cores", e["hp_batch_all"]["MBps"] / e["sp_list_all"]["MBps"], None),
        ("decode 1 thread: hanpack decode/line / sentencepiece decode/line", d["hp_loop"]["MBps"] / d["sp_loop"]["MBps"], "decode_vs_sp"),
        ("decode 1 thread: hanpack decode_batch(nt=1) / sentencepiece decode/line", d["hp_batch_1t"]["MBps"] / d["sp_loop"]["MBps"], "decode_vs_sp"),
        ("decode 1 thread: hanpack decode_batch(nt=1) / sentencepiece decode(list, nt=1)", d["hp_batch_1t"]["MBps"] / d["sp_list_1t"]["MBps"], "decode_vs_sp"),
        ("(context) decode_batch all cores / decode_batch num_threads=1", d["hp_batch_all"]["MBps"] / d["hp_batch_1t"]["MBps"], None),
    ]
    return out


# --------------------------------------------------------------------------- pathological


def bench_pathological(hanpack, model: Path, zh_lines: list[str], zh_run: dict, args) -> dict:
    import sentencepiece as spm

    tok = hanpack.Tokenizer.from_file(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    size = int(args.patho_mb * 1e6)
    nospace = "".join("".join(zh_lines).split())
    while utf8_len(nospace) < size:
        nospace += nospace
    mb = f"{args.patho_mb:g} MB"
    cases = {
        f"'a' x {mb}": "a" * size,
        f"'中' x {mb}": "中" * (size // 3 + (size % 3 > 0)),
        f"{mb} Chinese, whitespace removed, 1 line": cut_utf8(nospace, size),
    }
    nb = zh_run["bytes"]
    base = {
        "hp_loop_ns_per_byte": zh_run["encode"]["hp_loop"]["seconds"] / nb * 1e9,
        "hp_batch_1t_ns_per_byte": zh_run["encode"]["hp_batch_1t"]["seconds"] / nb * 1e9,
        "sp_loop_ns_per_byte": zh_run["encode"]["sp_loop"]["seconds"] / nb * 1e9,
    }
    fractions = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    out: dict = {"model": str(model.relative_to(TOKENIZERS)), "baseline": base, "cases": {}}
    for name, text in cases.items():
        if args.wait_idle > 0:
            wait_idle(args.wait_idle)
        tok.encode(cut_utf8(text, 4096))  # warm-up
        hp = grow_and_time(tok.encode, text, fractions, args.patho_budget, args.repeat)
        sp.encode(cut_utf8(text, 4096))
        spr = grow_and_time(sp.encode, text, fractions, args.patho_budget, args.repeat)
        check_text = cut_utf8(text, min(hp["bytes"], spr["bytes"]))
        same = tok.encode(check_text) == sp.encode(check_text)
        curve = hp["curve"]
        growth = curve[-1]["seconds"] / curve[-2]["seconds"] if len(curve) > 1 else float("nan")
        out["cases"][name] = {
            "hanpack": hp, "sentencepiece": spr, "ids_equal": same, "checked_bytes": utf8_len(check_text),
            "hanpack_vs_ordinary_per_line": hp["ns_per_byte"] / base["hp_loop_ns_per_byte"],
            "hanpack_vs_ordinary_batch_1t": hp["ns_per_byte"] / base["hp_batch_1t_ns_per_byte"],
            "sentencepiece_vs_its_ordinary_per_line": spr["ns_per_byte"] / base["sp_loop_ns_per_byte"],
            "hanpack_vs_sentencepiece_speed": spr["ns_per_byte"] / hp["ns_per_byte"],
            "hanpack_time_growth_last_doubling": growth,
        }
        print(f"   {name}: hanpack {hp['ns_per_byte']:.1f} ns/B, sentencepiece {spr['ns_per_byte']:.1f} ns/B"
              f"{' (capped at %d B)' % spr['bytes'] if spr['capped'] else ''}, ids equal: {same}", flush=True)
    return out


def print_patho(p: dict) -> None:
    b = p["baseline"]
    print(f"\n== no blow-up | {p['model']}: one long string per encode call, time per byte vs ordinary Chinese text")
    print(f"   ordinary Chinese text (corpus, per-line tok.encode): hanpack {b['hp_loop_ns_per_byte']:.2f} ns/B "
          f"(encode_batch nt=1: {b['hp_batch_1t_ns_per_byte']:.2f} ns/B); sentencepiece per-line {b['sp_loop_ns_per_byte']:.2f} ns/B")
    print(f"   {'input':38s} {'size':>9s} {'hanpack':>10s} {'vs ord.':>8s} {'vs ord.':>8s} {'x2 size':>8s}  {'sentencepiece':>13s} {'vs ord.':>8s} {'hp/sp':>7s}  ids==")
    print(f"   {'':38s} {'':>9s} {'ns/B':>10s} {'(/line)':>8s} {'(batch)':>8s} {'->time':>8s}  {'ns/B':>13s} {'(/line)':>8s} {'speed':>7s}")
    for name, c in p["cases"].items():
        hp, spr = c["hanpack"], c["sentencepiece"]
        spsize = f"{spr['ns_per_byte']:13.1f}" + ("*" if spr["capped"] else " ")
        print(f"   {name:38s} {hp['bytes']:9d} {hp['ns_per_byte']:10.2f} {c['hanpack_vs_ordinary_per_line']:7.2f}x {c['hanpack_vs_ordinary_batch_1t']:7.2f}x "
              f"{c['hanpack_time_growth_last_doubling']:7.2f}x {spsize}{c['sentencepiece_vs_its_ordinary_per_line']:7.2f}x {c['hanpack_vs_sentencepiece_speed']:6.2f}x  {c['ids_equal']}")
        if hp["capped"]:
            print(f"     ! hanpack stopped at {hp['bytes']} B: the next size was predicted to exceed --patho-budget")
        if spr["capped"]:
            print(f"     * sentencepiece capped at {spr['bytes']} B (next size predicted to exceed --patho-budget {spr['seconds']:.1f}s)")
    print("   'x2 size -> time': hanpack's time ratio for the last doubling of the input (2.0 = linear).")


# --------------------------------------------------------------------------- memory

MEM_CODE = r"""
import gc, json, os, sys
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    # Anonymous resident memory (resident minus file-backed shared pages): what a loaded
    # tokenizer holds. File-backed pages are the libraries' own code and read-only data,
    # paged in on first use (~620 KB for hanpack's first load, measured with RssFile) and
    # shared between processes.
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * page
def rss_total():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
import ctypes, numpy, sentencepiece, hanpack, hanpack._core   # both libraries imported before the baseline
try:
    _trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _trim = lambda _pad: 0
def settle():  # collect garbage and give free heap pages back, so RSS counts live memory
    gc.collect()
    if trim:
        _trim(0)
lib, path, sample, trim = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
with open(sample, encoding="utf-8") as f:
    lines = f.read().split("\n")
settle()
try:  # reset the peak-RSS counter (VmHWM) so that peak = the load's own transient
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
r0, t0, h0 = rss(), rss_total(), hwm()
try:
    if lib == "hanpack":
        t = hanpack.Tokenizer.from_file(path)
    else:
        t = sentencepiece.SentencePieceProcessor(model_file=path)
except Exception as e:
    print(json.dumps({"error": (type(e).__name__ + ": " + str(e))[:160]}))
    sys.exit(0)
settle()
r1, h1 = rss(), hwm()
for line in lines:
    t.encode(line)
settle()
r2 = rss()
# A second copy of the same model, used on the same lines: what one more loaded tokenizer
# costs, without the process-wide one-time costs of the library's first use that the first
# load and encode include (code pages, per-thread buffers, hanpack's cache of id ints).
t2 = hanpack.Tokenizer.from_file(path) if lib == "hanpack" else sentencepiece.SentencePieceProcessor(model_file=path)
for line in lines:
    t2.encode(line)
settle()
r3 = rss()
print(json.dumps({"load": r1 - r0, "peak_during_load": h1 - t0, "after_encode": r2 - r0, "second_load": r3 - r2,
                  "hwm_reset": h0 <= t0 + 65536}))
"""


def memory_report(args) -> list[dict]:
    models = sorted(TOKENIZERS.rglob("*.model"))
    sample_lines, _ = load_corpus(("zh-hans_", "zh-hant_"), 0.5)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(t.replace("\n", " ") for t in sample_lines))
        sample = f.name
    rows = []
    try:
        for model in models:
            size = model.stat().st_size
            row: dict = {"model": str(model.relative_to(TOKENIZERS)), "file_bytes": size}
            for lib in ("hanpack", "sentencepiece"):
                for trim, key in (("1", lib), ("0", lib + "_no_trim")):
                    vals = []
                    for _ in range(args.memory_runs):
                        out = subprocess.run([sys.executable, "-c", MEM_CODE, lib, str(model), sample, trim], capture_output=True, text=True)
                        if out.returncode != 0:
                            vals.append({"error": out.stderr.strip().splitlines()[-1][:160] if out.stderr.strip() else f"exit {out.returncode}"})
                            continue
                        vals.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    ok = [v for v in vals if "error" not in v]
                    if not ok:
                        row[key] = vals[0]
                        continue
                    med = lambda k: sorted(v[k] for v in ok)[len(ok) // 2]  # noqa: E731
                    row[key] = {k: med(k) for k in ("load", "peak_during_load", "after_encode", "second_load")}
                    row[key]["second_ratio"] = row[key]["second_load"] / size
                    row[key]["hwm_reset"] = all(v.get("hwm_reset") for v in ok)
                    row[key]["ratio"] = row[key]["load"] / size
                    row[key]["after_encode_ratio"] = row[key]["after_encode"] / size
            rows.append(row)
    finally:
        os.unlink(sample)
    return rows


def print_memory(rows: list[dict], runs: int) -> None:
    print(f"\n== memory: resident-set growth from loading each shared .model, in a fresh process "
          f"(/proc/self/statm, median of {runs}), / file size; target <= 3x")
    print(f"   {'':58s} {'':>9s} | {'hanpack':^47s} | {'sentencepiece':^47s}")
    print(f"   {'model':58s} {'file B':>9s} | {'load':>8s} {'ratio':>6s} {'(untrim)':>8s} {'peak':>7s} {'+enc':>7s} {'2nd':>6s}"
          f" | {'load':>8s} {'ratio':>6s} {'(untrim)':>8s} {'peak':>7s} {'+enc':>7s} {'2nd':>6s}")
    kb = lambda b: f"{b / 1024:6.0f}K"  # noqa: E731
    for row in rows:
        cols = []
        for lib in ("hanpack", "sentencepiece"):
            v, u = row[lib], row.get(lib + "_no_trim", {})
            if "error" in v:
                cols.append(f"{'does not load (' + v['error'].split(':')[0] + ')':^47s}")
            else:
                un = f"{u['ratio']:7.2f}x" if "ratio" in u else f"{'-':>8s}"
                cols.append(f"{kb(v['load']):>8s} {v['ratio']:5.2f}x {un} {kb(v['peak_during_load'])} {kb(v['after_encode'])} {v['second_ratio']:5.2f}x")
        print(f"   {row['model']:58s} {row['file_bytes']:9d} | {cols[0]} | {cols[1]}")
    reset = all(r[lib].get("hwm_reset", False) for r in rows for lib in ("hanpack", "sentencepiece") if "error" not in r[lib])
    print("   RSS here = anonymous resident memory (statm resident - shared): the libraries' file-backed code pages are left out;\n"
          "   load = RSS after loading - RSS before, both taken after gc.collect() and malloc_trim(0) (free heap pages"
          " returned, so RSS counts live memory);\n   (untrim) = the same ratio without malloc_trim (the load may reuse free"
          " heap pages already resident, so it reads lower and noisier);\n   peak = VmHWM after loading - total RSS before (file-backed pages included)"
          + (" (VmHWM reset just before loading: the load's own transient peak)" if reset else " (VmHWM not reset: may include import-time peaks)")
          + ";\n   +enc = RSS growth after also encoding 0.5 MB of Chinese line by line (per-thread caches);"
          "\n   2nd = RSS growth from loading the same model once more and encoding the same lines with it, / file size:"
          " the cost of one more\n   loaded and used tokenizer, without the process-wide one-time costs of the library's first use"
          " that 'ratio' and '+enc' include\n   (code pages, per-thread buffers, hanpack's cache of one int object per id value).")
    # The target is for SentencePiece models; a tiktoken rank file named .model (LLaMA-3's)
    # loads in hanpack as byte-level BPE and is reported on its own line.
    spm_rows = [r for r in rows if "error" not in r["sentencepiece"]]
    for r in rows:
        if "error" in r["sentencepiece"] and "ratio" in r["hanpack"]:
            print(f"   (not SentencePiece) {r['model']}: hanpack loads it as byte-level BPE, {r['hanpack']['ratio']:.2f}x its file size")
    rows = spm_rows
    ok = [(r["hanpack"]["ratio"], r["model"]) for r in rows if "ratio" in r["hanpack"]]
    if ok:
        worst = max(ok)
        print(f"   hanpack worst load ratio: {worst[0]:.2f}x ({worst[1]})  {passes('memory', worst[0])}")
        worst2 = max((r["hanpack"]["second_ratio"], r["model"]) for r in rows if "second_ratio" in r["hanpack"])
        print(f"   hanpack worst 2nd-load ratio: {worst2[0]:.2f}x ({worst2[1]})  {passes('memory', worst2[0])}")


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="SentencePiece .model (default: Chinese-LLaMA)")
    ap.add_argument("--all-models", action="store_true", help="also run LLaMA (../shared/data/tokenizers/llama/tokenizer.model)")
    ap.add_argument("--max-mb", type=float, default=8.0, help="cap on MB of Chinese text (also caps English); 0 = all")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is reported)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="when one run is short, time more runs (up to 30) so a measurement's runs total this many seconds")
    ap.add_argument("--no-english", action="store_true")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--no-hf-slow", action="store_true", help="skip transformers' SentencePieceBackend")
    ap.add_argument("--patho-mb", type=float, default=1.0, help="size of each pathological input")
    ap.add_argument("--patho-budget", type=float, default=20.0, help="seconds one pathological encode may take before sizes stop growing")
    ap.add_argument("--no-patho", action="store_true")
    ap.add_argument("--retries", type=int, default=2,
                    help="measure again (up to this many times) when other processes used > 0.2 cores meanwhile; keep the least disturbed")
    ap.add_argument("--wait-idle", type=float, default=30.0,
                    help="before each measurement, wait up to this many seconds for other processes to leave the CPU idle (0 = never wait)")
    ap.add_argument("--memory", action="store_true", help="memory mode: only the RSS report, every shared .model")
    ap.add_argument("--memory-runs", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = ap.parse_args()
    if not CORPUS.exists() or not TOKENIZERS.exists():
        print(f"shared data not found: {CORPUS} / {TOKENIZERS}", file=sys.stderr)
        return 2

    hanpack = import_hanpack()
    info = machine_info(hanpack)
    command = f"cd {shlex.quote(os.getcwd())} && python " + shlex.join(sys.argv)
    info["command"] = command
    print(f"command : {command}")
    print(f"date    : {info['date_utc']}")
    print(f"machine : {info['cpu']}, nproc {info['nproc']} (os.cpu_count {info['os_cpu_count']}), {info['platform']}")
    print(f"versions: Python {info['python']}, sentencepiece {info['sentencepiece']}, transformers {info.get('transformers')}"
          f" (tokenizers {info.get('tokenizers', '-')}), numpy {info['numpy']}, hanpack {info['hanpack']}")
    print(f"hanpack : {info['hanpack_extension']} (built {info['hanpack_extension_mtime']}); repo {info['repo_git']}")
    la = info["loadavg_at_start"]
    print(f"load avg: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}" + ("   ! other processes are using the CPU: figures will be noisy" if la[0] > 0.5 else ""))
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}

    if args.memory:
        rows = memory_report(args)
        print_memory(rows, args.memory_runs)
        results["memory"] = rows
    else:
        zh, zh_files = load_corpus(("zh-hans_", "zh-hant_"), args.max_mb)
        en, en_files = load_corpus(("en_",), args.max_mb)
        results["corpus"] = {"Chinese": zh_files, "English": en_files}
        print(f"corpus  : Chinese {len(zh)} texts, {sum(map(utf8_len, zh)) / 1e6:.2f} MB from {len(zh_files)} files "
              f"(zh-hans_*, zh-hant_*); English {len(en)} texts, {sum(map(utf8_len, en)) / 1e6:.2f} MB from {len(en_files)} files (en_*)")
        models = [args.model] + ([LLAMA_MODEL] if args.all_models and args.model.resolve() != LLAMA_MODEL.resolve() else [])
        results["runs"], results["pathological"] = [], []
        for model in models:
            zh_run: dict | None = None
            for label, lines in (("Chinese", zh), ("English", en)):
                if label == "English" and args.no_english:
                    continue
                print(f"\n-- measuring {model.relative_to(TOKENIZERS)} on {label} ...", flush=True)
                r = bench_corpus(hanpack, model, label, lines, args)
                results["runs"].append(r)
                zh_run = r if label == "Chinese" else zh_run
            if not args.no_patho and zh_run is not None:
                print(f"\n-- measuring pathological inputs with {model.relative_to(TOKENIZERS)} ...", flush=True)
                results["pathological"].append(bench_pathological(hanpack, model, zh, zh_run, args))

        print("\n" + "=" * 120 + "\nRESULTS")
        for r in results["runs"]:
            print_run(r)
        for p in results["pathological"]:
            print_patho(p)

        print("\n" + "=" * 120 + "\nKEY RATIOS (project targets)")
        summary = []
        for r in results["runs"]:
            print(f"\n   {r['model']} | {r['text']}")
            for name, v, kind in key_ratios(r):
                print(f"     {name:88s} {v:7.3f}x   {passes(kind, v) if kind else ''}")
                summary.append({"model": r["model"], "text": r["text"], "ratio": name, "value": v, "target": TARGETS.get(kind) if kind else None})
        for p in results["pathological"]:
            print(f"\n   {p['model']} | no blow-up (hanpack time per byte / per-line ordinary Chinese)")
            for name, c in p["cases"].items():
                v = c["hanpack_vs_ordinary_per_line"]
                print(f"     {name:88s} {v:7.3f}x   {passes('patho', v)}")
                summary.append({"model": p["model"], "text": "pathological", "ratio": name, "value": v, "target": TARGETS["patho"]})
        total_bad = sum(c["mismatching_lines"] for r in results["runs"] for k, c in r["checks"].items() if ":hp_" in k)
        total_bad += sum(not c["ids_equal"] for p in results["pathological"] for c in p["cases"].values())
        print(f"\n   hanpack vs sentencepiece mismatches over every benchmarked line and pathological input: {total_bad}"
              f"  ({'OK' if total_bad == 0 else 'MUST BE 0'})")
        results["key_ratios"] = summary
        results["hanpack_mismatches_total"] = total_bad

    la = os.getloadavg()
    results["machine"]["loadavg_at_end"] = la
    mtime_end = extension_mtime(hanpack)
    if mtime_end != info["hanpack_extension_mtime"]:
        results["machine"]["hanpack_extension_mtime_at_end"] = mtime_end
        print(f"! the hanpack extension was replaced during the run (now {mtime_end}); this process kept the one"
              f" built {info['hanpack_extension_mtime']}" + (", but --memory subprocesses may have loaded either" if args.memory else ""))
    print(f"\nload avg at end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
