//! Small forward scanners shared by the lexers. Each returns a byte offset on a char
//! boundary and only moves forward, so every lexer built from them is linear time.

use super::classify::{char_at, Cat, Tables};

/// End of the run of chars of class `cat` starting at `i` (`i` itself if none).
#[inline]
pub fn run_end(t: &Tables, text: &str, mut i: usize, cat: Cat) -> usize {
    while let Some((c, len)) = char_at(text, i) {
        if t.cat(c) != cat {
            break;
        }
        i += len;
    }
    i
}

/// End of at most `max` chars of class `cat` starting at `i`.
#[inline]
pub fn run_end_max(t: &Tables, text: &str, mut i: usize, cat: Cat, max: usize) -> usize {
    for _ in 0..max {
        match char_at(text, i) {
            Some((c, len)) if t.cat(c) == cat => i += len,
            _ => break,
        }
    }
    i
}

/// End of the run of `\r` / `\n` bytes starting at `i` (`[\r\n]*`).
#[inline]
pub fn crlf_end(text: &str, mut i: usize) -> usize {
    let b = text.as_bytes();
    while matches!(b.get(i), Some(b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// What the whitespace run starting at `start` looks like, in one pass.
#[derive(Debug, Clone, Copy)]
pub struct SpaceRun {
    /// End of the maximal `\s+` run.
    pub end: usize,
    /// Start of the run's last char (for `\s+(?!\S)`, which gives that char back).
    pub last_start: usize,
    /// End of the run's last `\r` / `\n`, if it has one (for `\s*[\r\n]+`).
    pub newline_end: Option<usize>,
}

/// Scans the `\s+` run at `start` (the caller knows `start` holds a space char).
#[inline]
pub fn space_run(t: &Tables, text: &str, start: usize) -> SpaceRun {
    let mut run = SpaceRun {
        end: start,
        last_start: start,
        newline_end: None,
    };
    while let Some((c, len)) = char_at(text, run.end) {
        if t.cat(c) != Cat::Space {
            break;
        }
        run.last_start = run.end;
        run.end += len;
        if c == '\r' || c == '\n' {
            run.newline_end = Some(run.end);
        }
    }
    run
}

/// End of a contraction `'s|'t|'re|'ve|'m|'ll|'d` whose apostrophe ends at `i`, or
/// `None`. With `casei`, letters compare as `(?i)` does in the regex engine (so 'ſ'
/// counts as 's'); without it, only the lowercase ASCII letters match.
#[inline]
pub fn contraction_end(t: &Tables, text: &str, i: usize, casei: bool) -> Option<usize> {
    let letter = |at: usize| -> Option<(u8, usize)> {
        let (c, len) = char_at(text, at)?;
        let l = if casei {
            t.fold_ascii(c)?
        } else if c.is_ascii_lowercase() {
            c as u8
        } else {
            return None;
        };
        Some((l, at + len))
    };
    let (l1, e1) = letter(i)?;
    match l1 {
        b's' | b't' | b'm' | b'd' => Some(e1),
        b'r' | b'v' => letter(e1).filter(|&(l2, _)| l2 == b'e').map(|(_, e2)| e2),
        b'l' => letter(e1).filter(|&(l2, _)| l2 == b'l').map(|(_, e2)| e2),
        _ => None,
    }
}

/// Splits `text` into consecutive pieces, each ending where `piece_end(start, first
/// char, its byte length)` says: the driver loop every lexer shares.
#[inline]
pub fn split_pieces(
    text: &str,
    out: &mut Vec<std::ops::Range<usize>>,
    piece_end: impl Fn(usize, char, usize) -> usize,
) {
    let mut pos = 0;
    while let Some((c, len)) = super::classify::char_at(text, pos) {
        let end = piece_end(pos, c, len);
        out.push(pos..end);
        pos = end;
    }
}
