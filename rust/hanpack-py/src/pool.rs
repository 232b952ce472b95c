//! Rayon pools by thread count, built once per process and reused (building a pool per
//! call would cost more than encoding a small batch). `None` means all cores.
//!
//! Fork safety: a forked child inherits the pools but not their threads, so a batch call
//! in the child would wait forever (this is what `datasets.map(num_proc=...)` and
//! `multiprocessing` with "fork" do). Pools are therefore tagged with the process id; a
//! child builds its own, and the parent's pools are leaked on purpose (dropping them would
//! wait for threads that do not exist). Rayon's global pool is never used for that reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

struct Pools {
    pid: u32,
    by_threads: HashMap<usize, Arc<ThreadPool>>,
}

static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
/// Helper pools of quantized products, apart from the batch pools: their threads stay
/// busy for a while after a product (`quant::matmul::CallerAndHelpers`), which would
/// hold up a batch in the same pool.
static HELPER_POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();

fn pool(threads: usize) -> Arc<ThreadPool> {
    pool_in(&POOLS, "hanpack", threads)
}

fn pool_in(
    pools: &'static OnceLock<Mutex<Pools>>,
    name: &'static str,
    threads: usize,
) -> Arc<ThreadPool> {
    let pid = std::process::id();
    let cell = pools.get_or_init(|| {
        Mutex::new(Pools {
            pid,
            by_threads: HashMap::new(),
        })
    });
    let mut pools = cell.lock().unwrap_or_else(|p| p.into_inner());
    if pools.pid != pid {
        std::mem::forget(std::mem::take(&mut pools.by_threads));
        pools.pid = pid;
    }
    pools
        .by_threads
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("{name}-{i}"))
                    .build()
                    .expect("cannot start worker threads"),
            )
        })
        .clone()
}

/// The number of cores, asked once: `available_parallelism` reads cgroup files on every
/// call on Linux (measured: 50–100 µs, as long as a small layer's whole product).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many threads `num_threads` means (all cores when `None` or 0).
pub fn threads(num_threads: Option<usize>) -> usize {
    match num_threads {
        Some(n) if n > 0 => n,
        _ => cores(),
    }
}

/// Runs `f` inside a pool of `num_threads` threads (all cores when `None`).
pub fn install<R: Send>(num_threads: Option<usize>, f: impl FnOnce() -> R + Send) -> R {
    pool(threads(num_threads)).install(f)
}

/// Queues `job` on the pool of `num_threads` threads and returns at once. `job` must not
/// panic (rayon aborts the process on a panic in a spawned job): wrap it in
/// `errors::guard`.
pub fn spawn(num_threads: Option<usize>, job: impl FnOnce() + Send + 'static) {
    pool(threads(num_threads)).spawn(job)
}

/// Helpers of `pipeline::pipelined` (batches whose results become Python objects), apart
/// from the batch pools: the calling thread converts and encodes too, so they are one
/// fewer than the threads asked for.
static PIPELINE_POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();

/// The helpers beside the calling thread for a pipelined batch on `num_threads` threads
/// (all cores when `None`); `None` for one thread.
pub fn pipeline_helpers(num_threads: Option<usize>) -> Option<Arc<ThreadPool>> {
    let threads = threads(num_threads);
    (threads > 1).then(|| pool_in(&PIPELINE_POOLS, "hanpack-pipe", threads - 1))
}

/// The pool of helpers for a product on `num_threads` threads (all cores when `None`),
/// the calling thread being one of them (`quant::matmul::CallerAndHelpers`); `None` for
/// one thread.
pub fn helpers(num_threads: Option<usize>) -> Option<Arc<ThreadPool>> {
    let threads = threads(num_threads);
    (threads > 1).then(|| pool_in(&HELPER_POOLS, "hanpack-helper", threads - 1))
}
