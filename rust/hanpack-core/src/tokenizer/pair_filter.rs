//! A blocked Bloom filter over 64-bit pair keys (two token ids): one 64-bit word per
//! query, two bits per key. Both BPE encoders ask "do these two tokens merge?" far more
//! often for pairs that do not (Chinese text has many more distinct character bigrams
//! than any cache holds, and few are tokens); this answers most of those with one memory
//! read instead of a probe into a large hash map. False positives (~3% at 16 bits per
//! key) only cost the exact lookup that follows.

pub struct PairFilter {
    words: Vec<u64>,
    mask: usize,
}

/// The hash both the filter and the per-thread direct-mapped caches use.
#[inline]
pub fn mix(key: u64) -> u64 {
    (key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The slot of a direct-mapped table of `slots` (a power of two) for a `mix`ed hash: its
/// top bits, which the multiplication mixes best.
#[inline]
pub fn slot_index(hash: u64, slots: usize) -> usize {
    debug_assert!(slots.is_power_of_two() && slots > 1);
    (hash >> (64 - slots.trailing_zeros())) as usize
}

impl PairFilter {
    /// `keys` should be distinct: the filter is sized by their number (at least 512
    /// bytes, so that tiny vocabularies do not get a crowded filter).
    pub fn new(keys: &[u64]) -> Self {
        let words = (keys.len() * 16 / 64).next_power_of_two().max(64);
        let mut f = Self {
            words: vec![0; words],
            mask: words - 1,
        };
        for &k in keys {
            let (w, bits) = f.locate(k);
            f.words[w] |= bits;
        }
        f
    }

    #[inline]
    fn locate(&self, key: u64) -> (usize, u64) {
        let h = mix(key);
        // Word index from the high bits (the low 12 pick the two bits in the word).
        let w = (h >> 32) as usize & self.mask;
        (w, (1u64 << (h & 63)) | (1u64 << ((h >> 6) & 63)))
    }

    #[inline]
    pub fn may_contain(&self, key: u64) -> bool {
        let (w, bits) = self.locate(key);
        self.words[w] & bits == bits
    }

    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

impl std::fmt::Debug for PairFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PairFilter({} words)", self.words.len())
    }
}

impl Clone for PairFilter {
    fn clone(&self) -> Self {
        Self {
            words: self.words.clone(),
            mask: self.mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PairFilter;

    #[test]
    fn no_false_negatives() {
        let keys: Vec<u64> = (0..10_000u64).map(|i| i * 7919 << 32 | i * 31).collect();
        let f = PairFilter::new(&keys);
        assert!(keys.iter().all(|&k| f.may_contain(k)));
        let fp = (0..10_000u64)
            .filter(|&i| f.may_contain(i * 7919 + 1 << 32 | 5))
            .count();
        assert!(fp < 1_000, "false positive rate too high: {fp} of 10000");
    }
}
