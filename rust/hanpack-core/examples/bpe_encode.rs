//! Encodes every line of a text file with a byte-level BPE `tokenizer.json` and prints
//! MB/s (a profiling aid: `cargo run --release --example bpe_encode -- TOKENIZER.json FILE...`;
//! `ROUNDS=n` sets the rounds).

use std::time::Instant;

use hanpack_core::tokenizer::bpe::added::Policy;
use hanpack_core::tokenizer::bpe::hf_json::from_json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, files)) = args.split_first() else {
        eprintln!("usage: bpe_encode TOKENIZER.json FILE...");
        std::process::exit(2);
    };
    let data = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let tok = from_json(&data, path).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        lines.extend(text.lines().map(str::to_owned));
    }
    let bytes: usize = lines.iter().map(String::len).sum();
    let policy = Policy::allow_all();
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
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
    for threads in [
        1,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ] {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let best = (0..rounds)
            .map(|_| {
                let t0 = Instant::now();
                pool.install(|| {
                    lines.par_chunks(256).for_each(|c| {
                        c.iter()
                            .for_each(|l| drop(tok.encode(l, &policy, false, false)))
                    })
                });
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{threads} thread(s): {:.1} MB/s", bytes as f64 / best / 1e6);
    }
}
