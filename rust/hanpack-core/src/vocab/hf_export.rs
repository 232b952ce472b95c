//! `tokenizer.json` (HF tokenizers) for a SentencePiece BPE model, LLaMA style.
//!
//! The merges are generated exactly as transformers' `generate_merges` does (every split of
//! every piece whose two halves are pieces, ordered by the piece's score, then by the
//! halves' lengths, longest left first), so the file is the one transformers would derive
//! from the `.model`. The normalizer is the legacy LLaMA one (prepend `▁` for the dummy
//! prefix, spaces to `▁`), which keeps runs of spaces as sentencepiece does; transformers
//! 5's own conversion (`Metaspace` with `prepend_scheme: always` after a `\A▁ → ▁▁`
//! rewrite) does not.
//!
//! HF BPE merges by pair rank where sentencepiece merges by the merged piece's score; the
//! two agree whenever all pieces have distinct scores and every character is a piece,
//! which [`super::extend`] arranges for the pieces it adds.

use base64::Engine;
use hashbrown::HashMap;
use serde_json::{json, Map, Value};

use super::extend::decode_model;
use crate::error::{HanpackError, Result};
use crate::tokenizer::spm::proto::{ModelType, PieceType};

/// Serializes `model` (a BPE `ModelProto`) as a `tokenizer.json` document.
pub fn spm_bpe_to_hf_json(model: &[u8], origin: &str) -> Result<String> {
    let proto = decode_model(model, origin)?;
    let unsupported = |reason: &str| HanpackError::UnsupportedTokenizer {
        origin: origin.to_owned(),
        reason: reason.to_owned(),
    };
    let trainer = proto.trainer_spec.clone().unwrap_or_default();
    if trainer.model_type.unwrap_or(ModelType::Unigram as i32) != ModelType::Bpe as i32 {
        return Err(unsupported("tokenizer.json export is for BPE models"));
    }
    let norm = proto.normalizer_spec.clone().unwrap_or_default();
    if norm.remove_extra_whitespaces.unwrap_or(true) {
        return Err(unsupported(
            "the normalizer removes extra whitespace, which HF tokenizers cannot express exactly",
        ));
    }

    let pieces: Vec<(&str, f32, i32)> = proto
        .pieces
        .iter()
        .map(|p| {
            (
                p.piece.as_deref().unwrap_or(""),
                p.score.unwrap_or(0.0),
                p.r#type.unwrap_or(PieceType::Normal as i32),
            )
        })
        .collect();
    // transformers builds `{piece: id}` with later duplicates overwriting earlier ones.
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(pieces.len());
    for (i, (p, _, _)) in pieces.iter().enumerate() {
        vocab.insert(p, i as u32);
    }
    // `vocab_scores` in transformers is a dict too: the last score of a duplicate wins,
    // at the position of its first occurrence.
    let mut order: Vec<&str> = Vec::with_capacity(pieces.len());
    let mut score_of: HashMap<&str, f32> = HashMap::with_capacity(pieces.len());
    for (p, s, _) in &pieces {
        if score_of.insert(p, *s).is_none() {
            order.push(p);
        }
    }
    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f32,
        left_chars: usize,
        right_chars: usize,
    }
    let mut merges: Vec<Merge> = Vec::new();
    for piece in &order {
        let score = score_of[piece];
        let mut local: Vec<Merge> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| {
                let (l, r) = piece.split_at(i);
                (vocab.contains_key(l) && vocab.contains_key(r)).then(|| Merge {
                    left: l,
                    right: r,
                    score,
                    left_chars: l.chars().count(),
                    right_chars: r.chars().count(),
                })
            })
            .collect();
        local.sort_by_key(|m| (vocab[m.left], vocab[m.right]));
        merges.extend(local);
    }
    // Python's stable `sorted(..., key=(score, len_l, len_r), reverse=True)`.
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });

    let piece_of = |id: Option<i32>| {
        id.filter(|&i| i >= 0 && (i as usize) < pieces.len())
            .map(|i| pieces[i as usize].0)
    };
    let unk = piece_of(trainer.unk_id.or(Some(0)));
    let bos = piece_of(trainer.bos_id.or(Some(1)));

    let added: Vec<Value> = pieces
        .iter()
        .enumerate()
        .filter(|(_, (_, _, t))| *t == PieceType::Control as i32 || *t == PieceType::Unknown as i32)
        .map(|(i, (p, _, _))| {
            json!({"id": i, "content": p, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();

    let mut normalizers = Vec::new();
    if let Some(cm) = norm.precompiled_charsmap.as_ref().filter(|c| !c.is_empty()) {
        normalizers.push(json!({"type": "Precompiled",
            "precompiled_charsmap": base64::engine::general_purpose::STANDARD.encode(cm)}));
    }
    if norm.add_dummy_prefix.unwrap_or(true) {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    if norm.escape_whitespaces.unwrap_or(true) {
        normalizers
            .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    }

    let post = match bos {
        Some(b) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b: {"id": b, "ids": [vocab[b]], "tokens": [b]}},
        }),
        None => Value::Null,
    };
    let mut decoders =
        vec![json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "})];
    if trainer.byte_fallback.unwrap_or(false) {
        decoders.push(json!({"type": "ByteFallback"}));
    }
    decoders.push(json!({"type": "Fuse"}));
    if norm.add_dummy_prefix.unwrap_or(true) {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }

    let mut vocab_json = Map::new();
    for (p, i) in &vocab {
        vocab_json.insert((*p).to_owned(), json!(i));
    }
    let merges_json: Vec<Value> = merges.iter().map(|m| json!([m.left, m.right])).collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": trainer.byte_fallback.unwrap_or(false),
            "ignore_merges": false,
            "vocab": Value::Object(vocab_json), "merges": merges_json,
        },
    });
    serde_json::to_string(&doc).map_err(|e| HanpackError::InvalidArgument(e.to_string()))
}
