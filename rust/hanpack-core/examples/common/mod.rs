//! What the encoding examples share: the arguments, the lines of the files, the round
//! count, and the core's scaling from one thread to all cores.

// Each example compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::time::Instant;

use hanpack_core::tokenizer::bpe::hf_json::from_json;
use hanpack_core::tokenizer::bpe::BpeTokenizer;

use rayon::prelude::*;

/// `TOKENIZER.json FILE...` from the command line: the loaded tokenizer and the files
/// (exits with a message on bad arguments or an unreadable tokenizer).
pub fn bpe_args(example: &str) -> (BpeTokenizer, Vec<String>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((path, files)) = args.split_first() else {
        eprintln!("usage: {example} TOKENIZER.json FILE...");
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
    (tok, files.to_vec())
}

/// Every line of `files` and their total bytes (a file that cannot be read gives none).
pub fn corpus_lines(files: &[String]) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        lines.extend(text.lines().map(str::to_owned));
    }
    let bytes = lines.iter().map(String::len).sum();
    (lines, bytes)
}

/// `ROUNDS` from the environment, else `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Prints MB/s of `encode` over all lines on 1 thread and on all cores (best of `rounds`).
pub fn print_scaling(lines: &[String], bytes: usize, rounds: usize, encode: impl Fn(&str) + Sync) {
    for threads in [
        1,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool");
        let best = (0..rounds)
            .map(|_| {
                let t0 = Instant::now();
                pool.install(|| {
                    lines
                        .par_chunks(256)
                        .for_each(|c| c.iter().for_each(|l| encode(l)))
                });
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{threads} thread(s): {:.1} MB/s", bytes as f64 / best / 1e6);
    }
}
