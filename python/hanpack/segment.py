"""Chinese word segmentation, token for token like jieba 0.42 (``jieba.cut(text,
HMM=...)``, accurate mode), in Rust with the GIL released and batches on all cores.

    >>> from hanpack.segment import Segmenter  # doctest: +SKIP
    >>> seg = Segmenter.from_jieba()            # jieba's dict.txt and HMM, if jieba is installed
    >>> seg.cut("我来到北京清华大学")             # doctest: +SKIP
    ['我', '来到', '北京', '清华大学']

A dictionary is jieba's ``dict.txt`` format (``word freq [tag]`` per line); the HMM that
guesses unknown words is jieba's ``finalseg`` tables, given as the three dicts
``(start_P, trans_P, emit_P)``. hanpack ships neither: :meth:`Segmenter.from_jieba` takes
both from an installed ``jieba`` package (plain Python modules, no pickle), and
:meth:`Segmenter.from_file` takes any dictionary file.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, final

from . import _core
from .exceptions import InvalidArgumentError

__all__ = ["Segmenter", "segment", "jieba_hmm", "HmmTables"]

PathLike = Union[str, "os.PathLike[str]"]
#: jieba's ``finalseg`` model: ``start_P``, ``trans_P`` and ``emit_P`` keyed by state.
HmmTables = Tuple[Dict[str, float], Dict[str, Dict[str, float]], Dict[str, Dict[str, float]]]


def jieba_hmm() -> HmmTables:
    """The HMM tables of the installed ``jieba`` package."""
    try:
        from jieba.finalseg import prob_emit, prob_start, prob_trans  # type: ignore[import-untyped]
    except ImportError as e:
        raise ImportError(f"the HMM tables come from the jieba package, which cannot be imported ({e}); pip install jieba") from e
    return prob_start.P, prob_trans.P, prob_emit.P


@final
class Segmenter:
    """A jieba dictionary and, optionally, its HMM. Immutable and picklable.

    >>> seg = Segmenter.from_text("我们 100 r\\n喜欢 50 v\\n")
    >>> seg.cut("我们喜欢abc", hmm=False)
    ['我们', '喜欢', 'abc']
    """

    __slots__ = ("_core", "_text", "_origin", "_hmm", "_user")
    _core: Any
    _text: str
    _origin: str
    _hmm: Optional[HmmTables]
    _user: List[Tuple[str, str]]

    def __init__(
        self, text: str, *, origin: str = "<text>", hmm: Optional[HmmTables] = None, user_dicts: Sequence[Tuple[str, str]] = ()
    ) -> None:
        user = [(str(t), str(o)) for t, o in user_dicts]
        set_ = object.__setattr__
        set_(self, "_core", _core.JiebaSegmenter(text, origin, hmm, user))
        set_(self, "_text", text)
        set_(self, "_origin", origin)
        set_(self, "_hmm", hmm)
        set_(self, "_user", user)

    @classmethod
    def from_text(cls, text: str, *, hmm: Optional[HmmTables] = None, user_dicts: Sequence[str] = ()) -> "Segmenter":
        """A dictionary given as text; ``user_dicts`` are texts of user dictionaries."""
        return cls(text, hmm=hmm, user_dicts=[(u, f"<user dict {i}>") for i, u in enumerate(user_dicts)])

    @classmethod
    def from_file(cls, path: PathLike, *, hmm: Optional[HmmTables] = None, user_dicts: Sequence[PathLike] = ()) -> "Segmenter":
        """A dictionary file in jieba's format (UTF-8), with ``hmm`` tables or none, and
        user dictionaries (``word [freq] [tag]`` per line, jieba's ``load_userdict``:
        applied in order; a word without a frequency gets jieba's ``suggest_freq``, a
        word of frequency 0 is never produced whole)."""
        user = [(_read_utf8(u), os.fspath(u)) for u in user_dicts]
        return cls(_read_utf8(path), origin=os.fspath(path), hmm=hmm, user_dicts=user)

    @classmethod
    def from_jieba(cls, dictionary: Optional[PathLike] = None, *, user_dicts: Sequence[PathLike] = ()) -> "Segmenter":
        """The installed jieba package's ``dict.txt`` (or ``dictionary``) and its HMM."""
        if dictionary is None:
            try:
                import jieba  # type: ignore[import-untyped]
            except ImportError as e:
                raise ImportError(f"Segmenter.from_jieba needs the jieba package ({e}); pip install jieba, or use Segmenter.from_file") from e
            dictionary = os.path.join(os.path.dirname(jieba.__file__), "dict.txt")
        return cls.from_file(dictionary, hmm=jieba_hmm(), user_dicts=user_dicts)

    @property
    def has_hmm(self) -> bool:
        return bool(self._core.has_hmm())

    def cut(self, text: str, *, hmm: bool = True) -> List[str]:
        """The words of ``text``, like ``list(jieba.cut(text, HMM=hmm))``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        return self._core.cut(text, hmm)  # a new list already: no copy

    def cut_batch(self, texts: Sequence[str], *, hmm: bool = True, num_threads: Optional[int] = None) -> List[List[str]]:
        """:meth:`cut` of each text, on ``num_threads`` threads (default: all cores)."""
        return list(self._core.cut_batch(texts if isinstance(texts, list) else list(texts), hmm, num_threads))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Segmenter is immutable (cannot set {name!r})")

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_rebuild, (self._text, self._origin, self._hmm, self._user))

    def __repr__(self) -> str:
        return f"Segmenter({self._origin!r}, hmm={self.has_hmm})"


def _rebuild(text: str, origin: str, hmm: Optional[HmmTables], user: List[Tuple[str, str]]) -> Segmenter:
    return Segmenter(text, origin=origin, hmm=hmm, user_dicts=user)


def _read_utf8(path: PathLike) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{os.fspath(path)}: not UTF-8 ({e})") from None


_DEFAULT: Optional[Segmenter] = None


def segment(text: Union[str, Sequence[str]], *, hmm: bool = True, num_threads: Optional[int] = None) -> Union[List[str], List[List[str]]]:
    """Words of ``text`` (a str) or of each text of a list, with jieba's dictionary and
    HMM from the installed jieba package (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Segmenter.from_jieba()
    if isinstance(text, str):
        return _DEFAULT.cut(text, hmm=hmm)
    return _DEFAULT.cut_batch(text, hmm=hmm, num_threads=num_threads)
