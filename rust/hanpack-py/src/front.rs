//! `TokenizerBase`, the base class of `hanpack.Tokenizer`: the two calls made once per
//! line (`encode`, `decode`) are Rust methods of the class itself, so they cost no Python
//! frame (measured ~135 ns a call, a tenth of decoding a line of Chinese text). The
//! Python subclass adds loading, saving, batches and the vocabulary; the model itself is
//! one of the two model classes, held here and by the subclass. The encoding of corpus
//! lines for `hanpack.data` is here too, written once for both model kinds.

use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::batch;
use crate::bpe::BpeTokenizer;
use crate::lines_stream::{LinesStream, SharedEncoder};
use crate::spm::SpmTokenizer;

enum Model {
    Spm(Py<SpmTokenizer>),
    Bpe(Py<BpeTokenizer>),
}

#[pyclass(frozen, subclass, module = "hanpack._core")]
pub struct TokenizerBase {
    model: Model,
}

/// `hanpack.tokenizer._policy`: Python owns the checks of the special-token options.
static POLICY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

type NameLists = (Option<Vec<String>>, Option<Vec<String>>);

fn python_policy(
    py: Python<'_>,
    allowed: Option<&Bound<'_, PyAny>>,
    disallowed: Option<&Bound<'_, PyAny>>,
) -> PyResult<NameLists> {
    let policy = POLICY.import(py, "hanpack.tokenizer", "_policy")?;
    let allowed = match allowed {
        Some(a) => a.clone(),
        None => pyo3::types::PyTuple::empty(py).into_any(),
    };
    let disallowed = match disallowed {
        Some(d) => d.clone(),
        None => PyString::new(py, "all").into_any(),
    };
    policy.call1((allowed, disallowed))?.extract()
}

impl TokenizerBase {
    /// The vocabulary size and the encoder of corpus lines (special-token text as
    /// ordinary text), owned so that `LinesStream` jobs may outlive the call. One call per
    /// document through a trait object measured within noise of a closure per model (11 MB
    /// of Chinese lines, one thread: 131-136 vs 134-138 MB/s).
    fn corpus_encoder(&self, add_bos: bool, add_eos: bool) -> (usize, SharedEncoder) {
        match &self.model {
            Model::Spm(m) => {
                let m = m.get().shared();
                let vocab_size = m.vocab_size();
                let encode =
                    move |t: &str, out: &mut Vec<u32>| m.encode_into(t, add_bos, add_eos, out);
                (vocab_size, Arc::new(encode))
            }
            Model::Bpe(m) => {
                let (m, policy) = m.get().plain_shared();
                let vocab_size = m.vocab_size();
                let encode = move |t: &str, out: &mut Vec<u32>| {
                    m.encode_into(t, &policy, add_bos, add_eos, out)
                };
                (vocab_size, Arc::new(encode))
            }
        }
    }
}

#[pymethods]
impl TokenizerBase {
    /// For `Tokenizer._encode_lines`: the documents of whole `.txt` / `.jsonl` lines,
    /// given as bytes or as a file span (see `batch::encode_lines`); special-token text is
    /// ordinary text there.
    #[pyo3(signature = (source, json_field, narrow, add_bos, add_eos, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn _encode_lines_core<'py>(
        &self,
        py: Python<'py>,
        source: &Bound<'py, PyAny>,
        json_field: Option<&str>,
        narrow: bool,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
    ) -> PyResult<(batch::LinesOut<'py>, usize)> {
        let (vocab_size, encode) = self.corpus_encoder(add_bos, add_eos);
        batch::encode_lines(
            py,
            source,
            json_field,
            narrow,
            vocab_size,
            num_threads,
            |t: &str, out: &mut Vec<u32>| encode(t, out),
        )
    }

    /// A `LinesStream` that encodes batches as `_encode_lines_core` does.
    fn _lines_stream(
        &self,
        narrow: bool,
        add_bos: bool,
        add_eos: bool,
        num_threads: Option<usize>,
    ) -> LinesStream {
        let (vocab_size, encode) = self.corpus_encoder(add_bos, add_eos);
        LinesStream::new(encode, narrow, vocab_size, num_threads)
    }

    #[new]
    fn new(model: &Bound<'_, PyAny>) -> PyResult<Self> {
        let model = if let Ok(m) = model.cast::<SpmTokenizer>() {
            Model::Spm(m.clone().unbind())
        } else if let Ok(m) = model.cast::<BpeTokenizer>() {
            Model::Bpe(m.clone().unbind())
        } else {
            return Err(PyTypeError::new_err(
                "use Tokenizer.from_file(path) or Tokenizer.from_bytes(data)",
            ));
        };
        Ok(Self { model })
    }

    /// Token ids of ``text``: ``SentencePieceProcessor.encode(text)`` for SentencePiece
    /// models; for byte-level BPE, HF ``Tokenizer.encode(text, add_special_tokens=False)``
    /// / tiktoken's ``Encoding.encode(text)``.
    ///
    /// Special tokens (byte-level BPE only) follow tiktoken's policy: text of a special
    /// token in ``allowed_special`` (or any, with ``"all"``) becomes its id; text of one in
    /// ``disallowed_special`` (default, ``None``: every special token not allowed) raises
    /// :class:`~hanpack.exceptions.DisallowedSpecialTokenError`; any other is plain text.
    /// ``add_bos`` / ``add_eos`` add the tokens the file's post-processor puts around a
    /// sequence. Non-special added tokens are always matched, as in HF.
    ///
    /// The returned list (and each list ``encode_batch`` returns) holds only ints, so it is
    /// not tracked by Python's cyclic garbage collector, which otherwise walks every
    /// retained list of ids again and again (a fifth of a per-line encode loop's time). It
    /// is an ordinary list; only a reference cycle you make through it would not be freed.
    ///
    ///     >>> tok.encode("hello", add_bos=True)  # doctest: +SKIP
    ///     [1, 22172]
    ///     >>> tok.encode("<|endoftext|>", allowed_special="all")  # doctest: +SKIP
    ///     [151643]
    #[pyo3(signature = (text, *, add_bos=false, add_eos=false, allowed_special=None, disallowed_special=None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: PyBackedStr,
        add_bos: bool,
        add_eos: bool,
        allowed_special: Option<&Bound<'py, PyAny>>,
        disallowed_special: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        match &self.model {
            // SentencePiece models have no special-token text: the options do not apply.
            Model::Spm(m) => m.get().encode_text(py, &text, add_bos, add_eos),
            Model::Bpe(m) => {
                let m = m.get();
                if allowed_special.is_none() && disallowed_special.is_none() {
                    return m.encode_default(py, &text, add_bos, add_eos);
                }
                let (allowed, disallowed) = python_policy(py, allowed_special, disallowed_special)?;
                m.encode(py, text, add_bos, add_eos, allowed, disallowed)
            }
        }
    }

    /// Text of ``ids`` (a list of int or a 1-D integer numpy array), as
    /// ``SentencePieceProcessor.decode(ids)``, HF's ``Tokenizer.decode`` or tiktoken's
    /// ``decode`` (bytes that are not valid UTF-8 become U+FFFD). ``skip_special_tokens``
    /// leaves byte-level BPE special tokens out (SentencePiece's decoder always drops
    /// control pieces).
    ///
    /// Raises :class:`~hanpack.exceptions.TokenIdError` (an ``IndexError``) for an id
    /// outside the vocabulary.
    #[pyo3(signature = (ids, *, skip_special_tokens=false))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'_, PyAny>,
        skip_special_tokens: bool,
    ) -> PyResult<Bound<'py, PyString>> {
        if ids.is_instance_of::<PyString>() || ids.is_instance_of::<PyBytes>() {
            let kind = ids.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "ids must be a sequence of int, not {kind}"
            )));
        }
        match &self.model {
            Model::Spm(m) => m.get().decode(py, ids),
            Model::Bpe(m) => m.get().decode(py, ids, skip_special_tokens),
        }
    }
}
