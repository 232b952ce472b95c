//! Building vocabularies for Chinese: word segmentation ([`segment`], jieba's algorithm).
//! Training and extension of SentencePiece vocabularies come here next.

pub mod segment;
pub mod userdict;
