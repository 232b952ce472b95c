//! Unit tests of the byte-level BPE pipeline on small hand-made vocabularies.

use super::added::Policy;
use super::files::{from_tiktoken, from_vocab_merges, PlainConfig};
use super::hf_json::{from_json, to_json};
use super::merge::{all_paths, encode_piece, reference_bpe};
use super::vocab::Vocab;
use crate::error::HanpackError;
use base64::Engine;

/// A tiny byte-level vocabulary: all 256 bytes, then merges for "ab", "abc", " a", "aa".
fn tiny_json(ignore_merges: bool, extra: &str) -> String {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(
            super::bytelevel::CHARS[b as usize].to_string(),
            (b as u32).into(),
        );
    }
    for (i, p) in ["ab", "abc", "Ġa", "aa", "aaaa"].iter().enumerate() {
        vocab.insert(p.to_string(), (256 + i as u32).into());
    }
    let v = serde_json::Value::Object(vocab);
    format!(
        r#"{{"version":"1.0","normalizer":null,
        "pre_tokenizer":{{"type":"Sequence","pretokenizers":[{{"type":"Split","pattern":{{"Regex":" ?\\p{{L}}+|\\s+|[^\\s\\p{{L}}]+"}},"behavior":"Isolated","invert":false}},{{"type":"ByteLevel","add_prefix_space":false,"use_regex":false}}]}},
        "post_processor":null,"decoder":{{"type":"ByteLevel"}},
        "added_tokens":[{{"id":300,"content":"<|end|>","special":true,"single_word":false,"lstrip":false,"rstrip":false,"normalized":false}}{extra}],
        "model":{{"type":"BPE","ignore_merges":{ignore_merges},"vocab":{v},"merges":["a b",["ab","c"],"Ġ a","a a","aa aa"]}}}}"#
    )
}

fn all() -> Policy {
    Policy::allow_all()
}

#[test]
fn merges_by_rank() {
    let t = from_json(tiny_json(false, "").as_bytes(), "tiny").unwrap();
    assert_eq!(t.encode("abc", &all(), false, false).unwrap(), vec![257]);
    assert_eq!(
        t.encode(" ab", &all(), false, false).unwrap(),
        vec![32, 256]
    );
    assert_eq!(
        t.encode("aaaaa", &all(), false, false).unwrap(),
        vec![260, b'a' as u32]
    );
    assert_eq!(
        t.encode("x<|end|>ab", &all(), false, false).unwrap(),
        vec![b'x' as u32, 300, 256]
    );
    assert_eq!(t.decode(&[257, 300, 32], false).unwrap(), "abc<|end|> ");
    assert_eq!(t.decode(&[257, 300, 32], true).unwrap(), "abc ");
}

#[test]
fn short_and_long_paths_agree_with_reference() {
    let t = from_json(tiny_json(false, "").as_bytes(), "tiny").unwrap();
    for s in [
        "",
        "a",
        "aaaaaaaaaaaaaaaaaaa",
        "abcabcaabab",
        "abababababacccaaaa",
        "ba",
    ] {
        let want = reference_bpe(&t.vocab, s.as_bytes(), None);
        assert_eq!(
            all_paths(&t.vocab, s.as_bytes()),
            [&want; 3].map(Vec::clone),
            "{s}"
        );
    }
    let long: String = "aab".repeat(200);
    let mut got = Vec::new();
    encode_piece(&t.vocab, long.as_bytes(), None, &mut got);
    assert_eq!(got, reference_bpe(&t.vocab, long.as_bytes(), None));
}

/// Pieces long enough for the agenda's run layer (at least `RUNS_FROM` bytes): repeated
/// characters, periodic text and random text over a small alphabet, against the reference.
#[test]
fn long_pieces_with_runs_agree_with_reference() {
    let t = from_json(tiny_json(false, "").as_bytes(), "tiny").unwrap();
    let mut rng = crate::test_rng::Rng(0x2545_F491_4F6C_DD1D);
    let mut rnd = move |n: u64| rng.below(n);
    let mut inputs = vec![
        "a".repeat(3000),
        "ab".repeat(1500),
        "aab".repeat(700),
        "abc".repeat(500) + &"a".repeat(1500),
    ];
    for _ in 0..10 {
        let len = 1024 + rnd(1500) as usize;
        inputs.push(
            (0..len)
                .map(|_| ['a', 'b', 'c', 'a', 'a'][rnd(5) as usize])
                .collect(),
        );
    }
    for s in &inputs {
        let mut got = Vec::new();
        encode_piece(&t.vocab, s.as_bytes(), None, &mut got);
        assert_eq!(
            got,
            reference_bpe(&t.vocab, s.as_bytes(), None),
            "{}",
            &s[..20]
        );
    }
}

/// A huge piece is encoded in full, and the thread does not keep buffers of its size.
#[test]
fn a_huge_piece_does_not_leave_its_buffers_behind() {
    let t = from_json(tiny_json(false, "").as_bytes(), "tiny").unwrap();
    let mut out = Vec::new();
    encode_piece(&t.vocab, "a".repeat(4000).as_bytes(), None, &mut out);
    assert_eq!(out.len(), 1000);
    let huge = "a".repeat((4 << 20) + 4);
    out.clear();
    encode_piece(&t.vocab, huge.as_bytes(), None, &mut out);
    // Every four 'a's are the "aaaa" token, as in the reference on a shorter run.
    let aaaa = reference_bpe(&t.vocab, b"aaaa", None);
    assert_eq!(aaaa.len(), 1);
    assert_eq!(out, vec![aaaa[0]; huge.len() / 4]);
    assert!(super::merge::scratch_ids_capacity() <= 4 << 20);
}

/// A tiktoken vocabulary over a few Chinese characters with tokens that span character
/// boundaries whole and partially (a tail of one character and a head of the next, as
/// byte-level vocabularies have), so cutting long pieces must respect every kind.
fn cjk_tiktoken(partial: bool) -> super::BpeTokenizer {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut add = |t: &[u8]| tokens.push(t.to_vec());
    if partial {
        // Ranked before the whole characters, so they merge first where they occur.
        // Each is reachable (both halves of some split are tokens), and each is the only
        // reason not to cut somewhere: between 国的, 中人, 民b and a民 respectively.
        let (zh, guo, de, min) = (
            "中".as_bytes(),
            "国".as_bytes(),
            "的".as_bytes(),
            "民".as_bytes(),
        );
        add(&[guo[2], de[0]]); // tail of 国 + head of 的 (both partial)
        add(&[zh, &"人".as_bytes()[..1]].concat()); // 中 + head of 人
        add(&[&min[2..], b"b"].concat()); // tail of 民 + b
        add(&[b"a", &min[..1]].concat()); // a + head of 民
    }
    for t in [
        "中",
        "国",
        "人",
        "的",
        "中国",
        "人的",
        "的人",
        "中国人",
        "ab",
    ] {
        add(&t.as_bytes()[..2]);
        add(t.as_bytes());
    }
    let mut file = String::new();
    let mut seen = std::collections::HashSet::new();
    for t in tokens {
        if seen.insert(t.clone()) {
            file += &format!("{} {}\n", b64.encode(&t), seen.len() - 1);
        }
    }
    let cfg = PlainConfig {
        pattern: "gpt2".into(),
        ..Default::default()
    };
    from_tiktoken(file.as_bytes(), "cjk.tiktoken", &cfg).unwrap()
}

/// Long pieces are cut into independently merged parts: every path equals the plain
/// algorithm on random strings of characters that merge whole, partially or not at all.
#[test]
fn cut_pieces_agree_with_reference() {
    let mut rng = crate::test_rng::Rng(0x9E37_79B9_7F4A_7C15);
    let alphabet = ['中', '国', '人', '的', 'a', 'b', '民', 'é'];
    for partial in [false, true] {
        let t = cjk_tiktoken(partial);
        for len in [2usize, 5, 9, 17, 40, 200] {
            for _ in 0..200 {
                let s: String = (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                    .collect();
                let want = reference_bpe(&t.vocab, s.as_bytes(), None);
                let mut got = Vec::new();
                encode_piece(&t.vocab, s.as_bytes(), None, &mut got);
                assert_eq!(got, want, "{s} (partial tokens: {partial})");
                if t.vocab.token_of_bytes(s.as_bytes()).is_none() {
                    // (A piece that is a token is that token, before any path runs.)
                    let paths = all_paths(&t.vocab, s.as_bytes());
                    assert_eq!(paths, [&want; 3].map(Vec::clone), "{s} ({partial})");
                }
            }
        }
    }
}

#[test]
fn tokenizers_used_in_turn_on_one_thread_keep_their_own_answers() {
    // More vocabularies than a thread keeps caches for, so caches are also emptied and reused.
    let toks = [
        cjk_tiktoken(false),
        cjk_tiktoken(true),
        from_json(tiny_json(false, "").as_bytes(), "tiny").unwrap(),
        cjk_tiktoken(true),
        from_json(tiny_json(true, "").as_bytes(), "tiny").unwrap(),
        cjk_tiktoken(false),
    ];
    let texts = [
        "中国人的人中国 abcab aaaa",
        "的人的人民b a民中人国的",
        "ab中国人ab 中国",
    ];
    let encode = |t: &super::BpeTokenizer, s: &str| t.encode(s, &all(), false, false).unwrap();
    let alone: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
        let runs: Vec<_> = toks
            .iter()
            .map(|t| s.spawn(move || texts.iter().map(|x| encode(t, x)).collect()))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_ne!(alone[0], alone[1]);
    assert_ne!(alone[0], alone[2]);
    for round in 0..3 {
        for (k, x) in texts.iter().enumerate() {
            for (i, t) in toks.iter().enumerate().rev().skip(round % 2) {
                assert_eq!(encode(t, x), alone[i][k], "tokenizer {i}, text {k}");
            }
        }
    }
}

#[test]
fn policy_disallows_and_allows() {
    let t = from_json(tiny_json(false, "").as_bytes(), "tiny").unwrap();
    let none: [String; 0] = [];
    let p = t.policy(Some(&none), None).unwrap();
    assert!(matches!(
        t.encode("a<|end|>", &p, false, false),
        Err(HanpackError::DisallowedSpecial { position: 1, .. })
    ));
    let p = t.policy(Some(&none), Some(&none)).unwrap();
    assert_eq!(t.encode("<|end|>", &p, false, false).unwrap().len(), 7);
    assert!(matches!(
        t.policy(Some(&["<nope>".to_string()]), None),
        Err(HanpackError::InvalidArgument(_))
    ));
}

#[test]
fn added_token_strip_and_single_word() {
    let extra = r#",{"id":301,"content":"<m>","special":false,"single_word":false,"lstrip":true,"rstrip":true,"normalized":false},
                   {"id":302,"content":"ab","special":false,"single_word":true,"lstrip":false,"rstrip":false,"normalized":false}"#;
    let t = from_json(tiny_json(false, extra).as_bytes(), "tiny").unwrap();
    assert_eq!(
        t.encode("c  <m>  c", &all(), false, false).unwrap(),
        vec![b'c' as u32, 301, b'c' as u32]
    );
    assert_eq!(t.encode("ab", &all(), false, false).unwrap(), vec![302]);
    assert_eq!(t.encode("abc", &all(), false, false).unwrap(), vec![257]);
}

#[test]
fn ignore_merges_takes_whole_pieces() {
    let t = from_json(tiny_json(true, "").as_bytes(), "tiny").unwrap();
    assert_eq!(t.encode("aaaa", &all(), false, false).unwrap(), vec![260]);
}

#[test]
fn errors_name_the_problem() {
    let e = from_json(b"{\"model\": {", "x.json").unwrap_err();
    assert!(matches!(e, HanpackError::TokenizerFormat { .. }), "{e}");
    let bad = tiny_json(false, "").replace("\"a a\"", "\"a zz\"");
    let e = from_json(bad.as_bytes(), "x.json").unwrap_err();
    assert!(
        e.to_string().contains("model.merges[3]") && e.to_string().contains("zz"),
        "{e}"
    );
    let bad = tiny_json(false, "").replace(
        "\"normalizer\":null",
        "\"normalizer\":{\"type\":\"Precompiled\"}",
    );
    let e = from_json(bad.as_bytes(), "x.json").unwrap_err();
    assert!(
        matches!(&e, HanpackError::UnsupportedTokenizer { reason, .. } if reason.contains("Precompiled")),
        "{e}"
    );
    let cfg = PlainConfig {
        pattern: "gpt2".into(),
        ..Default::default()
    };
    let e = from_tiktoken(b"IQ== 0\n!!! 1\n", "r.tiktoken", &cfg).unwrap_err();
    assert!(
        e.to_string().contains("line 2") && e.to_string().contains("base64"),
        "{e}"
    );
    let e = from_tiktoken(b"IQ== 0\nIg== 0\n", "r.tiktoken", &cfg).unwrap_err();
    assert!(
        e.to_string().contains("rank 0 is already used on line 1"),
        "{e}"
    );
    let e = from_vocab_merges(br#"{"a": 0, "b": 1}"#, b"#version: 0.2\na c\n", "dir", &cfg)
        .unwrap_err();
    assert!(
        e.to_string().contains("merges.txt") && e.to_string().contains("line 2"),
        "{e}"
    );
}

#[test]
fn tiktoken_ranks_round_trip_through_json() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut file = String::new();
    for b in 0..=255u8 {
        file += &format!("{} {}\n", b64.encode([b]), b);
    }
    for (i, t) in ["ab", "abc", " a", "aa", "aaaa", "bc"].iter().enumerate() {
        file += &format!("{} {}\n", b64.encode(t.as_bytes()), 256 + i);
    }
    let cfg = PlainConfig {
        pattern: "gpt2".into(),
        special_tokens: vec![("<|eot|>".into(), 400)],
        normalizer: None,
    };
    let t = from_tiktoken(file.as_bytes(), "r.tiktoken", &cfg).unwrap();
    let texts = ["abc aaaa abcbc", "aaaaaaa<|eot|> bc", ""];
    let json = to_json(&t).unwrap();
    let back = from_json(&json, "saved.json").unwrap();
    for s in texts {
        let ids = t.encode(s, &all(), false, false).unwrap();
        assert_eq!(back.encode(s, &all(), false, false).unwrap(), ids, "{s}");
        let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        assert_eq!(t.decode(&ids64, false).unwrap(), s);
    }
    assert_eq!(t.vocab_size(), 401);
    let v: &Vocab = &t.vocab;
    assert_eq!(v.piece(256), Some("ab"));
}
