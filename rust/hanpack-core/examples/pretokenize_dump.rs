//! Dumps what the pre-tokenizer sees, for cross-engine parity checks from Python
//! (Python `regex`, HF tokenizers' Oniguruma) against fancy-regex and the lexers:
//! - `pretokenize_dump classes`: one line of 0x110000 chars, the class of every code
//!   point (`L`, `N`, `S` for `\s`, `.` other; `-` for surrogates);
//! - `pretokenize_dump split NAME FILE`: the end byte offset of every piece, one per
//!   line, splitting the whole file with the known pattern NAME (`llama3`, `gpt2`, ...).

use std::io::Write;

use hanpack_core::tokenizer::pretokenize::classify::{tables, Cat};
use hanpack_core::tokenizer::pretokenize::known::KNOWN_PATTERNS;
use hanpack_core::tokenizer::pretokenize::Splitter;

fn fail(msg: String) -> ! {
    eprintln!("{msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["classes"] => {
            let t = tables().unwrap_or_else(|e| fail(e.to_string()));
            let line: String = (0..0x110000u32)
                .map(|cp| match char::from_u32(cp).map(|c| t.cat(c)) {
                    Some(Cat::Letter) => 'L',
                    Some(Cat::Number) => 'N',
                    Some(Cat::Space) => 'S',
                    Some(Cat::Other) => '.',
                    None => '-',
                })
                .collect();
            writeln!(out, "{line}").ok();
        }
        ["split", name, file] => {
            let k = KNOWN_PATTERNS.iter().find(|k| k.name == name);
            let k = k.unwrap_or_else(|| fail(format!("unknown pattern name {name:?}")));
            let s = Splitter::new(k.pattern).unwrap_or_else(|e| fail(e.to_string()));
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| fail(format!("{file}: {e}")));
            let mut ranges = Vec::new();
            s.split(&text, &mut ranges)
                .unwrap_or_else(|e| fail(e.to_string()));
            for r in ranges {
                writeln!(out, "{}", r.end).ok();
            }
        }
        _ => fail("usage: pretokenize_dump classes | split NAME FILE".into()),
    }
}
