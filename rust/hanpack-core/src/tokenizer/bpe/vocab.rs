//! The vocabulary of a byte-level BPE model: ids ↔ bytes ↔ piece strings, and the merge
//! table keyed by the ids of the two parts.
//!
//! Merge priority is the *rank*, lower first (ties: leftmost). This is not SentencePiece's
//! piece score (higher first) and the two never share a field. Where the rank comes from:
//! * HF `tokenizer.json` / `vocab.json` + `merges.txt`: the merge's line in the merges list.
//! * tiktoken rank files: the rank of the merged token, for *every* split of a token into
//!   two tokens, since tiktoken merges any adjacent pair whose concatenation has a rank.
//!   With that table, merging by pair rank gives exactly tiktoken's result.

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

use super::bytelevel;
use super::cuts::CutFilter;
use crate::error::{HanpackError, Result};
use crate::tokenizer::padded::ByteArena;
use crate::tokenizer::pair_filter::PairFilter;

pub type FxMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// No id (a byte without a token).
pub const NO_ID: u32 = u32::MAX;

/// What merging the pair gives: its priority and the merged token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// Lower merges first.
    pub rank: u32,
    /// The id of the merged token.
    pub id: u32,
}

#[inline]
pub fn pair_key(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

#[derive(Debug, Clone)]
pub struct Vocab {
    /// id → the bytes it decodes to (no entry for ids no token uses), in one padded arena
    /// (one allocation, and short tokens decode with one fixed-size copy).
    bytes: ByteArena,
    /// id → the piece as the file spells it (byte-level string, or an added token's text).
    pieces: Vec<Box<str>>,
    piece_ids: FxMap<Box<str>, u32>,
    /// Model tokens by their bytes, for the whole-piece lookup (`ignore_merges`, tiktoken).
    /// Tokens whose piece is not a byte-level string are absent: no input can produce them.
    by_bytes: FxMap<Box<[u8]>, u32>,
    /// byte → its single-byte token (`NO_ID` if the vocabulary lacks it).
    pub byte_ids: [u32; 256],
    pairs: FxMap<u64, Merge>,
    /// Every key of `pairs`, for the quick "no merge" answer (see [`PairFilter`]).
    filter: PairFilter,
    /// Where long pieces may be cut into independently merged parts.
    pub cuts: CutFilter,
    /// The merges in rank order, kept to write `tokenizer.json` back (empty for tiktoken
    /// files, whose merges are derived when saving).
    pub merges: Vec<(u32, u32)>,
    /// Look a whole piece up before merging (LLaMA-3's `ignore_merges`; always for tiktoken).
    pub ignore_merges: bool,
    /// Names this vocabulary to the per-thread pair caches of [`super::merge`] (clones
    /// share it: their merges are the same).
    pub cache_id: u64,
}

static NEXT_CACHE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn invalid(origin: &str, reason: String) -> HanpackError {
    HanpackError::InvalidTokenizer {
        origin: origin.to_owned(),
        reason,
    }
}

impl Vocab {
    fn with_capacity(n: usize) -> Self {
        Self {
            bytes: ByteArena::with_capacity(n),
            pieces: Vec::with_capacity(n),
            piece_ids: FxMap::with_capacity_and_hasher(n, FxBuildHasher),
            by_bytes: FxMap::with_capacity_and_hasher(n, FxBuildHasher),
            byte_ids: [NO_ID; 256],
            pairs: FxMap::with_hasher(FxBuildHasher),
            filter: PairFilter::new(&[]),
            cuts: CutFilter::new(std::iter::empty()),
            merges: Vec::new(),
            ignore_merges: false,
            cache_id: NEXT_CACHE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn set(&mut self, id: u32, piece: Box<str>, bytes: &[u8]) {
        let i = id as usize;
        if self.pieces.len() <= i {
            self.pieces.resize(i + 1, Box::default());
        }
        self.bytes.set(i, bytes);
        self.pieces[i] = piece;
    }

    /// A model vocabulary of byte-level strings (HF), with merges as pairs of pieces.
    /// `merges[k] = (left, right, where)`: `where` names the line for error messages.
    pub fn from_pieces(
        origin: &str,
        vocab: Vec<(String, u32)>,
        merges: Vec<(String, String, String)>,
        ignore_merges: bool,
    ) -> Result<Self> {
        let mut v = Self::with_capacity(vocab.len());
        v.ignore_merges = ignore_merges;
        for (piece, id) in vocab {
            if id == NO_ID {
                return Err(invalid(
                    origin,
                    format!("token {piece:?} has id {id}, which is too large"),
                ));
            }
            if v.bytes.get(id as usize).is_some() {
                return Err(invalid(
                    origin,
                    format!(
                        "tokens {:?} and {piece:?} both have id {id}",
                        v.pieces[id as usize]
                    ),
                ));
            }
            let bytes = bytelevel::decode_str(&piece);
            if let Some(b) = &bytes {
                if b.len() == 1 {
                    v.byte_ids[b[0] as usize] = id;
                }
                v.by_bytes.insert(b.clone().into_boxed_slice(), id);
            }
            // A piece outside the byte-level alphabet decodes to its own UTF-8 (as HF's
            // ByteLevel decoder does for such tokens).
            let bytes = bytes.unwrap_or_else(|| piece.as_bytes().to_vec());
            let piece: Box<str> = piece.into();
            if v.piece_ids.insert(piece.clone(), id).is_some() {
                return Err(invalid(
                    origin,
                    format!("token {piece:?} appears twice in the vocabulary"),
                ));
            }
            v.set(id, piece, &bytes);
        }
        v.pairs.reserve(merges.len());
        v.merges.reserve(merges.len());
        for (rank, (left, right, at)) in merges.into_iter().enumerate() {
            let id_of = |p: &str| {
                v.piece_ids
                    .get(p)
                    .copied()
                    .ok_or_else(|| invalid(origin, format!("{at}: merge {left:?} {right:?} names {p:?}, which is not in the vocabulary")))
            };
            let (l, r) = (id_of(&left)?, id_of(&right)?);
            let merged = format!("{left}{right}");
            let id = v.piece_ids.get(merged.as_str()).copied().ok_or_else(|| {
                invalid(origin, format!("{at}: merge {left:?} {right:?} gives {merged:?}, which is not in the vocabulary"))
            })?;
            // HF keeps the first occurrence of a repeated merge; its rank is the first line.
            if let hashbrown::hash_map::Entry::Vacant(e) = v.pairs.entry(pair_key(l, r)) {
                e.insert(Merge {
                    rank: rank as u32,
                    id,
                });
                v.merges.push((l, r));
            }
        }
        v.build_filter();
        Ok(v)
    }

    /// A tiktoken vocabulary: `ranks[k] = (bytes, rank, line)`; the rank is the id.
    pub fn from_ranks(origin: &str, ranks: Vec<(Vec<u8>, u32, usize)>) -> Result<Self> {
        let mut v = Self::with_capacity(ranks.len());
        v.ignore_merges = true;
        let mut line_of: FxMap<u32, usize> =
            FxMap::with_capacity_and_hasher(ranks.len(), FxBuildHasher);
        for (bytes, rank, line) in ranks {
            if rank == NO_ID {
                return Err(invalid(
                    origin,
                    format!("line {line}: rank {rank} is too large"),
                ));
            }
            if let Some(first) = line_of.insert(rank, line) {
                return Err(invalid(
                    origin,
                    format!("line {line}: rank {rank} is already used on line {first}"),
                ));
            }
            let bytes: Box<[u8]> = bytes.into_boxed_slice();
            if bytes.is_empty() {
                return Err(invalid(origin, format!("line {line}: empty token")));
            }
            if let Some(other) = v.by_bytes.insert(bytes.clone(), rank) {
                return Err(invalid(
                    origin,
                    format!(
                        "line {line}: token {:?} already has rank {other}",
                        String::from_utf8_lossy(&bytes)
                    ),
                ));
            }
            if bytes.len() == 1 {
                v.byte_ids[bytes[0] as usize] = rank;
            }
            let piece: Box<str> = bytelevel::encode_bytes(&bytes).into();
            v.piece_ids.insert(piece.clone(), rank);
            v.set(rank, piece, &bytes);
        }
        if let Some(b) = v.byte_ids.iter().position(|&id| id == NO_ID) {
            return Err(invalid(
                origin,
                format!("byte 0x{b:02x} has no token (every byte needs one)"),
            ));
        }
        // Every split of a token into two tokens is a merge of that token's rank.
        let mut pairs = FxMap::with_capacity_and_hasher(v.by_bytes.len() * 2, FxBuildHasher);
        for (bytes, &id) in v.by_bytes.iter() {
            for k in 1..bytes.len() {
                if let (Some(&l), Some(&r)) =
                    (v.by_bytes.get(&bytes[..k]), v.by_bytes.get(&bytes[k..]))
                {
                    pairs.insert(pair_key(l, r), Merge { rank: id, id });
                }
            }
        }
        v.pairs = pairs;
        v.build_filter();
        Ok(v)
    }

    fn build_filter(&mut self) {
        let keys: Vec<u64> = self.pairs.keys().copied().collect();
        self.filter = PairFilter::new(&keys);
        // The tokens merges make (single bytes span no boundary).
        let mut made: Vec<u32> = self.pairs.values().map(|m| m.id).collect();
        made.sort_unstable();
        made.dedup();
        self.cuts = CutFilter::new(made.iter().filter_map(|&id| self.bytes.get(id as usize)));
    }

    /// False when `left` + `right` certainly do not merge (one read; see [`PairFilter`]).
    #[inline]
    pub fn may_merge(&self, key: u64) -> bool {
        self.filter.may_contain(key)
    }

    /// Registers an added (or special) token; its bytes are its text.
    pub fn add_token(&mut self, id: u32, content: &str) {
        if let Some(old) = self
            .pieces
            .get(id as usize)
            .filter(|_| self.bytes.get(id as usize).is_some())
        {
            if &**old == content {
                return; // already a model token with the same text (GPT-2's <|endoftext|>)
            }
        }
        self.piece_ids.insert(content.into(), id);
        self.set(id, content.into(), content.as_bytes());
    }

    #[inline]
    pub fn merge(&self, left: u32, right: u32) -> Option<Merge> {
        self.pairs.get(&pair_key(left, right)).copied()
    }

    #[inline]
    pub fn token_of_bytes(&self, bytes: &[u8]) -> Option<u32> {
        self.by_bytes.get(bytes).copied()
    }

    /// One more than the largest id (ids may have holes).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn num_merges(&self) -> usize {
        self.pairs.len()
    }

    pub fn bytes_of(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize)
    }

    /// Requests what [`Self::append_bytes`] reads for token `id`.
    #[inline]
    pub fn prefetch_bytes(&self, id: u32) {
        self.bytes.prefetch(id as usize)
    }

    /// Appends the bytes of token `id` to `out`; false if no token has that id.
    #[inline]
    pub fn append_bytes(&self, id: u32, out: &mut Vec<u8>) -> bool {
        self.bytes.append_to(id as usize, out)
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        self.bytes.get(i).map(|_| &*self.pieces[i])
    }

    pub fn piece_id(&self, piece: &str) -> Option<u32> {
        self.piece_ids.get(piece).copied()
    }

    /// Model tokens (not added ones) as (piece, id), for writing `tokenizer.json`.
    pub fn model_pieces(&self) -> impl Iterator<Item = (&str, u32)> {
        self.by_bytes
            .values()
            .map(|&id| (&*self.pieces[id as usize], id))
    }

    pub fn heap_bytes(&self) -> usize {
        self.bytes.heap_bytes() * 3
            + self.pieces.len() * 64
            + self.pairs.len() * 16
            + self.cuts.heap_bytes()
    }
}
