//! `LinesStream`: batches of whole lines (as `TokenizerBase._encode_lines_core` takes
//! them) encoded on the worker pool one after another and taken back in the order they
//! were submitted. `hanpack.data`'s local pipeline submits a few batches ahead and writes
//! each result while the later ones encode.
//!
//! A batch is a job on the pool that reads the lines and queues one task per line range;
//! the task that finishes last gathers the parts and hands the result over. No task waits
//! for another, so a worker that runs out of one batch's ranges takes the next batch's at
//! once. Before, a Python thread sat in a blocking call per batch: each batch's end left a
//! core idle until that thread had taken the GIL back, converted the result and read its
//! next span (on two cores, rayon's workers slept 1-5 ms at most batch ends, ~85 ms of a
//! 0.7 s run each). A job that waited in `join` for its ranges was no better: the waiting
//! worker ran other batches' jobs on top of it, and the batch was done only once they were.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use hanpack_core::HanpackError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::batch::{
    gather_lines, line_ranges, lines_part, narrow_ids, LinesEncoded, LinesOut, LinesPart,
    LinesSpan, RANGES_PER_THREAD,
};
use crate::errors::{guard, to_pyerr, Failure};
use crate::pool;

/// `encode(text, out)` appends one document's ids to `out`; owned, for jobs that outlive
/// the call that queued them.
pub type SharedEncoder = Arc<dyn Fn(&str, &mut Vec<u32>) -> Result<(), HanpackError> + Send + Sync>;

/// Where a batch's lines come from.
enum Source {
    Bytes(Vec<u8>),
    Span(LinesSpan),
}

/// A batch's result: the encoded lines and how many bytes of lines they were.
type Outcome = Result<(LinesEncoded, usize), Failure>;

#[derive(Default)]
struct State {
    /// Results of the batches not yet taken, oldest first (`None`: still encoding).
    results: VecDeque<Option<Outcome>>,
    /// Sequence number of `results[0]`.
    first: u64,
    /// Jobs queued or running (one that finds the stream closed ends at once).
    jobs: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a job ends.
    job_ended: Condvar,
}

impl Shared {
    fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Batch `seq`'s result (dropped when the stream was closed meanwhile); its job ends.
    fn finish(&self, seq: u64, outcome: Option<Outcome>) {
        let mut state = self.lock();
        if let (Some(outcome), false) = (outcome, state.closed) {
            let index = (seq - state.first) as usize;
            state.results[index] = Some(outcome);
        }
        state.jobs -= 1;
        self.job_ended.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs never panic while holding it (their work runs under `guard`, unlocked).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.job_ended
            .wait(state)
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// One submitted batch, and how it is encoded.
struct Batch {
    stream: Arc<Shared>,
    seq: u64,
    encode: SharedEncoder,
    json_field: Option<String>,
    narrow: bool,
}

impl Batch {
    /// The job: reads the lines and queues a task per range (the last one gathers).
    fn start(self, source: Source) {
        if self.stream.closed() {
            return self.stream.finish(self.seq, None);
        }
        let prepared = guard(|| {
            let data = match source {
                Source::Bytes(b) => b,
                Source::Span(span) => span.read()?,
            };
            let ranges = line_ranges(&data, rayon::current_num_threads() * RANGES_PER_THREAD);
            Ok((data, ranges))
        });
        let (data, ranges) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return self.stream.finish(self.seq, Some(Err(e))),
        };
        if ranges.is_empty() {
            let lines = gather_lines(Vec::new(), self.narrow);
            return self.stream.finish(self.seq, Some(Ok((lines, data.len()))));
        }
        let n = ranges.len();
        let parts = Arc::new(Parts {
            batch: self,
            data,
            slots: Mutex::new((0..n).map(|_| None).collect()),
            left: AtomicUsize::new(n),
        });
        for (k, range) in ranges.into_iter().enumerate() {
            let parts = parts.clone();
            // FIFO: this worker takes the batch's ranges in order, like the other workers.
            rayon::spawn_fifo(move || parts.encode(k, range));
        }
    }
}

/// A batch's line ranges being encoded.
struct Parts {
    batch: Batch,
    data: Vec<u8>,
    slots: Mutex<Vec<Option<Result<LinesPart, Failure>>>>,
    /// Ranges not yet encoded.
    left: AtomicUsize,
}

impl Parts {
    fn encode(&self, k: usize, range: Range<usize>) {
        let b = &self.batch;
        let part = if b.stream.closed() {
            Ok(LinesPart::default()) // not encoded: a closed stream drops the batch
        } else {
            let encode = |t: &str, out: &mut Vec<u32>| (b.encode)(t, out);
            guard(|| {
                Ok(lines_part(
                    &self.data,
                    range,
                    b.json_field.as_deref(),
                    &encode,
                )?)
            })
        };
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[k] = Some(part);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last range: every slot is filled.
            let slots = std::mem::take(&mut *self.slots.lock().unwrap_or_else(|p| p.into_inner()));
            let outcome = guard(|| {
                let parts = slots
                    .into_iter()
                    .map(|p| p.unwrap_or_else(|| Err(Failure::Panic("a range was lost".into()))))
                    .collect::<Result<Vec<_>, Failure>>()?;
                Ok((gather_lines(parts, b.narrow), self.data.len()))
            });
            b.stream.finish(b.seq, Some(outcome));
        }
    }
}

#[pyclass(frozen, module = "hanpack._core")]
pub struct LinesStream {
    shared: Arc<Shared>,
    encode: SharedEncoder,
    narrow: bool,
    num_threads: Option<usize>,
}

impl LinesStream {
    /// `narrow`: uint16 ids when every id fits (see `batch::encode_lines`).
    pub fn new(
        encode: SharedEncoder,
        narrow: bool,
        vocab_size: usize,
        num_threads: Option<usize>,
    ) -> Self {
        Self {
            shared: Arc::default(),
            encode,
            narrow: narrow_ids(narrow, vocab_size),
            num_threads,
        }
    }
}

#[pymethods]
impl LinesStream {
    /// Queues a batch: ``bytes`` of whole lines, or ``(path, start, end, size)``, whole
    /// lines of a file read by the job (``Tokenizer._encode_lines``' ``source``).
    #[pyo3(signature = (source, json_field=None))]
    fn submit(&self, source: &Bound<'_, PyAny>, json_field: Option<String>) -> PyResult<()> {
        let source = match source.cast::<PyBytes>() {
            // Copied: the job outlives this call (only compressed inputs come as bytes).
            Ok(bytes) => Source::Bytes(bytes.as_bytes().to_vec()),
            Err(_) => Source::Span(LinesSpan::extract(source)?),
        };
        let seq = {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "the stream is closed",
                ));
            }
            state.results.push_back(None);
            state.jobs += 1;
            state.first + state.results.len() as u64 - 1
        };
        let batch = Batch {
            stream: self.shared.clone(),
            seq,
            encode: self.encode.clone(),
            json_field,
            narrow: self.narrow,
        };
        pool::spawn(self.num_threads, move || batch.start(source));
        Ok(())
    }

    /// The oldest batch not yet taken, once encoded (waiting without the GIL), as
    /// ``Tokenizer._encode_lines`` returns it; its error (e.g. ``OSError`` for a span that
    /// cannot be read) is raised here.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<(LinesOut<'py>, usize)> {
        let shared = &self.shared;
        let outcome = py.detach(|| {
            let mut state = shared.lock();
            loop {
                match state.results.front() {
                    None => return None,
                    Some(Some(_)) => {
                        state.first += 1;
                        return state.results.pop_front().flatten();
                    }
                    Some(None) => state = shared.wait(state),
                }
            }
        });
        let Some(outcome) = outcome else {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "no batch submitted and not yet taken",
            ));
        };
        let (lines, consumed) = outcome.map_err(|e| to_pyerr(py, e))?;
        Ok((lines.into_py(py), consumed))
    }

    /// Drops the batches not yet taken and returns once no job of this stream runs
    /// (queued ones end at once). Submitting afterwards is an error.
    fn close(&self, py: Python<'_>) {
        let shared = &self.shared;
        py.detach(|| {
            let mut state = shared.lock();
            state.closed = true;
            state.results.clear();
            while state.jobs > 0 {
                state = shared.wait(state);
            }
        });
    }
}

impl Drop for LinesStream {
    fn drop(&mut self) {
        // Queued jobs end without encoding; running ones finish and drop their result.
        let mut state = self.shared.lock();
        state.closed = true;
        state.results.clear();
    }
}
