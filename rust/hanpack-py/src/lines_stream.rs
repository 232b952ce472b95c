//! `LinesStream`: batches of whole lines (as `TokenizerBase._encode_lines_core` takes
//! them) encoded on the worker pool one after another and taken back in the order they
//! were submitted. `hanpack.data`'s local pipeline submits a few batches ahead and writes
//! each result while the later ones encode.
//!
//! Each batch is one job on the pool (read, split into line ranges, encode), so a worker
//! that runs out of one batch's ranges steals the next batch's at once. Before, a Python
//! thread sat in a blocking call per batch: each batch's end left a core idle until that
//! thread had taken the GIL back, converted the result and read its next span (on two
//! cores, rayon's workers slept 1-5 ms at most batch ends, ~85 ms of a 0.7 s run each).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use hanpack_core::HanpackError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::batch::{lines_encoded, LinesEncoded, LinesOut, LinesSpan};
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
            narrow: narrow && vocab_size <= 1 << 16,
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
        let (shared, encode) = (self.shared.clone(), self.encode.clone());
        let (narrow, num_threads) = (self.narrow, self.num_threads);
        pool::spawn(num_threads, move || {
            let closed = shared.lock().closed;
            let outcome = (!closed).then(|| {
                guard(|| {
                    let read;
                    let data = match &source {
                        Source::Bytes(b) => b.as_slice(),
                        Source::Span(span) => {
                            read = span.read()?;
                            read.as_slice()
                        }
                    };
                    let encode = |t: &str, out: &mut Vec<u32>| encode(t, out);
                    let field = json_field.as_deref();
                    let lines = lines_encoded(data, field, narrow, num_threads, &encode)?;
                    Ok((lines, data.len()))
                })
            });
            let mut state = shared.lock();
            if let (Some(outcome), false) = (outcome, state.closed) {
                let index = (seq - state.first) as usize;
                state.results[index] = Some(outcome);
            }
            state.jobs -= 1;
            shared.job_ended.notify_all();
        });
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
