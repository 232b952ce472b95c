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
        let mut buf = std::mem::take(out).into_bytes();
        self.normalize_bytes(matcher, input.as_bytes(), &mut buf);
        *out = match String::from_utf8(buf) {
            Ok(s) => s,
            // Only a corrupt charsmap can produce invalid UTF-8; keep going, lossily.
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
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
            let space: &[u8] = if self.escape_whitespaces { SPACE_SYMBOL.as_bytes() } else { b" " };
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            self.push_space(out);
        }
    }
}
