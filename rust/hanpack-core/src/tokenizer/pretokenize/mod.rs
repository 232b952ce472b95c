//! Pre-tokenization for byte-level BPE: split text into the pieces that BPE merges
//! within (never across), exactly as the tokenizer's regex would.
//!
//! Contract: [`Splitter::split`] appends the byte ranges of `text`'s pieces, in order,
//! covering the whole text (matches of the pattern and, like HF's `Split` with
//! `Isolated` behaviour, any unmatched gaps between them). Known patterns (LLaMA-3,
//! Qwen2, cl100k, GPT-2; see [`known`]) get hand-written lexers ([`llama3`], [`gpt2`])
//! that give exactly the regex's splits, tested against it; any other pattern runs on
//! the general regex engine ([`regex_fallback`]).
//!
//! Engine parity (checked with `examples/pretokenize_dump.rs` from Python): on the
//! shared corpora and seeded random strings, fancy-regex (tiktoken), HF tokenizers'
//! Oniguruma (tokenizers 0.23.3) and Python `regex` 2026.5.9 give identical splits for
//! every known pattern, `(?i)` folds ('ſ' ~ 's', KELVIN SIGN ~ 'k') included. The one
//! disagreement is the Unicode version: Python `regex` knows Unicode 17, while
//! regex-syntax 0.8 and this Oniguruma agree with each other on every code point
//! (Unicode 16), so the 4,657 code points assigned in Unicode 17 (e.g. U+088F, U+10940)
//! are `\p{L}`/`\p{N}` for Python `regex` only: LLaMA-3 splits "a\u{88F}b" as
//! ["a", "\u{88F}b"] here and in Oniguruma, ["a\u{88F}b"] in Python `regex`.

pub mod classify;
pub mod gpt2;
pub mod known;
pub mod llama3;
pub mod regex_fallback;
mod scan;
#[cfg(test)]
mod tests;

use std::ops::Range;

use crate::error::Result;
use gpt2::Gpt2Lexer;
use known::{KnownPattern, LexerSpec};
use llama3::Llama3Lexer;
use regex_fallback::RegexSplitter;

/// A compiled pre-tokenizer pattern.
#[derive(Debug, Clone)]
pub enum Splitter {
    /// Any pattern, on the general regex engine (same results as the lexers, slower).
    Regex(RegexSplitter),
    /// A known pattern of the cl100k family (LLaMA-3, Qwen2, cl100k).
    Llama3(&'static KnownPattern, Llama3Lexer),
    /// A known pattern of the GPT-2 family.
    Gpt2(&'static KnownPattern, Gpt2Lexer),
}

impl Splitter {
    /// Compiles `pattern` (HF / tiktoken regex syntax). A pattern equal to a known one
    /// gets its hand-written lexer; any other, the regex engine.
    pub fn new(pattern: &str) -> Result<Self> {
        match known::lookup(pattern) {
            Some(k) => Self::with_lexer(k),
            None => Self::regex(pattern),
        }
    }

    /// `pattern` on the regex engine even if a lexer exists (the reference for tests
    /// and benchmarks).
    pub fn regex(pattern: &str) -> Result<Self> {
        Ok(Splitter::Regex(RegexSplitter::new(pattern)?))
    }

    fn with_lexer(k: &'static KnownPattern) -> Result<Self> {
        let tables = classify::tables()?;
        Ok(match k.lexer {
            LexerSpec::Llama3 {
                max_digits,
                space_to_end_first,
            } => Splitter::Llama3(k, Llama3Lexer::new(tables, max_digits, space_to_end_first)),
            LexerSpec::Gpt2 => Splitter::Gpt2(k, Gpt2Lexer::new(tables)),
        })
    }

    /// The pattern this splitter implements.
    pub fn pattern(&self) -> &str {
        match self {
            Splitter::Regex(r) => r.pattern(),
            Splitter::Llama3(k, _) | Splitter::Gpt2(k, _) => k.pattern,
        }
    }

    /// Which implementation runs: `"regex"`, or the known pattern's name (`"llama3"`,
    /// `"qwen2"`, `"cl100k"`, `"gpt2"`, `"r50k"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Splitter::Regex(_) => "regex",
            Splitter::Llama3(k, _) | Splitter::Gpt2(k, _) => k.name,
        }
    }

    /// Appends the byte ranges of `text`'s pieces to `out` (see the module contract).
    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>) -> Result<()> {
        match self {
            Splitter::Regex(r) => r.split(text, out),
            Splitter::Llama3(_, l) => {
                l.split(text, out);
                Ok(())
            }
            Splitter::Gpt2(_, l) => {
                l.split(text, out);
                Ok(())
            }
        }
    }
}
