"""hanpack.gguf's block formats against the ``gguf`` package (llama.cpp's own Python
reference): quantization byte for byte where gguf has a quantizer (Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0, BF16, F16) and dequantization bit for bit for every type, on real
stories260k weights and on hypothesis-generated blocks. Byte equality with llama.cpp's
C quantizers (K-quants, IQ4_NL, importance-weighted variants) is in
``test_gguf_llamacpp.py``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import SHARED, require_shared
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import hanpack.gguf as hg
from hanpack.exceptions import InvalidArgumentError, NonFiniteWeightError, QuantizationError

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf import quants  # noqa: E402

STORIES = SHARED / "models" / "stories260k" / "model.safetensors"
WITH_GGUF_QUANTIZER = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16"]
QUANTIZED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"]
ALL = QUANTIZED + ["F32", "F16", "BF16"]


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical float32 arrays (NaN payloads included)."""
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def stories_rows(block: int) -> dict:
    """Every stories260k tensor, flattened into rows of `block` real weights."""
    from safetensors.numpy import load_file

    out = {}
    for name, w in load_file(str(require_shared(STORIES))).items():
        flat = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
        n = flat.size // block * block
        if n:
            out[name] = flat[:n].reshape(-1, block)
    return out


def test_type_table_matches_gguf():
    for name in ALL:
        info = hg.type_info(name)
        assert info.id == int(T[name])
        assert (info.block_size, info.type_size) == gguf.GGML_QUANT_SIZES[T[name]]
        assert hg.type_info(T[name]) == info == hg.type_info(name.lower())


@pytest.mark.parametrize("qtype", WITH_GGUF_QUANTIZER)
def test_quantize_is_byte_exact_on_real_weights(qtype):
    for name, rows in stories_rows(256).items():
        ours = hg.quantize(rows, qtype)
        ref = quants.quantize(rows, T[qtype]).view(np.uint8)
        assert ours.shape == ref.shape
        bad = np.flatnonzero((ours != ref).any(axis=-1))
        assert bad.size == 0, f"{name}: rows {bad[:5]} differ"


@pytest.mark.parametrize("qtype", ALL)
def test_dequantize_is_bit_exact_on_real_weights(qtype):
    for name, rows in stories_rows(256).items():
        q = hg.quantize(rows, qtype)
        assert same_floats(hg.dequantize(q, qtype), quants.dequantize(q, T[qtype])), name


def test_the_error_is_what_each_type_promises_on_real_weights():
    """Relative RMS error on stories260k's weights falls with the bits per weight."""
    rows = np.concatenate(list(stories_rows(256).values()))
    errs = {}
    for qtype in QUANTIZED:
        d = hg.dequantize(hg.quantize(rows, qtype), qtype)
        errs[qtype] = float(np.sqrt(((d - rows) ** 2).sum() / (rows**2).sum()))
    order = sorted(QUANTIZED, key=lambda t: hg.type_info(t).bits_per_weight)
    assert errs["Q8_0"] < 0.01 and errs["Q2_K"] < 0.5
    # K-quants beat the legacy type of the same size (llama.cpp's reason for them).
    assert errs["Q4_K"] < errs["Q4_0"] and errs["Q5_K"] < errs["Q5_0"]
    assert errs[order[0]] > errs[order[-1]]


blocks = st.lists(
    st.floats(min_value=-1e4, max_value=1e4, width=32, allow_subnormal=True),
    min_size=256,
    max_size=256,
).map(lambda v: np.array(v, dtype=np.float32).reshape(1, 256))


def legacy_scale_is_invertible(x: np.ndarray) -> bool:
    """False when some 32-value block's largest magnitude is so small (below ~1e-35) that
    the reciprocal of its scale overflows to infinity. ggml's C then converts inf/NaN
    products to integers, which C leaves undefined (x86 gives INT_MIN, ARM saturates) and
    gguf's numpy casts them platform-dependently: there is no reference answer to match.
    Real weights are never that small; hanpack's answer there is only required to be
    valid bytes (``test_tiny_blocks_quantize_to_finite_values``)."""
    amax = np.abs(x.reshape(-1, 32)).max(axis=1)
    return bool(np.all((amax == 0) | (amax >= 1e-30)))


def shaped(draw_blocks: np.ndarray, style: int) -> np.ndarray:
    """Variants hypothesis alone rarely finds: constant blocks, all-zero halves, one
    outlier, tiny values."""
    b = draw_blocks.copy()
    if style == 1:
        b[:] = b[0, 0]
    elif style == 2:
        b[0, :128] = 0
    elif style == 3:
        b *= 1e-6
        b[0, 7] = 3.0
    elif style == 4:
        b *= 1e-30
    return b


@settings(max_examples=300, deadline=None)
@given(blocks, st.integers(0, 4), st.sampled_from(WITH_GGUF_QUANTIZER))
def test_quantize_matches_gguf_on_generated_blocks(block, style, qtype):
    # `+ 0.0` turns -0.0 into 0.0: on an all-zero block whose first value is -0.0,
    # gguf's numpy takes that sign for the scale, ggml's C (hanpack) keeps +0.0; the
    # llama.cpp test checks that case against the C code.
    b = shaped(block, style) + np.float32(0.0)
    assume(legacy_scale_is_invertible(b))
    assert np.array_equal(hg.quantize(b, qtype), quants.quantize(b, T[qtype]).view(np.uint8))


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_tiny_blocks_quantize_to_finite_values(qtype):
    """Where the references are undefined (scales whose reciprocal overflows, see
    ``legacy_scale_is_invertible``), hanpack still gives valid blocks: finite values no
    farther from the input than the input's own magnitude."""
    x = np.zeros((2, 256), np.float32)
    x[0, 15], x[0, 200] = 1.1754944e-38, -3e-39
    x[1, ::7] = np.float32(1e-44)
    assert not legacy_scale_is_invertible(x[:1])
    back = hg.dequantize(hg.quantize(x, qtype), qtype)
    assert np.isfinite(back).all()
    assert np.abs(back - x).max() <= np.abs(x).max()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1024, max_size=1024), st.sampled_from(QUANTIZED))
def test_dequantize_matches_gguf_on_any_bytes(raw, qtype):
    """Every byte pattern is a valid block (NaN and infinite scales included)."""
    ts = hg.type_info(qtype).type_size
    data = np.frombuffer(raw, dtype=np.uint8)[: 1024 // ts * ts].reshape(1, -1)
    with np.errstate(all="ignore"):
        ref = quants.dequantize(data, T[qtype])
    assert same_floats(hg.dequantize(data, qtype), ref)


def test_shapes_follow_gguf_quants():
    x = np.zeros((2, 3, 512), np.float32)
    q = hg.quantize(x, "Q4_K")
    assert q.shape == (2, 3, 288) and q.dtype == np.uint8
    assert hg.dequantize(q, "Q4_K").shape == (2, 3, 512)
    assert hg.quantize(x.astype(np.float16), "Q8_0").shape == (2, 3, 544)


def test_bad_arguments_raise_specific_errors():
    x = np.ones((2, 64), np.float32)
    with pytest.raises(InvalidArgumentError, match="Q4_K blocks"):
        hg.quantize(x, "Q4_K")
    with pytest.raises(InvalidArgumentError, match="unsupported ggml type 'Q9_9'"):
        hg.quantize(x, "Q9_9")
    with pytest.raises(InvalidArgumentError, match="unsupported ggml type 99"):
        hg.quantize(x, 99)
    with pytest.raises(TypeError, match="float array"):
        hg.quantize(x.astype(np.int32), "Q8_0")
    with pytest.raises(InvalidArgumentError, match=r"imatrix for 'w' must have shape \(64,\)"):
        hg.quantize(x, "Q4_0", imatrix=np.ones(3), name="w")
    with pytest.raises(QuantizationError, match="imatrix"):
        hg.quantize(x, "Q4_0", imatrix=-np.ones(64))
    with pytest.raises(InvalidArgumentError, match="whole number of Q4_0 blocks"):
        hg.dequantize(np.zeros((1, 17), np.uint8), "Q4_0")
    bad = x.copy()
    bad[1, 33] = np.inf
    with pytest.raises(NonFiniteWeightError, match=r'"blk\.0\.attn_q\.weight".*\[1, 33\]'):
        hg.quantize(bad, "Q4_0", name="blk.0.attn_q.weight")


def test_inputs_are_not_modified_and_types_pickle():
    x = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    before = x.copy()
    hg.quantize(x, "Q3_K", imatrix=np.ones(256, np.float32))
    assert np.array_equal(x, before)
    info = hg.type_info("IQ4_NL")
    assert pickle.loads(pickle.dumps(info)) == info
