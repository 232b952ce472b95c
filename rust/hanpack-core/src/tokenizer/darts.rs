//! A Darts-clone double-array trie over bytes: the structure sentencepiece serializes
//! inside `precompiled_charsmap`, and the one its Unigram model searches pieces with.
//! Charsmaps are read as stored; piece tries are built with `yada` (a Darts-clone
//! builder), and searched here.
//!
//! Why bytes and not characters: a character trie (`crawdad`) maps characters through a
//! table as long as the largest code point in any key, and never shorter than 65,536
//! entries; for `chinese_sp.model` (20,000 pieces, one of them U+20024) that trie took
//! 787 KB against 247 KB for this one, while the model file is 520 KB.
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
    /// A trie of `keys` (sorted bytewise, no duplicates, no empty key, no NUL byte),
    /// each with a value below 2^31.
    pub fn build(keys: &[(&[u8], u32)]) -> Result<Self, String> {
        let bytes = yada::builder::DoubleArrayBuilder::build(keys).map_err(|e| e.to_string())?;
        Ok(Self::from_le_bytes(&bytes))
    }

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
    #[inline]
    pub fn longest_prefix(&self, key: &[u8]) -> Option<(usize, u32)> {
        let mut best = None;
        self.common_prefixes(key, |len, value| best = Some((len, value)));
        best
    }

    /// Calls `found(length, value)` for every key that is a prefix of `key`, shortest
    /// first (sentencepiece's `commonPrefixSearch`).
    #[inline]
    pub fn common_prefixes(&self, key: &[u8], mut found: impl FnMut(usize, u32)) {
        let units = &self.units;
        let mut node = match units.first() {
            Some(&u) => offset(u),
            None => return,
        };
        for (i, &b) in key.iter().enumerate() {
            node ^= b as usize;
            let Some(&unit) = units.get(node) else { return };
            if label(unit) != b as u32 {
                return;
            }
            node ^= offset(unit);
            if has_leaf(unit) {
                let Some(&leaf) = units.get(node) else { return };
                found(i + 1, value(leaf));
            }
        }
    }

    /// The value of `key` if it is a key.
    pub fn exact_match(&self, key: &[u8]) -> Option<u32> {
        let mut hit = None;
        self.common_prefixes(key, |len, value| {
            if len == key.len() {
                hit = Some(value);
            }
        });
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_trie_finds_every_prefix_key() {
        let mut keys: Vec<&str> = vec![
            "a",
            "ab",
            "abc",
            "中",
            "中文",
            "\u{20024}",
            "\u{20024}x",
            "b",
        ];
        keys.sort_unstable();
        let records: Vec<(&[u8], u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_bytes(), i as u32))
            .collect();
        let trie = DoubleArray::build(&records).unwrap();
        for &(k, v) in &records {
            assert_eq!(trie.exact_match(k), Some(v));
        }
        assert_eq!(trie.exact_match("ac".as_bytes()), None);
        assert_eq!(trie.exact_match("中文字".as_bytes()), None);
        let id = |k: &str| keys.iter().position(|&x| x == k).unwrap() as u32;
        let mut found = Vec::new();
        trie.common_prefixes("abd".as_bytes(), |len, v| found.push((len, v)));
        assert_eq!(found, vec![(1, id("a")), (2, id("ab"))]);
        found.clear();
        trie.common_prefixes("中文字".as_bytes(), |len, v| found.push((len, v)));
        assert_eq!(found, vec![(3, id("中")), (6, id("中文"))]);
        assert_eq!(trie.longest_prefix("abcd".as_bytes()), Some((3, id("abc"))));
    }

    #[test]
    fn build_refuses_what_darts_cannot_hold() {
        assert!(DoubleArray::build(&[("b".as_bytes(), 0), ("a".as_bytes(), 1)]).is_err());
        assert!(DoubleArray::build(&[("a\0".as_bytes(), 0)]).is_err());
        assert!(DoubleArray::build(&[]).is_err());
    }
}
