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
    pub fn decode_bytes_into(&self, ids: &[i64], skip_special: bool, out: &mut Vec<u8>) -> Result<()> {
        for &id in ids {
            let bytes = u32::try_from(id)
                .ok()
                .and_then(|i| self.vocab.bytes_of(i).map(|b| (i, b)))
                .ok_or(HanpackError::IdOutOfRange { id, vocab_size: self.vocab_size() })?;
            if skip_special && self.is_special(bytes.0) {
                continue;
            }
            out.extend_from_slice(bytes.1);
        }
        Ok(())
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

    /// Appends the text of `ids` to `out` (for batches that share one buffer).
    pub fn decode_into(&self, ids: &[i64], skip_special: bool, out: &mut String) -> Result<()> {
        out.push_str(&self.decode(ids, skip_special)?);
        Ok(())
    }
}
