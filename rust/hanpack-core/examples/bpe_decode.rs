//! Decodes the ids of every line of a text file with a byte-level BPE `tokenizer.json`,
//! to bytes and to UTF-16 units, and prints ns per id of each (a profiling aid:
//! `cargo run --release --example bpe_decode -- TOKENIZER.json FILE...`; `ROUNDS=n`).

use std::time::Instant;

mod common;

use hanpack_core::tokenizer::bpe::added::Policy;

fn main() {
    let (tok, files) = common::bpe_args("bpe_decode");
    let (lines, _) = common::corpus_lines(&files);
    let policy = Policy::allow_all();
    let rows: Vec<Vec<i64>> = lines
        .iter()
        .map(|l| {
            tok.encode(l, &policy, false, false)
                .unwrap_or_default()
                .into_iter()
                .map(i64::from)
                .collect()
        })
        .collect();
    let n: usize = rows.iter().map(Vec::len).sum();
    let rounds = common::rounds(5);
    let (mut bytes_best, mut units_best, mut fallbacks) = (f64::INFINITY, f64::INFINITY, 0);
    let (mut bytes, mut units) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = Instant::now();
        for r in &rows {
            bytes.clear();
            tok.decode_bytes_into(r, false, &mut bytes).ok();
            std::hint::black_box(std::str::from_utf8(&bytes).is_ok());
        }
        bytes_best = bytes_best.min(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        fallbacks = 0;
        for r in &rows {
            units.clear();
            fallbacks += usize::from(!tok.decode_ucs2_into(r, false, &mut units));
        }
        units_best = units_best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{n} ids in {} lines: bytes + from_utf8 {:.2} ns/id, UTF-16 {:.2} ns/id ({fallbacks} lines fell back)",
        rows.len(),
        bytes_best * 1e9 / n as f64,
        units_best * 1e9 / n as f64
    );
}
