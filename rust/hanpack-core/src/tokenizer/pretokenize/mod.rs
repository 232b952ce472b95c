//! Pre-tokenization for byte-level BPE: split text into the pieces that BPE merges
//! within (never across), exactly as the tokenizer's regex would.
//!
//! Contract: [`Splitter::split`] appends the byte ranges of `text`'s pieces, in order,
//! covering the whole text (matches of the pattern and, like HF's `Split` with
//! `Isolated` behaviour, any unmatched gaps between them). Known patterns (LLaMA-3,
//! Qwen2, GPT-2, cl100k, ...) may get hand-written lexers that give exactly the regex's
//! splits; any other pattern runs on the general regex engine ([`regex_fallback`]).

pub mod regex_fallback;

use std::ops::Range;

use crate::error::Result;
use regex_fallback::RegexSplitter;

/// A compiled pre-tokenizer pattern.
#[derive(Debug, Clone)]
pub enum Splitter {
    /// Any pattern, on the general regex engine (same results as the lexers, slower).
    Regex(RegexSplitter),
}

impl Splitter {
    /// Compiles `pattern` (HF / tiktoken regex syntax).
    pub fn new(pattern: &str) -> Result<Self> {
        Ok(Splitter::Regex(RegexSplitter::new(pattern)?))
    }

    /// The pattern this splitter implements.
    pub fn pattern(&self) -> &str {
        match self {
            Splitter::Regex(r) => r.pattern(),
        }
    }

    /// Appends the byte ranges of `text`'s pieces to `out` (see the module contract).
    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>) -> Result<()> {
        match self {
            Splitter::Regex(r) => r.split(text, out),
        }
    }
}
