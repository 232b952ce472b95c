//! Vocabulary building: extension of SentencePiece BPE models and their HF export.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use hanpack_core::vocab::extend::{extend, unreachable_pieces, ExtendOptions, Placement};
use hanpack_core::vocab::hf_export::spm_bpe_to_hf_json;

use crate::errors::run_detached;

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

/// `tokenizer.json` text for a BPE model.
#[pyfunction]
pub fn spm_to_hf_json(py: Python<'_>, model: Vec<u8>, origin: String) -> PyResult<String> {
    run_detached(py, || Ok(spm_bpe_to_hf_json(&model, &origin)?))
}
