//! Pre-splitting text into the units BPE training merges within, and counting them.
//!
//! The split follows sentencepiece's trainer (`SplitIntoWords` plus the script rules of
//! `IsValidSentencePiece`), so a trained piece is one sentencepiece could have learned:
//! every `▁` starts a unit; a unit never mixes scripts (Han, kana and the CJK prolonged
//! sound mark count as one script, punctuation and symbols as another); with
//! `split_digits` every digit is a unit of its own (LLaMA). A `▁` may lead any unit.
//! With a [`Segmenter`], Han runs are further cut into jieba words, so merges stay within
//! words (the "word-augmented" vocabularies of Linly and others).
//!
//! Counting is parallel (rayon, one map per chunk, merged) and bounded: [`UnitCounts::prune`]
//! drops the rarest units once the table exceeds a size, as sentencepiece's trainer
//! samples sentences.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::extend::{is_cjk, SPACE_MARK};
use super::segment::Segmenter;
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct UnitOptions {
    /// Prepend `▁` to every line, as sentencepiece's `add_dummy_prefix`.
    pub add_dummy_prefix: bool,
    /// Every digit its own unit (LLaMA's `split_digits`).
    pub split_digits: bool,
    /// Cut Han runs into words with the segmenter (HMM on or off) when one is given.
    pub hmm: bool,
}

impl Default for UnitOptions {
    fn default() -> Self {
        Self {
            add_dummy_prefix: true,
            split_digits: true,
            hmm: false,
        }
    }
}

/// sentencepiece's script classes, coarsened to what decides a unit boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Digit,
    /// Han ideographs, kana and `ー` (sentencepiece treats them as one script).
    Han,
    /// A letter, with a coarse script id (the Unicode block group).
    Letter(u16),
    /// Punctuation, symbols, controls: sentencepiece's "Common".
    Common,
}

fn class(c: char) -> Class {
    let u = c as u32;
    if c.is_ascii_digit() || ('\u{FF10}'..='\u{FF19}').contains(&c) {
        return Class::Digit;
    }
    if matches!(u, 0x3040..=0x30FF | 0x31F0..=0x31FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF | 0x20000..=0x323AF | 0x3005 | 0x3007 | 0x3021..=0x3029 | 0xFF66..=0xFF9F)
    {
        return Class::Han;
    }
    if c.is_alphabetic() || c.is_numeric() {
        let script = match u {
            0..=0x24F | 0x1E00..=0x1EFF | 0xFF21..=0xFF5A => 0, // Latin incl. full-width
            0x370..=0x3FF | 0x1F00..=0x1FFF => 1,               // Greek
            0x400..=0x52F => 2,                                 // Cyrillic
            0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => 3, // Hangul
            _ => (u >> 7) as u16 + 16,
        };
        return Class::Letter(script);
    }
    Class::Common
}

/// Calls `emit(unit)` for each unit of `normalized` (spaces already `▁`).
pub fn split_units<'t>(
    normalized: &'t str,
    opts: &UnitOptions,
    seg: Option<&Segmenter>,
    mut emit: impl FnMut(&'t str),
) -> Result<()> {
    let mut words: Vec<&'t str> = Vec::new();
    let mut start = 0; // start of the current unit
    let mut body = 0; // where its non-▁ part starts
    let mut cur: Option<Class> = None;
    let mut flush = |start: usize,
                     body: usize,
                     end: usize,
                     cur: Option<Class>,
                     words: &mut Vec<&'t str>|
     -> Result<()> {
        if start == end {
            return Ok(());
        }
        match (cur, seg) {
            (Some(Class::Han), Some(seg)) => {
                words.clear();
                seg.cut(&normalized[body..end], opts.hmm, words)?;
                let mut from = start;
                for w in words.iter() {
                    let to = w.as_ptr() as usize - normalized.as_ptr() as usize + w.len();
                    emit(&normalized[from..to]);
                    from = to;
                }
            }
            _ => emit(&normalized[start..end]),
        }
        Ok(())
    };
    for (i, c) in normalized.char_indices() {
        if c == SPACE_MARK {
            flush(start, body, i, cur, &mut words)?;
            start = i;
            body = i + c.len_utf8();
            cur = None;
            continue;
        }
        let k = class(c);
        let split = match cur {
            None => false,
            Some(prev) => prev != k || (k == Class::Digit && opts.split_digits),
        };
        if split {
            flush(start, body, i, cur, &mut words)?;
            start = i;
            body = i;
        }
        cur = Some(k);
    }
    flush(start, body, normalized.len(), cur, &mut words)
}

/// `line` as the identity normalizer with `escape_whitespaces` sees it.
pub fn normalize_line(line: &str, add_dummy_prefix: bool, out: &mut String) {
    out.clear();
    if add_dummy_prefix && !line.is_empty() {
        out.push(SPACE_MARK);
    }
    for c in line.chars() {
        out.push(if c == ' ' { SPACE_MARK } else { c });
    }
}

/// Unit → weighted count.
#[derive(Default, Clone, Debug)]
pub struct UnitCounts {
    pub map: FxHashMap<String, u64>,
    /// Lines and UTF-8 bytes seen (unweighted).
    pub lines: u64,
    pub bytes: u64,
    /// Units dropped by [`Self::prune`] (distinct units).
    pub pruned: u64,
}

impl UnitCounts {
    /// Counts the units of `lines`, each occurrence weighing `weight`, in parallel.
    pub fn add_lines<S: AsRef<str> + Sync>(
        &mut self,
        lines: &[S],
        weight: u64,
        opts: &UnitOptions,
        seg: Option<&Segmenter>,
    ) -> Result<()> {
        let chunk = (lines.len() / (rayon::current_num_threads() * 4)).clamp(64, 8192);
        let parts: Vec<FxHashMap<String, u64>> = lines
            .par_chunks(chunk)
            .map(|part| {
                let mut map: FxHashMap<String, u64> = FxHashMap::default();
                let mut norm = String::new();
                for line in part {
                    normalize_line(line.as_ref(), opts.add_dummy_prefix, &mut norm);
                    split_units(&norm, opts, seg, |u| {
                        if let Some(n) = map.get_mut(u) {
                            *n += weight;
                        } else {
                            map.insert(u.to_owned(), weight);
                        }
                    })?;
                }
                Ok(map)
            })
            .collect::<Result<_>>()?;
        for part in parts {
            self.merge_map(part);
        }
        self.lines += lines.len() as u64;
        self.bytes += lines.iter().map(|l| l.as_ref().len() as u64).sum::<u64>();
        Ok(())
    }

    /// Counts the lines of a block of UTF-8 text (split at `\n`, a trailing `\r`
    /// dropped, empty lines skipped): the whole-file path, without one string object per
    /// line on the way in. `origin` and `offset` (of the block in its file) name the
    /// place of invalid UTF-8.
    pub fn add_text(
        &mut self,
        block: &[u8],
        origin: &str,
        offset: u64,
        weight: u64,
        opts: &UnitOptions,
        seg: Option<&Segmenter>,
    ) -> Result<()> {
        let text = std::str::from_utf8(block).map_err(|e| {
            crate::error::HanpackError::InvalidArgument(format!(
                "{origin}: not UTF-8 text (invalid byte at offset {})",
                offset + e.valid_up_to() as u64
            ))
        })?;
        let lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        self.add_lines(&lines, weight, opts, seg)
    }

    fn merge_map(&mut self, part: FxHashMap<String, u64>) {
        if self.map.is_empty() {
            self.map = part;
            return;
        }
        for (k, v) in part {
            *self.map.entry(k).or_insert(0) += v;
        }
    }

    /// The `n` most frequent units made only of CJK characters, `min_chars..=max_chars`
    /// long once a leading `▁` is dropped (the counts of `▁w` and `w` are added), most
    /// frequent first, ties by text. The whole words of a word-augmented vocabulary.
    pub fn top_cjk_words(
        &self,
        n: usize,
        min_chars: usize,
        max_chars: usize,
    ) -> Vec<(String, u64)> {
        let mut words: FxHashMap<&str, u64> = FxHashMap::default();
        for (u, &k) in &self.map {
            let w = u.strip_prefix(SPACE_MARK).unwrap_or(u);
            let chars = w.chars().count();
            if chars >= min_chars && chars <= max_chars && w.chars().all(is_cjk) {
                *words.entry(w).or_insert(0) += k;
            }
        }
        let mut out: Vec<(String, u64)> =
            words.into_iter().map(|(w, k)| (w.to_owned(), k)).collect();
        out.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(n);
        out
    }

    /// Keeps memory bounded: when more than `max_units` distinct units are held, drops
    /// the rarest until at most `max_units / 2` remain (ties at the cut all go).
    pub fn prune(&mut self, max_units: usize) {
        if self.map.len() <= max_units {
            return;
        }
        let keep = max_units / 2; // < len
        let mut counts: Vec<u64> = self.map.values().copied().collect();
        // The largest count that goes: everything above it stays.
        let nth = counts.len() - keep - 1;
        let (_, &mut cut, _) = counts.select_nth_unstable(nth);
        let before = self.map.len();
        self.map.retain(|_, v| *v > cut);
        self.pruned += (before - self.map.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(line: &str, split_digits: bool) -> Vec<String> {
        let opts = UnitOptions {
            split_digits,
            ..Default::default()
        };
        let mut norm = String::new();
        normalize_line(line, true, &mut norm);
        let mut out = Vec::new();
        split_units(&norm, &opts, None, |u| out.push(u.to_owned())).unwrap();
        out
    }

    #[test]
    fn splits_like_sentencepiece() {
        assert_eq!(
            units("Hello  world 2024年，你好ー", true),
            [
                "▁Hello",
                "▁",
                "▁world",
                "▁2",
                "0",
                "2",
                "4",
                "年",
                "，",
                "你好ー"
            ]
        );
        assert_eq!(units("x12 ab", false), ["▁x", "12", "▁ab"]);
        assert_eq!(units("", true), Vec::<String>::new());
    }

    #[test]
    fn prune_drops_the_rarest() {
        let mut c = UnitCounts::default();
        for (i, w) in ["a", "b", "c", "d"].iter().enumerate() {
            c.map.insert((*w).into(), i as u64 + 1);
        }
        c.prune(3);
        let mut kept: Vec<_> = c.map.keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["d"]);
        assert_eq!(c.pruned, 3);
    }
}
