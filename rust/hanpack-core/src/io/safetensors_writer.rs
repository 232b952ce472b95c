//! Writes a safetensors file whose tensors are produced one at a time, in any order,
//! without holding them all: the header is planned up front from names, dtypes and
//! shapes (sizes are known before the data), then each tensor's bytes are written at its
//! planned offset.
//!
//! Tensors are laid out like the `safetensors` crate's own serializer does: by dtype
//! size, largest first, then by name, so every tensor starts aligned to its element size
//! (readers that map data in place, such as torch's, need that). The header is the
//! crate's JSON, padded with spaces to a multiple of 8 bytes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use crate::error::{HanpackError, Result};

/// A tensor the file will hold.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl PlannedTensor {
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

struct Slot {
    offset: u64,
    len: usize,
    written: bool,
}

pub struct SafetensorsWriter {
    path: PathBuf,
    file: File,
    slots: HashMap<String, Slot>,
    data_start: u64,
}

impl SafetensorsWriter {
    /// Creates `path` (which must not exist) and writes the header.
    pub fn create(
        path: &Path,
        tensors: &[PlannedTensor],
        metadata: &HashMap<String, String>,
    ) -> Result<Self> {
        let werr = |source| HanpackError::IoWrite {
            path: path.to_owned(),
            source,
        };
        let mut order: Vec<&PlannedTensor> = tensors.iter().collect();
        order.sort_by(|a, b| b.dtype.cmp(&a.dtype).then_with(|| a.name.cmp(&b.name)));
        let mut infos = Vec::with_capacity(order.len());
        let mut slots = HashMap::with_capacity(order.len());
        let mut offset = 0usize;
        for t in order {
            if t.shape.iter().product::<usize>() * t.dtype.bitsize() % 8 != 0 {
                return Err(HanpackError::InvalidArgument(format!(
                    "tensor {:?} is not a whole number of bytes",
                    t.name
                )));
            }
            let len = t.nbytes();
            infos.push((
                t.name.clone(),
                TensorInfo {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data_offsets: (offset, offset + len),
                },
            ));
            if slots
                .insert(
                    t.name.clone(),
                    Slot {
                        offset: offset as u64,
                        len,
                        written: false,
                    },
                )
                .is_some()
            {
                return Err(HanpackError::InvalidArgument(format!(
                    "tensor {:?} is planned twice",
                    t.name
                )));
            }
            offset += len;
        }
        let meta = Metadata::new(
            if metadata.is_empty() {
                None
            } else {
                Some(metadata.clone())
            },
            infos,
        )
        .map_err(|e| {
            HanpackError::InvalidArgument(format!("cannot plan {}: {e}", path.display()))
        })?;
        let mut header = serde_json::to_vec(&meta).map_err(|e| {
            HanpackError::InvalidArgument(format!("cannot plan {}: {e}", path.display()))
        })?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(werr)?;
        file.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(werr)?;
        file.write_all(&header).map_err(werr)?;
        let data_start = 8 + header.len() as u64;
        // The final size up front (sparse until written): tensors arrive in any order,
        // and an empty last tensor is never written at all.
        file.set_len(data_start + offset as u64).map_err(werr)?;
        Ok(Self {
            path: path.to_owned(),
            file,
            slots,
            data_start,
        })
    }

    /// Writes one planned tensor's bytes (exactly its planned size, once).
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let slot = self.slots.get_mut(name).ok_or_else(|| {
            HanpackError::InvalidArgument(format!(
                "tensor {name:?} was not planned for {}",
                self.path.display()
            ))
        })?;
        if slot.written || bytes.len() != slot.len {
            return Err(HanpackError::InvalidArgument(format!(
                "tensor {name:?}: {} bytes for a {}-byte slot{}",
                bytes.len(),
                slot.len,
                if slot.written { " already written" } else { "" }
            )));
        }
        let werr = |source| HanpackError::IoWrite {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.data_start + slot.offset))
            .map_err(werr)?;
        self.file.write_all(bytes).map_err(werr)?;
        slot.written = true;
        Ok(())
    }

    /// Checks that every planned tensor was written and flushes the file to disk.
    pub fn finish(self) -> Result<()> {
        let mut missing: Vec<&str> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.written)
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            return Err(HanpackError::InvalidArgument(format!(
                "{}: tensors never written: {}",
                self.path.display(),
                missing.join(", ")
            )));
        }
        self.file
            .sync_all()
            .map_err(|source| HanpackError::IoWrite {
                path: self.path.clone(),
                source,
            })
    }
}
