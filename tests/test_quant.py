"""hanpack.quant against the numpy reference in quant_reference.py (written from the
layout and method docs), plus errors, pickling and real stories260k weights.

Tolerances, named and explained:

* rtn: exact (codes, scales, zeros and dequantized values bit for bit).
* mse: the candidate errors are f32-lane sums in Rust and float64 sums in numpy, so a near-tie between two clipping candidates may resolve differently. The
  test requires identical parameters for at least ``MSE_SAME_FRACTION`` of the groups
  and, where they differ, that Rust's choice is no worse than the reference's by more
  than ``MSE_TIE_RTOL`` (relative, in the group's squared error).
* hqq: the zero update is a mean summed in f32 lanes in Rust and in float64 in numpy,
  and the early stop compares errors; a flip moves the zero by at most one more
  iteration. The test requires identical scales, zeros equal for ``HQQ_SAME_FRACTION``
  of groups and within ``HQQ_ZERO_ATOL`` code units everywhere, and the same total
  error within ``HQQ_ERR_RTOL``. Symmetric grids optimise the scale instead (the zero is
  fixed): scales equal for ``HQQ_SAME_FRACTION`` of groups and within
  ``HQQ_SCALE_RTOL`` relative everywhere.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import quant_reference as R
from conftest import SHARED, require_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hanpack.quant as hq
from hanpack.exceptions import InvalidArgumentError, NonFiniteWeightError, QuantizationError

MSE_SAME_FRACTION = 0.95
MSE_TIE_RTOL = 1e-6
HQQ_SAME_FRACTION = 0.9
HQQ_ZERO_ATOL = 0.25
HQQ_ERR_RTOL = 1e-3
HQQ_SCALE_RTOL = 0.02

BITS = (2, 3, 4, 8)
GROUPS = (32, 64, 128, None)
STORIES = SHARED / "models" / "stories260k" / "model.safetensors"


def weight(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.02
    w[rng.random((rows, cols)) < 0.01] *= 20  # a few outliers, as real weights have
    return w


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("group_size", GROUPS)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("method", ["rtn", "mse", "hqq"])
def test_matches_numpy_reference(method, bits, group_size, sym):
    w = weight(12, 172, seed=bits)  # 172: short last group (the stories260k down_proj case)
    q = hq.quantize(w, bits=bits, group_size=group_size, method=method, sym=sym)
    rq, rs, rz = R.quantize(w, bits, group_size, method, sym)
    codes = R.unpack(q.packed, bits, w.shape[1])
    got = q.dequantize()
    # The dequantization is the documented formula applied to the arrays, exactly.
    assert np.array_equal(got, R.dequantize(codes, q.scales, q.zeros, q.group_size))
    if method == "rtn":
        assert np.array_equal(q.scales, rs) and np.array_equal(q.zeros, rz) and np.array_equal(codes, rq)
    elif method == "mse":
        same = (q.scales == rs) & (q.zeros == rz)
        assert same.mean() >= MSE_SAME_FRACTION
        for r, k in zip(*np.nonzero(~same)):
            sl = slice(k * q.group_size, (k + 1) * q.group_size)
            g = w[r : r + 1, sl]
            ours = R.sq_error(g, q.scales[r, k : k + 1], q.zeros[r, k : k + 1], bits, None)[0]
            ref = R.sq_error(g, rs[r, k : k + 1], rz[r, k : k + 1], bits, None)[0]
            assert ours <= ref * (1 + MSE_TIE_RTOL)
    elif not sym:
        assert np.array_equal(q.scales, rs)
        assert (q.zeros == rz).mean() >= HQQ_SAME_FRACTION
        assert np.abs(q.zeros.astype(np.float32) - rz.astype(np.float32)).max() <= HQQ_ZERO_ATOL
    else:  # symmetric: the zero is fixed and the scale is what is optimised
        assert np.array_equal(q.zeros, rz)
        assert (q.scales == rs).mean() >= HQQ_SAME_FRACTION
        assert np.abs(q.scales.astype(np.float32) / rs.astype(np.float32) - 1).max() <= HQQ_SCALE_RTOL
    if method == "hqq":
        ref = R.dequantize(rq, rs, rz, q.group_size)
        assert abs(rel_err(got, w) - rel_err(ref, w)) <= HQQ_ERR_RTOL * rel_err(ref, w)


@pytest.mark.parametrize("bits", BITS)
def test_sizes_and_bits_per_weight(bits):
    q = hq.quantize(weight(4, 4096), bits=bits, group_size=128, method="rtn")
    assert q.packed.shape == (4, 4096 * bits // 8) and q.packed.dtype == np.uint8
    assert q.scales.shape == q.zeros.shape == (4, 32) and q.scales.dtype == np.float16
    assert q.bits_per_weight == bits + 32 / 128
    assert q.nbytes == q.packed.nbytes + 2 * q.scales.nbytes
    assert (q.shape, q.bits, q.group_size) == ((4, 4096), bits, 128)


def test_importance_weights_the_mse_search():
    w = weight(16, 128, seed=5)
    imp = np.random.default_rng(1).random(128).astype(np.float32) * 10
    q = hq.quantize(w, bits=3, group_size=64, method="mse", importance=imp)
    _, rs, rz = R.quantize(w, 3, 64, "mse", False, imp)
    assert ((q.scales == rs) & (q.zeros == rz)).mean() >= MSE_SAME_FRACTION
    plain = hq.quantize(w, bits=3, group_size=64, method="mse")
    werr = lambda t: float((((t.dequantize() - w) ** 2) * imp).sum())  # noqa: E731
    assert werr(q) <= werr(plain) * (1 + MSE_TIE_RTOL)


@st.composite
def cases(draw):
    rows = draw(st.integers(1, 5))
    cols = draw(st.integers(1, 300))
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    kind = draw(st.sampled_from(["normal", "zero", "constant", "tiny", "huge", "mixed"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "normal":
        w = rng.standard_normal((rows, cols)) * draw(st.sampled_from([1e-3, 1.0, 100.0]))
    elif kind == "zero":
        w = np.zeros((rows, cols))
    elif kind == "constant":
        w = np.full((rows, cols), draw(st.sampled_from([-3.5, 1e-3, 7.0])))
    elif kind == "tiny":
        w = rng.standard_normal((rows, cols)) * 1e-30
    elif kind == "huge":  # near fp16's limit (65504)
        w = rng.choice([-6e4, 6e4, 0.0, 3e4], size=(rows, cols))
    else:  # zero groups next to normal ones
        w = rng.standard_normal((rows, cols))
        w[:, : cols // 2] = 0
    w = w.astype(np.float32)
    if dtype == "float16":
        return w.astype(np.float16), w.astype(np.float16).astype(np.float32), {}
    if dtype == "bfloat16":
        bits = R.to_bf16_bits(w)
        return bits, R.from_bf16_bits(bits), {"dtype": "bfloat16"}
    return w, w, {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), bits=st.sampled_from(BITS), group_size=st.sampled_from(GROUPS), sym=st.booleans())
def test_rtn_exact_for_any_shape_dtype_and_values(case, bits, group_size, sym):
    arr, w32, kw = case
    q = hq.quantize(arr, bits=bits, group_size=group_size, method="rtn", sym=sym, **kw)
    rq, rs, rz = R.quantize(w32, bits, group_size, "rtn", sym)
    codes = R.unpack(q.packed, bits, w32.shape[1])
    assert np.array_equal(q.scales, rs) and np.array_equal(q.zeros, rz) and np.array_equal(codes, rq)
    # Padding codes past in_features are zero.
    full = R.unpack(q.packed, bits, q.packed.shape[1] * 8 // bits)
    assert not full[:, w32.shape[1] :].any()
    got = q.dequantize()
    assert np.array_equal(got, R.dequantize(rq, rs, rz, q.group_size))
    with np.errstate(over="ignore"):  # values near 65504 may round past fp16's range
        assert np.array_equal(q.dequantize(np.float16), got.astype(np.float16))
    assert np.isfinite(got).all()


@settings(max_examples=40, deadline=None)
@given(case=cases(), bits=st.sampled_from(BITS), method=st.sampled_from(["mse", "hqq"]), sym=st.booleans())
def test_mse_and_hqq_stay_finite_and_close(case, bits, method, sym):
    arr, w32, kw = case
    q = hq.quantize(arr, bits=bits, group_size=32, method=method, sym=sym, **kw)
    got = q.dequantize()
    assert np.isfinite(got).all() and np.isfinite(q.zeros).all()
    step = np.repeat(np.abs(q.scales.astype(np.float32)), 32, axis=1)[:, : w32.shape[1]]
    # Within one step plus a clipped range (mse clips at most 11%; its refit and hqq move the grid).
    span = np.repeat(np.abs(q.scales.astype(np.float32)) * (2**bits), 32, axis=1)[:, : w32.shape[1]]
    assert (np.abs(got - w32) <= step + span + 1e-6).all()


def test_nan_and_inf_name_the_tensor_and_position():
    w = weight(8, 64)
    w[3, 17] = np.nan
    w[5, 2] = np.inf
    with pytest.raises(NonFiniteWeightError, match=r"model\.layers\.0\.q_proj.*\[3, 17\]"):
        hq.quantize(w, bits=4, group_size=32, name="model.layers.0.q_proj")
    h = weight(2, 64).astype(np.float16)
    h[1, 40] = -np.inf
    with pytest.raises(NonFiniteWeightError, match=r'"w16".*-inf at \[1, 40\]') as e:
        hq.quantize(h, bits=4, group_size=None, name="w16")
    assert isinstance(e.value, QuantizationError) and isinstance(e.value, ValueError)


def test_bad_arguments():
    w = weight(2, 64)
    with pytest.raises(InvalidArgumentError, match="bits"):
        hq.quantize(w, bits=5, group_size=32)
    with pytest.raises(InvalidArgumentError, match="group_size"):
        hq.quantize(w, bits=4, group_size=48)
    with pytest.raises(InvalidArgumentError, match="method"):
        hq.quantize(w, bits=4, group_size=32, method="gptq")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="importance is only used"):
        hq.quantize(w, bits=4, group_size=32, method="hqq", importance=np.ones(64))
    with pytest.raises(InvalidArgumentError, match="importance must have shape"):
        hq.quantize(w, bits=4, group_size=32, method="mse", importance=np.ones(63))
    with pytest.raises(QuantizationError, match="importance"):
        hq.quantize(w, bits=4, group_size=32, method="mse", importance=-np.ones(64))
    with pytest.raises(InvalidArgumentError, match="2-D"):
        hq.quantize(w[0], bits=4, group_size=32)
    with pytest.raises(TypeError, match="float64"):
        hq.quantize(w.astype(np.float64), bits=4, group_size=32)
    with pytest.raises(QuantizationError, match='"big".*fp16'):
        hq.quantize(np.array([[1e6, -1e6]], np.float32), bits=2, group_size=None, name="big", method="rtn")


def test_non_contiguous_input_is_copied_once_and_gives_the_same_result():
    w = weight(64, 128)
    a = hq.quantize(w.T, bits=4, group_size=32, method="rtn")
    b = hq.quantize(np.ascontiguousarray(w.T), bits=4, group_size=32, method="rtn")
    assert np.array_equal(a.packed, b.packed) and np.array_equal(a.scales, b.scales)


def test_ml_dtypes_bfloat16_matches_uint16_bits():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = weight(4, 96)
    a = hq.quantize(w.astype(ml_dtypes.bfloat16), bits=4, group_size=32, method="hqq")
    b = hq.quantize(R.to_bf16_bits(w), bits=4, group_size=32, method="hqq", dtype="bfloat16")
    assert np.array_equal(a.packed, b.packed) and np.array_equal(a.zeros, b.zeros)


def test_immutable_and_picklable():
    q = hq.quantize(weight(4, 64), bits=3, group_size=32, method="hqq", sym=True)
    r = pickle.loads(pickle.dumps(q))
    assert np.array_equal(r.dequantize(), q.dequantize()) and repr(r) == repr(q)
    with pytest.raises(AttributeError):
        q.bits = 4  # type: ignore[misc]
    with pytest.raises(ValueError):
        q.packed[0, 0] = 1
    with pytest.raises(InvalidArgumentError, match="packed"):
        hq.QuantizedTensor(packed=q.packed[:, :-1], scales=q.scales, zeros=q.zeros, shape=q.shape, bits=3, group_size=32)


@pytest.mark.parametrize("method", ["rtn", "mse", "hqq"])
def test_error_decreases_with_bits(method):
    w = weight(32, 256, seed=9)
    errs = [rel_err(hq.quantize(w, bits=b, group_size=64, method=method).dequantize(), w) for b in BITS]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.01


def stories_weights():
    require_shared(STORIES)
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    tensors = safetensors_numpy.load_file(str(STORIES))
    return {k: v for k, v in tensors.items() if v.ndim == 2 and k.endswith("proj.weight")}


@pytest.mark.shared
@pytest.mark.parametrize("bits,group_size", [(4, 64), (4, 32), (3, 64), (3, 32), (2, 32)])
def test_mse_and_hqq_beat_rtn_on_stories260k(bits, group_size):
    """stories260k's linears have 64 or 172 inputs, so groups of 32/64 stand in for 128."""
    totals = {}
    for method in ("rtn", "mse", "hqq"):
        num = den = 0.0
        for name, w in stories_weights().items():
            d = hq.quantize(w, bits=bits, group_size=group_size, method=method, name=name).dequantize()
            num += float(((d.astype(np.float64) - w) ** 2).sum())
            den += float((w.astype(np.float64) ** 2).sum())
        totals[method] = (num / den) ** 0.5
    assert totals["mse"] <= totals["rtn"] and totals["hqq"] <= totals["rtn"], totals
