//! SentencePiece BPE encoding (`bpe_model.cc`), id for id.
//!
//! The normalized text is split into characters (a USER_DEFINED symbol is one frozen
//! symbol). Then, repeatedly, the adjacent pair whose concatenation is a piece with the
//! highest *score* is merged; ties go to the leftmost pair. Pairs wait in a max-heap;
//! an entry is stale when either side was emptied or grew since it was pushed, which is
//! exactly when `len(left) + len(right) != size` or a side is empty (sides only grow, so
//! the check is exact). UNUSED pieces take part in merging but are split back into the
//! pair that formed them ("resegmentation"), with sentencepiece's last-write-wins map.
//!
//! Speed: every symbol carries an id that names its text uniquely (the piece id, or
//! `CHAR_ID | codepoint` for a character that is not a piece), so "is left+right a
//! piece?" is asked of a small per-thread cache keyed by the two ids; only a cache miss
//! hashes the concatenated text into the piece table. A Bloom filter over all piece-forming
//! pairs first rejects the many bigrams that are not pieces. Measured on Chinese news text
//! (Chinese-LLaMA) these took encoding from ~40 to ~110 MB/s on one core.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use hashbrown::HashMap;

use crate::tokenizer::pair_filter::{mix, slot_index, PairFilter};

use super::prefix_matcher::PrefixMatcher;
use super::proto::PieceType;
use super::vocab::PieceTable;
use super::word_cache::WordCache;
use super::Token;
use crate::prefetch::prefetch_ptr;
use crate::tokenizer::agenda::{Agenda, Keyed, RUNS_FROM};
use crate::tokenizer::model_caches::{refill, ThreadCaches};

/// Ids at or above this are characters that are not pieces (`CHAR_ID | codepoint`).
const CHAR_ID: u32 = 0x8000_0000;
/// How far ahead of a long word's merge sweep and output walk symbols are requested
/// (the hardware prefetchers did not follow them: see `agenda`).
const SYMBOLS_AHEAD: usize = 32;
/// A pair that is not a piece, in the pair cache.
const NOT_A_PIECE: u32 = u32::MAX;

/// A user-defined symbol (never merged), as a bit of `Symbol::id` (piece ids stay below
/// it: see [`MAX_PIECES`]; `CHAR_ID | codepoint` has it clear, codepoints being < 2^21).
const FROZEN: u32 = 0x4000_0000;
/// Vocabularies at most this large: piece ids must leave `FROZEN` and `CHAR_ID` free.
pub const MAX_PIECES: usize = FROZEN as usize;
/// `Symbol::next` of a symbol merged into its left neighbour.
const MERGED: i32 = -1;

/// One symbol of the word being merged, 16 bytes (24 with its own end offset and flag
/// made a megabyte word's merge ~10% slower: it streams through the symbols).
///
/// Symbols are indexed by their first character, and symbol `n` (one past the last) is a
/// sentinel whose `start` is the text's length, so a live symbol's text is
/// `start..symbols[next].start`.
#[derive(Clone, Copy, Debug)]
struct Symbol {
    /// Byte offset of the symbol's text in the normalized string (never changes: a merge
    /// keeps the left symbol).
    start: u32,
    /// Neighbour indices: `prev` is -1 at the start; `next` is `MERGED` once merged away
    /// and the sentinel's index for the last symbol.
    prev: i32,
    next: i32,
    /// Names the text: a piece id, or `CHAR_ID | codepoint`; `FROZEN` set for a
    /// user-defined symbol (then a piece id or `NOT_A_PIECE`).
    id: u32,
}

/// The fields of a `Symbol` that a pair is formed from.
#[derive(Clone, Copy)]
struct SymbolFields {
    start: u32,
    id: u32,
    next: i32,
}

impl From<Symbol> for SymbolFields {
    #[inline(always)]
    fn from(s: Symbol) -> Self {
        SymbolFields {
            start: s.start,
            id: s.id,
            next: s.next,
        }
    }
}

impl Symbol {
    /// The id the symbol is emitted with.
    #[inline]
    fn token_id(&self, unk: u32) -> u32 {
        let id = self.id & !FROZEN;
        if id >= CHAR_ID {
            unk
        } else {
            id
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    /// Priority, compared as one integer: the score made order-preserving in the high 32
    /// bits, `!left` in the low 32 bits, so the greatest key is the highest score and, on
    /// ties, the leftmost pair (sentencepiece's comparator). Integer keys made heap
    /// operations ~2x cheaper than comparing (f32, u32) tuples.
    key: u64,
    /// The right side's `next` when the pair was pushed (stale check). The right side is
    /// not stored: it is the left's next symbol at pop time. That is the pushed right side
    /// exactly while the pair is valid, and whenever either side changed, the left is
    /// `MERGED` or its next symbol's `next` is no longer `end`: indices only grow, so if
    /// the left absorbed the right, its next symbol lies at or beyond `end` and that
    /// symbol's `next` beyond it; if the right grew, its `next` grew. 16-byte entries
    /// instead of 24 cut a long word's agenda traffic by a third.
    end: u32,
    /// The merged piece.
    id: u32,
}

/// Maps an f32 to a u32 in the order of sentencepiece 0.2.3's `SymbolPairComparator`,
/// which compares the IEEE bit patterns (so -0.0 sorts below +0.0, and NaNs sort by sign
/// beyond the infinities).
#[inline]
fn order_key(score: f32) -> u32 {
    let bits = score.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

impl Pair {
    #[inline]
    fn left(&self) -> u32 {
        !(self.key as u32)
    }
}

impl Keyed for Pair {
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
}

/// Direct-mapped caches, per thread: 2^16 piece-forming pairs (1 MiB) and 2^14 characters
/// (128 KiB, enough for the common Chinese characters; 2^12 measured ~5% slower). Until
/// `slot_index` took the hash's top bits by the table's size, only 2^14 pair slots were
/// reachable: on 8 MB of Chinese text (Chinese-LLaMA), after a first pass, 8% of pair
/// lookups then missed, 2.7% now. Larger tables (4 MiB of pairs, 256 KiB of characters,
/// 4 MiB of segments) measured no faster, from Python or in `examples/spm_encode`.
const PAIR_SLOTS: usize = 1 << 16;
const CHAR_SLOTS: usize = 1 << 14;

#[derive(Clone, Copy)]
struct PairSlot {
    key: u64,
    merged: u32,
    /// The merged piece's score as an `order_key`, kept here to save a random access.
    score: u32,
}

#[derive(Clone, Copy)]
struct CharSlot {
    ch: u32,
    id: u32,
}

/// Buffers and caches reused across calls on one thread.
#[derive(Default)]
pub struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: Agenda<Pair>,
    caches: ThreadCaches<Caches>,
}

/// One model's answers.
#[derive(Default)]
struct Caches {
    pairs: Vec<PairSlot>,
    chars: Vec<CharSlot>,
    /// Tokens of recently seen segments.
    words: WordCache,
}

impl Caches {
    fn reset(&mut self) {
        let empty_pair = PairSlot {
            key: u64::MAX,
            merged: NOT_A_PIECE,
            score: 0,
        };
        refill(&mut self.pairs, PAIR_SLOTS, empty_pair);
        refill(
            &mut self.chars,
            CHAR_SLOTS,
            CharSlot {
                ch: u32::MAX,
                id: 0,
            },
        );
        self.words.clear();
    }
}

static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(1);

/// The symbol id of `text` as the encoder assigns it: its piece id, `CHAR_ID | codepoint`
/// for a single character that is not a piece, `None` for a multi-character non-piece
/// (which can never be a symbol).
fn symbol_id(table: &PieceTable, text: &str) -> Option<u32> {
    if let Some(id) = table.normal_id(text) {
        return Some(id);
    }
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(CHAR_ID | c as u32),
        _ => None,
    }
}

pub struct BpeModel {
    /// Identifies this model to the per-thread caches.
    cache_id: u64,
    filter: PairFilter,
    /// The vocabulary has UNUSED pieces, so resegmentation may be needed.
    has_unused: bool,
    /// The text may be cut into segments encoded separately (see [`JoinFilter`]); off
    /// when UNUSED pieces exist, because resegmentation looks at the whole text.
    word_split: bool,
    /// Character bigrams that occur inside some piece.
    joins: JoinFilter,
}

/// The character bigrams (a, b) that occur adjacent inside some piece. Between two
/// characters whose bigram is in no piece, no merge can ever happen (every merged symbol
/// is a piece), so the text falls into segments that BPE treats independently: within a
/// segment merges happen in the same relative order as in the whole text (the global
/// heap's top is also the top of its own segment; ties stay leftmost). On Chinese text
/// with Chinese-LLaMA, segments average 1.5 characters (64% are single characters, which
/// need no BPE at all) and 97% of the rest repeat, so they come from a per-thread cache.
/// A false positive of the filter only joins two segments, which stays exact.
struct JoinFilter(PairFilter);

impl JoinFilter {
    fn new(table: &PieceTable) -> Self {
        let mut keys = Vec::new();
        for id in 0..table.len() as u32 {
            let piece = table.piece(id);
            let mut chars = piece.chars();
            let Some(mut a) = chars.next() else { continue };
            for b in chars {
                keys.push(Self::key(a, b));
                a = b;
            }
        }
        // Bigrams repeat across pieces; sized by distinct keys the filter stays small
        // enough for L1/L2 (its load is on the hot path of every character).
        keys.sort_unstable();
        keys.dedup();
        Self(PairFilter::new(&keys))
    }

    #[inline]
    fn key(a: char, b: char) -> u64 {
        (a as u64) << 32 | b as u64
    }

    #[inline]
    fn may_join(&self, a: char, b: char) -> bool {
        self.0.may_contain(Self::key(a, b))
    }
}

impl BpeModel {
    pub fn new(table: &PieceTable) -> Result<Self, String> {
        if table.len() >= MAX_PIECES {
            return Err(format!(
                "{} pieces: BPE models of at most {MAX_PIECES} are supported",
                table.len()
            ));
        }
        let has_unused = (0..table.len() as u32).any(|i| table.piece_type(i) == PieceType::Unused);
        // Every way a piece can be formed from two symbols.
        let mut keys = Vec::new();
        for (_, piece) in table.normal_pieces() {
            for (k, _) in piece.char_indices().skip(1) {
                if let (Some(a), Some(b)) =
                    (symbol_id(table, &piece[..k]), symbol_id(table, &piece[k..]))
                {
                    keys.push((a as u64) << 32 | b as u64);
                }
            }
        }
        let filter = PairFilter::new(&keys);
        let joins = JoinFilter::new(table);
        let cache_id = NEXT_MODEL_ID.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(Self {
            cache_id,
            filter,
            has_unused,
            word_split: !has_unused,
            joins,
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.filter.heap_bytes() + self.joins.0.heap_bytes()
    }

    /// Symbol id of one character.
    #[inline]
    fn char_id(table: &PieceTable, chars: &mut [CharSlot], text: &str, c: char) -> u32 {
        let slot = &mut chars[slot_index(mix(c as u64), CHAR_SLOTS)];
        if slot.ch == c as u32 {
            return slot.id;
        }
        let id = table.normal_id(text).unwrap_or(CHAR_ID | c as u32);
        *slot = CharSlot { ch: c as u32, id };
        id
    }

    /// Encodes normalized `text`, appending (range, id) tokens; a symbol that is not a
    /// normal piece gets `unk` (as sentencepiece 0.2.3, which looks symbols up with
    /// `PieceToIdNoReserved` and maps reserved pieces to unknown too).
    pub fn encode(
        &self,
        table: &PieceTable,
        matcher: Option<&PrefixMatcher>,
        unk: u32,
        text: &str,
        scratch: &mut BpeScratch,
        out: &mut Vec<Token>,
    ) {
        if text.is_empty() {
            return;
        }
        scratch.caches.claim(self.cache_id, Caches::reset);
        if !self.word_split {
            self.encode_word(table, matcher, unk, text, 0, scratch, out);
            return;
        }
        let mut chars = text.char_indices();
        let Some((_, mut prev)) = chars.next() else {
            return;
        };
        let mut start = 0usize;
        let mut segments = |ends: &[(u32, u32)], scratch: &mut BpeScratch, out: &mut Vec<Token>| {
            for &(end, last) in ends {
                let last = char::from_u32(last).unwrap_or(char::REPLACEMENT_CHARACTER);
                let end = end as usize;
                self.encode_segment(table, matcher, unk, text, start, end, last, scratch, out);
                start = end;
            }
        };
        // Segment ends (with their last characters) are collected first, up to 64 at a
        // time, and encoded after: the filter's loads then overlap instead of each waiting
        // behind a mispredicted branch on the previous answer (Chinese segments are 1-2
        // characters). Measured +3% on the Chinese corpora with Chinese-LLaMA.
        let mut ends = [(0u32, 0u32); 64];
        let mut n = 0usize;
        for (i, c) in chars {
            ends[n] = (i as u32, prev as u32);
            n += usize::from(!self.joins.may_join(prev, c));
            prev = c;
            if n == ends.len() {
                segments(&ends, scratch, out);
                n = 0;
            }
        }
        ends[n] = (text.len() as u32, prev as u32);
        segments(&ends[..=n], scratch, out);
    }

    /// One segment `text[start..end]` (see [`JoinFilter`]); `last` is its last character.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn encode_segment(
        &self,
        table: &PieceTable,
        matcher: Option<&PrefixMatcher>,
        unk: u32,
        text: &str,
        start: usize,
        end: usize,
        last: char,
        scratch: &mut BpeScratch,
        out: &mut Vec<Token>,
    ) {
        let word = &text[start..end];
        let base = start as u32;
        if word.len() == last.len_utf8() {
            // One character: it is its own token (a frozen user-defined symbol of one
            // character gets the same id, its piece id).
            let id = Self::char_id(table, &mut scratch.caches.chars, word, last);
            out.push(Token {
                start: base,
                end: end as u32,
                id: if id >= CHAR_ID { unk } else { id },
            });
            return;
        }
        let first = word.chars().next().unwrap_or(last);
        if matcher.is_none() && word.len() == first.len_utf8() + last.len_utf8() {
            // Two characters (a third of Chinese segments): one pair lookup, no string
            // hashing. (User-defined symbols could freeze one of them: not here.)
            let a = Self::char_id(
                table,
                &mut scratch.caches.chars,
                &word[..first.len_utf8()],
                first,
            );
            let b = Self::char_id(
                table,
                &mut scratch.caches.chars,
                &word[first.len_utf8()..],
                last,
            );
            let mid = base + first.len_utf8() as u32;
            match merged_pair(table, &self.filter, &mut scratch.caches.pairs, a, b, || {
                word
            }) {
                Some((merged, _)) => out.push(Token {
                    start: base,
                    end: end as u32,
                    id: merged,
                }),
                None => {
                    out.push(Token {
                        start: base,
                        end: mid,
                        id: if a >= CHAR_ID { unk } else { a },
                    });
                    out.push(Token {
                        start: mid,
                        end: end as u32,
                        id: if b >= CHAR_ID { unk } else { b },
                    });
                }
            }
            return;
        }
        if scratch.caches.words.get(word.as_bytes(), |s, e, id| {
            out.push(Token {
                start: s + base,
                end: e + base,
                id,
            })
        }) {
            return;
        }
        let first = out.len();
        self.encode_word(table, matcher, unk, word, base, scratch, out);
        scratch.caches.words.insert(
            word.as_bytes(),
            out[first..]
                .iter()
                .map(|t| (t.start - base, t.end - base, t.id)),
        );
    }

    /// BPE over one span of the normalized text (the whole text, or one word when words
    /// are independent); token offsets are shifted by `base`.
    #[allow(clippy::too_many_arguments)]
    fn encode_word(
        &self,
        table: &PieceTable,
        matcher: Option<&PrefixMatcher>,
        unk: u32,
        text: &str,
        base: u32,
        scratch: &mut BpeScratch,
        out: &mut Vec<Token>,
    ) {
        let BpeScratch {
            symbols,
            heap,
            caches,
        } = scratch;
        let Caches { pairs, chars, .. } = &mut **caches;
        symbols.clear();

        // Split into characters / frozen user-defined symbols.
        let bytes = text.as_bytes();
        let mut pos = 0usize;
        for (i, c) in text.char_indices() {
            if i < pos {
                continue; // inside a user-defined symbol
            }
            let index = symbols.len() as i32;
            let frozen = matcher.and_then(|m| m.longest(&bytes[i..]));
            let (len, id) = match frozen {
                Some(len) => (
                    len,
                    FROZEN | table.normal_id(&text[i..i + len]).unwrap_or(NOT_A_PIECE),
                ),
                None => {
                    let len = c.len_utf8();
                    (len, Self::char_id(table, chars, &text[i..i + len], c))
                }
            };
            pos = i + len;
            symbols.push(Symbol {
                start: i as u32,
                prev: index - 1,
                next: index + 1,
                id,
            });
        }
        let n = symbols.len();
        symbols.push(Symbol {
            start: text.len() as u32,
            prev: n as i32 - 1,
            // Never a pushed pair's `end`, so a left whose next symbol is the sentinel is stale.
            next: i32::MAX,
            id: FROZEN | NOT_A_PIECE,
        });

        let mut rev_merge: Option<RevMerge> = self.has_unused.then(HashMap::new);
        let mut ctx = Ctx {
            table,
            text,
            pairs,
            filter: &self.filter,
            recent: [(u64::MAX, None); 2],
        };

        heap.start(n >= RUNS_FROM);
        for i in 1..n {
            if let Some(p) = ctx.pair(symbols, &mut rev_merge, i as i32 - 1, i as i32) {
                heap.add_initial(p);
            }
        }
        heap.finish_initial();

        let long = n >= RUNS_FROM;
        while let Some(top) = heap.pop() {
            // The right side is the left's current neighbour (see `Pair`).
            let left = top.left() as usize;
            if long {
                // Long words merge in left-to-right sweeps (see `agenda`); ask for the
                // symbols the sweep reaches next.
                prefetch_ptr(symbols.as_ptr().wrapping_add(left + SYMBOLS_AHEAD));
            }
            // Fields are read and written one by one, and the new pairs are formed from the
            // values held here: a symbol read whole (16 bytes) right after one of its
            // fields was written (4 bytes) waits for the store to retire (store forwarding
            // fails), and so did a symbol assembled on the stack and stored whole. That wait
            // was the hottest spot of 1 MB of 'a'.
            let l_next = symbols[left].next;
            if l_next == MERGED {
                continue;
            }
            let right_index = l_next as usize;
            let r_next = symbols[right_index].next;
            if r_next as u32 != top.end {
                continue;
            }
            let next = r_next as usize;
            let merged = SymbolFields {
                start: symbols[left].start,
                id: top.id,
                next: r_next,
            };
            let prev = symbols[left].prev;
            let after = SymbolFields {
                start: symbols[next].start,
                id: symbols[next].id,
                next: symbols[next].next,
            };
            symbols[left].id = top.id;
            symbols[left].next = r_next;
            symbols[next].prev = left as i32;
            symbols[right_index].next = MERGED;
            if prev >= 0 {
                let b = &symbols[prev as usize];
                let before = SymbolFields {
                    start: b.start,
                    id: b.id,
                    next: left as i32,
                };
                if let Some(p) = ctx.pair_of(symbols, &mut rev_merge, prev, before, merged) {
                    heap.push(p);
                }
            }
            if let Some(p) = ctx.pair_of(symbols, &mut rev_merge, left as i32, merged, after) {
                heap.push(p);
            }
        }

        let mut index = 0usize;
        while index < n {
            if long {
                prefetch_ptr(symbols.as_ptr().wrapping_add(index + SYMBOLS_AHEAD));
            }
            let s = symbols[index];
            let next = s.next as usize;
            let range = s.start..symbols[next].start;
            if let Some(rev) = rev_merge.as_ref() {
                // Only whole texts are resegmented (`word_split` is off with UNUSED pieces).
                resegment(table, text, rev, range, unk, out);
            } else {
                out.push(Token {
                    start: range.start + base,
                    end: range.end + base,
                    id: s.token_id(unk),
                });
            }
            index = next;
        }
    }
}

/// The piece that symbols `left` + `right` (whose concatenated text is `piece()`) merge
/// into, with its score as an `order_key`; `None` if the concatenation is not a piece.
/// The text is only cut out on a cache miss (slicing checks char boundaries, which was a
/// measurable part of long repetitive words, where the cache nearly always hits).
#[inline]
fn merged_pair<'t>(
    table: &PieceTable,
    filter: &PairFilter,
    pairs: &mut [PairSlot],
    left: u32,
    right: u32,
    piece: impl FnOnce() -> &'t str,
) -> Option<(u32, u32)> {
    let key = (left as u64) << 32 | right as u64;
    if !filter.may_contain(key) {
        return None;
    }
    let slot = &mut pairs[slot_index(mix(key), PAIR_SLOTS)];
    if slot.key != key {
        let merged = table.normal_id(piece()).unwrap_or(NOT_A_PIECE);
        let score = if merged == NOT_A_PIECE {
            0
        } else {
            order_key(table.score(merged))
        };
        *slot = PairSlot { key, merged, score };
    }
    (slot.merged != NOT_A_PIECE).then_some((slot.merged, slot.score))
}

type RevMerge<'a> = HashMap<&'a str, (std::ops::Range<u32>, std::ops::Range<u32>)>;

struct Ctx<'a, 'c> {
    table: &'a PieceTable,
    filter: &'a PairFilter,
    text: &'a str,
    pairs: &'c mut [PairSlot],
    /// The last two (pair key, answer) lookups, most recent first: a repetitive word asks
    /// about the same few pairs over and over (1 MB of 'a' alternates between two), and
    /// this skips the filter's and the cache's hashing and loads.
    recent: [(u64, Option<(u32, u32)>); 2],
}

impl<'a> Ctx<'a, '_> {
    /// The pair (left, right) if its concatenation is a piece (sentencepiece's
    /// `MaybeAddNewSymbolPair`, minus the push).
    ///
    /// Always inlined: returned from an out-of-line call, the pair went through memory
    /// written in 4-byte halves and read back in 8-byte words, which stalled on store
    /// forwarding (~30% of a megabyte word's time).
    #[inline(always)]
    fn pair(
        &mut self,
        symbols: &[Symbol],
        rev_merge: &mut Option<RevMerge<'a>>,
        left: i32,
        right: i32,
    ) -> Option<Pair> {
        if left < 0 {
            return None;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        self.pair_of(symbols, rev_merge, left, l.into(), r.into())
    }

    /// `pair` with the two symbols' fields given (`l` at index `left`, `r` its next
    /// symbol): passed as fields, not as `Symbol`s, because a `Symbol` built here was
    /// copied through the stack in one 16-byte load after 4-byte stores.
    #[inline(always)]
    fn pair_of(
        &mut self,
        symbols: &[Symbol],
        rev_merge: &mut Option<RevMerge<'a>>,
        left: i32,
        l: SymbolFields,
        r: SymbolFields,
    ) -> Option<Pair> {
        // The sentinel (right of the last symbol) is frozen, so no pair reaches past it.
        if (l.id | r.id) & FROZEN != 0 {
            return None;
        }
        let text = self.text;
        // The closures take copies: capturing `l` or `r` by reference kept them in memory,
        // where they were stored field by field and then loaded whole.
        let (l_start, r_next) = (l.start, r.next);
        let end = move || symbols[r_next as usize].start;
        let key = (l.id as u64) << 32 | r.id as u64;
        let (merged, score) = if self.recent[0].0 == key {
            self.recent[0].1
        } else if self.recent[1].0 == key {
            self.recent.swap(0, 1);
            self.recent[0].1
        } else {
            let found = merged_pair(self.table, self.filter, self.pairs, l.id, r.id, move || {
                &text[l_start as usize..end() as usize]
            });
            self.recent = [(key, found), self.recent[0]];
            found
        }?;
        if let Some(rev) = rev_merge.as_mut() {
            if self.table.piece_type(merged) == PieceType::Unused {
                rev.insert(
                    &self.text[l.start as usize..end() as usize],
                    (l.start..r.start, r.start..end()),
                );
            }
        }
        Some(Pair {
            key: (score as u64) << 32 | !(left as u32) as u64,
            end: r.next as u32,
            id: merged,
        })
    }
}

/// Splits UNUSED pieces back into the pair that formed them, recursively (at most 100
/// levels deep, as sentencepiece 0.2.3 limits it).
fn resegment(
    table: &PieceTable,
    text: &str,
    rev: &RevMerge<'_>,
    range: std::ops::Range<u32>,
    unk: u32,
    out: &mut Vec<Token>,
) {
    resegment_at(table, text, rev, range, unk, out, 0)
}

const MAX_RESEGMENT_DEPTH: u32 = 100;

fn resegment_at(
    table: &PieceTable,
    text: &str,
    rev: &RevMerge<'_>,
    range: std::ops::Range<u32>,
    unk: u32,
    out: &mut Vec<Token>,
    depth: u32,
) {
    let piece = &text[range.start as usize..range.end as usize];
    let id = table.normal_id(piece);
    let push = |out: &mut Vec<Token>, id: u32| {
        out.push(Token {
            start: range.start,
            end: range.end,
            id,
        })
    };
    match id {
        // Past the depth limit sentencepiece emits the piece as looked up.
        _ if depth > MAX_RESEGMENT_DEPTH => {
            push(out, id.or_else(|| table.lookup(piece)).unwrap_or(unk))
        }
        None => push(out, unk),
        Some(i) if table.piece_type(i) != PieceType::Unused => push(out, i),
        Some(_) => match rev.get(piece) {
            None => push(out, unk),
            Some((l, r)) => {
                resegment_at(table, text, rev, l.clone(), unk, out, depth + 1);
                resegment_at(table, text, rev, r.clone(), unk, out, depth + 1);
            }
        },
    }
}
