"""How well tokenizers serve Chinese: compression per script and genre, character
coverage, dead and duplicate pieces; as a table and as a PNG chart side by side.

Figures, per tokenizer:

- chars/token and bytes/token for each genre of text given (for example Simplified,
  Traditional, mixed, English, code); higher is better;
- coverage of common characters (by default the 3,500 most frequent characters of
  jieba's dictionary, standing in for the 3,500-character 常用字 list) and of
  Traditional-only characters (those OpenCC's ``t2s`` changes): the share that is one
  token by itself;
- unreachable pieces (SentencePiece BPE: pieces their own text does not produce) and
  duplicate pieces (the same text under two ids).

    >>> from hanpack.vocab.report import report, format_table   # doctest: +SKIP
    >>> rows = report({"llama": "llama/tokenizer.model"}, {"Simplified": ["今天天气很好"]})  # doctest: +SKIP
    >>> print(format_table(rows))                               # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from .. import _core
from ..exceptions import InvalidArgumentError
from ..tokenizer import Tokenizer

__all__ = [
    "GenreFigures", "TokenizerReport", "report", "format_table", "plot", "common_characters", "traditional_characters",
    "genre_of", "corpus_texts",
]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class GenreFigures:
    chars: int
    bytes: int
    tokens: int

    @property
    def chars_per_token(self) -> float:
        return self.chars / self.tokens if self.tokens else 0.0

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0


@dataclass(frozen=True)
class TokenizerReport:
    name: str
    vocab_size: int
    genres: Dict[str, GenreFigures]
    #: Share of the common characters that are one token by themselves (None: none given).
    common_coverage: Optional[float]
    traditional_coverage: Optional[float]
    #: Dead pieces (SentencePiece BPE only; None for other kinds).
    unreachable: Optional[int]
    duplicates: int


def genre_of(path: PathLike) -> str:
    """The genre of a corpus file from its name (the ``../shared`` naming: ``zh-hans_…``,
    ``zh-hant_…``, ``mixed_…``, ``en_…``); ``code`` for source files."""
    name = Path(path).name
    for prefix, genre in (("zh-hans", "Simplified"), ("zh-hant", "Traditional"), ("mixed", "mixed"), ("en", "English")):
        if name.startswith(prefix):
            return genre
    if Path(path).suffix in (".py", ".rs", ".c", ".cc", ".cpp", ".h", ".js", ".ts", ".go", ".java", ".sh", ".cu"):
        return "code"
    return "other"


def common_characters(dict_path: Optional[PathLike] = None, n: int = 3500) -> List[str]:
    """The ``n`` Han characters that jieba's ``dict.txt`` (the installed jieba's, or
    ``dict_path``) weighs most (summing the frequencies of the words they occur in)."""
    if dict_path is None:
        try:
            import jieba  # type: ignore[import-untyped]
        except ImportError as e:
            raise ImportError(f"common_characters() reads jieba's dict.txt; pass dict_path or pip install jieba ({e})") from e
        dict_path = Path(jieba.__file__).parent / "dict.txt"
    weight: Counter = Counter()
    with open(dict_path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                for c in parts[0]:
                    if "\u4e00" <= c <= "\u9fff":
                        weight[c] += int(parts[1])
    return [c for c, _ in weight.most_common(n)]


def traditional_characters() -> List[str]:
    """CJK unified ideographs that OpenCC's ``t2s`` changes: Traditional-only forms."""
    from .scripts import opencc_converter

    t2s = opencc_converter("t2s")
    chars = [chr(u) for u in range(0x4E00, 0xA000)]
    converted = t2s("".join(chars))
    if len(converted) != len(chars):  # t2s is character for character; check it stays so
        return [c for c in chars if t2s(c) != c]
    return [c for c, s in zip(chars, converted) if c != s]


def _single_token(tok: Tokenizer, c: str) -> bool:
    if tok.model_type in ("bpe", "unigram"):
        i = tok.piece_to_id(c)
        return i != tok.unk_id and tok.piece_type(i) in ("NORMAL", "USER_DEFINED")
    return len(tok.encode(c)) == 1


def _load(t: Union[PathLike, Tokenizer]) -> Tokenizer:
    return t if isinstance(t, Tokenizer) else Tokenizer.from_file(t)


def report(
    tokenizers: Mapping[str, Union[PathLike, Tokenizer]],
    texts: Mapping[str, Sequence[str]],
    *,
    common: Sequence[str] = (),
    traditional: Sequence[str] = (),
    num_threads: Optional[int] = None,
) -> List[TokenizerReport]:
    """Figures for each tokenizer (name → path or Tokenizer) on each genre's texts
    (genre → lines). ``common`` and ``traditional`` are the character sets whose
    coverage is reported (see :func:`common_characters`, :func:`traditional_characters`)."""
    if not tokenizers:
        raise InvalidArgumentError("report needs at least one tokenizer")
    out = []
    for name, t in tokenizers.items():
        tok = _load(t)
        genres = {}
        for genre, lines in texts.items():
            lines = [s for s in lines if s]
            # Text is text here: special-token strings in a corpus are encoded as plain
            # text (sentencepiece's behaviour), not rejected (tiktoken's default).
            counts = tok.encode_batch(lines, disallowed_special=(), num_threads=num_threads)
            genres[genre] = GenreFigures(
                chars=sum(len(s) for s in lines),
                bytes=sum(len(s.encode("utf-8")) for s in lines),
                tokens=sum(len(ids) for ids in counts),
            )
        pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
        dup = sum(n - 1 for n in Counter(pieces).values() if n > 1)
        unreachable = None
        if tok.model_type == "bpe":
            unreachable = len(_core.spm_unreachable(tok.to_bytes(), name))
        out.append(TokenizerReport(
            name=name,
            vocab_size=tok.vocab_size,
            genres=genres,
            common_coverage=(sum(_single_token(tok, c) for c in common) / len(common)) if common else None,
            traditional_coverage=(sum(_single_token(tok, c) for c in traditional) / len(traditional)) if traditional else None,
            unreachable=unreachable,
            duplicates=dup,
        ))
    return out


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_table(rows: Sequence[TokenizerReport]) -> str:
    """A plain-text table: one row per tokenizer; chars/token (bytes/token) per genre."""
    genres: List[str] = []
    for r in rows:
        genres += [g for g in r.genres if g not in genres]
    head = ["tokenizer", "vocab"] + [f"{g} c/t (b/t)" for g in genres] + ["common", "trad.", "dead", "dup."]
    body = []
    for r in rows:
        cells = [r.name, str(r.vocab_size)]
        for g in genres:
            f = r.genres.get(g)
            cells.append("-" if f is None else f"{f.chars_per_token:.3f} ({f.bytes_per_token:.2f})")
        cells += [_pct(r.common_coverage), _pct(r.traditional_coverage),
                  "-" if r.unreachable is None else str(r.unreachable), str(r.duplicates)]
        body.append(cells)
    widths = [max(len(row[i]) for row in [head] + body) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def plot(rows: Sequence[TokenizerReport], path: PathLike, *, title: str = "chars per token (higher is better)") -> Path:
    """A grouped bar chart of chars/token per genre, one bar per tokenizer, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(f"the chart needs matplotlib ({e}); pip install matplotlib") from e
    genres: List[str] = []
    for r in rows:
        genres += [g for g in r.genres if g not in genres]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(genres) + 2), 4.2))
    width = 0.8 / max(len(rows), 1)
    for k, r in enumerate(rows):
        xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(genres))]
        ys = [r.genres[g].chars_per_token if g in r.genres else 0.0 for g in genres]
        bars = ax.bar(xs, ys, width, label=r.name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(genres)), genres)
    ax.set_ylabel("chars / token")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def corpus_texts(paths: Sequence[PathLike], *, max_lines_per_file: Optional[int] = None) -> Dict[str, List[str]]:
    """genre → lines of the given files (``.txt`` lines, ``.jsonl`` string values,
    source files line by line), by :func:`genre_of`."""
    from .train import read_texts

    texts: Dict[str, List[str]] = {}
    for p in paths:
        lines = [s for s in read_texts(p) if s.strip()]
        if max_lines_per_file is not None:
            lines = lines[: max_lines_per_file]
        texts.setdefault(genre_of(p), []).extend(lines)
    return texts
