//! The model stage: one pre-tokenized piece (bytes) → token ids, by merging adjacent
//! tokens in rank order (lowest rank first, leftmost on ties), as HF's `BPE` model and
//! tiktoken's `byte_pair_encode` do.
//!
//! * `ignore_merges` (LLaMA-3, tiktoken): a piece that is itself a token is that token.
//! * Short pieces (the common case: words) merge in a small array, rescanning it for the
//!   lowest rank after each merge — O(n²) but n is tiny and there is no allocation.
//! * Long pieces (a run of 10⁵ identical characters is a valid "word") use a linked list
//!   and a heap of candidate pairs, O(n log n). Heap entries go stale when a neighbour
//!   merges; an entry is used only if its two nodes are still adjacent and the pair's
//!   current merge has the entry's rank (the same invariant as sentencepiece's agenda).
//! * [`reference_bpe`] is the plain scalar algorithm both paths are tested against.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::vocab::{Vocab, NO_ID};

/// Pieces up to this many bytes take the array path (measured crossover is far above
/// typical word lengths; the heap only matters for pathological inputs).
const SHORT: usize = 128;

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
    if piece.len() <= SHORT {
        short_bpe(vocab, piece, unk, out);
    } else {
        long_bpe(vocab, piece, unk, out);
    }
}

fn initial(vocab: &Vocab, piece: &[u8], unk: Option<u32>, ids: &mut Vec<u32>) {
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

fn short_bpe(vocab: &Vocab, piece: &[u8], unk: Option<u32>, out: &mut Vec<u32>) {
    let mut ids: Vec<u32> = Vec::with_capacity(piece.len());
    initial(vocab, piece, unk, &mut ids);
    // ranks[i]: the merge of ids[i] and ids[i + 1] (rank u32::MAX = none).
    let mut merges: Vec<(u32, u32)> = ids
        .windows(2)
        .map(|w| vocab.merge(w[0], w[1]).map_or((u32::MAX, NO_ID), |m| (m.rank, m.id)))
        .collect();
    loop {
        let mut best = u32::MAX;
        let mut at = 0;
        for (i, &(rank, _)) in merges.iter().enumerate() {
            if rank < best {
                best = rank;
                at = i;
            }
        }
        if best == u32::MAX {
            break;
        }
        ids[at] = merges[at].1;
        ids.remove(at + 1);
        merges.remove(at);
        let get = |l: u32, r: u32| vocab.merge(l, r).map_or((u32::MAX, NO_ID), |m| (m.rank, m.id));
        if at > 0 {
            merges[at - 1] = get(ids[at - 1], ids[at]);
        }
        if at < merges.len() {
            merges[at] = get(ids[at], ids[at + 1]);
        }
    }
    out.extend_from_slice(&ids);
}

fn long_bpe(vocab: &Vocab, piece: &[u8], unk: Option<u32>, out: &mut Vec<u32>) {
    let mut ids: Vec<u32> = Vec::with_capacity(piece.len());
    initial(vocab, piece, unk, &mut ids);
    let n = ids.len();
    // Doubly linked list over positions; `NONE` ends it. A merged-away node is marked
    // by `ids[i] == NO_ID`.
    const NONE: usize = usize::MAX;
    let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
    let mut next: Vec<usize> = (0..n).map(|i| if i + 1 == n { NONE } else { i + 1 }).collect();
    // (rank, left position, right position): ties go to the leftmost pair.
    let mut heap: BinaryHeap<Reverse<(u32, usize, usize)>> = BinaryHeap::with_capacity(n);
    for i in 0..n.saturating_sub(1) {
        if let Some(m) = vocab.merge(ids[i], ids[i + 1]) {
            heap.push(Reverse((m.rank, i, i + 1)));
        }
    }
    while let Some(Reverse((rank, l, r))) = heap.pop() {
        if ids[l] == NO_ID || ids[r] == NO_ID || next[l] != r {
            continue; // stale: one side was merged away
        }
        let m = match vocab.merge(ids[l], ids[r]) {
            Some(m) if m.rank == rank => m,
            _ => continue, // stale: a side changed into another token
        };
        ids[l] = m.id;
        ids[r] = NO_ID;
        let after = next[r];
        next[l] = after;
        if after != NONE {
            prev[after] = l;
            if let Some(m) = vocab.merge(ids[l], ids[after]) {
                heap.push(Reverse((m.rank, l, after)));
            }
        }
        let before = prev[l];
        if before != NONE {
            if let Some(m) = vocab.merge(ids[before], ids[l]) {
                heap.push(Reverse((m.rank, before, l)));
            }
        }
    }
    out.extend(ids.into_iter().filter(|&id| id != NO_ID));
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

/// Both fast paths on one piece (for tests: forces the heap path on short pieces too).
#[cfg(test)]
pub fn both_paths(vocab: &Vocab, piece: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    short_bpe(vocab, piece, None, &mut a);
    long_bpe(vocab, piece, None, &mut b);
    (a, b)
}
