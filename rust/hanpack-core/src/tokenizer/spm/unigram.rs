//! SentencePiece Unigram encoding: the Viterbi best path of `EncodeOptimized`
//! (`unigram_model.cc` of sentencepiece 0.2.3), id for id.
//!
//! For each character position, all pieces starting there are found with a byte trie; the best
//! path ending at each position is kept (ties keep the first path found). A position with
//! no single-character piece gets an unknown node scored `min_score - 10`. USER_DEFINED
//! pieces score `0.1 * (len_bytes - 1)`; UNUSED pieces are skipped. Path scores are f32,
//! and, as in sentencepiece, whenever the score at the current position leaves
//! [-1e5, 1e5] it is subtracted from every reached position ahead (so long inputs keep
//! float precision; this changes tie-breaking, which is why it must be mirrored).

use super::proto::PieceType;
use super::vocab::PieceTable;
use super::Token;
use crate::tokenizer::utf8::one_char_len;

/// Subtracted from the lowest NORMAL score to score an unknown character.
const UNK_PENALTY: f32 = 10.0;
/// Path scores beyond this magnitude are re-based to 0 (sentencepiece's kScoreResetThreshold).
const SCORE_RESET_THRESHOLD: f32 = 100_000.0;

pub struct UnigramModel {
    /// Lowest score of a NORMAL piece.
    min_score: f32,
}

#[derive(Clone, Copy)]
struct BestPath {
    id: u32,
    score: f32,
    /// Byte offset where the last piece starts; -1 = not reached yet.
    starts_at: i32,
}

/// Buffers reused across calls on one thread.
#[derive(Default)]
pub struct UnigramScratch {
    best: Vec<BestPath>,
}

impl UnigramModel {
    /// Fails, as sentencepiece does, when a score is NaN or infinite.
    pub fn new(table: &PieceTable) -> Result<Self, String> {
        let mut min_score = f32::MAX;
        for id in 0..table.len() as u32 {
            let score = table.score(id);
            if !score.is_finite() {
                return Err(format!("piece {id} has a NaN or infinite score"));
            }
            if table.piece_type(id) == PieceType::Normal {
                min_score = min_score.min(score);
            }
        }
        Ok(Self { min_score })
    }

    pub fn encode(
        &self,
        table: &PieceTable,
        unk: u32,
        text: &str,
        scratch: &mut UnigramScratch,
        out: &mut Vec<Token>,
    ) {
        if text.is_empty() {
            return;
        }
        // Lattice positions are byte offsets, as in sentencepiece (only character
        // boundaries are ever reached).
        let bytes = text.as_bytes();
        let n = bytes.len();
        let best = &mut scratch.best;
        best.clear();
        best.resize(
            n + 1,
            BestPath {
                id: unk,
                score: 0.0,
                starts_at: -1,
            },
        );
        let unk_score = self.min_score - UNK_PENALTY;

        // Furthest position any path has reached (for the score reset).
        let mut max_frontier = 0usize;
        let mut start = 0usize;
        while start < n {
            let char_len = one_char_len(bytes[start]).min(n - start);
            let mut till_here = best[start].score;
            if !(-SCORE_RESET_THRESHOLD..=SCORE_RESET_THRESHOLD).contains(&till_here) {
                let offset = till_here;
                for i in start..=max_frontier.max(start) {
                    if i == start || best[i].starts_at != -1 {
                        best[i].score -= offset;
                    }
                }
                till_here = 0.0;
            }
            let mut has_single = false;
            if let Some(trie) = table.trie() {
                trie.common_prefixes(&bytes[start..], |len, id| {
                    let ty = table.piece_type(id);
                    if ty == PieceType::Unused {
                        return;
                    }
                    let end = start + len;
                    max_frontier = max_frontier.max(end);
                    let score = if ty == PieceType::UserDefined {
                        (0.1 * (len as f64 - 1.0)) as f32
                    } else {
                        table.score(id)
                    };
                    let cand = score + till_here;
                    if best[end].starts_at == -1 || cand > best[end].score {
                        best[end] = BestPath {
                            id,
                            score: cand,
                            starts_at: start as i32,
                        };
                    }
                    if len == char_len {
                        has_single = true;
                    }
                });
            }
            if !has_single {
                max_frontier = max_frontier.max(start + char_len);
                let cand = unk_score + till_here;
                let slot = &mut best[start + char_len];
                if slot.starts_at == -1 || cand > slot.score {
                    *slot = BestPath {
                        id: unk,
                        score: cand,
                        starts_at: start as i32,
                    };
                }
            }
            start += char_len;
        }

        // Backtrack, then reverse the appended part.
        let first = out.len();
        let mut end = n;
        while end > 0 {
            let node = best[end];
            let start = node.starts_at.max(0) as usize;
            out.push(Token {
                start: start as u32,
                end: end as u32,
                id: node.id,
            });
            if start >= end {
                break; // unreachable for a well-formed lattice; guards against a loop
            }
            end = start;
        }
        out[first..].reverse();
    }
}
