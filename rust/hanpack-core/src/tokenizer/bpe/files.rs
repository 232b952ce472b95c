//! Loaders for the plain-file formats: tiktoken rank files (`base64token rank` per line,
//! e.g. LLaMA-3's `tokenizer.model`) and GPT-2 style `vocab.json` + `merges.txt` pairs.
//! Neither names its pre-tokenizer, so the caller gives a pattern (a name from
//! [`named_pattern`] or a regex) and the special tokens.

use base64::Engine;

use super::added::{AddedToken, AddedTokens};
use super::stages::{Normalizer, PreTokenizer, GPT2_PATTERN};
use super::vocab::Vocab;
use super::{BpeTokenizer, PostProcessor, Source};
use crate::error::{HanpackError, Result};
use crate::tokenizer::pretokenize::Splitter;

/// LLaMA-3's pattern (also tiktoken's cl100k_base, written without possessive quantifiers).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern: LLaMA-3's with single digits.
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regex of a named pattern (`llama3`, `cl100k`, `gpt2`, `qwen2`).
pub fn named_pattern(name: &str) -> Option<&'static str> {
    Some(match name {
        "llama3" | "cl100k" | "cl100k_base" => LLAMA3_PATTERN,
        "qwen2" => QWEN2_PATTERN,
        "gpt2" | "r50k_base" | "p50k_base" => GPT2_PATTERN,
        _ => return None,
    })
}

/// A named pattern's regex, or `pattern` itself when it is not a name.
pub fn resolve_pattern(pattern: &str) -> &str {
    named_pattern(pattern).unwrap_or(pattern)
}

fn format_error(origin: &str, reason: String) -> HanpackError {
    HanpackError::TokenizerFormat {
        origin: origin.to_owned(),
        reason,
    }
}

/// Settings the plain-file formats do not store.
#[derive(Debug, Clone, Default)]
pub struct PlainConfig {
    /// A name (see [`named_pattern`]) or a regex.
    pub pattern: String,
    /// (text, id) of each special token.
    pub special_tokens: Vec<(String, u32)>,
    pub normalizer: Option<Normalizer>,
}

fn assemble(origin: &str, vocab: Vocab, config: &PlainConfig) -> Result<BpeTokenizer> {
    let pattern = resolve_pattern(&config.pattern).to_owned();
    let splitter = Splitter::new(&pattern)?;
    let pre = PreTokenizer {
        add_prefix_space: false,
        splitters: vec![splitter],
        byte_level_regex: false,
    };
    let mut tokens = Vec::new();
    for (text, id) in &config.special_tokens {
        if text.is_empty() {
            return Err(HanpackError::InvalidArgument(
                "special_tokens: a special token's text is empty".into(),
            ));
        }
        if let Some(p) = vocab.piece(*id) {
            if vocab.bytes_of(*id) != Some(text.as_bytes()) {
                return Err(HanpackError::InvalidArgument(format!(
                    "special_tokens: id {id} of {text:?} is already the token {p:?} in {origin}"
                )));
            }
        }
        tokens.push(AddedToken::special(*id, text));
    }
    let added = AddedTokens::new(tokens, config.normalizer.as_ref(), origin)?;
    BpeTokenizer::new(
        origin,
        vocab,
        config.normalizer.clone(),
        pre,
        added,
        PostProcessor::default(),
        None,
        Source::Generated,
    )
}

/// Parses a tiktoken rank file: one `base64(token bytes) rank` per line.
pub fn parse_tiktoken(data: &[u8], origin: &str) -> Result<Vec<(Vec<u8>, u32, usize)>> {
    let text = std::str::from_utf8(data)
        .map_err(|e| format_error(origin, format!("not UTF-8 text ({e})")))?;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut ranks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(token), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format_error(
                origin,
                format!(
                    "line {n}: expected '<base64 token> <rank>', got {:?}",
                    short(line)
                ),
            ));
        };
        let bytes = engine.decode(token).map_err(|e| {
            format_error(
                origin,
                format!("line {n}: bad base64 {:?}: {e}", short(token)),
            )
        })?;
        let rank: u32 = rank.trim_end_matches('\r').parse().map_err(|_| {
            format_error(
                origin,
                format!(
                    "line {n}: rank {:?} is not a non-negative integer",
                    short(rank)
                ),
            )
        })?;
        ranks.push((bytes, rank, n));
    }
    if ranks.is_empty() {
        return Err(format_error(origin, "no tokens (empty file)".into()));
    }
    Ok(ranks)
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// A tiktoken rank file with the caller's pattern and special tokens.
pub fn from_tiktoken(data: &[u8], origin: &str, config: &PlainConfig) -> Result<BpeTokenizer> {
    let ranks = parse_tiktoken(data, origin)?;
    let vocab = Vocab::from_ranks(origin, ranks)?;
    assemble(origin, vocab, config)
}

/// `vocab.json` (piece → id) and `merges.txt` (`left right` per line, an optional
/// `#version` first line), as GPT-2 and Qwen2 ship them.
pub fn from_vocab_merges(
    vocab_json: &[u8],
    merges_txt: &[u8],
    origin: &str,
    config: &PlainConfig,
) -> Result<BpeTokenizer> {
    let vocab_origin = format!("{origin}/vocab.json");
    let merges_origin = format!("{origin}/merges.txt");
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(vocab_json)
        .map_err(|e| {
            format_error(
                &vocab_origin,
                format!("not a JSON object of piece -> id: {e}"),
            )
        })?;
    let mut vocab = Vec::with_capacity(map.len());
    for (piece, id) in map {
        let id = id
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                format_error(
                    &vocab_origin,
                    format!("id of {piece:?} is {id}, not a token id"),
                )
            })?;
        vocab.push((piece, id));
    }
    let text = std::str::from_utf8(merges_txt)
        .map_err(|e| format_error(&merges_origin, format!("not UTF-8 text ({e})")))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format_error(
                &merges_origin,
                format!(
                    "line {}: expected two pieces separated by one space, got {:?}",
                    i + 1,
                    short(line)
                ),
            ));
        };
        merges.push((a.to_owned(), b.to_owned(), format!("line {}", i + 1)));
    }
    let vocab = Vocab::from_pieces(&merges_origin, vocab, merges, false)?;
    assemble(origin, vocab, config)
}
