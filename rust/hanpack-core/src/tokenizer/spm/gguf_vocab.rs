//! SentencePiece-style tokenizers stored in GGUF files (`tokenizer.ggml.model =
//! "llama"`: LLaMA-1/2, Chinese-LLaMA-2, Phi-3, Baichuan, ...): the pieces, scores and
//! token types of the metadata become a `ModelProto` (BPE by piece score, byte fallback
//! when `<0xXX>` pieces exist, no normalization rules but the dummy prefix), which is then
//! loaded like any `.model` file, so `save()` writes a `.model` stock sentencepiece loads.

use prost::Message;

use super::proto::{ModelProto, ModelType, NormalizerSpec, PieceType, SentencePiece, TrainerSpec};
use super::SpmModel;
use crate::error::{HanpackError, Result};
use crate::io::gguf::{Gguf, Value};

fn invalid(origin: &str, reason: String) -> HanpackError {
    HanpackError::InvalidModel {
        origin: origin.to_owned(),
        reason,
    }
}

fn array<'a>(g: &'a Gguf, key: &str, origin: &str) -> Result<Option<&'a [Value]>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| invalid(origin, format!("{key} is not an array"))),
    }
}

fn flag(g: &Gguf, key: &str, default: bool) -> bool {
    g.get(key).and_then(Value::as_bool).unwrap_or(default)
}

/// The piece that metadata key `key` names by id, if any.
fn piece_of(g: &Gguf, key: &str, pieces: &[SentencePiece]) -> Option<String> {
    let id = usize::try_from(g.get(key)?.as_i64()?).ok()?;
    pieces.get(id)?.piece.clone()
}

/// The `ModelProto` of a GGUF file's SentencePiece-style vocabulary.
pub fn model_proto(g: &Gguf, origin: &str) -> Result<ModelProto> {
    let tokens = array(g, "tokenizer.ggml.tokens", origin)?
        .ok_or_else(|| invalid(origin, "GGUF metadata has no tokenizer.ggml.tokens".into()))?;
    let scores = array(g, "tokenizer.ggml.scores", origin)?;
    let types = array(g, "tokenizer.ggml.token_type", origin)?;
    for (what, arr) in [("scores", scores), ("token types", types)] {
        if let Some(a) = arr.filter(|a| a.len() != tokens.len()) {
            return Err(invalid(
                origin,
                format!("{} {what} for {} tokens", a.len(), tokens.len()),
            ));
        }
    }
    let mut pieces = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let text = t
            .as_str()
            .ok_or_else(|| invalid(origin, format!("token {i} is not a string")))?;
        let score = match scores.map(|s| &s[i]) {
            None => 0.0,
            Some(Value::F32(f)) => *f,
            Some(other) => {
                return Err(invalid(
                    origin,
                    format!("score {i} is {other:?}, not an f32"),
                ))
            }
        };
        // llama.cpp's LLAMA_TOKEN_TYPE_* are sentencepiece's piece types (UNDEFINED = 0 aside).
        let ty = match types.map(|t| t[i].as_i64()) {
            None => PieceType::Normal,
            Some(Some(n)) => i32::try_from(n)
                .ok()
                .and_then(|n| PieceType::try_from(n).ok())
                .unwrap_or(PieceType::Normal),
            Some(None) => return Err(invalid(origin, format!("token type {i} is not an integer"))),
        };
        pieces.push(SentencePiece {
            piece: Some(text.to_owned()),
            score: Some(score),
            r#type: Some(ty as i32),
        });
    }
    // A `.model` has exactly one UNKNOWN piece; converters mark padding tokens UNKNOWN too
    // (Phi-3's `[PAD32011]`...) and may type `<unk>` itself otherwise. The piece that
    // `unknown_token_id` names is the UNKNOWN one; other UNKNOWN-typed pieces become
    // UNUSED (never produced by encoding, decoded as their text).
    let unk = g
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(Value::as_i64)
        .and_then(|i| usize::try_from(i).ok());
    let unk = unk.or_else(|| {
        pieces
            .iter()
            .position(|p| p.r#type == Some(PieceType::Unknown as i32))
    });
    for (i, p) in pieces.iter_mut().enumerate() {
        if Some(i) == unk {
            p.r#type = Some(PieceType::Unknown as i32);
        } else if p.r#type == Some(PieceType::Unknown as i32) {
            p.r#type = Some(PieceType::Unused as i32);
        }
    }
    let byte_fallback = pieces
        .iter()
        .any(|p| p.r#type == Some(PieceType::Byte as i32));
    let trainer = TrainerSpec {
        model_type: Some(ModelType::Bpe as i32),
        vocab_size: Some(pieces.len() as i32),
        byte_fallback: Some(byte_fallback),
        unk_piece: piece_of(g, "tokenizer.ggml.unknown_token_id", &pieces),
        bos_piece: piece_of(g, "tokenizer.ggml.bos_token_id", &pieces),
        eos_piece: piece_of(g, "tokenizer.ggml.eos_token_id", &pieces),
        pad_piece: piece_of(g, "tokenizer.ggml.padding_token_id", &pieces),
        ..Default::default()
    };
    let charsmap = match array(g, "tokenizer.ggml.precompiled_charsmap", origin)? {
        None => None,
        Some(a) => Some(
            a.iter()
                .map(|v| v.as_i64().and_then(|b| u8::try_from(b & 0xFF).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| {
                    invalid(
                        origin,
                        "tokenizer.ggml.precompiled_charsmap is not a byte array".into(),
                    )
                })?,
        ),
    };
    let normalizer = NormalizerSpec {
        name: Some(
            if charsmap.is_some() {
                "user_defined"
            } else {
                "identity"
            }
            .into(),
        ),
        precompiled_charsmap: charsmap,
        add_dummy_prefix: Some(flag(g, "tokenizer.ggml.add_space_prefix", true)),
        remove_extra_whitespaces: Some(flag(g, "tokenizer.ggml.remove_extra_whitespaces", false)),
        escape_whitespaces: Some(true),
        ..Default::default()
    };
    Ok(ModelProto {
        pieces,
        trainer_spec: Some(trainer),
        normalizer_spec: Some(normalizer),
        self_test_data: None,
        denormalizer_spec: None,
    })
}

impl SpmModel {
    /// Loads the SentencePiece-style tokenizer stored in a parsed GGUF file's metadata.
    pub fn from_gguf(g: &Gguf, origin: &str) -> Result<Self> {
        let model = g.get("tokenizer.ggml.model").and_then(Value::as_str);
        if model != Some("llama") {
            return Err(HanpackError::UnsupportedTokenizer {
                origin: origin.to_owned(),
                reason: format!(
                    "GGUF tokenizer model {model:?} is not SentencePiece-style (\"llama\")"
                ),
            });
        }
        Self::from_bytes(&model_proto(g, origin)?.encode_to_vec(), origin)
    }
}
