//! The CUDA kernel sources of `cuda/` (repository root), embedded so that every build of
//! the extension carries them: the Python layer compiles them with NVRTC at first use
//! (`hanpack.cuda_kernels`), which needs no CUDA toolkit on the user's machine.

/// `(file name, source)`; the `.cu` files include `common.cuh` by that name.
pub const CUDA_SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("../../../../cuda/common.cuh")),
    ("gemv.cu", include_str!("../../../../cuda/gemv.cu")),
    (
        "dequantize.cu",
        include_str!("../../../../cuda/dequantize.cu"),
    ),
];
