//! Read-only view of a Darts-clone double-array trie, the structure sentencepiece
//! serializes inside `precompiled_charsmap`. Only lookups are needed; building is done
//! by sentencepiece's `spm_train`/`compile_charsmap`.
//!
//! Unit layout (32 bits, from darts.h): bit 8 = has_leaf, bits 0..=7 and 31 = label,
//! offset = (unit >> 10) << ((unit & (1 << 9)) >> 6), a leaf's value = unit & 0x7FFF_FFFF.
//! Every index is bounds-checked: a corrupt array ends the search, it never panics.

#[derive(Clone, Debug, Default)]
pub struct DoubleArray {
    units: Vec<u32>,
    /// Bytes past the last whole unit, kept so the blob can be written back unchanged.
    tail: Vec<u8>,
}

#[inline]
fn has_leaf(unit: u32) -> bool {
    (unit >> 8) & 1 == 1
}
#[inline]
fn value(unit: u32) -> u32 {
    unit & 0x7FFF_FFFF
}
#[inline]
fn label(unit: u32) -> u32 {
    unit & (0x8000_0000 | 0xFF)
}
#[inline]
fn offset(unit: u32) -> usize {
    ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize
}

impl DoubleArray {
    /// `blob` is little-endian u32 units; a trailing partial unit is ignored, as
    /// sentencepiece does (`size / unit_size`).
    pub fn from_le_bytes(blob: &[u8]) -> Self {
        let chunks = blob.chunks_exact(4);
        let tail = chunks.remainder().to_vec();
        let units = chunks
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self { units, tail }
    }

    /// The serialized form `from_le_bytes` read.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.units.len() * 4 + self.tail.len());
        for u in &self.units {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&self.tail);
        out
    }

    pub fn heap_bytes(&self) -> usize {
        self.units.capacity() * 4 + self.tail.capacity()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// The longest key that is a prefix of `key`: `(length, value)`.
    /// Equivalent to sentencepiece's `commonPrefixSearch` followed by taking the longest.
    pub fn longest_prefix(&self, key: &[u8]) -> Option<(usize, u32)> {
        let units = &self.units;
        let mut node = match units.first() {
            Some(&u) => offset(u),
            None => return None,
        };
        let mut best = None;
        for (i, &b) in key.iter().enumerate() {
            node ^= b as usize;
            let Some(&unit) = units.get(node) else { break };
            if label(unit) != b as u32 {
                break;
            }
            node ^= offset(unit);
            if has_leaf(unit) {
                let Some(&leaf) = units.get(node) else { break };
                best = Some((i + 1, value(leaf)));
            }
        }
        best
    }
}
