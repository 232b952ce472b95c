//! The general pre-tokenizer: any pattern, run with `fancy-regex` (it supports the
//! look-arounds such as `\s+(?!\S)` that the GPT-2 family of patterns use).

use std::ops::Range;

use crate::error::{HanpackError, Result};

#[derive(Debug, Clone)]
pub struct RegexSplitter {
    pattern: String,
    regex: fancy_regex::Regex,
}

impl RegexSplitter {
    pub fn new(pattern: &str) -> Result<Self> {
        // Backtracking is bounded per match by fancy-regex's limit; the patterns in use
        // only look ahead one character, so the limit is never reached on real text.
        let regex = fancy_regex::Regex::new(pattern).map_err(|e| {
            HanpackError::InvalidArgument(format!(
                "pre-tokenizer pattern {pattern:?} does not compile: {e}"
            ))
        })?;
        Ok(Self {
            pattern: pattern.to_owned(),
            regex,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Matches and the gaps between them, in order, covering `text`.
    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>) -> Result<()> {
        let mut last = 0;
        for m in self.regex.find_iter(text) {
            let m = m.map_err(|e| {
                HanpackError::InvalidArgument(format!(
                    "pre-tokenizer pattern {:?} failed on input: {e}",
                    self.pattern
                ))
            })?;
            if m.start() == m.end() {
                continue; // HF drops empty matches
            }
            if m.start() > last {
                out.push(last..m.start());
            }
            out.push(m.start()..m.end());
            last = m.end();
        }
        if last < text.len() {
            out.push(last..text.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_pattern_covers_text() {
        let p = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
        let s = RegexSplitter::new(p).unwrap();
        let text = "Hello  world's 中文123!!  ";
        let mut out = Vec::new();
        s.split(text, &mut out).unwrap();
        let pieces: Vec<&str> = out.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(
            pieces,
            ["Hello", " ", " world", "'s", " 中文", "123", "!!", "  "]
        );
    }
}
