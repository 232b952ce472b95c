"""What the side-by-side benchmarks (bench_spm.py, bench_bpe.py) share: where the shared
data lives, loading the corpora, timing with noise control (waiting for the machine to go
idle, recording the CPU other processes used meanwhile), comparing outputs line by line,
timing one long input of growing size, and describing the machine.

Not a test helper and not part of hanpack: imported by the scripts next to it
(`python benches/bench_*.py` puts this folder first on sys.path).

    >>> lines, per_file = load_corpus(("zh-hans_",), 0.5)       # doctest: +SKIP
    >>> timer = Timer(repeat=3, wait_idle_s=30.0, min_time_s=1.0, retries=2)  # doctest: +SKIP
    >>> best, times, result, others, attempts = timer(lambda: [len(t) for t in lines])  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
TOKENIZERS = SHARED / "data" / "tokenizers"
CORPUS = SHARED / "data" / "corpus"

Target = tuple[str, float]  # (">=" or "<=", threshold)


# --------------------------------------------------------------------------- hanpack


def import_hanpack(retries: int = 5, wait_s: float = 60.0):
    """Imports hanpack, retrying: another engineer may be replacing the extension .so."""
    for attempt in range(retries):
        try:
            import hanpack
            import hanpack._core  # noqa: F401

            return hanpack
        except ImportError as e:
            for name in [m for m in sys.modules if m == "hanpack" or m.startswith("hanpack.")]:
                del sys.modules[name]
            if attempt == retries - 1:
                raise
            print(f"[import hanpack failed: {e}; retrying in {wait_s:.0f} s]", file=sys.stderr, flush=True)
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def extension_mtime(hanpack) -> str:
    """When the loaded hanpack extension file was last written ("missing" if it is gone)."""
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(hanpack._core.__file__)).strftime("%Y-%m-%d %H:%M:%S")
    except OSError:
        return "missing"


def hanpack_info(hanpack) -> dict:
    return {
        "hanpack": hanpack.__version__,
        "hanpack_extension": hanpack._core.__file__,
        "hanpack_extension_mtime": extension_mtime(hanpack),
    }


# --------------------------------------------------------------------------- targets


def passes(targets: Mapping[str, Target], kind: str, value: float) -> str:
    """'target >= 5: PASS' (or BELOW / ABOVE TARGET) for `value` against `targets[kind]`."""
    op, thr = targets[kind]
    ok = value >= thr if op == ">=" else value <= thr
    return f"target {op} {thr:g}: {'PASS' if ok else 'BELOW TARGET' if op == '>=' else 'ABOVE TARGET'}"


# --------------------------------------------------------------------------- corpus


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_utf8(text: str, nbytes: int) -> str:
    """The longest prefix of `text` with at most `nbytes` UTF-8 bytes."""
    return text.encode("utf-8")[:nbytes].decode("utf-8", "ignore")


def read_texts(path: Path) -> list[str]:
    """Texts of one corpus file: each line of a .txt; for .jsonl, the string values of each
    object joined with a newline (one text per object)."""
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if path.suffix == ".jsonl":
                if not line.strip():
                    continue
                obj = json.loads(line)
                values = obj.values() if isinstance(obj, dict) else [obj]
                out.append("\n".join(v for v in values if isinstance(v, str)))
            else:
                out.append(line)
    return [t for t in out if t]


def load_corpus(prefixes: tuple[str, ...], max_mb: float) -> tuple[list[str], list[dict]]:
    """Texts from the corpus files whose names start with `prefixes`, capped at `max_mb` MB
    of UTF-8 in all. The cap is shared out evenly between files (what a small file leaves
    unused goes to the larger ones); each file contributes its first texts, in file order."""
    files = sorted(p for p in CORPUS.iterdir() if p.name.startswith(prefixes) and p.suffix in (".txt", ".jsonl"))
    texts = {f: read_texts(f) for f in files}
    sizes = {f: sum(utf8_len(t) for t in ts) for f, ts in texts.items()}
    budget = int(max_mb * 1e6) if max_mb > 0 else sum(sizes.values())
    lines: list[str] = []
    used_per_file: list[dict] = []
    order = sorted(files, key=lambda f: sizes[f])  # small files first: their leftover flows on
    take: dict[Path, list[str]] = {}
    for i, f in enumerate(order):
        share = budget // (len(order) - i)
        got, used = [], 0
        for t in texts[f]:
            if used >= share:
                break
            got.append(t)
            used += utf8_len(t)
        take[f] = got
        budget -= used
        used_per_file.append({"file": f.name, "texts": len(got), "bytes": used})
    for f in files:  # keep file order (sorted by name) in the benchmarked list
        lines.extend(take[f])
    used_per_file.sort(key=lambda d: d["file"])
    return lines, used_per_file


# --------------------------------------------------------------------------- timing


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_now() -> tuple[float, float, float]:
    """(wall clock, CPU seconds busy on the whole machine, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
        busy = (sum(vals) - vals[3] - vals[4]) / CLK_TCK  # all but idle and iowait (steal counts)
    except OSError:
        busy = float("nan")
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def others_cores(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Cores' worth of CPU other processes used between two _cpu_now() snapshots."""
    wall = b[0] - a[0]
    if wall <= 0:
        return float("nan")
    return max((b[1] - a[1]) - (b[2] - a[2]), 0.0) / wall


def wait_idle(max_wait_s: float, threshold: float = 0.15) -> float:
    """Waits (at most `max_wait_s`) until other processes use under `threshold` cores over
    half a second; returns the other processes' load seen last (cores)."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        a = _cpu_now()
        time.sleep(0.5)
        load = others_cores(a, _cpu_now())
        if load < threshold or time.perf_counter() >= deadline:
            return load
        time.sleep(1.0)


class Timer:
    """best-of-`repeat` timing after one warm-up (whose result is kept for checking); waits
    for the machine to be idle first and records how much CPU other processes used."""

    def __init__(self, repeat: int, wait_idle_s: float, min_time_s: float = 0.0, retries: int = 0,
                 noisy_cores: float = 0.2, max_repeat: int = 30):
        self.repeat = repeat
        self.wait_idle_s = wait_idle_s
        self.min_time_s = min_time_s
        self.retries = retries
        self.noisy_cores = noisy_cores
        self.max_repeat = max_repeat

    def _attempt(self, fn: Callable[[], object], keep: bool) -> tuple[list[float], object, float]:
        if self.wait_idle_s > 0:
            wait_idle(self.wait_idle_s)
        gc.collect()
        a = _cpu_now()
        t0 = time.perf_counter()
        result = fn()  # warm-up (its result is what gets verified)
        warm = time.perf_counter() - t0
        if not keep:
            del result
            result = None
        # best of `repeat`, or of more runs when one run is short: at least --min-time in all
        n = max(self.repeat, min(self.max_repeat, int(self.min_time_s / max(warm, 1e-9)) + 1))
        times = []
        for _ in range(n):
            gc.collect()
            t0 = time.perf_counter()
            r = fn()
            t1 = time.perf_counter()
            del r
            times.append(t1 - t0)
        # over the whole attempt: /proc/stat counts in clock ticks, too coarse for one run
        others = min(others_cores(a, _cpu_now()), float(len(os.sched_getaffinity(0))))
        return times, result, others

    def __call__(self, fn: Callable[[], object]) -> tuple[float, list[float], object, float, int]:
        """(best seconds, that attempt's run times, warm-up result, other processes' cores
        during that attempt, attempts made). A measurement during which other processes used
        more than `noisy_cores` is measured again, up to `retries` more times; the least
        disturbed attempt is kept."""
        times, result, others = self._attempt(fn, keep=True)
        attempts = [(others, min(times), times)]
        while others > self.noisy_cores and len(attempts) <= self.retries:
            times, _, others = self._attempt(fn, keep=False)
            attempts.append((others, min(times), times))
        others, best, times = min(attempts)
        return best, times, result, others, len(attempts)


def with_env(var: str, value: str, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn` wrapped so that it runs with environment variable `var` set to `value`."""
    def run():
        old = os.environ.get(var)
        os.environ[var] = value
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[var]
            else:
                os.environ[var] = old

    return run


def grow_and_time(encode: Callable[[str], object], text: str, fractions: list[float], budget_s: float, repeat: int) -> dict:
    """Encodes prefixes of `text` of growing size (one run each) while the next size is
    predicted (assuming quadratic growth) to take at most `budget_s`; then times the
    largest size reached best-of-`repeat`. Returns its size, seconds and the growth curve."""
    total = utf8_len(text)
    failed: dict | None = None
    curve: list[tuple[int, float]] = []
    last: tuple[int, float] | None = None
    for frac in fractions:
        prefix = cut_utf8(text, int(total * frac))
        n = utf8_len(prefix)
        if last is not None:
            predicted = last[1] * (n / last[0]) ** 2
            if predicted > budget_s:
                break
        t0 = time.perf_counter()
        try:
            encode(prefix)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 (a competitor's Rust panic is a BaseException)
            failed = {"bytes": n, "error": f"{type(e).__name__}: {str(e)[:200]}"}
            if last is None:
                return {"bytes": 0, "capped": True, "failed": failed, "curve": []}
            break
        dt = time.perf_counter() - t0
        curve.append((n, dt))
        last = (n, dt)
        if dt > budget_s:
            break
    assert last is not None
    n, dt = last
    prefix = cut_utf8(text, n)
    times = [dt]
    if dt * repeat <= budget_s * 2:
        for _ in range(repeat):
            t0 = time.perf_counter()
            encode(prefix)
            times.append(time.perf_counter() - t0)
    best = min(times)
    out = {"bytes": n, "capped": n < total, "seconds": best, "ns_per_byte": best / n * 1e9,
           "curve": [{"bytes": b, "seconds": s} for b, s in curve]}
    if failed:
        out["failed"] = failed  # the call on the next size raised: the figures are for the last size that worked
    return out


# --------------------------------------------------------------------------- correctness


def compare(ref: list, got: list, lines: list[str], examples: int = 3, ref_name: str = "sentencepiece",
            only: list[int] | None = None) -> dict:
    """Lines where `got` differs from `ref` (counted over the indices in `only` when given),
    with a few examples showing the text and the ids around the first difference."""
    idx = range(min(len(ref), len(got))) if only is None else [i for i in only if i < min(len(ref), len(got))]
    bad = [i for i in idx if ref[i] != got[i]]
    if len(ref) != len(got):
        bad.append(-1)
    out: dict = {"mismatching_lines": len(bad), "lines": len(ref) if only is None else len(only)}
    if bad:
        ex: list[dict] = []
        for i in bad[:examples]:
            if i < 0:
                ex.append({"note": f"length {len(got)} != {len(ref)}"})
                continue
            a, b = ref[i], got[i]
            if isinstance(a, str):
                ex.append({"line": i, "text": lines[i][:60], ref_name: a[:60], "other": b[:60]})
            else:
                k = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                ex.append({"line": i, "text": lines[i][:60], "at_token": k, ref_name: a[max(0, k - 2):k + 4], "other": b[max(0, k - 2):k + 4]})
        out["examples"] = ex
    return out


def flat_to_lists(flat_offsets) -> list[list[int]]:
    """encode_batch_numpy's (ids, offsets) as a list of id lists."""
    ids, offsets = flat_offsets
    ids = ids.tolist()
    offsets = offsets.tolist()
    return [ids[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_state() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "rust", "python"], capture_output=True, text=True).stdout
        n = len([x for x in dirty.splitlines() if x.strip()])
        return head + (f" (+{n} uncommitted change(s) under rust/ python/)" if n else " (clean rust/ python/)")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_basics() -> dict:
    """Date, CPU, core counts, platform and Python version; scripts add their libraries."""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu_model(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "os_cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def make_hf_fast(model: Path):
    """transformers' LlamaTokenizer (tokenizers backend) converted offline from a .model
    (a temporary folder holding only the model, so no config changes its settings)."""
    import shutil
    import tempfile

    from transformers import LlamaTokenizer

    folder = Path(tempfile.mkdtemp(prefix="bench-hf-"))
    try:
        shutil.copy(model, folder / "tokenizer.model")
        return LlamaTokenizer.from_pretrained(str(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
