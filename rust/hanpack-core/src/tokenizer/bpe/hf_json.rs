//! HF `tokenizer.json` with a byte-level BPE model: reading, and writing it back.
//!
//! Supported components (anything else is [`HanpackError::UnsupportedTokenizer`] naming
//! the component, never a silent difference):
//! * normalizer: null, NFC, NFD, NFKC, NFKD, Lowercase, Sequence of these;
//! * pre_tokenizer: Split (Regex or String pattern, behavior Isolated, invert false),
//!   ByteLevel (last; `add_prefix_space` only when it is the only stage), Sequence;
//! * model: BPE over byte-level pieces (merges as "a b" strings or [a, b] lists,
//!   `ignore_merges`, `unk_token`), no dropout, no subword prefix/suffix, no byte fallback;
//! * post_processor: null, ByteLevel, TemplateProcessing, RobertaProcessing,
//!   BertProcessing, Sequence — the single-sequence template gives the BOS/EOS ids;
//! * decoder: ByteLevel;
//! * added_tokens with `special`, `lstrip`, `rstrip`, `normalized`, `single_word`.
//!
//! `truncation` and `padding` are per-call options in HF and are ignored here.

use serde_json::{json, Map, Value};

use super::added::{AddedToken, AddedTokens};
use super::bytelevel;
use super::stages::{Normalizer, PreTokenizer, GPT2_PATTERN};
use super::vocab::Vocab;
use super::{BpeTokenizer, PostProcessor, Source};
use crate::error::{HanpackError, Result};
use crate::tokenizer::pretokenize::Splitter;

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn format(&self, reason: impl Into<String>) -> HanpackError {
        HanpackError::TokenizerFormat {
            origin: self.origin.to_owned(),
            reason: reason.into(),
        }
    }
    fn unsupported(&self, reason: impl Into<String>) -> HanpackError {
        HanpackError::UnsupportedTokenizer {
            origin: self.origin.to_owned(),
            reason: reason.into(),
        }
    }
    fn invalid(&self, reason: impl Into<String>) -> HanpackError {
        HanpackError::InvalidTokenizer {
            origin: self.origin.to_owned(),
            reason: reason.into(),
        }
    }
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("<no type>")
}

fn flag(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn is_null_or_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

/// Loads a `tokenizer.json`; `origin` names the file in errors.
pub fn from_json(data: &[u8], origin: &str) -> Result<BpeTokenizer> {
    let cx = Ctx { origin };
    let root: Value =
        serde_json::from_slice(data).map_err(|e| cx.format(format!("not valid JSON: {e}")))?;
    let root = root
        .as_object()
        .ok_or_else(|| cx.format("the top level is not a JSON object"))?;
    let model = root
        .get("model")
        .ok_or_else(|| cx.format("no \"model\" field"))?;
    let vocab = load_model(&cx, model)?;
    let unk = match model.get("unk_token") {
        Some(Value::String(t)) => Some(vocab.piece_id(t).ok_or_else(|| {
            cx.invalid(format!("model.unk_token {t:?} is not in the vocabulary"))
        })?),
        _ => None,
    };
    let normalizer = match root.get("normalizer") {
        None | Some(Value::Null) => None,
        Some(v) => Some(load_normalizer(&cx, v)?),
    };
    let pre = load_pre_tokenizer(&cx, root.get("pre_tokenizer").unwrap_or(&Value::Null))?;
    match root.get("decoder") {
        Some(d) if type_of(d) == "ByteLevel" => {}
        Some(Value::Null) | None => {
            return Err(cx.unsupported("decoder is null; only the ByteLevel decoder is supported"))
        }
        Some(d) => {
            return Err(cx.unsupported(format!(
                "decoder {:?}; only ByteLevel is supported",
                type_of(d)
            )))
        }
    }
    let added = load_added(&cx, root.get("added_tokens"))?;
    let post = match root.get("post_processor") {
        None | Some(Value::Null) => PostProcessor::default(),
        Some(p) => load_post(&cx, p, &vocab, &added)?,
    };
    let added = AddedTokens::new(added, normalizer.as_ref(), origin)?;
    BpeTokenizer::new(
        origin,
        vocab,
        normalizer,
        pre,
        added,
        post,
        unk,
        Source::Json(data.to_vec()),
    )
}

fn load_model(cx: &Ctx<'_>, model: &Value) -> Result<Vocab> {
    let ty = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
    if ty != "BPE" {
        return Err(cx.unsupported(format!(
            "model type {ty:?}; only byte-level BPE is supported here"
        )));
    }
    if !matches!(model.get("dropout"), None | Some(Value::Null)) {
        return Err(cx.unsupported("model.dropout (random merges cannot be reproduced id for id)"));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if !is_null_or_empty(model.get(key)) {
            return Err(cx.unsupported(format!("model.{key} (not used by byte-level BPE)")));
        }
    }
    if flag(model, "byte_fallback", false) {
        return Err(cx.unsupported(
            "model.byte_fallback (a SentencePiece-style option, not byte-level BPE)",
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| cx.format("model.vocab is missing or not an object"))?;
    let mut pieces = Vec::with_capacity(vocab.len());
    for (piece, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| cx.format(format!("model.vocab[{piece:?}] is {id}, not a token id")))?;
        pieces.push((piece.clone(), id));
    }
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| cx.format("model.merges is missing or not a list"))?;
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let bad = || {
            cx.format(format!(
                "model.merges[{i}] is {}, not \"left right\" or [left, right]",
                short(m)
            ))
        };
        let (a, b) = match m {
            Value::String(s) => {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(a), Some(b), None) => (a.to_owned(), b.to_owned()),
                    _ => return Err(bad()),
                }
            }
            Value::Array(v) => match v.as_slice() {
                [Value::String(a), Value::String(b)] => (a.clone(), b.clone()),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        pairs.push((a, b, format!("model.merges[{i}]")));
    }
    Vocab::from_pieces(
        cx.origin,
        pieces,
        pairs,
        flag(model, "ignore_merges", false),
    )
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        s.chars().take(57).collect::<String>() + "..."
    } else {
        s
    }
}

fn load_normalizer(cx: &Ctx<'_>, v: &Value) -> Result<Normalizer> {
    Ok(match type_of(v) {
        "NFC" => Normalizer::Nfc,
        "NFD" => Normalizer::Nfd,
        "NFKC" => Normalizer::Nfkc,
        "NFKD" => Normalizer::Nfkd,
        "Lowercase" => Normalizer::Lowercase,
        "Sequence" => {
            let steps = v
                .get("normalizers")
                .and_then(Value::as_array)
                .ok_or_else(|| cx.format("normalizer Sequence without \"normalizers\""))?;
            Normalizer::Sequence(
                steps
                    .iter()
                    .map(|s| load_normalizer(cx, s))
                    .collect::<Result<_>>()?,
            )
        }
        other => return Err(cx.unsupported(format!("normalizer {other:?}"))),
    })
}

fn load_pre_tokenizer(cx: &Ctx<'_>, v: &Value) -> Result<PreTokenizer> {
    let stages: Vec<&Value> = match type_of(v) {
        "Sequence" => v
            .get("pretokenizers")
            .and_then(Value::as_array)
            .ok_or_else(|| cx.format("pre_tokenizer Sequence without \"pretokenizers\""))?
            .iter()
            .collect(),
        _ if v.is_null() => {
            return Err(cx.unsupported(
                "pre_tokenizer is null; a byte-level BPE needs the ByteLevel pre-tokenizer",
            ))
        }
        _ => vec![v],
    };
    let mut pre = PreTokenizer {
        add_prefix_space: false,
        splitters: Vec::new(),
        byte_level_regex: false,
    };
    let mut seen_byte_level = false;
    for (i, s) in stages.iter().enumerate() {
        if seen_byte_level {
            return Err(cx.unsupported(format!(
                "pre-tokenizer {:?} after ByteLevel (it would see byte-level text)",
                type_of(s)
            )));
        }
        match type_of(s) {
            "ByteLevel" => {
                seen_byte_level = true;
                if flag(s, "add_prefix_space", true) {
                    if i > 0 {
                        return Err(cx.unsupported("ByteLevel pre-tokenizer with add_prefix_space after another pre-tokenizer"));
                    }
                    pre.add_prefix_space = true;
                }
                if flag(s, "use_regex", true) {
                    pre.splitters.push(Splitter::new(GPT2_PATTERN)?);
                    pre.byte_level_regex = true;
                }
            }
            "Split" => {
                let behavior = s
                    .get("behavior")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>");
                if behavior != "Isolated" || flag(s, "invert", false) {
                    return Err(cx.unsupported(format!("Split pre-tokenizer with behavior {behavior:?} / invert; only Isolated, invert false")));
                }
                let pattern = match s.get("pattern") {
                    Some(p) => match (
                        p.get("Regex").and_then(Value::as_str),
                        p.get("String").and_then(Value::as_str),
                    ) {
                        (Some(r), _) => r.to_owned(),
                        (None, Some(lit)) => fancy_regex::escape(lit).into_owned(),
                        _ => {
                            return Err(cx.format(format!(
                                "Split pattern {} is neither Regex nor String",
                                short(p)
                            )))
                        }
                    },
                    None => return Err(cx.format("Split pre-tokenizer without a pattern")),
                };
                pre.splitters.push(
                    Splitter::new(&pattern)
                        .map_err(|e| cx.invalid(format!("pre_tokenizer Split: {e}")))?,
                );
            }
            other => return Err(cx.unsupported(format!("pre-tokenizer {other:?}"))),
        }
    }
    if !seen_byte_level {
        return Err(cx.unsupported(
            "no ByteLevel pre-tokenizer: only byte-level BPE tokenizer.json files are supported",
        ));
    }
    Ok(pre)
}

fn load_added(cx: &Ctx<'_>, v: Option<&Value>) -> Result<Vec<AddedToken>> {
    let Some(list) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| cx.format("added_tokens is not a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| cx.format(format!("added_tokens[{i}] has no valid \"id\"")))?;
        let content = t
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| cx.format(format!("added_tokens[{i}] has no \"content\"")))?;
        out.push(AddedToken {
            id,
            content: content.to_owned(),
            special: flag(t, "special", false),
            single_word: flag(t, "single_word", false),
            lstrip: flag(t, "lstrip", false),
            rstrip: flag(t, "rstrip", false),
            normalized: flag(t, "normalized", !flag(t, "special", false)),
        });
    }
    Ok(out)
}

/// The id of a token named in a post-processor (added tokens first, then the model).
fn token_id(cx: &Ctx<'_>, name: &str, vocab: &Vocab, added: &[AddedToken]) -> Result<u32> {
    added
        .iter()
        .find(|t| t.content == name)
        .map(|t| t.id)
        .or_else(|| vocab.piece_id(name))
        .ok_or_else(|| {
            cx.invalid(format!(
                "post_processor names the token {name:?}, which is not in the vocabulary"
            ))
        })
}

fn load_post(
    cx: &Ctx<'_>,
    p: &Value,
    vocab: &Vocab,
    added: &[AddedToken],
) -> Result<PostProcessor> {
    let mut post = PostProcessor::default();
    match type_of(p) {
        "ByteLevel" => {}
        "TemplateProcessing" => {
            let single = p
                .get("single")
                .and_then(Value::as_array)
                .ok_or_else(|| cx.format("TemplateProcessing without \"single\""))?;
            let specials = p.get("special_tokens").and_then(Value::as_object);
            let mut seen_text = false;
            for item in single {
                if item.get("Sequence").is_some() {
                    seen_text = true;
                    continue;
                }
                let name = item
                    .get("SpecialToken")
                    .and_then(|s| s.get("id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        cx.format(format!(
                            "TemplateProcessing item {} is neither Sequence nor SpecialToken",
                            short(item)
                        ))
                    })?;
                let ids: Vec<u32> = match specials
                    .and_then(|m| m.get(name))
                    .and_then(|s| s.get("ids"))
                    .and_then(Value::as_array)
                {
                    Some(ids) => ids
                        .iter()
                        .map(|v| {
                            v.as_u64()
                                .and_then(|v| u32::try_from(v).ok())
                                .ok_or_else(|| {
                                    cx.format(format!(
                                        "special_tokens[{name:?}].ids is not a list of ids"
                                    ))
                                })
                        })
                        .collect::<Result<_>>()?,
                    None => vec![token_id(cx, name, vocab, added)?],
                };
                if seen_text {
                    &mut post.suffix
                } else {
                    &mut post.prefix
                }
                .extend(ids);
            }
        }
        ty @ ("RobertaProcessing" | "BertProcessing") => {
            let get = |key: &str| -> Result<u32> {
                let pair = p
                    .get(key)
                    .and_then(Value::as_array)
                    .ok_or_else(|| cx.format(format!("{ty} without \"{key}\"")))?;
                pair.get(1)
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| cx.format(format!("{ty}.{key} is not [token, id]")))
            };
            post.prefix.push(get("cls")?);
            post.suffix.push(get("sep")?);
        }
        "Sequence" => {
            let steps = p
                .get("processors")
                .and_then(Value::as_array)
                .ok_or_else(|| cx.format("post_processor Sequence without \"processors\""))?;
            for s in steps {
                let part = load_post(cx, s, vocab, added)?;
                post.prefix.extend(part.prefix);
                post.suffix.extend(part.suffix);
            }
        }
        other => return Err(cx.unsupported(format!("post_processor {other:?}"))),
    }
    Ok(post)
}

/// The merges of a vocabulary that has only ranks (tiktoken): for each token, the two
/// parts that merging with lower ranks only ends in. Tokens that no merge sequence
/// reaches are left out (with `ignore_merges` they are still found whole).
fn derive_merges(vocab: &Vocab) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut ids_by_rank: Vec<(u32, &[u8])> = (0..vocab.len() as u32)
        .filter_map(|i| vocab.bytes_of(i).map(|b| (i, b)))
        .collect();
    ids_by_rank.sort_by_key(|t| t.0);
    for (id, bytes) in ids_by_rank {
        if bytes.len() < 2 || vocab.token_of_bytes(bytes) != Some(id) {
            continue;
        }
        let mut parts: Vec<u32> = bytes.iter().map(|&b| vocab.byte_ids[b as usize]).collect();
        loop {
            let best = (0..parts.len() - 1)
                .filter_map(|i| {
                    vocab
                        .merge(parts[i], parts[i + 1])
                        .filter(|m| m.rank < id)
                        .map(|m| (m.rank, i, m.id))
                })
                .min();
            match best {
                Some((_, i, m)) if parts.len() > 2 => {
                    parts[i] = m;
                    parts.remove(i + 1);
                }
                _ => break,
            }
        }
        if parts.len() == 2 {
            out.push((parts[0], parts[1]));
        }
    }
    out
}

/// The tokenizer as `tokenizer.json` bytes: the original file when it was loaded from
/// one, otherwise a generated file that HF `tokenizers` loads to the same ids.
pub fn to_json(t: &BpeTokenizer) -> Result<Vec<u8>> {
    if let Source::Json(bytes) = &t.source {
        return Ok(bytes.clone());
    }
    let v = &t.vocab;
    let merges = if v.merges.is_empty() {
        derive_merges(v)
    } else {
        v.merges.clone()
    };
    let mut vocab = Map::new();
    let mut model_pieces: Vec<(&str, u32)> = v.model_pieces().collect();
    model_pieces.sort_by_key(|p| p.1);
    for (piece, id) in model_pieces {
        vocab.insert(piece.to_owned(), json!(id));
    }
    let piece = |id: u32| v.piece(id).map(str::to_owned).unwrap_or_default();
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(a, b)| json!([piece(a), piece(b)]))
        .collect();
    let added: Vec<Value> = t
        .added
        .tokens
        .iter()
        .map(|a| {
            json!({"id": a.id, "content": a.content, "single_word": a.single_word, "lstrip": a.lstrip,
                   "rstrip": a.rstrip, "normalized": a.normalized, "special": a.special})
        })
        .collect();
    let mut splits: Vec<Value> = t
        .pre
        .splitters
        .iter()
        .map(|s| json!({"type": "Split", "pattern": {"Regex": s.pattern()}, "behavior": "Isolated", "invert": false}))
        .collect();
    splits.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": t.normalizer.as_ref().map(|n| n.to_json()),
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": splits},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": v.ignore_merges, "vocab": vocab, "merges": merges}
    });
    serde_json::to_vec(&doc).map_err(|e| {
        HanpackError::InvalidArgument(format!("cannot write tokenizer.json for {}: {e}", t.origin))
    })
}

/// The byte-level string of raw bytes (for callers that show tiktoken tokens).
pub fn piece_of_bytes(bytes: &[u8]) -> String {
    bytelevel::encode_bytes(bytes)
}
