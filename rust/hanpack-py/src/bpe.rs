//! Python class for byte-level BPE tokenizers (tokenizer.json, tiktoken, vocab+merges):
//! conversion only. The special-token policy arrives as two optional name lists
//! (`None`: "all"), resolved by the core once per call.

use std::sync::Arc;

use hanpack_core::tokenizer::bpe::added::Policy;
use hanpack_core::tokenizer::bpe::files::{self, PlainConfig};
use hanpack_core::tokenizer::bpe::hf_json;
use hanpack_core::tokenizer::bpe::stages::Normalizer;
use hanpack_core::tokenizer::bpe::BpeTokenizer as Model;
use hanpack_core::HanpackError;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList, PyString};
use rayon::prelude::*;

use crate::convert::{append_ids, ids_from_py, IdCache};
use crate::errors::{run, run_detached, Failure};
use crate::pipeline::pipelined;
use crate::pool;

/// See spm.rs: batches are split into at least this many items per task.
const MIN_TASK: usize = 64;

#[pyclass(frozen, module = "hanpack._core")]
pub struct BpeTokenizer {
    model: Arc<Model>,
    ints: IdCache,
}

impl BpeTokenizer {
    fn new(model: Model) -> Self {
        Self { model: Arc::new(model), ints: IdCache::new() }
    }

    fn policy(&self, allowed: Option<Vec<String>>, disallowed: Option<Vec<String>>) -> Result<Policy, Failure> {
        Ok(self.model.policy(allowed.as_deref(), disallowed.as_deref())?)
    }
}

fn plain_config(pattern: &str, special_tokens: Vec<(String, u32)>, nfc: bool) -> PlainConfig {
    PlainConfig { pattern: pattern.to_owned(), special_tokens, normalizer: nfc.then_some(Normalizer::Nfc) }
}

#[pymethods]
impl BpeTokenizer {
    /// Loads a `tokenizer.json`. `origin` names the source in error messages.
    #[staticmethod]
    fn from_json(py: Python<'_>, data: &[u8], origin: &str) -> PyResult<Self> {
        let (data, origin) = (data.to_vec(), origin.to_owned());
        run_detached(py, move || Ok(Self::new(hf_json::from_json(&data, &origin)?)))
    }

    /// Loads a tiktoken rank file; `pattern` is a name (llama3, cl100k, gpt2, qwen2) or a regex.
    #[staticmethod]
    #[pyo3(signature = (data, origin, pattern, special_tokens, nfc=false))]
    fn from_tiktoken(py: Python<'_>, data: &[u8], origin: &str, pattern: &str, special_tokens: Vec<(String, u32)>, nfc: bool) -> PyResult<Self> {
        let (data, origin) = (data.to_vec(), origin.to_owned());
        let config = plain_config(pattern, special_tokens, nfc);
        run_detached(py, move || Ok(Self::new(files::from_tiktoken(&data, &origin, &config)?)))
    }

    /// Loads `vocab.json` + `merges.txt` contents; `origin` names their folder.
    #[staticmethod]
    #[pyo3(signature = (vocab, merges, origin, pattern, special_tokens, nfc=false))]
    fn from_vocab_merges(
        py: Python<'_>,
        vocab: &[u8],
        merges: &[u8],
        origin: &str,
        pattern: &str,
        special_tokens: Vec<(String, u32)>,
        nfc: bool,
    ) -> PyResult<Self> {
        let (vocab, merges, origin) = (vocab.to_vec(), merges.to_vec(), origin.to_owned());
        let config = plain_config(pattern, special_tokens, nfc);
        run_detached(py, move || Ok(Self::new(files::from_vocab_merges(&vocab, &merges, &origin, &config)?)))
    }

    /// The tokenizer as `tokenizer.json` bytes.
    fn to_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let m = &self.model;
        let bytes = run_detached(py, || Ok(hf_json::to_json(m)?))?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[pyo3(signature = (text, add_bos, add_eos, allowed=None, disallowed=None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: PyBackedStr,
        add_bos: bool,
        add_eos: bool,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let m = &self.model;
        let policy = run(py, || self.policy(allowed, disallowed))?;
        let ids = run_detached(py, || Ok(m.encode(&text, &policy, add_bos, add_eos)?))?;
        self.ints.list(py, &ids, m.vocab_size())
    }

    #[pyo3(signature = (text, allowed=None, disallowed=None))]
    fn encode_as_pieces(&self, py: Python<'_>, text: PyBackedStr, allowed: Option<Vec<String>>, disallowed: Option<Vec<String>>) -> PyResult<Vec<String>> {
        let m = &self.model;
        let policy = run(py, || self.policy(allowed, disallowed))?;
        run_detached(py, || Ok(m.encode_as_pieces(&text, &policy)?))
    }

    fn normalize(&self, py: Python<'_>, text: PyBackedStr) -> PyResult<String> {
        let m = &self.model;
        run_detached(py, || Ok(m.normalize(&text)))
    }

    #[pyo3(signature = (texts, add_bos, add_eos, num_threads=None, allowed=None, disallowed=None))]
    #[allow(clippy::too_many_arguments)]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let m = &self.model;
        let policy = run(py, || self.policy(allowed, disallowed))?;
        let out = PyList::empty(py);
        let chunk = (texts.len() / 64).clamp(MIN_TASK, 4096);
        pipelined(
            py,
            &texts,
            chunk,
            num_threads,
            |part| part.iter().map(|t| m.encode(t, &policy, add_bos, add_eos)).collect::<Result<Vec<_>, _>>().map_err(Failure::from),
            |rows| {
                for row in &rows {
                    out.append(self.ints.list(py, row, m.vocab_size())?)?;
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Flat ids (int32) and row offsets (int64, len(texts) + 1).
    #[pyo3(signature = (texts, add_bos, add_eos, num_threads=None, allowed=None, disallowed=None))]
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>)> {
        let m = &self.model;
        let policy = run(py, || self.policy(allowed, disallowed))?;
        let policy = &policy;
        let (ids, offsets) = run_detached(py, || {
            pool::install(num_threads, || {
                let chunk = (texts.len() / (rayon::current_num_threads() * 8)).max(MIN_TASK);
                let parts = texts
                    .par_chunks(chunk)
                    .map(|chunk| {
                        let mut ids: Vec<i32> = Vec::new();
                        let mut lens = Vec::with_capacity(chunk.len());
                        let mut buf = Vec::new();
                        for t in chunk {
                            buf.clear();
                            m.encode_into(t, policy, add_bos, add_eos, &mut buf)?;
                            ids.extend(buf.iter().map(|&i| i as i32));
                            lens.push(buf.len() as i64);
                        }
                        Ok((ids, lens))
                    })
                    .collect::<Result<Vec<_>, HanpackError>>()?;
                let total: usize = parts.iter().map(|p| p.0.len()).sum();
                let mut ids = Vec::with_capacity(total);
                let mut offsets = Vec::with_capacity(texts.len() + 1);
                offsets.push(0i64);
                for (part_ids, lens) in parts {
                    ids.extend_from_slice(&part_ids);
                    for l in lens {
                        let last = *offsets.last().unwrap_or(&0);
                        offsets.push(last + l);
                    }
                }
                Ok::<_, Failure>((ids, offsets))
            })
        })?;
        Ok((PyArray1::from_vec(py, ids), PyArray1::from_vec(py, offsets)))
    }

    #[pyo3(signature = (ids, skip_special=false))]
    fn decode(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, skip_special: bool) -> PyResult<String> {
        let ids = ids_from_py(ids)?;
        let m = &self.model;
        run_detached(py, || Ok(m.decode(&ids, skip_special)?))
    }

    /// The raw bytes of `ids` (no UTF-8 repair).
    #[pyo3(signature = (ids, skip_special=false))]
    fn decode_bytes<'py>(&self, py: Python<'py>, ids: &Bound<'_, PyAny>, skip_special: bool) -> PyResult<Bound<'py, PyBytes>> {
        let ids = ids_from_py(ids)?;
        let m = &self.model;
        let bytes = run_detached(py, || Ok(m.decode_bytes(&ids, skip_special)?))?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[pyo3(signature = (batch, num_threads=None, skip_special=false))]
    fn decode_batch<'py>(&self, py: Python<'py>, batch: &Bound<'py, PyAny>, num_threads: Option<usize>, skip_special: bool) -> PyResult<Bound<'py, PyList>> {
        let mut flat = Vec::new();
        let mut rows = Vec::new();
        for row in batch.try_iter()? {
            let start = flat.len();
            append_ids(&row?, &mut flat)?;
            rows.push(start..flat.len());
        }
        let m = &self.model;
        let out = PyList::empty(py);
        let chunk = (rows.len() / 64).clamp(MIN_TASK, 4096);
        pipelined(
            py,
            &rows,
            chunk,
            num_threads,
            |part| {
                let mut text = String::new();
                let mut ends = Vec::with_capacity(part.len());
                for r in part {
                    m.decode_into(&flat[r.clone()], skip_special, &mut text)?;
                    ends.push(text.len());
                }
                Ok((text, ends))
            },
            |(text, ends)| {
                let mut start = 0;
                for end in ends {
                    out.append(PyString::new(py, &text[start..end]))?;
                    start = end;
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    fn id_to_piece(&self, id: i64) -> Option<&str> {
        u32::try_from(id).ok().and_then(|i| self.model.id_to_piece(i))
    }

    fn piece_to_id(&self, piece: &str) -> i64 {
        self.model.piece_to_id(piece).map_or(-1, i64::from)
    }

    fn is_special(&self, id: i64) -> bool {
        u32::try_from(id).is_ok_and(|i| self.model.is_special(i))
    }

    /// (text, id) of every special token, in id order.
    fn special_tokens(&self) -> Vec<(String, u32)> {
        self.model.special_tokens()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
    #[getter]
    fn model_type(&self) -> &'static str {
        "bbpe"
    }
    #[getter]
    fn heap_bytes(&self) -> usize {
        self.model.vocab.heap_bytes()
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
    fn unk_id(&self) -> i64 {
        self.model.unk.map_or(-1, i64::from)
    }
}
