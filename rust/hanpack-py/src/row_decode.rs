//! `decode_batch`: rows of ids to a list of `str`, a chunk of rows at a time. Only the
//! calling thread may read the rows' Python ints and make the `str`s, so on several cores
//! it flattens chunk k + 1 and makes the strings of chunk k - 1 while helpers decode chunk
//! k. Each chunk's buffers go round and are reused.
//!
//! Flattening the whole batch first faulted in a fresh buffer for all its ids on every
//! call (8 MB of Chinese, Chinese-LLaMA, one thread: 213 MB/s, below a `decode` per row;
//! now 285 MB/s).

use std::collections::BTreeMap;
use std::sync::mpsc;

use hanpack_core::HanpackError;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyString};

use crate::batch::{DecodeInto, DecodeUtf16};
use crate::convert::{append_ids, str_from_units};
use crate::errors::{guard, run_detached, to_pyerr, Failure};
use crate::pipeline::SharedReceiver;
use crate::pool;

/// Rows per chunk.
const CHUNK_ROWS: usize = 256;

/// A chunk of rows: their ids back to back, then their texts back to back.
#[derive(Default)]
struct Chunk {
    ids: Vec<i64>,
    /// Where each row's ids end in `ids`.
    row_ends: Vec<usize>,
    /// The texts of rows decoded to UTF-16 (Chinese text with byte-level BPE: Python then
    /// copies the units instead of decoding UTF-8 on the calling thread, which alone makes
    /// the strings).
    units: Vec<u16>,
    text: String,
    /// Where each row's text ends, in `units` or in `text`.
    text_ends: Vec<TextEnd>,
}

#[derive(Clone, Copy)]
enum TextEnd {
    Units(usize),
    Utf8(usize),
}

impl Chunk {
    /// The next rows of `rows` (up to [`CHUNK_ROWS`]); false when there were none.
    fn fill(&mut self, rows: &mut Bound<'_, PyIterator>) -> PyResult<bool> {
        self.ids.clear();
        self.row_ends.clear();
        for row in rows.by_ref().take(CHUNK_ROWS) {
            append_ids(&row?, &mut self.ids)?;
            self.row_ends.push(self.ids.len());
        }
        Ok(!self.row_ends.is_empty())
    }

    /// Decodes the rows to UTF-16 by `utf16` where it can, else by `decode`.
    fn decode(
        &mut self,
        decode: &impl DecodeInto,
        utf16: Option<DecodeUtf16<'_>>,
    ) -> Result<(), HanpackError> {
        self.units.clear();
        self.text.clear();
        self.text_ends.clear();
        let mut start = 0;
        for &end in &self.row_ends {
            let ids = &self.ids[start..end];
            let at = self.units.len();
            if utf16.is_some_and(|f| f(ids, &mut self.units)) {
                self.text_ends.push(TextEnd::Units(self.units.len()));
            } else {
                self.units.truncate(at);
                decode(ids, &mut self.text)?;
                self.text_ends.push(TextEnd::Utf8(self.text.len()));
            }
            start = end;
        }
        Ok(())
    }

    fn append_to(&self, py: Python<'_>, out: &Bound<'_, PyList>) -> PyResult<()> {
        let (mut units_start, mut text_start) = (0, 0);
        for &end in &self.text_ends {
            match end {
                TextEnd::Units(end) => {
                    out.append(str_from_units(py, &self.units[units_start..end])?)?;
                    units_start = end;
                }
                TextEnd::Utf8(end) => {
                    out.append(PyString::new(py, &self.text[text_start..end]))?;
                    text_start = end;
                }
            }
        }
        Ok(())
    }
}

/// The texts of `batch`'s rows (each a sequence of ids), on `num_threads` threads, by
/// `utf16` where it can and by `decode` otherwise.
pub fn decode_rows<'py>(
    py: Python<'py>,
    batch: &Bound<'py, PyAny>,
    num_threads: Option<usize>,
    decode: impl DecodeInto,
    utf16: Option<DecodeUtf16<'_>>,
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    let mut rows = batch.try_iter()?;
    let Some(helpers) = pool::pipeline_helpers(num_threads) else {
        let mut chunk = Chunk::default();
        while chunk.fill(&mut rows)? {
            run_detached(py, || Ok(chunk.decode(&decode, utf16)?))?;
            chunk.append_to(py, &out)?;
        }
        return Ok(out);
    };
    let (job_tx, job_rx) = mpsc::channel::<(usize, Chunk)>();
    let job_rx = SharedReceiver::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, Chunk, Result<(), Failure>)>();
    let n_helpers = helpers.current_num_threads();
    helpers.in_place_scope(|scope| {
        for _ in 0..n_helpers {
            let (job_rx, done_tx, decode) = (&job_rx, done_tx.clone(), &decode);
            // Until no chunk is left (the caller dropped the sender).
            scope.spawn(move |_| {
                while let Some((k, mut chunk)) = job_rx.recv() {
                    let r = guard(|| Ok(chunk.decode(decode, utf16)?));
                    if done_tx.send((k, chunk, r)).is_err() {
                        break; // the caller gave up after an error
                    }
                }
            });
        }
        drop(done_tx);
        let done = SharedReceiver::new(done_rx);
        let r = convert_in_order(py, &mut rows, &out, &job_tx, &done, 2 * n_helpers + 1);
        drop(job_tx); // the helpers end
        r
    })?;
    Ok(out)
}

/// The calling thread's side of `decode_rows`: chunks filled and sent to the helpers, at
/// most `ahead` of them out, and their texts appended in order as they come back.
fn convert_in_order(
    py: Python<'_>,
    rows: &mut Bound<'_, PyIterator>,
    out: &Bound<'_, PyList>,
    jobs: &mpsc::Sender<(usize, Chunk)>,
    done: &SharedReceiver<(usize, Chunk, Result<(), Failure>)>,
    ahead: usize,
) -> PyResult<()> {
    let (mut sent, mut appended, mut more) = (0, 0, true);
    let mut ready = BTreeMap::new();
    let mut spare: Vec<Chunk> = Vec::new();
    let helper_gone = || to_pyerr(py, Failure::Panic("a helper thread ended early".into()));
    loop {
        while let Some((k, chunk, r)) = done.try_recv() {
            ready.insert(k, (chunk, r));
        }
        while let Some((chunk, r)) = ready.remove(&appended) {
            r.map_err(|e| to_pyerr(py, e))?;
            chunk.append_to(py, out)?;
            appended += 1;
            spare.push(chunk);
        }
        if more && sent - appended < ahead {
            let mut chunk = spare.pop().unwrap_or_default();
            if chunk.fill(rows)? {
                jobs.send((sent, chunk)).map_err(|_| helper_gone())?;
                sent += 1;
                continue;
            }
            more = false;
        }
        if appended == sent {
            return Ok(());
        }
        // Nothing to fill or append: wait for a helper, without the GIL.
        let (k, chunk, r) = py.detach(|| done.recv()).ok_or_else(helper_gone)?;
        ready.insert(k, (chunk, r));
    }
}
