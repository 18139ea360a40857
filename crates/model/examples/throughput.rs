//! Forward throughput of a GPT-2-small-shaped model (random weights, written to a temporary
//! HF directory and loaded through the normal path) against a measured f32 matmul peak.
//!
//!     cargo run --release -p helixlab-model --example throughput -- [batch] [seq_len] [iters]
//!
//! Prints tokens/s and GFLOP/s (model FLOPs: 2 x multiply-adds of every matmul, attention
//! included, logits at the last position only).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use helixlab_model::{ForwardRequest, HookPoint, LoadOptions, Logits, Model, Positions};

const D: usize = 768;
const LAYERS: usize = 12;
const HEADS: usize = 12;
const VOCAB: usize = 50257;
const N_POS: usize = 1024;

fn write_checkpoint(dir: &std::path::Path) -> candle_core::Result<()> {
    let cfg = serde_json::json!({"model_type": "gpt2", "n_embd": D, "n_layer": LAYERS,
        "n_head": HEADS, "vocab_size": VOCAB, "n_positions": N_POS, "tie_word_embeddings": true});
    std::fs::write(dir.join("config.json"), cfg.to_string())?;
    let dev = Device::Cpu;
    let r = |shape: &[usize]| Tensor::randn(0f32, 0.02, shape, &dev);
    let mut t = std::collections::HashMap::new();
    t.insert("transformer.wte.weight".to_string(), r(&[VOCAB, D])?);
    t.insert("transformer.wpe.weight".to_string(), r(&[N_POS, D])?);
    for l in 0..LAYERS {
        let p = format!("transformer.h.{l}");
        for (name, shape) in [
            ("ln_1.weight", vec![D]),
            ("ln_1.bias", vec![D]),
            ("attn.c_attn.weight", vec![D, 3 * D]),
            ("attn.c_attn.bias", vec![3 * D]),
            ("attn.c_proj.weight", vec![D, D]),
            ("attn.c_proj.bias", vec![D]),
            ("ln_2.weight", vec![D]),
            ("ln_2.bias", vec![D]),
            ("mlp.c_fc.weight", vec![D, 4 * D]),
            ("mlp.c_fc.bias", vec![4 * D]),
            ("mlp.c_proj.weight", vec![4 * D, D]),
            ("mlp.c_proj.bias", vec![D]),
        ] {
            t.insert(format!("{p}.{name}"), r(&shape)?);
        }
    }
    t.insert("transformer.ln_f.weight".to_string(), r(&[D])?);
    t.insert("transformer.ln_f.bias".to_string(), r(&[D])?);
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))
}

fn matmul_peak() -> candle_core::Result<f64> {
    let n = 1024;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    a.matmul(&b)?; // warm up
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b)?;
        c.sum_all()?.to_scalar::<f32>()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let batch = args.first().copied().unwrap_or(8);
    let seq = args.get(1).copied().unwrap_or(128);
    let iters = args.get(2).copied().unwrap_or(3);

    let dir = tempfile::tempdir()?;
    write_checkpoint(dir.path())?;
    let model = Model::load(dir.path(), &LoadOptions::default())?;
    let peak = matmul_peak()?;

    let mut rng = 12345u64;
    let seqs: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((rng >> 33) % VOCAB as u64) as u32
                })
                .collect()
        })
        .collect();
    let b = model.batch(&seqs)?;
    let tokens = (batch * seq) as f64;
    let flops = 2.0
        * (tokens * (LAYERS * 12 * D * D) as f64
            + (LAYERS * 2 * batch * seq * seq * D) as f64
            + (batch * D * VOCAB) as f64);
    let run = |req: &ForwardRequest| -> anyhow::Result<f64> {
        model.forward(&b, req)?; // warm up
        let mut best = f64::MAX;
        for _ in 0..iters {
            let t = Instant::now();
            model.forward(&b, req)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let plain = run(&ForwardRequest::new().logits(Logits::Last))?;
    let mut capture = ForwardRequest::new().logits(Logits::Last);
    for l in 0..LAYERS {
        capture = capture.capture(HookPoint::ResidPre(l), Positions::At(vec![-4, -2, -1]));
    }
    let captured = run(&capture)?;
    println!("matmul 1024^3 f32 peak: {peak:.0} GFLOP/s");
    println!(
        "GPT-2 small shape, batch {batch} x {seq} tokens, best of {iters}, dtype {:?}",
        DType::F32
    );
    for (name, secs) in [
        ("forward, last logits", plain),
        ("+ resid_pre x 12 layers x 3 positions", captured),
    ] {
        let gflops = flops / secs / 1e9;
        println!(
            "  {name:<40} {:>8.0} tok/s  {:>6.1} GFLOP/s  ({:.0} % of matmul peak)",
            tokens / secs,
            gflops,
            100.0 * gflops / peak
        );
    }
    Ok(())
}
