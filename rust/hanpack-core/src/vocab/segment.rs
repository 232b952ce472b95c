//! Chinese word segmentation with jieba's algorithm (jieba 0.42, `jieba.cut` with
//! `cut_all=False`), token for token:
//!
//! 1. The text is cut into blocks: runs of "han" characters (`U+4E00..=U+9FD5`, ASCII
//!    letters and digits, `+ # & . _ % -`) and the rest. Outside han blocks every
//!    character is its own token, except `"\r\n"`, which is one.
//! 2. In a han block, the prefix dictionary gives for each position `k` the words that
//!    start there (the DAG; a position with none gets the single character), and the
//!    route maximises `Σ ln(freq or 1) - ln(total)` from right to left, ties going to
//!    the longer word (Python's `max` over `(score, end)` tuples).
//! 3. Without the HMM, consecutive single ASCII letters/digits on the route are joined.
//!    With it, every run of single-character words that is not itself a dictionary word
//!    goes to the HMM (`finalseg`): Viterbi over the states B, M, E, S on its han runs,
//!    and `[a-zA-Z0-9]+(\.\d+)?%?` matches (and the text between them) as tokens.
//!
//! Tokens are slices of the input (every jieba token is a contiguous substring).
//! Floating point follows jieba's order of operations, so routes and HMM paths agree on
//! ties too.

use std::collections::{HashMap, HashSet};

use super::userdict::{parse_userdict, FreqTable};

use crate::error::{HanpackError, Result};

/// jieba's `MIN_FLOAT`: the log-probability of anything its tables leave out.
pub const MIN_FLOAT: f64 = -3.14e100;

/// The prefix dictionary of a jieba `dict.txt` (`word freq [tag]` per line).
pub struct JiebaDict {
    /// Every word and every prefix of a word, to its frequency (0 for prefixes only and
    /// for words of frequency 0, which jieba keeps in its table but never puts in the
    /// DAG). The value sits in the trie's leaf, so a lookup touches no other table: a
    /// separate `ln(freq)` array indexed by word was a cache miss per candidate, 1/3 of
    /// the segmenter's time. Frequencies of `BIG` or more are kept in `big`.
    trie: crawdad::Trie,
    big: HashMap<String, u64>,
    /// `ln(f)` for small `f` (most words), computed once; larger ones call `ln`.
    ln_small: Vec<f64>,
    ln_total: f64,
}

/// Trie values are 31-bit; this value means "look the frequency up in `big`".
const BIG: u32 = (1 << 31) - 1;
const LN_TABLE: usize = 4096;

impl JiebaDict {
    /// Parses a main dictionary in jieba's format (see `read_main`).
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        Ok(Self::parse_with_user(text, origin, &[])?.0)
    }

    /// [`parse`](Self::parse), then jieba's `load_userdict` of each `(text, origin)` in
    /// order (see [`super::userdict`]); also returns the words to force-split.
    pub fn parse_with_user(
        text: &str,
        origin: &str,
        user: &[(&str, &str)],
    ) -> Result<(Self, HashSet<String>)> {
        let (freq, total) = read_main(text, origin)?;
        if user.is_empty() {
            return Ok((
                Self::build(freq.iter().map(|(w, f)| (*w, *f)), total, origin)?,
                HashSet::new(),
            ));
        }
        let mut table = FreqTable::new(&freq, total);
        drop(freq);
        for (utext, uorigin) in user {
            for (word, f) in parse_userdict(utext, uorigin)? {
                table.add_word(&word, f);
            }
        }
        let dict = Self::build(
            table.freq.iter().map(|(w, f)| (w.as_str(), *f)),
            table.total,
            origin,
        )?;
        Ok((dict, table.force_split))
    }

    /// The trie of `words` (and their prefixes, as 0) with jieba's `total`.
    fn build<'w>(
        words: impl Iterator<Item = (&'w str, u64)>,
        total: u64,
        origin: &str,
    ) -> Result<Self> {
        let freq: HashMap<&str, u64> = words.collect();
        let mut keys: Vec<(&str, u64)> = Vec::with_capacity(freq.len() * 2);
        for (&w, &f) in &freq {
            keys.push((w, f));
            for (i, _) in w.char_indices().skip(1) {
                if !freq.contains_key(&w[..i]) {
                    keys.push((&w[..i], 0));
                }
            }
        }
        keys.sort_unstable();
        keys.dedup_by(|a, b| a.0 == b.0);
        let mut big = HashMap::new();
        let mut records: Vec<(&str, u32)> = Vec::with_capacity(keys.len());
        for &(w, f) in &keys {
            let v = match u32::try_from(f) {
                Ok(v) if v < BIG => v,
                _ => {
                    big.insert(w.to_string(), f);
                    BIG
                }
            };
            records.push((w, v));
        }
        let trie =
            crawdad::Trie::from_records(records).map_err(|e| HanpackError::InvalidTokenizer {
                origin: origin.to_string(),
                reason: format!("cannot index the dictionary: {e}"),
            })?;
        let ln_small = (0..LN_TABLE).map(|f| (f as f64).ln()).collect();
        Ok(Self {
            trie,
            big,
            ln_small,
            ln_total: (total as f64).ln(),
        })
    }

    /// `ln(freq)` of the word `word` whose trie value is `v`; `None` for frequency 0.
    #[inline]
    fn ln_of_value(&self, v: u32, word: impl FnOnce() -> String) -> Option<f64> {
        match v {
            0 => None,
            v if (v as usize) < LN_TABLE => Some(self.ln_small[v as usize]),
            BIG => self.big.get(&word()).map(|&f| (f as f64).ln()),
            v => Some(f64::from(v).ln()),
        }
    }

    /// `ln(freq)` of `word` when it is a word of non-zero frequency.
    fn ln_freq_of(&self, word: &str) -> Option<f64> {
        self.trie
            .exact_match(word.chars())
            .and_then(|v| self.ln_of_value(v, || word.to_string()))
    }

    pub fn heap_bytes(&self) -> usize {
        self.trie.heap_bytes() + self.ln_small.len() * 8 + self.big.len() * 48
    }
}

/// A main dictionary's words and total (jieba's `gen_pfdict` without the prefixes):
/// the first two space-separated fields of each line (after stripping ASCII
/// whitespace) are the word and an integer frequency; later lines win for a repeated
/// word, and the total counts every line.
fn read_main<'t>(text: &'t str, origin: &str) -> Result<(HashMap<&'t str, u64>, u64)> {
    let mut freq: HashMap<&'t str, u64> = HashMap::new();
    let mut total: u64 = 0;
    for (lineno, raw) in text.split('\n').enumerate() {
        let line = raw.trim_matches(|c: char| c.is_ascii_whitespace());
        if line.is_empty() {
            continue;
        }
        let line = if lineno == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let mut fields = line.split(' ');
        let (word, f) = (fields.next().unwrap_or(""), fields.next());
        let f = f
            .and_then(|f| f.parse::<u64>().ok())
            .filter(|_| !word.is_empty())
            .ok_or_else(|| HanpackError::TokenizerFormat {
                origin: origin.to_string(),
                reason: format!("line {}: not `word frequency [tag]`: {line:?}", lineno + 1),
            })?;
        freq.insert(word, f);
        total = total.saturating_add(f);
    }
    if freq.is_empty() {
        return Err(HanpackError::TokenizerFormat {
            origin: origin.to_string(),
            reason: "the dictionary has no words".into(),
        });
    }
    Ok((freq, total))
}

/// jieba's `finalseg` HMM: log-probabilities for the states B, M, E, S (in that order).
pub struct Hmm {
    pub start: [f64; 4],
    /// `trans[from][to]`; [`MIN_FLOAT`] where jieba's table has no entry.
    pub trans: [[f64; 4]; 4],
    /// Per character, its emission log-probability in each state ([`MIN_FLOAT`] where
    /// jieba's table has none): one hash lookup per character instead of four.
    pub emit: rustc_hash::FxHashMap<char, [f64; 4]>,
}

const B: usize = 0;
const M: usize = 1;
const E: usize = 2;
const S: usize = 3;
/// The state letters, for jieba's tie-breaking (`max` over `(prob, letter)` tuples).
const LETTER: [u8; 4] = [b'B', b'M', b'E', b'S'];
/// jieba's `PrevStatus`: the states each state can follow.
const PREV: [[usize; 2]; 4] = [[E, S], [M, B], [B, M], [S, E]];

/// An [`Hmm`] ready for decoding: emissions of the han block (U+4E00..U+9FD5, the only
/// characters `finalseg` decodes) in a flat table indexed by code point; a hash lookup
/// per character was a third of the HMM's time.
struct Viterbi {
    start: [f64; 4],
    trans: [[f64; 4]; 4],
    han: Vec<[f64; 4]>,
    other: rustc_hash::FxHashMap<char, [f64; 4]>,
}

const HAN_FIRST: u32 = 0x4E00;
const HAN_LAST: u32 = 0x9FD5;

impl Viterbi {
    fn new(h: Hmm) -> Self {
        let mut han = vec![[MIN_FLOAT; 4]; (HAN_LAST - HAN_FIRST + 1) as usize];
        let mut other = rustc_hash::FxHashMap::default();
        for (c, e) in h.emit {
            match (c as u32).checked_sub(HAN_FIRST) {
                Some(i) if c as u32 <= HAN_LAST => han[i as usize] = e,
                _ => {
                    other.insert(c, e);
                }
            }
        }
        Self {
            start: h.start,
            trans: h.trans,
            han,
            other,
        }
    }

    #[inline]
    fn emit(&self, c: char) -> [f64; 4] {
        match (c as u32).checked_sub(HAN_FIRST) {
            Some(i) if c as u32 <= HAN_LAST => self.han[i as usize],
            _ => self.other.get(&c).copied().unwrap_or([MIN_FLOAT; 4]),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.han.len() * 32 + self.other.len() * 40
    }

    /// The most likely state sequence of `obs` (jieba's `viterbi`) into `states`;
    /// `back` is scratch.
    fn decode(&self, obs: &[char], back: &mut Vec<[u8; 4]>, states: &mut Vec<u8>) {
        let e0 = self.emit(obs[0]);
        let mut v: [f64; 4] = std::array::from_fn(|y| self.start[y] + e0[y]);
        back.clear();
        back.push([0; 4]);
        for &c in &obs[1..] {
            let mut nv = [0f64; 4];
            let mut bp = [0u8; 4];
            let ec = self.emit(c);
            for y in 0..4 {
                let em = ec[y];
                let (mut best, mut arg) = (f64::NEG_INFINITY, PREV[y][0]);
                for (k, &y0) in PREV[y].iter().enumerate() {
                    let p = v[y0] + self.trans[y0][y] + em;
                    if k == 0 || p > best || (p == best && LETTER[y0] > LETTER[arg]) {
                        (best, arg) = (p, y0);
                    }
                }
                (nv[y], bp[y]) = (best, arg as u8);
            }
            v = nv;
            back.push(bp);
        }
        let mut state = if v[S] > v[E] || (v[S] == v[E] && LETTER[S] > LETTER[E]) {
            S
        } else {
            E
        };
        states.clear();
        states.resize(obs.len(), 0);
        for t in (0..obs.len()).rev() {
            states[t] = state as u8;
            state = back[t][state] as usize;
        }
    }
}

/// A dictionary and, optionally, the HMM for unknown words.
pub struct Segmenter {
    dict: JiebaDict,
    hmm: Option<Viterbi>,
    /// Words the HMM may not produce whole (user words of frequency 0).
    force_split: HashSet<String>,
}

/// Per-thread buffers of [`Segmenter::cut_block`], reused across calls (allocating them
/// per block was visible in profiles of short lines). They grow to the longest block
/// seen, 24 bytes per character.
#[derive(Default)]
struct Scratch {
    offs: Vec<usize>,
    chars: Vec<char>,
    /// The HMM's back pointers and states.
    back: Vec<[u8; 4]>,
    states: Vec<u8>,
    route: Vec<(f64, usize)>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn is_han_block_char(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FD5}' | 'a'..='z' | 'A'..='Z' | '0'..='9' | '+' | '#' | '&' | '.' | '_' | '%' | '-')
}

fn is_han(c: char) -> bool {
    ('\u{4E00}'..='\u{9FD5}').contains(&c)
}

/// Module step 1: han blocks go to `block`, every other character (or `"\r\n"`) is a
/// token.
pub(crate) fn for_blocks<'t>(
    text: &'t str,
    out: &mut Vec<&'t str>,
    mut block: impl FnMut(&'t str, &mut Vec<&'t str>),
) {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if is_han_block_char(c) {
            let end = rest
                .find(|c: char| !is_han_block_char(c))
                .unwrap_or(rest.len());
            block(&rest[..end], out);
            rest = &rest[end..];
        } else {
            let n = if rest.starts_with("\r\n") {
                2
            } else {
                c.len_utf8()
            };
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
    }
}

/// One position of jieba's `calc`: the best `(score, end)` among the words offered.
pub(crate) struct RouteStep<'r> {
    route: &'r [(f64, usize)],
    ln_total: f64,
    best: Option<(f64, usize)>,
}

impl RouteStep<'_> {
    /// A word of `ln(freq)` = `lf` ending at char `x` (inclusive). Offer words in order
    /// of increasing `x`: later ones win ties, like Python's max over `(score, x)`.
    #[inline]
    pub(crate) fn offer(&mut self, x: usize, lf: f64) {
        let score = lf - self.ln_total + self.route[x + 1].0;
        if self.best.map_or(true, |(b, _)| score >= b) {
            self.best = Some((score, x));
        }
    }
}

/// jieba's `calc` over `n` characters, right to left: `route[i]` = (best score from `i`,
/// end of the first word), `route[n] = (0, 0)`. `words_at(i, step)` offers the words of
/// non-zero frequency starting at `i`; with none, the single character scores `ln 1`.
pub(crate) fn fill_route(
    n: usize,
    ln_total: f64,
    route: &mut Vec<(f64, usize)>,
    mut words_at: impl FnMut(usize, &mut RouteStep<'_>),
) {
    route.clear();
    route.resize(n + 1, (0.0, 0));
    for idx in (0..n).rev() {
        let mut step = RouteStep {
            route,
            ln_total,
            best: None,
        };
        words_at(idx, &mut step);
        let best = step
            .best
            .unwrap_or((0.0 - ln_total + route[idx + 1].0, idx));
        route[idx] = best;
    }
}

/// Module step 3 over a route: runs of single-character words (without the HMM, only
/// of ASCII letters and digits) go to `flush(start, end, out)` as char positions, the
/// other words out as they are.
pub(crate) fn emit_route<'t>(
    block: &'t str,
    offs: &[usize],
    chars: &[char],
    route: &[(f64, usize)],
    hmm: bool,
    out: &mut Vec<&'t str>,
    mut flush: impl FnMut(usize, usize, &mut Vec<&'t str>),
) {
    let n = chars.len();
    let mut x = 0;
    let mut buf_start: Option<usize> = None;
    while x < n {
        let y = route[x].1 + 1;
        let single = y - x == 1;
        if single && (hmm || chars[x].is_ascii_alphanumeric()) {
            buf_start.get_or_insert(x);
        } else {
            if let Some(s) = buf_start.take() {
                flush(s, x, out);
            }
            out.push(&block[offs[x]..offs[y]]);
        }
        x = y;
    }
    if let Some(s) = buf_start {
        flush(s, n, out);
    }
}

/// `emit_route` without the HMM: a run is one token.
pub(crate) fn emit_no_hmm<'t>(
    block: &'t str,
    offs: &[usize],
    chars: &[char],
    route: &[(f64, usize)],
    out: &mut Vec<&'t str>,
) {
    emit_route(block, offs, chars, route, false, out, |s, e, out| {
        out.push(&block[offs[s]..offs[e]])
    });
}

impl Segmenter {
    pub fn new(dict: JiebaDict, hmm: Option<Hmm>, force_split: HashSet<String>) -> Self {
        Self {
            dict,
            hmm: hmm.map(Viterbi::new),
            force_split,
        }
    }

    pub fn has_hmm(&self) -> bool {
        self.hmm.is_some()
    }

    pub fn heap_bytes(&self) -> usize {
        self.dict.heap_bytes() + self.hmm.as_ref().map_or(0, Viterbi::heap_bytes)
    }

    /// Appends the tokens of `text` to `out` (`jieba.cut(text, HMM=hmm)`).
    pub fn cut<'t>(&self, text: &'t str, hmm: bool, out: &mut Vec<&'t str>) -> Result<()> {
        if hmm && self.hmm.is_none() {
            return Err(HanpackError::InvalidArgument(
                "this segmenter has no HMM (load one, or pass hmm=False)".into(),
            ));
        }
        for_blocks(text, out, |block, out| self.cut_block(block, hmm, out));
        Ok(())
    }

    /// One han block: the route through the DAG, then the output rules of module step 3.
    fn cut_block<'t>(&self, block: &'t str, hmm: bool, out: &mut Vec<&'t str>) {
        SCRATCH.with(|cell| self.cut_block_with(block, hmm, out, &mut cell.borrow_mut()));
    }

    fn cut_block_with<'t>(
        &self,
        block: &'t str,
        hmm: bool,
        out: &mut Vec<&'t str>,
        scratch: &mut Scratch,
    ) {
        let Scratch {
            offs,
            chars,
            back,
            states,
            route,
        } = scratch;
        offs.clear();
        chars.clear();
        for (i, c) in block.char_indices() {
            offs.push(i);
            chars.push(c);
        }
        offs.push(block.len());
        let (offs, chars) = (&offs[..], &chars[..]);
        let n = chars.len();
        // route[i] = (best score from i, end of the first word); route[n] = (0, 0).
        let dict = &self.dict;
        fill_route(n, dict.ln_total, route, |idx, step| {
            for (v, len) in dict.trie.common_prefix_search(chars[idx..].iter().copied()) {
                let x = idx + len - 1;
                if let Some(lf) = dict.ln_of_value(v, || block[offs[idx]..offs[x + 1]].to_string())
                {
                    step.offer(x, lf);
                }
            }
        });
        emit_route(block, offs, chars, route, hmm, out, |s, e, out| {
            // The run of single-character words `[s, e)`.
            let text = &block[offs[s]..offs[e]];
            match &self.hmm {
                Some(h) if hmm && e - s > 1 => {
                    if dict.ln_freq_of(text).is_some() {
                        out.extend((s..e).map(|i| &block[offs[i]..offs[i + 1]]));
                    } else {
                        let run = Run {
                            block,
                            offs: &offs[s..=e],
                            chars: &chars[s..e],
                        };
                        finalseg(h, &self.force_split, &run, back, states, out);
                    }
                }
                _ => out.push(text),
            }
        });
    }
}

/// A run of characters of a block: `chars[k]` is `block[offs[k]..offs[k + 1]]`.
struct Run<'t, 'r> {
    block: &'t str,
    offs: &'r [usize],
    chars: &'r [char],
}

/// jieba's `finalseg.cut` on a run of characters; `back` and `states` are scratch.
fn finalseg<'t>(
    hmm: &Viterbi,
    force_split: &HashSet<String>,
    run: &Run<'t, '_>,
    back: &mut Vec<[u8; 4]>,
    states: &mut Vec<u8>,
    out: &mut Vec<&'t str>,
) {
    let Run { block, offs, chars } = *run;
    let mut i = 0;
    while i < chars.len() {
        let j = (i..chars.len())
            .find(|&j| is_han(chars[j]) != is_han(chars[i]))
            .unwrap_or(chars.len());
        if is_han(chars[i]) {
            // A force-split word (a user word of frequency 0) comes out char by char.
            let mut push = |a: usize, b: usize| {
                let w = &block[offs[a]..offs[b]];
                if b - a > 1 && !force_split.is_empty() && force_split.contains(w) {
                    out.extend((a..b).map(|k| &block[offs[k]..offs[k + 1]]));
                } else {
                    out.push(w);
                }
            };
            hmm.decode(&chars[i..j], back, states);
            let (mut begin, mut next) = (i, i);
            for (k, &st) in states.iter().enumerate() {
                let p = i + k;
                match st as usize {
                    B => begin = p,
                    E => {
                        push(begin, p + 1);
                        next = p + 1;
                    }
                    S => {
                        push(p, p + 1);
                        next = p + 1;
                    }
                    _ => {}
                }
            }
            if next < j {
                push(next, j);
            }
        } else {
            skip_split(&block[offs[i]..offs[j]], out);
        }
        i = j;
    }
}

/// `re.split("([a-zA-Z0-9]+(?:\.\d+)?%?)", s)` without the empty parts. Inside a han
/// block `\d` can only meet ASCII digits.
fn skip_split<'t>(s: &'t str, out: &mut Vec<&'t str>) {
    let b = s.as_bytes();
    let (mut i, mut pending) = (0, 0);
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            i += if b[i] < 0x80 {
                1
            } else {
                s[i..].chars().next().map_or(1, char::len_utf8)
            };
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
        if i < b.len() && b[i] == b'%' {
            i += 1;
        }
        if pending < start {
            out.push(&s[pending..start]);
        }
        out.push(&s[start..i]);
        pending = i;
    }
    if pending < b.len() {
        out.push(&s[pending..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(dict: &str) -> Segmenter {
        Segmenter::new(
            JiebaDict::parse(dict, "test").unwrap(),
            None,
            HashSet::new(),
        )
    }

    fn cut(s: &Segmenter, text: &str) -> Vec<String> {
        let mut out = vec![];
        s.cut(text, false, &mut out).unwrap();
        assert_eq!(out.concat(), text);
        out.into_iter().map(String::from).collect()
    }

    #[test]
    fn route_prefers_frequent_words_and_joins_ascii() {
        let s =
            seg("我们 100 n\n喜欢 50 v\n喜 10 v\n欢 10 v\n北京 80 ns\n北京大学 20 nt\n大学 60 n\n");
        assert_eq!(cut(&s, "我们喜欢北京大学"), ["我们", "喜欢", "北京大学"]);
        assert_eq!(
            cut(&s, "abc12 我们\r\n!"),
            ["abc12", " ", "我们", "\r\n", "!"]
        );
    }

    #[test]
    fn bad_dictionaries_are_errors() {
        for bad in ["word\n", "word x\n", "", " 3\n"] {
            assert!(JiebaDict::parse(bad, "d").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn skip_split_matches_the_regex() {
        let mut out = vec![];
        skip_split("+#3.5%ab.c7.x", &mut out);
        assert_eq!(out, ["+#", "3.5%", "ab", ".", "c7", ".", "x"]); // as Python's re.split gives
    }
}
