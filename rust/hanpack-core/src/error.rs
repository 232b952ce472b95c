//! The one error type of the core. Each variant carries what a user needs to find the
//! fault (file, id, reason); the Python layer maps variants to exception classes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HanpackError {
    /// The file could not be read (missing, permission, ...).
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written (disk full, file size limit, permission, ...).
    #[error("cannot write {path}: {source}")]
    IoWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a readable safetensors file (truncated, a header that lies about offsets,
    /// dtypes or shapes, an unknown dtype); `reason` names the tensor or field.
    #[error("{path}: not a valid safetensors file: {reason}")]
    CheckpointFormat { path: String, reason: String },
    /// The bytes are not a SentencePiece `ModelProto` (truncated, corrupt, another format).
    #[error("{origin}: not a valid SentencePiece model file: {reason}")]
    ModelFormat { origin: String, reason: String },
    /// The protobuf parsed, but the model breaks one of sentencepiece's load-time rules.
    #[error("{origin}: invalid SentencePiece model: {reason}")]
    InvalidModel { origin: String, reason: String },
    /// Not a readable tokenizer file of the format it was read as (truncated or corrupt
    /// JSON, bad base64, a line that does not parse); `reason` names the line or field.
    #[error("{origin}: not a valid tokenizer file: {reason}")]
    TokenizerFormat { origin: String, reason: String },
    /// The file parses, but its contents are inconsistent (duplicate ranks, merges that
    /// name unknown tokens, ...).
    #[error("{origin}: invalid tokenizer: {reason}")]
    InvalidTokenizer { origin: String, reason: String },
    /// A well-formed tokenizer that uses a component hanpack does not implement (a
    /// normalizer, pre-tokenizer, model option, ...); `reason` names the component.
    #[error("{origin}: unsupported tokenizer: {reason}")]
    UnsupportedTokenizer { origin: String, reason: String },
    /// The text contains a special token's text that the caller did not allow (the
    /// tiktoken policy: special tokens in user text are an error unless allowed).
    #[error("the text contains the special token {token:?} at byte {position}, which is disallowed; pass allowed_special to encode it as a special token, or disallowed_special=() to encode it as plain text")]
    DisallowedSpecial { token: String, position: usize },
    /// A token id outside `0..vocab_size`.
    #[error("token id {id} is out of range (vocab_size is {vocab_size})")]
    IdOutOfRange { id: i64, vocab_size: usize },
    /// An argument that the caller got wrong (e.g. add_bos on a model without `<s>`).
    #[error("{0}")]
    InvalidArgument(String),
    /// A NaN or infinity in a weight to quantize; `row`/`col` index the 2-D weight.
    #[error("tensor {tensor:?}: non-finite value {value} at [{row}, {col}]; quantization needs finite weights")]
    NonFiniteWeight {
        tensor: String,
        row: usize,
        col: usize,
        value: f32,
    },
    /// A tensor that cannot be quantized as asked (e.g. a scale beyond fp16's range).
    #[error("tensor {tensor:?}: {reason}")]
    Quantization { tensor: String, reason: String },
    /// Packed arrays whose sizes do not match their layout.
    #[error("quantized tensor layout: {0}")]
    QuantLayout(String),
}

pub type Result<T> = std::result::Result<T, HanpackError>;
