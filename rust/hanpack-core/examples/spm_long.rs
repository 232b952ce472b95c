//! Encodes one long string with no spaces many times (a profiling aid for the "no
//! blow-up" cases: `cargo run --release --example spm_long -- MODEL [a|zh] [ROUNDS]`).

use std::time::Instant;

use hanpack_core::tokenizer::spm::SpmModel;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(model_path) = args.first() else {
        eprintln!("usage: spm_long MODEL [a|zh] [ROUNDS]");
        std::process::exit(2);
    };
    let model = SpmModel::from_file(model_path).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let text = match args.get(1).map(String::as_str) {
        Some("zh") => "中".repeat((1 << 20) / 3),
        _ => "a".repeat(1 << 20),
    };
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(20);
    let mut best = f64::INFINITY;
    let mut n = 0;
    for _ in 0..rounds {
        let t0 = Instant::now();
        n = model
            .encode(&text, false, false)
            .map(|v| v.len())
            .unwrap_or(0);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{:.1} ns/B best of {rounds}, {n} tokens",
        best * 1e9 / text.len() as f64
    );
}
