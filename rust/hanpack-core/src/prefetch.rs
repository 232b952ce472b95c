//! A cache-line prefetch hint, for the loops whose hardware prefetching was measured not
//! to keep up (long BPE words, the vocabulary trainer's candidate scan, the int objects of
//! an id list that the Python binding reads).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};

/// A hint to load the cache line at `p`; prefetching never faults, whatever the address.
#[inline(always)]
pub fn prefetch_ptr<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    hint::<_MM_HINT_T0, T>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A hint to load the cache line at `p` into the second-level cache (more requests can be
/// in flight than for the first level).
#[inline(always)]
pub fn prefetch_ptr_l2<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    hint::<_MM_HINT_T1, T>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hint<const LEVEL: i32, T>(p: *const T) {
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe { _mm_prefetch::<LEVEL>(p as *const i8) }
}
