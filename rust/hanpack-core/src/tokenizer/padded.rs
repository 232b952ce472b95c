//! Byte arenas with padding after the last entry, so decoding can copy a short token
//! with one fixed-size move instead of a `memcpy` call per 3-byte piece (measured: the
//! SentencePiece decoder went from 338 to 618 MB/s on Chinese text, `spm_encode` example).

/// Readable bytes kept after the last entry of a padded arena.
pub const PAD: usize = 16;

/// Appends `src[start..end]` to `out`. When the slice is at most [`PAD`] bytes and `src`
/// holds `PAD` bytes from `start` on (true for every entry of an arena that ends with
/// `PAD` spare bytes), the copy is one fixed-size move; otherwise an ordinary copy.
#[inline]
pub fn append(src: &[u8], start: usize, end: usize, out: &mut Vec<u8>) {
    let fits = start <= end
        && end - start <= PAD
        && start.checked_add(PAD).is_some_and(|e| e <= src.len());
    if !fits {
        out.extend_from_slice(&src[start..end]);
        return;
    }
    out.reserve(PAD);
    // SAFETY: `src[start..start + PAD]` is in bounds (checked above) and `out` has at
    // least PAD spare bytes after `reserve`; only `end - start` of the copied bytes, which
    // are `src[start..end]`, become part of `out`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            src.as_ptr().add(start),
            out.as_mut_ptr().add(out.len()),
            PAD,
        );
        out.set_len(out.len() + (end - start));
    }
}

/// Token byte strings by id in one arena (instead of one allocation per token), with
/// [`PAD`] spare bytes at the end for [`append`]. Ids never set have no entry (their span
/// is [`ABSENT`]), so a lookup is one read of the span table.
#[derive(Debug, Clone, Default)]
pub struct ByteArena {
    bytes: Vec<u8>,
    /// id → (start, end) in `bytes`, or `ABSENT`.
    spans: Vec<(u32, u32)>,
    /// id → the entry itself when at most 15 bytes (its length in the last byte), else
    /// `LONG` or `NONE` there: decoding reads one 16-byte slot per id instead of a span
    /// and then the arena (two dependent cache misses on a large vocabulary).
    short: Vec<[u8; 16]>,
}

const LONG: u8 = 0xff;
const NONE: u8 = 0xfe;

/// The span of an id without an entry (start after end: no real span looks like it).
const ABSENT: (u32, u32) = (u32::MAX, 0);

impl ByteArena {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            bytes: vec![0; PAD],
            spans: Vec::with_capacity(n),
            short: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Sets entry `index` (growing the table with absent entries); a replaced entry's old
    /// bytes stay in the arena unused.
    pub fn set(&mut self, index: usize, value: &[u8]) {
        if self.bytes.len() < PAD {
            self.bytes.resize(PAD, 0);
        }
        if self.spans.len() <= index {
            self.spans.resize(index + 1, ABSENT);
            let mut none = [0u8; 16];
            none[15] = NONE;
            self.short.resize(index + 1, none);
        }
        let mut slot = [0u8; 16];
        if value.len() <= 15 {
            slot[..value.len()].copy_from_slice(value);
            slot[15] = value.len() as u8;
        } else {
            slot[15] = LONG;
        }
        self.short[index] = slot;
        self.bytes.truncate(self.bytes.len() - PAD);
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value);
        self.spans[index] = (start, self.bytes.len() as u32);
        self.bytes.resize(self.bytes.len() + PAD, 0);
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let &(s, e) = self.spans.get(index).filter(|&&span| span != ABSENT)?;
        Some(&self.bytes[s as usize..e as usize])
    }

    /// Requests the cache line that [`Self::append_to`] reads first for entry `index`.
    #[inline]
    pub fn prefetch(&self, index: usize) {
        if let Some(slot) = self.short.get(index) {
            crate::prefetch::prefetch_ptr(slot);
        }
    }

    /// Appends entry `index` to `out`; false if there is no such entry.
    #[inline]
    pub fn append_to(&self, index: usize, out: &mut Vec<u8>) -> bool {
        if let Some(slot) = self.short.get(index) {
            let len = slot[15] as usize;
            if len <= 15 {
                out.reserve(16);
                // SAFETY: `out` has 16 spare bytes after `reserve`; only the first `len`
                // copied bytes, the entry, become part of it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        slot.as_ptr(),
                        out.as_mut_ptr().add(out.len()),
                        16,
                    );
                    out.set_len(out.len() + len);
                }
                return true;
            }
        }
        match self.spans.get(index) {
            Some(&(s, e)) if (s, e) != ABSENT => {
                append(&self.bytes, s as usize, e as usize, out);
                true
            }
            _ => false,
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.spans.shrink_to_fit();
        self.short.shrink_to_fit();
    }

    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.spans.capacity() * 8 + self.short.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_equals_plain_copy() {
        let src: Vec<u8> = (0..64u8).collect();
        for start in 0..=src.len() {
            for end in start..=src.len() {
                let mut fast = b"xy".to_vec();
                append(&src, start, end, &mut fast);
                let mut plain = b"xy".to_vec();
                plain.extend_from_slice(&src[start..end]);
                assert_eq!(fast, plain, "{start}..{end}");
            }
        }
    }

    #[test]
    fn arena_entries_round_trip() {
        let mut a = ByteArena::with_capacity(4);
        a.set(2, "你好".as_bytes());
        a.set(0, b"");
        a.set(5, &[b'z'; 40]);
        a.set(2, b"again");
        assert_eq!(a.len(), 6);
        assert_eq!(a.get(2), Some(&b"again"[..]));
        assert_eq!(a.get(0), Some(&b""[..]));
        assert_eq!(a.get(1), None); // never set
        assert_eq!(a.get(6), None);
        assert!(!a.append_to(1, &mut Vec::new()));
        let mut out = Vec::new();
        for i in [2, 5, 0, 2] {
            assert!(a.append_to(i, &mut out));
        }
        assert!(!a.append_to(9, &mut out));
        let mut want = b"again".to_vec();
        want.extend_from_slice(&[b'z'; 40]);
        want.extend_from_slice(b"again");
        assert_eq!(out, want);
    }
}
