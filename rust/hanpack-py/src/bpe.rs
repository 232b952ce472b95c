//! Python class for byte-level BPE tokenizers (tokenizer.json, tiktoken, vocab+merges):
//! conversion only. The special-token policy arrives as two optional name lists
//! (`None`: "all"), resolved by the core once per call.

use std::borrow::Cow;
use std::sync::Arc;

use hanpack_core::tokenizer::bpe::added::Policy;
use hanpack_core::tokenizer::bpe::files::{self, PlainConfig};
use hanpack_core::tokenizer::bpe::hf_json;
use hanpack_core::tokenizer::bpe::stages::Normalizer;
use hanpack_core::tokenizer::bpe::BpeTokenizer as Model;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::batch;
use crate::convert::{
    id_list, ids_from_py, str_from_ucs2, str_from_utf8, texts_from_list, with_id_buffer, with_ids,
};
use crate::errors::{run, run_detached, run_sized, Failure, DETACH_MIN_IDS, DETACH_MIN_TEXT};
use crate::row_decode;

#[pyclass(frozen, module = "hanpack._core")]
pub struct BpeTokenizer {
    model: Arc<Model>,
    /// tiktoken's default (no special token allowed, every one disallowed), made once: it
    /// is what nearly every call uses, and building it per call cost an allocation.
    default_policy: Policy,
    /// Special-token text as ordinary text (nothing allowed or disallowed): what corpus
    /// files are encoded with.
    plain_policy: Policy,
}

impl BpeTokenizer {
    pub(crate) fn new(model: Model) -> Result<Self, Failure> {
        let default_policy = model.policy(Some(&[]), None)?;
        let plain_policy = model.policy(Some(&[]), Some(&[]))?;
        Ok(Self {
            model: Arc::new(model),
            default_policy,
            plain_policy,
        })
    }

    /// The model and the policy `TokenizerBase`'s corpus-line encoding uses (owned: its
    /// `LinesStream` jobs outlive the call).
    pub(crate) fn plain_shared(&self) -> (Arc<Model>, Policy) {
        (self.model.clone(), self.plain_policy.clone())
    }

    fn policy(
        &self,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> Result<Cow<'_, Policy>, Failure> {
        if allowed.as_ref().is_some_and(Vec::is_empty) && disallowed.is_none() {
            return Ok(Cow::Borrowed(&self.default_policy));
        }
        Ok(Cow::Owned(
            self.model
                .policy(allowed.as_deref(), disallowed.as_deref())?,
        ))
    }

    /// `encode` with tiktoken's default policy.
    pub(crate) fn encode_default<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        add_bos: bool,
        add_eos: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let (m, policy) = (&self.model, &self.default_policy);
        with_id_buffer(|ids| {
            run_sized(py, text.len(), DETACH_MIN_TEXT, || {
                Ok(m.encode_into(text, policy, add_bos, add_eos, ids)?)
            })?;
            id_list(py, ids, m.vocab_size())
        })
    }
}

fn plain_config(pattern: &str, special_tokens: Vec<(String, u32)>, nfc: bool) -> PlainConfig {
    PlainConfig {
        pattern: pattern.to_owned(),
        special_tokens,
        normalizer: nfc.then_some(Normalizer::Nfc),
    }
}

#[pymethods]
impl BpeTokenizer {
    /// Loads a `tokenizer.json`. `origin` names the source in error messages.
    #[staticmethod]
    fn from_json(py: Python<'_>, data: &[u8], origin: &str) -> PyResult<Self> {
        let (data, origin) = (data.to_vec(), origin.to_owned());
        run_detached(py, move || Self::new(hf_json::from_json(&data, &origin)?))
    }

    /// Loads a tiktoken rank file; `pattern` is a name (llama3, cl100k, gpt2, qwen2) or a regex.
    #[staticmethod]
    #[pyo3(signature = (data, origin, pattern, special_tokens, nfc=false))]
    fn from_tiktoken(
        py: Python<'_>,
        data: &[u8],
        origin: &str,
        pattern: &str,
        special_tokens: Vec<(String, u32)>,
        nfc: bool,
    ) -> PyResult<Self> {
        let (data, origin) = (data.to_vec(), origin.to_owned());
        let config = plain_config(pattern, special_tokens, nfc);
        run_detached(py, move || {
            Self::new(files::from_tiktoken(&data, &origin, &config)?)
        })
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
        run_detached(py, move || {
            Self::new(files::from_vocab_merges(&vocab, &merges, &origin, &config)?)
        })
    }

    /// The tokenizer as `tokenizer.json` bytes.
    fn to_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let m = &self.model;
        let bytes = run_detached(py, || Ok(hf_json::to_json(m)?))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// `allowed` / `disallowed`: special-token names, `None` meaning all of them; the
    /// defaults are tiktoken's (none allowed, all disallowed).
    #[pyo3(signature = (text, add_bos, add_eos, allowed=Some(Vec::new()), disallowed=None))]
    pub(crate) fn encode<'py>(
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
        id_list(py, &ids, m.vocab_size())
    }

    #[pyo3(signature = (text, allowed=None, disallowed=None))]
    fn encode_as_pieces(
        &self,
        py: Python<'_>,
        text: PyBackedStr,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> PyResult<Vec<String>> {
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
        texts: &Bound<'py, PyList>,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let texts = texts_from_list(texts)?;
        let m = &self.model;
        let policy = run(py, || self.policy(allowed, disallowed))?;
        let policy = &policy;
        batch::encode_lists(py, m.vocab_size(), &texts, num_threads, |t, out| {
            m.encode_into(t, policy, add_bos, add_eos, out)
        })
    }

    /// Flat ids (int32) and row offsets (int64, len(texts) + 1).
    #[pyo3(signature = (texts, add_bos, add_eos, num_threads=None, allowed=None, disallowed=None))]
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn encode_batch_flat<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyList>,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
        allowed: Option<Vec<String>>,
        disallowed: Option<Vec<String>>,
    ) -> PyResult<(Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>)> {
        let texts = texts_from_list(texts)?;
        let m = &self.model;
        let policy = run(py, || self.policy(allowed, disallowed))?;
        let policy = &policy;
        batch::encode_flat(py, &texts, num_threads, |t, out| {
            m.encode_into(t, policy, add_bos, add_eos, out)
        })
    }

    #[pyo3(signature = (ids, skip_special=false))]
    pub(crate) fn decode<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'_, PyAny>,
        skip_special: bool,
    ) -> PyResult<Bound<'py, PyString>> {
        let m = &self.model;
        with_ids(ids, |ids| {
            // Whole BMP text straight to UTF-16 (no UTF-8 decoding in Python); anything
            // else, and every error, through bytes.
            let direct = str_from_ucs2(py, |units| {
                run_sized(py, ids.len(), DETACH_MIN_IDS, || {
                    Ok(m.decode_ucs2_into(ids, skip_special, units))
                })
            })?;
            if let Some(s) = direct {
                return Ok(s);
            }
            str_from_utf8(py, |buf| {
                run_sized(py, ids.len(), DETACH_MIN_IDS, || {
                    Ok(m.decode_bytes_into(ids, skip_special, buf)?)
                })
            })
        })
    }

    /// The raw bytes of `ids` (no UTF-8 repair).
    #[pyo3(signature = (ids, skip_special=false))]
    fn decode_bytes<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'_, PyAny>,
        skip_special: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let ids = ids_from_py(ids)?;
        let m = &self.model;
        let bytes = run_detached(py, || Ok(m.decode_bytes(&ids, skip_special)?))?;
        Ok(PyBytes::new(py, &bytes))
    }

    #[pyo3(signature = (batch, num_threads=None, skip_special=false))]
    fn decode_batch<'py>(
        &self,
        py: Python<'py>,
        batch: &Bound<'py, PyAny>,
        num_threads: Option<usize>,
        skip_special: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let m = &self.model;
        row_decode::decode_rows(
            py,
            batch,
            num_threads,
            |ids, out| m.decode_into(ids, skip_special, out),
            Some(&|ids: &[i64], out: &mut Vec<u16>| m.decode_ucs2_into(ids, skip_special, out)),
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
        self.model.vocab.heap_bytes() + self.model.ucs2.heap_bytes()
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
