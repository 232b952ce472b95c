//! jieba's user dictionaries (`load_userdict`, `add_word`, `suggest_freq`), applied to
//! the word table before the segmenter's trie is built.
//!
//! Lines are `word [freq] [tag]` (jieba's regex `^(.+?)( [0-9]+)?( [a-z]+)?$`). Words
//! are added in order, each changing the table and the total that later ones see: a
//! word without a frequency gets `suggest_freq(word)`, the smallest frequency that makes
//! the route keep it whole given everything added before it, and a word of frequency 0
//! is force-split when the HMM proposes it. This needs segmenting with a table that
//! changes word by word, which the trie (built once) cannot do, so the shared route
//! (`segment::fill_route`) runs here over a hash map; only user words go through it.

use std::collections::{HashMap, HashSet};

use crate::error::{HanpackError, Result};

/// jieba's `FREQ` and `total` while user words are being added.
pub struct FreqTable {
    pub freq: HashMap<String, u64>,
    pub total: u64,
    /// Words added with frequency 0 (jieba's `Force_Split_Words`).
    pub force_split: HashSet<String>,
}

/// One user-dictionary line: the word and its frequency when given.
pub fn parse_userdict(text: &str, origin: &str) -> Result<Vec<(String, Option<u64>)>> {
    let mut out = Vec::new();
    for (lineno, raw) in text.split('\n').enumerate() {
        let mut line = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if lineno == 0 {
            line = line.trim_start_matches('\u{feff}');
        }
        if line.is_empty() {
            continue;
        }
        // The regex's lazy word leaves the longest ` [0-9]+`, ` [a-z]+` suffix to the
        // optional groups; strip the tag, then the frequency, keeping at least one char.
        let strip = |s: &'_ str, pred: fn(u8) -> bool| -> Option<usize> {
            let sp = s.rfind(' ')?;
            let tail = &s.as_bytes()[sp + 1..];
            (sp > 0 && !tail.is_empty() && tail.iter().all(|&b| pred(b))).then_some(sp)
        };
        let mut word = line;
        if let Some(sp) = strip(word, |b| b.is_ascii_lowercase()) {
            word = &word[..sp];
        }
        let mut freq = None;
        if let Some(sp) = strip(word, |b| b.is_ascii_digit()) {
            let f = word[sp + 1..]
                .parse::<u64>()
                .map_err(|e| HanpackError::TokenizerFormat {
                    origin: origin.to_string(),
                    reason: format!("line {}: frequency {:?}: {e}", lineno + 1, &word[sp + 1..]),
                })?;
            freq = Some(f);
            word = &word[..sp];
        }
        out.push((word.to_string(), freq));
    }
    Ok(out)
}

impl FreqTable {
    /// The table jieba's `gen_pfdict` makes: every word, and every prefix as 0.
    pub fn new(words: &HashMap<&str, u64>, total: u64) -> Self {
        let mut freq: HashMap<String, u64> =
            words.iter().map(|(w, f)| (w.to_string(), *f)).collect();
        for w in words.keys() {
            for (i, _) in w.char_indices().skip(1) {
                freq.entry(w[..i].to_string()).or_insert(0);
            }
        }
        Self {
            freq,
            total,
            force_split: HashSet::new(),
        }
    }

    /// jieba's `add_word(word, freq)`.
    pub fn add_word(&mut self, word: &str, freq: Option<u64>) {
        let f = freq.unwrap_or_else(|| self.suggest_freq(word));
        self.freq.insert(word.to_string(), f);
        self.total = self.total.saturating_add(f);
        for (i, _) in word.char_indices().skip(1) {
            self.freq.entry(word[..i].to_string()).or_insert(0);
        }
        if f == 0 {
            self.force_split.insert(word.to_string());
        }
    }

    /// jieba's `suggest_freq(word, tune=False)`, in its float order.
    fn suggest_freq(&self, word: &str) -> u64 {
        let ftotal = self.total as f64;
        let mut p = 1.0f64;
        for seg in self.cut_no_hmm(word) {
            p *= self.freq.get(seg).copied().unwrap_or(1) as f64 / ftotal;
        }
        let suggested = (p * self.total as f64) as u64 + 1;
        suggested.max(self.freq.get(word).copied().unwrap_or(1))
    }

    /// `jieba.cut(text, HMM=False)` over this table (jieba's `get_DAG` and `calc`).
    fn cut_no_hmm<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        super::segment::for_blocks(text, &mut out, |block, out| {
            let offs: Vec<usize> = block
                .char_indices()
                .map(|(i, _)| i)
                .chain([block.len()])
                .collect();
            let n = offs.len() - 1;
            let mut route = Vec::new();
            super::segment::fill_route(n, (self.total as f64).ln(), &mut route, |idx, step| {
                // jieba's get_DAG: extend while the fragment is in the table at all.
                for x in idx..n {
                    match self.freq.get(&block[offs[idx]..offs[x + 1]]) {
                        None => break,
                        Some(&f) if f > 0 => step.offer(x, (f as f64).ln()),
                        Some(_) => {}
                    }
                }
            });
            let chars: Vec<char> = block.chars().collect();
            super::segment::emit_no_hmm(block, &offs, &chars, &route, out);
        });
        out
    }
}
