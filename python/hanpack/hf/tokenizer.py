"""A transformers v5 tokenizer backed by :class:`hanpack.Tokenizer`.

``HanpackTokenizer`` subclasses transformers' ``PythonBackend`` (its base for tokenizers
not built on HF tokenizers), so padding, truncation, attention masks, ``return_tensors``,
chat templates, ``save_pretrained`` and added tokens are transformers' own code. What
hanpack replaces is the text → ids step (whole texts, and whole batches on all cores, in
Rust) and ids → text. For a SentencePiece model the ids are sentencepiece's, also where
transformers' converted ``LlamaTokenizerFast`` differs (it splits '的大' into '的', '大'
on 28% of Chinese-LLaMA lines, and runs of spaces on LLaMA); for ``tokenizer.json`` and
tiktoken files they are HF tokenizers' / tiktoken's.

Special tokens written in the text (``"<s>"``, ``"<|im_end|>"``, and tokens added with
``add_tokens``) are recognised, as in transformers (chat templates rely on it), unless
``split_special_tokens=True`` (per call, or when loading); the text between them is
encoded piece by piece (for SentencePiece each piece gets the dummy prefix, as in
separate ``sp.encode`` calls). sentencepiece itself never parses special tokens, so for
its ids on any text, a corpus line that happens to contain ``"<s>"`` included, load with
``split_special_tokens=True``; HF tokenizers and tiktoken (``allowed_special="all"``)
parse them, as the default here does. ``return_offsets_mapping`` is not
available yet.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from transformers import AddedToken
from transformers.tokenization_python import PythonBackend
from transformers.tokenization_utils_base import BatchEncoding, PaddingStrategy, TruncationStrategy

from .._atomic import new_directory
from ..exceptions import InvalidArgumentError, UnsupportedTokenizerError
from ..tokenizer import Tokenizer

__all__ = ["HanpackTokenizer", "convert_tokenizer", "register"]

PathLike = Union[str, "os.PathLike[str]"]

#: The module that ``auto_map`` names in saved folders, for ``trust_remote_code=True``.
SHIM_MODULE = "tokenization_hanpack"
SHIM_SOURCE = (
    '"""Loads hanpack\'s tokenizer class (pip install hanpack); written by hanpack."""\n'
    "from hanpack.hf import HanpackTokenizer  # noqa: F401\n"
)
# tokenizer_config.json keys that convert_tokenizer carries over from the source folder.
_CARRIED = (
    "bos_token", "eos_token", "unk_token", "pad_token", "additional_special_tokens", "extra_special_tokens",
    "chat_template", "model_max_length", "padding_side", "truncation_side", "add_bos_token", "add_eos_token",
    "clean_up_tokenization_spaces",
)


def _load(vocab_file: Optional[str], tokenizer_file: Optional[str]) -> Tuple[Tokenizer, Dict[str, bytes]]:
    """The hanpack tokenizer and the bytes of the file it came from (saved as they are).

    ``tokenizer.json`` wins, except a SentencePiece-style one next to a
    ``tokenizer.model`` (LLaMA folders), where the model is the reference."""
    if tokenizer_file:
        try:
            tok = Tokenizer.from_file(tokenizer_file)
            return tok, {"tokenizer.json": Path(tokenizer_file).read_bytes()}
        except UnsupportedTokenizerError:
            if not vocab_file:
                raise
    if vocab_file:
        return Tokenizer.from_file(vocab_file), {"tokenizer.model": Path(vocab_file).read_bytes()}
    raise InvalidArgumentError("HanpackTokenizer needs vocab_file (tokenizer.model) or tokenizer_file (tokenizer.json)")


class HanpackTokenizer(PythonBackend):
    """transformers tokenizer whose encoding and decoding run in hanpack.

    >>> import hanpack.hf                                             # doctest: +SKIP
    >>> tok = hanpack.hf.HanpackTokenizer(vocab_file="tokenizer.model")  # doctest: +SKIP
    >>> tok(["今天天气很好", "Hello"], padding=True, return_tensors="np")  # doctest: +SKIP
    """

    vocab_files_names = {"vocab_file": "tokenizer.model", "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: Optional[str] = None,
        tokenizer_file: Optional[str] = None,
        add_bos_token: Optional[bool] = None,
        add_eos_token: bool = False,
        clean_up_tokenization_spaces: bool = False,
        **kwargs: Any,
    ) -> None:
        hp, files = _load(vocab_file, tokenizer_file)
        self._hp = hp
        self._files = files
        self._vocab: Optional[Dict[str, int]] = None
        spm = hp.model_type != "bbpe"
        if spm:  # the model names its own specials; tokenizer_config.json may override them
            for name, i in (("bos_token", hp.bos_id), ("eos_token", hp.eos_id), ("unk_token", hp.unk_id),
                            ("pad_token", hp.pad_id)):
                if i >= 0:
                    kwargs.setdefault(name, hp.id_to_piece(i))
        else:  # the file's special tokens (Qwen2's <|im_end|>, ...) are transformers' added tokens
            decoder = dict(kwargs.pop("added_tokens_decoder", None) or {})
            for text, i in hp.special_tokens.items():
                decoder.setdefault(i, AddedToken(text, special=True, normalized=False))
            kwargs["added_tokens_decoder"] = decoder
        # LLaMA's convention for SentencePiece models: BOS, no EOS.
        self.add_bos_token = bool(spm and hp.bos_id >= 0) if add_bos_token is None else bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        self._split_pattern: Optional[re.Pattern[str]] = None
        super().__init__(
            vocab_file=vocab_file,
            tokenizer_file=tokenizer_file,
            add_bos_token=self.add_bos_token,
            add_eos_token=self.add_eos_token,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            **kwargs,
        )

    def __getstate__(self) -> Dict[str, Any]:
        # The vocabulary cache (150k entries for Qwen2) and the compiled pattern are
        # rebuilt on demand; pickles go to every datasets/multiprocessing worker.
        state = self.__dict__.copy()
        state["_vocab"] = None
        state["_split_pattern"] = None
        state.pop("_split_key", None)
        return state

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoTokenizer") -> None:
        # transformers calls this on classes loaded through auto_map; its default would
        # make save_pretrained copy this module's source next to the files, where it cannot
        # be imported. Saved folders get their own two-line shim instead.
        return None

    # -- the hanpack model ------------------------------------------------------

    @property
    def hanpack_tokenizer(self) -> Tokenizer:
        """The :class:`hanpack.Tokenizer` doing the work."""
        return self._hp

    @property
    def vocab_size(self) -> int:
        return self._hp.vocab_size

    def get_vocab(self) -> Dict[str, int]:
        if self._vocab is None:
            hp = self._hp
            self._vocab = {hp.id_to_piece(i): i for i in range(hp.vocab_size)}
        vocab = dict(self._vocab)
        vocab.update(self._added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs: Any) -> List[str]:
        return self._hp.encode_as_pieces(text)

    def _convert_token_to_id(self, token: str) -> int:
        i = self._hp.piece_to_id(token)
        if i < 0 or (i == self._hp.unk_id and self._hp.id_to_piece(i) != token):
            return self.unk_token_id if self.unk_token_id is not None else -1
        return i

    def _convert_id_to_token(self, index: int) -> str:
        return self._hp.id_to_piece(int(index))

    def convert_tokens_to_string(self, tokens: List[str]) -> str:
        out: List[str] = []
        run: List[int] = []
        for t in tokens:
            if t in self._added_tokens_encoder and self._added_tokens_encoder[t] >= self._hp.vocab_size:
                if run:
                    out.append(self._hp.decode(run))
                    run = []
                out.append(t)
            else:
                run.append(self._hp.piece_to_id(t))
        if run:
            out.append(self._hp.decode(run))
        return "".join(out)

    # -- special tokens ---------------------------------------------------------

    def _ends(self) -> Tuple[List[int], List[int]]:
        bos = [self.bos_token_id] if self.add_bos_token and self.bos_token_id is not None else []
        eos = [self.eos_token_id] if self.add_eos_token and self.eos_token_id is not None else []
        return bos, eos

    def build_inputs_with_special_tokens(self, token_ids_0: List[int], token_ids_1: Optional[List[int]] = None) -> List[int]:
        bos, eos = self._ends()
        out = bos + list(token_ids_0) + eos
        if token_ids_1 is not None:
            out += bos + list(token_ids_1) + eos
        return out

    def get_special_tokens_mask(
        self, token_ids_0: List[int], token_ids_1: Optional[List[int]] = None, already_has_special_tokens: bool = False
    ) -> List[int]:
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in list(token_ids_0) + list(token_ids_1 or [])]
        bos, eos = self._ends()
        mask = [1] * len(bos) + [0] * len(token_ids_0) + [1] * len(eos)
        if token_ids_1 is not None:
            mask += [1] * len(bos) + [0] * len(token_ids_1) + [1] * len(eos)
        return mask

    def create_token_type_ids_from_sequences(
        self, token_ids_0: List[int], token_ids_1: Optional[List[int]] = None
    ) -> List[int]:
        bos, eos = self._ends()
        out = [0] * (len(bos) + len(token_ids_0) + len(eos))
        if token_ids_1 is not None:
            out += [1] * (len(bos) + len(token_ids_1) + len(eos))
        return out

    # -- text -> ids ------------------------------------------------------------

    def _special_pattern(self) -> Optional[re.Pattern[str]]:
        """A regex matching any special or added token's text, longest first."""
        tokens = set(self._added_tokens_encoder) | {t for t in self.all_special_tokens if t}
        if not tokens:
            return None
        key = tuple(sorted(tokens, key=lambda t: (-len(t), t)))
        cached = getattr(self, "_split_key", None)
        if self._split_pattern is None or cached != key:
            self._split_pattern = re.compile("|".join(map(re.escape, key)))
            self._split_key = key
        return self._split_pattern

    def _plain(self, texts: List[str], add_bos: bool = False) -> List[List[int]]:
        """Ids of texts taken as plain text (special tokens' strings too), in parallel."""
        if self._hp.model_type == "bbpe":
            return self._hp.encode_batch(texts, add_bos=add_bos, allowed_special=(), disallowed_special=())
        return self._hp.encode_batch(texts, add_bos=add_bos)

    def _bos_in_core(self) -> bool:
        """Whether hanpack's own ``add_bos`` gives exactly this tokenizer's ends (BOS only,
        the same id), so a batch can get its BOS while it is encoded: adding it in Python
        afterwards copied every row twice, a third of a batch call."""
        bos, eos = self._ends()
        return not eos and bos == [self._hp.bos_id]

    def encode_texts(self, texts: Sequence[str], *, split_special_tokens: bool = False,
                     add_bos: bool = False) -> List[List[int]]:
        """Ids of each text without EOS, and without BOS unless ``add_bos`` (hanpack's
        BOS id first), on all cores: exactly the hanpack (so sentencepiece / HF tokenizers
        / tiktoken) ids, special tokens in the text recognised unless
        ``split_special_tokens``."""
        texts = list(texts)
        pattern = None if split_special_tokens else self._special_pattern()
        if pattern is None:
            return self._plain(texts, add_bos)
        marked = [i for i, t in enumerate(texts) if pattern.search(t)]
        if not marked:
            return self._plain(texts, add_bos)
        plain = list(texts)
        for i in marked:
            plain[i] = ""  # searched once above; encoded piece by piece below
        out = self._plain(plain, add_bos)
        for i in marked:
            ids = self._with_specials(texts[i], pattern)
            out[i] = [self._hp.bos_id, *ids] if add_bos else ids
        return out

    def _with_specials(self, text: str, pattern: "re.Pattern[str]") -> List[int]:
        parts: List[Union[str, int]] = []
        at = 0
        for m in pattern.finditer(text):
            if m.start() > at:
                parts.append(text[at:m.start()])
            parts.append(self.convert_tokens_to_ids(m.group()))
            at = m.end()
        if at < len(text):
            parts.append(text[at:])
        chunks = [p for p in parts if isinstance(p, str)]
        encoded = iter(self._plain(chunks))
        ids: List[int] = []
        for p in parts:
            if isinstance(p, str):
                ids += next(encoded)
            else:
                ids.append(p)
        return ids

    def _encode_plus(  # type: ignore[override]
        self,
        text: Any,
        text_pair: Any = None,
        add_special_tokens: bool = True,
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        truncation_strategy: TruncationStrategy = TruncationStrategy.DO_NOT_TRUNCATE,
        max_length: Optional[int] = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: Optional[int] = None,
        padding_side: Optional[str] = None,
        return_tensors: Any = None,
        return_token_type_ids: Optional[bool] = None,
        return_attention_mask: Optional[bool] = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        split_special_tokens: bool = False,
        **kwargs: Any,
    ) -> BatchEncoding:
        if return_offsets_mapping:
            raise NotImplementedError("HanpackTokenizer does not return offsets yet (return_offsets_mapping=True)")
        common = dict(
            add_special_tokens=add_special_tokens, truncation=truncation_strategy.value, max_length=max_length,
            stride=stride, return_token_type_ids=return_token_type_ids,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask, return_length=return_length, verbose=verbose,
        )
        single = isinstance(text, str) and (text_pair is None or isinstance(text_pair, str))
        batch = (
            not is_split_into_words and isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)
            and (text_pair is None or (isinstance(text_pair, (list, tuple)) and len(text_pair) == len(text)
                                       and all(isinstance(t, str) for t in text_pair)))
        )
        if not (single and not is_split_into_words) and not batch:
            # Pre-tokenized words, ids, or (text, pair) tuples: transformers' own path,
            # which comes back here for each string.
            return super()._encode_plus(
                text, text_pair, padding_strategy=padding_strategy, pad_to_multiple_of=pad_to_multiple_of,
                padding_side=padding_side, return_tensors=return_tensors, return_attention_mask=return_attention_mask,
                is_split_into_words=is_split_into_words, split_special_tokens=split_special_tokens,
                truncation_strategy=truncation_strategy, **{k: v for k, v in common.items() if k != "truncation"},
                **kwargs,
            )
        texts = [text] if single else list(text)
        pairs = None if text_pair is None else ([text_pair] if single else list(text_pair))
        # The common batch (plain texts, BOS only, no truncation): BOS added while encoding.
        core_bos = (
            not single and pairs is None and add_special_tokens
            and truncation_strategy == TruncationStrategy.DO_NOT_TRUNCATE
            and self._simple(truncation_strategy, max_length, common) and self._bos_in_core()
        )
        ids = self.encode_texts(texts + (pairs or []), split_special_tokens=split_special_tokens, add_bos=core_bos)
        first, second = ids[: len(texts)], (ids[len(texts):] if pairs is not None else None)
        if single:
            return self.prepare_for_model(
                first[0], pair_ids=second[0] if second else None, padding=padding_strategy.value,
                pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side, return_tensors=return_tensors,
                prepend_batch_axis=True, return_attention_mask=return_attention_mask, **common,
            )
        if second is None and self._simple(truncation_strategy, max_length, common):
            rows = first if core_bos else self._with_ends(first, add_special_tokens, truncation_strategy, max_length)
            fast = self._pad_rows(rows, padding_strategy, max_length, pad_to_multiple_of, padding_side,
                                  return_attention_mask)
            if fast is not None:
                return BatchEncoding(fast, tensor_type=return_tensors)
            outputs: Dict[str, List[Any]] = {"input_ids": rows}
        else:
            outputs = {}
            for i, a in enumerate(first):
                one = self.prepare_for_model(
                    a, pair_ids=second[i] if second is not None else None, padding=PaddingStrategy.DO_NOT_PAD.value,
                    return_attention_mask=False, return_tensors=None, **common,
                )
                for key, value in one.items():
                    outputs.setdefault(key, []).append(value)
            if return_tensors and return_overflowing_tokens:
                outputs.pop("overflowing_tokens", None)
                outputs.pop("num_truncated_tokens", None)
        outputs = self.pad(
            outputs, padding=padding_strategy.value, max_length=max_length, pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side, return_attention_mask=return_attention_mask,
        )
        return BatchEncoding(outputs, tensor_type=return_tensors)

    @staticmethod
    def _simple(truncation: TruncationStrategy, max_length: Optional[int], common: Dict[str, Any]) -> bool:
        """True when a batch needs nothing from ``prepare_for_model`` but BOS/EOS and
        plain truncation (the common case, done here without a Python call per text)."""
        return not (
            common["return_overflowing_tokens"] or common["return_special_tokens_mask"] or common["return_length"]
            or common["return_token_type_ids"] or common["stride"]
            or (truncation != TruncationStrategy.DO_NOT_TRUNCATE and max_length is None)
            or truncation == TruncationStrategy.ONLY_SECOND
        )

    def _with_ends(self, rows: List[List[int]], add_special_tokens: bool, truncation: TruncationStrategy,
                   max_length: Optional[int]) -> List[List[int]]:
        bos, eos = self._ends() if add_special_tokens else ([], [])
        if truncation != TruncationStrategy.DO_NOT_TRUNCATE and max_length is not None:
            keep = max(0, max_length - len(bos) - len(eos))
            if self.truncation_side == "left":
                rows = [r[len(r) - keep:] if len(r) > keep else r for r in rows]
            else:
                rows = [r[:keep] if len(r) > keep else r for r in rows]
        if not bos and not eos:
            return rows
        return [bos + r + eos for r in rows]

    def _pad_rows(self, rows: List[List[int]], strategy: PaddingStrategy, max_length: Optional[int],
                  multiple: Optional[int], side: Optional[str], return_attention_mask: Optional[bool]
                  ) -> Optional[Dict[str, List[List[int]]]]:
        """``self.pad`` for plain id rows, without its Python work per row (it was most
        of a batch call's time). None where transformers' own checks should speak (no
        pad token)."""
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if strategy == PaddingStrategy.DO_NOT_PAD:
            out = {"input_ids": rows}
            if return_attention_mask:
                out["attention_mask"] = [[1] * len(r) for r in rows]
            return out
        if self.pad_token_id is None:
            return None
        target = max(map(len, rows), default=0) if strategy == PaddingStrategy.LONGEST else max_length
        if target is None:
            return None
        if multiple:
            target = -(-target // multiple) * multiple
        pad, left = self.pad_token_id, (side or self.padding_side) == "left"
        ids, mask = [], []
        for r in rows:
            n = max(0, target - len(r))
            ids.append([pad] * n + r if left else r + [pad] * n)
            if return_attention_mask:
                mask.append([0] * n + [1] * len(r) if left else [1] * len(r) + [0] * n)
        return {"input_ids": ids, "attention_mask": mask} if return_attention_mask else {"input_ids": ids}

    # -- ids -> text ------------------------------------------------------------

    def _decode(  # type: ignore[override]
        self,
        token_ids: Union[int, List[int]],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: Optional[bool] = None,
        **kwargs: Any,
    ) -> str:
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        special = set(self.all_special_ids)
        added = self._added_tokens_decoder
        n = self._hp.vocab_size
        out: List[str] = []
        run: List[int] = []
        for i in ids:
            if i in special or i >= n or (i in added and added[i].special):
                if run:
                    out.append(self._hp.decode(run))
                    run = []
                if skip_special_tokens and (i in special or (i in added and added[i].special)):
                    continue
                out.append(added[i].content if i in added else self._hp.id_to_piece(i))
            else:
                run.append(i)
        if run:
            out.append(self._hp.decode(run))
        text = "".join(out)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean else text

    # -- saving -----------------------------------------------------------------

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> Tuple[str, ...]:
        written = []
        for name, data in self._files.items():
            path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + name)
            with open(path, "wb") as f:
                f.write(data)
            written.append(path)
        return tuple(written)

    def save_pretrained(self, save_directory: PathLike, *args: Any, **kwargs: Any) -> Tuple[str, ...]:  # type: ignore[override]
        files = super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = type(self).__name__
        config["auto_map"] = {"AutoTokenizer": [None, f"{SHIM_MODULE}.{type(self).__name__}"]}
        config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        (folder / f"{SHIM_MODULE}.py").write_text(SHIM_SOURCE, encoding="utf-8")
        return tuple(files) + (str(folder / f"{SHIM_MODULE}.py"),)


def _source_config(src: Path) -> Dict[str, Any]:
    """The settings of the source folder's tokenizer_config.json (and chat_template.jinja)
    that describe behaviour hanpack keeps: special tokens, template, lengths, sides."""
    config: Dict[str, Any] = {}
    path = src / "tokenizer_config.json"
    if path.is_file():
        raw = json.loads(path.read_text(encoding="utf-8"))
        decoder = raw.get("added_tokens_decoder") or {}
        for key in _CARRIED:
            if key in raw and raw[key] is not None:
                value = raw[key]
                if isinstance(value, dict) and "content" in value:  # an AddedToken written out
                    value = value["content"]
                config[key] = value
        if decoder:
            config["added_tokens_decoder"] = {
                int(i): AddedToken(**{k: v for k, v in t.items() if k in
                                      ("content", "single_word", "lstrip", "rstrip", "normalized", "special")})
                for i, t in decoder.items()
            }
    template = src / "chat_template.jinja"
    if template.is_file() and "chat_template" not in config:
        config["chat_template"] = template.read_text(encoding="utf-8")
    return config


def convert_tokenizer(src: PathLike, dst: PathLike, **overrides: Any) -> HanpackTokenizer:
    """Writes a hanpack-backed copy of the tokenizer at ``src`` to the new folder ``dst``
    and returns it loaded.

    ``src`` is a tokenizer folder (``tokenizer.model`` and/or ``tokenizer.json``, with
    its ``tokenizer_config.json``: special tokens, chat template, ``add_bos_token`` … are
    kept) or a single tokenizer file. ``overrides`` are tokenizer settings
    (``add_bos_token=False``, ``pad_token="<unk>"``, ``chat_template=...``). The folder is
    written under a temporary name and renamed when complete; ``src`` is only read.

    >>> tok = convert_tokenizer("Qwen2-7B", "qwen2-hanpack")            # doctest: +SKIP
    >>> AutoTokenizer.from_pretrained("qwen2-hanpack")                  # doctest: +SKIP
    """
    src = Path(src)
    if src.is_dir():
        config = _source_config(src)
        model, js = src / "tokenizer.model", src / "tokenizer.json"
        vocab_file = str(model) if model.is_file() else None
        tokenizer_file = str(js) if js.is_file() else None
        if vocab_file is None and tokenizer_file is None:
            raise FileNotFoundError(2, "the folder holds no tokenizer.model or tokenizer.json", str(src))
    elif src.is_file():
        config = {}
        if src.suffix == ".json":
            vocab_file, tokenizer_file = None, str(src)
        else:
            vocab_file, tokenizer_file = str(src), None
    else:
        raise FileNotFoundError(2, "no such tokenizer file or folder", str(src))
    config.update(overrides)
    tok = HanpackTokenizer(vocab_file=vocab_file, tokenizer_file=tokenizer_file, **config)
    with new_directory(dst) as tmp:
        tok.save_pretrained(tmp)
    return HanpackTokenizer.from_pretrained(str(dst))


_registered = False


def register() -> None:
    """Makes ``AutoTokenizer`` resolve ``"tokenizer_class": "HanpackTokenizer"`` (done
    on ``import hanpack.hf``). Only that class name is added; no model type's tokenizer
    changes."""
    global _registered
    if _registered:
        return
    from transformers import AutoTokenizer, PretrainedConfig

    class HanpackTokenizerConfig(PretrainedConfig):
        """Registration key only: no model has this type."""

        model_type = "hanpack_tokenizer"

    AutoTokenizer.register(HanpackTokenizerConfig, tokenizer_class=HanpackTokenizer, exist_ok=True)
    _registered = True
