//! The pattern strings that have hand-written lexers, byte for byte as tokenizer files
//! store them. [`super::Splitter::new`] compares strings exactly: a pattern that differs
//! in any way (even an equivalent rewrite) runs on the regex engine instead.

/// Which lexer serves a known pattern, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LexerSpec {
    /// [`super::llama3::Llama3Lexer`].
    Llama3 {
        max_digits: usize,
        space_to_end_first: bool,
    },
    /// [`super::gpt2::Gpt2Lexer`].
    Gpt2,
}

/// A pattern with a lexer.
#[derive(Debug, Clone, Copy)]
pub struct KnownPattern {
    /// Short name, returned by [`super::Splitter::kind`].
    pub name: &'static str,
    pub pattern: &'static str,
    pub lexer: LexerSpec,
}

/// LLaMA-3's `tokenizer.json` Split regex; also tiktoken's first cl100k_base pattern.
pub const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 / Qwen2.5 `tokenizer.json`: LLaMA-3's with single digits.
pub const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// tiktoken's current cl100k_base (possessive quantifiers, `\s++$`).
pub const CL100K: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
/// GPT-2, as HF's `ByteLevel` pre-tokenizer and GPT-2 family `tokenizer.json` files have it.
pub const GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// tiktoken's current gpt2 / r50k_base / p50k_base (same pieces as [`GPT2`]).
pub const R50K: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

pub const KNOWN_PATTERNS: &[KnownPattern] = &[
    KnownPattern {
        name: "llama3",
        pattern: LLAMA3,
        lexer: LexerSpec::Llama3 {
            max_digits: 3,
            space_to_end_first: false,
        },
    },
    KnownPattern {
        name: "qwen2",
        pattern: QWEN2,
        lexer: LexerSpec::Llama3 {
            max_digits: 1,
            space_to_end_first: false,
        },
    },
    KnownPattern {
        name: "cl100k",
        pattern: CL100K,
        lexer: LexerSpec::Llama3 {
            max_digits: 3,
            space_to_end_first: true,
        },
    },
    KnownPattern {
        name: "gpt2",
        pattern: GPT2,
        lexer: LexerSpec::Gpt2,
    },
    KnownPattern {
        name: "r50k",
        pattern: R50K,
        lexer: LexerSpec::Gpt2,
    },
];

/// The known pattern equal to `pattern`, if any.
pub fn lookup(pattern: &str) -> Option<&'static KnownPattern> {
    KNOWN_PATTERNS.iter().find(|k| k.pattern == pattern)
}
