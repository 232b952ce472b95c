//! Lexer for the cl100k family of patterns: LLaMA-3 (= tiktoken's first cl100k_base),
//! Qwen2 (single digits) and tiktoken's current cl100k_base (possessive, `\s++$`).
//!
//! ```text
//! A1 (?i:'s|'t|'re|'ve|'m|'ll|'d)
//! A2 [^\r\n\p{L}\p{N}]?\p{L}+
//! A3 \p{N}{1,3}                 (Qwen2: \p{N})
//! A4  ?[^\s\p{L}\p{N}]+[\r\n]*
//! A5 \s*[\r\n]+                 (cl100k: `\s++$` first, then \s*[\r\n])
//! A6 \s+(?!\S)
//! A7 \s+                        (cl100k: \s)
//! ```
//! The regex tries the alternatives in order at each position; the first that matches
//! wins. Worked out per class of the char `c` at the position (L/N/S/O = letter, number,
//! space, other), with `c1` the next char:
//! - `'` followed by a contraction: A1.
//! - L: A2 with an empty prefix, the letter run.
//! - N: A3, up to `max_digits` numbers.
//! - S or O, `c` not `\r`/`\n`, `c1` a letter: A2, `c` + the letter run.
//! - O: A4, the run of O then `[\r\n]*`.
//! - `' '` followed by O: A4 with its optional space.
//! - S otherwise: let R be the maximal `\s+` run. A5 ends after R's last `\r`/`\n`
//!   (`\s*` backtracks to it); else A6 takes R if R ends the text, or R minus its last
//!   char if that leaves one; else A7 takes R (one char).
//!
//! Every piece is found scanning forward from its start; a space run may be scanned
//! twice (A5/A6 end before R does and the rest is scanned again), so it is linear.

use std::ops::Range;

use super::classify::{char_at, Cat, Tables};
use super::scan::{contraction_end, crlf_end, run_end, run_end_max, space_run, split_pieces};

#[derive(Debug, Clone)]
pub struct Llama3Lexer {
    tables: &'static Tables,
    /// `\p{N}{1,max_digits}`: 3 for LLaMA-3 / cl100k, 1 for Qwen2.
    max_digits: usize,
    /// tiktoken's current cl100k tries `\s++$` before `\s*[\r\n]`: a space run that
    /// ends the text is one piece even when it holds newlines.
    space_to_end_first: bool,
}

impl Llama3Lexer {
    pub fn new(tables: &'static Tables, max_digits: usize, space_to_end_first: bool) -> Self {
        Self {
            tables,
            max_digits,
            space_to_end_first,
        }
    }

    pub fn split(&self, text: &str, out: &mut Vec<Range<usize>>) {
        split_pieces(text, out, |p, c, len| self.piece_end(text, p, c, len));
    }

    /// End of the piece starting at `p`, whose first char `c` is `len` bytes long.
    #[inline]
    fn piece_end(&self, text: &str, p: usize, c: char, len: usize) -> usize {
        let t = self.tables;
        let next = p + len;
        if c == '\'' {
            if let Some(end) = contraction_end(t, text, next, true) {
                return end;
            }
        }
        let cat = t.cat(c);
        match cat {
            Cat::Letter => return run_end(t, text, next, Cat::Letter),
            Cat::Number => {
                return run_end_max(
                    t,
                    text,
                    next,
                    Cat::Number,
                    self.max_digits.saturating_sub(1),
                )
            }
            Cat::Space | Cat::Other => {}
        }
        let c1 = char_at(text, next).map(|(c1, len1)| (t.cat(c1), next + len1));
        if let Some((Cat::Letter, after)) = c1 {
            if c != '\r' && c != '\n' {
                return run_end(t, text, after, Cat::Letter);
            }
        }
        if cat == Cat::Other {
            return crlf_end(text, run_end(t, text, next, Cat::Other));
        }
        if let (' ', Some((Cat::Other, after))) = (c, c1) {
            return crlf_end(text, run_end(t, text, after, Cat::Other));
        }
        let run = space_run(t, text, p);
        if self.space_to_end_first && run.end == text.len() {
            return run.end;
        }
        if let Some(end) = run.newline_end {
            return end;
        }
        if run.end == text.len() || run.last_start == p {
            run.end
        } else {
            run.last_start
        }
    }
}
