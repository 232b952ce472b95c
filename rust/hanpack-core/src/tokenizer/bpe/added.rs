//! Added tokens, matched in the text before pre-tokenization (HF's `AddedVocabulary`):
//! leftmost-longest over all added tokens of one kind, with HF's `single_word`, `lstrip`
//! and `rstrip` rules. Tokens with `normalized: false` are matched on the raw text,
//! `normalized: true` ones on each remaining span after normalization.
//!
//! Special tokens follow the caller's policy (tiktoken's): an allowed one is its id, a
//! disallowed one is an error, any other is plain text. Non-special added tokens are
//! always matched, as HF does.

use aho_corasick::{AhoCorasick, MatchKind};

use super::stages::Normalizer;
use crate::error::{HanpackError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    pub special: bool,
    pub single_word: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub normalized: bool,
}

impl AddedToken {
    /// A special token as tiktoken has them (no stripping, matched on raw text).
    pub fn special(id: u32, content: &str) -> Self {
        Self {
            id,
            content: content.to_owned(),
            special: true,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
        }
    }
}

/// What to do with a special token found in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Emit its id.
    Token,
    /// Leave it to the BPE as ordinary text.
    Text,
    /// Fail with [`HanpackError::DisallowedSpecial`].
    Error,
}

/// The per-call special-token policy: a [`Mode`] for each added token, by position in
/// [`AddedTokens::tokens`] (`None`: every token is matched).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    modes: Option<Vec<Mode>>,
}

impl Policy {
    /// Every added token is matched (HF's behaviour, tiktoken's `allowed_special="all"`).
    pub fn allow_all() -> Self {
        Self { modes: None }
    }

    fn mode(&self, index: usize) -> Mode {
        self.modes.as_ref().map_or(Mode::Token, |m| m[index])
    }
}

/// A part of the text after matching added tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(std::ops::Range<usize>),
    Token(u32),
}

#[derive(Debug, Clone, Default)]
struct Matcher {
    automaton: Option<AhoCorasick>,
    /// pattern index → index in `AddedTokens::tokens`
    index: Vec<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct AddedTokens {
    pub tokens: Vec<AddedToken>,
    raw: Matcher,
    normalized: Matcher,
}

/// `normalizer` is applied to the patterns of `normalized` tokens: HF matches a
/// normalized token's *normalized* text (a full-width "Ａ" token matches "A" under NFKC).
fn build(
    tokens: &[AddedToken],
    normalized: bool,
    normalizer: Option<&Normalizer>,
    origin: &str,
) -> Result<Matcher> {
    let index: Vec<usize> = (0..tokens.len())
        .filter(|&i| tokens[i].normalized == normalized && !tokens[i].content.is_empty())
        .collect();
    if index.is_empty() {
        return Ok(Matcher::default());
    }
    let automaton = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(index.iter().map(|&i| match normalizer {
            Some(n) => n.apply(&tokens[i].content).into_owned(),
            None => tokens[i].content.clone(),
        }))
        .map_err(|e| HanpackError::InvalidTokenizer {
            origin: origin.to_owned(),
            reason: format!("added tokens: {e}"),
        })?;
    Ok(Matcher {
        automaton: Some(automaton),
        index,
    })
}

/// HF's word test for `single_word`: a letter, digit or underscore.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl AddedTokens {
    pub fn new(
        tokens: Vec<AddedToken>,
        normalizer: Option<&Normalizer>,
        origin: &str,
    ) -> Result<Self> {
        let raw = build(&tokens, false, None, origin)?;
        let normalized = build(&tokens, true, normalizer, origin)?;
        Ok(Self {
            tokens,
            raw,
            normalized,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn has_normalized(&self) -> bool {
        self.normalized.automaton.is_some()
    }

    /// The policy for `allowed` / `disallowed` special-token names (`None`: all of them).
    /// Names that are not special tokens are an [`HanpackError::InvalidArgument`].
    pub fn policy(
        &self,
        allowed: Option<&[String]>,
        disallowed: Option<&[String]>,
    ) -> Result<Policy> {
        if allowed.is_none() {
            return Ok(Policy::allow_all());
        }
        let find = |name: &str| {
            self.tokens
                .iter()
                .position(|t| t.special && t.content == name)
                .ok_or_else(|| {
                    HanpackError::InvalidArgument(format!(
                        "{name:?} is not a special token of this tokenizer"
                    ))
                })
        };
        let mut modes = vec![Mode::Text; self.tokens.len()];
        for (m, t) in modes.iter_mut().zip(&self.tokens) {
            if !t.special {
                *m = Mode::Token;
            } else if disallowed.is_none() {
                *m = Mode::Error;
            }
        }
        for name in disallowed.unwrap_or(&[]) {
            modes[find(name)?] = Mode::Error;
        }
        for name in allowed.unwrap_or(&[]) {
            modes[find(name)?] = Mode::Token;
        }
        Ok(Policy { modes: Some(modes) })
    }

    /// Splits `text` (raw when `normalized` is false, else one normalized span) into
    /// added tokens and the text between them, appending to `out`.
    pub fn split(
        &self,
        text: &str,
        normalized: bool,
        policy: &Policy,
        out: &mut Vec<Segment>,
    ) -> Result<()> {
        let matcher = if normalized {
            &self.normalized
        } else {
            &self.raw
        };
        let Some(ac) = &matcher.automaton else {
            if !text.is_empty() {
                out.push(Segment::Text(0..text.len()));
            }
            return Ok(());
        };
        let mut done = 0; // end of the last token taken
        for m in ac.find_iter(text) {
            let k = matcher.index[m.pattern().as_usize()];
            let tok = &self.tokens[k];
            let (mut start, mut stop) = (m.start(), m.end());
            if start < done {
                continue; // inside the whitespace an rstrip took
            }
            match policy.mode(k) {
                Mode::Token => {}
                Mode::Text => continue,
                Mode::Error => {
                    return Err(HanpackError::DisallowedSpecial {
                        token: tok.content.clone(),
                        position: start,
                    })
                }
            }
            if tok.single_word {
                let before = text[..start].chars().next_back().is_some_and(is_word_char);
                let after = text[stop..].chars().next().is_some_and(is_word_char);
                if before || after {
                    continue;
                }
            }
            if tok.lstrip {
                let trimmed = text[done..start].trim_end();
                start = done + trimmed.len();
            }
            if tok.rstrip {
                let rest = &text[stop..];
                stop += rest.len() - rest.trim_start().len();
            }
            if start > done {
                out.push(Segment::Text(done..start));
            }
            out.push(Segment::Token(tok.id));
            done = stop;
        }
        if done < text.len() {
            out.push(Segment::Text(done..text.len()));
        }
        Ok(())
    }
}
