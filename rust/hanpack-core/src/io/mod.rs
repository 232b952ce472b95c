//! File formats read by both the tokenizers and the quantizer.

pub mod gguf;
pub mod gguf_writer;
pub mod records;
pub mod safetensors;
pub mod safetensors_writer;
