//! Vocabulary building: extension of SentencePiece BPE models and their HF export.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use hanpack_core::vocab::extend::{extend, unreachable_pieces, ExtendOptions, Placement};
use hanpack_core::vocab::hf_export::spm_bpe_to_hf_json;

use std::sync::Mutex;

use hanpack_core::vocab::train::{train_bpe, BpeTrainOptions};
use hanpack_core::vocab::units::{UnitCounts, UnitOptions};

use crate::errors::run_detached;
use crate::pool;
use crate::segment::JiebaSegmenter;

/// (piece, id, score, origin) of each added piece.
type Added = Vec<(String, u32, f32, &'static str)>;

/// Extends a BPE model; returns (model bytes, base size, added, skipped (piece, reason),
/// unreachable).
#[pyfunction]
#[pyo3(signature = (base, origin, pieces, *, above, max_piece_chars, add_missing_chars, repair))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn extend_spm<'py>(
    py: Python<'py>,
    base: Vec<u8>,
    origin: String,
    pieces: Vec<String>,
    above: bool,
    max_piece_chars: usize,
    add_missing_chars: bool,
    repair: bool,
) -> PyResult<(
    Bound<'py, PyBytes>,
    usize,
    Added,
    Vec<(String, &'static str)>,
    Vec<String>,
)> {
    // Python validated the option; only its two values arrive here.
    let opts = ExtendOptions {
        placement: if above {
            Placement::Above
        } else {
            Placement::Below
        },
        max_piece_chars,
        add_missing_chars,
        repair,
    };
    let ext = run_detached(py, || Ok(extend(&base, &origin, &pieces, &opts)?))?;
    let added = ext
        .added
        .into_iter()
        .map(|a| (a.piece, a.id, a.score, a.origin.name()))
        .collect();
    let skipped = ext
        .skipped
        .into_iter()
        .map(|(p, r)| (p, r.name()))
        .collect();
    Ok((
        PyBytes::new(py, &ext.model),
        ext.base_size,
        added,
        skipped,
        ext.unreachable,
    ))
}

/// NORMAL pieces of a model that their own text does not produce, as (id, piece).
#[pyfunction]
pub fn spm_unreachable(
    py: Python<'_>,
    model: Vec<u8>,
    origin: String,
) -> PyResult<Vec<(u32, String)>> {
    run_detached(py, || Ok(unreachable_pieces(&model, &origin)?))
}

/// The model with `add_dummy_prefix` off.
#[pyfunction]
pub fn spm_without_dummy_prefix<'py>(
    py: Python<'py>,
    model: Vec<u8>,
    origin: String,
) -> PyResult<Bound<'py, PyBytes>> {
    let out = run_detached(py, || {
        Ok(hanpack_core::vocab::extend::model_without_dummy_prefix(
            &model, &origin,
        )?)
    })?;
    Ok(PyBytes::new(py, &out))
}

/// Whether `text` has a CJK character (the rule `extend_spm` applies to new pieces).
#[pyfunction]
pub fn has_cjk(text: &str) -> bool {
    text.chars().any(hanpack_core::vocab::extend::is_cjk)
}

/// `tokenizer.json` text for a BPE model.
#[pyfunction]
pub fn spm_to_hf_json(py: Python<'_>, model: Vec<u8>, origin: String) -> PyResult<String> {
    run_detached(py, || Ok(spm_bpe_to_hf_json(&model, &origin)?))
}

/// Unit counts of a training corpus, filled batch by batch (each batch in parallel,
/// without the GIL).
#[pyclass(frozen, module = "hanpack._core")]
pub struct UnitCounter {
    counts: Mutex<UnitCounts>,
    opts: UnitOptions,
}

impl UnitCounter {
    /// Runs `f` on the counts without the GIL, on the thread pool of `num_threads`.
    fn count(
        &self,
        py: Python<'_>,
        num_threads: Option<usize>,
        f: impl FnOnce(&mut UnitCounts, &UnitOptions) -> hanpack_core::Result<()> + Send,
    ) -> PyResult<()> {
        run_detached(py, || {
            let mut guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let c: &mut UnitCounts = &mut guard;
            pool::install(num_threads, || f(c, &self.opts))?;
            Ok(())
        })
    }
}

#[pymethods]
impl UnitCounter {
    #[new]
    #[pyo3(signature = (*, add_dummy_prefix, split_digits, hmm))]
    fn new(add_dummy_prefix: bool, split_digits: bool, hmm: bool) -> Self {
        Self {
            counts: Mutex::new(UnitCounts::default()),
            opts: UnitOptions {
                add_dummy_prefix,
                split_digits,
                hmm,
            },
        }
    }

    #[pyo3(signature = (lines, weight, segmenter=None, num_threads=None))]
    fn add_lines(
        &self,
        py: Python<'_>,
        lines: Vec<String>,
        weight: u64,
        segmenter: Option<PyRef<'_, JiebaSegmenter>>,
        num_threads: Option<usize>,
    ) -> PyResult<()> {
        let seg = segmenter.as_ref().map(|s| &s.seg);
        self.count(py, num_threads, |c, opts| {
            c.add_lines(&lines, weight, opts, seg)
        })
    }

    /// Counts the lines of a block of a text file (whole lines, UTF-8 checked here).
    #[pyo3(signature = (block, origin, offset, weight, segmenter=None, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_text(
        &self,
        py: Python<'_>,
        block: Vec<u8>,
        origin: String,
        offset: u64,
        weight: u64,
        segmenter: Option<PyRef<'_, JiebaSegmenter>>,
        num_threads: Option<usize>,
    ) -> PyResult<()> {
        let seg = segmenter.as_ref().map(|s| &s.seg);
        self.count(py, num_threads, |c, opts| {
            c.add_text(&block, &origin, offset, weight, opts, seg)
        })
    }

    /// Drops the rarest units when more than `max_units` are held.
    fn prune(&self, py: Python<'_>, max_units: usize) -> PyResult<()> {
        run_detached(py, || {
            self.counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .prune(max_units);
            Ok(())
        })
    }

    /// (lines, bytes, distinct units, pruned units).
    fn stats(&self) -> (u64, u64, usize, u64) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (c.lines, c.bytes, c.len(), c.pruned)
    }

    /// The `n` most frequent units that satisfy: at least `min_chars` characters after
    /// a leading `▁` is removed, and every character is CJK. Counts of `▁w` and `w` are
    /// added together. Returns (word, count), most frequent first.
    fn top_words(
        &self,
        py: Python<'_>,
        n: usize,
        min_chars: usize,
        max_chars: usize,
    ) -> PyResult<Vec<(String, u64)>> {
        run_detached(py, || {
            let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            Ok(c.top_cjk_words(n, min_chars, max_chars))
        })
    }

    /// Trains a BPE model on the counts; returns (model bytes, alphabet, merges,
    /// uncovered character occurrences).
    #[pyo3(signature = (*, vocab_size, character_coverage, byte_fallback, max_piece_chars, min_frequency, num_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn train_bpe<'py>(
        &self,
        py: Python<'py>,
        vocab_size: usize,
        character_coverage: f64,
        byte_fallback: bool,
        max_piece_chars: usize,
        min_frequency: u64,
        num_threads: Option<usize>,
    ) -> PyResult<(Bound<'py, PyBytes>, usize, usize, u64)> {
        let opts = BpeTrainOptions {
            vocab_size,
            character_coverage,
            byte_fallback,
            max_piece_chars,
            min_frequency,
            split_digits: self.opts.split_digits,
            add_dummy_prefix: self.opts.add_dummy_prefix,
        };
        let t = run_detached(py, || {
            let guard = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let c: &UnitCounts = &guard;
            Ok(pool::install(num_threads, || train_bpe(c, &opts))?)
        })?;
        Ok((
            PyBytes::new(py, &t.model),
            t.alphabet,
            t.merges,
            t.uncovered_chars,
        ))
    }
}
