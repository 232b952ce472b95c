//! Batch encoding and decoding shared by every tokenizer class: the model is given as a
//! closure, so each class only says how one text (or one id row) is processed.

use std::ops::Range;

use hanpack_core::HanpackError;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyList, PyString};
use rayon::prelude::*;

use crate::convert::{append_ids, IdCache};
use crate::errors::{run_detached, Failure};
use crate::pipeline::pipelined;
use crate::pool;

/// Batches are split into this many items per rayon task at least, so tiny lines do not
/// drown in scheduling overhead.
const MIN_TASK: usize = 64;

fn list_chunk(n: usize) -> usize {
    (n / 64).clamp(MIN_TASK, 4096)
}

/// `encode(text, out)` appends one text's ids to `out`.
pub trait EncodeInto: Fn(&str, &mut Vec<u32>) -> Result<(), HanpackError> + Sync {}
impl<F: Fn(&str, &mut Vec<u32>) -> Result<(), HanpackError> + Sync> EncodeInto for F {}

/// `decode(ids, out)` appends one row's text to `out`.
pub trait DecodeInto: Fn(&[i64], &mut String) -> Result<(), HanpackError> + Sync {}
impl<F: Fn(&[i64], &mut String) -> Result<(), HanpackError> + Sync> DecodeInto for F {}

/// A list of id lists; workers encode chunks while this thread builds the Python lists.
pub fn encode_lists<'py>(
    py: Python<'py>,
    ints: &IdCache,
    vocab_size: usize,
    texts: &[PyBackedStr],
    num_threads: Option<usize>,
    encode: impl EncodeInto,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    pipelined(
        py,
        texts,
        list_chunk(texts.len()),
        num_threads,
        // A chunk's ids in one buffer with the rows' ends: two allocations per chunk, not
        // one per row (each freed by this thread after a worker made it, which in glibc
        // takes the worker's arena lock: LLaMA-3 on Chinese lines, 2 cores, went from 2.2
        // to 1.7 us a line).
        |part| {
            let mut ids = Vec::with_capacity(part.iter().map(|t| t.len() / 3 + 2).sum());
            let mut ends = Vec::with_capacity(part.len());
            for t in part {
                encode(t, &mut ids)?;
                ends.push(ids.len());
            }
            Ok((ids, ends))
        },
        |(ids, ends): (Vec<u32>, Vec<usize>)| {
            let mut start = 0;
            for end in ends {
                out.append(ints.list(py, &ids[start..end], vocab_size)?)?;
                start = end;
            }
            Ok(())
        },
    )?;
    Ok(out)
}

/// Flat ids (int32) and row offsets (int64, `len(texts) + 1`), no per-token objects.
#[allow(clippy::type_complexity)]
pub fn encode_flat<'py>(
    py: Python<'py>,
    texts: &[PyBackedStr],
    num_threads: Option<usize>,
    encode: impl EncodeInto,
) -> PyResult<(Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>)> {
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
                        encode(t, &mut buf)?;
                        ids.extend(buf.iter().map(|&i| i as i32));
                        lens.push(buf.len() as i64);
                    }
                    Ok((ids, lens))
                })
                .collect::<Result<Vec<_>, HanpackError>>()?;
            let total: usize = parts.iter().map(|p| p.0.len()).sum();
            // The parts are copied into place in parallel (the serial copy of every id
            // was the one step left on a single core); the zeroed buffer comes from
            // calloc, so its pages are first touched by the parallel copy too.
            let mut ids = vec![0i32; total];
            let mut dests = Vec::with_capacity(parts.len());
            let mut rest = &mut ids[..];
            for (part_ids, _) in &parts {
                let (dest, tail) = rest.split_at_mut(part_ids.len());
                dests.push(dest);
                rest = tail;
            }
            dests
                .into_par_iter()
                .zip(parts.par_iter())
                .for_each(|(dest, (part_ids, _))| dest.copy_from_slice(part_ids));
            let mut offsets = Vec::with_capacity(texts.len() + 1);
            let mut end = 0i64;
            offsets.push(end);
            for (_, lens) in &parts {
                for l in lens {
                    end += l;
                    offsets.push(end);
                }
            }
            Ok::<_, Failure>((ids, offsets))
        })
    })?;
    Ok((PyArray1::from_vec(py, ids), PyArray1::from_vec(py, offsets)))
}

/// Rows are flattened into one id buffer; workers decode chunks of rows into one string
/// each while this thread turns finished chunks into Python strings (one allocation per
/// chunk instead of two per row).
pub fn decode_rows<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    num_threads: Option<usize>,
    decode: impl DecodeInto,
) -> PyResult<Bound<'py, PyList>> {
    let mut flat = Vec::new();
    let mut rows: Vec<Range<usize>> = Vec::new();
    for row in batch.try_iter()? {
        let start = flat.len();
        append_ids(&row?, &mut flat)?;
        rows.push(start..flat.len());
    }
    let out = PyList::empty(py);
    pipelined(
        py,
        &rows,
        list_chunk(rows.len()),
        num_threads,
        |part| {
            let mut text = String::new();
            let mut ends = Vec::with_capacity(part.len());
            for r in part {
                decode(&flat[r.clone()], &mut text)?;
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
