//! Layout tests: sizes, bits per weight, pack→unpack round trips, a hand-checked block.

use half::f16;

use super::*;

const ALL: [Bits; 4] = [Bits::B2, Bits::B3, Bits::B4, Bits::B8];

/// Deterministic pseudo-random codes (xorshift) so the tests need no extra crate.
fn codes(n: usize, bits: Bits, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (u64::from(bits.qmax()) + 1)) as u8
        })
        .collect()
}

#[test]
fn block_sizes() {
    assert_eq!(Bits::B2.block_bytes(), int2::BLOCK_BYTES);
    assert_eq!(Bits::B3.block_bytes(), int3::BLOCK_BYTES);
    assert_eq!(Bits::B4.block_bytes(), int4::BLOCK_BYTES);
    assert_eq!(Bits::B8.block_bytes(), int8::BLOCK_BYTES);
}

#[test]
fn layout_sizes_and_bits_per_weight() {
    let l = Layout::new(Bits::B4, 8, 4096, Some(128)).unwrap();
    assert_eq!(
        (l.n_groups(), l.row_bytes(), l.packed_len(), l.params_len()),
        (32, 2048, 16384, 256)
    );
    assert!((l.bits_per_weight() - 4.25).abs() < 1e-12);
    let l = Layout::new(Bits::B3, 2, 4096, Some(128)).unwrap();
    assert!((l.bits_per_weight() - 3.25).abs() < 1e-12);
    // Short last group and a padded last block: 172 = 64 + 64 + 44, 6 blocks of 32.
    let l = Layout::new(Bits::B3, 1, 172, Some(64)).unwrap();
    assert_eq!((l.n_groups(), l.row_bytes()), (3, 6 * 12));
    // Per-channel: one group of the whole row.
    let l = Layout::new(Bits::B2, 3, 172, None).unwrap();
    assert_eq!((l.n_groups(), l.group_size), (1, 172));
    assert!(l.check(l.packed_len(), 3, 3).is_ok());
    assert!(l.check(l.packed_len() - 1, 3, 3).is_err());
    assert!(l.check(l.packed_len(), 3, 4).is_err());
}

#[test]
fn layout_rejects_bad_shapes() {
    assert!(Layout::new(Bits::B4, 0, 64, Some(32)).is_err());
    assert!(Layout::new(Bits::B4, 4, 0, None).is_err());
    assert!(Layout::new(Bits::B4, 4, 256, Some(48)).is_err());
    assert!(Layout::new(Bits::B4, 4, 256, Some(0)).is_err());
    assert!(Bits::new(5).is_err());
    // A group larger than the row is per-channel.
    assert_eq!(
        Layout::new(Bits::B4, 4, 40, Some(64)).unwrap().group_size,
        40
    );
}

#[test]
fn pack_unpack_round_trip_every_format() {
    for bits in ALL {
        for cols in [1usize, 31, 32, 33, 172, 256] {
            let l = Layout::new(bits, 1, cols, None).unwrap();
            let padded = cols.div_ceil(BLOCK) * BLOCK;
            let mut q = codes(padded, bits, cols as u64);
            q[cols..].fill(0);
            let mut row = vec![0u8; l.row_bytes()];
            pack_row(bits, &q, &mut row);
            let mut back = vec![0xAAu8; padded];
            unpack_row(bits, &row, &mut back);
            assert_eq!(q, back, "int{} cols {cols}", bits.get());
        }
    }
}

#[test]
fn hand_checked_blocks() {
    let mut q = [0u8; BLOCK];
    q[0] = 1;
    q[1] = 7;
    q[31] = 5;
    let mut out = [0u8; 16];
    int4::pack_block(&q, &mut out);
    assert_eq!((out[0], out[15]), (0x71, 0x50));
    let mut out = [0u8; 12];
    int3::pack_block(&q, &mut out);
    // Triple 0: 1 | 7 << 3 = 0x39; triple 3 (bytes 9..12): value 31 = 8*3 + 7, so 5 << 21.
    assert_eq!(out[..3], [0x39, 0, 0]);
    assert_eq!(out[9..12], (5u32 << 21).to_le_bytes()[..3]);
    assert!(out[3..9].iter().all(|&b| b == 0));
    let mut q2 = [0u8; BLOCK];
    q2[0] = 3;
    q2[5] = 2;
    let mut out = [0u8; 8];
    int2::pack_block(&q2, &mut out);
    assert_eq!((out[0], out[1]), (3, 2 << 2));
}

#[test]
fn dequantize_row_applies_group_params() {
    // Two groups of 32 and a short one of 8 (cols 72, group 32), int4.
    let bits = Bits::B4;
    let l = Layout::new(bits, 1, 72, Some(32)).unwrap();
    let mut q = codes(96, bits, 7);
    q[72..].fill(0);
    let mut row = vec![0u8; l.row_bytes()];
    pack_row(bits, &q, &mut row);
    let scales = [f16::from_f32(0.5), f16::from_f32(-2.0), f16::from_f32(0.25)];
    let zeros = [f16::from_f32(8.0), f16::from_f32(3.5), f16::from_f32(0.0)];
    let mut out = vec![0f32; 72];
    dequantize_row(bits, &row, &scales, &zeros, 32, &mut out);
    for (c, &w) in out.iter().enumerate() {
        let g = c / 32;
        assert_eq!(
            w,
            (f32::from(q[c]) - zeros[g].to_f32()) * scales[g].to_f32()
        );
    }
}

#[test]
fn pack_codes_stores_a_weight_row_by_row_and_checks_its_codes() {
    for bits in ALL {
        // 70 columns: every row ends in a padded block.
        let layout = Layout::new(bits, 3, 70, Some(32)).unwrap();
        let c = codes(3 * 70, bits, 7);
        let packed = pack_codes(&layout, &c).unwrap();
        assert_eq!(packed.len(), layout.packed_len());
        for (r, row) in packed.chunks_exact(layout.row_bytes()).enumerate() {
            let mut back = vec![0u8; 96];
            unpack_row(bits, row, &mut back);
            assert_eq!(&back[..70], &c[r * 70..(r + 1) * 70], "{bits:?} row {r}");
            assert!(back[70..].iter().all(|&q| q == 0));
        }
        let mut over = c.clone();
        over[75] = bits.qmax().wrapping_add(1);
        if bits != Bits::B8 {
            let err = pack_codes(&layout, &over).unwrap_err().to_string();
            assert!(err.contains("row 1, column 5"), "{err}");
        }
        let err = pack_codes(&layout, &c[1..]).unwrap_err().to_string();
        assert!(err.contains("209 codes"), "{err}");
    }
}
