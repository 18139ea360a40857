//! Helpers shared by the model tests: fixture paths and reading HF reference files.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use helixlab_model::{Device, HookPoint, LoadOptions, Model, Tensor};

/// The parity fixtures made by tools/make_parity_fixtures.py.
pub fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(case)
}

pub const CASES: [&str; 9] = [
    "gpt2_tied",
    "gptj_rotary_partial",
    "neox_parallel",
    "neox_sequential",
    "llama_gqa_llama3",
    "qwen2_bias_window",
    "mistral_window",
    "gemma2_softcap",
    "bert",
];

pub fn load(case: &str) -> Model {
    Model::load(&fixture(case), &LoadOptions::default()).unwrap()
}

pub fn reference(case: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(case).join("hf_reference.safetensors"), &Device::Cpu)
        .unwrap()
}

/// A file under the repository root that a make target fetches or a script wrote.
pub fn repo_file(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: `make test` fetches it (make fetch-tokenizers, fetch-minilm, fetch-smollm2)",
        p.display()
    );
    p
}

/// The reference batch's position ids.
pub fn position_ids(r: &HashMap<String, Tensor>) -> Vec<Vec<u32>> {
    r["position_ids"]
        .to_vec2::<i64>()
        .unwrap()
        .iter()
        .map(|row| row.iter().map(|&p| p as u32).collect())
        .collect()
}

/// Weights w with sum(logits * w) = sum_b logit[b, t0] - logit[b, t1], for the reference's
/// `metric_targets` (batch, 2).
pub fn metric_weights(r: &HashMap<String, Tensor>, vocab: usize) -> Tensor {
    let t = r["metric_targets"].to_vec2::<i64>().unwrap();
    let mut w = vec![0f32; t.len() * vocab];
    for (b, row) in t.iter().enumerate() {
        w[b * vocab + row[0] as usize] += 1.0;
        w[b * vocab + row[1] as usize] -= 1.0;
    }
    Tensor::from_vec(w, (t.len(), vocab), &Device::Cpu).unwrap()
}

/// The unpadded token sequences of the reference batch.
pub fn sequences(r: &HashMap<String, Tensor>) -> Vec<Vec<u32>> {
    let ids = r["input_ids"].to_vec2::<i64>().unwrap();
    let mask = r["attention_mask"].to_vec2::<i64>().unwrap();
    ids.iter()
        .zip(&mask)
        .map(|(row, m)| {
            row.iter()
                .zip(m)
                .filter(|(_, &k)| k == 1)
                .map(|(&i, _)| i as u32)
                .collect()
        })
        .collect()
}

/// Max |a - b| over real (unpadded) positions of tensors laid out (batch, position, ...).
pub fn max_diff_real(a: &Tensor, b: &Tensor, mask: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let (bs, t) = (a.dim(0).unwrap(), a.dim(1).unwrap());
    let per = a.elem_count() / (bs * t);
    let a = a
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .reshape((bs, t, per))
        .unwrap();
    let b = b
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .reshape((bs, t, per))
        .unwrap();
    let m = mask
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .reshape((bs, t, 1))
        .unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .broadcast_mul(&m)
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Max |x| of a tensor.
pub fn max_abs(x: &Tensor) -> f32 {
    x.to_dtype(candle_core::DType::F32)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every hook of `model` but the logits (which the references store apart).
pub fn hooks_but_logits(model: &Model) -> Vec<HookPoint> {
    model
        .hooks()
        .into_iter()
        .filter(|h| *h != HookPoint::Logits)
        .collect()
}

/// A capture of the whole sequence at every hook whose gradient the reference records
/// (`grad.<hook>` keys).
pub fn gradient_sites(r: &HashMap<String, Tensor>) -> Vec<helixlab_model::Capture> {
    r.keys()
        .filter_map(|k| k.strip_prefix("grad."))
        .map(|h| helixlab_model::Capture {
            hook: h.parse().unwrap(),
            positions: helixlab_model::Positions::All,
        })
        .collect()
}

/// `n` damaged copies of `bytes`, seeded: bytes overwritten (mostly within the first `head`
/// bytes, where headers are), bytes inserted or deleted, the file truncated, and lengths
/// overwritten with huge values.
pub fn mutations(bytes: &[u8], head: usize, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 17
    };
    let head = head.min(bytes.len()).max(1);
    (0..n)
        .map(|_| {
            let mut b = bytes.to_vec();
            match next() % 5 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % head;
                        b[i] = next() as u8;
                    }
                }
                1 => {
                    let i = (next() as usize) % head;
                    b.insert(i, next() as u8);
                }
                2 => {
                    let i = (next() as usize) % head;
                    b.remove(i);
                }
                3 => b.truncate((next() as usize) % b.len()),
                _ => {
                    let i = (next() as usize) % head.saturating_sub(8).max(1);
                    b[i..i + 8].copy_from_slice(&(u64::MAX >> (next() % 8)).to_le_bytes());
                }
            }
            b
        })
        .collect()
}

/// Runs `f` on its own thread: panics if `f` panics or takes longer than `limit` (a reader
/// must answer bad input with an error, never a panic or a hang).
pub fn answers_in_time(what: &str, limit: std::time::Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r.is_ok());
    });
    match rx.recv_timeout(limit) {
        Ok(true) => {}
        Ok(false) => panic!("{what}: panicked"),
        Err(_) => panic!("{what}: no answer within {limit:?}"),
    }
}
