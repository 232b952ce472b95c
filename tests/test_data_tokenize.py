"""hanpack.data.tokenize_files: token shards from text, JSON-lines and parquet files.

The reference for every document is sentencepiece's encode of it (or, for byte-level BPE,
hanpack's own per-text encode, which the parity tests compare with HF tokenizers)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import hanpack
from hanpack.data import read_shards, tokenize_files
from hanpack.data import shards as shards_module
from hanpack.data import tokenize as tokenize_module
from hanpack.exceptions import DataInputError, InvalidArgumentError

from conftest import CHINESE_LLAMA, CORPUS, TOKENIZERS, require_shared

spm = pytest.importorskip("sentencepiece")

DEFAULT = hanpack.data.default_model_path()


@pytest.fixture(scope="module")
def tok() -> hanpack.Tokenizer:
    return hanpack.Tokenizer.from_file(DEFAULT)


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(DEFAULT))


def sample_lines() -> list[str]:
    return [line for line in hanpack.data.sample_text().splitlines() if line]


def write_inputs(folder: Path, n: int = 120) -> list[Path]:
    """The same kind of text in every input format hanpack reads."""
    lines = sample_lines()
    docs = [f"{i}: {lines[i % len(lines)]}" for i in range(n)]
    docs[7] = docs[45] = docs[100] = "".join(lines) * 3  # lines longer than any batch in the tests
    txt = folder / "a.txt"
    txt.write_text("\n".join(docs[: n // 4]) + "\n\n" + "\r\n".join(docs[n // 4 : n // 2]) + "\n", encoding="utf-8")
    rows = [json.dumps({"id": i, "text": d}, ensure_ascii=False) for i, d in enumerate(docs[n // 2 :])]
    jsonl = folder / "b.jsonl"
    jsonl.write_text("\n".join(rows[:20]) + "\n", encoding="utf-8")
    gz = folder / "c.jsonl.gz"
    gz.write_bytes(gzip.compress(("\n".join(rows[20:30]) + "\n").encode()))
    zstandard = pytest.importorskip("zstandard")
    zst = folder / "d.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(rows[30:40]) + "\n").encode()))
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = folder / "e.parquet"
    pq.write_table(pa.table({"text": [json.loads(r)["text"] for r in rows[40:]]}), parquet, row_group_size=7)
    return [txt, jsonl, gz, zst, parquet]


def expected_documents(paths: list[Path], field: str = "text") -> list[str]:
    """The documents of the inputs by the documented rules (independent of hanpack's readers)."""
    docs: list[str] = []
    for p in paths:
        name = p.name
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            docs += [t for t in pq.read_table(p).column(field).to_pylist() if t]
            continue
        raw = p.read_bytes()
        if name.endswith(".gz"):
            raw = gzip.decompress(raw)
        elif name.endswith(".zst"):
            import zstandard

            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        for line in raw.split(b"\n"):
            line = line[:-1] if line.endswith(b"\r") else line
            if not line:
                continue
            text = line.decode("utf-8")
            docs.append(text if ".txt" in name else json.loads(text)[field])
    return docs


def shard_documents(out: Path) -> list[list[int]]:
    return [tokens[a:b].tolist() for tokens, offsets in read_shards(out) for a, b in zip(offsets[:-1], offsets[1:])]


def folder_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_every_input_format_gives_the_documents_sentencepiece_encodes(tmp_path, tok, sp):
    paths = write_inputs(tmp_path)
    r = tokenize_files(paths, tok, tmp_path / "out", add_bos=True, add_eos=True, shard_tokens=300, progress=False)
    docs = expected_documents(paths)
    assert len(docs) == 120
    want = [[sp.bos_id()] + sp.encode(d) + [sp.eos_id()] for d in docs]
    assert shard_documents(tmp_path / "out") == want
    assert (r.documents, r.tokens) == (len(want), sum(map(len, want)))
    assert r.skipped == {"empty": 1}  # the blank line of a.txt, counted
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["dtype"] == "uint16" and r.shards == len(manifest["shards"]) > 3
    for s in manifest["shards"]:
        data = (tmp_path / "out" / s["tokens_file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"]
        assert len(data) == 2 * s["tokens"]
        tokens = np.memmap(tmp_path / "out" / s["tokens_file"], dtype=np.uint16, mode="r")  # nanoGPT's reader
        offsets = np.load(tmp_path / "out" / s["offsets_file"])
        assert offsets[0] == 0 and offsets[-1] == len(tokens) and len(offsets) == s["documents"] + 1
        saved = io.BytesIO()
        np.save(saved, offsets, allow_pickle=False)  # the file is exactly what np.save writes
        offsets_file = (tmp_path / "out" / s["offsets_file"]).read_bytes()
        assert offsets_file == saved.getvalue() and hashlib.sha256(offsets_file).hexdigest() == s["offsets_sha256"]
    # A shard ends at the first document that brings it to shard_tokens.
    for s in manifest["shards"][:-1]:
        offsets = np.load(tmp_path / "out" / s["offsets_file"])
        assert offsets[-1] >= 300 > offsets[-2]


def test_shared_corpora_with_chinese_llama_equal_sentencepiece(tmp_path):
    model = require_shared(CHINESE_LLAMA)
    paths = [require_shared(CORPUS / n) for n in (
        "zh-hans_wiki_cmrc2018-contexts.txt", "zh-hant_classical-prose_sishuwujing-mengxue.txt",
        "zh-hans_dialogue_kdconv.jsonl", "zh-hans_instruction_llamafactory-demos.jsonl",
    )]
    tok = hanpack.Tokenizer.from_file(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    r = tokenize_files(paths, tok, tmp_path / "out", add_eos=True, shard_tokens=200_000, progress=False)
    docs = expected_documents(paths)
    want = sp.encode(docs)
    assert shard_documents(tmp_path / "out") == [w + [sp.eos_id()] for w in want]
    assert r.documents == len(docs) > 20_000 and r.shards > 2


def test_shards_do_not_depend_on_batching_or_threads(tmp_path, tok, monkeypatch):
    paths = write_inputs(tmp_path)
    tokenize_files(paths, tok, tmp_path / "a", shard_tokens=500, progress=False)
    monkeypatch.setattr(tokenize_module, "BATCH_BYTES", 300)
    tokenize_files(paths, tok, tmp_path / "b", shard_tokens=500, num_threads=1, progress=False)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "b")
    # Many small batches in the pool at once, finishing out of order, still written in order.
    tokenize_files(paths, tok, tmp_path / "c", shard_tokens=500, num_threads=2, progress=False)
    assert folder_bytes(tmp_path / "a") == folder_bytes(tmp_path / "c")


class Interrupt(BaseException):
    pass


@pytest.mark.parametrize("compressed", [False, True], ids=["seek", "skip-records"])
def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, tok, monkeypatch, compressed):
    paths = write_inputs(tmp_path)
    if compressed:  # resuming inside a file that cannot seek: records are skipped instead
        paths = [paths[2], paths[3], paths[4]]
    else:
        paths = [paths[0], paths[1]]
    full = tokenize_files(paths, tok, tmp_path / "full", shard_tokens=200, progress=False, on_error="skip")
    closes = {"n": 0}
    real_close = shards_module.ShardWriter._close

    def close_then_stop(self, end, **options):
        real_close(self, end, **options)
        closes["n"] += 1
        if closes["n"] == full.shards // 2:
            raise Interrupt()

    monkeypatch.setattr(shards_module.ShardWriter, "_close", close_then_stop)
    with pytest.raises(Interrupt):
        tokenize_files(paths, tok, tmp_path / "cut", shard_tokens=200, progress=False, on_error="skip")
    monkeypatch.setattr(shards_module.ShardWriter, "_close", real_close)
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["shards"]) == full.shards // 2
    again = tokenize_files(paths, tok, tmp_path / "cut", shard_tokens=200, progress=False, on_error="skip")
    assert again.resumed_shards == full.shards // 2 and 0 < again.new_tokens < full.tokens
    assert folder_bytes(tmp_path / "cut") == folder_bytes(tmp_path / "full")
    done = tokenize_files(paths, tok, tmp_path / "cut", shard_tokens=200, progress=False, on_error="skip")
    assert done.new_tokens == 0 and done.shards == full.shards


def test_killed_process_resumes_to_the_same_bytes(tmp_path):
    """SIGKILL midway through a real run of the CLI, then the same command again."""
    lines = sample_lines()
    text = tmp_path / "big.txt"
    with open(text, "w", encoding="utf-8") as f:
        for i in range(60_000):
            f.write(f"{i} {lines[i % len(lines)]}\n")
    cmd = [sys.executable, "-m", "hanpack", "tokenize", str(text), "--shard-tokens", "20000", "--eos", "--quiet",
           "--threads", "1", "--out"]
    subprocess.run(cmd + [str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen(cmd + [str(tmp_path / "cut")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest_path = tmp_path / "cut" / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads(manifest_path.read_text())["shards"]) >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads(manifest_path.read_text())
    assert not manifest["complete"], "the run ended before it could be killed; make the input larger"
    out = subprocess.run(cmd + [str(tmp_path / "cut")], check=True, capture_output=True, text=True).stdout
    assert "kept from an interrupted run" in out
    assert folder_bytes(tmp_path / "cut") == folder_bytes(tmp_path / "full")


def test_cluster_output_equals_local_output(tmp_path, tok):
    distributed = pytest.importorskip("distributed")
    paths = write_inputs(tmp_path)
    bad = tmp_path / "f.jsonl"  # bad records in a split file: their line numbers must be global
    rows = [json.dumps({"text": t}, ensure_ascii=False) for t in (sample_lines() * 2)[:40]]
    rows[5], rows[33] = "{not json", json.dumps({"txt": "no text field"})
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    paths.append(bad)
    kw = dict(shard_tokens=250, add_bos=True, progress=False, on_error="skip")
    local = tokenize_files(paths, tok, tmp_path / "local", **kw)
    environ = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                remote = tokenize_files(paths, tok, tmp_path / "cluster", client=client, part_bytes=700, **kw)
    finally:
        # distributed's nannies set MALLOC_TRIM_THRESHOLD_, OMP_NUM_THREADS, PYTHONHASHSEED, ...
        # in this process's environment for good; later tests' child processes inherit them
        # (the RSS test of a loaded tokenizer measured 3.14x instead of 1.95x under them).
        os.environ.clear()
        os.environ.update(environ)
    assert folder_bytes(tmp_path / "cluster") == folder_bytes(tmp_path / "local")
    assert (remote.tokens, remote.shards, remote.skipped) == (local.tokens, local.shards, local.skipped)
    examples = json.loads((tmp_path / "local" / "manifest.json").read_text())["skipped_examples"]
    assert [e.split(": ")[0] for e in examples] == [f"{bad}:6", f"{bad}:34"]


BAD_INPUTS = [
    # name, content, kind, line (None: somewhere in the file), documents the other records make
    ("utf8.txt", "好的\n第二行\n".encode() + b"\xff\xfe bad\n" + "第四行\n".encode(), "invalid_utf8", 3, 3),
    ("json.jsonl", b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n', "invalid_json", 2, 2),
    ("field.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"body": "c"}\n', "missing_field", 3, 2),
    ("array.jsonl", b'["text"]\n{"text": "b"}\n', "missing_field", 1, 1),
    ("number.jsonl", b'{"text": "a"}\n{"text": 7}\n', "not_text", 2, 1),
    ("surrogate.jsonl", b'{"text": "a"}\n{"text": "x\\ud800y"}\n', "invalid_unicode", 2, 1),
    ("cut.jsonl.gz", gzip.compress(b"".join(b'{"text": "a%d"}\n' % (i * 7919 % 10007) for i in range(5000)))[:-40],
     "unreadable", None, None),
    ("absent.txt", None, "unreadable", 0, 0),
]


@pytest.mark.parametrize("name,content,kind,line,good", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_stops_with_file_and_line(tmp_path, tok, name, content, kind, line, good):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataInputError) as e:
        tokenize_files([path], tok, tmp_path / "out", progress=False)
    assert (e.value.path, e.value.kind) == (str(path), kind)
    if line is not None:
        assert e.value.line == line and str(e.value).startswith(f"{path}:{line}: " if line else f"{path}: ")
    else:
        assert e.value.line > 1000 and "breaks off" in str(e.value)
    assert pickle.loads(pickle.dumps(e.value)).args == e.value.args
    # The run's threads ended with it, while the error (and its traceback) is still alive:
    # left to the garbage collector, their pools were once shut down inside another
    # thread's start, which deadlocked.
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("hanpack-encoder", "hanpack-reader"))]


@pytest.mark.parametrize("name,content,kind,line,good", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_skipped_is_counted_with_file_and_line(tmp_path, tok, sp, name, content, kind, line, good):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    after = tmp_path / "good.txt"
    after.write_text("好的\n", encoding="utf-8")
    r = tokenize_files([path, after], tok, tmp_path / "out", progress=False, on_error="skip")
    assert r.skipped == {kind: 1}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (example,) = manifest["skipped_examples"]
    assert example.startswith(f"{path}:{line}: {kind}: " if line else f"{path}: {kind}: " if line == 0 else f"{path}:")
    docs = shard_documents(tmp_path / "out")
    assert docs[-1] == sp.encode("好的")  # the inputs after it were read
    if good is not None:
        assert len(docs) == good + 1  # every other record became a document
    else:
        assert 1000 < len(docs) < 5000 + 1 and docs[0] == sp.encode("a0")  # the lines before the break


def test_a_file_that_shrinks_during_the_run_is_reported_not_looped_on(tmp_path, tok, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text("第一行\n第二行\n", encoding="utf-8")
    real = tokenize_module.read_part

    def shrinking(part, **kw):
        batches = list(real(part, **kw))  # spans planned at the full size ...
        text.write_text("第一行\n", encoding="utf-8")  # ... then the file loses a line
        return iter(batches)

    monkeypatch.setattr(tokenize_module, "read_part", shrinking)
    r = tokenize_files([text], tok, tmp_path / "out", progress=False, on_error="skip")
    assert r.skipped == {"unreadable": 1} and r.documents == 1
    example = json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped_examples"][0]
    assert example.startswith(f"{text}:2: unreadable: breaks off after line 1: the file ends at byte 10")


def test_empty_files_among_the_inputs(tmp_path, tok, sp):
    lines = sample_lines()
    paths = []
    for i, content in enumerate(["", "\n".join(lines[:5]) + "\n", "", "\n".join(lines[5:9])]):
        p = tmp_path / f"{i}.{'jsonl' if i == 2 else 'txt'}"
        p.write_text(content, encoding="utf-8")
        paths.append(p)
    for threads in (1, 2):
        r = tokenize_files(paths, tok, tmp_path / f"out{threads}", num_threads=threads, progress=False)
        assert shard_documents(tmp_path / f"out{threads}") == [sp.encode(t) for t in lines[:9]]
        assert r.documents == 9
    assert folder_bytes(tmp_path / "out1") == folder_bytes(tmp_path / "out2")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_file_removed_during_the_run_is_reported(tmp_path, tok, sp, monkeypatch, threads):
    gone, kept = tmp_path / "gone.txt", tmp_path / "kept.txt"
    gone.write_text("第一行\n第二行\n", encoding="utf-8")
    kept.write_text("好的\n", encoding="utf-8")
    real = tokenize_module.read_part

    def removing(part, **kw):
        batches = list(real(part, **kw))  # spans planned ...
        if part.path == str(gone):
            gone.unlink()  # ... then the file is gone before the tokenizer reads them
        return iter(batches)

    monkeypatch.setattr(tokenize_module, "read_part", removing)
    r = tokenize_files([gone, kept], tok, tmp_path / "out", progress=False, on_error="skip", num_threads=threads)
    assert r.skipped == {"unreadable": 1} and r.documents == 1
    assert shard_documents(tmp_path / "out") == [sp.encode("好的")]
    example = json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped_examples"][0]
    assert example.startswith(f"{gone}:1: unreadable: breaks off after line 0: ") and "No such file" in example


def test_runs_that_must_not_resume_are_refused(tmp_path, tok):
    paths = write_inputs(tmp_path)[:2]
    tokenize_files(paths, tok, tmp_path / "out", shard_tokens=400, progress=False)
    with pytest.raises(InvalidArgumentError, match="different options"):
        tokenize_files(paths, tok, tmp_path / "out", shard_tokens=401, progress=False)
    with pytest.raises(InvalidArgumentError, match="different inputs"):
        tokenize_files(paths[:1], tok, tmp_path / "out", shard_tokens=400, progress=False)
    with pytest.raises(InvalidArgumentError, match="add_bos"):  # before any output exists
        tokenize_files(paths, hanpack.Tokenizer.from_file(_no_bos_model(tmp_path)), tmp_path / "nobos", add_bos=True)
    assert not (tmp_path / "nobos").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tokenize_files(paths, tok, tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    for bad, err in [
        (dict(on_error="ignore"), "on_error"), (dict(shard_tokens=0), "shard_tokens"), (dict(dtype="int8"), "dtype"),
    ]:
        with pytest.raises(InvalidArgumentError, match=err):
            tokenize_files(paths, tok, tmp_path / "new", progress=False, **bad)
    with pytest.raises(ValueError, match="num_threads"):
        tokenize_files(paths, tok, tmp_path / "new", num_threads=0, progress=False)
    with pytest.raises(InvalidArgumentError, match="unknown input format"):
        tokenize_files([tmp_path / "x.csv"], tok, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def _no_bos_model(folder: Path) -> Path:
    """A SentencePiece model trained here without a BOS piece."""
    model = folder / "nobos.model"
    text = folder / "train.txt"
    text.write_text("\n".join(sample_lines()), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / "nobos"), vocab_size=600,
                                   bos_id=-1, model_type="bpe", character_coverage=1.0, minloglevel=2)
    return model


def test_a_run_that_wrote_no_shard_may_start_over(tmp_path, tok, monkeypatch):
    paths = write_inputs(tmp_path)[:2]

    def stop(self, end, **options):
        raise Interrupt()

    monkeypatch.setattr(shards_module.ShardWriter, "_close", stop)
    with pytest.raises(Interrupt):
        tokenize_files(paths, tok, tmp_path / "out", shard_tokens=100, progress=False)
    monkeypatch.undo()
    r = tokenize_files(paths, tok, tmp_path / "out", shard_tokens=101, progress=False)  # other options: fine
    assert r.resumed_shards == 0 and r.shards > 1
    tokenize_files(paths, tok, tmp_path / "ref", shard_tokens=101, progress=False)
    assert folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "ref")


def test_a_failed_flush_to_disk_stops_the_run_and_lists_no_shard(tmp_path, tok, monkeypatch):
    """Shards are flushed to disk on a helper thread while the run goes on; its error must
    still end the run, and the shard it belonged to must not be listed."""
    paths = write_inputs(tmp_path)[:2]
    monkeypatch.setattr(shards_module, "SYNC_BYTES", 64)
    flushes = {"n": 0}

    def failing_flush(fd):
        flushes["n"] += 1
        raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(shards_module.os, "fdatasync", failing_flush)
    with pytest.raises(OSError, match="injected"):
        tokenize_files(paths, tok, tmp_path / "out", shard_tokens=10**6, progress=False)
    assert flushes["n"] >= 1
    manifest = shards_module.read_manifest(tmp_path / "out")
    assert manifest is None or (manifest["shards"] == [] and not manifest["complete"])
    assert not list((tmp_path / "out").glob("*shard-*"))  # the open shard's file was dropped
    monkeypatch.undo()
    r = tokenize_files(paths, tok, tmp_path / "out", shard_tokens=10**6, progress=False)
    tokenize_files(paths, tok, tmp_path / "ref", shard_tokens=10**6, progress=False)
    assert r.shards == 1 and folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "ref")


def test_large_vocabularies_get_uint32_tokens(tmp_path):
    model = require_shared(TOKENIZERS / "qwen2" / "tokenizer.derived.json")
    tok = hanpack.Tokenizer.from_file(model)
    text = tmp_path / "t.txt"
    text.write_text("通义千问 Qwen2\n<|endoftext|> 是普通文本\n", encoding="utf-8")
    tokenize_files([text], tok, tmp_path / "out", progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["dtype"] == "uint32"
    # special-token text in a corpus is ordinary text (tiktoken's encode_ordinary)
    assert shard_documents(tmp_path / "out") == [
        tok.encode(t, allowed_special=(), disallowed_special=()) for t in ["通义千问 Qwen2", "<|endoftext|> 是普通文本"]
    ]
    with pytest.raises(InvalidArgumentError, match="uint16 cannot hold"):
        tokenize_files([text], tok, tmp_path / "out16", dtype="uint16", progress=False)


def test_cli_tokenize(tmp_path, capsys):
    from hanpack.cli import main

    paths = write_inputs(tmp_path)[:2]
    assert main(["tokenize", *map(str, paths), "--out", str(tmp_path / "out"), "--eos", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "documents in 1 shards" in out and "skipped records: 1 empty" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    assert main(["tokenize", str(bad), "--out", str(tmp_path / "out2"), "--quiet"]) == 1
    assert f"{bad}:2: not JSON" in capsys.readouterr().err
