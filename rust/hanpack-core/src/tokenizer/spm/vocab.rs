//! The piece table: every piece's text, score and type, and the lookup maps that
//! sentencepiece 0.2.3 keeps. A BPE model has one map over all pieces (a text may appear
//! once); a Unigram model has `pieces_` for NORMAL/USER_DEFINED/UNUSED and
//! `reserved_id_map_` for CONTROL/UNKNOWN/BYTE, and `PieceToId` checks the latter first.
//!
//! Memory is kept small on purpose (a loaded tokenizer should cost at most a few times its
//! file size): texts live in one arena, the hash maps store only `u32` ids and hash the
//! arena slice on demand. The NORMAL map is a hash table for BPE (exact lookups of
//! concatenated pairs are its hot path) and a byte trie for Unigram (prefix search is its
//! hot path, and the trie answers exact lookups too, so no second index is kept).

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

use super::proto::PieceType;
use crate::tokenizer::darts::DoubleArray;
use crate::tokenizer::padded;

/// How the NORMAL/USER_DEFINED/UNUSED pieces are indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// BPE: one hash map over every piece.
    Hash,
    /// Unigram: a trie over normal pieces plus a hash map over reserved ones.
    Trie,
}

enum NormalIndex {
    /// Every indexed piece, of any type (the `reserved` map stays empty).
    Hash(HashTable<u32>),
    /// Unigram: a byte trie over NORMAL/USER_DEFINED/UNUSED pieces, as sentencepiece keeps.
    Trie(DoubleArray),
}

pub struct PieceTable {
    /// Every piece's text, then `padded::PAD` NUL bytes that belong to no piece.
    arena: String,
    /// `offsets[i]..offsets[i + 1]` is piece `i` in `arena`.
    offsets: Vec<u32>,
    scores: Vec<f32>,
    /// `PieceType` as a byte (the enum itself is 4 bytes wide).
    types: Vec<u8>,
    normal: NormalIndex,
    reserved: HashTable<u32>,
}

#[inline]
pub(crate) fn hash_str(s: &str) -> u64 {
    FxBuildHasher.hash_one(s.as_bytes())
}

#[inline]
fn type_from_u8(t: u8) -> PieceType {
    match t {
        2 => PieceType::Unknown,
        3 => PieceType::Control,
        4 => PieceType::UserDefined,
        5 => PieceType::Unused,
        6 => PieceType::Byte,
        _ => PieceType::Normal,
    }
}

#[inline]
fn is_normal_type(ty: PieceType) -> bool {
    matches!(
        ty,
        PieceType::Normal | PieceType::UserDefined | PieceType::Unused
    )
}

/// Why a piece list cannot be used (the caller adds the file name).
pub enum BuildError {
    Duplicate(String),
    Index(String),
}

impl PieceTable {
    /// `indexed == false` keeps a piece out of both lookup maps (sentencepiece 0.2.3 does
    /// that to a `"\0"` piece in a byte-fallback model).
    pub fn build(
        pieces: impl ExactSizeIterator<Item = (String, f32, PieceType, bool)>,
        kind: IndexKind,
    ) -> Result<Self, BuildError> {
        let n = pieces.len();
        let mut arena = String::new();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut scores = Vec::with_capacity(n);
        let mut types = Vec::with_capacity(n);
        let mut normal_hash = HashTable::with_capacity(if kind == IndexKind::Hash { n } else { 0 });
        let mut reserved = HashTable::new();
        let mut trie_records: Vec<(u32, u32)> = Vec::new(); // (id, arena start)
        offsets.push(0u32);
        for (id, (text, score, ty, indexed)) in pieces.enumerate() {
            arena.push_str(&text);
            offsets.push(arena.len() as u32);
            scores.push(score);
            types.push(ty as i32 as u8);
            if !indexed {
                continue;
            }
            let id = id as u32;
            let hash = hash_str(&text);
            let text_of =
                |i: u32| &arena[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
            let map = match (is_normal_type(ty), kind) {
                (_, IndexKind::Hash) => &mut normal_hash,
                (false, IndexKind::Trie) => &mut reserved,
                (true, IndexKind::Trie) => {
                    trie_records.push((id, offsets[id as usize]));
                    continue;
                }
            };
            if map.find(hash, |&i| text_of(i) == text).is_some() {
                return Err(BuildError::Duplicate(text));
            }
            map.insert_unique(hash, id, |&i| hash_str(text_of(i)));
        }
        arena.push_str(&"\0".repeat(padded::PAD));
        arena.shrink_to_fit();
        let normal = match kind {
            IndexKind::Hash => NormalIndex::Hash(normal_hash),
            IndexKind::Trie => {
                let text_of =
                    |i: u32| &arena[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
                let mut records: Vec<(&[u8], u32)> = trie_records
                    .iter()
                    .map(|&(i, _)| (text_of(i).as_bytes(), i))
                    .collect();
                records.sort_unstable_by(|a, b| a.0.cmp(b.0));
                if let Some(w) = records.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(BuildError::Duplicate(
                        String::from_utf8_lossy(w[0].0).into_owned(),
                    ));
                }
                // sentencepiece refuses a Unigram model with nothing to put in its trie.
                if records.is_empty() {
                    return Err(BuildError::Index("no pieces are loaded (the model has no NORMAL, USER_DEFINED or UNUSED piece)".into()));
                }
                let trie = DoubleArray::build(&records).map_err(BuildError::Index)?;
                NormalIndex::Trie(trie)
            }
        };
        Ok(Self {
            arena,
            offsets,
            scores,
            types,
            normal,
            reserved,
        })
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    #[inline]
    pub fn piece(&self, id: u32) -> &str {
        let i = id as usize;
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Appends piece `id`'s text from byte `skip` on (a char boundary) to `out`, with
    /// the padded arena's fast copy for short pieces (see [`padded`]).
    #[inline]
    pub fn append_piece(&self, id: u32, skip: usize, out: &mut String) {
        let i = id as usize;
        let (start, end) = (
            (self.offsets[i] as usize + skip).min(self.offsets[i + 1] as usize),
            self.offsets[i + 1] as usize,
        );
        if !self.arena.is_char_boundary(start) {
            out.push_str(&self.arena[start..end]);
            return;
        }
        // SAFETY: only `arena[start..end]` is appended: the tail of a piece from a char
        // boundary (checked above) to the piece's end, so `out` stays UTF-8.
        padded::append(self.arena.as_bytes(), start, end, unsafe {
            out.as_mut_vec()
        });
    }

    #[inline]
    pub fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    #[inline]
    pub fn piece_type(&self, id: u32) -> PieceType {
        type_from_u8(self.types[id as usize])
    }

    /// The byte trie over NORMAL/USER_DEFINED/UNUSED pieces (Unigram tables only).
    pub fn trie(&self) -> Option<&DoubleArray> {
        match &self.normal {
            NormalIndex::Trie(t) => Some(t),
            NormalIndex::Hash(_) => None,
        }
    }

    /// The id of `text` if it is a NORMAL/USER_DEFINED/UNUSED piece: what BPE merges and
    /// the Unigram lattice may use (`PieceToIdNoReserved` + `!IsReservedId`).
    #[inline]
    pub fn normal_id(&self, text: &str) -> Option<u32> {
        match &self.normal {
            NormalIndex::Hash(h) => h
                .find(hash_str(text), |&i| self.piece(i) == text)
                .copied()
                .filter(|&i| is_normal_type(self.piece_type(i))),
            NormalIndex::Trie(t) => t.exact_match(text.as_bytes()),
        }
    }

    /// sentencepiece's `PieceToId` without the unknown fallback.
    #[inline]
    pub fn lookup(&self, text: &str) -> Option<u32> {
        match &self.normal {
            NormalIndex::Hash(h) => h.find(hash_str(text), |&i| self.piece(i) == text).copied(),
            NormalIndex::Trie(t) => {
                if !self.reserved.is_empty() {
                    if let Some(&i) = self
                        .reserved
                        .find(hash_str(text), |&i| self.piece(i) == text)
                    {
                        return Some(i);
                    }
                }
                t.exact_match(text.as_bytes())
            }
        }
    }

    /// Ids of NORMAL/USER_DEFINED/UNUSED pieces, with their texts.
    pub fn normal_pieces(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.len() as u32)
            .filter(|&i| is_normal_type(self.piece_type(i)))
            .map(|i| (i, self.piece(i)))
    }

    /// Heap bytes held (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        let normal = match &self.normal {
            NormalIndex::Hash(h) => h.capacity() * 5,
            NormalIndex::Trie(t) => t.heap_bytes(),
        };
        self.arena.capacity()
            + self.offsets.capacity() * 4
            + self.scores.capacity() * 4
            + self.types.capacity()
            + normal
            + self.reserved.capacity() * 5
    }
}
