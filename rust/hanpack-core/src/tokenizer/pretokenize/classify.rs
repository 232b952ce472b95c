//! Character classes for the hand-written lexers, taken from the regex engine itself.
//!
//! The lexers must agree with `fancy-regex` on every code point, and `fancy-regex` hands
//! `\p{L}`, `\p{N}`, `\s` and `(?i)` to `regex-syntax`. So instead of a second Unicode
//! crate (whose Unicode version could drift from the regex's), the tables are built once,
//! lazily, from `regex-syntax`'s own class ranges: the same crate version, the same data.
//!
//! Layout: a two-level table (one `u16` block id per 256 code points, deduplicated
//! 256-entry blocks of [`Cat`]), ~25 KB in all. A lookup is two dependent loads.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

use crate::error::{HanpackError, Result};

/// The four disjoint classes the byte-level patterns are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cat {
    /// `\p{L}`
    Letter = 0,
    /// `\p{N}`
    Number = 1,
    /// `\s` (Unicode White_Space, as regex-syntax defines it)
    Space = 2,
    /// `[^\s\p{L}\p{N}]`: punctuation, symbols, marks, controls, unassigned, ...
    Other = 3,
}

const BLOCK_BITS: u32 = 8;
const BLOCK: usize = 1 << BLOCK_BITS;
const NUM_BLOCKS: usize = 0x110000 >> BLOCK_BITS;

/// Classification tables; get them with [`tables`].
pub struct Tables {
    /// `index[cp >> 8]` is the block holding `cp`'s class.
    index: Box<[u16]>,
    blocks: Box<[[Cat; BLOCK]]>,
    /// Non-ASCII chars that `(?i)` makes equal to an ASCII letter (e.g. 'ſ' ~ 's',
    /// KELVIN SIGN ~ 'k'), with that letter in lowercase. Tiny and rarely consulted.
    folds: Box<[(char, u8)]>,
}

impl Tables {
    /// The class of `c`.
    #[inline]
    pub fn cat(&self, c: char) -> Cat {
        let cp = c as usize;
        // Both indexings are in range by construction (cp < 0x110000, ids < blocks.len());
        // `get` keeps the no-panic rule without a measurable cost.
        let block = self.index.get(cp >> BLOCK_BITS).copied().unwrap_or(0) as usize;
        match self.blocks.get(block) {
            Some(b) => b[cp & (BLOCK - 1)],
            None => Cat::Other,
        }
    }

    /// The lowercase ASCII letter `c` equals under `(?i)`, if any.
    #[inline]
    pub fn fold_ascii(&self, c: char) -> Option<u8> {
        if c.is_ascii_alphabetic() {
            return Some(c.to_ascii_lowercase() as u8);
        }
        if c.is_ascii() {
            return None;
        }
        self.folds.iter().find(|&&(f, _)| f == c).map(|&(_, l)| l)
    }
}

impl std::fmt::Debug for Tables {
    // The blocks are ~25 KB of enum values; nobody wants them in a Debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// The shared tables, built on first use (a few ms).
pub fn tables() -> Result<&'static Tables> {
    static TABLES: OnceLock<std::result::Result<Tables, String>> = OnceLock::new();
    TABLES
        .get_or_init(build)
        .as_ref()
        .map_err(|e| HanpackError::InvalidArgument(format!("pre-tokenizer character tables: {e}")))
}

/// The code point ranges of a one-class regex such as `\p{L}` or `(?i)s`.
fn class_ranges(re: &str) -> std::result::Result<Vec<(char, char)>, String> {
    let hir = regex_syntax::Parser::new()
        .parse(re)
        .map_err(|e| format!("{re:?}: {e}"))?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            Ok(c.ranges().iter().map(|r| (r.start(), r.end())).collect())
        }
        // A class of one char comes back as a literal (e.g. `(?i)x` if x had no folds).
        HirKind::Literal(lit) => match std::str::from_utf8(&lit.0)
            .ok()
            .and_then(|s| s.chars().next())
        {
            Some(c) => Ok(vec![(c, c)]),
            None => Err(format!("{re:?}: unexpected literal")),
        },
        other => Err(format!("{re:?}: expected a Unicode class, got {other:?}")),
    }
}

fn build() -> std::result::Result<Tables, String> {
    let mut flat = vec![Cat::Other; 0x110000];
    // The three classes are disjoint in Unicode (White_Space is Zs/Zl/Zp/Cc); a later
    // class overwriting an earlier one would be a Unicode change, caught by the tests.
    for (re, cat) in [
        (r"\p{L}", Cat::Letter),
        (r"\p{N}", Cat::Number),
        (r"\s", Cat::Space),
    ] {
        for (lo, hi) in class_ranges(re)? {
            for cp in lo as usize..=hi as usize {
                if let Some(slot) = flat.get_mut(cp) {
                    *slot = cat;
                }
            }
        }
    }
    let mut index = Vec::with_capacity(NUM_BLOCKS);
    let mut blocks: Vec<[Cat; BLOCK]> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for chunk in flat.chunks_exact(BLOCK) {
        let mut block = [Cat::Other; BLOCK];
        block.copy_from_slice(chunk);
        let id = *seen.entry(block).or_insert_with(|| {
            blocks.push(block);
            blocks.len() - 1
        });
        index.push(u16::try_from(id).map_err(|_| "too many distinct blocks".to_string())?);
    }
    let mut folds = Vec::new();
    for letter in b'a'..=b'z' {
        for (lo, hi) in class_ranges(&format!("(?i){}", letter as char))? {
            for c in (lo..=hi).filter(|c| !c.is_ascii()) {
                folds.push((c, letter));
            }
        }
    }
    Ok(Tables {
        index: index.into(),
        blocks: blocks.into(),
        folds: folds.into(),
    })
}

/// Decodes the char starting at byte `i` of `s` (a char boundary): the char and its
/// length in bytes, or `None` at the end. Faster than `s[i..].chars().next()` because
/// the bounds and boundary checks of slicing are skipped for the common ASCII byte.
#[inline]
pub fn char_at(s: &str, i: usize) -> Option<(char, usize)> {
    #[cfg(test)]
    CHAR_READS.with(|n| n.set(n.get() + 1));
    let b = *s.as_bytes().get(i)?;
    if b < 0x80 {
        return Some((b as char, 1));
    }
    let c = s.get(i..)?.chars().next()?;
    Some((c, c.len_utf8()))
}

#[cfg(test)]
thread_local! {
    /// Calls of [`char_at`] on this thread: the lexers' work, counted exactly, so the
    /// tests check linear time by input size rather than by the clock.
    pub static CHAR_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_regex_engine_on_every_code_point() {
        let t = tables().unwrap();
        // The reference is the engine the fallback runs on, fancy-regex.
        let l = fancy_regex::Regex::new(r"\A\p{L}\z").unwrap();
        let n = fancy_regex::Regex::new(r"\A\p{N}\z").unwrap();
        let s = fancy_regex::Regex::new(r"\A\s\z").unwrap();
        let mut buf = [0u8; 4];
        for c in (0..0x110000u32).filter_map(char::from_u32) {
            let text = c.encode_utf8(&mut buf);
            let m = |r: &fancy_regex::Regex| r.is_match(text).unwrap();
            let want = match (m(&l), m(&n), m(&s)) {
                (true, false, false) => Cat::Letter,
                (false, true, false) => Cat::Number,
                (false, false, true) => Cat::Space,
                (false, false, false) => Cat::Other,
                _ => panic!("U+{:04X} is in two classes", c as u32),
            };
            assert_eq!(t.cat(c), want, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn folds_include_long_s_and_kelvin() {
        let t = tables().unwrap();
        assert_eq!(t.fold_ascii('ſ'), Some(b's'));
        assert_eq!(t.fold_ascii('\u{212A}'), Some(b'k'));
        assert_eq!(t.fold_ascii('S'), Some(b's'));
        assert_eq!(t.fold_ascii('\''), None);
        assert_eq!(t.fold_ascii('é'), None);
    }
}
