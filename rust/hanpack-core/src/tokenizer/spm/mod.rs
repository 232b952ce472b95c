//! SentencePiece models: load a `.model` file, encode and decode exactly like
//! sentencepiece 0.2.x (`SentencePieceProcessor`).
//!
//! Pipeline: [`normalizer`] → [`bpe`] or [`unigram`] (pieces with their ids, or the
//! unknown id) → post-processing (runs of unknown pieces merged into one, or split into
//! `<0xXX>` byte pieces with byte fallback) → ids. [`decode`] goes back.

pub mod bpe;
pub mod decode;
pub mod gguf_vocab;
pub mod normalizer;
pub mod prefix_matcher;
pub mod proto;
pub mod unigram;
pub mod vocab;
pub mod word_cache;

use std::cell::RefCell;
use std::path::Path;

use prost::Message;

use crate::error::{HanpackError, Result};
use bpe::{BpeModel, BpeScratch};
use normalizer::{CharsMap, Normalizer};
use prefix_matcher::PrefixMatcher;
use proto::{ModelProto, ModelType, NormalizerSpec, PieceType, SelfTestData, TrainerSpec};
use unigram::{UnigramModel, UnigramScratch};
use vocab::{BuildError, IndexKind, PieceTable};

/// The unknown id of a byte-fallback model that has no `<unk>` piece.
const NO_UNK: u32 = u32::MAX;

/// One piece found by the model: a byte range of the normalized text and its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub start: u32,
    pub end: u32,
    pub id: u32,
}

enum Algorithm {
    Bpe(BpeModel),
    Unigram(UnigramModel),
}

/// What `save` needs besides the pieces (the charsmaps live in the normalizers).
struct Specs {
    /// Per piece: bit 0 = `score` was present in the file, bit 1 = `type` was, so `save`
    /// writes back exactly the fields that were there (proto2 keeps presence).
    present: Vec<u8>,
    trainer: Option<TrainerSpec>,
    normalizer: Option<NormalizerSpec>,
    self_test: Option<SelfTestData>,
    denormalizer: Option<NormalizerSpec>,
}

/// A loaded SentencePiece model. Immutable and `Sync`: share it across threads.
pub struct SpmModel {
    table: PieceTable,
    algorithm: Algorithm,
    normalizer: Normalizer,
    denormalizer: Option<Normalizer>,
    matcher: Option<PrefixMatcher>,
    /// The UNKNOWN piece (exactly one exists in a valid model).
    unk: u32,
    /// `<0xXX>` ids when `trainer_spec.byte_fallback` is set.
    byte_ids: Option<Box<[u32; 256]>>,
    unk_id: Option<u32>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
    unk_surface: String,
    /// Some NORMAL piece has the same text as a reserved piece, so `PieceToId(IdToPiece(id))`
    /// is not the identity and decode must look ids up again, as sentencepiece does.
    decode_remaps: bool,
    /// `decode::decode_kind` of every piece.
    decode_kind: Vec<u8>,
    specs: Specs,
}

/// Per-thread buffers, so encoding allocates nothing in steady state.
#[derive(Default)]
struct Scratch {
    normalized: String,
    tokens: Vec<Token>,
    bpe: BpeScratch,
    unigram: UnigramScratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Scratch buffers that grew past a text of this many bytes are freed after the call.
const KEEP_SCRATCH_TEXT: usize = 4 << 20;

fn flag(v: Option<bool>, default: bool) -> bool {
    v.unwrap_or(default)
}

impl SpmModel {
    /// Reads and loads a `.model` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| HanpackError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Loads a serialized `ModelProto`; `origin` names it in errors (a path, "<bytes>").
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let format_err = |reason: String| HanpackError::ModelFormat {
            origin: origin.to_owned(),
            reason,
        };
        let invalid = |reason: String| HanpackError::InvalidModel {
            origin: origin.to_owned(),
            reason,
        };
        if bytes.is_empty() {
            return Err(format_err("the file is empty".into()));
        }
        let proto = ModelProto::decode(bytes).map_err(|e| format_err(format!("protobuf decoding failed ({e}); the file is truncated, corrupt or of another format")))?;
        if proto.pieces.is_empty() {
            return Err(format_err(
                "it holds no pieces (is it a SentencePiece .model file?)".into(),
            ));
        }
        let ModelProto {
            pieces,
            trainer_spec,
            normalizer_spec,
            self_test_data,
            denormalizer_spec,
        } = proto;
        let trainer = trainer_spec.clone().unwrap_or_default();
        let byte_fallback = flag(trainer.byte_fallback, false);

        // sentencepiece's InitializePieces checks, in its order.
        let mut unk: Option<u32> = None;
        let mut byte_ids = [u32::MAX; 256];
        let mut entries = Vec::with_capacity(pieces.len());
        let mut present = Vec::with_capacity(pieces.len());
        for (i, p) in pieces.into_iter().enumerate() {
            present.push(u8::from(p.score.is_some()) | u8::from(p.r#type.is_some()) << 1);
            let text = p.piece.unwrap_or_default();
            let mut ty = p
                .r#type
                .and_then(|t| PieceType::try_from(t).ok())
                .unwrap_or(PieceType::Normal);
            let mut indexed = true;
            if text == "\0" && byte_fallback {
                // sentencepiece 0.2.3 warns and treats it as an UNUSED piece that no
                // lookup finds (InternLM's V7_sft.model has one), and saves it as UNUSED.
                ty = PieceType::Unused;
                indexed = false;
                if let Some(flags) = present.last_mut() {
                    *flags |= 2;
                }
            }
            if text.len() >= 8000 {
                return Err(invalid(format!(
                    "piece {i} is too long ({} bytes)",
                    text.len()
                )));
            }
            if text.is_empty() {
                return Err(invalid(format!("piece {i} is empty")));
            }
            if indexed && text.contains('\0') {
                return Err(invalid(format!("piece {i} contains a NUL character")));
            }
            match ty {
                PieceType::Unknown => {
                    if unk.is_some() {
                        return Err(invalid(format!("piece {i} is a second UNKNOWN piece")));
                    }
                    unk = Some(i as u32);
                }
                PieceType::Byte => {
                    if !byte_fallback {
                        return Err(invalid(format!(
                            "byte piece {text} (id {i}) is found although `byte_fallback` is false"
                        )));
                    }
                    match decode::piece_to_byte(&text) {
                        Some(b) => byte_ids[b as usize] = i as u32,
                        None => {
                            return Err(invalid(format!("byte piece {text} (id {i}) is invalid")))
                        }
                    }
                }
                _ => {}
            }
            entries.push((text, p.score.unwrap_or(0.0), ty, indexed));
        }
        let model_type = trainer
            .model_type
            .and_then(|t| ModelType::try_from(t).ok())
            .unwrap_or(ModelType::Unigram);
        let kind = match model_type {
            ModelType::Bpe => IndexKind::Hash,
            ModelType::Unigram => IndexKind::Trie,
            other => {
                return Err(invalid(format!(
                    "model_type {other:?} is not supported (BPE and UNIGRAM are)"
                )))
            }
        };
        let table = PieceTable::build(entries.into_iter(), kind).map_err(|e| match e {
            BuildError::Duplicate(p) => invalid(format!("piece {p:?} is defined twice")),
            BuildError::Index(e) => invalid(format!("cannot index the pieces: {e}")),
        })?;
        // sentencepiece 0.2.3 accepts a byte-fallback model without <unk>: unknown text
        // always becomes bytes, so a sentinel id never reaches the output.
        let unk = match unk {
            Some(u) => u,
            None if byte_fallback => NO_UNK,
            None => return Err(invalid("no UNKNOWN piece is defined".into())),
        };
        if byte_fallback && byte_ids.contains(&u32::MAX) {
            return Err(invalid(
                "byte_fallback is set but the 256 <0xXX> byte pieces are not all there".into(),
            ));
        }
        let algorithm = match kind {
            IndexKind::Hash => Algorithm::Bpe(BpeModel::new(&table).map_err(invalid)?),
            IndexKind::Trie => Algorithm::Unigram(UnigramModel::new(&table).map_err(invalid)?),
        };

        let mut normalizer_spec = normalizer_spec;
        let mut denormalizer_spec = denormalizer_spec;
        let make_normalizer =
            |spec: &mut Option<NormalizerSpec>, suffix: bool, what: &str| -> Result<Normalizer> {
                let s = spec.as_mut();
                let charsmap = match s.as_ref().map(|s| s.charsmap()).filter(|c| !c.is_empty()) {
                    Some(blob) => {
                        Some(CharsMap::parse(blob).map_err(|e| invalid(format!("{what}: {e}")))?)
                    }
                    None => None,
                };
                // The charsmap now lives in the normalizer; `save` writes it back from there.
                let has_blob = charsmap.is_some();
                let (add, remove, escape) = s.as_ref().map_or((true, true, true), |s| {
                    (
                        s.add_dummy_prefix(),
                        s.remove_extra_whitespaces(),
                        s.escape_whitespaces(),
                    )
                });
                if let (Some(s), true) = (s, has_blob) {
                    s.precompiled_charsmap = None;
                }
                Ok(Normalizer {
                    charsmap,
                    add_dummy_prefix: add,
                    remove_extra_whitespaces: remove,
                    escape_whitespaces: escape,
                    treat_whitespace_as_suffix: suffix,
                })
            };
        let normalizer = make_normalizer(
            &mut normalizer_spec,
            flag(trainer.treat_whitespace_as_suffix, false),
            "normalizer_spec",
        )?;
        // Like sentencepiece, the denormalizer runs only when it has a charsmap.
        let denormalizer = match denormalizer_spec.as_ref().map(|s| !s.charsmap().is_empty()) {
            Some(true) => Some(make_normalizer(
                &mut denormalizer_spec,
                false,
                "denormalizer_spec",
            )?),
            _ => None,
        };

        let user_defined: Vec<&str> = table
            .normal_pieces()
            .filter(|&(i, _)| table.piece_type(i) == PieceType::UserDefined)
            .map(|(_, t)| t)
            .collect();
        let matcher = PrefixMatcher::new(user_defined);

        let special = |name: Option<&String>, default: &str, ty: PieceType| {
            let name = name
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(default);
            table.lookup(name).filter(|&i| table.piece_type(i) == ty)
        };
        let unk_id = special(trainer.unk_piece.as_ref(), "<unk>", PieceType::Unknown);
        let bos_id = special(trainer.bos_piece.as_ref(), "<s>", PieceType::Control);
        let eos_id = special(trainer.eos_piece.as_ref(), "</s>", PieceType::Control);
        let pad_id = special(trainer.pad_piece.as_ref(), "<pad>", PieceType::Control);
        let unk_surface = trainer
            .unk_surface
            .clone()
            .unwrap_or_else(|| " \u{2047} ".to_owned());
        let decode_remaps =
            (0..table.len() as u32).any(|i| table.lookup(table.piece(i)) != Some(i));

        let decode_kind = (0..table.len() as u32)
            .map(|i| decode::decode_kind(table.piece(i), table.piece_type(i)))
            .collect();
        Ok(Self {
            decode_kind,
            algorithm,
            normalizer,
            denormalizer,
            matcher,
            unk,
            byte_ids: byte_fallback.then(|| Box::new(byte_ids)),
            unk_id,
            bos_id,
            eos_id,
            pad_id,
            unk_surface,
            decode_remaps,
            specs: Specs {
                present,
                trainer: trainer_spec,
                normalizer: normalizer_spec,
                self_test: self_test_data,
                denormalizer: denormalizer_spec,
            },
            table,
        })
    }

    /// The model serialized as a `ModelProto`, loadable by stock sentencepiece.
    pub fn to_bytes(&self) -> Vec<u8> {
        let restore = |spec: &Option<NormalizerSpec>, n: Option<&Normalizer>| {
            spec.clone().map(|mut s| {
                if let Some(cm) = n.and_then(|n| n.charsmap.as_ref()) {
                    s.precompiled_charsmap = Some(cm.to_blob());
                }
                s
            })
        };
        let proto = ModelProto {
            pieces: (0..self.table.len() as u32)
                .map(|i| {
                    let present = self.specs.present.get(i as usize).copied().unwrap_or(3);
                    proto::SentencePiece {
                        piece: Some(self.table.piece(i).to_owned()),
                        score: (present & 1 != 0).then(|| self.table.score(i)),
                        r#type: (present & 2 != 0).then(|| self.table.piece_type(i) as i32),
                    }
                })
                .collect(),
            trainer_spec: self.specs.trainer.clone(),
            normalizer_spec: restore(&self.specs.normalizer, Some(&self.normalizer)),
            self_test_data: self.specs.self_test.clone(),
            denormalizer_spec: restore(&self.specs.denormalizer, self.denormalizer.as_ref()),
        };
        proto.encode_to_vec()
    }

    pub fn vocab_size(&self) -> usize {
        self.table.len()
    }
    pub fn is_bpe(&self) -> bool {
        matches!(self.algorithm, Algorithm::Bpe(_))
    }
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }
    pub fn byte_fallback(&self) -> bool {
        self.byte_ids.is_some()
    }
    pub fn table(&self) -> &PieceTable {
        &self.table
    }

    /// `IdToPiece`; `None` when out of range.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.table.len()).then(|| self.table.piece(id))
    }

    /// `PieceToId`: unknown pieces give the UNKNOWN id (`None` when the model has none).
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.table
            .lookup(piece)
            .or((self.unk != NO_UNK).then_some(self.unk))
    }

    pub fn piece_score(&self, id: u32) -> Option<f32> {
        ((id as usize) < self.table.len()).then(|| self.table.score(id))
    }

    pub fn piece_kind(&self, id: u32) -> Option<PieceType> {
        ((id as usize) < self.table.len()).then(|| self.table.piece_type(id))
    }

    /// Approximate heap bytes held by the model (tables, tries, charsmaps).
    pub fn heap_bytes(&self) -> usize {
        let algo = match &self.algorithm {
            Algorithm::Bpe(b) => b.heap_bytes(),
            Algorithm::Unigram(_) => 0,
        };
        let cm = |n: Option<&Normalizer>| {
            n.and_then(|n| n.charsmap.as_ref())
                .map_or(0, |c| c.heap_bytes())
        };
        algo + self.table.heap_bytes() + cm(Some(&self.normalizer)) + cm(self.denormalizer.as_ref())
    }

    /// Normalizes `text` as sentencepiece's `Normalizer::Normalize`.
    pub fn normalize(&self, text: &str) -> String {
        let mut out = String::new();
        self.normalizer
            .normalize(self.matcher.as_ref(), text, &mut out);
        out
    }

    /// Runs normalizer and model; calls `f(normalized, tokens)`.
    fn with_tokens<R>(&self, text: &str, f: impl FnOnce(&str, &[Token]) -> R) -> R {
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let s = &mut *guard;
            self.normalizer
                .normalize(self.matcher.as_ref(), text, &mut s.normalized);
            s.tokens.clear();
            match &self.algorithm {
                Algorithm::Bpe(m) => m.encode(
                    &self.table,
                    self.matcher.as_ref(),
                    self.unk,
                    &s.normalized,
                    &mut s.bpe,
                    &mut s.tokens,
                ),
                Algorithm::Unigram(m) => m.encode(
                    &self.table,
                    self.unk,
                    &s.normalized,
                    &mut s.unigram,
                    &mut s.tokens,
                ),
            }
            let r = f(&s.normalized, &s.tokens);
            // A huge text leaves buffers of its size behind (~40 bytes per character);
            // they are given back, so a thread's memory stays bounded by ordinary texts.
            if s.normalized.capacity() > KEEP_SCRATCH_TEXT {
                *s = Scratch::default();
            }
            r
        })
    }

    /// `PopulateSentencePieceText`: consecutive unknown pieces become one, or, with byte
    /// fallback, each unknown piece becomes its UTF-8 bytes. `emit(id, piece_text)`.
    fn post_process(
        &self,
        normalized: &str,
        tokens: &[Token],
        mut emit: impl FnMut(u32, &str, bool),
    ) {
        let mut prev_unk = false;
        for t in tokens {
            let piece = &normalized[t.start as usize..t.end as usize];
            let is_unk = t.id == self.unk;
            if is_unk {
                if let Some(bytes) = &self.byte_ids {
                    for &b in piece.as_bytes() {
                        let id = bytes[b as usize];
                        emit(id, self.table.piece(id), false);
                    }
                } else {
                    // `true`: extend the previous unknown piece instead of adding one.
                    emit(t.id, piece, prev_unk);
                }
            } else {
                emit(t.id, piece, false);
            }
            prev_unk = is_unk;
        }
    }

    fn check_special(&self, add_bos: bool, add_eos: bool) -> Result<()> {
        if add_bos && self.bos_id.is_none() {
            return Err(HanpackError::InvalidArgument("add_bos=True but the model has no BOS piece (a CONTROL piece named by trainer_spec.bos_piece)".into()));
        }
        if add_eos && self.eos_id.is_none() {
            return Err(HanpackError::InvalidArgument("add_eos=True but the model has no EOS piece (a CONTROL piece named by trainer_spec.eos_piece)".into()));
        }
        Ok(())
    }

    /// Appends the ids of `text` to `out` (sentencepiece's `EncodeAsIds`).
    pub fn encode_into(
        &self,
        text: &str,
        add_bos: bool,
        add_eos: bool,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.check_special(add_bos, add_eos)?;
        if let (true, Some(b)) = (add_bos, self.bos_id) {
            out.push(b);
        }
        self.with_tokens(text, |normalized, tokens| {
            // `post_process` specialised to ids: the piece text is only needed for byte
            // fallback, so the hot loop slices nothing.
            out.reserve(tokens.len());
            let mut prev_unk = false;
            for t in tokens {
                let is_unk = t.id == self.unk;
                match (&self.byte_ids, is_unk) {
                    (Some(bytes), true) => {
                        let piece = &normalized.as_bytes()[t.start as usize..t.end as usize];
                        out.extend(piece.iter().map(|&b| bytes[b as usize]));
                    }
                    (None, true) if prev_unk => {}
                    _ => out.push(t.id),
                }
                prev_unk = is_unk;
            }
        });
        if let (true, Some(e)) = (add_eos, self.eos_id) {
            out.push(e);
        }
        Ok(())
    }

    pub fn encode(&self, text: &str, add_bos: bool, add_eos: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.encode_into(text, add_bos, add_eos, &mut out)?;
        Ok(out)
    }

    /// The pieces of `text` (sentencepiece's `EncodeAsPieces`): unknown pieces keep their
    /// text, byte-fallback pieces are `<0xXX>`.
    pub fn encode_as_pieces(&self, text: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.with_tokens(text, |normalized, tokens| {
            self.post_process(normalized, tokens, |_, piece, merge| {
                match (merge, out.last_mut()) {
                    (true, Some(last)) => last.push_str(piece),
                    _ => out.push(piece.to_owned()),
                }
            });
        });
        out
    }
}

#[cfg(test)]
mod tests;
