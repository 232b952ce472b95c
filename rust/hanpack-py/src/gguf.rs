//! `load_gguf`: the tokenizer in a GGUF file's metadata, as the model class its
//! `tokenizer.ggml.model` calls for ("gpt2": byte-level BPE; "llama": SentencePiece-style).

use std::path::PathBuf;

use hanpack_core::io::gguf;
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
