//! The single map from core errors (and caught panics) to Python exceptions.
//! The exception classes are defined in `hanpack/exceptions.py` so they can subclass
//! both `HanpackError` and the matching builtin (`ValueError`, `IndexError`, ...).

use std::panic::{catch_unwind, AssertUnwindSafe};

use hanpack_core::HanpackError;
use pyo3::exceptions::{PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// A failure inside a Rust call: a core error or a panic that must not cross into Python.
pub enum Failure {
    Core(HanpackError),
    Panic(String),
}

impl From<HanpackError> for Failure {
    fn from(e: HanpackError) -> Self {
        Failure::Core(e)
    }
}

/// Runs `f`, turning a panic into `Failure::Panic` (never unwinds into Python).
pub fn guard<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Failure::Panic(msg))
        }
    }
}

fn exception_class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "hanpack.exceptions", name)
}

fn raise(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, name: &str, msg: String) -> PyErr {
    match exception_class(py, cell, name) {
        Ok(ty) => PyErr::from_type(ty.clone(), msg),
        Err(e) => e,
    }
}

static MODEL_FORMAT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_MODEL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TOKEN_ID: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UNSUPPORTED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DISALLOWED_SPECIAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static QUANTIZATION: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NON_FINITE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CHECKPOINT_FORMAT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INTERNAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The `OSError` subclass for an I/O error's kind, with errno, message and file name.
fn os_error(path: &std::path::Path, source: &std::io::Error, message: String) -> PyErr {
    let args = (
        source.raw_os_error().unwrap_or(0),
        message,
        path.display().to_string(),
    );
    match source.kind() {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
        std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(args),
        std::io::ErrorKind::AlreadyExists => pyo3::exceptions::PyFileExistsError::new_err(args),
        _ => PyOSError::new_err(args),
    }
}

pub fn to_pyerr(py: Python<'_>, failure: Failure) -> PyErr {
    match failure {
        Failure::Panic(msg) => raise(
            py,
            &INTERNAL,
            "InternalError",
            format!("internal error in hanpack's Rust core (please report it): {msg}"),
        ),
        Failure::Core(e) => {
            let msg = e.to_string();
            match e {
                HanpackError::Io { path, source } => os_error(&path, &source, source.to_string()),
                HanpackError::IoWrite { path, source } => {
                    os_error(&path, &source, format!("cannot write: {source}"))
                }
                HanpackError::CheckpointFormat { .. } => {
                    raise(py, &CHECKPOINT_FORMAT, "CheckpointFormatError", msg)
                }
                HanpackError::ModelFormat { .. } => {
                    raise(py, &MODEL_FORMAT, "ModelFormatError", msg)
                }
                HanpackError::InvalidModel { .. } => {
                    raise(py, &INVALID_MODEL, "InvalidModelError", msg)
                }
                HanpackError::TokenizerFormat { .. } => {
                    raise(py, &MODEL_FORMAT, "ModelFormatError", msg)
                }
                HanpackError::InvalidTokenizer { .. } => {
                    raise(py, &INVALID_MODEL, "InvalidModelError", msg)
                }
                HanpackError::UnsupportedTokenizer { .. } => {
                    raise(py, &UNSUPPORTED, "UnsupportedTokenizerError", msg)
                }
                HanpackError::DisallowedSpecial { .. } => {
                    raise(py, &DISALLOWED_SPECIAL, "DisallowedSpecialTokenError", msg)
                }
                HanpackError::IdOutOfRange { .. } => raise(py, &TOKEN_ID, "TokenIdError", msg),
                HanpackError::InvalidArgument(_) => {
                    raise(py, &INVALID_ARGUMENT, "InvalidArgumentError", msg)
                }
                HanpackError::NonFiniteWeight { .. } => {
                    raise(py, &NON_FINITE, "NonFiniteWeightError", msg)
                }
                HanpackError::Quantization { .. } | HanpackError::QuantLayout(_) => {
                    raise(py, &QUANTIZATION, "QuantizationError", msg)
                }
            }
        }
    }
}

/// `guard` + conversion, for calls made while holding the GIL.
pub fn run<T>(py: Python<'_>, f: impl FnOnce() -> Result<T, Failure>) -> PyResult<T> {
    guard(f).map_err(|e| to_pyerr(py, e))
}

/// `guard` with the GIL released for the duration of `f`.
pub fn run_detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, Failure> + Send,
) -> PyResult<T> {
    py.detach(|| guard(f)).map_err(|e| to_pyerr(py, e))
}

/// Below this many ids a decode keeps the GIL: handing it over and taking it back costs
/// ~0.1 us, as much as decoding 256 ids, and a third of decoding a line of text.
pub const DETACH_MIN_IDS: usize = 256;

/// Below this many bytes of text an encode keeps the GIL, for the same reason: a line of
/// Chinese (~180 bytes) encodes in ~1.5 us, and releasing the GIL for it made a per-line
/// `encode` ~5% slower; 1 KB takes ~6 us, far below Python's 5 ms switch interval.
pub const DETACH_MIN_TEXT: usize = 1024;

/// `run_detached` when `work` reaches `threshold` ([`DETACH_MIN_IDS`] ids to decode,
/// [`DETACH_MIN_TEXT`] bytes to encode), else `guard` with the GIL held.
pub fn run_sized<T: Send>(
    py: Python<'_>,
    work: usize,
    threshold: usize,
    f: impl FnOnce() -> Result<T, Failure> + Send,
) -> PyResult<T> {
    if work >= threshold {
        run_detached(py, f)
    } else {
        guard(f).map_err(|e| to_pyerr(py, e))
    }
}
