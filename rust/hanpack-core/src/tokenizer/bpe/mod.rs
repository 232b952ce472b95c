//! Byte-level BPE (GPT-2 / LLaMA-3 / Qwen2 / tiktoken), id for id like HF `tokenizers`
//! and tiktoken.
//!
//! The pipeline, one file per stage:
//! 1. [`added`] — added / special tokens are cut out of the raw text first (policy per call).
//! 2. [`stages::Normalizer`] — e.g. NFC, on each span between added tokens.
//! 3. [`stages::PreTokenizer`] — regex splits ([`crate::tokenizer::pretokenize`]); BPE
//!    never merges across the pieces.
//! 4. [`merge`] — each piece's bytes are merged by *rank* (lower first), see [`vocab`].
//! 5. Post-processing — BOS/EOS ids from the file's template, only when asked for.
//! 6. [`decode`] — ids → bytes → UTF-8, invalid sequences become U+FFFD.
//!
//! Loaders: [`hf_json`] (`tokenizer.json`, read and written) and [`files`]
//! (`vocab.json` + `merges.txt`, tiktoken rank files).

pub mod added;
pub mod bytelevel;
pub mod cuts;
pub mod decode;
pub mod files;
pub mod gguf_vocab;
pub mod hf_json;
pub mod merge;
pub mod stages;
pub mod vocab;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::ops::Range;

use added::{AddedTokens, Policy, Segment};
use stages::{Normalizer, PreTokenizer};
use vocab::Vocab;

use crate::error::{HanpackError, Result};
use crate::tokenizer::ucs2::Ucs2Slots;

/// Ids added around the text when the caller asks for BOS / EOS (HF's post-processor).
#[derive(Debug, Clone, Default)]
pub struct PostProcessor {
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
}

/// Where the model came from, for writing it back out.
#[derive(Debug, Clone)]
pub enum Source {
    /// Loaded from `tokenizer.json`: saving writes these bytes unchanged.
    Json(Vec<u8>),
    /// Built from other files: saving generates a `tokenizer.json` from the stages.
    Generated,
}

/// A byte-level BPE tokenizer; immutable after loading and shared between threads.
#[derive(Debug, Clone)]
pub struct BpeTokenizer {
    pub origin: String,
    pub vocab: Vocab,
    pub normalizer: Option<Normalizer>,
    pub pre: PreTokenizer,
    pub added: AddedTokens,
    pub post: PostProcessor,
    pub unk: Option<u32>,
    pub source: Source,
    /// id → whether it is a special added token (skipped by `skip_special` decoding).
    special: Vec<bool>,
    /// Token texts as UTF-16 units, for decoding to Python strings (see [`crate::tokenizer::ucs2`]).
    pub ucs2: Ucs2Slots,
    /// Distinguishes models in the per-thread piece cache.
    cache_key: usize,
}

/// Pieces of at most this many bytes are cached per thread (longer ones are rare and
/// would crowd out the words that repeat).
const CACHE_PIECE_MAX: usize = 32;
/// Entries per thread before the cache is cleared (bounded memory, as HF's 10k-word
/// cache; clearing is cheaper than LRU bookkeeping and refills within a few lines).
const CACHE_ENTRIES: usize = 1 << 15;

struct PieceCache {
    model: usize,
    map: vocab::FxMap<Box<[u8]>, Box<[u32]>>,
}

thread_local! {
    static CACHE: RefCell<PieceCache> = RefCell::new(PieceCache { model: 0, map: Default::default() });
}

static NEXT_KEY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

impl BpeTokenizer {
    pub fn new(
        origin: &str,
        vocab: Vocab,
        normalizer: Option<Normalizer>,
        pre: PreTokenizer,
        added: AddedTokens,
        post: PostProcessor,
        unk: Option<u32>,
        source: Source,
    ) -> Result<Self> {
        let mut vocab = vocab;
        for t in &added.tokens {
            vocab.add_token(t.id, &t.content);
        }
        let mut special = vec![false; vocab.len()];
        for t in added.tokens.iter().filter(|t| t.special) {
            special[t.id as usize] = true;
        }
        for &id in post.prefix.iter().chain(&post.suffix) {
            if vocab.piece(id).is_none() {
                return Err(HanpackError::InvalidTokenizer {
                    origin: origin.to_owned(),
                    reason: format!(
                        "post-processor uses token id {id}, which is not in the vocabulary"
                    ),
                });
            }
        }
        let cache_key = NEXT_KEY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ucs2 = Ucs2Slots::build(vocab.len(), |i| vocab.bytes_of(i as u32));
        Ok(Self {
            origin: origin.to_owned(),
            vocab,
            normalizer,
            pre,
            added,
            post,
            unk,
            source,
            special,
            ucs2,
            cache_key,
        })
    }

    /// One more than the largest id.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        (self.post.prefix.len() == 1).then(|| self.post.prefix[0])
    }

    pub fn eos_id(&self) -> Option<u32> {
        (self.post.suffix.len() == 1).then(|| self.post.suffix[0])
    }

    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.vocab.piece(id)
    }

    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.vocab.piece_id(piece)
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Special tokens' texts, in id order.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self
            .added
            .tokens
            .iter()
            .filter(|t| t.special)
            .map(|t| (t.content.clone(), t.id))
            .collect();
        v.sort_by_key(|t| t.1);
        v
    }

    /// The special-token policy for one call (`None`: all; see [`AddedTokens::policy`]).
    pub fn policy(
        &self,
        allowed: Option<&[String]>,
        disallowed: Option<&[String]>,
    ) -> Result<Policy> {
        self.added.policy(allowed, disallowed)
    }

    /// `text` after the normalizer.
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer
            .as_ref()
            .map_or_else(|| text.to_owned(), |n| n.apply(text).into_owned())
    }

    pub fn encode(
        &self,
        text: &str,
        policy: &Policy,
        add_bos: bool,
        add_eos: bool,
    ) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_into(text, policy, add_bos, add_eos, &mut out)?;
        Ok(out)
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(
        &self,
        text: &str,
        policy: &Policy,
        add_bos: bool,
        add_eos: bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if add_bos {
            if self.post.prefix.is_empty() {
                return Err(HanpackError::InvalidArgument(format!(
                    "add_bos=True, but {} adds no token before the text",
                    self.origin
                )));
            }
            out.extend_from_slice(&self.post.prefix);
        }
        if self.added.is_empty() {
            self.encode_span(text, policy, out)?;
        } else {
            let mut segments = Vec::new();
            self.added.split(text, false, policy, &mut segments)?;
            for s in segments {
                match s {
                    Segment::Token(id) => out.push(id),
                    Segment::Text(r) => self.encode_span(&text[r], policy, out)?,
                }
            }
        }
        if add_eos {
            if self.post.suffix.is_empty() {
                return Err(HanpackError::InvalidArgument(format!(
                    "add_eos=True, but {} adds no token after the text",
                    self.origin
                )));
            }
            out.extend_from_slice(&self.post.suffix);
        }
        Ok(())
    }

    /// Normalizes one span between raw-matched added tokens, then matches the
    /// normalized added tokens in it.
    fn encode_span(&self, text: &str, policy: &Policy, out: &mut Vec<u32>) -> Result<()> {
        let text = match &self.normalizer {
            Some(n) => n.apply(text),
            None => std::borrow::Cow::Borrowed(text),
        };
        if !self.added.has_normalized() {
            return self.encode_ordinary(&text, out);
        }
        let mut segments = Vec::new();
        self.added.split(&text, true, policy, &mut segments)?;
        for s in segments {
            match s {
                Segment::Token(id) => out.push(id),
                Segment::Text(r) => self.encode_ordinary(&text[r], out)?,
            }
        }
        Ok(())
    }

    /// Pre-tokenizes and merges normalized text that has no added tokens left.
    fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let prefixed;
        let text = if self.pre.add_prefix_space && !text.starts_with(' ') && !text.is_empty() {
            prefixed = format!(" {text}");
            prefixed.as_str()
        } else {
            text
        };
        let mut pieces: Vec<Range<usize>> = Vec::with_capacity(text.len() / 4 + 1);
        let mut scratch = Vec::new();
        self.pre.split(text, &mut pieces, &mut scratch)?;
        CACHE.with(|cell| {
            // A re-entrant borrow cannot happen (encoding does not call back into itself),
            // but fall back to uncached merging rather than panic if it ever did.
            let Ok(mut cache) = cell.try_borrow_mut() else {
                for r in &pieces {
                    merge::encode_piece(&self.vocab, text[r.clone()].as_bytes(), self.unk, out);
                }
                return;
            };
            if cache.model != self.cache_key {
                cache.map.clear();
                cache.model = self.cache_key;
            }
            for r in &pieces {
                let piece = text[r.clone()].as_bytes();
                if piece.len() > CACHE_PIECE_MAX
                    || (piece.len() > merge::SHORT && !piece.is_ascii())
                {
                    merge::encode_piece(&self.vocab, piece, self.unk, out);
                    continue;
                }
                if let Some(ids) = cache.map.get(piece) {
                    out.extend_from_slice(ids);
                    continue;
                }
                let start = out.len();
                merge::encode_piece(&self.vocab, piece, self.unk, out);
                if cache.map.len() >= CACHE_ENTRIES {
                    cache.map.clear();
                }
                cache.map.insert(piece.into(), out[start..].into());
            }
        });
        Ok(())
    }

    /// The pieces of `text` (as `id_to_piece` spells them).
    pub fn encode_as_pieces(&self, text: &str, policy: &Policy) -> Result<Vec<String>> {
        let ids = self.encode(text, policy, false, false)?;
        Ok(ids
            .iter()
            .map(|&id| self.vocab.piece(id).unwrap_or_default().to_owned())
            .collect())
    }
}
