//! File formats read by both the tokenizers and the quantizer.

pub mod gguf;
