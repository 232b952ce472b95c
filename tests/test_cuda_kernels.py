"""hanpack's CUDA kernels (``cuda/``, ``hanpack.cuda_kernels``).

Without a GPU (CI): every kernel compiles with NVRTC for sm_80 and sm_90, with no
register spills; the build embeds the repository's current sources; the compile cache and
compile errors behave; asking for the CUDA path says why it cannot run; and the kernels'
C++ run on the CPU (``tests/cuda_emulation.cpp``: a thread per CUDA thread, shuffles
through barriers) give the reference's numbers. With a GPU
(``-m gpu`` selects these; they skip without one): the GEMV and the dequantize kernel
against the CPU reference and ``torch.matmul`` on the dequantized weight, for int3 and
int4, groups 32/64/128 and per-channel, odd sizes and batches."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cuda.bindings.nvrtc", reason="NVIDIA's cuda-bindings package is not installed")

import hanpack.cuda_kernels as hk  # noqa: E402
import hanpack.quant as hq  # noqa: E402
from hanpack import _core  # noqa: E402
from hanpack.exceptions import CudaKernelError, InvalidArgumentError  # noqa: E402
from hanpack.nn import QuantLinear, dequantize_torch, quantized_buffers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KERNELS = [f"hanpack_{kind}_int{bits}_{dt}" for kind in ("gemv", "dequantize") for bits in (3, 4) for dt in ("f16", "bf16")]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")


def test_the_build_embeds_the_repository_sources() -> None:
    files = sorted(p.name for p in (REPO / "cuda").iterdir() if p.suffix in (".cu", ".cuh"))
    assert sorted(hk.sources()) == files
    for name, text in _core.CUDA_SOURCES:
        assert (REPO / "cuda" / name).read_text(encoding="utf-8") == text, f"{name}: rebuild the extension"


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_kernel_compiles_without_spills(arch: str) -> None:
    k = hk.compile_kernels(arch, cache=False)
    assert k.cubin[:4] == b"\x7fELF" and k.arch == arch
    for name in KERNELS:
        assert name.encode() in k.cubin
        m = re.search(rf"Function properties for {name}\n.*?(\d+) bytes spill stores, (\d+) bytes spill loads", k.log, re.S)
        assert m is not None, k.log
        assert m.groups() == ("0", "0"), f"{name} spills registers on {arch}"


def test_compiled_kernels_are_cached_by_source_and_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANPACK_CACHE_DIR", str(tmp_path))
    first = hk.compile_kernels("sm_80")
    assert [p.name.split("-")[0] for p in (tmp_path / "cuda").iterdir()] == ["sm_80"]
    again = hk.compile_kernels("sm_80")
    assert again.cubin == first.cubin and again.log == "(cached)"
    changed = {**hk.sources(), "gemv.cu": hk.sources()["gemv.cu"] + "\n// changed\n"}
    monkeypatch.setattr(hk, "sources", lambda: changed)
    assert hk.compile_kernels("sm_80").log != "(cached)"
    assert len(list((tmp_path / "cuda").iterdir())) == 2


def test_a_compile_error_carries_nvrtc_s_log(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {**hk.sources(), "dequantize.cu": "#include \"common.cuh\"\n__global__ void k() { undeclared_name = 1; }\n"}
    monkeypatch.setattr(hk, "sources", lambda: broken)
    with pytest.raises(CudaKernelError, match=r"(?s)could not compile.*sm_90.*undeclared_name"):
        hk.compile_kernels("sm_90", cache=False)
    with pytest.raises(InvalidArgumentError, match="sm_90"):
        hk.compile_kernels("hopper")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_a_gpu_the_cuda_path_says_why() -> None:
    assert "no CUDA device" in (hk.unavailable() or "")
    q = quantized_buffers(hq.quantize(np.ones((8, 64), np.float32), bits=4, group_size=32, method="rtn"))
    with pytest.raises(CudaKernelError, match="one CUDA device"):
        hk.quant_linear(torch.ones(1, 64), q["qweight"], q["scales"], q["zeros"], bits=4, group_size=32, in_features=64)


def test_the_op_traces_with_fake_cuda_tensors() -> None:
    """torch.compile and export trace the custom op through its fake implementation,
    which needs no GPU: the output's shape, dtype and device."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(3, 5, 64, dtype=torch.bfloat16, device="cuda")
        qw = torch.empty(100, 24, dtype=torch.uint8, device="cuda")
        s = torch.empty(100, 2, dtype=torch.float16, device="cuda")
        y = torch.ops.hanpack.quant_linear(x, qw, s, s, 3, 32, 64)
        assert (tuple(y.shape), y.dtype, y.device.type) == ((3, 5, 100), torch.bfloat16, "cuda")


def test_the_launcher_names_the_sizes_that_do_not_fit() -> None:
    q = quantized_buffers(hq.quantize(np.ones((8, 96), np.float32), bits=3, group_size=32, method="rtn"))
    qw, s, z = q["qweight"], q["scales"], q["zeros"]
    x = torch.ones(2, 96, dtype=torch.float16)
    cases = [
        (dict(x=x, qweight=qw, scales=s, zeros=z, bits=4, group_size=32, in_features=96), r"qweight must be uint8 \[out_features, 48\] for int4 with 96 inputs, got torch.uint8 \(8, 36\)"),
        (dict(x=x, qweight=qw, scales=s[:, :2], zeros=z, bits=3, group_size=32, in_features=96), r"scales must be float16 \[8, 3\], got torch.float16 \(8, 2\)"),
        (dict(x=x, qweight=qw, scales=s, zeros=z.float(), bits=3, group_size=32, in_features=96), r"zeros must be float16"),
        (dict(x=x[:, :64], qweight=qw, scales=s, zeros=z, bits=3, group_size=32, in_features=96), r"x must end in 96 input features, got shape \(2, 64\)"),
        (dict(x=x, qweight=qw, scales=s, zeros=z, bits=3, group_size=48, in_features=96), r"group_size 48 must be a multiple of 32 or in_features \(96\)"),
        (dict(x=x, qweight=qw, scales=s, zeros=z, bits=5, group_size=32, in_features=96), r"bits must be 2, 3, 4 or 8"),
    ]
    for kw, why in cases:
        x_ = kw.pop("x")
        with pytest.raises(InvalidArgumentError, match=why):
            hk.quant_linear(x_, **kw)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil
    import subprocess

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++) to build tests/cuda_emulation.cpp")
    exe = tmp_path_factory.mktemp("emulation") / "cuda_emulation"
    subprocess.run([cxx, "-std=c++20", "-O1", "-pthread", f"-I{REPO / 'cuda'}", str(REPO / "tests" / "cuda_emulation.cpp"),
                    "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


def _emulate(exe: Path, tmp: Path, mode: str, bits: int, dtype: torch.dtype, qw, s, z, *, rows: int, cols: int, group: int,
             x=None) -> torch.Tensor:
    import subprocess

    files = {}
    for name, t in (("qweight", qw), ("scales", s), ("zeros", z), ("x", x)):
        if t is not None:
            files[name] = tmp / f"{name}.bin"
            files[name].write_bytes(t.contiguous().view(torch.uint8).numpy().tobytes())
    batch = 0 if x is None else x.shape[0]
    tag = "bf16" if dtype is torch.bfloat16 else "f16"
    out = tmp / "out.bin"
    subprocess.run([str(exe), mode, str(bits), tag, str(batch), str(rows), str(cols), str(group), str(s.shape[1]),
                    str(files["qweight"]), str(files["scales"]), str(files["zeros"]), str(files.get("x", "-")), str(out)],
                   check=True)
    shape = (batch, rows) if mode == "gemv" else (rows, cols)
    return torch.frombuffer(bytearray(out.read_bytes()), dtype=torch.int16).view(dtype).reshape(shape)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_kernels_run_on_the_cpu_give_the_reference(emulator: Path, tmp_path: Path, bits: int, dtype: torch.dtype) -> None:
    """Dequantize: bit-identical to dequantize_torch. GEMV: within the output dtype's
    rounding of the float64 product, for groups of 32/64/128, per-channel, a short last
    block (172 inputs), batches 1, 3 and 8, and row counts that leave a thread block part
    empty."""
    for rows, cols, group in ((130, 172, 32), (64, 172, 172), (40, 1024, 128), (9, 4160, 64)):
        qw, s, z = _packed(rows, cols, bits, group, "cpu", seed=rows)
        w = _emulate(emulator, tmp_path, "dequantize", bits, dtype, qw, s, z, rows=rows, cols=cols, group=group)
        assert torch.equal(w, dequantize_torch(qw, s, z, bits=bits, group_size=group, in_features=cols, dtype=dtype))
        ref_w = dequantize_torch(qw, s, z, bits=bits, group_size=group, in_features=cols, dtype=torch.float64)
        for batch in (1, 3, 8):
            x = torch.randn(batch, cols, generator=torch.Generator().manual_seed(batch)).to(dtype)
            y = _emulate(emulator, tmp_path, "gemv", bits, dtype, qw, s, z, rows=rows, cols=cols, group=group, x=x)
            ref = x.double() @ ref_w.T
            tol = (8e-3 if dtype is torch.bfloat16 else 1e-3) * ref.abs().max().item()
            assert (y.double() - ref).abs().max().item() <= tol, (rows, cols, group, batch)


def _packed(rows: int, cols: int, bits: int, group: int, device: str, seed: int = 0):
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    q = hq.quantize(w, bits=bits, group_size=None if group == cols else group, method="rtn")
    b = quantized_buffers(q)
    return b["qweight"].to(device), b["scales"].to(device), b["zeros"].to(device)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,cols,group", [(256, 4096, 128), (96, 1024, 64), (130, 172, 32), (64, 172, 172), (40, 320, 32)])
def test_dequantize_kernel_equals_the_reference(bits: int, dtype: torch.dtype, rows: int, cols: int, group: int) -> None:
    qw, s, z = _packed(rows, cols, bits, group, "cuda")
    ours = hk.dequantize(qw, s, z, bits=bits, group_size=group, in_features=cols, dtype=dtype)
    ref = dequantize_torch(qw.cpu(), s.cpu(), z.cpu(), bits=bits, group_size=group, in_features=cols, dtype=dtype)
    assert torch.equal(ours.cpu(), ref)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 9, 33])
@pytest.mark.parametrize("rows,cols,group", [(4096, 4096, 128), (1000, 1024, 64), (130, 172, 32), (64, 172, 172), (33, 4160, 32)])
def test_quant_linear_matches_matmul_on_the_dequantized_weight(bits, dtype, batch, rows, cols, group) -> None:
    qw, s, z = _packed(rows, cols, bits, group, "cuda", seed=batch)
    x = torch.randn(batch, cols, device="cuda").to(dtype)
    y = hk.quant_linear(x, qw, s, z, bits=bits, group_size=group, in_features=cols)
    w = dequantize_torch(qw, s, z, bits=bits, group_size=group, in_features=cols, dtype=torch.float32)
    ref = x.float() @ w.T
    assert y.dtype == dtype and y.shape == (batch, rows)
    err = (y.float() - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err <= scale * (2e-2 if dtype is torch.bfloat16 else 2e-3), (err, scale)


@gpu
@pytest.mark.gpu
def test_quantlinear_on_cuda_takes_the_kernels_and_matches_cpu() -> None:
    lin = torch.nn.Linear(1024, 512, bias=True)
    q = QuantLinear.from_linear(lin, bits=4, group_size=128)
    x = torch.randn(3, 1024)
    cpu = q(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the kernels ran: no fallback warning
        gpu_out = q.cuda()(x.cuda().half())
    assert gpu_out.dtype == torch.float16
    assert (gpu_out.float().cpu() - cpu).abs().max().item() < 2e-2 * cpu.abs().max().item()

