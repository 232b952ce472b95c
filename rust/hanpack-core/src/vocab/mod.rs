//! Building vocabularies for Chinese: word segmentation ([`segment`], jieba's algorithm),
//! BPE training on counted units ([`units`], [`train`]), extension of SentencePiece BPE models with reachable pieces ([`extend`]) and their
//! export for HF tokenizers ([`hf_export`]).

pub mod extend;
pub mod hf_export;
pub mod segment;
pub mod train;
pub mod units;
pub mod userdict;
