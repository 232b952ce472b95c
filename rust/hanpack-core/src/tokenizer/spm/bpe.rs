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
//! Scores are f32 compared as sentencepiece compares them (`<`, ties by position).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use hashbrown::HashMap;

use super::prefix_matcher::PrefixMatcher;
use super::proto::PieceType;
use super::vocab::PieceTable;
use super::Token;
use crate::tokenizer::utf8::one_char_len;

#[derive(Clone, Copy, Debug)]
struct Symbol {
    /// Byte range of the symbol's text in the normalized string; empty once merged away.
    start: u32,
    end: u32,
    /// Neighbour indices, -1 at either end.
    prev: i32,
    next: i32,
    /// A USER_DEFINED symbol: never merged.
    freeze: bool,
}

#[derive(Clone, Copy, Debug)]
struct Pair {
    score: f32,
    left: u32,
    right: u32,
    /// Byte length of the merged piece when the pair was pushed (stale check).
    size: u32,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Greater = popped first: higher score, then smaller `left`.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// Buffers reused across calls on one thread.
#[derive(Default)]
pub struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Pair>,
}

pub struct BpeModel {
    /// The vocabulary has UNUSED pieces, so resegmentation may be needed.
    has_unused: bool,
}

impl BpeModel {
    pub fn new(table: &PieceTable) -> Self {
        let has_unused = (0..table.len() as u32).any(|i| table.piece_type(i) == PieceType::Unused);
        Self { has_unused }
    }

    /// Encodes normalized `text`, appending (range, id) tokens where id is
    /// `PieceToId(piece)` (`unk` when the piece is not in the vocabulary).
    pub fn encode(
        &self,
        table: &PieceTable,
        matcher: Option<&PrefixMatcher>,
        unk: u32,
        text: &str,
        scratch: &mut BpeScratch,
        out: &mut Vec<Token>,
    ) {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return;
        }
        let symbols = &mut scratch.symbols;
        let heap = &mut scratch.heap;
        symbols.clear();
        heap.clear();

        // Split into characters / frozen user-defined symbols.
        let mut pos = 0usize;
        while pos < bytes.len() {
            let (len, freeze) = match matcher.and_then(|m| m.longest(&bytes[pos..])) {
                Some(len) => (len, true),
                None => (one_char_len(bytes[pos]).min(bytes.len() - pos), false),
            };
            let index = symbols.len() as i32;
            symbols.push(Symbol {
                start: pos as u32,
                end: (pos + len) as u32,
                prev: index - 1,
                next: if pos + len == bytes.len() { -1 } else { index + 1 },
                freeze,
            });
            pos += len;
        }

        let mut rev_merge: Option<RevMerge> = self.has_unused.then(HashMap::new);
        let ctx = Ctx { table, text };

        for i in 1..symbols.len() {
            ctx.maybe_add(symbols, heap, &mut rev_merge, i as i32 - 1, i as i32);
        }

        while let Some(top) = heap.pop() {
            let (l, r) = (symbols[top.left as usize], symbols[top.right as usize]);
            if l.start == l.end || r.start == r.end || (l.end - l.start) + (r.end - r.start) != top.size {
                continue;
            }
            let left = top.left as usize;
            symbols[left].end = r.end;
            symbols[left].next = r.next;
            if r.next >= 0 {
                symbols[r.next as usize].prev = left as i32;
            }
            let right = &mut symbols[top.right as usize];
            right.start = right.end;
            let (prev, next) = (symbols[left].prev, symbols[left].next);
            ctx.maybe_add(symbols, heap, &mut rev_merge, prev, left as i32);
            ctx.maybe_add(symbols, heap, &mut rev_merge, left as i32, next);
        }

        let lookup = |range: &std::ops::Range<u32>| -> u32 {
            table.lookup(&text[range.start as usize..range.end as usize]).unwrap_or(unk)
        };
        let mut index = 0i32;
        while index >= 0 {
            let s = symbols[index as usize];
            let range = s.start..s.end;
            match rev_merge.as_ref() {
                Some(rev) => resegment(table, text, rev, range, unk, out),
                None => out.push(Token { start: range.start, end: range.end, id: lookup(&range) }),
            }
            index = s.next;
        }
    }
}

type RevMerge<'a> = HashMap<&'a str, (std::ops::Range<u32>, std::ops::Range<u32>)>;

struct Ctx<'a> {
    table: &'a PieceTable,
    text: &'a str,
}

impl<'a> Ctx<'a> {
    /// Pushes the pair (left, right) if its concatenation is a piece.
    #[inline]
    fn maybe_add(&self, symbols: &[Symbol], heap: &mut BinaryHeap<Pair>, rev_merge: &mut Option<RevMerge<'a>>, left: i32, right: i32) {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        if l.freeze || r.freeze {
            return;
        }
        let piece = &self.text[l.start as usize..r.end as usize];
        let Some(id) = self.table.normal_id(piece) else { return };
        heap.push(Pair { score: self.table.score(id), left: left as u32, right: right as u32, size: r.end - l.start });
        if let Some(rev) = rev_merge.as_mut() {
            if self.table.piece_type(id) == PieceType::Unused {
                rev.insert(piece, (l.start..l.end, r.start..r.end));
            }
        }
    }
}

/// Splits UNUSED pieces back into the pair that formed them, recursively.
fn resegment(
    table: &PieceTable,
    text: &str,
    rev: &RevMerge<'_>,
    range: std::ops::Range<u32>,
    unk: u32,
    out: &mut Vec<Token>,
) {
    let piece = &text[range.start as usize..range.end as usize];
    let id = table.lookup(piece);
    let is_unused = id.is_some_and(|i| table.piece_type(i) == PieceType::Unused);
    if is_unused {
        if let Some((l, r)) = rev.get(piece) {
            resegment(table, text, rev, l.clone(), unk, out);
            resegment(table, text, rev, r.clone(), unk, out);
            return;
        }
    }
    out.push(Token { start: range.start, end: range.end, id: id.unwrap_or(unk) });
}
