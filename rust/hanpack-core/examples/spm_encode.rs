//! Encodes every line of a text file with a SentencePiece model and prints MB/s
//! (a profiling aid: `cargo run --release --example spm_encode -- MODEL FILE...`).

use std::time::Instant;

mod common;

use hanpack_core::tokenizer::spm::SpmModel;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((model_path, files)) = args.split_first() else {
        eprintln!("usage: spm_encode MODEL FILE...");
        std::process::exit(2);
    };
    let model = SpmModel::from_file(model_path).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let (lines, bytes) = common::corpus_lines(files);
    let mut ids = Vec::new();
    for round in 0..common::rounds(3) {
        let t0 = Instant::now();
        let mut n = 0;
        for l in &lines {
            ids.clear();
            model.encode_into(l, false, false, &mut ids).ok();
            n += ids.len();
        }
        let dt = t0.elapsed().as_secs_f64();
        println!(
            "round {round}: {:.1} MB/s, {n} tokens",
            bytes as f64 / dt / 1e6
        );
    }
    // Scaling of the core alone (no Python): all lines on 1 thread and on all cores.
    common::print_scaling(&lines, bytes, 3, |l| drop(model.encode(l, false, false)));
    let all: Vec<Vec<i64>> = lines
        .iter()
        .map(|l| {
            model
                .encode(l, false, false)
                .unwrap_or_default()
                .into_iter()
                .map(i64::from)
                .collect()
        })
        .collect();
    // Long inputs with no spaces (the "no blow-up" cases): best of 3, ns per byte.
    for (name, text) in [
        ("1 MB of 'a'", "a".repeat(1 << 20)),
        ("1 MB of '中'", "中".repeat(1 << 20 / 3)),
    ] {
        let best = (0..3)
            .map(|_| {
                let t0 = Instant::now();
                drop(model.encode(&text, false, false));
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name}: {:.1} ns/B", best * 1e9 / text.len() as f64);
    }
    // Decode: best of 5 passes over every line's ids.
    let mut out = 0;
    let best = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            out = 0;
            for ids in &all {
                out += model.decode(ids).map(|s| s.len()).unwrap_or(0);
            }
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    println!(
        "decode: {:.1} MB/s ({out} bytes)",
        bytes as f64 / best / 1e6
    );
}
