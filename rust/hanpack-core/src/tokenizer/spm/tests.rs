//! Unit tests on a model built in the test (no files needed).

use super::proto::*;
use super::*;
use prost::Message;

fn piece(text: &str, score: f32, ty: PieceType) -> SentencePiece {
    SentencePiece {
        piece: Some(text.into()),
        score: Some(score),
        r#type: Some(ty as i32),
    }
}

/// A tiny BPE model with byte fallback, identity normalizer, LLaMA-like settings.
fn tiny_bpe() -> Vec<u8> {
    let mut pieces = vec![
        piece("<unk>", 0.0, PieceType::Unknown),
        piece("<s>", 0.0, PieceType::Control),
        piece("</s>", 0.0, PieceType::Control),
    ];
    for b in 0..=255u8 {
        pieces.push(piece(&format!("<0x{b:02X}>"), 0.0, PieceType::Byte));
    }
    for (t, s) in [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -3.0),
        ("ab", -0.5),
        ("▁ab", -0.1),
        ("中", -4.0),
        ("文", -4.0),
    ] {
        pieces.push(piece(t, s, PieceType::Normal));
    }
    ModelProto {
        pieces,
        trainer_spec: Some(TrainerSpec {
            model_type: Some(ModelType::Bpe as i32),
            byte_fallback: Some(true),
            ..Default::default()
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            add_dummy_prefix: Some(true),
            remove_extra_whitespaces: Some(false),
            escape_whitespaces: Some(true),
            ..Default::default()
        }),
        self_test_data: None,
        denormalizer_spec: None,
    }
    .encode_to_vec()
}

#[test]
fn bpe_merges_by_score_and_falls_back_to_bytes() {
    let m = SpmModel::from_bytes(&tiny_bpe(), "tiny").unwrap();
    let ids = m.encode("ab 中x", true, true).unwrap();
    let pieces: Vec<&str> = ids.iter().map(|&i| m.id_to_piece(i).unwrap()).collect();
    assert_eq!(pieces, ["<s>", "▁ab", "▁", "中", "<0x78>", "</s>"]);
    assert_eq!(
        m.decode(&ids.iter().map(|&i| i as i64).collect::<Vec<_>>())
            .unwrap(),
        "ab 中x"
    );
}

/// `tiny_bpe` with more pieces (other merges, so other answers in the caches).
fn tiny_bpe_with(extra: &[(&str, f32)]) -> Vec<u8> {
    let mut proto = ModelProto::decode(tiny_bpe().as_slice()).unwrap();
    for &(t, s) in extra {
        proto.pieces.push(piece(t, s, PieceType::Normal));
    }
    proto.encode_to_vec()
}

#[test]
fn models_used_in_turn_on_one_thread_keep_their_own_answers() {
    // More models than a thread keeps caches for, so caches are also emptied and reused.
    let models: Vec<SpmModel> = [
        tiny_bpe_with(&[]),
        tiny_bpe_with(&[("中文", -0.2)]),
        tiny_bpe_with(&[("文中", -0.3), ("ba", -0.4)]),
        tiny_bpe_with(&[("中文", -5.0), ("▁中", -0.2)]),
        tiny_bpe_with(&[("ba", -0.01), ("bab", -0.02)]),
        tiny_bpe_with(&[("abab", -0.05), ("中文中", -0.1)]),
    ]
    .iter()
    .map(|b| SpmModel::from_bytes(b, "tiny").unwrap())
    .collect();
    let texts = [
        "ab 中文 ab中文 abab",
        "中文中文文中 bababa",
        "x中文ab▁",
        "文中文中文中文",
    ];
    // Each model alone, on a thread of its own (fresh caches).
    let alone: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
        let runs: Vec<_> = models
            .iter()
            .map(|m| {
                s.spawn(move || {
                    texts
                        .iter()
                        .map(|t| m.encode(t, false, false).unwrap())
                        .collect()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let distinct: std::collections::HashSet<_> = alone.iter().collect();
    assert_eq!(
        distinct.len(),
        models.len(),
        "the models should give different ids"
    );
    for round in 0..3 {
        for (k, t) in texts.iter().enumerate() {
            for (i, m) in models.iter().enumerate().rev().skip(round % 2) {
                assert_eq!(
                    m.encode(t, false, false).unwrap(),
                    alone[i][k],
                    "model {i}, text {k}"
                );
            }
        }
    }
}

#[test]
fn save_round_trips_bytes() {
    let bytes = tiny_bpe();
    let m = SpmModel::from_bytes(&bytes, "tiny").unwrap();
    assert_eq!(m.to_bytes(), bytes);
}

#[test]
fn streaming_never_splits_a_character() {
    let m = SpmModel::from_bytes(&tiny_bpe(), "tiny").unwrap();
    let ids: Vec<i64> = m
        .encode("x汉y", false, false)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let mut state = decode::DecodeState::default();
    let chunks: Vec<String> = ids
        .iter()
        .map(|&i| m.decode_stream_step(&mut state, i).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| !c.contains('\u{FFFD}')));
    let joined: String = chunks.concat() + &m.decode_stream_finish(&mut state);
    assert_eq!(joined, m.decode(&ids).unwrap());
    assert_eq!(joined, "x汉y");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(matches!(
        SpmModel::from_bytes(b"", "e"),
        Err(HanpackError::ModelFormat { .. })
    ));
    assert!(SpmModel::from_bytes(b"{\"model\": 1}", "json").is_err());
    let bytes = tiny_bpe();
    for cut in [1, 7, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            SpmModel::from_bytes(&bytes[..cut], "cut").is_err(),
            "cut at {cut}"
        );
    }
    let m = SpmModel::from_bytes(&bytes, "tiny").unwrap();
    assert!(matches!(
        m.decode(&[-1]),
        Err(HanpackError::IdOutOfRange { .. })
    ));
    assert!(matches!(
        m.decode(&[1 << 40]),
        Err(HanpackError::IdOutOfRange { .. })
    ));
}

#[test]
fn long_repetitive_input_is_linear() {
    let m = SpmModel::from_bytes(&tiny_bpe(), "tiny").unwrap();
    let text = "a".repeat(200_000);
    let ids = m.encode(&text, false, false).unwrap();
    assert_eq!(ids.len(), 200_001); // "▁" then one "a" each (no "▁a" piece)
}

#[test]
fn a_huge_text_does_not_leave_its_buffers_behind() {
    let m = SpmModel::from_bytes(&tiny_bpe(), "tiny").unwrap();
    let normalized_capacity = || SCRATCH.with(|s| s.borrow().normalized.capacity());
    m.encode(&"ab ".repeat(1000), false, false).unwrap();
    assert!(normalized_capacity() >= 3000); // ordinary texts keep their buffers
    let huge = "a".repeat(KEEP_SCRATCH_TEXT + 1);
    assert_eq!(m.encode(&huge, false, false).unwrap().len(), huge.len() + 1);
    assert!(normalized_capacity() < KEEP_SCRATCH_TEXT);
    assert_eq!(
        m.encode("ab", false, false).unwrap(),
        m.encode("ab", false, false).unwrap()
    );
}

/// Random byte corruptions of a valid model either fail to load with an error or load and
/// encode/decode without panicking (a tiny deterministic fuzzer, no extra crates).
#[test]
fn corrupted_models_never_panic() {
    let good = tiny_bpe();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = next() as u8;
        }
        if let Ok(m) = SpmModel::from_bytes(&bytes, "fuzz") {
            let ids = m
                .encode("ab 中文 x\u{3000}y", false, false)
                .unwrap_or_default();
            let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
            let _ = m.decode(&ids);
            let _ = m.encode_as_pieces("aab");
            let _ = m.to_bytes();
        }
    }
}
