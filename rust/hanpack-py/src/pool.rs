//! Rayon pools by thread count, built once per process and reused (building a pool per
//! call would cost more than encoding a small batch). `None` means all cores.
//!
//! Fork safety: a forked child inherits the pools but not their threads, so a batch call
//! in the child would wait forever (this is what `datasets.map(num_proc=...)` and
//! `multiprocessing` with "fork" do). Pools are therefore tagged with the process id; a
//! child builds its own, and the parent's pools are leaked on purpose (dropping them would
//! wait for threads that do not exist). Rayon's global pool is never used for that reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hanpack_core::quant::matmul::RowTasks;
use rayon::ThreadPool;

struct Pools {
    pid: u32,
    by_threads: HashMap<usize, Arc<ThreadPool>>,
}

static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();

fn pool(threads: usize) -> Arc<ThreadPool> {
    let pid = std::process::id();
    let cell = POOLS.get_or_init(|| {
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
                    .thread_name(|i| format!("hanpack-{i}"))
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

/// Row tasks taken by the calling thread and `threads - 1` helpers from a pool, from one
/// shared counter (`quant::matmul::RowTasks`).
///
/// With `install`, the caller sleeps while pool threads work: each product waited for a
/// pool thread to wake up and then for the caller to be woken (tens of µs each on this
/// project's VMs; a 4096 x 4096 int4 product takes 200-500 µs). Here the caller starts at
/// once, helpers join when they wake, and the caller spins briefly for the helpers' last
/// tasks instead of sleeping.
pub struct CallerAndPool {
    threads: usize,
    helpers: Option<Arc<ThreadPool>>,
}

/// How long the caller spins for helpers to finish before blocking (a task is a few µs;
/// a helper that has not started yet only has to notice there is nothing left).
const SPIN_FOR_HELPERS: Duration = Duration::from_micros(200);

impl CallerAndPool {
    pub fn new(num_threads: Option<usize>) -> Self {
        let threads = threads(num_threads);
        Self {
            threads,
            helpers: (threads > 1).then(|| pool(threads - 1)),
        }
    }
}

impl RowTasks for CallerAndPool {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let Some(helpers) = &self.helpers else {
            (0..n).for_each(task);
            return;
        };
        let (next, done, exited) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            task(i);
            done.fetch_add(1, Ordering::Release);
        };
        let n_helpers = self.threads - 1;
        helpers.in_place_scope(|s| {
            for _ in 0..n_helpers {
                s.spawn(|_| {
                    work();
                    exited.fetch_add(1, Ordering::Release);
                });
            }
            work();
            let start = Instant::now();
            while (done.load(Ordering::Acquire) < n || exited.load(Ordering::Acquire) < n_helpers)
                && start.elapsed() < SPIN_FOR_HELPERS
            {
                std::hint::spin_loop();
            }
        });
    }
}
