//! The SentencePiece `ModelProto` (sentencepiece_model.proto, proto2), as prost messages.
//!
//! Written by hand with prost's derive so that building needs no `protoc`. Every field is
//! `Option` (proto2 presence) so a parsed model re-serializes to the same bytes when its
//! writer used canonical field order, which is what sentencepiece's C++ writer does.
//! Tags and defaults follow sentencepiece 0.2.x.

/// `ModelProto.SentencePiece.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ModelType {
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// Defaults to NORMAL when absent.
    #[prost(enumeration = "PieceType", optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpec {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, optional, tag = "2")]
    pub model_prefix: Option<String>,
    /// Defaults to UNIGRAM when absent.
    #[prost(enumeration = "ModelType", optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub vocab_size: Option<i32>,
    #[prost(string, repeated, tag = "5")]
    pub accept_language: Vec<String>,
    #[prost(int32, optional, tag = "6")]
    pub self_test_sample_size: Option<i32>,
    #[prost(string, optional, tag = "7")]
    pub input_format: Option<String>,
    #[prost(float, optional, tag = "10")]
    pub character_coverage: Option<f32>,
    #[prost(uint64, optional, tag = "11")]
    pub input_sentence_size: Option<u64>,
    #[prost(int32, optional, tag = "12")]
    pub mining_sentence_size: Option<i32>,
    #[prost(int32, optional, tag = "13")]
    pub training_sentence_size: Option<i32>,
    #[prost(int32, optional, tag = "14")]
    pub seed_sentencepiece_size: Option<i32>,
    #[prost(float, optional, tag = "15")]
    pub shrinking_factor: Option<f32>,
    #[prost(int32, optional, tag = "16")]
    pub num_threads: Option<i32>,
    #[prost(int32, optional, tag = "17")]
    pub num_sub_iterations: Option<i32>,
    #[prost(int32, optional, tag = "18")]
    pub max_sentence_length: Option<i32>,
    #[prost(bool, optional, tag = "19")]
    pub shuffle_input_sentence: Option<bool>,
    #[prost(int32, optional, tag = "20")]
    pub max_sentencepiece_length: Option<i32>,
    #[prost(bool, optional, tag = "21")]
    pub split_by_unicode_script: Option<bool>,
    #[prost(bool, optional, tag = "22")]
    pub split_by_whitespace: Option<bool>,
    #[prost(bool, optional, tag = "23")]
    pub split_by_number: Option<bool>,
    #[prost(bool, optional, tag = "24")]
    pub treat_whitespace_as_suffix: Option<bool>,
    #[prost(bool, optional, tag = "25")]
    pub split_digits: Option<bool>,
    #[prost(bool, optional, tag = "26")]
    pub allow_whitespace_only_pieces: Option<bool>,
    #[prost(string, repeated, tag = "30")]
    pub control_symbols: Vec<String>,
    #[prost(string, repeated, tag = "31")]
    pub user_defined_symbols: Vec<String>,
    #[prost(bool, optional, tag = "32")]
    pub vocabulary_output_piece_score: Option<bool>,
    #[prost(bool, optional, tag = "33")]
    pub hard_vocab_limit: Option<bool>,
    #[prost(bool, optional, tag = "34")]
    pub use_all_vocab: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(string, optional, tag = "36")]
    pub required_chars: Option<String>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
    #[prost(string, optional, tag = "44")]
    pub unk_surface: Option<String>,
    #[prost(string, optional, tag = "45")]
    pub unk_piece: Option<String>,
    #[prost(string, optional, tag = "46")]
    pub bos_piece: Option<String>,
    #[prost(string, optional, tag = "47")]
    pub eos_piece: Option<String>,
    #[prost(string, optional, tag = "48")]
    pub pad_piece: Option<String>,
    #[prost(bool, optional, tag = "49")]
    pub train_extremely_large_corpus: Option<bool>,
    #[prost(bool, optional, tag = "50")]
    pub enable_differential_privacy: Option<bool>,
    #[prost(float, optional, tag = "51")]
    pub differential_privacy_noise_level: Option<f32>,
    #[prost(uint64, optional, tag = "52")]
    pub differential_privacy_clipping_threshold: Option<u64>,
    #[prost(string, optional, tag = "53")]
    pub pretokenization_delimiter: Option<String>,
    #[prost(string, optional, tag = "54")]
    pub seed_sentencepieces_file: Option<String>,
    #[prost(bool, optional, tag = "55")]
    pub auto_character_coverage: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// `<u32 LE trie size><Darts double array><NUL-separated replacement strings>`.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3", default = "true")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4", default = "true")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5", default = "true")]
    pub escape_whitespaces: Option<bool>,
    #[prost(string, optional, tag = "6")]
    pub normalization_rule_tsv: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SelfTestSample {
    #[prost(string, optional, tag = "1")]
    pub input: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub expected: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SelfTestData {
    #[prost(message, repeated, tag = "1")]
    pub samples: Vec<SelfTestSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
    #[prost(message, optional, tag = "4")]
    pub self_test_data: Option<SelfTestData>,
    #[prost(message, optional, tag = "5")]
    pub denormalizer_spec: Option<NormalizerSpec>,
}

impl NormalizerSpec {
    pub fn charsmap(&self) -> &[u8] {
        self.precompiled_charsmap.as_deref().unwrap_or(&[])
    }
}
