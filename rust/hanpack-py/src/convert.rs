//! Fast conversion of token ids to Python lists.
//!
//! Returning ids is dominated by making and later freeing one Python int per token
//! (measured: ~40 ns per id, more than encoding itself). [`id_list`] keeps one int object
//! per id value that has been returned so far, created on first use, so a list costs an
//! INCREF per token instead of an allocation. The cache is process-wide: an int is the
//! same object whichever tokenizer returns it, so a second tokenizer (or a second copy of
//! one) adds nothing to it. It holds 8 bytes per id of the largest vocabulary used and a
//! 32-byte int per distinct id, ids below [`CACHED_IDS`] only.

use std::sync::Mutex;

use hanpack_core::prefetch::prefetch_ptr_l2;
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyList, PyString};

/// Ids at or above this are returned as fresh ints (no vocabulary we know of reaches it:
/// Qwen2 has 151,646 ids, Gemma 256,000), which bounds the cache at 2 MB of slots.
const CACHED_IDS: usize = 1 << 18;

static INTS: Mutex<Vec<Option<Py<PyAny>>>> = Mutex::new(Vec::new());

/// A Python list of `ids` (ids are below `vocab_size`, as the core guarantees).
pub fn id_list<'py>(
    py: Python<'py>,
    ids: &[u32],
    vocab_size: usize,
) -> PyResult<Bound<'py, PyList>> {
    // Only ever locked with the GIL held (so it is never contended under a GIL build, and
    // never held across a fork).
    let mut ints = INTS.lock().unwrap_or_else(|p| p.into_inner());
    let needed = vocab_size.min(CACHED_IDS);
    if ints.len() < needed {
        ints.resize_with(needed, || None);
    }
    // SAFETY: the list is created with exactly `ids.len()` slots and each slot is set
    // once with a new (INCREF'd or freshly created) reference before Python sees it.
    unsafe {
        let list = ffi::PyList_New(ids.len() as ffi::Py_ssize_t);
        if list.is_null() {
            return Err(PyErr::fetch(py));
        }
        let list = Bound::from_owned_ptr(py, list).cast_into_unchecked::<PyList>();
        for (i, &id) in ids.iter().enumerate() {
            let item = match ints.get_mut(id as usize) {
                Some(Some(obj)) => obj.clone_ref(py).into_ptr(),
                Some(slot) => {
                    let obj = Bound::from_owned_ptr_or_err(
                        py,
                        ffi::PyLong_FromUnsignedLong(id as std::os::raw::c_ulong),
                    )?
                    .unbind();
                    let ptr = obj.clone_ref(py).into_ptr();
                    *slot = Some(obj);
                    ptr
                }
                None => ffi::PyLong_FromUnsignedLong(id as std::os::raw::c_ulong),
            };
            if item.is_null() {
                return Err(PyErr::fetch(py));
            }
            ffi::PyList_SET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t, item);
        }
        // Ints only, so no cycle runs through it until the caller makes one: untracked, the
        // GC's collections do not walk every retained id list (they took ~20% of a loop
        // of per-line encodes keeping its results; CPython untracks tuples and dicts of
        // atomic values the same way).
        ffi::PyObject_GC_UnTrack(list.as_ptr().cast());
        Ok(list)
    }
}

/// The value of an exact `int` of at most one digit (|v| < 2^30: every token id), read
/// from CPython's object layout; `None` for anything else (bool, int subclasses, big
/// ints, other objects), which then take `PyLong_AsLongLongAndOverflow`. The call per id
/// was a fifth of decoding a line (msgspec and orjson read ints the same way).
///
/// SAFETY: `obj` is a valid, borrowed object pointer.
#[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy, Py_GIL_DISABLED)))]
#[inline]
unsafe fn compact_int(obj: *mut ffi::PyObject) -> Option<i64> {
    if ffi::Py_TYPE(obj) != std::ptr::addr_of_mut!(ffi::PyLong_Type) {
        return None;
    }
    // Both layouts: the object header (refcount, type), one word, then the digits (u32,
    // 30 bits used).
    let word = obj.cast::<u8>().add(2 * std::mem::size_of::<usize>());
    let digit = i64::from(*word.add(std::mem::size_of::<usize>()).cast::<u32>());
    let tag = *word.cast::<isize>();
    #[cfg(Py_3_12)]
    {
        // `lv_tag`: digit count << 3 | sign (0 positive, 1 zero, 2 negative).
        (tag < 16).then(|| (1 - (tag & 3) as i64) * digit)
    }
    #[cfg(not(Py_3_12))]
    {
        // `ob_size`: the digit count, negative for negative values.
        (-1..=1).contains(&tag).then(|| tag as i64 * digit)
    }
}

#[cfg(any(Py_LIMITED_API, PyPy, GraalPy, Py_GIL_DISABLED))]
#[inline]
unsafe fn compact_int(_obj: *mut ffi::PyObject) -> Option<i64> {
    None
}

/// Token ids from a Python object: a list of ints (fast path: no iterator protocol, one
/// C call per item; measured 3x faster than PyO3's generic sequence extraction), a
/// 1-D integer numpy array, or any other sequence of ints. Appended to `out`.
pub fn append_ids(obj: &Bound<'_, PyAny>, out: &mut Vec<i64>) -> PyResult<()> {
    if let Ok(list) = obj.cast::<PyList>() {
        let n = list.len();
        out.reserve(n);
        for i in 0..n {
            // The ints lie all over the heap: requested in a first pass, their loads overlap.
            // Into the second-level cache: requests for the first level stalled this pass
            // once a line's 60 or so were in flight (decoding a line of LLaMA-3 ids from
            // Python, AMD EPYC: 710 -> 680 ns, same process, builds side by side).
            // SAFETY: `i < len`; the item is only prefetched.
            prefetch_ptr_l2(unsafe { ffi::PyList_GET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t) });
        }
        for i in 0..n {
            let mut overflow: std::os::raw::c_int = 0;
            // SAFETY: `i < len` and the list is borrowed for the whole loop; GET_ITEM
            // returns a borrowed reference that is only read here.
            let value = unsafe {
                let item = ffi::PyList_GET_ITEM(list.as_ptr(), i as ffi::Py_ssize_t);
                if let Some(v) = compact_int(item) {
                    out.push(v);
                    continue;
                }
                ffi::PyLong_AsLongLongAndOverflow(item, &mut overflow)
            };
            if value == -1 {
                if let Some(err) = PyErr::take(obj.py()) {
                    return Err(err);
                }
            }
            // An int beyond 64 bits is out of range like any other: clamp it so the core
            // reports it as a token-id error instead of Python's OverflowError.
            out.push(match overflow {
                0 => value,
                o if o > 0 => i64::MAX,
                _ => i64::MIN,
            });
        }
        return Ok(());
    }
    if let Ok(array) = obj.extract::<numpy::PyReadonlyArray1<'_, i64>>() {
        out.extend(array.as_array().iter().copied());
        return Ok(());
    }
    if let Ok(array) = obj.extract::<numpy::PyReadonlyArray1<'_, i32>>() {
        out.extend(array.as_array().iter().map(|&v| v as i64));
        return Ok(());
    }
    if let Ok(array) = obj.extract::<numpy::PyReadonlyArray1<'_, u32>>() {
        out.extend(array.as_array().iter().map(|&v| v as i64));
        return Ok(());
    }
    out.extend(obj.extract::<Vec<i64>>()?);
    Ok(())
}

pub fn ids_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let mut out = Vec::new();
    append_ids(obj, &mut out)?;
    Ok(out)
}

/// Buffers kept at most this large between calls (bounded memory per thread).
const KEEP_IDS: usize = 1 << 16;

thread_local! {
    static IDS: std::cell::Cell<Vec<i64>> = const { std::cell::Cell::new(Vec::new()) };
    static TEXT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    static UNITS: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
    static TOKEN_IDS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Calls `f` with the ids of `obj` in a per-thread buffer: a per-line `decode` otherwise
/// spends a malloc and a free on every call.
pub fn with_ids<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[i64]) -> PyResult<R>) -> PyResult<R> {
    let mut buf = IDS.take();
    buf.clear();
    let r = append_ids(obj, &mut buf).and_then(|()| f(&buf));
    if buf.capacity() <= KEEP_IDS {
        IDS.set(buf);
    }
    r
}

/// The texts of a list of str as UTF-8 views (no copies); an item that is not a str is a
/// `TypeError` naming its index. (The types used to be checked in a Python loop first, a
/// second single-threaded pass over the batch.)
pub fn texts_from_list(list: &Bound<'_, PyList>) -> PyResult<Vec<PyBackedStr>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match item.cast_into::<PyString>() {
            Ok(s) => out.push(PyBackedStr::try_from(s)?),
            Err(e) => {
                let kind = e.into_inner().get_type().name()?;
                return Err(PyTypeError::new_err(format!(
                    "texts[{i}] must be str, not {kind}"
                )));
            }
        }
    }
    Ok(out)
}

/// A Python str from the bytes `f` appends to a per-thread buffer (no allocation per
/// call): UTF-8 from `f` is decoded by Python with `errors="replace"`, so invalid bytes
/// become U+FFFD by the Unicode "maximal subpart" rule (as Rust's `from_utf8_lossy`, HF
/// and tiktoken do) and valid text is checked once, not twice.
pub fn str_from_utf8<'py>(
    py: Python<'py>,
    f: impl FnOnce(&mut Vec<u8>) -> PyResult<()>,
) -> PyResult<Bound<'py, PyString>> {
    let mut buf = TEXT.take();
    buf.clear();
    let r = f(&mut buf).and_then(|()| {
        // SAFETY: the pointer and length describe `buf`, alive for the call; the error
        // handler name is a NUL-terminated static string; the result is a new reference
        // or NULL with an exception set.
        unsafe {
            let s = ffi::PyUnicode_DecodeUTF8(
                buf.as_ptr().cast(),
                buf.len() as ffi::Py_ssize_t,
                c"replace".as_ptr(),
            );
            Ok(Bound::from_owned_ptr_or_err(py, s)?.cast_into_unchecked::<PyString>())
        }
    });
    if buf.capacity() <= KEEP_IDS * 8 {
        TEXT.set(buf);
    }
    r
}

/// A Python str from the UTF-16 units (all below U+10000) `f` appends to a per-thread
/// buffer, or `None` when `f` says it could not write the text (see
/// `hanpack_core::tokenizer::ucs2`). Python picks the narrowest storage for the result.
pub fn str_from_ucs2<'py>(
    py: Python<'py>,
    f: impl FnOnce(&mut Vec<u16>) -> PyResult<bool>,
) -> PyResult<Option<Bound<'py, PyString>>> {
    let mut buf = UNITS.take();
    buf.clear();
    let r = f(&mut buf).and_then(|done| done.then(|| str_from_units(py, &buf)).transpose());
    if buf.capacity() <= KEEP_IDS * 4 {
        UNITS.set(buf);
    }
    r
}

/// A Python str from UTF-16 units that are all below U+10000, as
/// `hanpack_core::tokenizer::ucs2` writes them.
pub fn str_from_units<'py>(py: Python<'py>, units: &[u16]) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: the pointer and length describe `units`, alive for the call, which are all
    // below U+10000 (no surrogates), as the two-byte kind requires; the result is a new
    // reference or NULL with an exception set.
    unsafe {
        let s = ffi::PyUnicode_FromKindAndData(
            ffi::PyUnicode_2BYTE_KIND as std::os::raw::c_int,
            units.as_ptr().cast(),
            units.len() as ffi::Py_ssize_t,
        );
        Ok(Bound::from_owned_ptr_or_err(py, s)?.cast_into_unchecked::<PyString>())
    }
}

/// Calls `f` with an empty per-thread buffer for token ids (a per-text `encode` otherwise
/// allocates and frees one per call).
pub fn with_id_buffer<R>(f: impl FnOnce(&mut Vec<u32>) -> PyResult<R>) -> PyResult<R> {
    let mut buf = TOKEN_IDS.take();
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= KEEP_IDS {
        TOKEN_IDS.set(buf);
    }
    r
}
