//! `y = x · Wᵀ` with `W` in the packed layout of [`super::formats`], never materialised:
//! the CPU kernel behind `hanpack.nn.QuantLinear`.
//!
//! Per group `g` of a row, with scale `s`, zero `z` and codes `q`:
//!
//! ```text
//! Σ_i (q_i - z)·s·x_i  =  s·(Σ_i q_i·x_i  -  z·Σ_i x_i)
//! ```
//!
//! so the kernel unpacks each 32-code block once, takes its dot product with the matching
//! 32 inputs of every batch row (codes as exact small floats), and applies `s` and `z` once
//! per group with the group sums of `x` computed up front. Rows are shared out across
//! threads; each block's codes are reused for the whole batch.
//!
//! [`matmul_ref`] is the scalar reference (dequantize a row with
//! [`super::formats::dequantize_row`], then a plain dot product); [`matmul`] is tested
//! against it. They sum in different orders, so they agree to rounding
//! ([`REL_TOLERANCE`]), not bit for bit.

use half::f16;
use rayon::prelude::*;

use super::formats::{self, Bits, Layout, BLOCK};
use crate::error::{HanpackError, Result};

/// Largest `|fast - ref| / (Σ|w·x| + tiny)` allowed between [`matmul`] and
/// [`matmul_ref`] (f32 sums of up to 11008 terms in different orders).
pub const REL_TOLERANCE: f32 = 1e-5;

/// A packed weight as stored: codes, fp16 scales and zeros, and its shape.
#[derive(Clone, Copy)]
pub struct PackedWeight<'a> {
    pub layout: Layout,
    pub packed: &'a [u8],
    pub scales: &'a [f16],
    pub zeros: &'a [f16],
}

impl PackedWeight<'_> {
    fn check(&self, x: &[f32], batch: usize, out: &[f32]) -> Result<()> {
        self.check_sizes(x.len(), batch, out.len())
    }

    /// The packed arrays match the layout, and `x_len` / `out_len` the batch.
    pub(super) fn check_sizes(&self, x_len: usize, batch: usize, out_len: usize) -> Result<()> {
        self.layout
            .check(self.packed.len(), self.scales.len(), self.zeros.len())?;
        let (rows, cols) = (self.layout.rows, self.layout.cols);
        if x_len != batch * cols {
            return Err(HanpackError::InvalidArgument(format!(
                "input has {x_len} values, want batch {batch} x in_features {cols}"
            )));
        }
        if out_len != batch * rows {
            return Err(HanpackError::InvalidArgument(format!(
                "output has {out_len} values, want batch {batch} x out_features {rows}"
            )));
        }
        Ok(())
    }
}

/// Scalar reference: `out[b, r] = Σ_c x[b, c] · dequantize(W)[r, c]`.
pub fn matmul_ref(w: &PackedWeight<'_>, x: &[f32], batch: usize, out: &mut [f32]) -> Result<()> {
    w.check(x, batch, out)?;
    let l = w.layout;
    let (ng, rb) = (l.n_groups(), l.row_bytes());
    let mut row = vec![0f32; l.cols];
    for r in 0..l.rows {
        formats::dequantize_row(
            l.bits,
            &w.packed[r * rb..(r + 1) * rb],
            &w.scales[r * ng..(r + 1) * ng],
            &w.zeros[r * ng..(r + 1) * ng],
            l.group_size,
            &mut row,
        );
        for b in 0..batch {
            let xb = &x[b * l.cols..(b + 1) * l.cols];
            out[b * l.rows + r] = row.iter().zip(xb).map(|(w, x)| w * x).sum();
        }
    }
    Ok(())
}

/// Rows per parallel task at least: enough work to amortise scheduling, small enough to
/// balance.
const ROWS_PER_TASK: usize = 16;
/// Multiply-adds a parallel task should hold when there are enough rows (short rows,
/// e.g. 576 inputs, would otherwise make a hundred tasks of 16 rows for one product).
const TASK_MIN_WORK: usize = 1 << 16;

/// Below this many multiply-adds (`rows · padded cols · batch`) a product runs on the
/// calling thread: waking a pool thread costs 15–50 µs, about the time one core takes
/// for this much work (measured on a 64×64 layer: 62 µs pooled, 16 µs in one thread).
pub const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Whether [`matmul`] of `batch` rows through `layout` is worth running in a pool.
pub fn worth_parallel(layout: &Layout, batch: usize) -> bool {
    layout.rows * layout.cols.div_ceil(BLOCK) * BLOCK * batch >= PARALLEL_MIN_WORK
}

/// How a product's row tasks run. [`Rayon`] (what [`matmul`] and its siblings use) runs
/// them in rayon's current pool; a caller that owns threads can run them its own way (the
/// Python binding has the calling thread take tasks too, so a product does not wait for
/// a pool thread to wake up before it starts, nor the caller for one to finish).
pub trait RowTasks: Sync {
    /// Threads that will take tasks (sizes them).
    fn threads(&self) -> usize;
    /// Calls `task(i)` once for every `i` in `0..n`, in any order, on any of its threads.
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync));
}

/// Tasks in rayon's current pool.
pub struct Rayon;

impl RowTasks for Rayon {
    fn threads(&self) -> usize {
        rayon::current_num_threads()
    }

    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..n).into_par_iter().for_each(task)
    }
}

/// Tasks taken by the calling thread and by `helpers` (a pool), from one shared counter.
///
/// With [`Rayon`] from outside a pool (`install`), the caller sleeps while pool threads
/// work: each product waited for a pool thread to wake up and then for the caller to be
/// woken (tens of µs each on this project's VMs; a 4096 x 4096 int4 product takes
/// 200-500 µs). Here the caller starts at once and helpers join when they wake. A helper
/// that has not started by the time the caller has taken the last task never enters
/// (see [`Gate`]), so the caller does not wait for it to wake up. A model's other work
/// between two products lets the helper fall asleep, and waiting for it had made
/// SmolLM2-135M's int4 generation half as fast as fp32's (15.7 tokens/s; 24.2 without the
/// wait, 1.1x fp32).
pub struct CallerAndHelpers<'p> {
    /// All the pool's threads help; `None`: the caller alone.
    pub helpers: Option<&'p rayon::ThreadPool>,
}

impl RowTasks for CallerAndHelpers<'_> {
    fn threads(&self) -> usize {
        1 + self.helpers.map_or(0, |p| p.current_num_threads())
    }

    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let Some(helpers) = self.helpers else {
            (0..n).for_each(task);
            return;
        };
        // SAFETY (of the pointer's use in `Gate::work`): helpers only call `task` between
        // entering and leaving the gate, and the caller does not return (nor unwind) past
        // `Gate::close_and_wait` until every helper that entered has left; none can enter
        // after that.
        let task: *const (dyn Fn(usize) + Sync + '_) = task;
        // SAFETY: only the lifetime bound changes (the layout is the same).
        let task: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(task) };
        let gate = std::sync::Arc::new(Gate::new(n, task));
        let lingering = Lingering::publish(&gate);
        for _ in lingering..helpers.current_num_threads() {
            let gate = gate.clone();
            helpers.spawn(move || {
                if gate.help() {
                    Lingering::wait_for_next();
                }
            });
        }
        let closing = CloseOnDrop(&gate);
        gate.work();
        drop(closing);
        if gate
            .helper_panicked
            .load(std::sync::atomic::Ordering::Acquire)
        {
            panic!("a quantized-matmul helper thread panicked");
        }
    }
}

/// The tasks of one [`CallerAndHelpers::run`], shared with helpers that may start late.
struct Gate {
    /// The caller's task, valid while the caller is in `run` (see there).
    task: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: std::sync::atomic::AtomicUsize,
    /// [`Gate::CLOSED`] | the number of helpers inside.
    state: std::sync::atomic::AtomicUsize,
    helper_panicked: std::sync::atomic::AtomicBool,
}

// SAFETY: `task` points to a `Sync` closure, called from several threads only while the
// caller keeps it alive (see `CallerAndHelpers::run`); the rest is atomics.
unsafe impl Send for Gate {}
unsafe impl Sync for Gate {}

impl Gate {
    const CLOSED: usize = 1 << (usize::BITS - 1);

    fn new(n: usize, task: *const (dyn Fn(usize) + Sync)) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        Self {
            task,
            n,
            next: AtomicUsize::new(0),
            state: AtomicUsize::new(0),
            helper_panicked: AtomicBool::new(false),
        }
    }

    /// Takes tasks until none is left.
    fn work(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                break;
            }
            // SAFETY: the caller is still in `run` (see there): the closure is alive.
            unsafe { (*self.task)(i) };
        }
    }

    /// A helper: enters unless the caller has closed the gate, works, leaves; whether it
    /// entered.
    fn help(&self) -> bool {
        use std::sync::atomic::Ordering;
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & Self::CLOSED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        // A panic is reported to the caller, which re-raises it (a panic escaping a
        // pool's spawned job would abort the process).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work())).is_err() {
            self.helper_panicked.store(true, Ordering::Release);
        }
        // Release: the caller sees this helper's output rows.
        self.state.fetch_sub(1, Ordering::Release);
        true
    }

    /// Stops helpers from entering, then waits for those inside (each finishing the task
    /// it holds: the counter has none left to give).
    fn close_and_wait(&self) {
        use std::sync::atomic::Ordering;
        self.state.fetch_or(Self::CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) != Self::CLOSED {
            if spins < 1 << 12 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Helpers that stay awake for a while after a product, watching for the next one.
///
/// Between two products of a model (Python, norms, attention: 20-300 µs) a helper that
/// went back to the pool falls asleep, and on a VM waking it takes tens of µs (its core
/// halts). A helper that helped therefore waits [`LINGER`] for the next product's gate,
/// published here, yielding its core to any other runnable thread between checks (as
/// OpenMP runtimes spin before they sleep). 4096 x 4096 int4, f32 activations, 2
/// threads, 50-150 µs between products (`examples/matmul_threads` with `GAP_US`, builds
/// alternated): median 0.356-0.386 ms → 0.305-0.322 ms; the same back to back or 1 ms
/// apart.
struct Lingering;

/// How long a helper waits for the next product.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);

/// The latest product's gate, and a count of publications (checked without the lock).
static LATEST: std::sync::Mutex<Option<std::sync::Arc<Gate>>> = std::sync::Mutex::new(None);
static PUBLISHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Helpers now waiting in [`Lingering::wait_for_next`]: the process id in the high 32
/// bits, the count in the low 32. A process forked while a helper waited inherits the
/// count but not the thread; tagged with the parent's id, the count reads as 0 there
/// (otherwise that child would never spawn helper jobs again).
static WAITING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Lingering {
    /// Makes `gate` the one waiting helpers join; how many are waiting (the caller
    /// spawns jobs for the rest only, so stale jobs do not pile up behind them).
    fn publish(gate: &std::sync::Arc<Gate>) -> usize {
        use std::sync::atomic::Ordering;
        use std::sync::TryLockError;
        // `try_lock` on both sides: a process forked while a helper held the lock would
        // inherit it locked. Unpublished, a product spawns jobs for every helper.
        match LATEST.try_lock() {
            Ok(mut latest) => *latest = Some(gate.clone()),
            Err(TryLockError::Poisoned(p)) => *p.into_inner() = Some(gate.clone()),
            Err(TryLockError::WouldBlock) => return 0,
        }
        // SeqCst here and in `wait_for_next`'s exit: either this load sees a helper's
        // leaving, or that helper's last look sees this publication.
        PUBLISHED.fetch_add(1, Ordering::SeqCst);
        let (pid, count) = Self::split(WAITING.load(Ordering::SeqCst));
        if pid == std::process::id() {
            count as usize
        } else {
            0
        }
    }

    /// The latest gate, unless the lock is taken (see `publish`).
    fn latest() -> Option<Option<std::sync::Arc<Gate>>> {
        use std::sync::TryLockError;
        match LATEST.try_lock() {
            Ok(latest) => Some(latest.clone()),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner().clone()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn split(waiting: u64) -> (u32, u32) {
        ((waiting >> 32) as u32, waiting as u32)
    }

    /// Adds `delta` to this process's count of waiting helpers.
    fn count_waiting(delta: i32) {
        use std::sync::atomic::Ordering;
        let me = std::process::id();
        let _ = WAITING.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            let (pid, count) = Self::split(w);
            let count = if pid == me { count } else { 0 };
            Some(u64::from(me) << 32 | u64::from(count.saturating_add_signed(delta)))
        });
    }

    /// Helps every product published within [`LINGER`] of the last one helped.
    fn wait_for_next() {
        use std::sync::atomic::Ordering;
        Self::count_waiting(1);
        let mut seen = PUBLISHED.load(Ordering::Acquire);
        let mut since = std::time::Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            let now = PUBLISHED.load(Ordering::Acquire);
            if let Some(gate) = (now != seen).then(Self::latest).flatten() {
                seen = now;
                if let Some(gate) = gate {
                    gate.help();
                }
                since = std::time::Instant::now();
            } else if since.elapsed() >= LINGER {
                break;
            } else {
                std::thread::yield_now();
            }
        }
        Self::count_waiting(-1);
        // A product published just before this helper stopped counting as waiting may
        // have spawned no job for it: help it now.
        if PUBLISHED.load(Ordering::SeqCst) != seen {
            if let Some(Some(gate)) = Self::latest() {
                gate.help();
            }
        }
    }
}

/// Closes the gate when the caller leaves `run`, also when it unwinds.
struct CloseOnDrop<'g>(&'g Gate);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_and_wait();
    }
}

/// The fast kernel (same contract as [`matmul_ref`]), in rayon's current pool.
pub fn matmul(w: &PackedWeight<'_>, x: &[f32], batch: usize, out: &mut [f32]) -> Result<()> {
    matmul_on(&Rayon, w, x, batch, out)
}

/// [`matmul`] with its row tasks run by `tasks`.
pub fn matmul_on(
    tasks: &dyn RowTasks,
    w: &PackedWeight<'_>,
    x: &[f32],
    batch: usize,
    out: &mut [f32],
) -> Result<()> {
    w.check(x, batch, out)?;
    let l = w.layout;
    let nb = l.cols.div_ceil(BLOCK);
    let ng = l.n_groups();
    let padded = nb * BLOCK;
    // The table kernel reads only its own arrangement of `x` (whole chunks: no padding)
    // and needs no input sums (its tables hold the zero points).
    let table = table_kernel_applies(&l, batch);
    let (mut xp, mut xsum) = (Vec::new(), Vec::new());
    if !table {
        // Inputs padded to whole blocks (codes past in_features are 0; these zeros make
        // their products 0 too), and per-group input sums.
        xp = vec![0f32; batch * padded];
        xsum = vec![0f32; batch * ng];
        for b in 0..batch {
            let src = &x[b * l.cols..(b + 1) * l.cols];
            xp[b * padded..b * padded + l.cols].copy_from_slice(src);
            for (g, chunk) in src.chunks(l.group_size).enumerate() {
                xsum[b * ng + g] = chunk.iter().sum();
            }
        }
    }
    let arranged = if table {
        Some(table_inputs(x))
    } else {
        arranged_inputs(l.bits, &xp)
    };
    let job = Job {
        w,
        xp: &xp,
        arranged: arranged.as_deref(),
        table,
        xsum: &xsum,
        batch,
        padded,
    };
    // Rows-major result [rows, batch] in parallel, transposed at the end (batch 1: none).
    let mut by_row = if batch == 1 {
        Vec::new()
    } else {
        vec![0f32; l.rows * batch]
    };
    let target: &mut [f32] = if batch == 1 { out } else { &mut by_row };
    split_rows(tasks, &l, padded, batch, target, |first, dst| {
        job.rows(first, dst)
    });
    if batch > 1 {
        for r in 0..l.rows {
            for b in 0..batch {
                out[b * l.rows + r] = by_row[r * batch + b];
            }
        }
    }
    Ok(())
}

/// Runs `rows(first, dst)` over `target` (`[rows, batch]`, row `first` onwards in each
/// `dst`), in parallel tasks when the product is worth a pool (see [`worth_parallel`]).
pub(super) fn split_rows(
    tasks: &dyn RowTasks,
    l: &Layout,
    padded: usize,
    batch: usize,
    target: &mut [f32],
    rows: impl Fn(usize, &mut [f32]) + Sync,
) {
    if worth_parallel(l, batch) {
        let starts = task_starts(
            l.rows,
            tasks.threads().max(1),
            TASK_MIN_WORK / (padded * batch),
        );
        // Each task locks its own chunk (never contended): disjoint `&mut` slices for
        // whichever thread runs it.
        let mut chunks = Vec::with_capacity(starts.len());
        let mut rest = target;
        for w in starts.windows(2) {
            let (chunk, tail) = rest.split_at_mut((w[1] - w[0]) * batch);
            chunks.push(std::sync::Mutex::new(chunk));
            rest = tail;
        }
        tasks.run(chunks.len(), &|t| {
            let mut dst = chunks[t].lock().unwrap_or_else(|p| p.into_inner());
            rows(starts[t], &mut dst)
        });
    } else {
        for (t, dst) in target.chunks_mut(ROWS_PER_TASK * batch).enumerate() {
            rows(t * ROWS_PER_TASK, dst);
        }
    }
}

/// Row boundaries of a product's tasks (first 0, last `rows`): four tasks per thread (a
/// late helper still gets its share), each of at least `min_rows` (each task widens its
/// rows' parameters and allocates its accumulators) and [`ROWS_PER_TASK`].
///
/// Not smaller: tasks of 16 rows of 4096 inputs interleaved the two threads' memory
/// streams every 32 KiB, and int4 with int8 activations took 0.36 ms on 2 cores for
/// 4096x4096 instead of 0.24. Nor shrinking towards the end (guided, each task half of
/// what is left per thread, down to 1/16 per thread): 4096x4096 int4 with f32
/// activations, 2 threads (`examples/matmul_threads`, builds alternated), 0.33-0.40 ms
/// became 0.39-0.46.
fn task_starts(rows: usize, threads: usize, min_rows: usize) -> Vec<usize> {
    let per = rows.div_ceil(4 * threads).max(min_rows).max(ROWS_PER_TASK);
    let mut starts: Vec<usize> = (0..rows).step_by(per).collect();
    starts.push(rows);
    starts
}

struct Job<'a, 'w> {
    w: &'a PackedWeight<'w>,
    xp: &'a [f32],
    /// `xp` rearranged for the int4 or int3 AVX2 kernel, when one runs (see
    /// [`arranged_inputs`]).
    arranged: Option<&'a [f32]>,
    /// `arranged` is [`table_inputs`], for the int4 table kernel (`xp` and `xsum` are
    /// then empty: it reads neither).
    table: bool,
    xsum: &'a [f32],
    batch: usize,
    padded: usize,
}

impl Job<'_, '_> {
    /// Row `r`'s packed bytes, with its scales and zeros widened into `sf` and `zf` (the
    /// AVX2 kernels' per-row setup).
    ///
    /// # Safety
    /// The CPU has F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "f16c")]
    unsafe fn row_params(&self, r: usize, sf: &mut [f32], zf: &mut [f32]) -> &[u8] {
        let (ng, rb) = (self.w.layout.n_groups(), self.w.layout.row_bytes());
        widen_f16(&self.w.scales[r * ng..(r + 1) * ng], sf);
        widen_f16(&self.w.zeros[r * ng..(r + 1) * ng], zf);
        &self.w.packed[r * rb..(r + 1) * rb]
    }

    /// `Σ_g s_g · z_g · Σx_g` of batch row `b`: what the zero points take off the row's
    /// `Σ_g s_g · Σqx_g`.
    fn zero_terms(&self, b: usize, sf: &[f32], zf: &[f32]) -> f32 {
        let ng = sf.len();
        let xs = &self.xsum[b * ng..(b + 1) * ng];
        sf.iter().zip(zf).zip(xs).map(|((s, z), x)| s * z * x).sum()
    }

    /// Rows `first..` into `dst` (`[rows, batch]`).
    fn rows(&self, first: usize, dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            if let (Some(xa), true) = (self.arranged, std::arch::is_x86_feature_detected!("f16c")) {
                if self.table {
                    // SAFETY: `table_kernel_applies` checked AVX-512F/BW/VBMI and the
                    // shapes.
                    return unsafe {
                        if self.w.layout.bits == Bits::B4 {
                            avx512::rows_table::<4>(self, xa, first, dst)
                        } else {
                            avx512::rows_table::<3>(self, xa, first, dst)
                        }
                    };
                }
                match self.w.layout.bits {
                    // SAFETY: the CPU has AVX-512F besides AVX2, FMA and F16C.
                    Bits::B4
                        if self.batch == 1 && std::arch::is_x86_feature_detected!("avx512f") =>
                    {
                        return unsafe { avx512::rows::<4>(self, xa, first, dst) };
                    }
                    // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
                    Bits::B4 => return unsafe { int4_avx2::rows(self, xa, first, dst) },
                    // SAFETY: the CPU has AVX-512F besides AVX2, FMA and F16C.
                    Bits::B3
                        if self.batch == 1 && std::arch::is_x86_feature_detected!("avx512f") =>
                    {
                        return unsafe { avx512::rows::<3>(self, xa, first, dst) };
                    }
                    // SAFETY: as above.
                    Bits::B3 => return unsafe { int3_avx2::rows(self, xa, first, dst) },
                    _ => {}
                }
            }
            // SAFETY: as above.
            return unsafe { self.rows_avx2(first, dst) };
        }
        self.rows_with::<false>(first, dst)
    }

    /// The same code compiled for AVX2 + FMA: the 8-lane loops below become single
    /// 256-bit instructions and `mul_add` one `vfmadd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows_avx2(&self, first: usize, dst: &mut [f32]) {
        self.rows_with::<true>(first, dst)
    }

    #[inline(always)]
    fn rows_with<const FMA: bool>(&self, first: usize, dst: &mut [f32]) {
        let l = self.w.layout;
        let (ng, rb, bb) = (l.n_groups(), l.row_bytes(), l.bits.block_bytes());
        let batch = self.batch;
        let blocks_per_group = l.group_size.div_ceil(BLOCK);
        let mut codes = [0u8; BLOCK];
        let mut q = [0f32; BLOCK];
        // One 8-lane accumulator per batch row, for the group in progress.
        let mut acc = vec![[0f32; 8]; batch];
        for (i, y) in dst.chunks_mut(batch).enumerate() {
            let r = first + i;
            let row = &self.w.packed[r * rb..(r + 1) * rb];
            let (scales, zeros) = (
                &self.w.scales[r * ng..(r + 1) * ng],
                &self.w.zeros[r * ng..(r + 1) * ng],
            );
            y.iter_mut().for_each(|v| *v = 0.0);
            for (k, src) in row.chunks_exact(bb).enumerate() {
                unpack(l.bits, src, &mut codes);
                for (f, &c) in q.iter_mut().zip(&codes) {
                    *f = f32::from(c);
                }
                for (b, a) in acc.iter_mut().enumerate() {
                    let x = &self.xp[b * self.padded + k * BLOCK..][..BLOCK];
                    dot32::<FMA>(a, &q, x);
                }
                let g = k / blocks_per_group;
                let group_done = (k + 1) % blocks_per_group == 0 || k + 1 == row.len() / bb;
                if group_done {
                    let (s, z) = (scales[g].to_f32(), zeros[g].to_f32());
                    for (b, (a, yb)) in acc.iter_mut().zip(y.iter_mut()).enumerate() {
                        let qx: f32 = a.iter().sum();
                        *yb += s * (qx - z * self.xsum[b * ng + g]);
                        *a = [0.0; 8];
                    }
                }
            }
        }
    }
}

/// `Σ_g s_g · z_g · Σx_g` of one row (the zero points' term), 16 groups at a time: as
/// a scalar loop it cost as much as the row's products in the AVX-512 VNNI kernel.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn zero_terms_avx512(s: &[f32], z: &[f32], xsum: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = s.len().min(z.len()).min(xsum.len());
    let mut acc = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let m: __mmask16 = if n - i >= 16 {
            0xFFFF
        } else {
            (1u16 << (n - i)) - 1
        };
        let sz = _mm512_mul_ps(
            _mm512_maskz_loadu_ps(m, s.as_ptr().add(i)),
            _mm512_maskz_loadu_ps(m, z.as_ptr().add(i)),
        );
        acc = _mm512_fmadd_ps(sz, _mm512_maskz_loadu_ps(m, xsum.as_ptr().add(i)), acc);
        i += 16;
    }
    _mm512_reduce_add_ps(acc)
}

/// `dst[i] = src[i]` widened with F16C, 8 at a time (half's slice conversion cost 13% of
/// a 1536x576 product: its per-call dispatch and remainder handling, for the 5 groups of
/// a row).
///
/// # Safety
/// The CPU has F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
pub(super) unsafe fn widen_f16(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        i += 8;
    }
    // The remainder one at a time: a padded 8-wide conversion through stack buffers cost
    // ~9 ns per call, a fifth of a 576-input row's product.
    for j in i..n {
        let h = _mm_cvtsi32_si128(i32::from(src[j].to_bits()));
        dst[j] = _mm_cvtss_f32(_mm_cvtph_ps(h));
    }
}

/// Whether [`avx512::rows_table`] runs: int4 or int3 at batch 1 on a CPU with AVX-512F,
/// BW and VBMI (int3's byte gather; every AVX-512 CPU since Ice Lake and Zen 4 has them)
/// and F16C, rows and groups of whole 128-input chunks (one table per group covers whole
/// chunks).
pub(super) fn table_kernel_applies(l: &Layout, batch: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (l.bits == Bits::B4 || l.bits == Bits::B3)
            && batch == 1
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && l.cols.is_multiple_of(TABLE_CHUNK)
            && l.group_size.is_multiple_of(TABLE_CHUNK)
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (l, batch);
        false
    }
}

/// The 48 bytes of an int3 chunk of 128 codes at `at` in the low bytes of a vector.
/// `full`: 16 more bytes follow in the buffer (all but the last row of a weight), so one
/// plain 64-byte load; otherwise a masked one (on Zen 4 the masked load made the f32
/// table kernel's int3 rows 7% slower: 4096 x 4096, one thread, 0.649 → 0.601 ms).
///
/// # Safety
/// The CPU has AVX-512F; `at..at + 48` (`at + 64` when `full`) is readable.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn int3_chunk_bytes(at: *const u8, full: bool) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    if full {
        _mm512_loadu_si512(at as *const _)
    } else {
        _mm512_maskz_loadu_epi32(0x0FFF, at as *const _)
    }
}

/// Inputs per chunk of codes in [`avx512::rows_table`] (64 bytes of int4, 48 of int3).
const TABLE_CHUNK: usize = 128;

/// The inputs (whole chunks of 128) in the order [`avx512::rows_table`] reads them: per
/// chunk, the 16 inputs of code `k` of each 32-bit lane (lane `j` holds inputs
/// `8j..8j + 8`: four bytes of int4 nibbles, or one int3 triple), for `k` = 0..8:
/// `out[128c + 16k + j] = x[128c + 8j + k]`.
fn table_inputs(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x
        .chunks_exact(TABLE_CHUNK)
        .zip(out.chunks_exact_mut(TABLE_CHUNK))
    {
        for k in 0..8 {
            for j in 0..16 {
                dst[16 * k + j] = src[8 * j + k];
            }
        }
    }
    out
}

/// Inputs rearranged per block for the AVX2 kernels, so that codes can be used where
/// they sit in the packed bytes instead of being shuffled into order (all scalings are
/// powers of two, hence exact):
///
/// * int4, 32 floats per block: the 16 even inputs, then the 16 odd ones divided by 16
///   (a byte's low nibble is `q_even`, its high nibble masked in place is `16 · q_odd`);
/// * int3, 32 floats per block: `x[8g + m]` at `4m + g` (`g` = 0..4 the block's
///   triples, each in a 32-bit lane of every vector, shifted right by `3m`).
fn arranged_inputs(bits: Bits, xp: &[f32]) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        match bits {
            Bits::B4 => {
                let mut out = vec![0f32; xp.len()];
                for (src, dst) in xp.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
                    for j in 0..BLOCK / 2 {
                        dst[j] = src[2 * j];
                        dst[BLOCK / 2 + j] = src[2 * j + 1] / 16.0;
                    }
                }
                return Some(out);
            }
            Bits::B3 => {
                let mut out = vec![0f32; xp.len()];
                for (src, dst) in xp.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK)) {
                    for m in 0..8 {
                        for g in 0..4 {
                            dst[4 * m + g] = src[8 * g + m];
                        }
                    }
                }
                return Some(out);
            }
            _ => {}
        }
    }
    let _ = (bits, xp);
    None
}

/// int3 in AVX2 + FMA intrinsics. A block's four triples sit in 32-bit lanes `g` and
/// `4 + g` of one vector; lane `4h + g` of vector `v` is code `8g + 2v + h`, a shift by
/// `3(2v + h)` and a mask, so a block costs four conversions and four FMAs against the
/// arranged inputs (see [`arranged_inputs`]), as int4 does.
#[cfg(target_arch = "x86_64")]
mod int3_avx2 {
    use std::arch::x86_64::*;

    use super::int4_avx2::{fma4, hsum, sum4};
    use super::{Job, BLOCK};

    const BLOCK_BYTES: usize = 12;

    /// The block's 12 bytes at `src` as four 32-bit lanes, one triple each (the top byte
    /// zero). Two loads, not one of 16 bytes: the last block of a weight ends its buffer.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn triples(src: *const u8) -> __m128i {
        let lo = std::ptr::read_unaligned(src as *const u64);
        let hi = std::ptr::read_unaligned(src.add(8) as *const u32);
        let bytes = _mm_set_epi64x(i64::from(hi), lo as i64);
        _mm_shuffle_epi8(
            bytes,
            _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1),
        )
    }

    /// The 32 codes of a block as four float vectors in arranged order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn codes(src: &[u8]) -> [__m256; 4] {
        debug_assert!(src.len() >= BLOCK_BYTES);
        let t = _mm256_broadcastsi128_si256(triples(src.as_ptr()));
        [shifted(t, 0), shifted(t, 6), shifted(t, 12), shifted(t, 18)]
    }

    /// Lanes 0-3 of `t` shifted right by `lo`, lanes 4-7 by `lo + 3`, masked to 3 bits,
    /// as floats (a function, not a closure: closures do not inherit `target_feature`).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn shifted(t: __m256i, lo: i32) -> __m256 {
        let shifts = _mm256_setr_epi32(lo, lo, lo, lo, lo + 3, lo + 3, lo + 3, lo + 3);
        _mm256_cvtepi32_ps(_mm256_and_si256(
            _mm256_srlv_epi32(t, shifts),
            _mm256_set1_epi32(7),
        ))
    }

    /// Same contract as `Job::rows_with`, for int3 weights.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(job: &Job<'_, '_>, xa: &[f32], first: usize, dst: &mut [f32]) {
        let l = job.w.layout;
        let ng = l.n_groups();
        let batch = job.batch;
        let blocks_per_group = l.group_size.div_ceil(BLOCK);
        let zero = _mm256_setzero_ps();
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        for (i, y) in dst.chunks_mut(batch).enumerate() {
            let row = job.row_params(first + i, &mut sf, &mut zf);
            let n_blocks = row.len() / BLOCK_BYTES;
            for (b, yb) in y.iter_mut().enumerate() {
                let xb = &xa[b * job.padded..(b + 1) * job.padded];
                let mut yv = zero;
                for (g, &s) in sf.iter().enumerate() {
                    // Two blocks per step into separate accumulators (one FMA chain per
                    // accumulator is latency-bound otherwise), as in the int4 kernel.
                    let (mut a, mut c) = ([zero; 4], [zero; 4]);
                    let mut k = g * blocks_per_group;
                    let end = ((g + 1) * blocks_per_group).min(n_blocks);
                    while k + 2 <= end {
                        // As in the int4 kernel: keep the DRAM stream going.
                        _mm_prefetch::<_MM_HINT_T0>(
                            row.as_ptr().add(k * BLOCK_BYTES).wrapping_add(1024) as *const i8,
                        );
                        let p = xb.as_ptr().add(k * BLOCK);
                        fma4(&codes(&row[k * BLOCK_BYTES..]), p, &mut a);
                        fma4(&codes(&row[(k + 1) * BLOCK_BYTES..]), p.add(BLOCK), &mut c);
                        k += 2;
                    }
                    if k < end {
                        fma4(
                            &codes(&row[k * BLOCK_BYTES..]),
                            xb.as_ptr().add(k * BLOCK),
                            &mut a,
                        );
                    }
                    yv = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_add_ps(sum4(&a), sum4(&c)), yv);
                }
                *yb = hsum(yv) - job.zero_terms(b, &sf, &zf);
            }
        }
    }
}

/// The int4 kernel in AVX2 + FMA intrinsics: per block, the 16 packed bytes are masked
/// into low nibbles (`q_even`) and high nibbles (`16 · q_odd`), widened to floats 8 at a
/// time and multiplied with the arranged inputs (see [`arranged_inputs`]). The generic
/// path, unpacking codes one by one, ran at about 3 GMAC/s on this project's 2-core VM
/// (slower than fp32 `F.linear`).
#[cfg(target_arch = "x86_64")]
mod int4_avx2 {
    use std::arch::x86_64::*;

    use super::{Job, BLOCK};

    /// The 32 codes of a block as four float vectors in arranged order.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn codes(src: &[u8]) -> [__m256; 4] {
        debug_assert!(src.len() >= 16);
        // Bytes widened straight from memory (one load+widen each, no byte shifts), then
        // masked in 32-bit lanes: 10 vector ops per block instead of 12.
        let b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.as_ptr() as *const __m128i));
        let b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.as_ptr().add(8) as *const __m128i));
        let lo = _mm256_set1_epi32(0x0F);
        let hi = _mm256_set1_epi32(0xF0);
        // No closure here: closures do not inherit `target_feature`, and one made each
        // intrinsic an out-of-line call (5x slower).
        [
            _mm256_cvtepi32_ps(_mm256_and_si256(b0, lo)),
            _mm256_cvtepi32_ps(_mm256_and_si256(b1, lo)),
            _mm256_cvtepi32_ps(_mm256_and_si256(b0, hi)),
            _mm256_cvtepi32_ps(_mm256_and_si256(b1, hi)),
        ]
    }

    /// `a[j] += q[j] · p[8j..8j + 8]`: one block's 32 products into four accumulators.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma4(q: &[__m256; 4], p: *const f32, a: &mut [__m256; 4]) {
        for j in 0..4 {
            a[j] = _mm256_fmadd_ps(q[j], _mm256_loadu_ps(p.add(8 * j)), a[j]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum4(a: &[__m256; 4]) -> __m256 {
        _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// Same contract as `Job::rows_with`, for int4 weights. Four independent
    /// accumulators per batch row (with one, each block was a chain of four dependent
    /// FMAs through memory, ~4x slower); a group adds `s · Σqx` to a vector sum, and the
    /// `s · z · Σx` terms and the one horizontal sum wait for the end of the row (per
    /// group they cost as much as the blocks).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(job: &Job<'_, '_>, xa: &[f32], first: usize, dst: &mut [f32]) {
        let l = job.w.layout;
        let ng = l.n_groups();
        let batch = job.batch;
        let blocks_per_group = l.group_size.div_ceil(BLOCK);
        let zero = _mm256_setzero_ps();
        let mut acc = vec![[zero; 4]; batch];
        let mut yv = vec![zero; batch];
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        for (i, y) in dst.chunks_mut(batch).enumerate() {
            let row = job.row_params(first + i, &mut sf, &mut zf);
            yv.iter_mut().for_each(|v| *v = zero);
            let n_blocks = row.len() / 16;
            let mut k = 0;
            for g in 0..ng {
                let end = ((g + 1) * blocks_per_group).min(n_blocks);
                if batch == 1 {
                    // Registers only: the common decode case.
                    let (mut a, mut c) = ([zero; 4], [zero; 4]);
                    let x0 = xa.as_ptr();
                    // Two blocks per step into separate accumulators: one FMA chain
                    // per accumulator is latency-bound otherwise.
                    while k + 2 <= end {
                        // Rows follow each other in memory: fetching 1 KiB ahead keeps a
                        // stream from DRAM going (11008x4096 ran at 5 GB/s without it).
                        _mm_prefetch::<_MM_HINT_T0>(
                            row.as_ptr().add(k * 16).wrapping_add(1024) as *const i8
                        );
                        let p = x0.add(k * BLOCK);
                        fma4(&codes(&row[k * 16..k * 16 + 16]), p, &mut a);
                        fma4(&codes(&row[k * 16 + 16..k * 16 + 32]), p.add(BLOCK), &mut c);
                        k += 2;
                    }
                    while k < end {
                        fma4(&codes(&row[k * 16..k * 16 + 16]), x0.add(k * BLOCK), &mut a);
                        k += 1;
                    }
                    for j in 0..4 {
                        a[j] = _mm256_add_ps(a[j], c[j]);
                    }
                    acc[0] = a;
                } else {
                    while k < end {
                        let q = codes(&row[k * 16..k * 16 + 16]);
                        for (b, a) in acc.iter_mut().enumerate() {
                            fma4(&q, xa[b * job.padded + k * BLOCK..][..BLOCK].as_ptr(), a);
                        }
                        k += 1;
                    }
                }
                let s = _mm256_set1_ps(sf[g]);
                for (a, v) in acc.iter_mut().zip(yv.iter_mut()) {
                    *v = _mm256_fmadd_ps(s, sum4(a), *v);
                    *a = [zero; 4];
                }
            }
            for (b, (v, yb)) in yv.iter().zip(y.iter_mut()).enumerate() {
                *yb = hsum(*v) - job.zero_terms(b, &sf, &zf);
            }
        }
    }
}

/// The int4 and int3 kernels for batch 1 in AVX-512, one loop for both: a block's codes
/// come as two 16-lane float vectors in the AVX2 kernels' arranged order, so the inputs
/// are the same (see [`arranged_inputs`]).
///
/// * int4: the block's 16 bytes widen to one 16-lane vector, whose low nibbles (codes
///   `2j`) and high nibbles (`16 · q_{2j+1}`) are masked in place: one widen, two masks,
///   two conversions and two FMAs per block (half the AVX2 kernel's instructions).
/// * int3: the block's four triples sit in every 128-bit lane; lane `4m + g` of the two
///   vectors shifts triple `g` by `3m` and `3(4 + m)`.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Job, BLOCK};

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn int4_codes(src: *const u8) -> (__m512, __m512) {
        let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(src as *const __m128i));
        (
            _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(0x0F))),
            _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(0xF0))),
        )
    }

    /// Per-lane shifts of the two int3 code vectors: `3m` and `3(4 + m)` in lanes
    /// `4m..4m + 4`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn int3_shifts() -> [__m512i; 2] {
        let shifts = |base: i32| {
            _mm512_setr_epi32(
                base,
                base,
                base,
                base,
                base + 3,
                base + 3,
                base + 3,
                base + 3,
                base + 6,
                base + 6,
                base + 6,
                base + 6,
                base + 9,
                base + 9,
                base + 9,
                base + 9,
            )
        };
        [shifts(0), shifts(12)]
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn int3_codes(src: *const u8, shifts: &[__m512i; 2]) -> (__m512, __m512) {
        let t = _mm512_broadcast_i32x4(super::int3_avx2::triples(src));
        let seven = _mm512_set1_epi32(7);
        (
            _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(t, shifts[0]), seven)),
            _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(t, shifts[1]), seven)),
        )
    }

    /// A block's codes for `BITS` (a function, not a closure, for the reason above).
    #[inline]
    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn codes<const BITS: u32>(src: *const u8, shifts: &[__m512i; 2]) -> (__m512, __m512) {
        if BITS == 4 {
            int4_codes(src)
        } else {
            int3_codes(src, shifts)
        }
    }

    /// `acc + table[codes & 15] · x[0..16]` (a function, not a closure: closures do not
    /// inherit `target_feature`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn lookup_fma(codes: __m512i, table: __m512, x: *const f32, acc: __m512) -> __m512 {
        _mm512_fmadd_ps(_mm512_permutexvar_ps(codes, table), _mm512_loadu_ps(x), acc)
    }

    /// The 16 lanes of a chunk of 128 codes at `at`, eight codes per lane in order: int4's
    /// 64 bytes as they are; int3's 48 bytes gathered one triple per lane (`vpermb`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn chunk_lanes<const BITS: u32>(at: *const u8, gather: __m512i, full: bool) -> __m512i {
        if BITS == 4 {
            _mm512_loadu_si512(at as *const _)
        } else {
            _mm512_permutexvar_epi8(gather, super::int3_chunk_bytes(at, full))
        }
    }

    /// `Job::rows_with`'s contract for int4 (`BITS` = 4) or int3 (3) at batch 1 when
    /// `super::table_kernel_applies`: per weight group, a table of the dequantized values
    /// `(q - z) · s` in one AVX-512 register (int3's eight entries twice); each chunk of
    /// 128 codes is 16 lanes of 8 codes, and `vpermps`, which reads only the low 4 bits
    /// of each index lane, looks up code `k` of every lane after a shift by `BITS · k`
    /// (int3's fourth index bit belongs to the next code: the doubled table ignores it).
    /// A chunk costs one load (and int3's gather), seven shifts, eight lookups and eight
    /// FMAs, against four widenings, eight masks, eight conversions and eight FMAs in
    /// `rows::<4>`, and the table applies scale and zero point, so no per-group scaling
    /// or zero term follows. 4096 x 4096 int4, one thread (`examples/matmul_threads`,
    /// builds alternated): 1.03-1.07 → 0.82-0.85 ms. int3 (with 100 copies of the weight
    /// streamed from memory, `COPIES=100`, one thread, best of the bit-plane kernel
    /// against this one): 1.37 → 0.79-0.86 ms; in cache as fast as int4. `xl` is
    /// `super::table_inputs`.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VBMI, AVX2, FMA and F16C; `super::table_kernel_applies`
    /// holds.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx2,fma,f16c")]
    pub(super) unsafe fn rows_table<const BITS: u32>(
        job: &Job<'_, '_>,
        xl: &[f32],
        first: usize,
        dst: &mut [f32],
    ) {
        let l = job.w.layout;
        let ng = l.n_groups();
        let chunks_per_group = l.group_size / super::TABLE_CHUNK;
        let chunk_bytes = super::TABLE_CHUNK * BITS as usize / 8;
        // The codes each table entry stands for (int3: entries 8-15 repeat 0-7).
        let iota = if BITS == 4 {
            _mm512_setr_ps(
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0,
                15.0,
            )
        } else {
            _mm512_setr_ps(
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
            )
        };
        let mut gather = [0u8; 64];
        for (i, g) in gather.iter_mut().enumerate() {
            *g = (3 * (i / 4) + (i % 4).min(2)) as u8;
        }
        let gather = _mm512_loadu_si512(gather.as_ptr() as *const _);
        let shift = |k: u32| _mm512_set1_epi32((BITS * k) as i32);
        let shifts = [
            shift(1),
            shift(2),
            shift(3),
            shift(4),
            shift(5),
            shift(6),
            shift(7),
        ];
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        let x0 = xl.as_ptr();
        for (i, y) in dst.iter_mut().enumerate() {
            let row = job.row_params(first + i, &mut sf, &mut zf);
            debug_assert_eq!(row.len(), ng * chunks_per_group * chunk_bytes);
            let w = row.as_ptr();
            let full = first + i + 1 < l.rows;
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut c = 0;
            for (&s, &z) in sf.iter().zip(&zf) {
                let table =
                    _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(z)), _mm512_set1_ps(s));
                for _ in 0..chunks_per_group {
                    let at = w.add(c * chunk_bytes);
                    // As in the other kernels: keep the memory stream going.
                    _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(1024) as *const i8);
                    let v = chunk_lanes::<BITS>(at, gather, full);
                    let p = x0.add(c * super::TABLE_CHUNK);
                    acc[0] = lookup_fma(v, table, p, acc[0]);
                    acc[1] = lookup_fma(_mm512_srlv_epi32(v, shifts[0]), table, p.add(16), acc[1]);
                    acc[2] = lookup_fma(_mm512_srlv_epi32(v, shifts[1]), table, p.add(32), acc[2]);
                    acc[3] = lookup_fma(_mm512_srlv_epi32(v, shifts[2]), table, p.add(48), acc[3]);
                    acc[0] = lookup_fma(_mm512_srlv_epi32(v, shifts[3]), table, p.add(64), acc[0]);
                    acc[1] = lookup_fma(_mm512_srlv_epi32(v, shifts[4]), table, p.add(80), acc[1]);
                    acc[2] = lookup_fma(_mm512_srlv_epi32(v, shifts[5]), table, p.add(96), acc[2]);
                    acc[3] = lookup_fma(_mm512_srlv_epi32(v, shifts[6]), table, p.add(112), acc[3]);
                    c += 1;
                }
            }
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            *y = _mm512_reduce_add_ps(sum);
        }
    }

    /// `Job::rows_with`'s contract for int4 (`BITS` = 4) or int3 (3) weights and batch 1.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn rows<const BITS: u32>(
        job: &Job<'_, '_>,
        xa: &[f32],
        first: usize,
        dst: &mut [f32],
    ) {
        let block_bytes = BITS as usize * BLOCK / 8;
        let l = job.w.layout;
        let ng = l.n_groups();
        let blocks_per_group = l.group_size.div_ceil(BLOCK);
        let zero = _mm512_setzero_ps();
        let shifts = int3_shifts();
        let (mut sf, mut zf) = (vec![0f32; ng], vec![0f32; ng]);
        let x0 = xa.as_ptr();
        for (i, y) in dst.iter_mut().enumerate() {
            let row = job.row_params(first + i, &mut sf, &mut zf);
            let n_blocks = row.len() / block_bytes;
            let w = row.as_ptr();
            let mut yv = zero;
            let mut k = 0;
            for (g, &s) in sf.iter().enumerate() {
                let end = ((g + 1) * blocks_per_group).min(n_blocks);
                // Two blocks per step into separate accumulators (FMA latency).
                let [mut a0, mut a1, mut c0, mut c1] = [zero; 4];
                while k + 2 <= end {
                    // As in the AVX2 kernels: keep the DRAM stream going.
                    _mm_prefetch::<_MM_HINT_T0>(
                        w.add(k * block_bytes).wrapping_add(1024) as *const i8
                    );
                    let (q0, q1) = codes::<BITS>(w.add(k * block_bytes), &shifts);
                    let (u0, u1) = codes::<BITS>(w.add((k + 1) * block_bytes), &shifts);
                    let p = x0.add(k * BLOCK);
                    a0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(p), a0);
                    a1 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(p.add(16)), a1);
                    c0 = _mm512_fmadd_ps(u0, _mm512_loadu_ps(p.add(32)), c0);
                    c1 = _mm512_fmadd_ps(u1, _mm512_loadu_ps(p.add(48)), c1);
                    k += 2;
                }
                if k < end {
                    let (q0, q1) = codes::<BITS>(w.add(k * block_bytes), &shifts);
                    let p = x0.add(k * BLOCK);
                    a0 = _mm512_fmadd_ps(q0, _mm512_loadu_ps(p), a0);
                    a1 = _mm512_fmadd_ps(q1, _mm512_loadu_ps(p.add(16)), a1);
                    k += 1;
                }
                let sum = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(c0, c1));
                yv = _mm512_fmadd_ps(_mm512_set1_ps(s), sum, yv);
            }
            *y = _mm512_reduce_add_ps(yv) - super::zero_terms_avx512(&sf, &zf, &job.xsum[..ng]);
        }
    }
}

/// `acc[l] += Σ_c q[8c + l] · x[8c + l]`: eight independent lanes, so no reassociation is
/// needed to vectorise it.
#[inline(always)]
fn dot32<const FMA: bool>(acc: &mut [f32; 8], q: &[f32; BLOCK], x: &[f32]) {
    for c in 0..BLOCK / 8 {
        for l in 0..8 {
            let (a, b) = (q[8 * c + l], x[8 * c + l]);
            acc[l] = if FMA {
                a.mul_add(b, acc[l])
            } else {
                acc[l] + a * b
            };
        }
    }
}

#[inline(always)]
fn unpack(bits: Bits, src: &[u8], q: &mut [u8; BLOCK]) {
    match bits {
        Bits::B2 => formats::int2::unpack_block(src, q),
        Bits::B3 => formats::int3::unpack_block(src, q),
        Bits::B4 => formats::int4::unpack_block(src, q),
        Bits::B8 => formats::int8::unpack_block(src, q),
    }
}

/// What the fast kernels' tests share: a deterministic weight and input, and the check
/// against [`matmul_ref`] within [`REL_TOLERANCE`] of `Σ|w·x|`.
#[cfg(test)]
pub(crate) mod support {
    use super::*;
    use crate::quant::{quantize, Method, QuantSpec, QuantizedTensor};
    use crate::test_rng::Rng;

    /// An RTN-quantized `[rows, cols]` weight and a `[batch, cols]` input, uniform in -1..1.
    pub fn weight_and_input(
        bits: Bits,
        rows: usize,
        cols: usize,
        group_size: Option<usize>,
        batch: usize,
    ) -> (QuantizedTensor, Vec<f32>) {
        let mut rng = Rng(rows as u64 * 31 + cols as u64 + 1);
        let mut uniform = || rng.below(2001) as f32 / 1000.0 - 1.0;
        let w: Vec<f32> = (0..rows * cols).map(|_| uniform()).collect();
        let x: Vec<f32> = (0..batch * cols).map(|_| uniform()).collect();
        let spec = QuantSpec {
            bits,
            group_size,
            sym: false,
            method: Method::Rtn,
        };
        (quantize("w", &w, rows, cols, &spec, None).unwrap(), x)
    }

    /// `q` as the kernels read it.
    pub fn packed(q: &QuantizedTensor) -> PackedWeight<'_> {
        PackedWeight {
            layout: q.layout,
            packed: &q.packed,
            scales: &q.scales,
            zeros: &q.zeros,
        }
    }

    /// `fast` equals [`matmul_ref`] of `q` on `x` (`[batch, cols]`) to rounding.
    pub fn assert_near_reference(q: &QuantizedTensor, x: &[f32], batch: usize, fast: &[f32]) {
        let l = q.layout;
        let (rows, cols) = (l.rows, l.cols);
        let w = packed(q);
        let mut reference = vec![0f32; batch * rows];
        matmul_ref(&w, x, batch, &mut reference).unwrap();
        let mut deq = vec![0f32; rows * cols];
        crate::quant::dequantize(&l, &q.packed, &q.scales, &q.zeros, &mut deq).unwrap();
        for b in 0..batch {
            for r in 0..rows {
                let mag: f32 = (0..cols)
                    .map(|c| (deq[r * cols + c] * x[b * cols + c]).abs())
                    .sum();
                let (f, e) = (fast[b * rows + r], reference[b * rows + r]);
                assert!(
                    (f - e).abs() <= REL_TOLERANCE * (mag + 1e-6),
                    "int{} [{rows}, {cols}] g{} batch {b} row {r}: {f} vs {e}",
                    l.bits.get(),
                    l.group_size
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize, Method, QuantSpec, QuantizedTensor};

    fn spec(bits: Bits, group_size: Option<usize>) -> QuantSpec {
        QuantSpec {
            bits,
            group_size,
            sym: false,
            method: Method::Rtn,
        }
    }

    fn weight(q: &QuantizedTensor) -> PackedWeight<'_> {
        PackedWeight {
            layout: q.layout,
            packed: &q.packed,
            scales: &q.scales,
            zeros: &q.zeros,
        }
    }

    fn check(bits: Bits, rows: usize, cols: usize, group: Option<usize>, batch: usize) {
        let (q, x) = support::weight_and_input(bits, rows, cols, group, batch);
        let mut fast = vec![0f32; batch * rows];
        matmul(&weight(&q), &x, batch, &mut fast).unwrap();
        support::assert_near_reference(&q, &x, batch, &fast);
    }

    #[test]
    fn matches_the_reference_for_every_format_and_shape() {
        for bits in [Bits::B2, Bits::B3, Bits::B4, Bits::B8] {
            check(bits, 37, 256, Some(128), 1);
            check(bits, 20, 172, Some(64), 3); // a short last group and a partial block
            check(bits, 5, 100, None, 2); // per-channel, in_features not a multiple of 32
            check(bits, 64, 96, Some(32), 17);
            // Batch 1 has kernels of its own (AVX-512 for int4): the same odd shapes.
            check(bits, 20, 172, Some(64), 1);
            check(bits, 5, 100, None, 1);
            check(bits, 64, 96, Some(32), 1);
            check(bits, 9, 4096 + 32 * 3, Some(128), 1); // long rows: the 2-block steps
        }
    }

    #[test]
    fn the_table_kernels_match_the_reference() {
        for bits in [Bits::B4, Bits::B3] {
            // Shapes they take (whole 128-input chunks per row and group) where the CPU
            // has AVX-512F/BW/VBMI; the reference check runs everywhere.
            let takes =
                |cols, group| table_kernel_applies(&Layout::new(bits, 3, cols, group).unwrap(), 1);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512vbmi")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                assert!(takes(256, Some(128)) && takes(384, None) && takes(512, Some(256)));
            }
            assert!(!takes(256, Some(64)) && !takes(4096 + 96, Some(128)));
            check(bits, 37, 256, Some(128), 1);
            check(bits, 7, 384, None, 1); // per channel: one table per row
            check(bits, 11, 512, Some(256), 1); // two chunks per group
            check(bits, 301, 1024, Some(128), 1); // in the pool
        }
    }

    #[test]
    fn the_parallel_path_matches_the_reference() {
        // Large enough to run in the pool, with rows not a multiple of a task's rows.
        let l = Layout::new(Bits::B4, 301, 1000, Some(128)).unwrap();
        assert!(
            worth_parallel(&l, 1)
                && !worth_parallel(&Layout::new(Bits::B4, 64, 64, None).unwrap(), 1)
        );
        for bits in [Bits::B3, Bits::B4, Bits::B8] {
            check(bits, 301, 1000, Some(128), 1);
            check(bits, 157, 576, Some(128), 4);
        }
    }

    #[test]
    fn tasks_cover_every_row_four_per_thread() {
        for (rows, threads, min_rows) in [
            (4096, 2, 16),
            (11008, 2, 6),
            (301, 3, 60),
            (17, 2, 16),
            (4096, 1, 0),
        ] {
            let starts = task_starts(rows, threads, min_rows);
            assert_eq!((starts[0], *starts.last().unwrap()), (0, rows));
            let sizes: Vec<usize> = starts.windows(2).map(|w| w[1] - w[0]).collect();
            let per = rows.div_ceil(4 * threads).max(min_rows).max(ROWS_PER_TASK);
            assert!(
                sizes[..sizes.len() - 1].iter().all(|&s| s == per),
                "{sizes:?}"
            );
            assert!(
                sizes[sizes.len() - 1] <= per && sizes.len() <= 4 * threads,
                "{sizes:?}"
            );
        }
        assert_eq!(
            task_starts(4096, 2, 16),
            [0, 512, 1024, 1536, 2048, 2560, 3072, 3584, 4096]
        );
    }

    #[test]
    fn caller_and_helpers_run_every_task_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for helpers in [None, Some(&pool)] {
            let tasks = CallerAndHelpers { helpers };
            assert_eq!(tasks.threads(), if helpers.is_some() { 2 } else { 1 });
            for n in [0, 1, 7, 1000] {
                let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                tasks.run(n, &|i| {
                    runs[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(
                    runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                    "n = {n}"
                );
            }
            // A product through it equals the reference.
            let (q, x) = support::weight_and_input(Bits::B4, 301, 1000, Some(128), 1);
            let mut fast = vec![0f32; 301];
            matmul_on(&tasks, &weight(&q), &x, 1, &mut fast).unwrap();
            support::assert_near_reference(&q, &x, 1, &fast);
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let tasks = CallerAndHelpers {
            helpers: Some(&pool),
        };
        // Every task panics, so whichever thread takes one (the caller, or a helper that
        // woke in time) panics; the caller reports it either way, and the pool lives on.
        for _ in 0..20 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tasks.run(64, &|_| {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                    panic!("task failed")
                })
            }));
            assert!(r.is_err());
        }
        let count = std::sync::atomic::AtomicUsize::new(0);
        tasks.run(10, &|_| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(count.into_inner(), 10);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let q = quantize("w", &[0.5f32; 64], 2, 32, &spec(Bits::B4, Some(32)), None).unwrap();
        let pw = weight(&q);
        let mut out = vec![0f32; 2];
        assert!(matches!(
            matmul(&pw, &[0.0; 31], 1, &mut out),
            Err(HanpackError::InvalidArgument(m)) if m.contains("in_features 32")
        ));
        assert!(matmul(&pw, &[0.0; 32], 1, &mut [0.0; 3]).is_err());
        let short = PackedWeight {
            packed: &q.packed[..10],
            ..pw
        };
        assert!(matmul(&short, &[0.0; 32], 1, &mut out).is_err());
    }
}
