//! The text stages in front of the BPE model: the normalizer and the pre-tokenizer.
//!
//! * [`Normalizer`]: Unicode normal forms (NFC is what Qwen2 uses), lowercase, or a
//!   sequence of them. Text that is already normalized is borrowed, not copied.
//! * [`PreTokenizer`]: HF's `Split(Regex, Isolated)` and `ByteLevel` stages, applied in
//!   order, each refining the pieces of the one before; BPE never merges across pieces.

use std::borrow::Cow;
use std::ops::Range;

use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::error::Result;
use crate::tokenizer::pretokenize::Splitter;

/// GPT-2's pattern, used by HF's `ByteLevel` pre-tokenizer when `use_regex` is true.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalizer {
    Nfc,
    Nfd,
    Nfkc,
    Nfkd,
    Lowercase,
    Sequence(Vec<Normalizer>),
}

/// Characters that are NFC quick-check "yes" with combining class 0, so a text of only
/// these is NFC: below U+0300, CJK symbols and punctuation (but U+302A..U+302F, which
/// combine), CJK unified ideographs, full-width ASCII. Checked per character in a few
/// compares, this answers Chinese text without the quick check's table lookups (which
/// were ~7% of Qwen2's encoding time); any other character takes the full quick check.
/// `nfc_plain_ranges_are_nfc` checks every code point of the ranges.
#[inline]
pub fn plain_nfc(c: char) -> bool {
    matches!(c as u32, 0..=0x2ff | 0x3000..=0x3029 | 0x3030..=0x303f | 0x4e00..=0x9fff | 0xff01..=0xff5e)
}

impl Normalizer {
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self {
            Normalizer::Nfc if text.chars().all(plain_nfc) => Cow::Borrowed(text),
            Normalizer::Nfc if is_nfc_quick(text.chars()) == IsNormalized::Yes => {
                Cow::Borrowed(text)
            }
            Normalizer::Nfc => Cow::Owned(text.nfc().collect()),
            Normalizer::Nfkc if is_nfkc_quick(text.chars()) == IsNormalized::Yes => {
                Cow::Borrowed(text)
            }
            Normalizer::Nfkc => Cow::Owned(text.nfkc().collect()),
            Normalizer::Nfd => Cow::Owned(text.nfd().collect()),
            Normalizer::Nfkd => Cow::Owned(text.nfkd().collect()),
            Normalizer::Lowercase => Cow::Owned(text.to_lowercase()),
            Normalizer::Sequence(steps) => {
                let mut cur = Cow::Borrowed(text);
                for s in steps {
                    if let Cow::Owned(next) = s.apply(&cur) {
                        cur = Cow::Owned(next);
                    }
                }
                cur
            }
        }
    }

    /// The HF `tokenizer.json` spelling.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Normalizer::Nfc => json!({"type": "NFC"}),
            Normalizer::Nfd => json!({"type": "NFD"}),
            Normalizer::Nfkc => json!({"type": "NFKC"}),
            Normalizer::Nfkd => json!({"type": "NFKD"}),
            Normalizer::Lowercase => json!({"type": "Lowercase"}),
            Normalizer::Sequence(s) => {
                json!({"type": "Sequence", "normalizers": s.iter().map(|n| n.to_json()).collect::<Vec<_>>()})
            }
        }
    }
}

/// Pre-tokenization: optional prefix space, then each splitter in turn.
#[derive(Debug, Clone)]
pub struct PreTokenizer {
    /// ByteLevel's `add_prefix_space`: a span that does not start with a space gets one.
    pub add_prefix_space: bool,
    /// Splitters in order; later ones split the pieces of earlier ones.
    pub splitters: Vec<Splitter>,
    /// Whether the ByteLevel stage splits with GPT-2's pattern (its last splitter then).
    pub byte_level_regex: bool,
}

impl PreTokenizer {
    /// Appends the pieces of `text` (byte ranges into `text`) to `out`; `scratch` is reused.
    pub fn split(
        &self,
        text: &str,
        out: &mut Vec<Range<usize>>,
        scratch: &mut Vec<Range<usize>>,
    ) -> Result<()> {
        let Some((first, rest)) = self.splitters.split_first() else {
            if !text.is_empty() {
                out.push(0..text.len());
            }
            return Ok(());
        };
        if rest.is_empty() {
            return first.split(text, out);
        }
        let base = out.len();
        first.split(text, out)?;
        for s in rest {
            scratch.clear();
            for r in out.drain(base..) {
                let before = scratch.len();
                s.split(&text[r.clone()], scratch)?;
                for p in &mut scratch[before..] {
                    *p = p.start + r.start..p.end + r.start;
                }
            }
            out.append(scratch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use unicode_normalization::char::canonical_combining_class;
    use unicode_normalization::{is_nfc_quick, IsNormalized};

    #[test]
    fn nfc_plain_ranges_are_nfc() {
        let plain: Vec<char> = (0..=0x10ffffu32)
            .filter_map(char::from_u32)
            .filter(|&c| super::plain_nfc(c))
            .collect();
        assert!(plain.len() > 20_000);
        for c in plain {
            assert_eq!(is_nfc_quick(std::iter::once(c)), IsNormalized::Yes, "{c:?}");
            assert_eq!(canonical_combining_class(c), 0, "{c:?}");
        }
    }
}
