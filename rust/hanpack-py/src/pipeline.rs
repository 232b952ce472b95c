//! Batches whose results become Python objects: worker threads encode chunks while the
//! calling thread, which alone may touch Python objects, converts the finished chunks in
//! order. Without this overlap the (GIL-bound) conversion ran after all the encoding and
//! capped `encode_batch` on 2 cores at ~1.1x one core.
//!
//! With n threads there are n - 1 workers: the calling thread is the n-th, and encodes a
//! chunk itself (GIL released) whenever the next chunk to convert is not ready. n workers
//! plus a converting thread put n + 1 busy threads on n cores, and the time lost to that
//! oversubscription held 2-core batches to ~1.5x one thread.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use pyo3::prelude::*;

use crate::errors::{guard, to_pyerr, Failure};
use crate::pool;

/// The receiving end of a channel that several threads, or a closure run without the GIL,
/// may use: an `mpsc::Receiver` is not `Sync`, so such a closure could not borrow it (and
/// moving it out and back for each wait was written twice). Each use locks it, uncontended
/// but for helpers waiting on the same job queue.
pub struct SharedReceiver<T>(Mutex<mpsc::Receiver<T>>);

impl<T: Send> SharedReceiver<T> {
    pub fn new(receiver: mpsc::Receiver<T>) -> Self {
        Self(Mutex::new(receiver))
    }

    fn receiver(&self) -> std::sync::MutexGuard<'_, mpsc::Receiver<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message already sent, if any.
    pub fn try_recv(&self) -> Option<T> {
        self.receiver().try_recv().ok()
    }

    /// The next message, waiting for it; `None` once every sender is gone.
    pub fn recv(&self) -> Option<T> {
        self.receiver().recv().ok()
    }
}

/// Runs `work` over `chunk`-sized slices of `items` on the pool and hands each result, in
/// chunk order, to `emit` on the calling thread (with the GIL held only during `emit`).
pub fn pipelined<T, R>(
    py: Python<'_>,
    items: &[T],
    chunk: usize,
    num_threads: Option<usize>,
    work: impl Fn(&[T]) -> Result<R, Failure> + Sync,
    mut emit: impl FnMut(R) -> PyResult<()>,
) -> PyResult<()>
where
    T: Sync,
    R: Send,
{
    let chunk = chunk.max(1);
    let n_chunks = items.len().div_ceil(chunk);
    if n_chunks == 0 {
        return Ok(());
    }
    let Some(helpers) = pool::pipeline_helpers(num_threads) else {
        // One thread means one: work and conversion alternate on the calling thread.
        for part in items.chunks(chunk) {
            let r = py
                .detach(|| guard(|| work(part)))
                .map_err(|e| to_pyerr(py, e))?;
            emit(r)?;
        }
        return Ok(());
    };
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Result<R, Failure>)>();
    // The helpers' tasks borrow the batch; this thread converts, inside the scope, so no
    // thread is started per call (a thread per call, handing its work to a pool that woke
    // a second, idle worker, left 12% of two cores idle in 9 ms calls).
    helpers.in_place_scope(|scope| {
        let (next, work) = (&next, &work);
        for _ in 0..helpers.current_num_threads() {
            let tx = tx.clone();
            // Workers take chunks in order, so results arrive roughly in order.
            scope.spawn(move |_| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n_chunks {
                    break;
                }
                let part = &items[k * chunk..((k + 1) * chunk).min(items.len())];
                if tx.send((k, guard(|| work(part)))).is_err() {
                    break; // the receiver gave up after an error
                }
            });
        }
        drop(tx);

        let rx = SharedReceiver::new(rx);
        let mut waiting: BTreeMap<usize, R> = BTreeMap::new();
        let mut expected = 0;
        let fail = |e: Failure| {
            next.store(n_chunks, Ordering::Relaxed);
            to_pyerr(py, e)
        };
        while expected < n_chunks {
            if let Some(r) = waiting.remove(&expected) {
                emit(r)?;
                expected += 1;
                continue;
            }
            if let Some((k, r)) = rx.try_recv() {
                waiting.insert(k, r.map_err(fail)?);
                continue;
            }
            // Nothing to convert yet: encode the next unclaimed chunk here.
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k < n_chunks {
                let part = &items[k * chunk..((k + 1) * chunk).min(items.len())];
                let r = py.detach(|| guard(|| work(part)));
                waiting.insert(k, r.map_err(fail)?);
                continue;
            }
            match py.detach(|| rx.recv()) {
                Some((k, r)) => {
                    waiting.insert(k, r.map_err(fail)?);
                }
                None => {
                    return Err(to_pyerr(
                        py,
                        Failure::Panic("a worker thread ended early".into()),
                    ))
                }
            }
        }
        Ok(())
    })
}
