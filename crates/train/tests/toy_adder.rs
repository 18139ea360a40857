//! The shipped toy adders (data/models/), loaded by helixlab's inference runtime: held-out
//! addition accuracy, the period-10 structure of the number embeddings, and a short training
//! run whose loss must fall.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use helixlab_model::{ForwardRequest, LoadOptions, Logits, Model, Tokenizer};
use helixlab_train::{train, Recipe};

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/models")
        .join(name)
}

/// Held-out problems from the manifest's stored split ('0' = held out).
fn held_out(dir: &std::path::Path) -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string(dir.join("training_manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bits = v["addition_split"]["bits"].as_str().unwrap();
    assert_eq!(bits.len(), 10_000);
    bits.chars()
        .enumerate()
        .filter(|(_, c)| *c == '0')
        .map(|(i, _)| (i as u32 / 100, i as u32 % 100))
        .collect()
}

/// Accuracy through the tokenizer and the runtime, as a study would measure it.
fn heldout_accuracy(name: &str) -> f64 {
    let dir = shipped(name);
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let problems = held_out(&dir);
    assert_eq!(problems.len(), 4000);
    let mut correct = 0;
    for chunk in problems.chunks(1000) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|(a, b)| tok.encode(&format!("{a}+{b}="), false).unwrap())
            .collect();
        let batch = model.batch(&seqs).unwrap();
        let logits = model
            .forward(&batch, &ForwardRequest::new().logits(Logits::Last))
            .unwrap()
            .logits
            .unwrap();
        let pred: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        for ((a, b), p) in chunk.iter().zip(pred) {
            let answer = tok.single_token(&(a + b).to_string()).unwrap().unwrap();
            correct += usize::from(p == answer);
        }
    }
    correct as f64 / problems.len() as f64
}

#[test]
fn toy_adder_adds_held_out_problems() {
    let acc = heldout_accuracy("toy-adder");
    eprintln!("toy-adder held-out accuracy {acc:.4}");
    assert!(acc >= 0.98, "held-out accuracy {acc}");
}

/// The shipped toy-adder-plain (addition only; 4,000 steps in 576 s): 98.78 % held out at
/// training time.
#[test]
fn toy_adder_plain_adds_held_out_problems() {
    let acc = heldout_accuracy("toy-adder-plain");
    eprintln!("toy-adder-plain held-out accuracy {acc:.4}");
    assert!(acc >= 0.98, "held-out accuracy {acc}");
}

/// Power spectrum of the embeddings of 0..=99 along the number axis, per frequency k = 1..=50
/// (period 100 / k), averaged over dimensions, after removing each dimension's linear trend.
/// A direct DFT, independent of any FFT code in the project.
fn embedding_spectrum(name: &str) -> Vec<(f64, f64)> {
    let dir = shipped(name);
    let w = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let wte: &Tensor = &w["transformer.wte.weight"];
    let rows: Vec<Vec<f32>> = (0..100)
        .map(|n| {
            let id = tok.single_token(&n.to_string()).unwrap().unwrap();
            wte.get(id as usize).unwrap().to_vec1().unwrap()
        })
        .collect();
    let (n, d) = (100usize, rows[0].len());
    let xs: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let x_mean = xs.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - x_mean).powi(2)).sum();
    let mut power = vec![0f64; n / 2 + 1];
    for j in 0..d {
        let ys: Vec<f64> = rows.iter().map(|r| r[j] as f64).collect();
        let y_mean = ys.iter().sum::<f64>() / n as f64;
        let slope = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (x - x_mean) * (y - y_mean))
            .sum::<f64>()
            / sxx;
        let resid: Vec<f64> = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| y - y_mean - slope * (x - x_mean))
            .collect();
        for (k, p) in power.iter_mut().enumerate().skip(1) {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, r) in resid.iter().enumerate() {
                let ang = 2.0 * std::f64::consts::PI * (k * i) as f64 / n as f64;
                re += r * ang.cos();
                im -= r * ang.sin();
            }
            *p += (re * re + im * im) / d as f64;
        }
    }
    (1..=n / 2)
        .map(|k| (n as f64 / k as f64, power[k]))
        .collect()
}

#[test]
fn toy_adder_number_embeddings_have_period_10() {
    let mut spec = embedding_spectrum("toy-adder");
    spec.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<f64> = spec.iter().take(3).map(|(t, _)| *t).collect();
    eprintln!("toy-adder strongest periods: {:?}", &spec[..5]);
    assert!(
        top.iter().any(|t| (t - 10.0).abs() < 1e-9),
        "top periods {top:?}"
    );
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    let recipe = Recipe::named("adder-decimal").unwrap();
    let run = train(&recipe, 3, Some(30), |_| {}).unwrap();
    let first: f64 = run.log[..5].iter().map(|l| l.loss).sum::<f64>() / 5.0;
    let last: f64 = run.log[25..].iter().map(|l| l.loss).sum::<f64>() / 5.0;
    eprintln!("loss {first:.3} -> {last:.3} in 30 steps");
    assert!(last < first - 0.2, "loss {first} -> {last}");
    assert!(first > 4.0, "starts near ln(209) = 5.3, got {first}");
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let recipe = Recipe::named("adder-plain").unwrap();
    let a = train(&recipe, 11, Some(3), |_| {}).unwrap();
    let b = train(&recipe, 11, Some(3), |_| {}).unwrap();
    let c = train(&recipe, 12, Some(3), |_| {}).unwrap();
    let flat = |t: &helixlab_train::Trained| -> Vec<f32> {
        t.model
            .named_tensors()
            .iter()
            .flat_map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    };
    assert_eq!(flat(&a), flat(&b));
    assert_ne!(flat(&a), flat(&c));
    assert_eq!(a.split, b.split);
}
