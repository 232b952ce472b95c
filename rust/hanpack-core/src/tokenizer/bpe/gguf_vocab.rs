//! Byte-level BPE tokenizers stored in GGUF files (`tokenizer.ggml.model = "gpt2"`): the
//! tokens, merges and token types of the metadata, with the pre-tokenizer that
//! `tokenizer.ggml.pre` names. llama.cpp writes each pre-tokenizer as a list of regexes
//! applied in turn (its `llm_tokenizer_bpe`), which is HF's `Sequence` of `Split`
//! (`Isolated`) stages; the lists below are llama.cpp's, per name.

use super::added::{AddedToken, AddedTokens};
use super::files::{LLAMA3_PATTERN, QWEN2_PATTERN};
use super::stages::{PreTokenizer, GPT2_PATTERN};
use super::vocab::Vocab;
use super::{BpeTokenizer, PostProcessor, Source};
use crate::error::{HanpackError, Result};
use crate::io::gguf::{Gguf, Value};
use crate::tokenizer::pretokenize::Splitter;

/// llama.cpp's `LLAMA_TOKEN_TYPE_*` values in `tokenizer.ggml.token_type`.
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// Its letter class is written with escapes where a character has a canonical singleton
/// decomposition (U+1FBE, U+1FD3, U+1FDB, U+1F7D, U+2126, U+212A): copies of such text
/// that went through NFC silently become other characters (and ranges run backwards).
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1F7D}ᾀ-ᾴᾶ-ᾼ\u{1FBE}ῂ-ῄῆ-ῌῐ-\u{1FD3}ῖ-\u{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}+",
];
const DEEPSEEK_CODER: &[&str] = &[
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[一-龥ࠀ-一가-퟿]+",
    "\\p{N}",
];
const FALCON: &[&str] = &[
    "[\\p{P}\\$\\+<=>\\^~\\|`]+",
    GPT2_NO_FINAL_SPACE,
    "[0-9][0-9][0-9]",
];
const STARCODER: &[&str] = &["\\p{N}", GPT2_NO_FINAL_SPACE];
/// GPT-2's pattern as llama.cpp writes it (without the final `|\s+`, which only matters
/// for trailing spaces the branch before it already takes).
const GPT2_NO_FINAL_SPACE: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The regexes of a `tokenizer.ggml.pre` name, and whether whole words are looked up
/// before merging (LLaMA-3's `ignore_merges`).
fn pre_tokenizer(name: &str) -> Option<(Vec<&'static str>, bool)> {
    Some(match name {
        "gpt-2" | "mpt" | "olmo" | "jais" => (vec![GPT2_PATTERN], false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => {
            (vec![LLAMA3_PATTERN], true)
        }
        "qwen2" | "qwen2.5" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => {
            (vec![QWEN2_PATTERN], false)
        }
        "deepseek-llm" => (DEEPSEEK_LLM.to_vec(), false),
        "deepseek-coder" => (DEEPSEEK_CODER.to_vec(), false),
        "falcon" => (FALCON.to_vec(), false),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" => {
            (STARCODER.to_vec(), false)
        }
        _ => return None,
    })
}

fn invalid(origin: &str, reason: String) -> HanpackError {
    HanpackError::InvalidTokenizer {
        origin: origin.to_owned(),
        reason,
    }
}

fn strings<'a>(g: &'a Gguf, key: &str, origin: &str) -> Result<Vec<&'a str>> {
    let arr = g
        .get(key)
        .ok_or_else(|| invalid(origin, format!("GGUF metadata has no {key}")))?
        .as_array()
        .ok_or_else(|| invalid(origin, format!("{key} is not an array")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| invalid(origin, format!("{key} holds a non-string")))
        })
        .collect()
}

/// A byte-level BPE tokenizer from a parsed GGUF file's metadata.
pub fn from_gguf(g: &Gguf, origin: &str) -> Result<BpeTokenizer> {
    let unsupported = |reason: String| HanpackError::UnsupportedTokenizer {
        origin: origin.to_owned(),
        reason,
    };
    let model = g
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(origin, "GGUF metadata has no tokenizer.ggml.model".into()))?;
    if model != "gpt2" {
        return Err(unsupported(format!("GGUF tokenizer model {model:?} (hanpack reads \"gpt2\", byte-level BPE, and \"llama\", SentencePiece-style)")));
    }
    let pre_name = g
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let (patterns, ignore_merges) = pre_tokenizer(pre_name)
        .ok_or_else(|| unsupported(format!("GGUF pre-tokenizer {pre_name:?}")))?;
    let tokens = strings(g, "tokenizer.ggml.tokens", origin)?;
    let merges = strings(g, "tokenizer.ggml.merges", origin)?;
    let types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => {
            let arr = v.as_array().ok_or_else(|| {
                invalid(origin, "tokenizer.ggml.token_type is not an array".into())
            })?;
            arr.iter()
                .map(|t| {
                    t.as_i64().ok_or_else(|| {
                        invalid(
                            origin,
                            "tokenizer.ggml.token_type holds a non-integer".into(),
                        )
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    if types.len() != tokens.len() {
        return Err(invalid(
            origin,
            format!("{} token types for {} tokens", types.len(), tokens.len()),
        ));
    }
    let vocab: Vec<(String, u32)> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first character.
        let cut = m
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(k, _)| k);
        let Some(k) = cut else {
            return Err(invalid(
                origin,
                format!("merge {i} ({m:?}) is not two pieces separated by a space"),
            ));
        };
        pairs.push((
            m[..k].to_owned(),
            m[k + 1..].to_owned(),
            format!("merge {i}"),
        ));
    }
    let vocab = Vocab::from_pieces(origin, vocab, pairs, ignore_merges)?;
    let added = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TYPE_CONTROL || ty == TYPE_USER_DEFINED)
        .map(|(i, (&text, &ty))| AddedToken {
            special: ty == TYPE_CONTROL,
            ..AddedToken::special(i as u32, text)
        })
        .collect();
    let added = AddedTokens::new(added, None, origin)?;
    let splitters = patterns
        .iter()
        .map(|p| Splitter::new(p))
        .collect::<Result<Vec<_>>>()?;
    let pre = PreTokenizer {
        add_prefix_space: false,
        splitters,
        byte_level_regex: false,
    };
    let post = PostProcessor::default();
    BpeTokenizer::new(
        origin,
        vocab,
        None,
        pre,
        added,
        post,
        None,
        Source::Generated,
    )
}
