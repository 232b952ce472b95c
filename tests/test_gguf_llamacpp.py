"""hanpack.gguf's quantizers byte for byte against llama.cpp's C code (through
``llamacpp_reference``): every block format, with and without an importance matrix, on
real stories260k weights and on hypothesis-generated blocks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED, require_shared
from test_gguf_blocks import legacy_scale_is_invertible
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import hanpack.gguf as hg
import llamacpp_reference as llama

STORIES = SHARED / "models" / "stories260k" / "model.safetensors"
LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
QUANTIZED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"]


def stories_rows() -> np.ndarray:
    """stories260k's matrices, flattened into rows of 512 real weights."""
    from safetensors.numpy import load_file

    ws = load_file(str(require_shared(STORIES)))
    return np.concatenate([w.reshape(-1)[: w.size // 512 * 512].reshape(-1, 512) for w in ws.values() if w.ndim == 2])


def assert_same(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    bad = np.flatnonzero((ours != ref).any(axis=-1))
    assert bad.size == 0, f"{what}: {bad.size} of {len(ref)} rows differ (first {bad[:5]})"


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_real_weights_match_llamacpp(qtype):
    rows = stories_rows()
    assert_same(hg.quantize(rows, qtype), llama.quantize(rows, qtype), qtype)


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_real_weights_with_an_imatrix_match_llamacpp(qtype):
    rows = stories_rows()
    # An importance matrix shaped like llama-imatrix's: mean squared activations, a
    # few channels dominating.
    imatrix = np.exp(np.random.default_rng(5).standard_normal(rows.shape[1]) * 1.5).astype(np.float32)
    assert_same(hg.quantize(rows, qtype, imatrix=imatrix), llama.quantize(rows, qtype, imatrix), qtype)


values = st.floats(min_value=-1e3, max_value=1e3, width=32, allow_subnormal=True)


@st.composite
def super_blocks(draw):
    """One 256-weight row: arbitrary values, or structured cases (a constant, zeros with
    a signed zero first, one outlier, all-positive, tiny magnitudes)."""
    x = np.array(draw(st.lists(values, min_size=256, max_size=256)), dtype=np.float32)
    style = draw(st.integers(0, 5))
    if style == 1:
        x[:] = x[0]
    elif style == 2:
        x[:] = 0.0
        x[0] = -0.0
        x[draw(st.integers(1, 255))] = draw(values)
    elif style == 3:
        x *= np.float32(1e-4)
        x[draw(st.integers(0, 255))] = 50.0
    elif style == 4:
        x = np.abs(x)
    elif style == 5:
        x *= np.float32(1e-20)
    return x.reshape(1, 256)


@settings(max_examples=150, deadline=None)
@given(super_blocks(), st.sampled_from(QUANTIZED), st.booleans(), st.integers(0, 2**32 - 1))
def test_generated_blocks_match_llamacpp(x, qtype, weighted, seed):
    imatrix = np.random.default_rng(seed).random(256).astype(np.float32) * 4 if weighted else None
    assume(qtype not in LEGACY or legacy_scale_is_invertible(x))
    assert np.array_equal(hg.quantize(x, qtype, imatrix=imatrix), llama.quantize(x, qtype, imatrix))


def test_an_all_zero_block_keeps_ggmls_scale_sign():
    """ggml's C starts the signed maximum at +0.0 (gguf's numpy takes the first value)."""
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = -0.0
    ours = hg.quantize(x, "Q4_0")
    assert np.array_equal(ours, llama.quantize(x, "Q4_0"))
    assert ours[0, :2].tobytes() == b"\x00\x80"  # fp16 -0.0 = +0.0 / -8
