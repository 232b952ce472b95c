//! Batch encoding shared by every tokenizer class (batch decoding: `row_decode`): the
//! model is given as a closure, so each class only says how one text (or one id row) is
//! processed.

use std::ops::Range;

use std::path::Path;

use hanpack_core::io::records::{line_record, read_whole_lines, Record};
use hanpack_core::HanpackError;
use numpy::PyArray1;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyList};
use rayon::prelude::*;

use crate::convert::id_list;
use crate::errors::{run_detached, Failure};
use crate::pipeline::pipelined;
use crate::pool;

/// Batches are split into this many items per rayon task at least, so tiny lines do not
/// drown in scheduling overhead.
const MIN_TASK: usize = 64;

/// Items per chunk of a batch whose results become lists: about 256 chunks, so that the
/// worker's last chunk and the caller's last conversions end close together (10,705 lines
/// of Chinese on two cores, against 64 chunks: LLaMA-3 1.86-1.90x -> 1.93-2.00x one
/// thread, Qwen2 1.89-1.90x -> 1.91-1.97x, Chinese-LLaMA unchanged).
fn list_chunk(n: usize) -> usize {
    (n / 256).clamp(MIN_TASK, 4096)
}

/// `encode(text, out)` appends one text's ids to `out`.
pub trait EncodeInto: Fn(&str, &mut Vec<u32>) -> Result<(), HanpackError> + Sync {}
impl<F: Fn(&str, &mut Vec<u32>) -> Result<(), HanpackError> + Sync> EncodeInto for F {}

/// `decode(ids, out)` appends one row's text to `out`.
pub trait DecodeInto: Fn(&[i64], &mut String) -> Result<(), HanpackError> + Sync {}
impl<F: Fn(&[i64], &mut String) -> Result<(), HanpackError> + Sync> DecodeInto for F {}

/// Decodes ids straight to UTF-16 units where it can (see `hanpack_core::tokenizer::ucs2`;
/// false otherwise, with a partial result written). Called once per row, so dynamic.
pub type DecodeUtf16<'a> = &'a (dyn Fn(&[i64], &mut Vec<u16>) -> bool + Sync);

/// A list of id lists; workers encode chunks while this thread builds the Python lists.
pub fn encode_lists<'py>(
    py: Python<'py>,
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
                out.append(id_list(py, &ids[start..end], vocab_size)?)?;
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
            // 32 chunks a thread, not 8: the last chunks then end closer together (LLaMA-3 and
            // Qwen2 lines of Chinese, 2 cores / 1 thread: 1.66-1.74x -> 1.78-1.79x).
            let chunk = (texts.len() / (rayon::current_num_threads() * 32)).max(MIN_TASK);
            let parts = texts
                .par_chunks(chunk)
                .map(|chunk| {
                    // Room for a token per two bytes (more than text needs but byte fallback):
                    // growing copied the ids and faulted fresh pages in, on both threads.
                    let mut ids: Vec<i32> =
                        Vec::with_capacity(chunk.iter().map(|t| t.len() / 2 + 2).sum());
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

/// What `encode_lines` returns: flat ids (uint16 when `narrow`, else uint32), document bounds (int64, documents + 1),
/// each document's line number and the byte offset after its line (int64, both relative
/// to the chunk), the lines that are not documents as `(kind, line, message)`, and the
/// number of lines.
pub type LinesOut<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Vec<(&'static str, i64, String)>,
    usize,
);

/// One task's encoding of a byte range of whole lines.
#[derive(Default)]
pub struct LinesPart {
    ids: Vec<u32>,
    lens: Vec<i64>,
    /// Line numbers and end offsets of the documents, from the range's start (made
    /// chunk-relative when the parts are gathered).
    lines: Vec<i64>,
    ends: Vec<i64>,
    skipped: Vec<(&'static str, i64, String)>,
    n_lines: i64,
}

/// Byte ranges of about `data.len() / n` that start at line starts.
pub fn line_ranges(data: &[u8], n: usize) -> Vec<Range<usize>> {
    let step = (data.len() / n.max(1)).max(1 << 14);
    let mut out = Vec::with_capacity(n + 1);
    let mut start = 0;
    while start < data.len() {
        let target = (start + step).min(data.len());
        let end = match memchr::memchr(b'\n', &data[target - 1..]) {
            Some(i) => target + i,
            None => data.len(),
        };
        out.push(start..end);
        start = end;
    }
    out
}

/// Splits whole lines of a `.txt` or, with `json_field`, a `.jsonl` file into records
/// (`hanpack_core::io::records`) and encodes the documents: byte ranges in parallel (the
/// line search too), then gathered in order in parallel. `source` is the lines as
/// `bytes`, or `(path, start, end, size)`: the whole lines of that file from byte `start`
/// (about `size` bytes, never past `end`), read here without the GIL. Also returns how
/// many bytes of lines that was.
pub fn encode_lines<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    json_field: Option<&str>,
    narrow: bool,
    vocab_size: usize,
    num_threads: Option<usize>,
    encode: impl EncodeInto,
) -> PyResult<(LinesOut<'py>, usize)> {
    let narrow = narrow_ids(narrow, vocab_size);
    let encoded = |data: &[u8]| lines_encoded(data, json_field, narrow, num_threads, &encode);
    let (out, consumed) = if let Ok(bytes) = source.cast::<PyBytes>() {
        let data = bytes.as_bytes();
        run_detached(py, || Ok((encoded(data)?, data.len())))?
    } else {
        let span = LinesSpan::extract(source)?;
        run_detached(py, || {
            let data = span.read()?;
            Ok((encoded(&data)?, data.len()))
        })?
    };
    Ok((out.into_py(py), consumed))
}

/// Whether corpus ids go out as uint16: when asked and every id fits.
pub fn narrow_ids(narrow: bool, vocab_size: usize) -> bool {
    narrow && vocab_size <= 1 << 16
}

/// `(path, start, end, size)`: the whole lines of a file from byte `start`, about `size`
/// bytes of them, never past `end` (`read_whole_lines`).
pub struct LinesSpan {
    path: String,
    start: u64,
    end: u64,
    size: usize,
}

impl LinesSpan {
    pub fn extract(source: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (path, start, end, size) = source.extract().map_err(|_| {
            PyTypeError::new_err("source must be bytes or a (path, start, end, size) tuple")
        })?;
        Ok(Self {
            path,
            start,
            end,
            size,
        })
    }

    /// The lines' bytes (fewer when the file ends early).
    pub fn read(&self) -> Result<Vec<u8>, HanpackError> {
        read_whole_lines(Path::new(&self.path), self.start, self.end, self.size).map_err(|source| {
            HanpackError::Io {
                path: self.path.clone().into(),
                source,
            }
        })
    }
}

/// What `lines_encoded` makes, before it becomes Python objects.
pub struct LinesEncoded {
    ids: Ids,
    bounds: Vec<i64>,
    lines: Vec<i64>,
    ends: Vec<i64>,
    skipped: Vec<(&'static str, i64, String)>,
    n_lines: usize,
}

impl LinesEncoded {
    pub fn into_py(self, py: Python<'_>) -> LinesOut<'_> {
        let ids = match self.ids {
            Ids::U16(v) => PyArray1::from_vec(py, v).into_any(),
            Ids::U32(v) => PyArray1::from_vec(py, v).into_any(),
        };
        (
            ids,
            PyArray1::from_vec(py, self.bounds),
            PyArray1::from_vec(py, self.lines),
            PyArray1::from_vec(py, self.ends),
            self.skipped,
            self.n_lines,
        )
    }
}

pub fn lines_encoded(
    data: &[u8],
    json_field: Option<&str>,
    narrow: bool,
    num_threads: Option<usize>,
    encode: &impl EncodeInto,
) -> Result<LinesEncoded, HanpackError> {
    pool::install(num_threads, || {
        let ranges = line_ranges(data, rayon::current_num_threads() * RANGES_PER_THREAD);
        let parts = ranges
            .par_iter()
            .map(|range| lines_part(data, range.clone(), json_field, encode))
            .collect::<Result<Vec<_>, HanpackError>>()?;
        Ok(gather_lines(parts, narrow))
    })
}

/// Line ranges per pool thread in a batch of lines.
pub const RANGES_PER_THREAD: usize = 8;

/// The records of the whole lines `data[range]`, documents encoded.
pub fn lines_part(
    data: &[u8],
    range: Range<usize>,
    json_field: Option<&str>,
    encode: &(impl EncodeInto + ?Sized),
) -> Result<LinesPart, HanpackError> {
    let mut p = LinesPart {
        ids: Vec::with_capacity(range.len() / 2), // as in `encode_flat`
        ..Default::default()
    };
    let mut buf = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end =
            memchr::memchr(b'\n', &data[start..range.end]).map_or(range.end, |i| start + i + 1);
        p.n_lines += 1;
        match line_record(&data[start..end], json_field) {
            Record::Document(text) => {
                buf.clear();
                encode(&text, &mut buf)?;
                p.ids.extend_from_slice(&buf);
                p.lens.push(buf.len() as i64);
                p.lines.push(p.n_lines);
                p.ends.push(end as i64);
            }
            Record::Skip(kind, message) => p.skipped.push((kind.name(), p.n_lines, message)),
        }
        start = end;
    }
    Ok(p)
}

/// The parts of consecutive line ranges as one batch's result.
pub fn gather_lines(mut parts: Vec<LinesPart>, narrow: bool) -> LinesEncoded {
    // Line numbers become chunk-relative; ids and bounds are copied into place in
    // parallel (serially this was a tenth of the call on two cores), ids narrowed
    // to the shard's dtype on the way (no separate cast pass).
    let mut line_base = 0;
    let mut docs = 0;
    let mut token_bases = Vec::with_capacity(parts.len());
    let mut tokens = 0i64;
    for p in &mut parts {
        p.lines.iter_mut().for_each(|l| *l += line_base);
        p.skipped.iter_mut().for_each(|s| s.1 += line_base);
        line_base += p.n_lines;
        docs += p.lens.len();
        token_bases.push(tokens);
        tokens += p.ids.len() as i64;
    }
    let ids = if narrow {
        Ids::U16(concat_parallel(
            &parts,
            |p| p.ids.len(),
            |p, _, d| d.iter_mut().zip(&p.ids).for_each(|(x, &i)| *x = i as u16),
        ))
    } else {
        Ids::U32(concat_parallel(
            &parts,
            |p| p.ids.len(),
            |p, _, d| d.copy_from_slice(&p.ids),
        ))
    };
    let mut bounds = vec![0i64];
    bounds.extend(concat_parallel(
        &parts,
        |p| p.lens.len(),
        |p, k, d| {
            let mut end = token_bases[k];
            for (b, l) in d.iter_mut().zip(&p.lens) {
                end += l;
                *b = end;
            }
        },
    ));
    let mut lines = Vec::with_capacity(docs);
    let mut ends = Vec::with_capacity(docs);
    let mut skipped = Vec::new();
    for p in parts {
        lines.extend_from_slice(&p.lines);
        ends.extend_from_slice(&p.ends);
        skipped.extend(p.skipped);
    }
    LinesEncoded {
        ids,
        bounds,
        lines,
        ends,
        skipped,
        n_lines: line_base as usize,
    }
}

enum Ids {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

/// The parts' pieces (`len` items each, written by `fill(part, index, dest)`) back to back
/// in one vector, filled in parallel.
fn concat_parallel<P: Sync, T: Copy + Default + Send>(
    parts: &[P],
    len: impl Fn(&P) -> usize,
    fill: impl Fn(&P, usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = vec![T::default(); parts.iter().map(&len).sum()];
    let mut dests = Vec::with_capacity(parts.len());
    let mut rest = &mut out[..];
    for p in parts {
        let (d, tail) = rest.split_at_mut(len(p));
        dests.push(d);
        rest = tail;
    }
    dests
        .into_par_iter()
        .enumerate()
        .for_each(|(k, d)| fill(&parts[k], k, d));
    out
}
