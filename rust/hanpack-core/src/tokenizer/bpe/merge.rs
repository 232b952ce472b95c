//! The model stage: one pre-tokenized piece (bytes) → token ids, by merging adjacent
//! tokens in rank order (lowest rank first, leftmost on ties), as HF's `BPE` model and
//! tiktoken's `byte_pair_encode` do.
//!
//! * `ignore_merges` (LLaMA-3, tiktoken): a piece that is itself a token is that token.
//! * Short pieces (the common case: words) merge in a small array, rescanning it for the
//!   lowest rank after each merge — O(n²) but n is tiny and there is no allocation.
//! * Long pieces are first cut where no merge can cross (see [`super::cuts`]): on Chinese
//!   text most parts are one character, whose ids come from a per-thread cache.
//! * Long parts (a run of 10⁵ identical characters is a valid "word") use a linked list
//!   and the shared [`Agenda`] of candidate pairs: O(n log n), and O(1) per merge on long
//!   repetitive runs. Heap entries go stale when a neighbour
//!   merges; an entry is used only if its two nodes are still adjacent and the pair's
//!   current merge has the entry's rank (the same invariant as sentencepiece's agenda).
//! * [`reference_bpe`] is the plain scalar algorithm both paths are tested against.

use std::cell::RefCell;

use crate::tokenizer::agenda::{Agenda, Keyed, RUNS_FROM};
use crate::tokenizer::model_caches::{refill, ThreadCaches};
use crate::tokenizer::pair_filter::{mix, slot_index};

use super::cuts::{STICKY_AFTER, STICKY_BEFORE};
use super::vocab::{pair_key, Merge, Vocab, NO_ID};

/// Pieces up to this many bytes take the array path: rescanning a few pairs beats heap
/// upkeep. Longer ones (Chinese runs are one \p{L}+ piece of 50-200 bytes) take the heap:
/// the array path's O(n²) rescans and shifts measured 2x slower at those lengths.
pub(crate) const SHORT: usize = 12;

/// Direct-mapped per-thread cache of pair merges in front of the vocabulary's hash map:
/// a large vocabulary's pair map (LLaMA-3: 280k merges) misses the CPU caches, while the
/// pairs of real text repeat (as in `spm::bpe`). 2^14 slots (256 KiB): since Chinese runs
/// are cut into characters and short parts ([`cut_bpe`]), far fewer pairs are looked up,
/// and 2^16 slots measured ~5% slower (a 1 MiB cache crowding the others out of L2).
const PAIR_SLOTS: usize = 1 << 14;

#[derive(Clone, Copy)]
struct PairSlot {
    key: u64,
    /// `NO_MERGE` when the pair does not merge.
    merge: Merge,
}

const NO_MERGE: Merge = Merge {
    rank: u32::MAX,
    id: NO_ID,
};

/// Direct-mapped per-thread cache of single characters: their cut flags and the ids BPE
/// gives the character alone (at most one per byte). 2^13 slots (192 KiB) hold the
/// common Chinese characters.
const CHAR_SLOTS: usize = 1 << 13;

#[derive(Clone, Copy)]
struct CharSlot {
    ch: u32,
    /// `cuts::STICKY_*` bits.
    flags: u8,
    n: u8,
    ids: [u32; 4],
}

/// Direct-mapped per-thread cache of short multi-character parts (two or three Chinese
/// characters, most of which repeat): keyed by their bytes packed into a u128.
const PART_SLOTS: usize = 1 << 12;
/// Parts of at most this many bytes are cached (their bytes and length fit the key).
const PART_MAX: usize = 15;

#[derive(Clone, Copy)]
struct PartSlot {
    key: u128,
    n: u8,
    ids: [u32; 6],
}

const EMPTY_PART: PartSlot = PartSlot {
    key: 0, // no part packs to 0: the length byte of a cached part is at least 2
    n: 0,
    ids: [NO_ID; 6],
};

#[inline]
fn part_key(bytes: &[u8]) -> u128 {
    let mut k = [0u8; 16];
    k[..bytes.len()].copy_from_slice(bytes);
    k[15] = bytes.len() as u8;
    u128::from_le_bytes(k)
}

const EMPTY_CHAR: CharSlot = CharSlot {
    ch: u32::MAX,
    flags: 0,
    n: 0,
    ids: [NO_ID; 4],
};

/// Buffers and the pair cache, reused across pieces on one thread.
#[derive(Default)]
struct Scratch {
    caches: ThreadCaches<Caches>,
    ids: Vec<u32>,
    ranks: Vec<Merge>,
    prev: Vec<u32>,
    next: Vec<u32>,
    heap: Agenda<Candidate>,
    /// Ids of one character or part on a cache miss.
    char_ids: Vec<u32>,
}

/// One vocabulary's answers.
#[derive(Default)]
struct Caches {
    pairs: Vec<PairSlot>,
    chars: Vec<CharSlot>,
    parts: Vec<PartSlot>,
}

impl Caches {
    fn reset(&mut self) {
        let empty_pair = PairSlot {
            key: u64::MAX,
            merge: NO_MERGE,
        };
        refill(&mut self.pairs, PAIR_SLOTS, empty_pair);
        refill(&mut self.chars, CHAR_SLOTS, EMPTY_CHAR);
        refill(&mut self.parts, PART_SLOTS, EMPTY_PART);
    }
}

/// Scratch buffers that grew past a piece of this many bytes are freed after the call.
const KEEP_SCRATCH_PIECE: usize = 4 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Scratch {
    #[inline]
    fn claim(&mut self, vocab: &Vocab) {
        self.caches.claim(vocab.cache_id, Caches::reset);
    }

    /// The cache slot of character `c` (`bytes`, its UTF-8), filled on a miss.
    #[inline]
    fn char_slot(&mut self, vocab: &Vocab, unk: Option<u32>, c: char, bytes: &[u8]) -> CharSlot {
        let at = slot_index(mix(c as u64), CHAR_SLOTS);
        let slot = self.caches.chars[at];
        if slot.ch == c as u32 {
            return slot;
        }
        let mut ids = std::mem::take(&mut self.char_ids);
        ids.clear();
        short_bpe(vocab, bytes, unk, self, &mut ids);
        let mut slot = CharSlot {
            ch: c as u32,
            flags: vocab.cuts.flags(c as u32, bytes),
            n: ids.len() as u8,
            ids: [NO_ID; 4],
        };
        slot.ids[..ids.len()].copy_from_slice(&ids);
        self.char_ids = ids;
        self.caches.chars[at] = slot;
        slot
    }

    /// Appends the ids of a short multi-character part (at most `PART_MAX` bytes),
    /// cached when it has at most six.
    #[inline]
    fn short_part(&mut self, vocab: &Vocab, unk: Option<u32>, bytes: &[u8], out: &mut Vec<u32>) {
        let key = part_key(bytes);
        let at = slot_index(mix(key as u64 ^ (key >> 64) as u64), PART_SLOTS);
        let slot = &self.caches.parts[at];
        if slot.key == key {
            out.extend_from_slice(&slot.ids[..slot.n as usize]);
            return;
        }
        let start = out.len();
        short_bpe(vocab, bytes, unk, self, out);
        let ids = &out[start..];
        if ids.len() <= 6 {
            let mut slot = PartSlot {
                key,
                n: ids.len() as u8,
                ids: [NO_ID; 6],
            };
            slot.ids[..ids.len()].copy_from_slice(ids);
            self.caches.parts[at] = slot;
        }
    }

    #[inline]
    fn merge(pairs: &mut [PairSlot], vocab: &Vocab, left: u32, right: u32) -> Merge {
        let key = pair_key(left, right);
        if !vocab.may_merge(key) {
            return NO_MERGE;
        }
        let slot = &mut pairs[slot_index(mix(key), PAIR_SLOTS)];
        if slot.key != key {
            *slot = PairSlot {
                key,
                merge: vocab.merge(left, right).unwrap_or(NO_MERGE),
            };
        }
        slot.merge
    }
}

/// Appends the ids of `piece` to `out`. `unk` is emitted for bytes without a token
/// (none in any real byte-level vocabulary); without one such bytes are dropped, as HF does.
pub fn encode_piece(vocab: &Vocab, piece: &[u8], unk: Option<u32>, out: &mut Vec<u32>) {
    if piece.is_empty() {
        return;
    }
    if vocab.ignore_merges || piece.len() == 1 {
        if let Some(id) = vocab.token_of_bytes(piece) {
            out.push(id);
            return;
        }
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.claim(vocab);
            if piece.len() <= SHORT {
                short_bpe(vocab, piece, unk, &mut scratch, out);
            } else {
                cut_bpe(vocab, piece, unk, &mut scratch, out);
            }
            // A huge piece leaves buffers of its size behind (~40 bytes per byte); they
            // are given back, so a thread's memory stays bounded by ordinary pieces.
            if scratch.ids.capacity() > KEEP_SCRATCH_PIECE {
                *scratch = Scratch::default();
            }
        }
        // Not re-entrant in practice; never panic if it were.
        Err(_) => out.extend(reference_bpe(vocab, piece, unk)),
    })
}

fn initial(vocab: &Vocab, piece: &[u8], unk: Option<u32>, ids: &mut Vec<u32>) {
    ids.clear();
    for &b in piece {
        match vocab.byte_ids[b as usize] {
            NO_ID => {
                if let Some(u) = unk {
                    ids.push(u);
                }
            }
            id => ids.push(id),
        }
    }
}

/// A long piece: cut where no merge can cross ([`super::cuts`]), each part merged on its
/// own; one-character parts come from the character cache.
fn cut_bpe(vocab: &Vocab, piece: &[u8], unk: Option<u32>, s: &mut Scratch, out: &mut Vec<u32>) {
    let Ok(text) = std::str::from_utf8(piece) else {
        return heap_bpe(vocab, piece, unk, s, out);
    };
    let mut part =
        |s: &mut Scratch, range: std::ops::Range<usize>, single: Option<CharSlot>| match single {
            Some(slot) => out.extend_from_slice(&slot.ids[..slot.n as usize]),
            None if range.len() <= PART_MAX => s.short_part(vocab, unk, &piece[range], out),
            None => heap_bpe(vocab, &piece[range], unk, s, out),
        };
    let mut chars = text.char_indices();
    let Some((_, first)) = chars.next() else {
        return;
    };
    let mut prev = (
        first,
        s.char_slot(vocab, unk, first, &piece[..first.len_utf8()]),
    );
    let (mut start, mut single) = (0, true);
    for (i, c) in chars {
        let slot = s.char_slot(vocab, unk, c, &piece[i..i + c.len_utf8()]);
        let sticky = prev.1.flags & STICKY_AFTER != 0 || slot.flags & STICKY_BEFORE != 0;
        if !sticky && !vocab.cuts.may_join(prev.0 as u32, c as u32) {
            part(s, start..i, single.then_some(prev.1));
            (start, single) = (i, true);
        } else {
            single = false;
        }
        prev = (c, slot);
    }
    part(s, start..piece.len(), single.then_some(prev.1));
}

fn short_bpe(vocab: &Vocab, piece: &[u8], unk: Option<u32>, s: &mut Scratch, out: &mut Vec<u32>) {
    let Scratch {
        caches, ids, ranks, ..
    } = s;
    let pairs = &mut caches.pairs;
    initial(vocab, piece, unk, ids);
    // ranks[i]: the merge of ids[i] and ids[i + 1].
    ranks.clear();
    for i in 1..ids.len() {
        ranks.push(Scratch::merge(pairs, vocab, ids[i - 1], ids[i]));
    }
    loop {
        let mut best = u32::MAX;
        let mut at = 0;
        for (i, m) in ranks.iter().enumerate() {
            if m.rank < best {
                best = m.rank;
                at = i;
            }
        }
        if best == u32::MAX {
            break;
        }
        ids[at] = ranks[at].id;
        ids.remove(at + 1);
        ranks.remove(at);
        if at > 0 {
            ranks[at - 1] = Scratch::merge(pairs, vocab, ids[at - 1], ids[at]);
        }
        if at < ranks.len() {
            ranks[at] = Scratch::merge(pairs, vocab, ids[at], ids[at + 1]);
        }
    }
    out.extend_from_slice(ids);
}

/// A candidate merge for the agenda, which pops the greatest key: the inverted rank in the
/// high 32 bits and the inverted left position in the low 32 bits, so the greatest key is
/// the lowest rank and, on ties, the leftmost pair. The agenda's run layer then makes a
/// long repetitive piece (a megabyte of spaces or of one letter) cost O(1) per merge.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate(u64);

impl Keyed for Candidate {
    #[inline]
    fn key(&self) -> u64 {
        self.0
    }
}

#[inline]
fn entry(rank: u32, left: u32) -> Candidate {
    Candidate((!rank as u64) << 32 | !left as u64)
}

fn heap_bpe(vocab: &Vocab, piece: &[u8], unk: Option<u32>, s: &mut Scratch, out: &mut Vec<u32>) {
    let Scratch {
        caches,
        ids,
        prev,
        next,
        heap,
        ranks,
        ..
    } = s;
    let pairs = &mut caches.pairs;
    initial(vocab, piece, unk, ids);
    let n = ids.len() as u32;
    // Doubly linked list over positions; `NONE` ends it. A merged-away node is marked by
    // `ids[i] == NO_ID`. `ranks[i]` is the merge of node i with its current successor, so
    // an entry is current exactly when its rank equals it (ranks name one merge each).
    const NONE: u32 = u32::MAX;
    prev.clear();
    prev.extend((0..n).map(|i| if i == 0 { NONE } else { i - 1 }));
    next.clear();
    next.extend((0..n).map(|i| if i + 1 == n { NONE } else { i + 1 }));
    ranks.clear();
    heap.start(n as usize >= RUNS_FROM);
    for i in 0..n as usize {
        let m = if i + 1 < n as usize {
            Scratch::merge(pairs, vocab, ids[i], ids[i + 1])
        } else {
            NO_MERGE
        };
        if m.rank != u32::MAX {
            heap.add_initial(entry(m.rank, i as u32));
        }
        ranks.push(m);
    }
    heap.finish_initial(); // O(n) heapify
    while let Some(Candidate(key)) = heap.pop() {
        let (rank, l) = (!(key >> 32) as u32, !(key as u32) as usize);
        if ids[l] == NO_ID || ranks[l].rank != rank {
            continue; // stale: the node was merged away, or its pair changed
        }
        let r = next[l] as usize;
        ids[l] = ranks[l].id;
        ids[r] = NO_ID;
        let after = next[r];
        next[l] = after;
        ranks[l] = NO_MERGE;
        if after != NONE {
            prev[after as usize] = l as u32;
            let m = Scratch::merge(pairs, vocab, ids[l], ids[after as usize]);
            if m.rank != u32::MAX {
                heap.push(entry(m.rank, l as u32));
            }
            ranks[l] = m;
        }
        let before = prev[l];
        if before != NONE {
            let m = Scratch::merge(pairs, vocab, ids[before as usize], ids[l]);
            if m.rank != u32::MAX {
                heap.push(entry(m.rank, before));
            }
            ranks[before as usize] = m;
        }
    }
    out.extend(ids.iter().copied().filter(|&id| id != NO_ID));
}

/// The plain algorithm (no fast paths): repeatedly merge the leftmost lowest-rank pair.
pub fn reference_bpe(vocab: &Vocab, piece: &[u8], unk: Option<u32>) -> Vec<u32> {
    if vocab.ignore_merges {
        if let Some(id) = vocab.token_of_bytes(piece) {
            return vec![id];
        }
    }
    let mut ids = Vec::new();
    initial(vocab, piece, unk, &mut ids);
    loop {
        let best = (0..ids.len().saturating_sub(1))
            .filter_map(|i| vocab.merge(ids[i], ids[i + 1]).map(|m| (m.rank, i, m.id)))
            .min();
        match best {
            Some((_, i, id)) => {
                ids[i] = id;
                ids.remove(i + 1);
            }
            None => return ids,
        }
    }
}

/// The fast paths on one piece (for tests: forces each path whatever the length):
/// short, heap, and cut into parts.
#[cfg(test)]
pub fn all_paths(vocab: &Vocab, piece: &[u8]) -> [Vec<u32>; 3] {
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let mut s = Scratch::default();
    s.claim(vocab);
    short_bpe(vocab, piece, None, &mut s, &mut a);
    heap_bpe(vocab, piece, None, &mut s, &mut b);
    cut_bpe(vocab, piece, None, &mut s, &mut c);
    [a, b, c]
}

/// The capacity of this thread's scratch id buffer (for tests of its bound).
#[cfg(test)]
pub fn scratch_ids_capacity() -> usize {
    SCRATCH.with(|s| s.borrow().ids.capacity())
}
