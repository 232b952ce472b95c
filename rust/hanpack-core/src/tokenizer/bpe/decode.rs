//! Decoding: ids → the bytes of their tokens → UTF-8 text.
//!
//! Invalid UTF-8 (a character split across ids, or a lone byte token) becomes U+FFFD per
//! maximal invalid subsequence. HF's ByteLevel decoder uses Rust's `from_utf8_lossy` and
//! tiktoken's `decode` uses Python's `errors="replace"`; both follow the Unicode
//! "maximal subpart" practice, so one rule matches both.

use super::BpeTokenizer;
use crate::error::{HanpackError, Result};

impl BpeTokenizer {
    /// Appends the bytes of `ids` to `out`; special tokens are left out when `skip_special`.
    pub fn decode_bytes_into(
        &self,
        ids: &[i64],
        skip_special: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.reserve(ids.len() * 3);
        // One slot per id, all over a table of megabytes: requested first, the loads
        // overlap (English text, where lines take this path: see `ucs2`).
        for &id in ids {
            self.vocab.prefetch_bytes(id as u32);
        }
        for &id in ids {
            // A negative or too large id fails the conversion or the lookup alike.
            let known = u32::try_from(id).is_ok_and(|i| {
                if skip_special && self.is_special(i) {
                    self.vocab.bytes_of(i).is_some()
                } else {
                    self.vocab.append_bytes(i, out)
                }
            });
            if !known {
                return Err(HanpackError::IdOutOfRange {
                    id,
                    vocab_size: self.vocab_size(),
                });
            }
        }
        Ok(())
    }

    /// Appends the text of `ids` as UTF-16 units (all below U+10000) to `out`; `false`
    /// when that is not possible here (text that needs U+FFFD or a character beyond
    /// U+FFFF, or an unknown id): the caller then uses [`Self::decode_bytes_into`], which
    /// also reports unknown ids. `out` then holds a partial result.
    pub fn decode_ucs2_into(&self, ids: &[i64], skip_special: bool, out: &mut Vec<u16>) -> bool {
        self.ucs2.decode_into(
            ids,
            |i| skip_special && self.is_special(i),
            |i| self.vocab.bytes_of(i).unwrap_or(&[]),
            out,
        )
    }

    pub fn decode_bytes(&self, ids: &[i64], skip_special: bool) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_bytes_into(ids, skip_special, &mut out)?;
        Ok(out)
    }

    /// The text of `ids` (lossy UTF-8).
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let bytes = self.decode_bytes(ids, skip_special)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Appends the text of `ids` to `out` (for batches that share one buffer): the bytes
    /// go straight into `out` and only they are checked, so valid text is copied once.
    pub fn decode_into(&self, ids: &[i64], skip_special: bool, out: &mut String) -> Result<()> {
        let start = out.len();
        // SAFETY: `out` is valid UTF-8 up to `start`; the bytes appended after it are
        // either valid UTF-8 (checked below) or removed again before returning.
        let buf = unsafe { out.as_mut_vec() };
        let decoded = self.decode_bytes_into(ids, skip_special, buf);
        if decoded.is_err() || std::str::from_utf8(&buf[start..]).is_err() {
            let tail = buf.split_off(start);
            decoded?;
            out.push_str(&String::from_utf8_lossy(&tail));
        }
        Ok(())
    }
}
