//! Every lexer against the regex engine on the same pattern: shared corpora, hand-picked
//! edge cases, seeded random strings; plus linear-time checks on pathological inputs.

use std::path::Path;

use super::known::KNOWN_PATTERNS;
use super::Splitter;
use crate::test_rng::Rng;

fn pieces<'a>(s: &Splitter, text: &'a str) -> Vec<&'a str> {
    let mut out = Vec::new();
    s.split(text, &mut out).unwrap();
    out.iter().map(|r| &text[r.clone()]).collect()
}

/// (name, lexer, regex) for every known pattern.
fn pairs() -> Vec<(&'static str, Splitter, Splitter)> {
    KNOWN_PATTERNS
        .iter()
        .map(|k| {
            let lexer = Splitter::new(k.pattern).unwrap();
            assert_eq!(lexer.kind(), k.name);
            assert_eq!(lexer.pattern(), k.pattern);
            (k.name, lexer, Splitter::regex(k.pattern).unwrap())
        })
        .collect()
}

/// Asserts equal splits; on a mismatch prints the input and the first differing piece.
fn check(name: &str, lexer: &Splitter, regex: &Splitter, text: &str, origin: &str) {
    let got = pieces(lexer, text);
    let want = pieces(regex, text);
    if got != want {
        let i = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let lo = i.saturating_sub(3);
        let show = |v: &[&str]| format!("{:?}", &v[lo..(i + 3).min(v.len())]);
        let input = if text.len() <= 400 {
            format!("{text:?}")
        } else {
            format!("<{} bytes>", text.len())
        };
        panic!(
            "{name}: lexer != regex on {origin} input {input}\n  piece #{i}\n  lexer: {}\n  regex: {}",
            show(&got),
            show(&want)
        );
    }
}

#[test]
fn known_patterns_pick_lexers_and_others_fall_back() {
    for (name, lexer, regex) in pairs() {
        assert_ne!(lexer.kind(), "regex", "{name}");
        assert_eq!(regex.kind(), "regex");
    }
    // A pattern equal up to one char is not known.
    let near = super::known::LLAMA3.replace("{1,3}", "{1,2}");
    assert_eq!(Splitter::new(&near).unwrap().kind(), "regex");
}

const EDGE_CASES: &[&str] = &[
    "",
    " ",
    "a",
    "'",
    "''",
    "'s",
    "'S",
    "'ſ",
    "'re 'RE 'Re 'rE 'ru 'r",
    "I'm you'RE he'Ll she'D it'S we've They'VE 'll 'l 'LL 'Ll 'lL",
    "don't DON'T Don'T o'clock '' ''s 's's",
    "'\u{17F}",         // ſ
    "'\u{212A}",        // KELVIN SIGN (folds to k, no contraction)
    "'\u{130}'\u{131}", // dotted / dotless I
    "x'ſ x'ſſ 'ſt",
    "1 12 123 1234 12345 123456 1234567",
    "a1b22c333d4444 ①②③ ½¼ ٣٤٥ ⅷ 𝟙𝟚𝟛𝟜",
    "line\r\nline\n\rline\r\r\n\n end",
    "a \r\n b\t\r\n\t c \n\n  d",
    "\r\n",
    "\n\n\n",
    " \n",
    "x \n ",
    "trailing   ",
    "trailing \t\n ",
    "tabs\tand\t\tmore\t",
    "  leading",
    "a\u{A0}b\u{A0}\u{A0}c \u{A0}d\u{A0} e",
    "中文\u{3000}测试\u{3000}\u{3000}全角　空格",
    "\u{2028}\u{2029}\u{85}\u{B}\u{C}\u{1C}\u{1D}\u{1E}\u{1F}\u{180E}\u{200B}\u{FEFF}",
    "👨\u{200D}👩\u{200D}👧 emoji 👍🏽! 🇨🇳",
    "e\u{301}e\u{301}\u{301} \u{301}x 가\u{11A8} ก่า",
    "!!! ?? ... --- ,,,\n\n;;; ; ;",
    " !x !!x !\n !!\r\n",
    "hello, world! It's 2024... ¿Qué? «ok» — “quotes” 'single'",
    "def f(x):\n    return x**2  # comment\n\n\n\tpass\n",
    "｛全角！｝１２３４５６ＡＢＣ",
    "\u{0}\u{1}\u{7F}\u{80}\u{9F}",
    "\u{E000}\u{F8FF}\u{10FFFF}",
    "    \n    \n",
    " ' s ' 's\n's",
];

#[test]
fn edge_cases_match_regex() {
    for (name, lexer, regex) in pairs() {
        for text in EDGE_CASES {
            check(name, &lexer, &regex, text, "edge case");
        }
    }
}

/// A small alphabet hitting every branch: letters (ASCII, folding, CJK), numbers,
/// whitespace of each kind, apostrophes, punctuation, marks, emoji.
const ALPHABET: &[&str] = &[
    "a", "s", "S", "t", "T", "r", "e", "E", "v", "m", "l", "L", "d", "D", "k", "x", "\u{17F}",
    "\u{212A}", "é", "中", "文", "가", "1", "7", "٣", "½", "①", " ", " ", " ", "\t", "\n", "\r",
    "\r\n", "\u{A0}", "\u{3000}", "\u{85}", "\u{2028}", "\u{B}", "\u{200B}", "'", "'", "'", "!",
    ".", ",", "-", "/", "\u{301}", "😀", "\u{200D}", "\u{0}", "'s", "'ll", "'RE", " '",
];

#[test]
fn random_strings_match_regex() {
    let pairs = pairs();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut text = String::new();
    for case in 0..4000 {
        text.clear();
        for _ in 0..rng.below(24) {
            text.push_str(ALPHABET[rng.below(ALPHABET.len() as u64) as usize]);
        }
        for (name, lexer, regex) in &pairs {
            check(name, lexer, regex, &text, &format!("random case {case}"));
        }
    }
}

#[test]
fn shared_corpora_match_regex() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/corpus");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skip: shared corpus {} missing", dir.display());
        return;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "txt" || e == "jsonl"));
    files.sort();
    // The regex engine is slow in debug builds (all 74 MB take ~4 min), so by default
    // each file is cut after its first 256 KB (at a line end, so the text still ends
    // the way real text does); HANPACK_FULL_CORPUS=1 checks whole files.
    let full = std::env::var_os("HANPACK_FULL_CORPUS").is_some_and(|v| v == "1");
    let pairs = pairs();
    for path in &files {
        let whole = std::fs::read_to_string(path).unwrap();
        let text = if full || whole.len() <= 256 << 10 {
            &whole[..]
        } else {
            let mut cut = 256 << 10;
            while !whole.is_char_boundary(cut) {
                cut -= 1;
            }
            &whole[..whole[..cut].rfind('\n').map_or(cut, |i| i + 1)]
        };
        for (name, lexer, regex) in &pairs {
            check(name, lexer, regex, text, &path.display().to_string());
        }
    }
}

#[test]
fn known_strings_equal_the_shared_tokenizer_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/tokenizers");
    for (model, pattern) in [
        ("llama3", super::known::LLAMA3),
        ("qwen2", super::known::QWEN2),
    ] {
        let path = dir.join(model).join("tokenizer.derived.json");
        let Ok(json) = std::fs::read_to_string(&path) else {
            eprintln!("skip: {} missing", path.display());
            continue;
        };
        // The pattern as JSON stores it (only backslashes need escaping in these).
        let stored = format!("\"Regex\":\"{}\"", pattern.replace('\\', "\\\\"));
        assert!(
            json.contains(&stored),
            "{model}: {} does not hold {stored}",
            path.display()
        );
    }
}
