//! Batch-1 QuantLinear kernels on one thread and on two (the caller and one helper, as
//! `quant_matmul` runs them), no Python
//! (a profiling aid for task sizing and memory streams):
//! `MODE=q8|f32|bf16 cargo run --release --example matmul_threads -- ROWS COLS BITS`
//! (BITS 4 or 3; `GAP_US` idles between calls, as a model's other work would;
//! `COPIES=n` cycles through n copies of the weight, so that n copies larger than the
//! last-level cache stream from memory as a whole model's layers would).

use std::time::Instant;

use hanpack_core::quant::matmul::{matmul_on, CallerAndHelpers, PackedWeight, RowTasks};
use hanpack_core::quant::matmul_bf16::matmul_bf16_on;
use hanpack_core::quant::matmul_q8::matmul_q8_on;
use hanpack_core::quant::{quantize, Bits, Method, QuantSpec};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("ROWS COLS BITS"))
        .collect();
    let [rows, cols, bits] = args[..] else {
        eprintln!("usage: matmul_threads ROWS COLS BITS");
        std::process::exit(2);
    };
    let bits = if bits == 3 { Bits::B3 } else { Bits::B4 };
    let mode = std::env::var("MODE").unwrap_or_else(|_| "q8".into());
    let gap_us = env_number("GAP_US", 0) as u128;
    let uniform = |i: usize, m: usize| ((i * m) % 2001) as f32 / 1000.0 - 1.0;
    let w: Vec<f32> = (0..rows * cols).map(|i| uniform(i, 7919)).collect();
    let x: Vec<f32> = (0..cols).map(|i| uniform(i, 31)).collect();
    let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
    let spec = QuantSpec {
        bits,
        group_size: Some(128),
        sym: false,
        method: Method::Rtn,
    };
    let q = quantize("w", &w, rows, cols, &spec, None).expect("quantize");
    let copies = env_number("COPIES", 1).max(1);
    let arrays: Vec<_> = (0..copies)
        .map(|_| (q.packed.clone(), q.scales.clone(), q.zeros.clone()))
        .collect();
    let weights: Vec<PackedWeight<'_>> = arrays
        .iter()
        .map(|(packed, scales, zeros)| PackedWeight {
            layout: q.layout,
            packed,
            scales,
            zeros,
        })
        .collect();
    let mut out = vec![0f32; rows];
    let mut call = 0usize;
    let mut product = |tasks: &dyn RowTasks| {
        let pw = &weights[call % copies];
        call += 1;
        match mode.as_str() {
            "f32" => matmul_on(tasks, pw, &x, 1, &mut out),
            "bf16" => matmul_bf16_on(tasks, pw, &xb, 1, &mut out),
            _ => matmul_q8_on(tasks, pw, &x, 1, &mut out),
        }
    };
    let helper = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    for name in ["1 thread", "2 threads"] {
        let mut times = Vec::new();
        for _ in 0..300 {
            let t0 = Instant::now();
            let helpers = (name == "2 threads").then_some(&helper);
            product(&CallerAndHelpers { helpers }).expect("product");
            times.push(t0.elapsed().as_secs_f64());
            let idle = Instant::now();
            while idle.elapsed().as_micros() < gap_us {}
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{mode} {name}: best {:.3} ms, median {:.3} ms, {:.1} GB/s",
            times[0] * 1e3,
            median * 1e3,
            q.packed.len() as f64 / median / 1e9
        );
    }
}

/// A number from the environment, `default` when unset or not a number.
fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
