"""hanpack.nn.QuantLinear: the fused CPU kernel against dense math on the dequantized
weight, the torch dequantization against hanpack's, dtypes, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import hanpack.nn  # noqa: E402
from hanpack.exceptions import InvalidArgumentError  # noqa: E402
from hanpack.quant import quantize  # noqa: E402

SHAPES = [(37, 256, 128), (20, 172, 64), (5, 100, None), (64, 96, 32)]


def _quantized(bits: int, out_f: int, in_f: int, group, seed: int = 0):
    w = np.random.default_rng(seed).standard_normal((out_f, in_f)).astype(np.float32)
    return quantize(w, bits=bits, group_size=group, method="rtn")


def _close(got: "torch.Tensor", x: "torch.Tensor", w: "torch.Tensor", rel: float) -> None:
    want = x.double() @ w.double().T
    scale = x.double().abs() @ w.double().abs().T
    err = (got.double() - want).abs()
    assert bool((err <= rel * scale + 1e-6).all()), float((err / (scale + 1e-12)).max())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{o}x{i}g{g}" for o, i, g in SHAPES])
def test_forward_matches_dense_math_on_the_dequantized_weight(bits, shape):
    out_f, in_f, group = shape
    q = _quantized(bits, out_f, in_f, group)
    lin = hanpack.nn.QuantLinear.from_quantized(q)
    w = torch.from_numpy(q.dequantize())
    assert torch.equal(lin.dequantized_weight(), w)  # torch unpacking == hanpack's
    for batch in (1, 5):
        x = torch.randn(batch, in_f)
        _close(lin(x), x, w, 1e-5)
    x3 = torch.randn(2, 3, in_f)
    assert lin(x3).shape == (2, 3, out_f)
    _close(lin(x3).reshape(6, out_f), x3.reshape(6, in_f), w, 1e-5)


def test_bf16_and_fp16_activations_and_bias():
    q = _quantized(4, 48, 256, 128, seed=1)
    bias = torch.randn(48)
    lin = hanpack.nn.QuantLinear.from_quantized(q, bias)
    w = torch.from_numpy(q.dequantize())
    x = torch.randn(3, 256)
    for dtype in (torch.bfloat16, torch.float16):
        xd = x.to(dtype)
        y = lin(xd)
        assert y.dtype == dtype
        want = xd.float() @ w.T + bias
        assert torch.allclose(y.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{o}x{i}g{g}" for o, i, g in SHAPES])
def test_bf16_activations_at_batch_1(bits, shape):
    """Batch 1 in bf16 (int4 takes the bf16 dot-product kernel where the CPU has one): the
    f32 product of the bf16 inputs, rounded to bf16 once."""
    out_f, in_f, group = shape
    q = _quantized(bits, out_f, in_f, group, seed=2)
    lin = hanpack.nn.QuantLinear.from_quantized(q)
    w = torch.from_numpy(q.dequantize())
    x = torch.randn(1, in_f).bfloat16()
    y = lin(x)
    assert y.dtype == torch.bfloat16
    _close(y.float(), x.float(), w, 2.0 ** -8)


def _int8_activations(x: "torch.Tensor") -> "torch.Tensor":
    """x̂ of ``act_bits=8``, written independently: per row, blocks of 128 inputs, scale
    max|x| / 127, codes rounded half away from zero, in float32 throughout."""
    xs = x.float().numpy()
    out = np.zeros_like(xs)
    for r in range(xs.shape[0]):
        for b in range(0, xs.shape[1], 128):
            blk = xs[r, b:b + 128]
            s = np.float32(np.abs(blk).max()) / np.float32(127.0)
            inv = np.float32(1.0) / s if s > 0 else np.float32(0.0)
            v = blk * inv
            codes = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
            out[r, b:b + 128] = s * codes
    return torch.from_numpy(out)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("shape", SHAPES + [(33, 4096, 128), (9, 352, None)],
                         ids=[f"{o}x{i}g{g}" for o, i, g in SHAPES + [(33, 4096, 128), (9, 352, None)]])
def test_int8_activations_are_the_product_with_dequantized_activations(bits, shape):
    out_f, in_f, group = shape
    q = _quantized(bits, out_f, in_f, group, seed=3)
    lin = hanpack.nn.QuantLinear.from_quantized(q, act_bits=8)
    assert "act_bits=8" in repr(lin)
    w = torch.from_numpy(q.dequantize())
    for batch in (1, 4):
        x = torch.randn(batch, in_f) * torch.linspace(0.1, 3.0, in_f)
        xhat = _int8_activations(x)
        assert not torch.equal(xhat, x)
        _close(lin(x), xhat, w, 1e-5)
        # bf16 inputs are widened first, then quantized the same way.
        xb = x.bfloat16()
        _close(lin(xb).float(), _int8_activations(xb.float()), w, 2.0 ** -8)


def test_act_bits_must_be_8_or_none():
    with pytest.raises(InvalidArgumentError, match="act_bits"):
        hanpack.nn.QuantLinear(64, 8, bits=4, group_size=32, act_bits=4)


def test_from_linear_state_dict_and_memory():
    torch.manual_seed(0)
    dense = torch.nn.Linear(512, 384)
    lin = hanpack.nn.QuantLinear.from_linear(dense, bits=4, group_size=128, method="hqq")
    x = torch.randn(4, 512)
    with torch.no_grad():
        want = dense(x)
        assert torch.allclose(lin(x), want, atol=0.1 * float(want.abs().max()))
    again = hanpack.nn.QuantLinear(512, 384, bits=4, group_size=128)
    again.load_state_dict(lin.state_dict())
    assert torch.equal(again(x), lin(x))
    weight_bytes = sum(b.numel() * b.element_size() for b in (lin.qweight, lin.scales, lin.zeros))
    assert weight_bytes / (512 * 384 * 4) == pytest.approx(4.25 / 32)


def test_inputs_of_every_kind_take_the_same_product():
    # forward's fast path (float32 CPU, no grad) and the others agree: grad-tracking,
    # non-contiguous, 1-D, 3-D and bf16 inputs, with and without int8 activations.
    q = _quantized(4, 40, 256, 128, seed=2)
    w = torch.from_numpy(q.dequantize())
    for act_bits in (None, 8):
        lin = hanpack.nn.QuantLinear.from_quantized(q, act_bits=act_bits)
        x = torch.randn(3, 256)
        want = lin(x)
        assert want.dtype == torch.float32 and want.shape == (3, 40)
        if act_bits is None:
            _close(want, x, w, 1e-5)
        assert torch.equal(lin(x.clone().requires_grad_()), want)
        assert torch.equal(lin(x.t().contiguous().t()), want)  # same values, fresh storage
        assert torch.equal(lin(torch.randn(256, 3).t().contiguous().copy_(x).t().t()), want)
        strided = torch.randn(3, 512)[:, ::2]
        strided.copy_(x)
        assert not strided.is_contiguous() and torch.equal(lin(strided), want)
        # (a single row takes the batch-1 kernels: compared with the same row as a batch of one)
        assert torch.equal(lin(x[1]), lin(x[1:2])[0]) and torch.equal(lin(x.reshape(3, 1, 256)), want.reshape(3, 1, 40))
        xb = x.bfloat16()
        yb = lin(xb)
        assert yb.dtype == torch.bfloat16 and torch.allclose(yb.float(), lin(xb.float()), rtol=2e-2, atol=2e-2)
        with pytest.raises(InvalidArgumentError, match="expects 256 input features"):
            lin(torch.tensor(1.0))


def test_products_in_a_process_forked_right_after_one():
    # A large product leaves a helper thread waiting for the next one; a process forked
    # then has no such thread, and its products must neither wait for it nor hang.
    import os
    import select

    if not hasattr(os, "fork"):
        pytest.skip("no os.fork here")
    q = _quantized(4, 1024, 1024, 128, seed=3)
    lin = hanpack.nn.QuantLinear.from_quantized(q)
    x = torch.randn(1, 1024)
    with torch.inference_mode():
        want = lin(x).numpy().tobytes()
        read_end, write_end = os.pipe()
        lin(x)  # the parent's helper is waiting as the child forks
        pid = os.fork()
        if pid == 0:  # the child: three products, their bytes to the parent
            try:
                os.close(read_end)
                got = b"".join(lin(x).numpy().tobytes() for _ in range(3))
                os.write(write_end, got)
            finally:
                os._exit(0)
    os.close(write_end)
    try:
        data = b""
        while len(data) < 3 * len(want):
            ready, _, _ = select.select([read_end], [], [], 60)
            if not ready:
                os.kill(pid, 9)
                pytest.fail("the forked child did not finish its products within 60 s (hang)", pytrace=False)
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert data == want * 3


def test_errors_name_the_problem():
    lin = hanpack.nn.QuantLinear(64, 8, bits=4, group_size=32, bias=False)
    with pytest.raises(InvalidArgumentError, match="expects 64 input features"):
        lin(torch.zeros(2, 63))
    with pytest.raises(InvalidArgumentError, match="bits must be one of"):
        hanpack.nn.QuantLinear(64, 8, bits=5)
    with pytest.raises(InvalidArgumentError, match="group_size must be"):
        hanpack.nn.QuantLinear(64, 8, group_size=48)


def test_cached_buffer_views_follow_copies_moves_and_in_place_loads():
    import copy
    import pickle

    a, b = _quantized(4, 40, 128, 64, seed=3), _quantized(4, 40, 128, 64, seed=4)
    lin = hanpack.nn.QuantLinear.from_quantized(a)
    x = torch.randn(2, 128)
    ya = lin(x)
    twin = copy.deepcopy(lin)
    lin.load_state_dict(hanpack.nn.QuantLinear.from_quantized(b).state_dict())  # in place: same storage
    yb = lin(x)
    _close(yb, x, torch.from_numpy(b.dequantize()), 1e-5)
    assert torch.equal(twin(x), ya)  # the copy kept a's weights and its own views
    lin.load_state_dict(twin.state_dict(), assign=True)  # new storage
    assert torch.equal(lin(x), ya)
    again = pickle.loads(pickle.dumps(lin))
    assert "_views" not in again.__dict__ and torch.equal(again(x), ya)


def test_module_casts_keep_scales_and_zeros_fp16():
    """``.to(torch.bfloat16)``, ``.float()``, ``.double()``, ``.half()`` cast every floating
    buffer of a model; QuantLinear's scales and zeros stay fp16 (the kernels read fp16 bits:
    a bf16 copy read that way gave garbage), bias follows the cast, products are unchanged."""
    import copy

    q = _quantized(4, 40, 256, 128, seed=5)
    lin = hanpack.nn.QuantLinear.from_quantized(q)
    x = torch.randn(3, 256)
    want, want_b = lin(x), lin(x[:1].bfloat16())
    for dtype in (torch.bfloat16, torch.float64, torch.float16, torch.float32):
        m = copy.deepcopy(lin).to(dtype)
        assert (m.scales.dtype, m.zeros.dtype) == (torch.float16, torch.float16)
        assert torch.equal(m.scales, lin.scales) and torch.equal(m.zeros, lin.zeros)
        assert torch.equal(m(x), want) and torch.equal(m(x[:1].bfloat16()), want_b)
    with_bias = hanpack.nn.QuantLinear.from_quantized(q, torch.randn(40)).to(torch.bfloat16)
    assert with_bias.bias.dtype == torch.bfloat16 and with_bias.scales.dtype == torch.float16


def test_buffers_assigned_in_another_dtype_are_read_by_value():
    """``load_state_dict(assign=True)`` with bf16 scales and zeros: their values are used
    (as fp16), not their bits."""
    q = _quantized(3, 24, 256, 128, seed=6)
    lin = hanpack.nn.QuantLinear.from_quantized(q)
    state = lin.state_dict()
    state["scales"], state["zeros"] = state["scales"].bfloat16(), state["zeros"].bfloat16()
    lin.load_state_dict(state, assign=True)
    x = torch.randn(2, 256)
    y = lin(x)
    assert lin.scales.dtype == torch.float16
    assert torch.equal(lin.scales, state["scales"].to(torch.float16))
    _close(y, x, lin.dequantized_weight(), 1e-5)
