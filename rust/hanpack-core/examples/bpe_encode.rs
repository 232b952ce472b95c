//! Encodes every line of a text file with a byte-level BPE `tokenizer.json` and prints
//! MB/s (a profiling aid: `cargo run --release --example bpe_encode -- TOKENIZER.json FILE...`;
//! `ROUNDS=n` sets the rounds).

use std::time::Instant;

mod common;

use hanpack_core::tokenizer::bpe::added::Policy;

fn main() {
    let (tok, files) = common::bpe_args("bpe_encode");
    let (lines, bytes) = common::corpus_lines(&files);
    let policy = Policy::allow_all();
    let rounds = common::rounds(5);
    let mut ids = Vec::new();
    let mut best = f64::INFINITY;
    let mut n = 0;
    for _ in 0..rounds {
        let t0 = Instant::now();
        n = 0;
        for l in &lines {
            ids.clear();
            tok.encode_into(l, &policy, false, false, &mut ids).ok();
            n += ids.len();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{:.1} MB/s, {n} tokens, {:.2} us/line",
        bytes as f64 / best / 1e6,
        best * 1e6 / lines.len() as f64
    );
    // Scaling of the core alone (no Python): all lines on 1 thread and on all cores.
    common::print_scaling(&lines, bytes, rounds, |l| {
        drop(tok.encode(l, &policy, false, false))
    });
}
