//! Streaming access to safetensors files: the header is parsed and validated by the
//! `safetensors` crate (offsets contiguous, sizes equal to dtype × shape, the file exactly
//! as long as the header says), the data is memory-mapped and read one tensor at a time.
//!
//! Pages of a memory-mapped file count towards the process's resident memory once read,
//! so a pass over a multi-GB checkpoint would look like it holds all of it. [`release`]
//! drops a tensor's pages after use (they are clean, so nothing is lost; the kernel
//! re-reads them if they are touched again), which keeps peak memory at the size of the
//! tensors in flight rather than of the file.
//!
//! [`release`]: SafetensorsFile::release

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
pub use safetensors::Dtype;
use safetensors::{SafeTensorError, SafeTensors};

use crate::error::{HanpackError, Result};

/// One tensor of a file: where its bytes are (absolute offsets into the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

impl TensorEntry {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// An open, validated safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    /// Sorted by offset (file order).
    entries: Vec<TensorEntry>,
    metadata: HashMap<String, String>,
}

/// Safetensors' dtype names as they appear in headers ("F16", "BF16", ...).
pub fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| HanpackError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bad = |reason: String| HanpackError::CheckpointFormat {
            path: path.display().to_string(),
            reason,
        };
        if len < 8 {
            return Err(bad(format!(
                "the file is {len} bytes, shorter than the 8-byte header length"
            )));
        }
        // SAFETY: the map is read-only; a file changed underneath by another process can
        // change the bytes we read (never memory safety of our own structures, which are
        // built from a validated copy of the header below).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&mmap).map_err(|e| bad(describe(&e, &mmap)))?;
        let data_start = 8 + header_len;
        let mut entries: Vec<TensorEntry> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
            })
            .collect();
        entries.sort_by_key(|e| (e.start, e.end));
        Ok(Self {
            path: path.to_owned(),
            mmap,
            entries,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors in file order.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The header's `__metadata__` (empty when absent).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    pub fn bytes(&self, e: &TensorEntry) -> &[u8] {
        &self.mmap[e.start..e.end]
    }

    /// Tells the kernel that this tensor's pages are no longer needed (see the module
    /// comment). A hint: failure only means the pages stay resident.
    pub fn release(&self, e: &TensorEntry) {
        #[cfg(unix)]
        {
            // madvise needs a page-aligned start; shrink the range inward to whole pages
            // so that neighbouring tensors' pages are never touched.
            const PAGE: usize = 4096;
            let start = e.start.next_multiple_of(PAGE);
            let end = e.end / PAGE * PAGE;
            if end > start {
                // SAFETY: the map is a read-only, file-backed MAP_SHARED mapping: after
                // MADV_DONTNEED a later read faults the same bytes back in from the file,
                // so borrowed slices stay valid (the hazard the flag carries is for
                // anonymous or private written pages, which are zero-filled instead).
                let _ = unsafe {
                    self.mmap.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = e;
    }
}

/// A tensor's elements as `T`, borrowed when the bytes are aligned for `T` (the usual
/// case: safetensors writers align data), copied otherwise.
pub fn elements<T: Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    // SAFETY: `Pod` types are plain numbers for which every bit pattern is valid.
    let (head, mid, tail) = unsafe { bytes.align_to::<T>() };
    if head.is_empty() && tail.is_empty() {
        Cow::Borrowed(mid)
    } else {
        let size = std::mem::size_of::<T>();
        Cow::Owned(bytes.chunks_exact(size).map(T::from_le).collect())
    }
}

/// Numbers that can be read straight from little-endian file bytes.
pub trait Pod: Copy {
    fn from_le(b: &[u8]) -> Self;
}
impl Pod for f32 {
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}
impl Pod for f16 {
    fn from_le(b: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}
impl Pod for bf16 {
    fn from_le(b: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

#[cfg(target_endian = "big")]
compile_error!("safetensors data is little-endian; hanpack reads it in place and supports little-endian targets only");

/// A readable reason for a header the crate rejected.
fn describe(e: &SafeTensorError, file: &[u8]) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            match promised_len(file) {
                Some(want) => format!("the header describes {want} bytes of file but the file has {} (truncated or padded)", file.len()),
                None => "the file length does not match its header (truncated or padded)".into(),
            }
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor {name:?} does not start where the previous tensor ends (overlapping or gapped data_offsets)"),
        SafeTensorError::TensorInvalidInfo => "a tensor's data_offsets do not span dtype size × shape bytes".into(),
        SafeTensorError::HeaderTooLarge | SafeTensorError::InvalidHeaderLength => {
            format!("the header length {} does not fit in the file ({} bytes)", u64::from_le_bytes(file[..8].try_into().unwrap_or([0; 8])), file.len())
        }
        SafeTensorError::InvalidHeaderDeserialization(j) => format!("the JSON header does not parse: {j}"),
        SafeTensorError::InvalidHeader(u) => format!("the header is not UTF-8: {u}"),
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        SafeTensorError::MisalignedSlice => "a tensor's size is not a whole number of bytes".into(),
        other => other.to_string(),
    }
}

/// The file length a header promises: 8 + header length + end of the last tensor.
fn promised_len(file: &[u8]) -> Option<usize> {
    let n = usize::try_from(u64::from_le_bytes(file.get(..8)?.try_into().ok()?)).ok()?;
    let header = std::str::from_utf8(file.get(8..8usize.checked_add(n)?)?).ok()?;
    let v: serde_json::Value = serde_json::from_str(header).ok()?;
    let end = v
        .as_object()?
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    Some(8 + n + usize::try_from(end).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::safetensors_writer::{PlannedTensor, SafetensorsWriter};

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hanpack-st-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    fn write_two(path: &Path) {
        let plan = vec![
            PlannedTensor {
                name: "a".into(),
                dtype: Dtype::F32,
                shape: vec![2, 3],
            },
            PlannedTensor {
                name: "b".into(),
                dtype: Dtype::F16,
                shape: vec![3],
            },
        ];
        let mut w = SafetensorsWriter::create(
            path,
            &plan,
            &HashMap::from([("format".to_string(), "pt".to_string())]),
        )
        .unwrap();
        let a: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let b: Vec<u8> = [1.0f32, 2.0, 3.0]
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        w.write("b", &b).unwrap();
        w.write("a", &a).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn round_trip_through_the_writer() {
        let p = tmp("rt");
        write_two(&p);
        let f = SafetensorsFile::open(&p).unwrap();
        let names: Vec<_> = f.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]); // larger dtype first, then by name
        let a = f.entry("a").unwrap();
        assert_eq!(
            elements::<f32>(f.bytes(a)).as_ref(),
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let b = f.entry("b").unwrap();
        assert_eq!(
            elements::<f16>(f.bytes(b))
                .iter()
                .map(|h| h.to_f32())
                .collect::<Vec<_>>(),
            [1.0, 2.0, 3.0]
        );
        assert_eq!(f.metadata()["format"], "pt");
        f.release(a);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn truncated_and_lying_files_are_errors() {
        let p = tmp("bad");
        write_two(&p);
        let good = std::fs::read(&p).unwrap();
        // Same-length edits of the header text.
        let edit = |from: &str, to: &str| {
            let mut b = good.clone();
            let at = b
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .expect(from);
            b[at..at + to.len()].copy_from_slice(to.as_bytes());
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..good.len() - 1].to_vec(), "truncated"),
            (good[..4].to_vec(), "shorter than the 8-byte"),
            (
                [&(1u64 << 40).to_le_bytes()[..], &good[8..]].concat(),
                "does not fit",
            ),
            (edit("[2,3]", "[3,3]"), "dtype size"),
            (edit("\"F16\"", "\"F99\""), "does not parse"),
            (edit("[24,30]", "[20,26]"), "does not start where"),
        ];
        for (bytes, want) in cases {
            std::fs::write(&p, &bytes).unwrap();
            let err = SafetensorsFile::open(&p).err().expect(want).to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn unaligned_data_is_copied() {
        let bytes: Vec<u8> = [0u8].iter().copied().chain(1.5f32.to_le_bytes()).collect();
        assert_eq!(elements::<f32>(&bytes[1..]).as_ref(), &[1.5]);
    }
}
