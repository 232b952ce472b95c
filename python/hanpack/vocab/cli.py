"""``hanpack vocab train | extend | report``: the vocabulary commands of the CLI.

    hanpack vocab train zh.txt tw.txt=0.3 --vocab-size 60000 --out zh-bpe
    hanpack vocab extend llama/tokenizer.model llama-zh --from-model zh-bpe/tokenizer.model --add 20000 --variants s2twp --variants-limit 8000
    hanpack vocab report llama/tokenizer.model llama-zh --corpus zh-hans_news.txt en_wiki.txt --png chart.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Tuple

from ..exceptions import InvalidArgumentError

__all__ = ["add_vocab_parser"]


def _weighted(spec: str) -> Tuple[str, float]:
    """``path`` or ``path=weight``."""
    path, eq, weight = spec.rpartition("=")
    if eq and Path(path).exists():
        try:
            return path, float(weight)
        except ValueError:
            pass
    return spec, 1.0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..segment import Segmenter
    from .train import train

    seg = None
    if args.dict:
        seg = Segmenter.from_file(args.dict)
    elif args.jieba:
        seg = Segmenter.from_jieba()
    v = train(
        [_weighted(s) for s in args.inputs], vocab_size=args.vocab_size, character_coverage=args.character_coverage,
        max_piece_chars=args.max_piece_chars, min_frequency=args.min_frequency, split_digits=not args.no_split_digits,
        segmenter=seg, whole_words=args.whole_words, max_units=args.max_units, num_threads=args.threads,
        progress=not args.quiet,
    )
    v.save(args.out)
    print(f"trained {v.vocab_size} pieces ({v.alphabet} characters, {v.merges} merges, {v.whole_words} whole words, "
          f"{v.intermediates} intermediates) from {v.lines} lines / {v.bytes / 1e6:.1f} MB in {v.seconds:.1f} s "
          f"({v.distinct_units} distinct units); written to {args.out}")
    return 0


def _read_pieces(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n").split("\t")[0] for line in f if line.strip()]


def _cmd_extend(args: argparse.Namespace) -> int:
    from .extend import extend, extend_to_size
    from .scripts import opencc_converter, with_script_variants
    from .train import model_pieces
    from ..tokenizer import Tokenizer

    pieces: List[str] = []
    if args.pieces:
        pieces += _read_pieces(args.pieces)
    if args.from_model:
        pieces += model_pieces(Tokenizer.from_file(args.from_model), cjk_only=True)
    if not pieces:
        raise InvalidArgumentError("give --pieces FILE and/or --from-model MODEL (the pieces to add)")
    if args.variants:
        pieces = with_script_variants(pieces, opencc_converter(args.variants), limit=args.variants_limit)
    options = dict(placement=args.placement, max_piece_chars=args.max_piece_chars, repair=not args.no_repair)
    t0 = time.perf_counter()
    ext = extend_to_size(args.base, pieces, args.add, **options) if args.add else extend(args.base, pieces, **options)
    ext.save(args.out)
    print(f"{ext.base_size} -> {ext.vocab_size} pieces: {ext.count('requested')} requested, {ext.count('character')} "
          f"characters, {ext.count('intermediate')} intermediates; {len(ext.skipped)} skipped; "
          f"{len(ext.unreachable)} unreachable; {time.perf_counter() - t0:.1f} s; written to {args.out}")
    return 0 if not ext.unreachable else 1


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import common_characters, corpus_texts, format_table, plot, report, traditional_characters

    texts = corpus_texts(args.corpus, max_lines_per_file=args.max_lines)
    common = common_characters(args.common_dict) if not args.no_coverage else []
    trad = traditional_characters() if not args.no_coverage else []
    names = {}
    for t in args.tokenizers:
        name = Path(t).parent.name if Path(t).is_file() else Path(t).name
        while name in names:
            name += "'"
        names[name] = t
    rows = report(names, texts, common=common, traditional=trad, num_threads=args.threads)
    print(format_table(rows))
    if args.png:
        print(f"chart written to {plot(rows, args.png)}")
    return 0


def add_vocab_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    v = sub.add_parser("vocab", help="train, extend and compare Chinese vocabularies")
    vs = v.add_subparsers(dest="vocab_command", required=True)

    t = vs.add_parser("train", help="train a SentencePiece-compatible BPE vocabulary")
    t.add_argument("inputs", nargs="+", help="text or jsonl files; FILE=WEIGHT weighs a file (script balancing)")
    t.add_argument("--out", required=True, help="new folder for tokenizer.model and the transformers files")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--character-coverage", type=float, default=0.9995)
    t.add_argument("--max-piece-chars", type=int, default=16)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--no-split-digits", action="store_true")
    t.add_argument("--jieba", action="store_true", help="keep merges inside jieba words (installed jieba's dict)")
    t.add_argument("--dict", help="a jieba dict.txt for word boundaries (implies --jieba)")
    t.add_argument("--whole-words", type=int, default=0, help="add this many frequent words as whole pieces")
    t.add_argument("--max-units", type=int, default=20_000_000, help="bound on distinct units held while counting")
    t.add_argument("--threads", type=int)
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_cmd_train)

    e = vs.add_parser("extend", help="append Chinese pieces to a SentencePiece BPE model, all reachable")
    e.add_argument("base", help="the base tokenizer.model (LLaMA-style BPE)")
    e.add_argument("out", help="new folder for the extended tokenizer files")
    e.add_argument("--pieces", help="a file with one piece per line (first column), most important first")
    e.add_argument("--from-model", help="take the CJK pieces of this model, highest score first")
    e.add_argument("--add", type=int, help="add at most this many pieces in all (longest prefix that fits)")
    e.add_argument("--variants", metavar="OPENCC_CONFIG", help="follow pieces with their OpenCC conversion, e.g. s2twp")
    e.add_argument("--variants-limit", type=int, help="only for the first N pieces")
    e.add_argument("--placement", choices=("above", "below"), default="above")
    e.add_argument("--max-piece-chars", type=int, default=16)
    e.add_argument("--no-repair", action="store_true", help="skip dead pieces instead of adding intermediates")
    e.set_defaults(func=_cmd_extend)

    r = vs.add_parser("report", help="compare tokenizers on Chinese: compression, coverage, dead pieces")
    r.add_argument("tokenizers", nargs="+", help="tokenizer files or folders")
    r.add_argument("--corpus", nargs="+", required=True, help="files; genre from the name (zh-hans_, zh-hant_, mixed_, en_, source code)")
    r.add_argument("--max-lines", type=int, help="lines per file")
    r.add_argument("--png", help="write a bar chart here")
    r.add_argument("--common-dict", help="jieba dict.txt for the common characters (default: installed jieba's)")
    r.add_argument("--no-coverage", action="store_true", help="skip the character coverage columns")
    r.add_argument("--threads", type=int)
    r.set_defaults(func=_cmd_report)
