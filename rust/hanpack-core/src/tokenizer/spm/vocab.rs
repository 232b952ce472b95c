//! The piece table: every piece's text, score and type, and the two lookup maps that
//! sentencepiece keeps (`pieces_` for NORMAL/USER_DEFINED/UNUSED, `reserved_id_map_` for
//! CONTROL/UNKNOWN/BYTE). Lookups check the reserved map first, as `PieceToId` does.
//!
//! Memory is kept small on purpose (a loaded tokenizer should cost at most a few times its
//! file size): texts live in one arena, the maps store only `u32` ids and hash the arena
//! slice on demand.

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

use super::proto::PieceType;

#[derive(Clone, Debug)]
pub struct PieceTable {
    arena: String,
    /// `offsets[i]..offsets[i + 1]` is piece `i` in `arena`.
    offsets: Vec<u32>,
    scores: Vec<f32>,
    types: Vec<PieceType>,
    normal: HashTable<u32>,
    reserved: HashTable<u32>,
}

#[inline]
fn hash_str(s: &str) -> u64 {
    FxBuildHasher.hash_one(s.as_bytes())
}

/// Why a piece list cannot be used (the caller adds the file name).
pub struct DuplicatePiece(pub String);

impl PieceTable {
    pub fn build(pieces: impl ExactSizeIterator<Item = (String, f32, PieceType)>) -> Result<Self, DuplicatePiece> {
        let n = pieces.len();
        let mut table = Self {
            arena: String::new(),
            offsets: Vec::with_capacity(n + 1),
            scores: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            normal: HashTable::with_capacity(n),
            reserved: HashTable::new(),
        };
        table.offsets.push(0);
        for (id, (text, score, ty)) in pieces.enumerate() {
            table.arena.push_str(&text);
            table.offsets.push(table.arena.len() as u32);
            table.scores.push(score);
            table.types.push(ty);
            let id = id as u32;
            let is_normal = matches!(ty, PieceType::Normal | PieceType::UserDefined | PieceType::Unused);
            let hash = hash_str(&text);
            let (arena, offsets) = (&table.arena, &table.offsets);
            let text_of = |i: u32| &arena[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
            let map = if is_normal { &mut table.normal } else { &mut table.reserved };
            if map.find(hash, |&i| text_of(i) == text).is_some() {
                return Err(DuplicatePiece(text));
            }
            map.insert_unique(hash, id, |&i| hash_str(text_of(i)));
        }
        table.arena.shrink_to_fit();
        Ok(table)
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

    #[inline]
    pub fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    #[inline]
    pub fn piece_type(&self, id: u32) -> PieceType {
        self.types[id as usize]
    }

    /// Lookup in the NORMAL/USER_DEFINED/UNUSED map only (what BPE merges and the
    /// Unigram lattice see).
    #[inline]
    pub fn normal_id(&self, text: &str) -> Option<u32> {
        self.normal
            .find(hash_str(text), |&i| self.piece(i) == text)
            .copied()
    }

    /// Lookup in the CONTROL/UNKNOWN/BYTE map only.
    #[inline]
    pub fn reserved_id(&self, text: &str) -> Option<u32> {
        if self.reserved.is_empty() {
            return None;
        }
        self.reserved
            .find(hash_str(text), |&i| self.piece(i) == text)
            .copied()
    }

    /// sentencepiece's `PieceToId` without the unknown fallback.
    #[inline]
    pub fn lookup(&self, text: &str) -> Option<u32> {
        self.reserved_id(text).or_else(|| self.normal_id(text))
    }

    /// Ids of NORMAL/USER_DEFINED/UNUSED pieces, with their texts.
    pub fn normal_pieces(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.len() as u32)
            .filter(|&i| matches!(self.types[i as usize], PieceType::Normal | PieceType::UserDefined | PieceType::Unused))
            .map(|i| (i, self.piece(i)))
    }

    /// Heap bytes held (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.offsets.capacity() * 4
            + self.scores.capacity() * 4
            + self.types.capacity() * std::mem::size_of::<PieceType>()
            + (self.normal.capacity() + self.reserved.capacity()) * 5
    }
}
