//! A per-thread cache of the tokens of short segments (see `bpe::JoinFilter`), one
//! cache line per entry.
//!
//! It replaced a `HashMap<Box<str>, Box<[Token]>>`, whose lookups waited on three
//! dependent cache misses (the bucket, the key's own allocation, the tokens' own): a
//! quarter of `encode_segment`'s time on Chinese text. Here a lookup reads one 64-byte
//! slot that holds the key and the tokens inline; a direct-mapped slot is simply
//! overwritten by the next segment that hashes to it.

use crate::tokenizer::pair_filter::{mix, slot_index as table_slot};

/// Longest segment cached, in bytes (ten CJK characters).
pub const MAX_KEY: usize = 30;
/// Most tokens of a cached segment.
pub const MAX_TOKENS: usize = 5;
const SLOTS: usize = 1 << 14;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Slot {
    /// 0: empty (segments are never empty).
    key_len: u8,
    n_tokens: u8,
    key: [u8; MAX_KEY],
    /// Token `i` spans `ends[i - 1]..ends[i]` of the segment (`0..ends[0]` for the first).
    ends: [u8; MAX_TOKENS],
    ids: [u32; MAX_TOKENS],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

const EMPTY: Slot = Slot {
    key_len: 0,
    n_tokens: 0,
    key: [0; MAX_KEY],
    ends: [0; MAX_TOKENS],
    ids: [0; MAX_TOKENS],
};

#[derive(Default)]
pub struct WordCache {
    slots: Vec<Slot>,
}

#[inline]
fn slot_index(key: &[u8]) -> usize {
    // The first and last eight bytes (overlapping for short keys) and the length.
    let n = key.len();
    let word = |at: usize| {
        let mut w = [0u8; 8];
        let end = (at + 8).min(n);
        w[..end - at].copy_from_slice(&key[at..end]);
        u64::from_le_bytes(w)
    };
    let (a, b) = (word(0), word(n.saturating_sub(8)));
    table_slot(mix(a ^ b.rotate_left(29) ^ (n as u64) << 56), SLOTS)
}

impl WordCache {
    /// Forgets every entry (the model changed).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.slots.resize(SLOTS, EMPTY);
    }

    /// Calls `f(start, end, id)` for each cached token of `key` (offsets relative to it);
    /// false when `key` is not cached.
    #[inline]
    pub fn get(&self, key: &[u8], mut f: impl FnMut(u32, u32, u32)) -> bool {
        if key.len() > MAX_KEY || self.slots.is_empty() {
            return false;
        }
        let slot = &self.slots[slot_index(key)];
        if slot.key_len as usize != key.len() || slot.key[..key.len()] != *key {
            return false;
        }
        let mut start = 0u32;
        for i in 0..slot.n_tokens as usize {
            let end = u32::from(slot.ends[i]);
            f(start, end, slot.ids[i]);
            start = end;
        }
        true
    }

    /// Caches `key`'s tokens, given as (start, end, id) relative to it and covering it in
    /// order; nothing happens when they do not fit a slot.
    pub fn insert(&mut self, key: &[u8], tokens: impl ExactSizeIterator<Item = (u32, u32, u32)>) {
        if key.is_empty()
            || key.len() > MAX_KEY
            || tokens.len() > MAX_TOKENS
            || self.slots.is_empty()
        {
            return;
        }
        let mut slot = EMPTY;
        slot.key_len = key.len() as u8;
        slot.key[..key.len()].copy_from_slice(key);
        let mut expect = 0;
        for (i, (start, end, id)) in tokens.enumerate() {
            if start != expect || end as usize > key.len() {
                return; // not a cover of the key: not cacheable
            }
            slot.ends[i] = end as u8;
            slot.ids[i] = id;
            slot.n_tokens += 1;
            expect = end;
        }
        if expect as usize != key.len() {
            return;
        }
        self.slots[slot_index(key)] = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &WordCache, key: &str) -> Option<Vec<(u32, u32, u32)>> {
        let mut out = Vec::new();
        c.get(key.as_bytes(), |s, e, id| out.push((s, e, id)))
            .then_some(out)
    }

    #[test]
    fn holds_what_fits_and_refuses_the_rest() {
        let mut c = WordCache::default();
        assert_eq!(get(&c, "abc"), None); // never cleared: empty
        c.clear();
        c.insert("中文字".as_bytes(), [(0, 6, 7), (6, 9, 8)].into_iter());
        assert_eq!(get(&c, "中文字"), Some(vec![(0, 6, 7), (6, 9, 8)]));
        assert_eq!(get(&c, "中文"), None);
        let long = "长".repeat(11);
        c.insert(long.as_bytes(), [(0, 33, 1)].into_iter());
        assert_eq!(get(&c, &long), None);
        c.insert(b"abcdef", (0..6).map(|i| (i, i + 1, i)));
        assert_eq!(get(&c, "abcdef"), None); // six tokens
        c.insert(b"abcd", [(0, 2, 1), (3, 4, 2)].into_iter());
        assert_eq!(get(&c, "abcd"), None); // a gap
        c.insert(b"abcd", [(0, 2, 1)].into_iter());
        assert_eq!(get(&c, "abcd"), None); // short of the end
        for n in 1..=MAX_KEY {
            let key = "x".repeat(n);
            c.insert(key.as_bytes(), [(0, n as u32, n as u32)].into_iter());
            assert_eq!(get(&c, &key), Some(vec![(0, n as u32, n as u32)]));
        }
        c.clear();
        assert_eq!(get(&c, "xx"), None);
    }
}
