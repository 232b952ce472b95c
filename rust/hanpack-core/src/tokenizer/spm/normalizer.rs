//! Normalization exactly as sentencepiece's `normalizer.cc` does it.
//!
//! Per position: a USER_DEFINED symbol is copied as is; otherwise the longest rule of the
//! precompiled charsmap (a Darts trie mapping UTF-8 prefixes to NUL-terminated
//! replacements) is applied; otherwise one character is copied. Around that:
//! `remove_extra_whitespaces` drops leading/trailing spaces and collapses runs,
//! `add_dummy_prefix` puts one space first (or last with `treat_whitespace_as_suffix`),
//! `escape_whitespaces` writes U+2581 for every space.

use super::prefix_matcher::PrefixMatcher;
use crate::tokenizer::darts::DoubleArray;
use crate::tokenizer::utf8::one_char_len;

pub const SPACE_SYMBOL: &str = "\u{2581}";

/// The decoded `precompiled_charsmap`.
#[derive(Clone, Debug)]
pub struct CharsMap {
    trie: DoubleArray,
    replacements: Vec<u8>,
}

impl CharsMap {
    /// Parses `<u32 LE trie size><trie><replacements>`; the error says what is wrong.
    pub fn parse(blob: &[u8]) -> Result<Self, String> {
        if blob.len() <= 4 {
            return Err("precompiled_charsmap is too short".into());
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if trie_size >= blob.len() {
            return Err(format!(
                "precompiled_charsmap declares a {trie_size}-byte trie but holds only {} bytes",
                blob.len()
            ));
        }
        let body = &blob[4..];
        if trie_size > body.len() {
            return Err("precompiled_charsmap trie exceeds the blob".into());
        }
        Ok(Self {
            trie: DoubleArray::from_le_bytes(&body[..trie_size]),
            replacements: body[trie_size..].to_vec(),
        })
    }

    /// The blob `parse` read, byte for byte.
    pub fn to_blob(&self) -> Vec<u8> {
        let trie = self.trie.to_le_bytes();
        let mut out = Vec::with_capacity(4 + trie.len() + self.replacements.len());
        out.extend_from_slice(&(trie.len() as u32).to_le_bytes());
        out.extend_from_slice(&trie);
        out.extend_from_slice(&self.replacements);
        out
    }

    pub fn heap_bytes(&self) -> usize {
        self.trie.heap_bytes() + self.replacements.capacity()
    }

    /// The longest rule at the start of `input`: (bytes consumed, replacement).
    #[inline]
    fn apply<'a>(&'a self, input: &[u8]) -> Option<(usize, &'a [u8])> {
        let (len, value) = self.trie.longest_prefix(input)?;
        let start = (value as usize).min(self.replacements.len());
        let tail = &self.replacements[start..];
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Some((len, &tail[..end]))
    }
}

#[derive(Clone, Debug)]
pub struct Normalizer {
    pub(crate) charsmap: Option<CharsMap>,
    pub(crate) add_dummy_prefix: bool,
    pub(crate) remove_extra_whitespaces: bool,
    pub(crate) escape_whitespaces: bool,
    pub(crate) treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    /// One normalization step at the start of `input` (non-empty):
    /// (normalized bytes, input bytes consumed). sentencepiece's `NormalizePrefix`.
    #[inline]
    fn prefix<'a>(&'a self, matcher: Option<&PrefixMatcher>, input: &'a [u8]) -> (&'a [u8], usize) {
        if let Some(len) = matcher.and_then(|m| m.longest(input)) {
            return (&input[..len], len);
        }
        if let Some((len, rep)) = self.charsmap.as_ref().and_then(|c| c.apply(input)) {
            return (rep, len);
        }
        let len = one_char_len(input[0]).min(input.len());
        (&input[..len], len)
    }

    fn push_space(&self, out: &mut Vec<u8>) {
        if self.escape_whitespaces {
            out.extend_from_slice(SPACE_SYMBOL.as_bytes());
        } else {
            out.push(b' ');
        }
    }

    /// Normalizes `input` into `out` (cleared first). `matcher` is the user-defined
    /// symbol matcher (none for the denormalizer).
    pub fn normalize(&self, matcher: Option<&PrefixMatcher>, input: &str, out: &mut String) {
        out.clear();
        if self.charsmap.is_none() && matcher.is_none() {
            self.normalize_plain(input, out);
            return;
        }
        let mut buf = std::mem::take(out).into_bytes();
        self.normalize_bytes(matcher, input.as_bytes(), &mut buf);
        *out = match String::from_utf8(buf) {
            Ok(s) => s,
            // Only a corrupt charsmap can produce invalid UTF-8; keep going, lossily.
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
    }

    /// The same rules without a charsmap or user-defined symbols, where every step is one
    /// character copied as is: whole runs between spaces are copied at once (the
    /// per-character path spent most of its time in small copies; measured ~3x faster).
    fn normalize_plain(&self, input: &str, out: &mut String) {
        let space = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            " "
        };
        let mut text = input;
        if self.remove_extra_whitespaces {
            text = text.trim_start_matches(' ');
        }
        if text.is_empty() {
            return;
        }
        out.reserve(text.len() + text.len() / 2 + 3);
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.push_str(space);
        }
        // memchr's SIMD search for the spaces (str::split's char searcher was ~5% of
        // encoding Chinese lines, which mostly have none).
        let mut start = 0;
        let mut words = memchr::memchr_iter(b' ', text.as_bytes())
            .chain(std::iter::once(text.len()))
            .map(|end| {
                let word = &text[start..end];
                start = end + 1;
                word
            });
        if let Some(first) = words.next() {
            out.push_str(first);
        }
        for word in words {
            // With remove_extra_whitespaces, runs collapse to one space (an empty word is
            // a repeated space) and trailing spaces go (below).
            if self.remove_extra_whitespaces && word.is_empty() {
                continue;
            }
            out.push_str(space);
            out.push_str(word);
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.push_str(space);
        }
    }

    fn normalize_bytes(&self, matcher: Option<&PrefixMatcher>, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        if rest.is_empty() {
            return;
        }
        if self.remove_extra_whitespaces {
            while !rest.is_empty() {
                let (rep, used) = self.prefix(matcher, rest);
                if rep != b" " {
                    break;
                }
                rest = &rest[used..];
            }
        }
        if rest.is_empty() {
            return;
        }
        out.reserve(rest.len() * 3 / 2 + 3);
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(out);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !rest.is_empty() {
            let (mut sp, used) = self.prefix(matcher, rest);
            while is_prev_space && sp.first() == Some(&b' ') {
                sp = &sp[1..];
            }
            if !sp.is_empty() {
                if self.escape_whitespaces && sp.contains(&b' ') {
                    for &b in sp {
                        if b == b' ' {
                            out.extend_from_slice(SPACE_SYMBOL.as_bytes());
                        } else {
                            out.push(b);
                        }
                    }
                } else {
                    out.extend_from_slice(sp);
                }
                is_prev_space = sp.last() == Some(&b' ');
            }
            rest = &rest[used..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            let space: &[u8] = if self.escape_whitespaces {
                SPACE_SYMBOL.as_bytes()
            } else {
                b" "
            };
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run-copying fast path must equal the per-character reference path.
    #[test]
    fn plain_path_equals_reference_path() {
        let inputs = [
            "",
            " ",
            "   ",
            "a",
            " a",
            "a ",
            "  a  b   c  ",
            "中 文",
            "x\u{2581} ",
            "\u{2581}a",
            "a\tb  \n c",
            " \u{3000} ",
        ];
        for add in [false, true] {
            for remove in [false, true] {
                for escape in [false, true] {
                    for suffix in [false, true] {
                        let n = Normalizer {
                            charsmap: None,
                            add_dummy_prefix: add,
                            remove_extra_whitespaces: remove,
                            escape_whitespaces: escape,
                            treat_whitespace_as_suffix: suffix,
                        };
                        for input in inputs {
                            let mut fast = String::new();
                            n.normalize(None, input, &mut fast);
                            let mut reference = Vec::new();
                            n.normalize_bytes(None, input.as_bytes(), &mut reference);
                            assert_eq!(fast.as_bytes(), &reference[..], "{input:?} add={add} remove={remove} escape={escape} suffix={suffix}");
                        }
                    }
                }
            }
        }
    }
}
