#!/usr/bin/env python3
"""Side-by-side byte-level BPE benchmark: tiktoken, HF tokenizers and hanpack in one
process, on the same input, with every library's ids checked against HF tokenizers' (the
reference) in the same run.

    python benches/bench_bpe.py                      # LLaMA-3 and Qwen2, Chinese + English corpora
    python benches/bench_bpe.py --tokenizer llama3   # one of them
    python benches/bench_bpe.py --json out.json      # also dump every figure as JSON

Throughput is MB/s = UTF-8 bytes of *input text* per second (for decode too: the bytes of
the text the ids came from), timed as in bench_spm.py: best of --repeat (3) timed runs
after one warm-up run (more runs when one is shorter than --min-time / 3), after waiting
(up to --wait-idle s) for other processes to leave the CPU idle; the CPU other processes
used meanwhile is printed in an "others" column and a disturbed measurement is retried.

Tokenizers (../shared/data/tokenizers):
  * LLaMA-3  llama3/tokenizer.derived.json (HF tokenizers, hanpack); for tiktoken, the
    rank file llama3/tokenizer.model with the pattern of the json's Split pre-tokenizer.
  * Qwen2    qwen2/tokenizer.derived.json (HF tokenizers, hanpack); for tiktoken, ranks
    from qwen2/vocab.json (GPT-2's byte-to-unicode map undone) and the json's pattern.
    Qwen2's tokenizer.json normalizes to NFC first and tiktoken does not: tiktoken is timed
    on the same raw lines as the others (so it skips work they do), and its ids are counted
    only on lines that NFC leaves unchanged.
Lines holding the text of one of the tokenizer's special tokens are left out (HF matches
them as special tokens, tiktoken's encode_ordinary as text, hanpack refuses them by
default); their count is printed.

Competitors:
  * tiktoken  Encoding.encode_ordinary(line) per line, encode_ordinary_batch(lines) with
    num_threads=1 and with its default; decode(ids) per line, decode_batch.
  * HF tokenizers  Tokenizer.from_file(json): encode(line, add_special_tokens=False).ids
    per line, encode_batch with TOKENIZERS_PARALLELISM false / true; decode(ids) per line,
    decode_batch. The reference for ids and decoded text.
  * hanpack  Tokenizer.from_file(json): encode per line, encode_batch / encode_batch_numpy
    with num_threads=1 and all cores; decode per line, decode_batch. When the installed
    hanpack cannot load byte-level BPE, its rows are reported unavailable, with the reason.

The "no blow-up" section times one encode call on one long string (1 MB of Chinese with
whitespace removed, of 'a', of '中', of digits, of spaces) for each library, growing the
input by doubling within --patho-budget seconds a call (tiktoken is quadratic on long
pieces, tiktoken#195), and reports time per byte relative to the same library's per-line
encoding of ordinary Chinese text.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import random
import shlex
import sys
import unicodedata
from pathlib import Path

from benchlib import (
    CORPUS, REPO, TOKENIZERS, Timer, compare, cut_utf8, extension_mtime, flat_to_lists, git_state,
    grow_and_time, hanpack_info, import_hanpack, load_corpus, machine_basics, utf8_len, wait_idle,
    with_env,
)
from benchlib import passes as _passes

SPECS = {  # name -> (tokenizer.json, tiktoken source: ("ranks", rank file) or ("vocab", vocab.json))
    "llama3": (TOKENIZERS / "llama3" / "tokenizer.derived.json", ("ranks", TOKENIZERS / "llama3" / "tokenizer.model")),
    "qwen2": (TOKENIZERS / "qwen2" / "tokenizer.derived.json", ("vocab", TOKENIZERS / "qwen2" / "vocab.json")),
}

TARGETS = {  # the project's targets: (comparison, threshold)
    "encode_1t_vs_tiktoken": (">=", 2.0),
    "encode_1t_vs_hf": (">=", 6.0),
    "batch_scaling": (">=", 1.8),
    "decode_vs_tiktoken": (">=", 3.0),
    "patho": ("<=", 3.0),
}


def passes(kind: str, value: float) -> str:
    return _passes(TARGETS, kind, value)


# --------------------------------------------------------------------------- loading


def json_pattern(path: Path) -> str:
    """The regex of the Split pre-tokenizer in a tokenizer.json (searched through Sequences)."""
    stack = [json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}]
    while stack:
        pt = stack.pop()
        if pt.get("type") == "Sequence":
            stack.extend(reversed(pt.get("pretokenizers", [])))
        elif pt.get("type") == "Split" and "Regex" in pt.get("pattern", {}):
            return pt["pattern"]["Regex"]
    raise ValueError(f"{path}: no Split pre-tokenizer with a Regex pattern")


def json_nfc(path: Path) -> bool:
    """Whether the tokenizer.json's normalizer is NFC (alone or in a Sequence)."""
    norm = json.loads(path.read_text(encoding="utf-8")).get("normalizer") or {}
    parts = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    return any(p.get("type") == "NFC" for p in parts)


def gpt2_unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: the character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def make_tiktoken(name: str):
    import tiktoken
    import tiktoken.load

    json_path, (kind, source) = SPECS[name]
    if kind == "ranks":
        ranks = tiktoken.load.load_tiktoken_bpe(str(source))
    else:
        u2b = gpt2_unicode_to_byte()
        vocab = json.loads(source.read_text(encoding="utf-8"))
        ranks = {bytes(u2b[c] for c in piece): rank for piece, rank in vocab.items()}
    return tiktoken.Encoding(name, pat_str=json_pattern(json_path), mergeable_ranks=ranks, special_tokens={})


def load_hanpack_module():
    """(hanpack module, None) or (None, why it is unavailable)."""
    if importlib.util.find_spec("hanpack") is None:
        return None, f"hanpack is not installed for {sys.executable}"
    try:
        return import_hanpack(), None
    except ImportError as e:
        return None, f"import hanpack failed: {e}"


def load_hanpack_bpe(hanpack, reason: str | None, json_path: Path):
    """(hanpack Tokenizer, None) or (None, why hanpack cannot load `json_path`)."""
    if hanpack is None:
        return None, reason
    try:
        return hanpack.Tokenizer.from_file(json_path), None
    except Exception as e:  # any failure: the reason is printed and kept in the JSON
        msg = str(e).splitlines()[0] if str(e) else ""
        why = f"Tokenizer.from_file raised {type(e).__name__}: {msg[:100]}{'...' if len(msg) > 100 else ''}"
        if not hasattr(hanpack.Tokenizer, "from_tiktoken"):
            why = f"hanpack {hanpack.__version__} ({Path(hanpack.__file__).parent}) has no byte-level BPE support yet; " + why
        return None, why


def special_texts(hf) -> list[str]:
    return [t.content for t in hf.get_added_tokens_decoder().values() if t.content]


def holds_special(text: str, specials: list[str], prefixes: set[str]) -> bool:
    return any(p in text for p in prefixes) and any(s in text for s in specials)


def machine_info(hanpack, hanpack_reason: str | None) -> dict:
    import numpy
    import tiktoken
    import tokenizers

    info = machine_basics()
    info.update({"tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__, "numpy": numpy.__version__})
    info.update(hanpack_info(hanpack) if hanpack is not None else {"hanpack": "unavailable", "hanpack_unavailable": hanpack_reason})
    info.update({"repo_git": git_state(), "loadavg_at_start": os.getloadavg()})
    return info


# --------------------------------------------------------------------------- throughput


def bench_corpus(name: str, hp, hp_reason: str | None, label: str, lines: list[str], args) -> dict:
    import tokenizers

    json_path = SPECS[name][0]
    timer = Timer(args.repeat, args.wait_idle, args.min_time, args.retries)
    hf = tokenizers.Tokenizer.from_file(str(json_path))
    enc = make_tiktoken(name)
    tok, reason = load_hanpack_bpe(hp, hp_reason, json_path)
    nproc = len(os.sched_getaffinity(0))
    tt_threads = inspect.signature(enc.encode_ordinary_batch).parameters["num_threads"].default

    specials = special_texts(hf)
    prefixes = {s[:2] for s in specials}
    kept = [t for t in lines if not holds_special(t, specials, prefixes)]
    left_out, lines = len(lines) - len(kept), kept
    nbytes = sum(utf8_len(t) for t in lines)
    nfc = json_nfc(json_path)
    tt_lines = [i for i, t in enumerate(lines) if unicodedata.normalize("NFC", t) == t] if nfc else None

    ref = [hf.encode(t, add_special_tokens=False).ids for t in lines]  # the reference: HF, one line at a time
    ref_text = [hf.decode(r) for r in ref]

    res: dict = {"tokenizer": str(json_path.relative_to(TOKENIZERS)), "name": name, "text": label, "lines": len(lines),
                 "bytes": nbytes, "tokens": sum(len(r) for r in ref), "left_out_special_lines": left_out, "nfc": nfc,
                 "tiktoken_checked_lines": len(lines) if tt_lines is None else len(tt_lines),
                 "hanpack_unavailable": reason, "encode": {}, "decode": {}, "checks": {}}
    # rows: (key, label, timed function, conversion of its result to comparable ids)
    ident = lambda r: r  # noqa: E731
    hf_ids = lambda r: [e.ids for e in r]  # noqa: E731
    enc_rows = [
        ("tt_loop", "tiktoken    enc.encode_ordinary(line), per line", lambda: [enc.encode_ordinary(t) for t in lines], ident),
        ("tt_batch_1t", "tiktoken    encode_ordinary_batch(lines, num_threads=1)", lambda: enc.encode_ordinary_batch(lines, num_threads=1), ident),
        ("tt_batch_default", f"tiktoken    encode_ordinary_batch(lines), default num_threads={tt_threads} ({nproc} cores)",
         lambda: enc.encode_ordinary_batch(lines), ident),
        ("hf_loop", "tokenizers  tok.encode(line, add_special_tokens=False).ids, per line",
         lambda: [hf.encode(t, add_special_tokens=False).ids for t in lines], ident),
        ("hf_batch_1t", "tokenizers  encode_batch(lines), TOKENIZERS_PARALLELISM=false",
         with_env("TOKENIZERS_PARALLELISM", "false", lambda: hf.encode_batch(lines, add_special_tokens=False)), hf_ids),
        ("hf_batch_all", f"tokenizers  encode_batch(lines), parallel ({nproc} threads)",
         with_env("TOKENIZERS_PARALLELISM", "true", lambda: hf.encode_batch(lines, add_special_tokens=False)), hf_ids),
    ]
    dec_rows = [
        ("tt_loop", "tiktoken    enc.decode(ids), per line", lambda: [enc.decode(r) for r in ref], ident),
        ("tt_batch_1t", "tiktoken    decode_batch(list_of_ids, num_threads=1)", lambda: enc.decode_batch(ref, num_threads=1), ident),
        ("tt_batch_default", f"tiktoken    decode_batch(list_of_ids), default num_threads={tt_threads} ({nproc} cores)",
         lambda: enc.decode_batch(ref), ident),
        ("hf_loop", "tokenizers  tok.decode(ids), per line", lambda: [hf.decode(r) for r in ref], ident),
        ("hf_batch_1t", "tokenizers  decode_batch(list_of_ids), TOKENIZERS_PARALLELISM=false",
         with_env("TOKENIZERS_PARALLELISM", "false", lambda: hf.decode_batch(ref)), ident),
        ("hf_batch_all", f"tokenizers  decode_batch(list_of_ids), parallel ({nproc} threads)",
         with_env("TOKENIZERS_PARALLELISM", "true", lambda: hf.decode_batch(ref)), ident),
    ]
    if tok is not None:
        enc_rows += [
            ("hp_loop", "hanpack     tok.encode(line), per line", lambda: [tok.encode(t) for t in lines], ident),
            ("hp_batch_1t", "hanpack     encode_batch(lines, num_threads=1)", lambda: tok.encode_batch(lines, num_threads=1), ident),
            ("hp_numpy_1t", "hanpack     encode_batch_numpy(lines, num_threads=1)", lambda: tok.encode_batch_numpy(lines, num_threads=1), flat_to_lists),
            ("hp_batch_all", f"hanpack     encode_batch(lines), all cores ({nproc})", lambda: tok.encode_batch(lines), ident),
            ("hp_numpy_all", f"hanpack     encode_batch_numpy(lines), all cores ({nproc})", lambda: tok.encode_batch_numpy(lines), flat_to_lists),
        ]
        dec_rows += [
            ("hp_loop", "hanpack     tok.decode(ids), per line", lambda: [tok.decode(r) for r in ref], ident),
            ("hp_batch_1t", "hanpack     decode_batch(list_of_ids, num_threads=1)", lambda: tok.decode_batch(ref, num_threads=1), ident),
            ("hp_batch_all", f"hanpack     decode_batch(list_of_ids), all cores ({nproc})", lambda: tok.decode_batch(ref), ident),
        ]
    if tok is None:
        print(f"   hanpack     unavailable, its rows are left out: {reason}", flush=True)
    for section, table, expected in (("encode", enc_rows, ref), ("decode", dec_rows, ref_text)):
        for key, row_label, fn, conv in table:
            best, times, result, others, attempts = timer(fn)
            res[section][key] = {"label": row_label, "seconds": best, "all_seconds": times, "MBps": nbytes / best / 1e6,
                                 "others_cores": others, "attempts": attempts}
            only = tt_lines if section == "encode" and key.startswith("tt_") else None
            res["checks"][f"{section}:{key}"] = compare(expected, conv(result), lines, ref_name="tokenizers", only=only)
            del result
            print(f"   {row_label:78s} {nbytes / best / 1e6:8.2f} MB/s  (other processes: {others:.2f} cores; attempts: {attempts})", flush=True)
    if tok is not None and SPECS[name][1][0] == "ranks" and hasattr(hp.Tokenizer, "from_tiktoken"):
        # Not timed: the same vocabulary loaded from the tiktoken rank file must give the same ids.
        tt_tok = hp.Tokenizer.from_tiktoken(SPECS[name][1][1], pattern=name)
        res["checks"]["encode:hp_from_tiktoken_loop"] = compare(ref, [tt_tok.encode(t) for t in lines], lines, ref_name="tokenizers")
    return res


def print_run(r: dict) -> None:
    e, d = r["encode"], r["decode"]
    print(f"\n== {r['tokenizer']} | {r['text']} corpora: {r['lines']} texts, {r['bytes'] / 1e6:.2f} MB, "
          f"{r['tokens']} tokens ({r['bytes'] / max(r['tokens'], 1):.2f} bytes/token)"
          + (f"; {r['left_out_special_lines']} text(s) holding special-token text left out" if r["left_out_special_lines"] else ""))
    for section, rows in (("encode", e), ("decode", d)):
        hf_base, tt_base = rows["hf_loop"]["MBps"], rows["tt_loop"]["MBps"]
        print(f"   {section:78s} {'MB/s':>9s} {'vs HF/line':>11s} {'vs tt/line':>11s} {'others':>7s}")
        for v in rows.values():
            print(f"   {v['label']:78s} {v['MBps']:9.2f} {v['MBps'] / hf_base:10.2f}x {v['MBps'] / tt_base:10.2f}x {v['others_cores']:7.2f}")
        if r["hanpack_unavailable"]:
            print(f"   {'hanpack     (every ' + section + ' row)':78s} {'unavailable':>9s}")
    noisy = [v for v in list(e.values()) + list(d.values()) if v["others_cores"] > 0.2]
    print("   others = cores' worth of CPU other processes used while it was measured (0 = quiet machine)"
          + (f"; {len(noisy)} measurement(s) above 0.2: figures disturbed" if noisy else ""))
    if r["hanpack_unavailable"]:
        print(f"   hanpack unavailable: {r['hanpack_unavailable']}")
    print("   correctness (lines differing from HF tokenizers' per-line encode(..., add_special_tokens=False) / decode):")
    checks = r["checks"]
    hp = {k: c["mismatching_lines"] for k, c in checks.items() if ":hp_" in k}
    if hp:
        print(f"     hanpack  (all encode/decode paths, {len(hp)} checks): {sum(hp.values())} mismatching lines"
              + ("" if not sum(hp.values()) else f"  <-- MUST BE 0: {hp}"))
        if "encode:hp_from_tiktoken_loop" in checks:
            print(f"       of which Tokenizer.from_tiktoken(rank file) encode per line: {checks['encode:hp_from_tiktoken_loop']['mismatching_lines']}")
    else:
        print("     hanpack  not checked (unavailable)")
    hf_self = {k: c["mismatching_lines"] for k, c in checks.items() if ":hf_" in k}
    print(f"     tokenizers batch APIs vs its per-line API: {sum(hf_self.values())}")
    scope = (f"on the {r['tiktoken_checked_lines']} of {r['lines']} texts NFC leaves unchanged (tokenizer.json normalizes"
             " to NFC, tiktoken does not; tiktoken is timed on all texts, unnormalized)" if r["nfc"] else f"on all {r['lines']} texts")
    print(f"     tiktoken encode, {scope}:")
    for k, c in checks.items():
        if ":tt_" in k:
            print(f"       {k:33s} {c['mismatching_lines']} of {c['lines']} lines ({100 * c['mismatching_lines'] / max(c['lines'], 1):.1f}%)")
    for k, c in checks.items():
        for ex in c.get("examples", [])[:2]:
            print(f"       e.g. [{k}] {json.dumps(ex, ensure_ascii=False)}")


def key_ratios(r: dict) -> list[tuple[str, float | None, str | None]]:
    """(name, hanpack / competitor throughput or None when hanpack is unavailable, target kind)."""
    e, d = r["encode"], r["decode"]

    def ratio(rows: dict, a: str, b: str) -> float | None:
        return rows[a]["MBps"] / rows[b]["MBps"] if a in rows and b in rows else None

    return [
        ("encode 1 thread: hanpack encode/line / tiktoken encode_ordinary/line", ratio(e, "hp_loop", "tt_loop"), "encode_1t_vs_tiktoken"),
        ("encode 1 thread: hanpack encode_batch(nt=1) / tiktoken encode_ordinary/line", ratio(e, "hp_batch_1t", "tt_loop"), "encode_1t_vs_tiktoken"),
        ("encode 1 thread: hanpack encode_batch_numpy(nt=1) / tiktoken encode_ordinary/line", ratio(e, "hp_numpy_1t", "tt_loop"), "encode_1t_vs_tiktoken"),
        ("encode 1 thread: hanpack encode_batch(nt=1) / tiktoken encode_ordinary_batch(nt=1)", ratio(e, "hp_batch_1t", "tt_batch_1t"), "encode_1t_vs_tiktoken"),
        ("encode 1 thread: hanpack encode/line / tokenizers encode/line", ratio(e, "hp_loop", "hf_loop"), "encode_1t_vs_hf"),
        ("encode 1 thread: hanpack encode_batch(nt=1) / tokenizers encode_batch PARALLELISM=false", ratio(e, "hp_batch_1t", "hf_batch_1t"), "encode_1t_vs_hf"),
        ("encode_batch all cores / encode_batch num_threads=1 (lists)", ratio(e, "hp_batch_all", "hp_batch_1t"), "batch_scaling"),
        ("encode_batch_numpy all cores / num_threads=1", ratio(e, "hp_numpy_all", "hp_numpy_1t"), "batch_scaling"),
        ("(context) hanpack encode_batch all cores / tiktoken encode_ordinary_batch default threads", ratio(e, "hp_batch_all", "tt_batch_default"), None),
        ("(context) hanpack encode_batch all cores / tokenizers encode_batch parallel", ratio(e, "hp_batch_all", "hf_batch_all"), None),
        ("decode 1 thread: hanpack decode/line / tiktoken decode/line", ratio(d, "hp_loop", "tt_loop"), "decode_vs_tiktoken"),
        ("decode 1 thread: hanpack decode_batch(nt=1) / tiktoken decode_batch(nt=1)", ratio(d, "hp_batch_1t", "tt_batch_1t"), "decode_vs_tiktoken"),
        ("(context) hanpack decode/line / tokenizers decode/line", ratio(d, "hp_loop", "hf_loop"), None),
        ("(context) decode_batch all cores / decode_batch num_threads=1", ratio(d, "hp_batch_all", "hp_batch_1t"), None),
        ("(competitors) tiktoken encode_ordinary/line / tokenizers encode/line", ratio(e, "tt_loop", "hf_loop"), None),
        ("(competitors) tiktoken decode/line / tokenizers decode/line", ratio(d, "tt_loop", "hf_loop"), None),
    ]


# --------------------------------------------------------------------------- pathological


def bench_pathological(name: str, hp, hp_reason: str | None, zh_lines: list[str], zh_run: dict, args) -> dict:
    import tokenizers

    json_path = SPECS[name][0]
    hf = tokenizers.Tokenizer.from_file(str(json_path))
    enc = make_tiktoken(name)
    tok, reason = load_hanpack_bpe(hp, hp_reason, json_path)
    nfc = json_nfc(json_path)
    size = int(args.patho_mb * 1e6)
    nospace = "".join("".join(zh_lines).split())
    while utf8_len(nospace) < size:
        nospace += nospace
    mb = f"{args.patho_mb:g} MB"
    cases = {
        f"{mb} Chinese, whitespace removed, 1 line": cut_utf8(nospace, size),
        f"'a' x {mb}": "a" * size,
        f"'中' x {mb}": "中" * (size // 3 + (size % 3 > 0)),
        f"{mb} of random digits": "".join(random.Random(0).choices("0123456789", k=size)),
        f"' ' x {mb}": " " * size,
    }
    encoders = {"hanpack": tok.encode} if tok is not None else {}
    encoders.update({"tiktoken": enc.encode_ordinary, "tokenizers": lambda s: hf.encode(s, add_special_tokens=False).ids})
    keys = {lib: k for lib, k in (("hanpack", "hp_loop"), ("tiktoken", "tt_loop"), ("tokenizers", "hf_loop")) if lib in encoders}
    nb = zh_run["bytes"]
    base = {lib: zh_run["encode"][k]["seconds"] / nb * 1e9 for lib, k in keys.items()}  # ns/B, per-line ordinary Chinese
    fractions = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    out: dict = {"tokenizer": str(json_path.relative_to(TOKENIZERS)), "baseline_ns_per_byte": base,
                 "hanpack_unavailable": reason, "cases": {}}
    for case, text in cases.items():
        c: dict = {}
        for lib, fn in encoders.items():
            if args.wait_idle > 0:
                wait_idle(args.wait_idle)
            fn(cut_utf8(text, 4096))  # warm-up
            g = grow_and_time(fn, text, fractions, args.patho_budget, args.repeat)
            if "ns_per_byte" not in g:  # failed on the smallest size
                c[lib] = g
                continue
            curve = g["curve"]
            g["time_growth_last_doubling"] = curve[-1]["seconds"] / curve[-2]["seconds"] if len(curve) > 1 else float("nan")
            g["vs_ordinary_per_line"] = g["ns_per_byte"] / base[lib]
            c[lib] = g
        for lib in ("hanpack", "tiktoken"):  # ids on the longest prefix both it and HF encoded
            if lib not in c or "ns_per_byte" not in c[lib] or "ns_per_byte" not in c.get("tokenizers", {}):
                continue
            check = cut_utf8(text, min(c[lib]["bytes"], c["tokenizers"]["bytes"]))
            if lib == "tiktoken" and nfc and unicodedata.normalize("NFC", check) != check:
                c[lib]["ids_equal_tokenizers"] = None  # not comparable: HF normalizes, tiktoken does not
                continue
            c[lib]["ids_equal_tokenizers"] = encoders[lib](check) == encoders["tokenizers"](check)
            c[lib]["checked_bytes"] = utf8_len(check)
        out["cases"][case] = c
        print(f"   {case}: " + ", ".join((f"{lib} {g['ns_per_byte']:.1f} ns/B" if "ns_per_byte" in g else f"{lib} failed")
                                        + (f" (capped at {g['bytes']} B)" if g["capped"] else "")
                                        + (f" [raised at {g['failed']['bytes']} B: {g['failed']['error'][:80]}]" if "failed" in g else "")
                                        for lib, g in c.items())
              + "; ids equal HF: " + ", ".join(f"{lib} {c[lib].get('ids_equal_tokenizers')}" for lib in ("hanpack", "tiktoken") if lib in c), flush=True)
    return out


def print_patho(p: dict) -> None:
    b = p["baseline_ns_per_byte"]
    libs = ("hanpack", "tiktoken", "tokenizers")
    print(f"\n== no blow-up | {p['tokenizer']}: one long string per encode call, time per byte vs the same library's"
          " per-line encoding of ordinary Chinese text")
    print("   ordinary Chinese text (corpus, per line): " + ", ".join(f"{lib} {v:.2f} ns/B" for lib, v in b.items()))
    if p["hanpack_unavailable"]:
        print(f"   hanpack unavailable: {p['hanpack_unavailable']}")
    print(f"   {'input':44s} " + " | ".join(f"{lib:^29s}" for lib in libs) + " | ids == HF")
    print(f"   {'':44s} " + " | ".join(f"{'ns/B':>11s} {'vs ord.':>8s} {'x2->time':>8s}" for _ in libs) + " |  hp    tt")
    notes = []
    for case, c in p["cases"].items():
        cols = []
        for lib in libs:
            g = c.get(lib)
            if g is None:
                cols.append(f"{'unavailable':^29s}")
                continue
            if "failed" in g:
                notes.append(f"     ! {lib} on {case!r} raised at {g['failed']['bytes']} B: {g['failed']['error'][:120]}")
            if "ns_per_byte" not in g:
                cols.append(f"{'raised (see below)':^29s}")
                continue
            cols.append(f"{g['ns_per_byte']:10.2f}{'*' if g['capped'] else ' '} {g['vs_ordinary_per_line']:7.2f}x {g['time_growth_last_doubling']:7.2f}x")
            if g["capped"]:
                notes.append(f"     * {lib} on {case!r} stopped at {g['bytes']} B: the next size was predicted to exceed --patho-budget")
        eq = [str(c[lib].get("ids_equal_tokenizers")) if lib in c else "-" for lib in ("hanpack", "tiktoken")]
        print(f"   {case:44s} " + " | ".join(cols) + f" | {eq[0]:5s} {eq[1]:5s}")
    for n in notes:
        print(n)
    print("   'x2->time': the library's time ratio for the last doubling of its input (2.0 = linear, 4.0 = quadratic);"
          " 'None' in 'ids == HF': the text changes under NFC, which tiktoken does not apply.")


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", choices=[*SPECS, "all"], default="all", help="which vocabulary (default: all)")
    ap.add_argument("--max-mb", type=float, default=8.0, help="cap on MB of Chinese text (also caps English); 0 = all")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is reported)")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="when one run is short, time more runs (up to 30) so a measurement's runs total this many seconds")
    ap.add_argument("--no-english", action="store_true")
    ap.add_argument("--patho-mb", type=float, default=1.0, help="size of each pathological input")
    ap.add_argument("--patho-budget", type=float, default=20.0, help="seconds one pathological encode may take before sizes stop growing")
    ap.add_argument("--no-patho", action="store_true")
    ap.add_argument("--retries", type=int, default=2,
                    help="measure again (up to this many times) when other processes used > 0.2 cores meanwhile; keep the least disturbed")
    ap.add_argument("--wait-idle", type=float, default=30.0,
                    help="before each measurement, wait up to this many seconds for other processes to leave the CPU idle (0 = never wait)")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = ap.parse_args()
    names = list(SPECS) if args.tokenizer == "all" else [args.tokenizer]
    missing = [p for p in [CORPUS] + [f for n in names for f in (SPECS[n][0], SPECS[n][1][1])] if not p.exists()]
    if missing:
        print("shared data not found: " + ", ".join(map(str, missing)), file=sys.stderr)
        return 2

    hanpack, hp_reason = load_hanpack_module()
    info = machine_info(hanpack, hp_reason)
    python = sys.executable if sys.prefix != sys.base_prefix else "python"  # a venv: say which one
    command = f"cd {shlex.quote(os.getcwd())} && {python} " + shlex.join(sys.argv)
    info["command"] = command
    print(f"command : {command}")
    print(f"date    : {info['date_utc']}")
    print(f"machine : {info['cpu']}, nproc {info['nproc']} (os.cpu_count {info['os_cpu_count']}), {info['platform']}")
    print(f"versions: Python {info['python']}, tiktoken {info['tiktoken']}, tokenizers {info['tokenizers']},"
          f" numpy {info['numpy']}, hanpack {info['hanpack']}")
    if hanpack is not None:
        outside = "" if Path(hanpack.__file__).resolve().is_relative_to(REPO) else " (hanpack is loaded from outside this checkout)"
        print(f"hanpack : {info['hanpack_extension']} (built {info['hanpack_extension_mtime']}); repo {info['repo_git']}{outside}")
    else:
        print(f"hanpack : unavailable: {hp_reason}; repo {info['repo_git']}")
    la = info["loadavg_at_start"]
    print(f"load avg: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}" + ("   ! other processes are using the CPU: figures will be noisy" if la[0] > 0.5 else ""))
    results: dict = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()}}

    zh, zh_files = load_corpus(("zh-hans_", "zh-hant_"), args.max_mb)
    en, en_files = load_corpus(("en_",), args.max_mb)
    results["corpus"] = {"Chinese": zh_files, "English": en_files}
    print(f"corpus  : Chinese {len(zh)} texts, {sum(map(utf8_len, zh)) / 1e6:.2f} MB from {len(zh_files)} files "
          f"(zh-hans_*, zh-hant_*); English {len(en)} texts, {sum(map(utf8_len, en)) / 1e6:.2f} MB from {len(en_files)} files (en_*)")
    results["runs"], results["pathological"] = [], []
    for name in names:
        zh_run: dict | None = None
        for label, lines in (("Chinese", zh), ("English", en)):
            if label == "English" and args.no_english:
                continue
            print(f"\n-- measuring {SPECS[name][0].relative_to(TOKENIZERS)} on {label} ...", flush=True)
            r = bench_corpus(name, hanpack, hp_reason, label, lines, args)
            results["runs"].append(r)
            zh_run = r if label == "Chinese" else zh_run
        if not args.no_patho and zh_run is not None:
            print(f"\n-- measuring pathological inputs with {SPECS[name][0].relative_to(TOKENIZERS)} ...", flush=True)
            results["pathological"].append(bench_pathological(name, hanpack, hp_reason, zh, zh_run, args))

    print("\n" + "=" * 120 + "\nRESULTS")
    for r in results["runs"]:
        print_run(r)
    for p in results["pathological"]:
        print_patho(p)

    print("\n" + "=" * 120 + "\nKEY RATIOS (project targets)")
    summary = []
    for r in results["runs"]:
        print(f"\n   {r['tokenizer']} | {r['text']}")
        ratios = key_ratios(r)
        if r["hanpack_unavailable"]:
            print(f"     {sum(v is None for _, v, _ in ratios)} hanpack ratios: n/a, hanpack unavailable")
        for rname, v, kind in ratios:
            if v is not None:
                print(f"     {rname:88s} {v:7.3f}x   {passes(kind, v) if kind else ''}")
            summary.append({"tokenizer": r["tokenizer"], "text": r["text"], "ratio": rname, "value": v, "target": TARGETS.get(kind) if kind else None})
    for p in results["pathological"]:
        print(f"\n   {p['tokenizer']} | no blow-up (hanpack time per byte / its per-line ordinary Chinese)")
        if p["hanpack_unavailable"]:
            print(f"     {len(p['cases'])} hanpack ratios: n/a, hanpack unavailable")
        for case, c in p["cases"].items():
            v = c["hanpack"].get("vs_ordinary_per_line") if "hanpack" in c else None
            if v is not None:
                print(f"     {case:88s} {v:7.3f}x   {passes('patho', v)}")
            summary.append({"tokenizer": p["tokenizer"], "text": "pathological", "ratio": case, "value": v, "target": TARGETS["patho"]})
    checked = [r for r in results["runs"] if not r["hanpack_unavailable"]]
    if checked:
        total_bad = sum(c["mismatching_lines"] for r in checked for k, c in r["checks"].items() if ":hp_" in k)
        total_bad += sum(not c["hanpack"].get("ids_equal_tokenizers") for p in results["pathological"] for c in p["cases"].values() if "hanpack" in c)
        print(f"\n   hanpack vs HF tokenizers mismatches over every benchmarked line and pathological input: {total_bad}"
              f"  ({'OK' if total_bad == 0 else 'MUST BE 0'})")
    else:
        total_bad = None
        print("\n   hanpack vs HF tokenizers: not checked, hanpack unavailable")
    results["key_ratios"] = summary
    results["hanpack_mismatches_total"] = total_bad

    la = os.getloadavg()
    results["machine"]["loadavg_at_end"] = la
    if hanpack is not None:
        mtime_end = extension_mtime(hanpack)
        if mtime_end != info["hanpack_extension_mtime"]:
            results["machine"]["hanpack_extension_mtime_at_end"] = mtime_end
            print(f"! the hanpack extension was replaced during the run (now {mtime_end}); this process kept the one"
                  f" built {info['hanpack_extension_mtime']}")
    print(f"\nload avg at end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
