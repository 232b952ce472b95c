//! Tokenization.
//!
//! * [`spm`] — SentencePiece `.model` files: the pipeline is
//!   normalizer (charsmap + whitespace rules) → model (BPE by piece *score*, or Unigram
//!   Viterbi) → id post-processing (unknown merging, byte fallback) → decoder.
//! * [`bpe`] — byte-level BPE (HF tokenizer.json, tiktoken, vocab.json + merges.txt):
//!   merges by *rank* (lower first), id for id like HF tokenizers and tiktoken.
//! * [`pretokenize`] — regex pre-tokenization for byte-level BPE (lexers + regex fallback).
//! * [`agenda`] — the merge queue both BPE encoders use for long words (a heap with a
//!   run layer for long repetitive input).
//! * [`darts`] — a reader for the Darts-clone double arrays that sentencepiece stores.
//! * [`padded`] — byte arenas padded for fast copies of short tokens (decoding).
//! * [`utf8`] — UTF-8 decoding with sentencepiece's rules (one U+FFFD per bad byte).

pub mod agenda;
pub mod bpe;
pub mod darts;
pub mod model_caches;
pub mod padded;
pub mod pair_filter;
pub mod pretokenize;
pub mod spm;
pub mod ucs2;
pub mod utf8;
