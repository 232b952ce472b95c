"""The ``hanpack`` command line.

    hanpack demo                          # bundled tokenizer on the bundled Chinese sample
    hanpack encode --model M.model "你好"  # ids (or --pieces) of text, or of --file lines
    hanpack decode --model M.model 1 2 3
    hanpack segment "我来到北京清华大学"          # words, jieba-exact (--file, --no-hmm, --dict, --user-dict)
    hanpack quantize SRC DST --bits 4 --group-size 128 --method hqq
    hanpack quantize SRC DST --bits 3 --method learned [--steps 1500]   # fitted with torch
    hanpack quantize SRC OUT.gguf --format gguf --type Q4_K_M   # llama.cpp's file types
    hanpack calibrate MODEL IMPORTANCE.safetensors [--text FILE]   # for --method mse --importance
    hanpack eval-ppl ORIGINAL QUANTIZED --text FILE [--separator LINE]
    hanpack tokenize FILES... --model M --out DIR [--eos] [--on-error skip]   # token shards
    hanpack vocab train FILES... --vocab-size N --out DIR     # SentencePiece-compatible BPE
    hanpack vocab extend BASE.model OUT --from-model M --add 20000 [--variants s2twp]
    hanpack vocab report TOKENIZERS... --corpus FILES... [--png chart.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__, data
from .exceptions import HanpackError
from .tokenizer import Tokenizer
from .vocab.cli import add_vocab_parser


def _load(model: str | None) -> Tokenizer:
    return Tokenizer.from_file(model if model else data.default_model_path())


def _cmd_demo(args: argparse.Namespace) -> int:
    tok = _load(args.model)
    text = Path(args.file).read_text(encoding="utf-8") if args.file else data.sample_text()
    lines = [line for line in text.splitlines() if line.strip()]
    print(f"tokenizer: {tok!r}")
    for line in lines[: args.show]:
        pieces = tok.encode_as_pieces(line)
        print(f"\n{line}\n  {len(pieces)} tokens: {' '.join(pieces)}")
        print(f"  ids: {tok.encode(line)}")
    # Throughput: repeat the sample until there is enough text to time meaningfully.
    nbytes = sum(len(line.encode("utf-8")) for line in lines)
    reps = max(1, (args.mb * 1_000_000) // max(nbytes, 1))
    corpus = lines * reps
    total = nbytes * reps
    t0 = time.perf_counter()
    for line in corpus:
        tok.encode(line)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = tok.encode_batch(corpus)
    multi = time.perf_counter() - t0
    t0 = time.perf_counter()
    flat, _ = tok.encode_batch_numpy(corpus)
    flat_time = time.perf_counter() - t0
    ntok = len(flat)
    del batch
    print(
        f"\nthroughput on {total / 1e6:.1f} MB ({len(corpus)} lines, {ntok} tokens):"
        f"\n  encode per line, one thread:       {total / single / 1e6:8.1f} MB/s"
        f"\n  encode_batch (lists), all cores:   {total / multi / 1e6:8.1f} MB/s"
        f"\n  encode_batch_numpy, all cores:     {total / flat_time / 1e6:8.1f} MB/s"
        "\n  (lists cost one Python int reference per token; the numpy form skips that)"
    )
    return 0


def _input_lines(args: argparse.Namespace) -> list[str]:
    """The lines of --file, else the one positional text, else stdin's lines."""
    if args.file:
        return Path(args.file).read_text(encoding="utf-8").splitlines()
    if args.text is not None:
        return [args.text]
    return sys.stdin.read().splitlines()


def _cmd_encode(args: argparse.Namespace) -> int:
    tok = _load(args.model)
    texts = _input_lines(args)
    if args.pieces:
        for t in texts:
            print(" ".join(tok.encode_as_pieces(t)))
    else:
        for ids in tok.encode_batch(texts, add_bos=args.bos, add_eos=args.eos):
            print(" ".join(map(str, ids)))
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    tok = _load(args.model)
    print(tok.decode([int(i) for i in args.ids]))
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from .segment import Segmenter, jieba_hmm

    hmm = None if args.no_hmm else jieba_hmm()
    if args.dict:
        seg = Segmenter.from_file(args.dict, hmm=hmm, user_dicts=args.user_dict)
    else:
        seg = Segmenter.from_jieba(user_dicts=args.user_dict)
    texts = _input_lines(args)
    for words in seg.cut_batch(texts, hmm=not args.no_hmm):
        print(args.sep.join(words))
    return 0


def _cmd_quantize_gguf(args: argparse.Namespace) -> int:
    from .gguf import convert_checkpoint

    start = time.perf_counter()
    imatrix = None
    if args.importance is not None:
        from .calibrate import Importance

        imatrix = Importance.load(args.importance)
    r = convert_checkpoint(args.src, args.dst, file_type=args.type or "Q4_K_M", imatrix=imatrix, num_threads=args.threads,
                           progress=not args.quiet)
    seconds = time.perf_counter() - start
    counts: dict[str, int] = {}
    for t in r.tensor_types.values():
        counts[t] = counts.get(t, 0) + 1
    mix = ", ".join(f"{n} {t}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"{r.file_type}: {len(r.tensor_types)} tensors ({mix}), {r.n_weights / 1e6:.2f} M weights, "
          f"{r.nbytes / 1e6:.1f} MB ({r.bits_per_weight:.2f} bits/weight) in {seconds:.2f} s")
    print(f"written to {r.path}")
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from .data import tokenize_files

    r = tokenize_files(
        args.inputs, _load(args.model), args.out, text_field=args.text_field, add_bos=args.bos, add_eos=args.eos,
        dtype=args.dtype, shard_tokens=args.shard_tokens, num_threads=args.threads, on_error=args.on_error,
        progress=not args.quiet,
    )
    skipped = ", ".join(f"{n} {k}" for k, n in sorted(r.skipped.items())) or "none"
    resumed = f" ({r.resumed_shards} kept from an interrupted run)" if r.resumed_shards else ""
    print(f"{r.tokens} tokens, {r.documents} documents in {r.shards} shards{resumed}; skipped records: {skipped}")
    print(f"this run: {r.new_tokens} tokens in {r.seconds:.2f} s ({r.tokens_per_second / 1e6:.2f} M tokens/s); written to {r.out_dir}")
    return 0


#: `hanpack quantize` options that are `learn_rounding`'s keyword arguments.
_LEARNING = ("steps", "samples", "seq_len", "batch_size", "lr", "seed", "text", "device")


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .checkpoint import DEFAULT_EXCLUDE, quantize_checkpoint

    if args.format == "gguf":
        return _cmd_quantize_gguf(args)
    if args.type is not None:
        raise SystemExit("hanpack quantize: --type is a GGUF file type; add --format gguf")

    group = None if args.group_size in (0, -1) else args.group_size
    exclude = tuple(args.exclude) + (() if args.no_default_exclude else DEFAULT_EXCLUDE)
    learning = {k: getattr(args, k) for k in _LEARNING if getattr(args, k) is not None}
    learned = None
    if args.method == "learned":
        from .learned import learn_rounding

        if os.path.lexists(args.dst):  # before minutes of learning, not after
            raise FileExistsError(17, "the destination already exists (hanpack never overwrites)", args.dst)
        if "text" in learning:
            learning["text"] = Path(learning["text"]).read_text(encoding="utf-8")
        learned = learn_rounding(args.src, bits=args.bits, group_size=group, include=args.include or None, exclude=exclude,
                                 progress=not args.quiet, **learning)
    elif learning:
        raise SystemExit(f"hanpack quantize: {', '.join('--' + k.replace('_', '-') for k in learning)} "
                         "only apply to --method learned")
    r = quantize_checkpoint(
        args.src, args.dst, bits=args.bits, group_size=group, method=args.method, sym=args.sym,
        include=args.include or None, exclude=exclude, num_threads=args.threads, progress=not args.quiet,
        importance=args.importance, learned=learned,
    )
    q = r.quantized
    if args.report:
        print(f"{'tensor':<56} {'shape':>14} {'rel. error':>10} {'SNR dB':>7} {'max error':>10}")
        for t in q:
            snr = "exact" if t.snr_db is None else f"{t.snr_db:.1f}"
            print(f"{t.name:<56} {str(t.shape):>14} {t.relative_error:>10.4f} {snr:>7} {t.max_abs_error:>10.3g}")
    n = sum(int(np.prod(t.shape)) for t in q)
    mean = sum(t.relative_error or 0.0 for t in q) / max(len(q), 1)
    worst = max(q, key=lambda t: t.relative_error or 0.0, default=None)
    print(f"quantized {len(q)} of {len(r.tensors)} tensors ({n / 1e6:.2f} M weights) to int{args.bits}, "
          f"group {group or 'per-channel'}, {args.method}{' sym' if args.sym else ''} in {r.seconds:.2f} s "
          f"({r.weights_per_second / 1e6:.1f} M weights/s)")
    print(f"size {r.src_bytes / 1e6:.1f} MB -> {r.dst_bytes / 1e6:.1f} MB; mean relative error {mean:.4f}"
          + (f", worst {worst.relative_error:.4f} ({worst.name})" if worst else ""))
    print(f"written to {r.dst} (per-tensor figures in quantization_report.json)")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import activation_importance

    if os.path.lexists(args.out):
        raise FileExistsError(17, "the destination already exists (hanpack never overwrites)", args.out)
    text = None if args.text is None else Path(args.text).read_text(encoding="utf-8")
    t0 = time.perf_counter()
    import torch

    imp = activation_importance(args.model, text=text, samples=args.samples, seq_len=args.seq_len, seed=args.seed,
                                batch_size=args.batch_size, device=args.device, dtype=getattr(torch, args.dtype),
                                progress=not args.quiet)
    imp.save(args.out)
    src = imp.source
    print(f"{len(imp)} linear layers, {src['tokens']} tokens ({src['text']}) in {time.perf_counter() - t0:.1f} s; "
          f"written to {args.out}")
    return 0


def _cmd_eval_ppl(args: argparse.Namespace) -> int:
    from .evaluate import perplexity

    text = Path(args.text).read_text(encoding="utf-8")
    base = None
    for model in args.models:
        r = perplexity(model, text, separator=args.separator, window=args.window, stride=args.stride, max_tokens=args.max_tokens)
        rel = "" if base is None else f"  ({(r.ppl / base - 1) * 100:+.2f}% vs {args.models[0]})"
        base = r.ppl if base is None else base
        print(f"{model}: perplexity {r.ppl:.4f} on {r.n_tokens} tokens, {r.n_documents} documents{rel}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hanpack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"hanpack {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="tokenize the bundled Chinese sample and print throughput")
    d.add_argument("--model", help="a SentencePiece .model (default: the bundled demo tokenizer)")
    d.add_argument("--file", help="text to use instead of the bundled sample")
    d.add_argument("--show", type=int, default=4, help="lines to print with their tokens")
    d.add_argument("--mb", type=int, default=4, help="MB of text for the throughput figure")
    d.set_defaults(func=_cmd_demo)

    e = sub.add_parser("encode", help="print the ids (or pieces) of text")
    e.add_argument("text", nargs="?", help="text to encode (default: --file, else stdin lines)")
    e.add_argument("--model", help="a SentencePiece .model (default: the bundled demo tokenizer)")
    e.add_argument("--file", help="encode each line of this file")
    e.add_argument("--pieces", action="store_true", help="print pieces instead of ids")
    e.add_argument("--bos", action="store_true", help="prepend the BOS id")
    e.add_argument("--eos", action="store_true", help="append the EOS id")
    e.set_defaults(func=_cmd_encode)

    c = sub.add_parser("decode", help="print the text of ids")
    c.add_argument("ids", nargs="+", help="token ids")
    c.add_argument("--model", help="a SentencePiece .model (default: the bundled demo tokenizer)")
    c.set_defaults(func=_cmd_decode)

    g = sub.add_parser("segment", help="cut Chinese text into words, exactly like jieba")
    g.add_argument("text", nargs="?", help="text to cut (default: --file, else stdin lines)")
    g.add_argument("--file", help="cut each line of this file")
    g.add_argument("--dict", help="a dictionary in jieba's dict.txt format (default: the installed jieba's)")
    g.add_argument("--user-dict", action="append", default=[], metavar="FILE", help="a jieba user dictionary (repeatable)")
    g.add_argument("--no-hmm", action="store_true", help="no HMM for unknown words (jieba's HMM=False)")
    g.add_argument("--sep", default=" / ", help="separator printed between words")
    g.set_defaults(func=_cmd_segment)

    q = sub.add_parser("quantize", help="quantize a safetensors checkpoint into a new directory, or into a GGUF file")
    q.add_argument("src", help="checkpoint directory (sharded or not) or one .safetensors file")
    q.add_argument("dst", help="new output directory, or .gguf file with --format gguf (must not exist)")
    q.add_argument("--format", choices=["safetensors", "gguf"], default="safetensors",
                   help="gguf: a llama.cpp file of --type, tokenizer embedded (LLaMA models)")
    q.add_argument("--type", default=None, type=str.upper, metavar="FILE_TYPE",
                   help="GGUF file type: Q4_K_M (default), Q3_K_M, Q4_0, Q8_0, F16, ... (see hanpack.gguf.mixture.FILE_TYPES)")
    q.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 8])
    q.add_argument("--group-size", type=int, default=128, help="a multiple of 32; 0 for per-channel")
    q.add_argument("--method", default="hqq", choices=["rtn", "mse", "hqq", "learned"],
                   help="learned: fitted to the model's outputs with torch (hanpack.learned; minutes for small models on CPU)")
    q.add_argument("--sym", action="store_true", help="symmetric codes (default asymmetric)")
    q.add_argument("--include", action="append", default=[], metavar="PATTERN", help="quantize only matching tensors (repeatable)")
    q.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="also leave matching tensors unquantized (repeatable)")
    q.add_argument("--no-default-exclude", action="store_true", help="quantize embeddings, lm_head and norms too when 2-D")
    q.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("--report", action="store_true", help="print each tensor's relative error, SNR and largest error")
    q.add_argument("--importance", metavar="FILE",
                   help="per-input error weights from 'hanpack calibrate' (--method mse; with --format gguf, llama.cpp's imatrix)")
    lq = q.add_argument_group("--method learned")
    lq.add_argument("--steps", type=int, help="Adam steps (default 1500)")
    lq.add_argument("--samples", type=int, help="sequences the model samples from BOS (default 1024)")
    lq.add_argument("--seq-len", type=int, help="tokens per sequence (default 256)")
    lq.add_argument("--batch-size", type=int, help="sequences per step (default 8)")
    lq.add_argument("--lr", type=float, help="learning rate, decaying linearly to 0 (default 1e-3)")
    lq.add_argument("--seed", type=int, help="sampling and batching seed (default 0)")
    lq.add_argument("--text", help="UTF-8 text to learn on instead of the model's own samples")
    lq.add_argument("--device", help="torch device (default cpu)")
    q.set_defaults(func=_cmd_quantize)

    k = sub.add_parser("calibrate", help="activation statistics (E[x^2] per input) of a causal LM's linear layers, for --importance")
    k.add_argument("model", help="checkpoint directory (transformers, on --device)")
    k.add_argument("out", help="new .safetensors file")
    k.add_argument("--text", help="UTF-8 text to calibrate on (default: text the model samples itself from BOS)")
    k.add_argument("--samples", type=int, default=32, help="sequences (default 32)")
    k.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    k.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    k.add_argument("--batch-size", type=int, default=8)
    k.add_argument("--device", default="cpu", help="torch device (default cpu)")
    k.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="the model's dtype while calibrating (bfloat16 halves the memory)")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=_cmd_calibrate)

    v = sub.add_parser("eval-ppl", help="perplexity of checkpoints on a text (transformers, CPU)")
    v.add_argument("models", nargs="+", help="checkpoint directories; the first is the baseline")
    v.add_argument("--text", required=True, help="UTF-8 text file")
    v.add_argument("--separator", help="a line that separates documents (each scored from BOS)")
    v.add_argument("--window", type=int, help="tokens per window (default: max_position_embeddings)")
    v.add_argument("--stride", type=int, help="window step (default: half the window)")
    v.add_argument("--max-tokens", type=int, help="score only the first N tokens of each document")
    v.set_defaults(func=_cmd_eval_ppl)

    t = sub.add_parser("tokenize", help="tokenize .txt/.jsonl(.gz/.zst)/.parquet files into token shards (resumable)")
    t.add_argument("inputs", nargs="+", help="input files, read in this order")
    t.add_argument("--model", help="tokenizer file: .model, tokenizer.json or tiktoken ranks (default: the demo tokenizer)")
    t.add_argument("--out", required=True, help="output folder (run again into it to resume)")
    t.add_argument("--text-field", default="text", help="JSON field / parquet column of the text")
    t.add_argument("--bos", action="store_true", help="start each document with BOS")
    t.add_argument("--eos", action="store_true", help="end each document with EOS")
    t.add_argument("--dtype", default="auto", choices=["auto", "uint16", "uint32"])
    t.add_argument("--shard-tokens", type=int, default=100_000_000, help="a shard ends after the document that reaches this many tokens")
    t.add_argument("--threads", type=int, default=None, help="encoding threads (default: all cores)")
    t.add_argument("--on-error", default="stop", choices=["stop", "skip"],
                   help="a bad record (invalid UTF-8 or JSON, no text field, unreadable file): stop, or count it and go on")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_tokenize)

    add_vocab_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (HanpackError, OSError, ImportError) as e:
        print(f"hanpack: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
