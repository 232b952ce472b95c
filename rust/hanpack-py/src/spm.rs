//! Python classes for SentencePiece models: conversion only.

use std::sync::{Arc, Mutex};

use hanpack_core::tokenizer::spm::decode::DecodeState;
use hanpack_core::tokenizer::spm::SpmModel;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::batch;
use crate::convert::{id_list, str_from_utf8, texts_from_list, with_id_buffer, with_ids};
use crate::errors::{run, run_detached, run_sized, DETACH_MIN_IDS, DETACH_MIN_TEXT};
use crate::row_decode;

/// Loading parses ~10^5 small protobuf strings and frees them again; glibc keeps such
/// freed chunks mapped, which made a loaded tokenizer look 1.5x bigger in RSS than what
/// it holds. Handing them back keeps resident memory to the model's real size.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has no
    // preconditions and does not touch live allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[pyclass(frozen, module = "hanpack._core")]
pub struct SpmTokenizer {
    model: Arc<SpmModel>,
}

impl SpmTokenizer {
    pub(crate) fn new(model: SpmModel) -> Self {
        Self {
            model: Arc::new(model),
        }
    }

    /// The model, for work that outlives the call (`LinesStream` jobs).
    pub(crate) fn shared(&self) -> Arc<SpmModel> {
        self.model.clone()
    }

    pub(crate) fn encode_text<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        add_bos: bool,
        add_eos: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let m = &self.model;
        with_id_buffer(|ids| {
            run_sized(py, text.len(), DETACH_MIN_TEXT, || {
                Ok(m.encode_into(text, add_bos, add_eos, ids)?)
            })?;
            id_list(py, ids, m.vocab_size())
        })
    }
}

#[pymethods]
impl SpmTokenizer {
    /// Loads a serialized ModelProto. `origin` names the source in error messages.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8], origin: &str) -> PyResult<Self> {
        // The bytes object is immutable and kept alive by the caller: no copy needed.
        let model = run_detached(py, || Ok(Self::new(SpmModel::from_bytes(data, origin)?)));
        release_freed_memory();
        model
    }

    #[staticmethod]
    fn from_file(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let model = run_detached(py, move || Ok(Self::new(SpmModel::from_file(&path)?)));
        release_freed_memory();
        model
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let m = &self.model;
        let bytes = run_detached(py, || Ok(m.to_bytes()))?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: PyBackedStr,
        add_bos: bool,
        add_eos: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        self.encode_text(py, &text, add_bos, add_eos)
    }

    fn encode_as_pieces(&self, py: Python<'_>, text: PyBackedStr) -> PyResult<Vec<String>> {
        let m = &self.model;
        run_detached(py, || Ok(m.encode_as_pieces(&text)))
    }

    fn normalize(&self, py: Python<'_>, text: PyBackedStr) -> PyResult<String> {
        let m = &self.model;
        run_detached(py, || Ok(m.normalize(&text)))
    }

    #[pyo3(signature = (texts, add_bos, add_eos, num_threads=None))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let texts = texts_from_list(texts)?;
        let m = &self.model;
        batch::encode_lists(py, m.vocab_size(), &texts, num_threads, |t, out| {
            m.encode_into(t, add_bos, add_eos, out)
        })
    }

    /// Flat ids (int32) and row offsets (int64, len(texts) + 1).
    #[pyo3(signature = (texts, add_bos, add_eos, num_threads=None))]
    #[allow(clippy::type_complexity)]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>)> {
        let texts = texts_from_list(texts)?;
        let m = &self.model;
        batch::encode_flat(py, &texts, num_threads, |t, out| {
            m.encode_into(t, add_bos, add_eos, out)
        })
    }

    pub(crate) fn decode<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyString>> {
        let m = &self.model;
        with_ids(ids, |ids| {
            str_from_utf8(py, |buf| {
                let mut text = String::from_utf8(std::mem::take(buf)).unwrap_or_default();
                let r = run_sized(py, ids.len(), DETACH_MIN_IDS, || {
                    Ok(m.decode_into(ids, &mut text)?)
                });
                *buf = text.into_bytes();
                r
            })
        })
    }

    /// See `row_decode::decode_rows`.
    #[pyo3(signature = (batch, num_threads=None))]
    fn decode_batch<'py>(
        &self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let m = &self.model;
        row_decode::decode_rows(
            py,
            batch,
            num_threads,
            |ids, out| m.decode_into(ids, out),
            None,
        )
    }

    fn id_to_piece(&self, id: i64) -> Option<&str> {
        u32::try_from(id)
            .ok()
            .and_then(|i| self.model.id_to_piece(i))
    }

    fn piece_to_id(&self, piece: &str) -> i64 {
        self.model.piece_to_id(piece).map_or(-1, i64::from)
    }

    fn piece_score(&self, id: i64) -> Option<f32> {
        u32::try_from(id)
            .ok()
            .and_then(|i| self.model.piece_score(i))
    }

    /// The piece type name (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE).
    fn piece_type(&self, id: i64) -> Option<&'static str> {
        use hanpack_core::tokenizer::spm::proto::PieceType::*;
        u32::try_from(id)
            .ok()
            .and_then(|i| self.model.piece_kind(i))
            .map(|t| match t {
                Normal => "NORMAL",
                Unknown => "UNKNOWN",
                Control => "CONTROL",
                UserDefined => "USER_DEFINED",
                Unused => "UNUSED",
                Byte => "BYTE",
            })
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
    #[getter]
    fn model_type(&self) -> &'static str {
        if self.model.is_bpe() {
            "bpe"
        } else {
            "unigram"
        }
    }
    #[getter]
    fn byte_fallback(&self) -> bool {
        self.model.byte_fallback()
    }
    #[getter]
    fn heap_bytes(&self) -> usize {
        self.model.heap_bytes()
    }
    #[getter]
    fn unk_id(&self) -> i64 {
        self.model.unk_id().map_or(-1, i64::from)
    }
    #[getter]
    fn bos_id(&self) -> i64 {
        self.model.bos_id().map_or(-1, i64::from)
    }
    #[getter]
    fn eos_id(&self) -> i64 {
        self.model.eos_id().map_or(-1, i64::from)
    }
    #[getter]
    fn pad_id(&self) -> i64 {
        self.model.pad_id().map_or(-1, i64::from)
    }

    fn stream_decoder(&self) -> SpmStreamDecoder {
        SpmStreamDecoder {
            model: self.model.clone(),
            state: Mutex::new(DecodeState::default()),
        }
    }
}

/// Incremental decoder: `step(id)` returns only complete text.
#[pyclass(frozen, module = "hanpack._core")]
pub struct SpmStreamDecoder {
    model: Arc<SpmModel>,
    state: Mutex<DecodeState>,
}

#[pymethods]
impl SpmStreamDecoder {
    fn step(&self, py: Python<'_>, id: i64) -> PyResult<String> {
        run(py, || {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            Ok(self.model.decode_stream_step(&mut st, id)?)
        })
    }

    fn finish(&self, py: Python<'_>) -> PyResult<String> {
        run(py, || {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let out = self.model.decode_stream_finish(&mut st);
            *st = DecodeState::default();
            Ok(out)
        })
    }
}
