//! UTF-8 helpers that follow sentencepiece's `string_util` rules.
//!
//! sentencepiece decodes one character at a time and, on a malformed sequence, consumes
//! exactly one byte and emits U+FFFD. Rust's validity rules (no overlongs, no surrogates,
//! nothing above U+10FFFF) are the same as its `IsValidCodepoint` checks, so
//! `std::str::from_utf8` finds the valid runs and only the resync differs.

pub const REPLACEMENT: &str = "\u{FFFD}";

/// Length of the character starting with `lead`, from the lead byte alone
/// (sentencepiece's `OneCharLen`: continuation and invalid bytes count as 1).
#[inline]
pub fn one_char_len(lead: u8) -> usize {
    const TABLE: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    TABLE[(lead >> 4) as usize] as usize
}

/// Appends `bytes` decoded as sentencepiece does, to `out`.
///
/// With `final_chunk == false`, a trailing sequence that is a valid prefix of a character
/// is left undecoded; the number of bytes consumed is returned so the caller can keep the
/// rest for later (streaming decode).
pub fn decode_lossy_into(bytes: &[u8], final_chunk: bool, out: &mut String) -> usize {
    let mut pos = 0;
    while pos < bytes.len() {
        match std::str::from_utf8(&bytes[pos..]) {
            Ok(s) => {
                out.push_str(s);
                return bytes.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                // SAFETY-free: from_utf8 just validated this prefix.
                out.push_str(std::str::from_utf8(&bytes[pos..pos + good]).unwrap_or_default());
                pos += good;
                if e.error_len().is_none() && !final_chunk {
                    // An incomplete character at the end: wait for more bytes.
                    return pos;
                }
                out.push_str(REPLACEMENT);
                pos += 1;
            }
        }
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replacement_per_bad_byte() {
        let mut s = String::new();
        // E4 B8 is a truncated 3-byte char followed by 'a': sentencepiece gives 2 x U+FFFD.
        decode_lossy_into(&[0xE4, 0xB8, b'a'], true, &mut s);
        assert_eq!(s, "\u{FFFD}\u{FFFD}a");
    }

    #[test]
    fn streaming_waits_for_incomplete_tail() {
        let mut s = String::new();
        let used = decode_lossy_into(&[b'x', 0xE4, 0xB8], false, &mut s);
        assert_eq!((used, s.as_str()), (1, "x"));
        let used = decode_lossy_into(&[0xE4, 0xB8, 0xAD], false, &mut s);
        assert_eq!((used, s.as_str()), (3, "x中"));
    }

    #[test]
    fn surrogates_and_overlongs_are_invalid() {
        let mut s = String::new();
        decode_lossy_into(&[0xED, 0xA0, 0x80, 0xC0, 0x80], true, &mut s);
        assert_eq!(s.chars().filter(|&c| c == '\u{FFFD}').count(), 5);
    }
}
