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

/// Calls `emit(mark, body)` for each unit of `line` as sentencepiece's trainer sees it
/// (the identity normalizer with `escape_whitespaces`): the unit is `▁` + `body` when
/// `mark` is set, else `body`. Spaces (and `▁` itself) are the marks, so units borrow
/// from the raw line and counting allocates nothing for a unit seen before.
pub fn split_units<'t>(
    line: &'t str,
    opts: &UnitOptions,
    seg: Option<&Segmenter>,
    mut emit: impl FnMut(bool, &'t str),
) -> Result<()> {
    let mut words: Vec<&'t str> = Vec::new();
    let mut flush =
        |mark: bool, body: &'t str, cur: Option<Class>, words: &mut Vec<&'t str>| -> Result<()> {
            match (cur, seg) {
                (Some(Class::Han), Some(seg)) => {
                    words.clear();
                    seg.cut(body, opts.hmm, words)?;
                    for (i, w) in words.iter().enumerate() {
                        emit(mark && i == 0, w);
                    }
                }
                _ => emit(mark, body),
            }
            Ok(())
        };
    // The unit in progress: whether one is open, its mark, where its body starts.
    let mut open = opts.add_dummy_prefix && !line.is_empty();
    let mut mark = open;
    let mut body = 0;
    let mut cur: Option<Class> = None;
    for (i, c) in line.char_indices() {
        if c == ' ' || c == SPACE_MARK {
            if open {
                flush(mark, &line[body..i], cur, &mut words)?;
            }
            (open, mark, body, cur) = (true, true, i + c.len_utf8(), None);
            continue;
        }
        let k = class(c);
        let split = match cur {
            None => false,
            Some(prev) => prev != k || (k == Class::Digit && opts.split_digits),
        };
        if split {
            flush(mark, &line[body..i], cur, &mut words)?;
            (mark, body) = (false, i);
        } else if !open {
            (open, mark, body) = (true, false, i);
        }
        cur = Some(k);
    }
    if open {
        flush(mark, &line[body..], cur, &mut words)?;
    }
    Ok(())
}

/// Shards of the unit table: a unit's shard is a function of its text, so shards merge
/// in parallel without locks.
const SHARDS: usize = 64;

/// A chunk's counts split by shard: `(mark, body, count)` per unit.
type ByShard<'t> = Vec<Vec<(bool, &'t str, u64)>>;

/// The shard of unit `▁body` (`mark`) or `body`.
fn shard_of(mark: bool, body: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    mark.hash(&mut h);
    body.hash(&mut h);
    (h.finish() >> 58) as usize % SHARDS
}

/// Unit → weighted count.
#[derive(Clone, Debug)]
pub struct UnitCounts {
    shards: Vec<FxHashMap<String, u64>>,
    /// Lines and UTF-8 bytes seen (unweighted).
    pub lines: u64,
    pub bytes: u64,
    /// Units dropped by [`Self::prune`] (distinct units).
    pub pruned: u64,
}

impl Default for UnitCounts {
    fn default() -> Self {
        Self {
            shards: vec![FxHashMap::default(); SHARDS],
            lines: 0,
            bytes: 0,
            pruned: 0,
        }
    }
}

impl UnitCounts {
    /// Distinct units.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every unit with its count, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.shards
            .iter()
            .flat_map(|m| m.iter().map(|(u, &n)| (u.as_str(), n)))
    }

    /// Adds `n` to the count of `unit`.
    pub fn add(&mut self, unit: &str, n: u64) {
        let (mark, body) = match unit.strip_prefix(SPACE_MARK) {
            Some(body) => (true, body),
            None => (false, unit),
        };
        *self.shards[shard_of(mark, body)]
            .entry(unit.to_owned())
            .or_insert(0) += n;
    }

    /// Counts the units of `lines`, each occurrence weighing `weight`, in parallel.
    /// Each chunk of lines counts into a small map of units borrowed from the input (no
    /// allocation per unit, and the map stays in cache), split by shard; then the shards
    /// are merged in parallel, allocating only for units not seen before. Owned keys per
    /// chunk merged into one table on one thread spent most of the time in malloc, free
    /// and the merge.
    pub fn add_lines<S: AsRef<str> + Sync>(
        &mut self,
        lines: &[S],
        weight: u64,
        opts: &UnitOptions,
        seg: Option<&Segmenter>,
    ) -> Result<()> {
        let chunk = (lines.len() / (rayon::current_num_threads() * 4)).clamp(64, 8192);
        let parts: Vec<ByShard<'_>> = lines
            .par_chunks(chunk)
            .map(|part| {
                let mut map: FxHashMap<(bool, &str), u64> = FxHashMap::default();
                for line in part {
                    split_units(line.as_ref(), opts, seg, |mark, body| {
                        *map.entry((mark, body)).or_insert(0) += weight;
                    })?;
                }
                let mut by_shard: ByShard<'_> = vec![Vec::new(); SHARDS];
                for ((mark, body), n) in map {
                    by_shard[shard_of(mark, body)].push((mark, body, n));
                }
                Ok(by_shard)
            })
            .collect::<Result<_>>()?;
        self.shards
            .par_iter_mut()
            .enumerate()
            .for_each(|(s, table)| {
                let mut key = String::new();
                for part in &parts {
                    for &(mark, body, n) in &part[s] {
                        key.clear();
                        if mark {
                            key.push(SPACE_MARK);
                        }
                        key.push_str(body);
                        if let Some(k) = table.get_mut(key.as_str()) {
                            *k += n;
                        } else {
                            table.insert(key.clone(), n);
                        }
                    }
                }
            });
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
        for (u, k) in self.iter() {
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
        let before = self.len();
        if before <= max_units {
            return;
        }
        let keep = max_units / 2; // < len
        let mut counts: Vec<u64> = self.iter().map(|(_, n)| n).collect();
        // The largest count that goes: everything above it stays.
        let nth = counts.len() - keep - 1;
        let (_, &mut cut, _) = counts.select_nth_unstable(nth);
        for table in &mut self.shards {
            table.retain(|_, v| *v > cut);
        }
        self.pruned += (before - self.len()) as u64;
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
        let mut out = Vec::new();
        split_units(line, &opts, None, |mark, body| {
            out.push(format!("{}{body}", if mark { "▁" } else { "" }))
        })
        .unwrap();
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
        // A leading space leaves the dummy prefix alone; a literal `▁` is a space.
        assert_eq!(units(" a▁b", true), ["▁", "▁a", "▁b"]);
        assert_eq!(units("", true), Vec::<String>::new());
    }

    #[test]
    fn prune_drops_the_rarest() {
        let mut c = UnitCounts::default();
        for (i, w) in ["a", "b", "c", "d"].iter().enumerate() {
            c.add(w, i as u64 + 1);
        }
        c.prune(3);
        let mut kept: Vec<_> = c.iter().map(|(u, _)| u.to_owned()).collect();
        kept.sort();
        assert_eq!(kept, ["d"]);
        assert_eq!(c.pruned, 3);
    }
}
