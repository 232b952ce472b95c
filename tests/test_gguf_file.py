"""hanpack.gguf.GGUFWriter / GGUFFile against the ``gguf`` package's reader and writer:
metadata of every value type, tensors of every type, streaming order, atomic output,
and truncated or lying files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOKENIZERS, require_shared
from hypothesis import given, settings
from hypothesis import strategies as st

import hanpack.gguf as hg
from hanpack.exceptions import InvalidArgumentError, ModelFormatError

gguf = pytest.importorskip("gguf")

V = hg.ValueType


def write(path, metadata, arrays):
    specs = [hg.TensorSpec(n, a.shape, t) for n, (a, t) in arrays.items()]
    with hg.GGUFWriter(path, metadata, specs) as w:
        for n, (a, t) in arrays.items():
            w.write(n, hg.quantize(a, t))


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "a.weight": (rng.standard_normal((4, 256)).astype(np.float32), "Q4_K"),
        "b.weight": (rng.standard_normal((3, 64)).astype(np.float32), "Q8_0"),
        "norm": (rng.standard_normal(48).astype(np.float32), "F32"),
        "c.weight": (rng.standard_normal((2, 2, 32)).astype(np.float32), "F16"),
    }


METADATA = [
    ("general.architecture", "llama"),
    ("u8", hg.Typed(7, V.UINT8)),
    ("i8", hg.Typed(-7, V.INT8)),
    ("u16", hg.Typed(65535, V.UINT16)),
    ("i16", hg.Typed(-300, V.INT16)),
    ("u32", 4000000000),
    ("i32", hg.Typed(-5, V.INT32)),
    ("f32", 0.25),
    ("bool", True),
    ("u64", hg.Typed(2**40, V.UINT64)),
    ("i64", -(2**40)),
    ("f64", hg.Typed(1e-300, V.FLOAT64)),
    ("str", "汉字 ▁ <0x0A>"),
    ("strings", ["<s>", "你好", ""]),
    ("ints", [1, -2, 3]),
    ("floats", hg.Typed([0.5, -1.5], V.FLOAT32)),
]


def test_the_gguf_package_reads_what_hanpack_writes(tmp_path):
    path = tmp_path / "t.gguf"
    arrays = sample_arrays()
    write(path, METADATA, arrays)
    r = gguf.GGUFReader(path)
    fields = {f.name: f for f in r.fields.values()}
    assert fields["general.architecture"].contents() == "llama"
    assert fields["strings"].contents() == ["<s>", "你好", ""]
    assert fields["ints"].contents() == [1, -2, 3]
    assert fields["u64"].contents() == 2**40 and fields["i8"].contents() == -7
    for t in r.tensors:
        a, qtype = arrays[t.name]
        assert t.tensor_type.name == qtype
        assert tuple(int(d) for d in reversed(t.shape)) == a.shape
        assert np.array_equal(np.asarray(t.data).reshape(-1).view(np.uint8), hg.quantize(a, qtype).reshape(-1))


def test_hanpack_reads_what_the_gguf_package_writes(tmp_path):
    path = tmp_path / "g.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", 5)
    w.add_array("tokenizer.ggml.tokens", ["a", "你"])
    w.add_float32("f", 1.5)
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("w", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("n", x[0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    f = hg.GGUFFile(path)
    assert f.metadata["llama.block_count"] == 5 and f.metadata["tokenizer.ggml.tokens"] == ["a", "你"]
    assert f.metadata_types["tokenizer.ggml.tokens"] == (V.ARRAY, V.STRING)
    assert f.tensors["w"].shape == (8, 256) and f.tensors["w"].qtype == "Q8_0"
    assert np.array_equal(f.raw("w"), q)
    assert np.array_equal(f.dequantize("n"), x[0])


def test_round_trip_keeps_metadata_types_and_tensors(tmp_path):
    path = tmp_path / "t.gguf"
    arrays = sample_arrays()
    write(path, METADATA, arrays)
    f = hg.GGUFFile(path)
    assert list(f.tensors) == list(arrays)
    assert f.metadata["i16"] == -300 and f.metadata_types["i16"] == V.INT16
    assert f.metadata["floats"] == [0.5, -1.5] and f.metadata_types["ints"] == (V.ARRAY, V.INT32)
    assert f.metadata["str"] == "汉字 ▁ <0x0A>"
    for n, (a, t) in arrays.items():
        assert np.array_equal(f.raw(n).reshape(-1), hg.quantize(a, t).reshape(-1))
        assert f.dequantize(n).shape == a.shape
        assert f.tensors[n].offset % 32 == 0


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20), st.one_of(st.text(max_size=30), st.integers(0, 2**32 - 1), st.booleans(),
                                                                   st.lists(st.text(max_size=10), min_size=1, max_size=5)), max_size=6))
def test_any_metadata_round_trips(tmp_path_factory, md):
    path = tmp_path_factory.mktemp("h") / "m.gguf"
    write(path, list(md.items()), {})
    assert hg.GGUFFile(path).metadata == md


def test_writer_checks_order_sizes_and_completeness(tmp_path):
    spec = [hg.TensorSpec("a", (2, 32), "Q8_0"), hg.TensorSpec("b", (32,), "F32")]
    path = tmp_path / "w.gguf"
    with pytest.raises(InvalidArgumentError, match="got tensor 'b', expected 'a'"):
        with hg.GGUFWriter(path, [], spec) as w:
            w.write("b", np.zeros(32, np.float32))
    with pytest.raises(InvalidArgumentError, match="100 bytes given"):
        with hg.GGUFWriter(path, [], spec) as w:
            w.write("a", b"\0" * 100)
    with pytest.raises(InvalidArgumentError, match="1 tensors were never written"):
        with hg.GGUFWriter(path, [], spec) as w:
            w.write("a", hg.quantize(np.zeros((2, 32), np.float32), "Q8_0"))
    with pytest.raises(InvalidArgumentError, match="appears twice"):
        hg.GGUFWriter(path, [], [spec[0], spec[0]])
    with pytest.raises(InvalidArgumentError, match="empty array"):
        hg.GGUFWriter(path, [("k", [])], [])
    with pytest.raises(InvalidArgumentError, match="do not fit Q4_K blocks"):
        hg.GGUFWriter(path, [], [hg.TensorSpec("a", (2, 32), "Q4_K")])
    assert not path.exists() and not list(tmp_path.iterdir())


def test_truncated_and_lying_files_are_errors(tmp_path):
    path = tmp_path / "t.gguf"
    write(path, METADATA, sample_arrays())
    data = path.read_bytes()
    f = hg.GGUFFile(path)
    data_start = min(t.offset for t in f.tensors.values())
    for n in (0, 3, 10, 100, data_start - 1, len(data) - 1):
        cut = tmp_path / f"cut{n}.gguf"
        cut.write_bytes(data[:n])
        with pytest.raises(ModelFormatError, match=f"cut{n}.gguf"):
            hg.GGUFFile(cut)
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\3\4" + data[4:])
    with pytest.raises(ModelFormatError, match="no \"GGUF\" magic"):
        hg.GGUFFile(not_gguf)


def test_a_real_llamacpp_vocab_file_reads():
    path = require_shared(TOKENIZERS / "llamacpp-vocab" / "ggml-vocab-llama-spm.gguf")
    f = hg.GGUFFile(path)
    assert f.metadata["tokenizer.ggml.model"] == "llama"
    assert len(f.metadata["tokenizer.ggml.tokens"]) == len(f.metadata["tokenizer.ggml.scores"]) == 32000
