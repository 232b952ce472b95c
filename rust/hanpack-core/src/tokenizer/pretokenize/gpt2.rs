//! Lexer for the GPT-2 pattern (HF `ByteLevel`, tiktoken's gpt2 / r50k / p50k).
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d        (case-sensitive)
//!  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
//! \s+(?!\S) | \s+                (tiktoken: \s++$ | \s+(?!\S) | \s, the same pieces)
//! ```
//! Per class of the char `c` at the position (L/N/S/O as in [`super::classify::Cat`]):
//! - `'` followed by a lowercase contraction: the contraction.
//! - L, N or O: the run of that class (an O run swallows a `'` that starts no
//!   contraction, as `[^\s\p{L}\p{N}]+` does).
//! - `' '` followed by L, N or O: the space and the run of the next char's class.
//! - S otherwise: the maximal `\s+` run R if it ends the text or is one char long,
//!   else R minus its last char (which then prefixes the next piece).
//!
//! Linear: each piece is one forward scan; a space run is scanned at most twice.

use std::ops::Range;

use super::classify::{char_at, Cat, Tables};
use super::scan::{contraction_end, run_end, space_run, split_pieces};

#[derive(Debug, Clone)]
pub struct Gpt2Lexer {
    tables: &'static Tables,
}

impl Gpt2Lexer {
    pub fn new(tables: &'static Tables) -> Self {
        Self { tables }
    }

    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>) {
        split_pieces(text, out, |p, c, len| self.piece_end(text, p, c, len));
    }

    #[inline]
    fn piece_end(&self, text: &str, p: usize, c: char, len: usize) -> usize {
        let t = self.tables;
        let next = p + len;
        if c == '\'' {
            if let Some(end) = contraction_end(t, text, next, false) {
                return end;
            }
        }
        let cat = t.cat(c);
        if cat != Cat::Space {
            return run_end(t, text, next, cat);
        }
        if c == ' ' {
            if let Some((c1, len1)) = char_at(text, next) {
                let cat1 = t.cat(c1);
                if cat1 != Cat::Space {
                    return run_end(t, text, next + len1, cat1);
                }
            }
        }
        let run = space_run(t, text, p);
        if run.end == text.len() || run.last_start == p {
            run.end
        } else {
            run.last_start
        }
    }
}
