//! GPT-2's byte-level alphabet: every byte is shown as one printable character so that
//! vocabularies can be stored as JSON strings (`Ġ` is the space byte, `Ċ` the newline).
//!
//! Printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand for themselves; the other
//! 68 bytes are mapped, in byte order, to U+0100, U+0101, ... This is the table of
//! `bytes_to_unicode()` in GPT-2's encoder.py, which HF tokenizers and llama.cpp copy.

/// `CHARS[b]` is the character that stands for byte `b`.
pub static CHARS: [char; 256] = build_chars();

const fn is_printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

const fn build_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        if is_printable(b as u8) {
            out[b] = b as u8 as char;
        } else {
            // Unprintable bytes take the code points after U+00FF, in byte order.
            out[b] = match char::from_u32(256 + n) {
                Some(c) => c,
                None => '\0',
            };
            n += 1;
        }
        b += 1;
    }
    out
}

/// The byte that `c` stands for, if `c` is in the alphabet.
#[inline]
pub fn char_to_byte(c: char) -> Option<u8> {
    let u = c as u32;
    if u < 256 {
        let b = u as u8;
        return is_printable(b).then_some(b);
    }
    if (256..256 + 68).contains(&u) {
        // The n-th unprintable byte; count them in order (68 entries, only at load time).
        let n = u - 256;
        return (0..=255u8).filter(|&b| !is_printable(b)).nth(n as usize);
    }
    None
}

/// The bytes a byte-level string stands for; `None` if a character is outside the alphabet.
pub fn decode_str(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// The byte-level string of `bytes`.
pub fn encode_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| CHARS[b as usize]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_bytes() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(CHARS[b as usize]), Some(b));
        }
        assert_eq!(CHARS[b' ' as usize], 'Ġ');
        assert_eq!(CHARS[b'\n' as usize], 'Ċ');
        assert_eq!(decode_str("Ġhi"), Some(b" hi".to_vec()));
        assert_eq!(decode_str("中"), None);
    }
}
