//! SentencePiece-compatible BPE training on counted units ([`super::units`]).
//!
//! The result is a `ModelProto` stock sentencepiece loads: `<unk>`, `<s>`, `</s>`, the 256
//! `<0xXX>` pieces when `byte_fallback` is on, the merged pieces in merge order, then the
//! characters (most frequent first). Scores are distinct and decreasing in that order
//! (merge `k` scores `-k`), so sentencepiece's "highest score first" replays the training
//! merges and HF tokenizers' rank order agrees with it. The normalizer is LLaMA's
//! (identity, whitespace kept, dummy prefix as configured).
//!
//! The algorithm is the usual incremental one: pair counts over distinct units, a lazy
//! max-heap of (count, pair), and per pair the units it occurs in. Only pairs that
//! contain the newest symbol ever grow, and they are pushed after each merge; every other
//! count only shrinks, so a popped entry whose count is stale is re-pushed with the
//! current count (the standard lazy-deletion argument). Ties go to the pair with the
//! smaller symbol ids (older symbols), which makes training deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use prost::Message;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::units::UnitCounts;
use crate::error::{HanpackError, Result};
use crate::tokenizer::spm::proto::{
    ModelProto, ModelType, NormalizerSpec, PieceType, SentencePiece, TrainerSpec,
};

#[derive(Clone, Debug)]
pub struct BpeTrainOptions {
    /// Total pieces, specials and byte pieces included.
    pub vocab_size: usize,
    /// Fraction of character occurrences the alphabet must cover (sentencepiece's
    /// `character_coverage`); rarer characters are left to byte fallback / `<unk>`.
    pub character_coverage: f64,
    pub byte_fallback: bool,
    /// Longest piece in characters (`max_sentencepiece_length`).
    pub max_piece_chars: usize,
    /// A pair is merged only if it occurs at least this often (weighted).
    pub min_frequency: u64,
    /// Recorded in the trainer spec and normalizer (the units were split with them).
    pub split_digits: bool,
    pub add_dummy_prefix: bool,
}

impl Default for BpeTrainOptions {
    fn default() -> Self {
        Self {
            vocab_size: 8000,
            character_coverage: 0.9995,
            byte_fallback: true,
            max_piece_chars: 16,
            min_frequency: 2,
            split_digits: true,
            add_dummy_prefix: true,
        }
    }
}

pub struct TrainedBpe {
    pub model: Vec<u8>,
    pub alphabet: usize,
    pub merges: usize,
    /// Character occurrences (weighted) outside the alphabet.
    pub uncovered_chars: u64,
}

type Pair = (u32, u32);

/// A symbol of a unit that is not in the alphabet: never merged.
const BARRIER: u32 = u32::MAX;

struct Unit {
    syms: Vec<u32>,
    count: u64,
}

pub fn train_bpe(counts: &UnitCounts, opts: &BpeTrainOptions) -> Result<TrainedBpe> {
    let bad = |m: String| HanpackError::InvalidArgument(m);
    if !(0.0..=1.0).contains(&opts.character_coverage) || opts.character_coverage == 0.0 {
        return Err(bad(format!(
            "character_coverage must be in (0, 1], not {}",
            opts.character_coverage
        )));
    }
    if opts.max_piece_chars == 0 {
        return Err(bad("max_piece_chars must be at least 1".into()));
    }
    let reserved = 3 + if opts.byte_fallback { 256 } else { 0 };

    // The alphabet: most frequent characters up to the coverage.
    let mut char_freq: FxHashMap<char, u64> = FxHashMap::default();
    for (u, &n) in &counts.map {
        for c in u.chars() {
            *char_freq.entry(c).or_insert(0) += n;
        }
    }
    if char_freq.is_empty() {
        return Err(bad("the training text is empty".into()));
    }
    let mut chars: Vec<(char, u64)> = char_freq.into_iter().collect();
    chars.sort_unstable_by_key(|&(c, n)| (Reverse(n), c));
    let total: u64 = chars.iter().map(|&(_, n)| n).sum();
    let mut covered = 0u64;
    let mut alphabet = 0;
    for &(_, n) in &chars {
        if alphabet > 0 && covered as f64 >= opts.character_coverage * total as f64 {
            break;
        }
        covered += n;
        alphabet += 1;
    }
    chars.truncate(alphabet);
    if reserved + alphabet > opts.vocab_size {
        return Err(bad(format!(
            "vocab_size {} is too small: the {} reserved pieces and {} characters (coverage {}) need {}",
            opts.vocab_size,
            reserved,
            alphabet,
            opts.character_coverage,
            reserved + alphabet
        )));
    }
    let budget = opts.vocab_size - reserved - alphabet;

    // Symbols: the alphabet first, merges appended.
    let mut text: Vec<String> = chars.iter().map(|&(c, _)| c.to_string()).collect();
    let mut len: Vec<u32> = vec![1; alphabet];
    let char_id: FxHashMap<char, u32> = chars
        .iter()
        .enumerate()
        .map(|(i, &(c, _))| (c, i as u32))
        .collect();
    let max_len = opts.max_piece_chars as u32;

    let mut units: Vec<Unit> = counts
        .map
        .iter()
        .filter(|(u, _)| u.chars().nth(1).is_some()) // one-character units hold no pair
        .map(|(u, &n)| Unit {
            syms: u
                .chars()
                .map(|c| *char_id.get(&c).unwrap_or(&BARRIER))
                .collect(),
            count: n,
        })
        .collect();
    // Deterministic unit order, so `where_` lists and hence results do not depend on
    // hash order.
    units.par_sort_unstable_by(|a, b| a.syms.cmp(&b.syms));

    let countable = |a: u32, b: u32, len: &[u32]| {
        a != BARRIER && b != BARRIER && len[a as usize] + len[b as usize] <= max_len
    };

    // Initial pair counts and where each pair occurs, in parallel over unit chunks.
    let chunk = (units.len() / (rayon::current_num_threads() * 4)).max(1024);
    let parts: Vec<FxHashMap<Pair, (u64, Vec<u32>)>> = units
        .par_chunks(chunk)
        .enumerate()
        .map(|(ci, part)| {
            let mut m: FxHashMap<Pair, (u64, Vec<u32>)> = FxHashMap::default();
            for (j, u) in part.iter().enumerate() {
                let idx = (ci * chunk + j) as u32;
                for w in u.syms.windows(2) {
                    if countable(w[0], w[1], &len) {
                        let e = m.entry((w[0], w[1])).or_default();
                        e.0 += u.count;
                        if e.1.last() != Some(&idx) {
                            e.1.push(idx);
                        }
                    }
                }
            }
            m
        })
        .collect();
    let mut pair_count: FxHashMap<Pair, u64> = FxHashMap::default();
    let mut where_: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    for part in parts {
        for (p, (n, list)) in part {
            *pair_count.entry(p).or_insert(0) += n;
            where_.entry(p).or_default().extend(list);
        }
    }
    let mut heap: BinaryHeap<(u64, Reverse<Pair>)> =
        pair_count.iter().map(|(&p, &n)| (n, Reverse(p))).collect();

    let mut merges = 0;
    let mut stamp: Vec<u32> = vec![u32::MAX; units.len()];
    let mut touched: FxHashMap<Pair, ()> = FxHashMap::default();
    while merges < budget {
        let Some((n, Reverse(pair))) = heap.pop() else {
            break;
        };
        let current = pair_count.get(&pair).copied().unwrap_or(0);
        if current != n {
            if current > 0 {
                heap.push((current, Reverse(pair)));
            }
            continue;
        }
        if n < opts.min_frequency.max(1) {
            break;
        }
        let (a, b) = pair;
        let c = text.len() as u32;
        text.push(format!("{}{}", text[a as usize], text[b as usize]));
        len.push(len[a as usize] + len[b as usize]);
        merges += 1;
        pair_count.remove(&pair);
        touched.clear();
        let occurrences = where_.remove(&pair).unwrap_or_default();
        for &ui in &occurrences {
            if stamp[ui as usize] == c {
                continue;
            }
            stamp[ui as usize] = c;
            let unit = &mut units[ui as usize];
            let k = unit.count;
            let s = &mut unit.syms;
            let mut i = 0;
            while i + 1 < s.len() {
                if s[i] != a || s[i + 1] != b {
                    i += 1;
                    continue;
                }
                if i > 0 {
                    let l = s[i - 1];
                    if countable(l, a, &len) {
                        dec(&mut pair_count, (l, a), k);
                    }
                    if countable(l, c, &len) {
                        inc(&mut pair_count, &mut where_, &mut touched, (l, c), k, ui);
                    }
                }
                if i + 2 < s.len() {
                    let r = s[i + 2];
                    if countable(b, r, &len) {
                        dec(&mut pair_count, (b, r), k);
                    }
                    if countable(c, r, &len) {
                        inc(&mut pair_count, &mut where_, &mut touched, (c, r), k, ui);
                    }
                }
                s[i] = c;
                s.remove(i + 1);
                i += 1;
            }
        }
        for (&p, _) in &touched {
            if let Some(&n) = pair_count.get(&p) {
                heap.push((n, Reverse(p)));
            }
        }
    }

    let uncovered = total - covered;
    let model = build_model(&text, alphabet, merges, opts);
    Ok(TrainedBpe {
        model,
        alphabet,
        merges,
        uncovered_chars: uncovered,
    })
}

fn dec(pair_count: &mut FxHashMap<Pair, u64>, p: Pair, k: u64) {
    if let Some(n) = pair_count.get_mut(&p) {
        *n = n.saturating_sub(k);
        if *n == 0 {
            pair_count.remove(&p);
        }
    }
}

fn inc(
    pair_count: &mut FxHashMap<Pair, u64>,
    where_: &mut FxHashMap<Pair, Vec<u32>>,
    touched: &mut FxHashMap<Pair, ()>,
    p: Pair,
    k: u64,
    unit: u32,
) {
    *pair_count.entry(p).or_insert(0) += k;
    let list = where_.entry(p).or_default();
    if list.last() != Some(&unit) {
        list.push(unit);
    }
    touched.insert(p, ());
}

fn build_model(text: &[String], alphabet: usize, merges: usize, opts: &BpeTrainOptions) -> Vec<u8> {
    let piece = |p: String, score: f32, t: PieceType| SentencePiece {
        piece: Some(p),
        score: Some(score),
        r#type: Some(t as i32),
    };
    let mut pieces = vec![
        piece("<unk>".into(), 0.0, PieceType::Unknown),
        piece("<s>".into(), 0.0, PieceType::Control),
        piece("</s>".into(), 0.0, PieceType::Control),
    ];
    if opts.byte_fallback {
        pieces.extend((0..=255u8).map(|b| piece(format!("<0x{b:02X}>"), 0.0, PieceType::Byte)));
    }
    // Merges in order, then characters; scores strictly decreasing.
    let order = (alphabet..alphabet + merges).chain(0..alphabet);
    for (rank, sym) in order.enumerate() {
        pieces.push(piece(text[sym].clone(), -(rank as f32), PieceType::Normal));
    }
    let vocab_size = pieces.len() as i32;
    ModelProto {
        pieces,
        trainer_spec: Some(TrainerSpec {
            model_type: Some(ModelType::Bpe as i32),
            vocab_size: Some(vocab_size),
            character_coverage: Some(opts.character_coverage as f32),
            max_sentencepiece_length: Some(opts.max_piece_chars as i32),
            split_digits: Some(opts.split_digits),
            byte_fallback: Some(opts.byte_fallback),
            unk_id: Some(0),
            bos_id: Some(1),
            eos_id: Some(2),
            pad_id: Some(-1),
            ..Default::default()
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            precompiled_charsmap: Some(Vec::new()),
            add_dummy_prefix: Some(opts.add_dummy_prefix),
            remove_extra_whitespaces: Some(false),
            escape_whitespaces: Some(true),
            normalization_rule_tsv: None,
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::spm::SpmModel;
    use crate::vocab::units::UnitOptions;

    #[test]
    fn learns_frequent_words_and_loads() {
        let lines: Vec<String> = (0..200)
            .map(|i| format!("越来越多的人 hello world {}", i % 7))
            .collect();
        let mut counts = UnitCounts::default();
        counts
            .add_lines(&lines, 1, &UnitOptions::default(), None)
            .unwrap();
        let opts = BpeTrainOptions {
            vocab_size: 300,
            ..Default::default()
        };
        let t = train_bpe(&counts, &opts).unwrap();
        let m = SpmModel::from_bytes(&t.model, "<trained>").unwrap();
        assert_eq!(m.vocab_size(), 259 + t.alphabet + t.merges);
        assert!(m.piece_to_id("▁hello").is_some());
        assert_eq!(
            m.encode_as_pieces("越来越多的人 hello"),
            ["▁越来越多的人", "▁hello"]
        );
    }

    #[test]
    fn too_small_a_vocabulary_is_an_error() {
        let mut counts = UnitCounts::default();
        counts
            .add_lines(&["abcdef"], 1, &UnitOptions::default(), None)
            .unwrap();
        let opts = BpeTrainOptions {
            vocab_size: 10,
            ..Default::default()
        };
        assert!(
            matches!(train_bpe(&counts, &opts), Err(HanpackError::InvalidArgument(m)) if m.contains("too small"))
        );
    }
}
