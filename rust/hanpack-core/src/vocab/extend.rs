//! Extending a SentencePiece BPE model with new pieces so that stock sentencepiece can
//! produce every one of them (no dead pieces), while text without Chinese encodes exactly
//! as before and base ids stay where they were.
//!
//! Contract, for the model returned by [`extend`]:
//! - base pieces keep their ids, types and scores; new pieces are appended (NORMAL);
//! - every added piece is *reachable*: encoding the piece's own text (spaces for `▁`,
//!   without the dummy prefix) gives exactly that one piece. This is checked at the end
//!   with hanpack's sentencepiece-exact encoder; failures are listed, never hidden;
//! - every added piece contains a CJK character ([`is_cjk`]), so a text without one sees no
//!   new pair and encodes id for id as with the base model.
//!
//! Why pieces die and how we repair them. SentencePiece BPE repeatedly merges the
//! adjacent pair whose concatenation is a piece with the highest score (leftmost on ties).
//! Appending `越来越` with score 0 (Chinese-LLaMA's merge script) does nothing when
//! neither `越来` nor `来越` is a piece: encoding stops at `越 来 越`. When the encoding
//! of piece `P` stops at `X1 … Xk` (k ≥ 2, no adjacent pair forms a piece), we add the
//! pieces of a merge chain from `X1 … Xk` to `P` (grown from a segment with a CJK
//! character, so each contains one; see [`chain`]) with scores *below every score in the
//! model*, each below the one before. A piece whose score is below all others is only ever merged when no other pair
//! can be, so the merge sequence of *any* text is unchanged up to the point where the old
//! model stopped (already reachable pieces stay reachable); from `X1 … Xk` the chain then
//! merges into `P`. Each added piece is a proper substring of `P` and goes through the
//! same check, so the repair terminates.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashSet};
use prost::Message;

use crate::error::{HanpackError, Result};
use crate::tokenizer::spm::proto::{ModelProto, ModelType, PieceType, SentencePiece};
use crate::tokenizer::spm::SpmModel;

/// The SentencePiece whitespace mark.
pub const SPACE_MARK: char = '\u{2581}';

/// Han ideographs (all blocks), CJK punctuation, bopomofo and full-width forms: the
/// characters whose presence marks a text as Chinese for the "text without Chinese
/// encodes as before" guarantee.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FDF      // radicals, Kangxi radicals
        | 0x3000..=0x303F    // CJK symbols and punctuation
        | 0x3100..=0x312F    // bopomofo
        | 0x31A0..=0x31BF    // bopomofo extended
        | 0x31C0..=0x31EF    // CJK strokes
        | 0x3400..=0x4DBF    // extension A
        | 0x4E00..=0x9FFF    // unified ideographs
        | 0xF900..=0xFAFF    // compatibility ideographs
        | 0xFE30..=0xFE4F    // compatibility forms (vertical punctuation)
        | 0xFF00..=0xFFEF    // half-width and full-width forms
        | 0x20000..=0x323AF) // extensions B–H
}

/// Where the requested pieces' scores go relative to the base model's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Above every base score, in the given order (first = highest): new pieces win over
    /// base pieces, as in Chinese-LLaMA (which gave all of them score 0).
    Above,
    /// Below every base score: base merges happen first.
    Below,
}

#[derive(Clone, Debug)]
pub struct ExtendOptions {
    pub placement: Placement,
    /// Longest piece accepted, in characters (sentencepiece's `max_sentencepiece_length`).
    pub max_piece_chars: usize,
    /// Add the CJK characters of new pieces that are not pieces yet, so nothing in them falls
    /// back to bytes (and HF tokenizers, which cannot merge byte-fallback characters,
    /// agrees with sentencepiece).
    pub add_missing_chars: bool,
    /// Add intermediate pieces for pieces that would otherwise be unreachable.
    pub repair: bool,
}

impl Default for ExtendOptions {
    fn default() -> Self {
        Self {
            placement: Placement::Above,
            max_piece_chars: 16,
            add_missing_chars: true,
            repair: true,
        }
    }
}

/// Why an added piece is in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Asked for by the caller.
    Requested,
    /// A character of a requested piece that was not a piece.
    Character,
    /// A prefix added so that a longer piece is reachable.
    Intermediate,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Requested => "requested",
            Origin::Character => "character",
            Origin::Intermediate => "intermediate",
        }
    }
}

/// Why a requested piece was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    AlreadyInBase,
    Duplicate,
    NoCjk,
    TooLong,
    Empty,
    /// The base model's normalizer rewrites the piece's text, so no input can produce it.
    ChangedByNormalizer,
    /// A character without CJK that is not a base piece: adding it would change how text
    /// without Chinese encodes (it falls back to bytes today).
    ForeignCharacter,
    /// `repair` was off and encoding the piece's text does not give the piece.
    Unreachable,
}

impl SkipReason {
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::AlreadyInBase => "already in base",
            SkipReason::Duplicate => "duplicate",
            SkipReason::NoCjk => "no CJK character",
            SkipReason::TooLong => "too long",
            SkipReason::Empty => "empty",
            SkipReason::ChangedByNormalizer => "changed by the normalizer",
            SkipReason::ForeignCharacter => "non-CJK character outside the base vocabulary",
            SkipReason::Unreachable => "unreachable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct AddedPiece {
    pub piece: String,
    pub id: u32,
    pub score: f32,
    pub origin: Origin,
}

/// The extended model and what happened to every requested piece.
pub struct Extension {
    /// The serialized `ModelProto`.
    pub model: Vec<u8>,
    pub base_size: usize,
    pub added: Vec<AddedPiece>,
    pub skipped: Vec<(String, SkipReason)>,
    /// Added pieces that hanpack's sentencepiece-exact encoder does not produce for their
    /// own text (empty unless `repair` met a case it cannot fix).
    pub unreachable: Vec<String>,
}

/// Merge priorities of the working vocabulary: every piece sentencepiece may merge into.
struct Scores {
    map: HashMap<String, f32>,
    /// Strictly below every score in `map`; the next intermediate piece gets it.
    floor: f32,
}

impl Scores {
    fn insert_below_all(&mut self, piece: String) -> f32 {
        let s = self.floor;
        self.map.insert(piece, s);
        self.floor = next_below(s);
        s
    }
}

/// The next f32 strictly below `s` by at least 1 where that is representable.
fn next_below(s: f32) -> f32 {
    let t = s - 1.0;
    if t < s {
        t
    } else {
        f32::from_bits(if s > 0.0 {
            s.to_bits() - 1
        } else {
            s.to_bits() + 1
        })
    }
}

/// Sentencepiece's BPE merge loop on one short text (no normalization, no dummy prefix):
/// the final segmentation as byte ranges. Quadratic in the number of characters, which is
/// at most `max_piece_chars` here; the exact, fast encoder verifies the result at the end.
fn segment(text: &str, scores: &HashMap<String, f32>) -> Vec<(usize, usize)> {
    let mut syms: Vec<(usize, usize)> = text
        .char_indices()
        .map(|(i, c)| (i, i + c.len_utf8()))
        .collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let cand = &text[syms[i].0..syms[i + 1].1];
            if let Some(&s) = scores.get(cand) {
                if best.map_or(true, |(b, _)| s > b) {
                    best = Some((s, i));
                }
            }
        }
        let Some((_, i)) = best else { return syms };
        syms[i].1 = syms[i + 1].1;
        syms.remove(i + 1);
    }
}

/// The intermediate pieces (byte ranges of `piece`) that merge the stuck segmentation
/// `segs` back into `piece`, in merge order: start at the first segment with a CJK
/// character, grow right to the end, then left to the start. Every intermediate thus
/// contains a CJK character, so text without one still sees no new piece. The last
/// merge forms `piece` itself, which is not listed.
fn chain(piece: &str, segs: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let anchor = segs
        .iter()
        .position(|&(a, b)| piece[a..b].chars().any(is_cjk))
        .unwrap_or(0);
    let (mut lo, mut hi) = segs[anchor];
    let mut out = Vec::with_capacity(segs.len());
    for &(_, b) in &segs[anchor + 1..] {
        hi = b;
        out.push((lo, hi));
    }
    for &(a, _) in segs[..anchor].iter().rev() {
        lo = a;
        out.push((lo, hi));
    }
    out.pop(); // the whole piece
    out
}

fn spm_text(piece: &str) -> String {
    piece.replace(SPACE_MARK, " ")
}

/// Decodes a serialized `ModelProto`; `origin` names it in the error.
pub(crate) fn decode_model(model: &[u8], origin: &str) -> Result<ModelProto> {
    ModelProto::decode(model).map_err(|e| HanpackError::ModelFormat {
        origin: origin.to_owned(),
        reason: e.to_string(),
    })
}

/// Turns the dummy prefix off (a missing normalizer spec means the default, which is on).
fn no_dummy_prefix(proto: &mut ModelProto) {
    proto
        .normalizer_spec
        .get_or_insert_with(Default::default)
        .add_dummy_prefix = Some(false);
}

/// Loads `model` with the dummy prefix off: the encoder for "does this text give this
/// piece" questions.
fn without_dummy_prefix(mut proto: ModelProto, origin: &str) -> Result<SpmModel> {
    no_dummy_prefix(&mut proto);
    SpmModel::from_bytes(&proto.encode_to_vec(), origin)
}

/// `model` (a serialized `ModelProto`) with the dummy prefix turned off: what encodes a
/// piece's own text, and nothing more, into base tokens.
pub fn model_without_dummy_prefix(model: &[u8], origin: &str) -> Result<Vec<u8>> {
    let mut proto = decode_model(model, origin)?;
    no_dummy_prefix(&mut proto);
    Ok(proto.encode_to_vec())
}

/// Extends the BPE model `base` (serialized `ModelProto`) with `requested` pieces, most
/// important first. See the module documentation for the guarantees.
pub fn extend(
    base: &[u8],
    origin: &str,
    requested: &[String],
    opts: &ExtendOptions,
) -> Result<Extension> {
    // Validates the file the same way loading it for encoding does.
    let base_model = SpmModel::from_bytes(base, origin)?;
    if !base_model.is_bpe() {
        return Err(HanpackError::InvalidArgument(format!(
            "{origin}: only BPE models can be extended (this one is Unigram); its pieces have no merge order to extend"
        )));
    }
    if opts.max_piece_chars == 0 {
        return Err(HanpackError::InvalidArgument(
            "max_piece_chars must be at least 1".into(),
        ));
    }
    let proto = decode_model(base, origin)?;
    let checker = without_dummy_prefix(proto.clone(), origin)?;
    let base_size = proto.pieces.len();

    let mut base_pieces: HashSet<String> = HashSet::new();
    let mut map: HashMap<String, f32> = HashMap::new();
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for p in &proto.pieces {
        let text = p.piece.as_deref().unwrap_or("");
        base_pieces.insert(text.to_owned());
        let kind = p.r#type.unwrap_or(PieceType::Normal as i32);
        // sentencepiece merges into any piece it can look up by text: normal,
        // user-defined and unused ones (control, unknown and byte pieces are reserved).
        if kind == PieceType::Normal as i32
            || kind == PieceType::UserDefined as i32
            || kind == PieceType::Unused as i32
        {
            let s = p.score.unwrap_or(0.0);
            lo = lo.min(s);
            hi = hi.max(s);
            map.insert(text.to_owned(), s);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 0.0);
    }

    // Which requested pieces are accepted.
    let mut skipped = Vec::new();
    let mut accepted: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for piece in requested {
        let reason = if piece.is_empty() {
            Some(SkipReason::Empty)
        } else if base_pieces.contains(piece.as_str()) {
            Some(SkipReason::AlreadyInBase)
        } else if seen.contains(piece) {
            Some(SkipReason::Duplicate)
        } else if !piece.chars().any(is_cjk) {
            Some(SkipReason::NoCjk)
        } else if piece.chars().count() > opts.max_piece_chars {
            Some(SkipReason::TooLong)
        } else if piece
            .chars()
            .any(|c| !is_cjk(c) && !base_pieces.contains(c.encode_utf8(&mut [0; 4]) as &str))
        {
            Some(SkipReason::ForeignCharacter)
        } else if checker.normalize(&spm_text(piece)) != *piece {
            Some(SkipReason::ChangedByNormalizer)
        } else {
            None
        };
        match reason {
            Some(r) => skipped.push((piece.clone(), r)),
            None => {
                seen.insert(piece.clone());
                accepted.push(piece.clone());
            }
        }
    }

    // Scores: requested pieces above (or below) the base in the given order; characters
    // and intermediates below everything.
    let n = accepted.len() as f32;
    let requested_score = |i: usize| match opts.placement {
        Placement::Above => hi.max(0.0) + n - i as f32,
        Placement::Below => lo.min(0.0) - 1.0 - i as f32,
    };
    let mut added: Vec<AddedPiece> = Vec::new();
    for (i, p) in accepted.iter().enumerate() {
        let s = requested_score(i);
        map.insert(p.clone(), s);
        added.push(AddedPiece {
            piece: p.clone(),
            id: 0,
            score: s,
            origin: Origin::Requested,
        });
    }
    let floor = map.values().copied().fold(f32::INFINITY, f32::min);
    let mut scores = Scores {
        floor: next_below(if floor.is_finite() { floor } else { 0.0 }),
        map,
    };
    if opts.add_missing_chars {
        for p in &accepted {
            for c in p.chars() {
                let cs = c.to_string();
                if !base_pieces.contains(cs.as_str()) && !scores.map.contains_key(&cs) {
                    let s = scores.insert_below_all(cs.clone());
                    added.push(AddedPiece {
                        piece: cs,
                        id: 0,
                        score: s,
                        origin: Origin::Character,
                    });
                }
            }
        }
    }

    // Repair: a worklist of pieces to check; repairs only add pieces below all scores.
    let mut queue: VecDeque<String> = accepted.iter().cloned().collect();
    let mut attempts: HashMap<String, u8> = HashMap::new();
    let mut dropped: HashSet<String> = HashSet::new();
    while let Some(piece) = queue.pop_front() {
        let segs = segment(&piece, &scores.map);
        if segs.len() == 1 {
            continue;
        }
        if !opts.repair {
            dropped.insert(piece);
            continue;
        }
        let tries = attempts.entry(piece.clone()).or_insert(0);
        *tries += 1;
        if *tries > 4 {
            continue; // left for the final check to report
        }
        for (start, end) in chain(&piece, &segs) {
            let inner = &piece[start..end];
            if !scores.map.contains_key(inner) {
                let s = scores.insert_below_all(inner.to_owned());
                added.push(AddedPiece {
                    piece: inner.to_owned(),
                    id: 0,
                    score: s,
                    origin: Origin::Intermediate,
                });
                queue.push_back(inner.to_owned());
            }
        }
        queue.push_back(piece);
    }
    if !dropped.is_empty() {
        // Without repair, unreachable pieces are left out. Removing a piece can only
        // change texts that contain it, so check the rest again until nothing changes.
        loop {
            for p in &dropped {
                scores.map.remove(p);
            }
            let before = dropped.len();
            for a in &added {
                if !dropped.contains(&a.piece) && segment(&a.piece, &scores.map).len() != 1 {
                    dropped.insert(a.piece.clone());
                }
            }
            if dropped.len() == before {
                break;
            }
        }
        added.retain(|a| {
            if dropped.contains(&a.piece) {
                if a.origin == Origin::Requested {
                    skipped.push((a.piece.clone(), SkipReason::Unreachable));
                }
                false
            } else {
                true
            }
        });
        // Character pieces are never dropped: a single character is always reachable.
    }

    let mut out = proto;
    for (i, a) in added.iter_mut().enumerate() {
        a.id = (base_size + i) as u32;
        out.pieces.push(SentencePiece {
            piece: Some(a.piece.clone()),
            score: Some(a.score),
            r#type: Some(PieceType::Normal as i32),
        });
    }
    if let Some(t) = out.trainer_spec.as_mut() {
        t.vocab_size = Some(out.pieces.len() as i32);
        t.model_type = Some(ModelType::Bpe as i32);
    }
    let model = out.encode_to_vec();

    // The final word belongs to the exact encoder, not to `segment`.
    let check = without_dummy_prefix(out, origin)?;
    let unreachable = added
        .iter()
        .filter(|a| {
            check
                .encode(&spm_text(&a.piece), false, false)
                .map_or(true, |ids| ids != [a.id])
        })
        .map(|a| a.piece.clone())
        .collect();
    Ok(Extension {
        model,
        base_size,
        added,
        skipped,
        unreachable,
    })
}

/// Pieces (NORMAL) of `model` that its own text does not produce: the dead pieces.
pub fn unreachable_pieces(model: &[u8], origin: &str) -> Result<Vec<(u32, String)>> {
    let proto = decode_model(model, origin)?;
    let check = without_dummy_prefix(proto.clone(), origin)?;
    Ok(proto
        .pieces
        .iter()
        .enumerate()
        .filter(|(_, p)| p.r#type.unwrap_or(PieceType::Normal as i32) == PieceType::Normal as i32)
        .filter_map(|(i, p)| {
            let text = p.piece.as_deref().unwrap_or("");
            let ok = check
                .encode(&spm_text(text), false, false)
                .is_ok_and(|ids| ids == [i as u32]);
            (!ok).then(|| (i as u32, text.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_base() -> Vec<u8> {
        // A BPE model with <unk> and a few pieces; no Chinese words.
        let mut pieces = vec![SentencePiece {
            piece: Some("<unk>".into()),
            score: Some(0.0),
            r#type: Some(PieceType::Unknown as i32),
        }];
        for (i, p) in ["▁", "a", "b", "ab", "▁a", "越", "来"].iter().enumerate() {
            pieces.push(SentencePiece {
                piece: Some((*p).into()),
                score: Some(-(i as f32)),
                r#type: Some(PieceType::Normal as i32),
            });
        }
        ModelProto {
            pieces,
            trainer_spec: Some(crate::tokenizer::spm::proto::TrainerSpec {
                model_type: Some(ModelType::Bpe as i32),
                ..Default::default()
            }),
            normalizer_spec: Some(crate::tokenizer::spm::proto::NormalizerSpec {
                name: Some("identity".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn repairs_a_dead_piece_with_intermediates() {
        let ext = extend(
            &tiny_base(),
            "<tiny>",
            &["越来越".to_string()],
            &ExtendOptions::default(),
        )
        .unwrap();
        assert!(ext.unreachable.is_empty(), "{:?}", ext.unreachable);
        let names: Vec<_> = ext
            .added
            .iter()
            .map(|a| (a.piece.as_str(), a.origin))
            .collect();
        assert_eq!(
            names,
            [
                ("越来越", Origin::Requested),
                ("越来", Origin::Intermediate)
            ]
        );
        assert_eq!(ext.added[0].id as usize, ext.base_size);
    }

    #[test]
    fn without_repair_a_dead_piece_is_skipped() {
        let opts = ExtendOptions {
            repair: false,
            ..Default::default()
        };
        let ext = extend(&tiny_base(), "<tiny>", &["越来越".to_string()], &opts).unwrap();
        assert_eq!(
            ext.skipped,
            [("越来越".to_string(), SkipReason::Unreachable)]
        );
        assert!(ext.added.is_empty());
        // With 来越 as well, 越 来 越 → 越 来越 → 越来越: both live, nothing to repair.
        let both = ["越来越".to_string(), "来越".into()];
        let ext = extend(&tiny_base(), "<tiny>", &both, &opts).unwrap();
        assert!(ext.skipped.is_empty() && ext.unreachable.is_empty());
        assert_eq!(ext.added.len(), 2);
    }

    #[test]
    fn skips_pieces_without_cjk_and_existing_ones() {
        let ext = extend(
            &tiny_base(),
            "<tiny>",
            &["abab".to_string(), "越".into(), "中文".into()],
            &ExtendOptions::default(),
        )
        .unwrap();
        let reasons: Vec<_> = ext.skipped.iter().map(|(p, r)| (p.as_str(), *r)).collect();
        assert_eq!(
            reasons,
            [
                ("abab", SkipReason::NoCjk),
                ("越", SkipReason::AlreadyInBase)
            ]
        );
        // 中 and 文 were added as characters so 中文 never falls back to bytes.
        let chars: Vec<_> = ext
            .added
            .iter()
            .filter(|a| a.origin == Origin::Character)
            .map(|a| a.piece.as_str())
            .collect();
        assert_eq!(chars, ["中", "文"]);
        assert!(ext.unreachable.is_empty());
    }
}
