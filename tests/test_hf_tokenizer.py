"""hanpack.hf.HanpackTokenizer: AutoTokenizer loading, parity with sentencepiece / HF
tokenizers, transformers features (padding, truncation, tensors, chat templates, decode),
pickling and datasets.map."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (CHINESE_LLAMA, CORPUS, LLAMA, TOKENIZERS, corpus_lines, describe_mismatches, require_shared,
                      training_lines)

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
hf = pytest.importorskip("hanpack.hf")
from transformers import AutoTokenizer  # noqa: E402

TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant: {% endif %}")


@pytest.fixture(scope="module")
def spm_folder(trained_models, tmp_path_factory) -> Path:
    """A hanpack tokenizer folder converted from a sentencepiece model trained here."""
    dst = tmp_path_factory.mktemp("hf") / "bpe"
    hf.convert_tokenizer(trained_models["bpe_bytefallback"], dst, chat_template=TEMPLATE, model_max_length=64)
    return dst


def test_auto_tokenizer_finds_the_class_and_ids_equal_sentencepiece(spm_folder, trained_models, sample_lines):
    tok = AutoTokenizer.from_pretrained(spm_folder)
    assert type(tok).__name__ == "HanpackTokenizer"
    sp = spm.SentencePieceProcessor(model_file=str(trained_models["bpe_bytefallback"]))
    want = [[sp.bos_id()] + sp.encode(t) for t in sample_lines]
    assert tok(sample_lines)["input_ids"] == want
    assert [tok.encode(t) for t in sample_lines[:50]] == want[:50]
    assert tok(sample_lines, add_special_tokens=False)["input_ids"] == [sp.encode(t) for t in sample_lines]
    assert tok.convert_ids_to_tokens(want[3]) == [sp.id_to_piece(i) for i in want[3]]
    config = json.loads((spm_folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "HanpackTokenizer"
    assert config["auto_map"]["AutoTokenizer"][1] == "tokenization_hanpack.HanpackTokenizer"
    assert (spm_folder / "tokenizer.model").read_bytes() == trained_models["bpe_bytefallback"].read_bytes()


def test_padding_truncation_masks_and_tensors(spm_folder):
    tok = AutoTokenizer.from_pretrained(spm_folder, pad_token="<unk>")
    texts = ["今天天气很好", "Hello world, this is a longer line of text than the first one."]
    ids = [tok.encode(t) for t in texts]
    out = tok(texts, padding=True, return_tensors="np")
    n = max(map(len, ids))
    assert out["input_ids"].shape == (2, n)
    assert out["attention_mask"].tolist() == [[1] * len(r) + [0] * (n - len(r)) for r in ids]
    assert out["input_ids"][0].tolist() == ids[0] + [tok.pad_token_id] * (n - len(ids[0]))
    assert len(ids[0]) < 12 < len(ids[1])
    pt = tok(texts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    assert tuple(pt["input_ids"].shape) == (2, 12)
    assert pt["input_ids"][1].tolist() == ids[1][:12]  # BOS kept, the tail cut
    assert pt["input_ids"][0].tolist() == ids[0] + [tok.pad_token_id] * (12 - len(ids[0]))
    left = AutoTokenizer.from_pretrained(spm_folder, pad_token="<unk>", padding_side="left", truncation_side="left")
    out = left(texts, padding=True, truncation=True, max_length=8)
    assert out["input_ids"][1] == [tok.bos_token_id] + ids[1][-7:]
    assert out["input_ids"][0][: 8 - len(ids[0])] == [tok.pad_token_id] * (8 - len(ids[0]))
    # The per-text path of transformers (pairs, lengths) agrees with the batch lane.
    slow = tok(texts, return_length=True)
    assert slow["input_ids"] == ids and slow["length"] == [len(r) for r in ids]
    pair = tok("你好", "世界")
    assert pair["input_ids"] == ids_of(tok, "你好") + ids_of(tok, "世界")


def ids_of(tok, text: str) -> list[int]:
    return tok.encode(text)


def test_decode_batch_decode_and_special_tokens_in_text(spm_folder, sample_lines):
    tok = AutoTokenizer.from_pretrained(spm_folder)
    lines = [t for t in sample_lines if t.strip() == t and "  " not in t and t][:80]
    batch = tok(lines)["input_ids"]
    assert tok.batch_decode(batch, skip_special_tokens=True) == lines
    assert tok.decode(batch[0]).startswith("<s>")
    # A special token's text is the token, unless split_special_tokens.
    sp_ids = tok("你好</s>世界", add_special_tokens=False)["input_ids"]
    assert sp_ids == tok.encode("你好", add_special_tokens=False) + [tok.eos_token_id] + tok.encode(
        "世界", add_special_tokens=False)
    # A batch gets its BOS while it is encoded, texts with special tokens too: the same ids
    # as one text at a time (transformers' prepare_for_model adds it there).
    texts = ["你好</s>世界", "plain text", "", "<s>", "</s>a<s>"]
    assert tok(texts)["input_ids"] == [tok(t)["input_ids"] for t in texts]
    assert tok(texts, add_special_tokens=False)["input_ids"] == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert tok(texts, truncation=True, max_length=3)["input_ids"] == [
        tok(t, truncation=True, max_length=3)["input_ids"] for t in texts]
    plain = tok("你好</s>世界", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert tok.eos_token_id not in plain
    # Tokens added through transformers are recognised and decoded.
    n = len(tok)
    tok.add_tokens(["<tool_call>"], special_tokens=True)
    ids = tok.encode("调用<tool_call>工具", add_special_tokens=False)
    assert n in ids and tok.decode(ids) == "调用<tool_call>工具"
    assert tok.decode(ids, skip_special_tokens=True) == "调用工具"


def test_chat_template(spm_folder):
    tok = AutoTokenizer.from_pretrained(spm_folder)
    messages = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好！"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s>user: 你好</s><s>assistant: 您好！</s><s>assistant: "
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids == tok.encode(text, add_special_tokens=False)
    assert ids.count(tok.bos_token_id) == 3


def test_pickle_and_save_round_trip(spm_folder, tmp_path, sample_lines):
    tok = AutoTokenizer.from_pretrained(spm_folder)
    again = pickle.loads(pickle.dumps(tok))
    assert again(sample_lines)["input_ids"] == tok(sample_lines)["input_ids"]
    tok.save_pretrained(tmp_path / "saved")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert type(reloaded) is type(tok)
    assert reloaded(sample_lines)["input_ids"] == tok(sample_lines)["input_ids"]
    assert reloaded.chat_template == tok.chat_template


def test_trust_remote_code_loads_without_importing_hanpack_hf(spm_folder):
    code = (
        "import sys\nfrom transformers import AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(spm_folder)!r}, trust_remote_code=True)\n"
        "assert type(tok).__name__ == 'HanpackTokenizer', type(tok)\n"
        "print(tok.encode('你好'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("[1,")


def test_convert_refuses_to_overwrite_and_names_missing_files(spm_folder, tmp_path):
    with pytest.raises(FileExistsError):
        hf.convert_tokenizer(spm_folder, spm_folder)
    with pytest.raises(FileNotFoundError, match="no such tokenizer"):
        hf.convert_tokenizer(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.model or tokenizer.json"):
        hf.convert_tokenizer(tmp_path / "empty", tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_datasets_map_with_two_processes(spm_folder, trained_models):
    datasets = pytest.importorskip("datasets")
    tok = AutoTokenizer.from_pretrained(spm_folder)
    lines = training_lines(400, seed=7)
    ds = datasets.Dataset.from_dict({"text": lines})
    mapped = ds.map(lambda b: tok(b["text"]), batched=True, num_proc=2, remove_columns=["text"])
    sp = spm.SentencePieceProcessor(model_file=str(trained_models["bpe_bytefallback"]))
    assert mapped["input_ids"] == [[sp.bos_id()] + sp.encode(t) for t in lines]


# -- shared tokenizers ------------------------------------------------------------------


def _corpus_sample(per_file: int = 1500) -> list[str]:
    require_shared(CORPUS)
    lines: list[str] = []
    for p in sorted(CORPUS.iterdir()):
        if p.suffix in (".txt", ".jsonl"):
            got = corpus_lines(p)
            lines += list(got[:: max(1, len(got) // per_file)])
    return lines


@pytest.mark.shared
@pytest.mark.parametrize("model", [LLAMA, CHINESE_LLAMA], ids=["llama", "chinese-llama-2"])
def test_sentencepiece_ids_on_corpus_lines(model, tmp_path):
    require_shared(model)
    tok = hf.convert_tokenizer(model, tmp_path / "tok")
    sp = spm.SentencePieceProcessor(model_file=str(model))
    lines = _corpus_sample()
    want = [[sp.bos_id()] + r for r in sp.encode(lines)]
    # sentencepiece's semantics: special tokens' text is text (a corpus line is "`<s>`").
    exact = AutoTokenizer.from_pretrained(tmp_path / "tok", split_special_tokens=True)
    got = exact(lines)["input_ids"]
    assert got == want, describe_mismatches(lines, want, got)
    assert tok.batch_decode(got, skip_special_tokens=True) == sp.decode([r[1:] for r in want])
    # transformers' default parses them; every other line is unchanged.
    parsed = tok(lines)["input_ids"]
    marked = {i for i, t in enumerate(lines) if any(s in t for s in ("<s>", "</s>", "<unk>"))}
    assert all(want[i] == parsed[i] for i in range(len(lines)) if i not in marked)


@pytest.mark.shared
@pytest.mark.parametrize("name", ["qwen2", "llama3"])
def test_hf_tokenizers_ids_on_corpus_lines(name, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    src = require_shared(TOKENIZERS / name / "tokenizer.derived.json")
    tok = hf.convert_tokenizer(src, tmp_path / "tok")
    ref = tokenizers.Tokenizer.from_file(str(src))
    lines = _corpus_sample()
    want = [e.ids for e in ref.encode_batch(lines, add_special_tokens=False)]
    got = tok(lines, add_special_tokens=False)["input_ids"]
    assert got == want, describe_mismatches(lines, want, got)
    special = "<|im_end|>" if name == "qwen2" else "<|eot_id|>"
    assert tok(f"你好{special}", add_special_tokens=False)["input_ids"] == ref.encode(
        f"你好{special}", add_special_tokens=False).ids
    assert tok.batch_decode(got[:200]) == ref.decode_batch(want[:200], skip_special_tokens=False)
    # With the tokenizer's own ends (LLaMA-3 adds BOS, added while encoding the batch).
    assert tok(lines)["input_ids"] == [e.ids for e in ref.encode_batch(lines)]
