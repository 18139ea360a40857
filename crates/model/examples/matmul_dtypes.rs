//! One linear layer of GPT-J-6B (4096 -> 16384, the MLP's fc_in) on the CPU in three ways:
//! f32 weights (transposed at load, candle's matmul), bf16 weights multiplied in f32 blocks
//! (`HalfMatmul`, what `--dtype bf16` runs on the CPU), and candle's own bf16 matmul (bf16
//! activations and weights).
//!
//!     cargo run --release -p helixlab-model --example matmul_dtypes -- [rows...]
//!
//! Prints ms per product and GFLOP/s for each row count (default: 20 rows, one prompt of the
//! paper; 2000, a batch of 100 prompts).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use helixlab_model::half_matmul::HalfMatmul;

fn time(reps: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    f(); // warm up
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() -> candle_core::Result<()> {
    let rows: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("row counts"))
        .collect();
    let rows = if rows.is_empty() {
        vec![20, 2000]
    } else {
        rows
    };
    let (k, n) = (4096, 16384);
    let dev = Device::Cpu;
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?; // HF's (out, in)
    let wt32 = w.t()?.contiguous()?;
    let w16 = w.to_dtype(DType::BF16)?;
    println!("| rows | f32 weights ms | bf16 weights, f32 blocks ms | candle bf16 ms | GFLOP/s (f32, blocks, bf16) |");
    println!("|---:|---:|---:|---:|---|");
    for m in rows {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let xb = x.to_dtype(DType::BF16)?;
        let reps = if m > 500 { 3 } else { 10 };
        let f32_s = time(reps, || x.matmul(&wt32).unwrap());
        let blocks_s = time(reps, || {
            x.apply_op2_no_bwd(&w16.t().unwrap(), &HalfMatmul).unwrap()
        });
        let bf16_s = time(reps.min(3), || xb.matmul(&w16.t().unwrap()).unwrap());
        let gflop = 2.0 * (m * k * n) as f64 / 1e9;
        println!(
            "| {m} | {:.1} | {:.1} | {:.1} | {:.0}, {:.0}, {:.0} |",
            f32_s * 1e3,
            blocks_s * 1e3,
            bf16_s * 1e3,
            gflop / f32_s,
            gflop / blocks_s,
            gflop / bf16_s
        );
    }
    Ok(())
}
