//! hanpack-core: the pure-Rust core of hanpack (no Python here).
//!
//! * [`tokenizer::spm`] — SentencePiece models (BPE and Unigram), encoding and decoding
//!   id-for-id like sentencepiece 0.2.x.
//! * [`io`] — file formats shared by both halves (GGUF, safetensors).
//! * [`vocab`] — Chinese word segmentation (jieba's algorithm), for vocabulary building.
//! * [`quant`] — group-wise 2/3/4/8-bit weight quantization (rtn, mse, hqq) and the packed
//!   layouts that kernels read.
//!
//! Errors are [`error::HanpackError`]; the PyO3 crate maps each variant to one Python
//! exception class in a single place.

pub mod error;
pub mod io;
pub mod prefetch;
pub mod quant;
pub mod tokenizer;
pub mod vocab;

#[cfg(test)]
mod test_rng;

pub use error::{HanpackError, Result};
