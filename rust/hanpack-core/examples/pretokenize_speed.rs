//! Pre-tokenizer speed, hand-written lexer vs the regex engine, per known pattern, in
//! MB/s on whole files (default: the shared Chinese corpus files `zh-*`).
//! `cargo run --release -p hanpack-core --example pretokenize_speed [-- FILE...]`;
//! `ROUNDS=n` sets the rounds (best is kept), `PATTERNS=llama3,gpt2` filters.

use std::path::PathBuf;
use std::time::Instant;

use hanpack_core::tokenizer::pretokenize::known::KNOWN_PATTERNS;
use hanpack_core::tokenizer::pretokenize::Splitter;

fn default_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("zh-"))
    });
    files.sort();
    files
}

/// Best-of-`rounds` MB/s of `s` over `texts`, and the number of pieces.
fn measure(s: &Splitter, texts: &[String], rounds: usize) -> (f64, usize) {
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    let mut count = 0;
    for _ in 0..rounds {
        count = 0;
        let t0 = Instant::now();
        for t in texts {
            out.clear();
            if let Err(e) = s.split(t, &mut out) {
                eprintln!("{e}");
                std::process::exit(1);
            }
            count += out.len();
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (bytes as f64 / 1e6 / best, count)
}

/// Whether the two splitters give identical ranges on every text (a full-corpus
/// parity check at release speed; the unit tests do the same on shorter inputs).
fn same_splits(a: &Splitter, b: &Splitter, texts: &[String]) -> bool {
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    texts.iter().all(|t| {
        ra.clear();
        rb.clear();
        a.split(t, &mut ra).is_ok() && b.split(t, &mut rb).is_ok() && ra == rb
    })
}

fn main() {
    let mut files: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if files.is_empty() {
        files = default_files();
    }
    let texts: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    if texts.is_empty() {
        eprintln!("no readable input files (default: ../shared/data/corpus/zh-*)");
        std::process::exit(2);
    }
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("PATTERNS").ok();
    let mb = texts.iter().map(String::len).sum::<usize>() as f64 / 1e6;
    println!("{} files, {mb:.1} MB, best of {rounds}", texts.len());
    println!(
        "{:<8} {:>12} {:>12} {:>8} {:>12}",
        "pattern", "lexer MB/s", "regex MB/s", "speedup", "pieces"
    );
    for k in KNOWN_PATTERNS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == k.name))
        {
            continue;
        }
        let (Ok(lexer), Ok(regex)) = (Splitter::new(k.pattern), Splitter::regex(k.pattern)) else {
            eprintln!("{}: pattern does not compile", k.name);
            std::process::exit(1);
        };
        let (lex, n_lex) = measure(&lexer, &texts, rounds);
        let (re, _) = measure(&regex, &texts, rounds);
        let agree = if same_splits(&lexer, &regex, &texts) {
            ""
        } else {
            "  SPLITS DIFFER"
        };
        println!(
            "{:<8} {lex:>12.1} {re:>12.1} {:>7.1}x {n_lex:>12}{agree}",
            k.name,
            lex / re
        );
    }
}
