//! `load_gguf`: the tokenizer in a GGUF file's metadata, as the model class its
//! `tokenizer.ggml.model` calls for ("gpt2": byte-level BPE; "llama": SentencePiece-style).

use std::path::PathBuf;

use hanpack_core::io::{gguf, gguf_writer};
use hanpack_core::tokenizer::bpe::gguf_vocab;
use hanpack_core::tokenizer::spm::SpmModel;
use pyo3::prelude::*;

use crate::bpe::BpeTokenizer;
use crate::errors::{run_detached, Failure};
use crate::spm::SpmTokenizer;

enum Loaded {
    Spm(SpmTokenizer),
    Bpe(BpeTokenizer),
}

/// Reads only the metadata (the file is memory-mapped), with the GIL released.
#[pyfunction]
pub fn load_gguf(py: Python<'_>, path: PathBuf) -> PyResult<Py<PyAny>> {
    let loaded = run_detached(py, move || {
        let g = gguf::parse_file(&path)?;
        let origin = path.display().to_string();
        let is_spm = g.get("tokenizer.ggml.model").and_then(gguf::Value::as_str) == Some("llama");
        Ok::<_, Failure>(if is_spm {
            Loaded::Spm(SpmTokenizer::new(SpmModel::from_gguf(&g, &origin)?))
        } else {
            Loaded::Bpe(BpeTokenizer::new(gguf_vocab::from_gguf(&g, &origin)?)?)
        })
    })?;
    Ok(match loaded {
        Loaded::Spm(t) => Py::new(py, t)?.into_any(),
        Loaded::Bpe(t) => Py::new(py, t)?.into_any(),
    })
}

/// A metadata value as Python sees it: `(type code, value)`, arrays as
/// `(9, (element type code, [values]))` (GGUF's own type codes).
fn value_to_py<'py>(py: Python<'py>, v: &gguf::Value) -> PyResult<(u32, Bound<'py, PyAny>)> {
    use gguf::Value as V;
    Ok(match v {
        V::U8(x) => (0, x.into_pyobject(py)?.into_any()),
        V::I8(x) => (1, x.into_pyobject(py)?.into_any()),
        V::U16(x) => (2, x.into_pyobject(py)?.into_any()),
        V::I16(x) => (3, x.into_pyobject(py)?.into_any()),
        V::U32(x) => (4, x.into_pyobject(py)?.into_any()),
        V::I32(x) => (5, x.into_pyobject(py)?.into_any()),
        V::F32(x) => (6, x.into_pyobject(py)?.into_any()),
        V::Bool(x) => (7, pyo3::types::PyBool::new(py, *x).to_owned().into_any()),
        V::String(s) => (8, s.into_pyobject(py)?.into_any()),
        V::U64(x) => (10, x.into_pyobject(py)?.into_any()),
        V::I64(x) => (11, x.into_pyobject(py)?.into_any()),
        V::F64(x) => (12, x.into_pyobject(py)?.into_any()),
        V::Array(items) => {
            let mut elem = 0;
            let list = pyo3::types::PyList::empty(py);
            for i in items {
                let (t, x) = value_to_py(py, i)?;
                elem = t;
                list.append(x)?;
            }
            (9, (elem, list).into_pyobject(py)?.into_any())
        }
    })
}

fn value_from_py(vtype: u32, obj: &Bound<'_, PyAny>, key: &str) -> PyResult<gguf::Value> {
    use gguf::Value as V;
    Ok(match vtype {
        0 => V::U8(obj.extract()?),
        1 => V::I8(obj.extract()?),
        2 => V::U16(obj.extract()?),
        3 => V::I16(obj.extract()?),
        4 => V::U32(obj.extract()?),
        5 => V::I32(obj.extract()?),
        6 => V::F32(obj.extract()?),
        7 => V::Bool(obj.extract()?),
        8 => V::String(obj.extract()?),
        9 => {
            let (elem, items): (u32, Bound<'_, PyAny>) = obj.extract()?;
            let mut out = Vec::with_capacity(items.len().unwrap_or(0));
            for item in items.try_iter()? {
                out.push(value_from_py(elem, &item?, key)?);
            }
            V::Array(out)
        }
        10 => V::U64(obj.extract()?),
        11 => V::I64(obj.extract()?),
        12 => V::F64(obj.extract()?),
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "metadata {key:?}: unknown GGUF value type {other}"
            )))
        }
    })
}

type PyTensorInfo = (String, Vec<u64>, u32, u64);

/// The header of a GGUF file: `(version, [(key, type, value)], [(name, dims, ggml type,
/// offset)], data offset)`. Only the header pages of the (memory-mapped) file are read.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn read_gguf_header<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<(
    u32,
    Vec<(String, u32, Bound<'py, PyAny>)>,
    Vec<PyTensorInfo>,
    u64,
)> {
    let g = run_detached(py, move || Ok::<_, Failure>(gguf::parse_file(&path)?))?;
    let mut metadata = Vec::with_capacity(g.metadata.len());
    for (k, v) in &g.metadata {
        let (t, x) = value_to_py(py, v)?;
        metadata.push((k.clone(), t, x));
    }
    let tensors = g
        .tensors
        .into_iter()
        .map(|t| (t.name, t.dims, t.ggml_type, t.offset))
        .collect();
    Ok((g.version, metadata, tensors, g.data_offset))
}

/// Encodes a GGUF header: metadata as `(key, type, value)`, tensors as `(name, dims in
/// ggml order, ggml type, data bytes)`. Returns the header bytes and each tensor's data
/// offset (relative to the end of the header).
#[pyfunction]
pub fn encode_gguf_header<'py>(
    py: Python<'py>,
    metadata: Vec<(String, u32, Bound<'py, PyAny>)>,
    tensors: Vec<PyTensorInfo>,
    alignment: u64,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, Vec<u64>)> {
    let mut kv = Vec::with_capacity(metadata.len());
    for (k, t, v) in &metadata {
        kv.push((k.clone(), value_from_py(*t, v, k)?));
    }
    let entries: Vec<gguf_writer::TensorEntry> = tensors
        .into_iter()
        .map(|(name, dims, ggml_type, nbytes)| gguf_writer::TensorEntry {
            name,
            dims,
            ggml_type,
            nbytes,
        })
        .collect();
    let h = crate::errors::run(py, || {
        Ok(gguf_writer::encode_header(&kv, &entries, alignment)?)
    })?;
    Ok((pyo3::types::PyBytes::new(py, &h.bytes), h.offsets))
}
