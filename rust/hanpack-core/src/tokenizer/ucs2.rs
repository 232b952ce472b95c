//! Decoding token ids straight to UTF-16 code units, for Python's two-byte strings.
//!
//! Decoding Chinese text to bytes and then letting Python decode the UTF-8 spends about
//! as long in Python's UTF-8 decoder (~0.85 ns a byte) as in putting the bytes together.
//! [`Ucs2Slots`] keeps every short token whose bytes are whole characters of the Basic
//! Multilingual Plane as code units, so a line of such tokens is assembled once, already
//! decoded. Tokens that are not whole (byte-level BPE cuts rarer Chinese characters into
//! byte tokens: 7% of LLaMA-3's tokens on Chinese news, 27% on classical poetry) go
//! through a small UTF-8 decoder a run at a time.
//!
//! [`Ucs2Slots::decode_into`] gives up, and the caller decodes bytes as before (both paths
//! give the same text), on text that must become U+FFFD by Python's rule (invalid or
//! incomplete UTF-8), a character beyond U+FFFF, and any token longer than a slot: such
//! tokens are Latin words (17% of English text's tokens, none of Chinese text's), where
//! bytes and Python's ASCII decoder are the faster path.

/// Slot tags (the last unit of a slot) that are not a unit count.
const LONG: u16 = 0xFFFF;
const BYTES: u16 = 0xFFFE;
const ABSENT: u16 = 0xFFFD;
/// A narrow slot whose token has a wide slot: its index is in the first two units.
const WIDE: u16 = 0xFFFC;
/// `BYTES_INLINE + n`: the token's `n` bytes are in the slot, two to a unit
/// (little-endian); at most twice the slot's units of text.
const BYTES_INLINE: u16 = 0xFF00;
/// Units of text in a narrow slot (the fourth unit is the tag).
const NARROW: usize = 3;
/// Units of text in a wide slot (the eighth unit is the tag): every Chinese token fits.
const WIDE_UNITS: usize = 7;
type Narrow = [u16; NARROW + 1];
type Wide = [u16; WIDE_UNITS + 1];

/// id → the token's text as UTF-16 code units, where it is short whole BMP text.
#[derive(Clone, Debug, Default)]
pub struct Ucs2Slots {
    /// Eight bytes per id. The ids of a line hit this table all over, so its size is what
    /// decoding waits for: LLaMA-3's is 1 MiB, where one 16-byte slot per id took 2 MiB
    /// and decoding classical poetry spent 40% of its time waiting for slots (5.6 ns an
    /// id, 3.4 with the slots in cache). 98% of the ids of Chinese text (LLaMA-3, Qwen2)
    /// are tokens of at most three units, or byte tokens of one or two bytes, and fit.
    narrow: Vec<Narrow>,
    /// The tokens that do not fit (Latin words, longer Chinese words).
    wide: Vec<Wide>,
}

impl Ucs2Slots {
    /// Slots for ids `0..n`; `bytes_of(id)` is the token's bytes, `None` for no token.
    pub fn build<'a>(n: usize, bytes_of: impl Fn(usize) -> Option<&'a [u8]>) -> Self {
        let mut narrow = Vec::with_capacity(n);
        let mut wide = Vec::new();
        let mut units: Vec<u16> = Vec::new();
        for id in 0..n {
            let mut slot: Wide = [0; WIDE_UNITS + 1];
            slot[WIDE_UNITS] = match bytes_of(id) {
                None => ABSENT,
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) if s.chars().all(|c| (c as u32) < 0x10000) => {
                        units.clear();
                        units.extend(s.encode_utf16());
                        if units.len() <= WIDE_UNITS {
                            slot[..units.len()].copy_from_slice(&units);
                            units.len() as u16
                        } else {
                            LONG
                        }
                    }
                    _ if b.len() <= 2 * WIDE_UNITS => {
                        for (i, pair) in b.chunks(2).enumerate() {
                            slot[i] =
                                u16::from_le_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
                        }
                        BYTES_INLINE + b.len() as u16
                    }
                    _ => BYTES,
                },
            };
            let tag = slot[WIDE_UNITS];
            let fits = match tag {
                LONG | BYTES | ABSENT => true,
                t if t >= BYTES_INLINE => usize::from(t - BYTES_INLINE) <= 2 * NARROW,
                t => usize::from(t) <= NARROW,
            };
            narrow.push(if fits {
                [slot[0], slot[1], slot[2], tag]
            } else {
                let at = u32::try_from(wide.len()).expect("fewer than 2^32 tokens");
                wide.push(slot);
                [at as u16, (at >> 16) as u16, 0, WIDE]
            });
        }
        Self { narrow, wide }
    }

    pub fn heap_bytes(&self) -> usize {
        self.narrow.capacity() * std::mem::size_of::<Narrow>()
            + self.wide.capacity() * std::mem::size_of::<Wide>()
    }
}

/// Bytes of consecutive byte tokens collected before they are decoded at once.
const RUN: usize = 64;
/// Slots requested this many ids before they are read.
const AHEAD: usize = 32;

impl Ucs2Slots {
    /// Appends the text of `ids` to `out` as UTF-16 units; `false` when that cannot be
    /// done here (see the module comment), an id is negative or has no token, and `out`
    /// then holds a partial result. `skip(id)` leaves a token out; `bytes_of(id)` gives the
    /// bytes of a token with more bytes than a slot holds.
    pub fn decode_into<'b>(
        &'b self,
        ids: &[i64],
        skip: impl Fn(u32) -> bool,
        bytes_of: impl Fn(u32) -> &'b [u8],
        out: &mut Vec<u16>,
    ) -> bool {
        // Whole tokens are copied a slot at a time through a raw pointer into space
        // reserved up front (each adds at most WIDE_UNITS units; a copy writes at most a
        // whole wide slot): with the length in a register the loop waits only for the
        // slot loads. Other tokens go through `out` itself, and the pointer is taken again
        // after.
        let room = |left: usize| left * WIDE_UNITS + 1;
        let mut run = Run {
            bytes: [0; RUN],
            len: 0,
        };
        out.reserve(room(ids.len()));
        // The slots of a line's ids lie all over the table: requested AHEAD ids before
        // they are read, their loads overlap. (Not all up front: an English line usually
        // leaves this path at its first long word, and the requests for the rest were
        // wasted.)
        let prefetch = |k: usize| {
            if let Some(slot) = ids.get(k).and_then(|&id| self.narrow.get(id as usize)) {
                crate::prefetch::prefetch_ptr(slot);
            }
        };
        (0..AHEAD).for_each(prefetch);
        let mut len = out.len();
        let mut dst = out.as_mut_ptr();
        // A character cut into two byte tokens of one or two bytes each (17% of LLaMA-3's
        // tokens on Chinese text): the first token's bytes wait here, in registers, and
        // the second completes the character. Anything else goes through `run`, which is
        // empty while bytes wait here (they move to it first).
        let mut pend = Pending::default();
        // Invariant before id `k`: `len + room(ids.len() - k) <= out.capacity()`.
        for (k, &id) in ids.iter().enumerate() {
            prefetch(k + AHEAD);
            let Ok(i) = u32::try_from(id) else {
                return false;
            };
            let Some(slot) = self.narrow.get(i as usize) else {
                return false;
            };
            let tag = slot[NARROW];
            if tag as usize <= NARROW && run.len == 0 && pend.n == 0 {
                if skip(i) {
                    continue;
                }
                // SAFETY: by the invariant (`ids.len() - k >= 1`) the slot's units fit;
                // `len` grows by at most NARROW, which keeps the invariant. The first
                // `tag` of the copied units are the token's text.
                unsafe {
                    std::ptr::copy_nonoverlapping(slot.as_ptr(), dst.add(len), NARROW + 1);
                }
                len += tag as usize;
                continue;
            }
            if tag.wrapping_sub(BYTES_INLINE + 1) < 2 && run.len == 0 {
                if skip(i) {
                    continue;
                }
                let n = u32::from(tag - BYTES_INLINE);
                match pend.take(u32::from(slot[0]), n) {
                    Taken::Waiting => continue,
                    Taken::Char(unit) => {
                        // SAFETY: by the invariant one unit fits at `len`.
                        unsafe { *dst.add(len) = unit };
                        len += 1;
                        continue;
                    }
                    Taken::No => {}
                }
            }
            if tag == ABSENT {
                return false;
            }
            if skip(i) {
                continue;
            }
            // SAFETY: `len` units of `out` have been written (above, or by `out` itself).
            unsafe { out.set_len(len) };
            if pend.n != 0 {
                let waiting = pend.bytes.to_le_bytes();
                if !run.append(&waiting[..pend.n as usize], out) {
                    return false;
                }
                pend.n = 0;
            }
            let (units, tag): (&[u16], u16) = if tag == WIDE {
                let at = usize::from(slot[0]) | usize::from(slot[1]) << 16;
                let w = &self.wide[at];
                (&w[..WIDE_UNITS], w[WIDE_UNITS])
            } else {
                (&slot[..NARROW], tag)
            };
            let ok = if tag == LONG {
                false
            } else if tag as usize <= WIDE_UNITS {
                run.flush(out, false) && {
                    out.extend_from_slice(&units[..tag as usize]);
                    true
                }
            } else if tag > BYTES_INLINE && usize::from(tag - BYTES_INLINE) <= 2 * units.len() {
                let mut inline = [0u8; 2 * WIDE_UNITS];
                for (j, u) in units.iter().enumerate() {
                    inline[2 * j..2 * j + 2].copy_from_slice(&u.to_le_bytes());
                }
                run.append(&inline[..(tag - BYTES_INLINE) as usize], out)
            } else {
                run.append(bytes_of(i), out)
            };
            if !ok {
                return false;
            }
            out.reserve(room(ids.len() - k)); // the invariant again
            len = out.len();
            dst = out.as_mut_ptr();
        }
        // SAFETY: as above.
        unsafe { out.set_len(len) };
        // Bytes still waiting end inside a character: text to replace.
        pend.n == 0 && (run.len == 0 || run.flush(out, false))
    }
}

/// The bytes (one or two) of a token that starts a three-byte character, waiting for the
/// token that ends it.
#[derive(Default)]
struct Pending {
    /// Little-endian, `n` of them.
    bytes: u32,
    n: u32,
}

enum Taken {
    /// The token starts a character; its bytes wait.
    Waiting,
    /// The token ended the waiting character: its code unit.
    Char(u16),
    /// Neither (another lead byte, a character of other than three bytes, E0 and ED
    /// leads, whose second byte has a narrower range, or bytes that cannot follow): the
    /// general path takes the token.
    No,
}

impl Pending {
    /// Takes a token of `n` (1 or 2) bytes, the low `n` bytes of `b`.
    #[inline(always)]
    fn take(&mut self, b: u32, n: u32) -> Taken {
        // Continuation bytes: 0b10xx_xxxx in each of the token's bytes.
        let mask = if n == 1 { 0xC0 } else { 0xC0C0 };
        let cont = mask & 0x8080;
        if self.n == 0 {
            if starts_three(b as u8) && (n == 1 || (b >> 8) & 0xC0 == 0x80) {
                self.bytes = b;
                self.n = n;
                return Taken::Waiting;
            }
        } else if self.n + n == 3 && b & mask == cont {
            let all = self.bytes | b << (8 * self.n);
            self.n = 0;
            return Taken::Char(three_byte_unit(all));
        }
        Taken::No
    }
}

/// A lead byte of a three-byte character whose second byte may be any continuation byte
/// (E0 and ED bound it more narrowly; their characters take the general path).
#[inline(always)]
fn starts_three(lead: u8) -> bool {
    matches!(lead, 0xE1..=0xEC | 0xEE..=0xEF)
}

/// The code unit of a checked three-byte character, its bytes little-endian in `all`.
#[inline(always)]
fn three_byte_unit(all: u32) -> u16 {
    (((all & 0x0F) << 12) | ((all >> 8 & 0x3F) << 6) | (all >> 16 & 0x3F)) as u16
}

/// Bytes of consecutive tokens that are not whole text (a character split across
/// tokens), decoded together when whole text follows or the buffer fills up: decoding
/// them byte by byte mispredicted a branch per byte.
struct Run {
    bytes: [u8; RUN],
    len: usize,
}

impl Run {
    fn append(&mut self, mut bytes: &[u8], out: &mut Vec<u16>) -> bool {
        while self.len + bytes.len() > RUN {
            // Decode what is complete and keep an unfinished character's bytes.
            let take = RUN - self.len;
            self.bytes[self.len..].copy_from_slice(&bytes[..take]);
            self.len = RUN;
            bytes = &bytes[take..];
            if !self.flush(out, true) {
                return false;
            }
        }
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Decodes the bytes; `keep_tail` keeps those of a character they end inside (else
    /// that is text to replace, as bytes that are invalid anywhere are). False for text
    /// to replace or beyond U+FFFF.
    fn flush(&mut self, out: &mut Vec<u16>, keep_tail: bool) -> bool {
        let run = &self.bytes[..self.len];
        // A CJK character cut in two (the common run): decoded directly. E0 and ED
        // leads, which bound the second byte, take the general path.
        if let [a, b, c] = *run {
            if starts_three(a) && b & 0xC0 == 0x80 && c & 0xC0 == 0x80 {
                out.push(three_byte_unit(u32::from_le_bytes([a, b, c, 0])));
                self.len = 0;
                return true;
            }
        }
        let (text, tail) = match std::str::from_utf8(run) {
            Ok(text) => (text, 0),
            Err(e) if keep_tail && e.error_len().is_none() => {
                let valid = e.valid_up_to();
                // SAFETY: `from_utf8` checked `run[..valid]`.
                (
                    unsafe { std::str::from_utf8_unchecked(&run[..valid]) },
                    run.len() - valid,
                )
            }
            Err(_) => return false,
        };
        for c in text.chars() {
            if c as u32 >= 0x10000 {
                return false;
            }
            out.push(c as u16);
        }
        self.bytes.copy_within(self.len - tail..self.len, 0);
        self.len = tail;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(tokens: &[&[u8]], ids: &[u32]) -> Option<String> {
        let slots = Ucs2Slots::build(tokens.len(), |i| Some(tokens[i]));
        let mut out = Vec::new();
        let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        slots
            .decode_into(&ids, |_| false, |i| tokens[i as usize], &mut out)
            .then(|| String::from_utf16(&out).unwrap())
    }

    /// Decodes `ids` and checks the result against `std`'s UTF-8 decoder on their bytes:
    /// text to replace, or beyond U+FFFF, must be refused.
    fn assert_like_std(slots: &Ucs2Slots, tokens: &[&[u8]], ids: &[i64], out: &mut Vec<u16>) {
        out.clear();
        let seq: Vec<u8> = ids
            .iter()
            .flat_map(|&i| tokens[i as usize].iter().copied())
            .collect();
        let ok = slots.decode_into(ids, |_| false, |i| tokens[i as usize], out);
        let want = std::str::from_utf8(&seq)
            .ok()
            .filter(|s| s.chars().all(|c| (c as u32) < 0x10000));
        assert_eq!(
            ok.then(|| String::from_utf16(out).unwrap()).as_deref(),
            want,
            "{seq:x?} as {ids:?}"
        );
    }

    #[test]
    fn whole_and_split_characters_decode_like_utf8() {
        let zhong = "中".as_bytes();
        let tokens: Vec<&[u8]> = vec![
            "你好".as_bytes(),
            b" world",
            &zhong[..1],
            &zhong[1..],
            " a rather long token of text".as_bytes(),
            b"",
            "é".as_bytes(),
            b"\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\xE4", // 16 bytes, ends mid-character
            b"\xB8\xAD",
        ];
        for ids in [
            &[0u32, 1, 2, 3, 5, 6][..],
            &[2, 3, 2, 3],
            &[5],
            &[],
            &[7, 8, 0],
            &[1, 7, 8],
        ] {
            let bytes: Vec<u8> = ids
                .iter()
                .flat_map(|&i| tokens[i as usize].iter().copied())
                .collect();
            assert_eq!(
                decode(&tokens, ids).as_deref(),
                Some(std::str::from_utf8(&bytes).unwrap()),
                "{ids:?}"
            );
        }
        // A token longer than a slot (a Latin word) leaves the line to the byte path.
        assert_eq!(decode(&tokens, &[0, 4]), None);
    }

    #[test]
    fn what_python_must_replace_is_left_to_it() {
        let zhong = "中".as_bytes();
        let emoji = "😀".as_bytes();
        let tokens: Vec<&[u8]> = vec![
            &zhong[..1],
            &zhong[1..],
            b"a",
            &[0xFF],
            &emoji[..2],
            &emoji[2..],
            b"\xED\xA0\x80",
        ];
        assert_eq!(decode(&tokens, &[0]), None); // ends inside a character
        assert_eq!(decode(&tokens, &[0, 2]), None); // a character cut short
        assert_eq!(decode(&tokens, &[1]), None); // a lone continuation byte
        assert_eq!(decode(&tokens, &[3]), None); // never valid
        assert_eq!(decode(&tokens, &[4, 5]), None); // beyond U+FFFF
        assert_eq!(decode(&tokens, &[6]), None); // a surrogate
        assert_eq!(decode(&tokens, &[0, 1, 2]).as_deref(), Some("中a"));
    }

    #[test]
    fn byte_decoder_agrees_with_std_on_every_short_sequence() {
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let refs: Vec<&[u8]> = tokens.iter().map(|t| &t[..]).collect();
        let slots = Ucs2Slots::build(256, |i| Some(refs[i]));
        let mut out = Vec::new();
        let mut check = |seq: &[u8]| {
            let ids: Vec<i64> = seq.iter().map(|&b| i64::from(b)).collect();
            assert_like_std(&slots, &refs, &ids, &mut out);
        };
        for a in 0..=255u8 {
            check(&[a]);
            for b in 0..=255u8 {
                check(&[a, b]);
                if a >= 0xE0 {
                    for c in 0..=255u8 {
                        check(&[a, b, c]);
                    }
                }
            }
        }
    }

    /// Byte tokens of one and two bytes in every split of a short sequence (the pending
    /// path for characters cut in two, and what it leaves to the general path), against
    /// `std`'s UTF-8 decoder.
    #[test]
    fn one_and_two_byte_tokens_in_every_split_decode_like_utf8() {
        let edges: &[u8] = &[
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xAD, 0xB8, 0xBF, 0xC0, 0xC2, 0xDF,
            0xE0, 0xE1, 0xE4, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF4, 0xFF,
        ];
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut pair_id = std::collections::HashMap::new();
        for &a in edges {
            for &b in edges {
                pair_id.insert((a, b), tokens.len() as i64);
                tokens.push(vec![a, b]);
            }
        }
        let refs: Vec<&[u8]> = tokens.iter().map(|t| &t[..]).collect();
        let slots = Ucs2Slots::build(refs.len(), |i| Some(refs[i]));
        let mut out = Vec::new();
        let mut check = |ids: &[i64]| assert_like_std(&slots, &refs, ids, &mut out);
        let zhong = ["中".as_bytes()[0], "中".as_bytes()[1], "中".as_bytes()[2]];
        for &a in edges {
            for &b in edges {
                let ab = pair_id[&(a, b)];
                for &c in edges {
                    let bc = pair_id[&(b, c)];
                    check(&[ab, i64::from(c)]);
                    check(&[i64::from(a), bc]);
                    // After a whole character, and followed by one.
                    check(&[
                        pair_id[&(zhong[0], zhong[1])],
                        i64::from(zhong[2]),
                        ab,
                        i64::from(c),
                    ]);
                    check(&[
                        i64::from(a),
                        bc,
                        i64::from(zhong[0]),
                        pair_id[&(zhong[1], zhong[2])],
                    ]);
                    for &d in edges {
                        check(&[ab, pair_id[&(c, d)]]);
                    }
                }
            }
        }
    }

    #[test]
    fn wide_slots_and_skipped_byte_tokens() {
        let zhong = "中".as_bytes();
        let tokens: Vec<&[u8]> = vec![
            "一二三".as_bytes(),                                 // narrow: three units
            "一二三四".as_bytes(),                               // wide: four
            " seven!".as_bytes(),                                // wide: seven
            &zhong[..1],                                         // narrow: one byte
            &zhong[1..],                                         // narrow: two bytes
            b"\xB8\xAD\xE4\xB8\xAD\xE4", // narrow: six bytes, ends mid-character
            b"\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\xE4\xB8\xAD\xE4", // wide: 12 bytes
            b"\xB8\xAD",
        ];
        let slots = Ucs2Slots::build(tokens.len(), |i| Some(tokens[i]));
        assert_eq!(slots.wide.len(), 3);
        let decode = |ids: &[i64], skip: &dyn Fn(u32) -> bool| {
            let mut out = Vec::new();
            slots
                .decode_into(ids, skip, |i| tokens[i as usize], &mut out)
                .then(|| String::from_utf16(&out).unwrap())
        };
        let none = |_: u32| false;
        assert_eq!(
            decode(&[1, 2, 0], &none).as_deref(),
            Some("一二三四 seven!一二三")
        );
        assert_eq!(decode(&[3, 4, 1], &none).as_deref(), Some("中一二三四"));
        assert_eq!(
            decode(&[3, 5, 6, 7, 2], &none).as_deref(),
            Some("中中中中中中中 seven!")
        );
        // A skipped token between the two halves of a character does not cut it.
        assert_eq!(decode(&[3, 2, 4], &|i| i == 2).as_deref(), Some("中"));
        assert_eq!(decode(&[3, 0, 4], &|i| i == 0).as_deref(), Some("中"));
        // Half a character before whole text, or at the end: text to replace.
        assert_eq!(decode(&[3, 1], &none), None);
        assert_eq!(decode(&[0, 3], &none), None);
    }

    #[test]
    fn long_runs_of_byte_tokens_decode_across_the_run_buffer() {
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let refs: Vec<&[u8]> = tokens.iter().map(|t| &t[..]).collect();
        // 1- to 3-byte characters, every byte its own token: 100+ bytes cross the
        // 64-byte run at every offset.
        let text: String = "中a文é字".repeat(30);
        let ids: Vec<u32> = text.bytes().map(u32::from).collect();
        for cut in 0..8 {
            let ids = &ids[..ids.len() - cut];
            let want = std::str::from_utf8(&text.as_bytes()[..ids.len()]).ok();
            assert_eq!(decode(&refs, ids).as_deref(), want, "cut {cut}");
        }
    }

    #[test]
    fn absent_negative_and_skipped_ids() {
        let slots = Ucs2Slots::build(3, |i| (i != 1).then_some(&b"xy"[..]));
        let mut out = Vec::new();
        assert!(slots.decode_into(&[0, 2], |_| false, |_| b"", &mut out));
        assert_eq!(out, [120, 121, 120, 121]);
        for bad in [&[0i64, 1][..], &[3], &[-1]] {
            assert!(
                !slots.decode_into(bad, |_| false, |_| b"", &mut Vec::new()),
                "{bad:?}"
            );
        }
        out.clear();
        assert!(slots.decode_into(&[0, 2, 0], |i| i == 2, |_| b"", &mut out));
        assert_eq!(out, [120, 121, 120, 121]);
    }
}
