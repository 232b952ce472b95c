"""Chinese vocabulary extension, side by side with the published Chinese tokenizers.

    python benches/bench_vocab.py [--skip-speed] [--skip-extension]

1. **Training speed**: a 20,000-piece BPE vocabulary from all shared corpora except the
   parallel test cases (>= 50 MB, written to one temporary file), hanpack's trainer vs
   sentencepiece's, same input, same size (sentencepiece: model_type=bpe, its defaults
   plus byte_fallback and split_digits as LLaMA). Each run is a fresh subprocess, so its
   peak RSS is its own; rounds alternate, best of --rounds.
2. **Extension** of LLaMA by about 20,000 pieces trained on the shared corpora with
   every 20th line of each Simplified file held out: hanpack trains a 60,000-piece BPE
   on the rest (Traditional sources at weight 0.1), follows the first 8,000 Chinese
   pieces with their OpenCC ``s2twp`` form, and extends LLaMA with the longest prefix
   that adds at most 20,000 pieces (characters and intermediates included).
3. **Reachability**: dead pieces (stock sentencepiece, own text, no dummy prefix) of
   Chinese-LLaMA, Chinese-LLaMA-2 and ours; lines without Chinese of every corpus file
   encoded with LLaMA and with ours; ids of hanpack, sentencepiece and transformers on the
   extended files.
4. **Compression and script fairness** on the held-out Simplified lines and the same
   lines converted with OpenCC ``s2twp``: chars/token Simplified -> Traditional and
   their ratio, for LLaMA, Chinese-LLaMA, Chinese-LLaMA-2, Qwen2, LLaMA-3 and ours.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchlib import CORPUS, machine_basics  # noqa: E402

from hanpack.vocab import read_texts as _stream_texts  # noqa: E402

TOKENIZERS = CORPUS.parent / "tokenizers"
LLAMA = TOKENIZERS / "llama" / "tokenizer.model"
OTHERS = {
    "Chinese-LLaMA": TOKENIZERS / "chinese-llama-alpaca" / "chinese_llama_tokenizer.derived.model",
    "Chinese-LLaMA-2": TOKENIZERS / "chinese-llama-alpaca-2" / "tokenizer.model",
    "Qwen2": TOKENIZERS / "qwen2" / "tokenizer.derived.json",
    "LLaMA-3": TOKENIZERS / "llama3" / "tokenizer.model",
}
HOLD_OUT = 20  # every 20th line of each Simplified file is evaluation text
EVAL_PER_FILE = 700
CJK = re.compile("[\u2e80-\u2fdf\u3000-\u303f\u3100-\u312f\u31a0-\u31ef\u3400-\u4dbf\u4e00-\u9fff"
                 "\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U000323af]")

def read_texts(path: Path) -> List[str]:
    """Lines of a text file; string values (but ``id``) of a jsonl file."""
    return list(_stream_texts(path))


TRAIN_CHILD = r"""
import json, resource, sys, time
which, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
if which == "sentencepiece":
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(input=path, model_prefix=sys.argv[4], vocab_size=size, model_type="bpe",
        character_coverage=0.9995, byte_fallback=True, split_digits=True, num_threads=2,
        max_sentence_length=1 << 20, minloglevel=2)
    out = sys.argv[4] + ".model"
else:
    from hanpack.vocab import train
    v = train([path], vocab_size=size, progress=False)
    out = sys.argv[4] + ".model"
    open(out, "wb").write(v.model)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "model": out}))
"""


def write_training_text(folder: Path) -> Tuple[Path, int]:
    path = folder / "train.txt"
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for p in sorted(CORPUS.iterdir()):
            if p.suffix in (".txt", ".jsonl") and not p.name.startswith("parallel"):
                for t in read_texts(p):
                    t = t.replace("\n", " ").strip()
                    if t:
                        out.write(t + "\n")
                        n += len(t.encode("utf-8")) + 1
    return path, n


def bench_speed(folder: Path, rounds: int) -> Dict[str, object]:
    path, nbytes = write_training_text(folder)
    best: Dict[str, Dict[str, float]] = {}
    for r in range(rounds):
        for which in ("sentencepiece", "hanpack"):
            out = subprocess.run([sys.executable, "-c", TRAIN_CHILD, which, str(path), "20000", str(folder / f"{which}{r}")],
                                 check=True, capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  round {r + 1}: {which:<13} {res['seconds']:6.1f} s  peak {res['peak_mb']:6.0f} MB")
            if which not in best or res["seconds"] < best[which]["seconds"]:
                best[which] = res
    import sentencepiece as spm

    sizes = {w: spm.SentencePieceProcessor(model_file=best[w]["model"]).get_piece_size() for w in best}
    ratio = best["sentencepiece"]["seconds"] / best["hanpack"]["seconds"]
    print(f"training {nbytes / 1e6:.1f} MB to 20,000 pieces: sentencepiece {best['sentencepiece']['seconds']:.1f} s "
          f"(peak {best['sentencepiece']['peak_mb']:.0f} MB), hanpack {best['hanpack']['seconds']:.1f} s "
          f"(peak {best['hanpack']['peak_mb']:.0f} MB): {ratio:.2f}x  [target >= 3x]; sizes {sizes}")
    return {"mb": nbytes / 1e6, "best": best, "ratio": ratio, "sizes": sizes}


def split_corpus(folder: Path, trad_weight: float = 0.1) -> Tuple[List[Tuple[str, float]], List[str]]:
    """Training files (the held-out lines removed) and the evaluation lines."""
    inputs: List[Tuple[str, float]] = []
    evals: List[str] = []
    for p in sorted(CORPUS.iterdir()):
        if p.suffix not in (".txt", ".jsonl") or p.name.startswith(("parallel", "en_")):
            continue
        lines = [t.replace("\n", " ") for t in read_texts(p) if t.strip()]
        if p.name.startswith("zh-hans"):
            held = lines[::HOLD_OUT]
            evals += held[:: max(1, len(held) // EVAL_PER_FILE)][:EVAL_PER_FILE]
            lines = [t for i, t in enumerate(lines) if i % HOLD_OUT]
        out = folder / f"{p.stem}.txt"
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        inputs.append((str(out), trad_weight if p.name.startswith("zh-hant") else 1.0))
    return inputs, evals


def build_extension(folder: Path, inputs: List[Tuple[str, float]], variants_limit: int = 8000):
    from hanpack.vocab import extend_to_size, opencc_converter, train, with_script_variants

    t = time.perf_counter()
    v = train(inputs, vocab_size=60000, progress=False)
    pieces = with_script_variants(v.pieces(cjk_only=True), opencc_converter("s2twp"), limit=variants_limit)
    ext = extend_to_size(LLAMA, pieces, 20000)
    print(f"extension: trained {v.vocab_size} pieces on {v.bytes / 1e6:.1f} MB in {v.seconds:.1f} s; LLaMA 32000 -> "
          f"{ext.vocab_size} ({ext.count('requested')} requested, {ext.count('character')} characters, "
          f"{ext.count('intermediate')} intermediates) in {time.perf_counter() - t:.1f} s")
    return ext


def stock(model: bytes, dummy_prefix: bool = True):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model)
    m.normalizer_spec.add_dummy_prefix = dummy_prefix
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def dead_pieces(model: bytes) -> int:
    sp = stock(model, dummy_prefix=False)
    return sum(1 for i in range(sp.get_piece_size())
               if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
               and sp.encode(sp.id_to_piece(i).replace("\u2581", " ")) != [i])


def bench_reachability(ext, folder: Path) -> Dict[str, object]:  # noqa: C901
    import sentencepiece as spm
    from transformers import AutoTokenizer

    import hanpack

    res: Dict[str, object] = {}
    for name in ("Chinese-LLaMA", "Chinese-LLaMA-2"):
        res[f"dead {name}"] = dead_pieces(OTHERS[name].read_bytes())
    res["dead ours"] = dead_pieces(ext.model)
    plain_sp = stock(ext.model, False)
    res["dead ours (added pieces)"] = sum(1 for a in ext.added if plain_sp.encode(a.piece.replace("\u2581", " ")) != [a.id])
    base, ours = spm.SentencePieceProcessor(model_file=str(LLAMA)), stock(ext.model)
    plain = [t for p in sorted(CORPUS.iterdir()) if p.suffix in (".txt", ".jsonl") for t in read_texts(p) if t and not CJK.search(t)]
    res["lines without Chinese"] = len(plain)
    res["... encoded differently from LLaMA"] = sum(1 for t in plain if base.encode(t) != ours.encode(t))
    out = ext.save(folder / "llama-zh")
    hf = AutoTokenizer.from_pretrained(str(out))
    tok = hanpack.Tokenizer.from_file(out / "tokenizer.model")
    lines = [t for p in sorted(CORPUS.iterdir()) if p.suffix in (".txt", ".jsonl") for t in read_texts(p)[:3000] if t]
    want = [ours.encode(t) for t in lines]
    res["corpus lines compared (hanpack / transformers vs sentencepiece)"] = len(lines)
    res["hanpack mismatches"] = sum(1 for w, g in zip(want, tok.encode_batch(lines)) if list(g) != w)
    res["transformers mismatches"] = sum(1 for w, t in zip(want, lines) if hf.encode(t, add_special_tokens=False) != w)
    res["transformers mismatches, special-token text excluded"] = sum(
        1 for w, t in zip(want, lines) if not re.search("<s>|</s>|<unk>", t) and hf.encode(t, add_special_tokens=False) != w)
    for k, v in res.items():
        print(f"  {k}: {v}")
    return res


def bench_fairness(ext, evals: List[str]) -> Dict[str, Tuple[float, float, float]]:
    import hanpack
    from hanpack.vocab import opencc_converter

    s2twp = opencc_converter("s2twp")
    trad = [s2twp(t) for t in evals]
    toks = {"LLaMA": hanpack.Tokenizer.from_file(LLAMA)}
    toks.update({k: hanpack.Tokenizer.from_file(v) for k, v in OTHERS.items()})
    toks["ours (LLaMA + 20k)"] = ext.tokenizer()
    rows = {}
    print(f"  {len(evals)} held-out Simplified lines ({sum(map(len, evals))} chars) and their s2twp conversion")
    print(f"  {'tokenizer':<20} {'vocab':>7} {'Simplified':>10} {'Traditional':>11} {'ratio':>6}")
    for name, tok in toks.items():
        s = sum(map(len, evals)) / sum(len(x) for x in tok.encode_batch(evals))
        t = sum(map(len, trad)) / sum(len(x) for x in tok.encode_batch(trad))
        rows[name] = (s, t, t / s)
        print(f"  {name:<20} {tok.vocab_size:>7} {s:>10.3f} {t:>11.3f} {t / s:>6.3f}")
    cl = rows["Chinese-LLaMA"][0]
    ours = rows["ours (LLaMA + 20k)"]
    print(f"  targets: Simplified >= Chinese-LLaMA ({cl:.3f}): {'met' if ours[0] >= cl else 'NOT met'} ({ours[0]:.3f}); "
          f"ratio >= 0.95: {'met' if ours[2] >= 0.95 else 'NOT met'} ({ours[2]:.3f})")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-extension", action="store_true")
    ap.add_argument("--trad-weight", type=float, default=0.1, help="weight of the Traditional sources")
    ap.add_argument("--variants-limit", type=int, default=8000, help="pieces followed by their s2twp form")
    args = ap.parse_args()
    print(json.dumps(machine_basics()), flush=True)
    with tempfile.TemporaryDirectory(prefix="hanpack-bench-vocab-") as tmp:
        folder = Path(tmp)
        if not args.skip_speed:
            print("== training speed")
            bench_speed(folder, args.rounds)
        if not args.skip_extension:
            print("== extension")
            inputs, evals = split_corpus(folder, args.trad_weight)
            ext = build_extension(folder, inputs, args.variants_limit)
            print("== reachability and parity")
            bench_reachability(ext, folder)
            print("== compression and script fairness")
            bench_fairness(ext, evals)


if __name__ == "__main__":
    main()
