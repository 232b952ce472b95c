"""Byte-level BPE without shared data: a small tokenizer.json written here (GPT-2 style
byte alphabet, a few hundred merges learned from the test lines), checked id for id
against HF ``tokenizers`` on the same file; the API (batches, numpy, pickling, save, the
special-token policy) and the errors for broken files.
"""

from __future__ import annotations

import base64
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest

import hanpack
from hanpack.exceptions import (
    DisallowedSpecialTokenError,
    InvalidArgumentError,
    InvalidModelError,
    ModelFormatError,
    TokenIdError,
    UnsupportedTokenizerError,
)
from conftest import HARD_CASES, training_lines

hf = pytest.importorskip("tokenizers")


def byte_chars() -> list[str]:
    """GPT-2's byte → character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def learn_merges(lines: list[str], n_merges: int) -> tuple[dict[str, int], list[list[str]]]:
    """A naive BPE trainer over byte-level words (enough for a test vocabulary)."""
    import regex  # installed with tiktoken / transformers; skip otherwise

    chars = byte_chars()
    words = Counter()
    for line in lines:
        for w in regex.findall(LLAMA3_PATTERN, line):
            words[tuple(chars[b] for b in w.encode("utf-8"))] += 1
    vocab = {c: i for i, c in enumerate(chars)}
    merges: list[list[str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append([a, b])
        vocab.setdefault(a + b, len(vocab))
        new_words: Counter = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    return vocab, merges


def tokenizer_json(*, ignore_merges: bool = False, nfc: bool = True, template: bool = False, extra_added=()) -> dict:
    pytest.importorskip("regex")
    vocab, merges = learn_merges(training_lines(300), 400)
    n = len(vocab)
    added = [
        {"id": n, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
        {"id": n + 1, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
        # HF renumbers added tokens whose ids do not follow the vocabulary, so extra
        # tokens take the next ids.
        *({**t, "id": n + 2 + i} for i, t in enumerate(extra_added)),
    ]
    post = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    if template:
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [n + 1], "tokens": ["<|im_start|>"]},
                               "<|endoftext|>": {"id": "<|endoftext|>", "ids": [n], "tokens": ["<|endoftext|>"]}},
        }
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges},
    }


def write(tmp_path: Path, doc: dict, name: str = "tokenizer.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, hanpack.Tokenizer, "hf.Tokenizer"]:
    path = write(tmp_path_factory.mktemp("bbpe"), tokenizer_json())
    return path, hanpack.Tokenizer.from_file(path), hf.Tokenizer.from_file(str(path))


TEXTS = training_lines(100, seed=7) + HARD_CASES + [
    "<|endoftext|>x<|im_start|> y", "I'll we're   they've\n\n\n  ok", "１２３４５ 12345 ٣٤٥",
    "Ünïcödé e\u0301 NFC", "tabs\t\tand\r\nCRLF", "😀😀 🇨🇳", "a" * 3000, "中文" * 700,
]


@pytest.mark.parametrize("ignore_merges", [False, True])
def test_parity_with_hf_tokenizers(tmp_path, ignore_merges):
    path = write(tmp_path, tokenizer_json(ignore_merges=ignore_merges))
    tok, ref = hanpack.Tokenizer.from_file(path), hf.Tokenizer.from_file(str(path))
    want = [e.ids for e in ref.encode_batch(TEXTS, add_special_tokens=False)]
    assert tok.encode_batch(TEXTS, allowed_special="all") == want
    assert [tok.encode(t, allowed_special="all") for t in TEXTS] == want
    assert tok.decode_batch(want) == ref.decode_batch(want, skip_special_tokens=False)
    assert tok.decode_batch(want, skip_special_tokens=True) == ref.decode_batch(want, skip_special_tokens=True)


def test_template_post_processor(tmp_path):
    path = write(tmp_path, tokenizer_json(template=True))
    tok, ref = hanpack.Tokenizer.from_file(path), hf.Tokenizer.from_file(str(path))
    for t in ["hello", "", "中文 ok"]:
        assert tok.encode(t, add_bos=True, add_eos=True) == ref.encode(t).ids
    assert tok.bos_id == tok.piece_to_id("<|im_start|>")
    assert tok.eos_id == tok.piece_to_id("<|endoftext|>")


def test_added_token_options(tmp_path):
    n = 0  # ids are assigned by tokenizer_json
    extra = [
        {"id": n, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": True, "normalized": False, "special": False},
        {"id": n + 1, "content": "word", "single_word": True, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
        {"id": n + 2, "content": "Ａ", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": False},
    ]
    doc = tokenizer_json(extra_added=extra)
    doc["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}]}
    path = write(tmp_path, doc)
    tok, ref = hanpack.Tokenizer.from_file(path), hf.Tokenizer.from_file(str(path))
    texts = ["a <mask> b", "a<mask>b", "  <mask>  ", "word words sword word_ (word)", "ＡA", "x\t<mask>\ny", "中word文", "<mask><mask>"]
    assert [tok.encode(t, allowed_special="all") for t in texts] == [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]


def test_special_token_policy(tiny):
    _, tok, _ = tiny
    eot = tok.special_tokens["<|endoftext|>"]
    with pytest.raises(DisallowedSpecialTokenError, match="<\\|endoftext\\|>"):
        tok.encode("hi <|endoftext|>")
    with pytest.raises(DisallowedSpecialTokenError):
        tok.encode_batch(["ok", "<|im_start|>"])
    assert tok.encode("hi <|endoftext|>", allowed_special={"<|endoftext|>"})[-1] == eot
    plain = tok.encode("<|endoftext|>", disallowed_special=())
    assert eot not in plain and tok.decode(plain) == "<|endoftext|>"
    with pytest.raises(DisallowedSpecialTokenError):
        tok.encode("<|im_start|><|endoftext|>", allowed_special={"<|endoftext|>"})
    with pytest.raises(InvalidArgumentError, match="not a special token"):
        tok.encode("x", allowed_special={"<nope>"})
    with pytest.raises(TypeError):
        tok.encode("x", allowed_special="<|endoftext|>")


def test_api(tiny, tmp_path):
    path, tok, ref = tiny
    assert tok.model_type == "bbpe" and len(tok) == tok.vocab_size == ref.get_vocab_size()
    assert tok.bos_id == tok.eos_id == -1
    assert tok.id_to_piece(tok.piece_to_id("Ġt")) == "Ġt" if tok.piece_to_id("Ġt") >= 0 else True
    with pytest.raises(TokenIdError):
        tok.id_to_piece(10**6)
    with pytest.raises(TokenIdError):
        tok.decode([10**6])
    lines = TEXTS[:50]
    ids, offsets = tok.encode_batch_numpy(lines, allowed_special="all")
    rows = tok.encode_batch(lines, allowed_special="all", num_threads=1)
    assert [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(lines))] == rows
    assert pickle.loads(pickle.dumps(tok)).encode_batch(lines, allowed_special="all") == rows
    out = tmp_path / "tokenizer.json"
    tok.save(out)
    assert out.read_bytes() == path.read_bytes()
    assert hanpack.Tokenizer.from_file(tmp_path).encode_batch(lines, allowed_special="all") == rows  # a folder
    assert tok.encode_as_pieces("hello") == [tok.id_to_piece(i) for i in tok.encode("hello")]
    assert tok.normalize("e\u0301") == "\u00e9"
    assert tok.piece_type(tok.special_tokens["<|endoftext|>"]) == "CONTROL"
    assert "bbpe" in repr(tok)


def test_tiktoken_file_round_trip(tiny, tmp_path):
    """A tiktoken rank file made from the tiny vocabulary: from_tiktoken matches tiktoken,
    and its saved tokenizer.json matches HF tokenizers."""
    tiktoken = pytest.importorskip("tiktoken")
    _, tok, _ = tiny
    chars = {c: b for b, c in enumerate(byte_chars())}
    ranks = {}
    for i in range(tok.vocab_size):
        piece = tok.id_to_piece(i)
        if i in tok.special_tokens.values():
            continue
        ranks[bytes(chars[c] for c in piece)] = i
    rank_file = tmp_path / "tiny.tiktoken"
    rank_file.write_text("".join(f"{base64.b64encode(b).decode()} {r}\n" for b, r in ranks.items()))
    specials = {"<|endoftext|>": len(ranks)}
    ours = hanpack.Tokenizer.from_tiktoken(rank_file, pattern=LLAMA3_PATTERN, special_tokens=specials)
    enc = tiktoken.Encoding("tiny", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    texts = [t for t in TEXTS if "<|im_start|>" not in t]
    want = enc.encode_batch(texts, allowed_special="all")
    assert ours.encode_batch(texts, allowed_special="all") == want
    assert ours.decode_batch(want) == [enc.decode(w) for w in want]
    saved = tmp_path / "tokenizer.json"
    ours.save(saved)
    ref = hf.Tokenizer.from_file(str(saved))
    assert [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)] == want
    assert hanpack.Tokenizer.from_file(saved).encode_batch(texts, allowed_special="all") == want


# -- errors ---------------------------------------------------------------------------------


def test_errors_name_file_and_problem(tmp_path):
    doc = tokenizer_json()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(doc)[:5000])
    with pytest.raises(ModelFormatError, match="truncated.json.*not valid JSON"):
        hanpack.Tokenizer.from_file(truncated)

    bad = json.loads(json.dumps(doc))
    bad["model"]["merges"][3] = ["Ġt", "zzzz"]
    with pytest.raises(InvalidModelError, match=r"merges\[3\].*zzzz"):
        hanpack.Tokenizer.from_file(write(tmp_path, bad, "bad_merge.json"))

    bad = json.loads(json.dumps(doc))
    bad["normalizer"] = {"type": "Precompiled", "precompiled_charsmap": ""}
    with pytest.raises(UnsupportedTokenizerError, match="unsupported.json.*Precompiled"):
        hanpack.Tokenizer.from_file(write(tmp_path, bad, "unsupported.json"))

    bad = json.loads(json.dumps(doc))
    bad["model"]["type"] = "WordPiece"
    with pytest.raises(UnsupportedTokenizerError, match="WordPiece"):
        hanpack.Tokenizer.from_file(write(tmp_path, bad, "wp.json"))

    ranks = tmp_path / "r.tiktoken"
    ranks.write_text("IQ== 0\n!!notbase64 1\n")
    with pytest.raises(ModelFormatError, match="r.tiktoken.*line 2.*base64"):
        hanpack.Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    ranks.write_text("IQ== 0\nIg== 0\n")
    with pytest.raises(InvalidModelError, match="line 2: rank 0 is already used on line 1"):
        hanpack.Tokenizer.from_tiktoken(ranks, pattern="gpt2")
    ranks.write_text("IQ== 0\n")
    with pytest.raises(InvalidArgumentError, match="from_tiktoken"):
        hanpack.Tokenizer.from_file(ranks)
