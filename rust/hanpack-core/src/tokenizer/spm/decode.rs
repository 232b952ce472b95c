//! Decoding ids to text exactly like `SentencePieceProcessor::Decode`, and a streaming
//! decoder whose concatenated output equals the one-shot decode.
//!
//! Rules: CONTROL pieces vanish; the UNKNOWN piece becomes `unk_surface` (" ⁇ ");
//! runs of `<0xXX>` pieces are reassembled into UTF-8 (one U+FFFD per bad byte); U+2581
//! becomes a space, and the leading one is dropped at the start of the text when
//! `add_dummy_prefix` or `remove_extra_whitespaces` is set (with the latter, every leading
//! space-only piece is dropped). A denormalizer charsmap, when present, runs last.

use super::normalizer::SPACE_SYMBOL;
use super::proto::PieceType;
use super::SpmModel;
use crate::error::{HanpackError, Result};
use crate::tokenizer::utf8::decode_lossy_into;

/// `decode_kind` bits: the piece starts with U+2581 / has U+2581 after its first char /
/// is not a piece that decodes to its own text (CONTROL, UNKNOWN, BYTE: the slow path).
pub(crate) const LEADING_SPACE: u8 = 1;
pub(crate) const INNER_SPACE: u8 = 2;
pub(crate) const SLOW: u8 = 4;

/// Per-piece `decode_kind`, so decoding never scans a piece for U+2581 (CJK punctuation
/// shares its lead byte, so a byte pre-check did not help on Chinese text) and the fast
/// path reads one byte per id instead of the piece type and the space flags.
pub(crate) fn decode_kind(piece: &str, ty: PieceType) -> u8 {
    let (lead, rest) = match piece.strip_prefix(SPACE_SYMBOL) {
        Some(rest) => (LEADING_SPACE, rest),
        None => (0, piece),
    };
    let slow = if matches!(
        ty,
        PieceType::Normal | PieceType::UserDefined | PieceType::Unused
    ) {
        0
    } else {
        SLOW
    };
    lead | slow
        | if rest.contains(SPACE_SYMBOL) {
            INNER_SPACE
        } else {
            0
        }
}

/// `<0xXX>` (upper-case hex, as sentencepiece writes it) → the byte.
pub fn piece_to_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Decoding state carried between ids; the one-shot decode is a stream that is finished.
#[derive(Clone, Debug)]
pub struct DecodeState {
    /// Bytes of `<0xXX>` pieces not yet turned into text.
    pending: Vec<u8>,
    /// Still at the beginning of the text, where a leading U+2581 is dropped.
    is_bos_ws: bool,
    /// The previous piece consumed a leading U+2581 at the beginning.
    bos_ws_seen: bool,
    /// Some text has been produced (sentencepiece tests `!text->empty()`).
    produced: bool,
}

impl Default for DecodeState {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            is_bos_ws: true,
            bos_ws_seen: false,
            produced: false,
        }
    }
}

impl SpmModel {
    fn check_id(&self, id: i64) -> Result<u32> {
        if id < 0 || id as u64 >= self.table.len() as u64 {
            return Err(HanpackError::IdOutOfRange {
                id,
                vocab_size: self.table.len(),
            });
        }
        Ok(id as u32)
    }

    fn strip_bos_ws(&self) -> bool {
        let (add, remove) = (
            self.normalizer.add_dummy_prefix,
            self.normalizer.remove_extra_whitespaces,
        );
        add || remove
    }

    fn flush_bytes(state: &mut DecodeState, final_chunk: bool, out: &mut String) {
        if state.pending.is_empty() {
            return;
        }
        let before = out.len();
        let used = decode_lossy_into(&state.pending, final_chunk, out);
        state.pending.drain(..used);
        if out.len() > before {
            state.produced = true;
        }
    }

    /// Feeds one id; appends whatever text is complete to `out`.
    pub fn decode_step(&self, state: &mut DecodeState, id: i64, out: &mut String) -> Result<()> {
        let mut id = self.check_id(id)?;
        let piece = self.table.piece(id);
        // sentencepiece decodes `PieceToId(IdToPiece(id))`, which differs from `id` only
        // for a piece no lookup finds (then it is unknown, or -1 without <unk>).
        let mut ty = self.table.piece_type(id);
        if self.decode_remaps {
            match self.piece_to_id(piece) {
                Some(i) => {
                    id = i;
                    ty = self.table.piece_type(i);
                }
                None => {
                    // -1 in sentencepiece: unknown, and not the <unk> piece itself.
                    ty = PieceType::Unknown;
                    id = u32::MAX;
                }
            }
        }
        if ty == PieceType::Byte {
            if let Some(b) = piece_to_byte(piece) {
                state.pending.push(b);
            }
            Self::flush_bytes(state, false, out);
            return Ok(());
        }
        Self::flush_bytes(state, true, out);
        if state.bos_ws_seen || state.produced {
            state.is_bos_ws = false;
        }
        let start = out.len();
        match ty {
            PieceType::Control => state.bos_ws_seen = false,
            PieceType::Unknown => {
                // A piece that only maps to <unk> by lookup (e.g. an unindexed "\0")
                // decodes to its own text, as sentencepiece does.
                if self.id_to_piece(id) == Some(piece) {
                    out.push_str(&self.unk_surface);
                } else {
                    out.push_str(piece);
                }
                state.bos_ws_seen = false;
            }
            _ => {
                let flags = self.decode_kind[id as usize];
                let mut text = piece;
                let mut seen = false;
                if flags & LEADING_SPACE != 0 {
                    text = &piece[SPACE_SYMBOL.len()..];
                    if state.is_bos_ws && self.strip_bos_ws() {
                        // Dropped at the start of the text.
                        seen = !self.normalizer.remove_extra_whitespaces;
                    } else {
                        out.push(' ');
                    }
                }
                if flags & INNER_SPACE != 0 {
                    push_unescaped(text, out);
                } else {
                    out.push_str(text);
                }
                state.bos_ws_seen = seen;
            }
        }
        if out.len() > start {
            state.produced = true;
        }
        Ok(())
    }

    /// Ends the stream: any pending bytes become text (U+FFFD for incomplete ones).
    pub fn decode_finish(&self, state: &mut DecodeState, out: &mut String) {
        Self::flush_bytes(state, true, out);
    }

    fn denormalize(&self, text: String) -> String {
        match &self.denormalizer {
            Some(d) => {
                let mut out = String::new();
                d.normalize(None, &text, &mut out);
                out
            }
            None => text,
        }
    }

    /// `SentencePieceProcessor::DecodeIds`.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let mut out = String::with_capacity(ids.len() * 4);
        self.decode_into(ids, &mut out)?;
        Ok(out)
    }

    /// `decode`, appended to `out` (batch decoding reuses one buffer per chunk).
    pub fn decode_into(&self, ids: &[i64], out: &mut String) -> Result<()> {
        let mut state = DecodeState::default();
        if self.denormalizer.is_some() {
            let mut text = String::with_capacity(ids.len() * 4);
            for &id in ids {
                self.decode_step(&mut state, id, &mut text)?;
            }
            self.decode_finish(&mut state, &mut text);
            out.push_str(&self.denormalize(text));
            return Ok(());
        }
        // Without a denormalizer the text is produced in place: the state tracks what this
        // row produced, so text already in `out` does not matter.
        //
        // Fast path (most ids): past the start of the text, no pending bytes, a piece that
        // decodes to its own text; `decode_step` would do exactly this through more
        // branches (measured ~1.6x faster on Chinese text). Once text was produced the
        // state's start-of-text flags no longer matter, so the fast path leaves them be.
        let kinds = &self.decode_kind[..];
        let mut fast = false;
        for &id in ids {
            if fast {
                // An id outside the vocabulary goes to `decode_step`, which reports it.
                if let Some(&kind) = usize::try_from(id).ok().and_then(|i| kinds.get(i)) {
                    if kind & SLOW == 0 {
                        match kind {
                            0 => self.table.append_piece(id as u32, 0, out),
                            LEADING_SPACE => {
                                out.push(' ');
                                self.table.append_piece(id as u32, SPACE_SYMBOL.len(), out);
                            }
                            _ => push_unescaped(self.table.piece(id as u32), out),
                        }
                        continue;
                    }
                }
            }
            self.decode_step(&mut state, id, out)?;
            fast = state.produced && state.pending.is_empty() && !self.decode_remaps;
        }
        self.decode_finish(&mut state, out);
        Ok(())
    }

    /// One streaming step with the denormalizer applied to the emitted chunk. Exact for
    /// every model without a denormalizer charsmap (all common ones); with one, the
    /// charsmap is applied chunk by chunk.
    pub fn decode_stream_step(&self, state: &mut DecodeState, id: i64) -> Result<String> {
        let mut out = String::new();
        self.decode_step(state, id, &mut out)?;
        Ok(if out.is_empty() {
            out
        } else {
            self.denormalize(out)
        })
    }

    pub fn decode_stream_finish(&self, state: &mut DecodeState) -> String {
        let mut out = String::new();
        self.decode_finish(state, &mut out);
        if out.is_empty() {
            out
        } else {
            self.denormalize(out)
        }
    }
}

/// Appends `piece` with U+2581 replaced by a space.
#[inline]
fn push_unescaped(piece: &str, out: &mut String) {
    let mut rest = piece;
    while let Some(i) = rest.find(SPACE_SYMBOL) {
        out.push_str(&rest[..i]);
        out.push(' ');
        rest = &rest[i + SPACE_SYMBOL.len()..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_parse_like_sentencepiece() {
        assert_eq!(piece_to_byte("<0x0A>"), Some(10));
        assert_eq!(piece_to_byte("<0xFF>"), Some(255));
        assert_eq!(piece_to_byte("<0xff>"), None);
        assert_eq!(piece_to_byte("<0x1>"), None);
        assert_eq!(piece_to_byte("0x41"), None);
    }

    #[test]
    fn unescape() {
        let mut s = String::new();
        push_unescaped("▁a▁b", &mut s);
        assert_eq!(s, " a b");
    }
}
