//! End-to-end tests of `helixlab model check` and `helixlab model run` on the committed tiny
//! GPT-2 fixture, whose logits for the prompt "37+45=" were recorded with HF transformers
//! (tools/make_parity_fixtures.py).

use std::path::PathBuf;

use candle_core::{Device, Tensor};

mod common;
use common::{helixlab, model_check, model_run};

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/fixtures/parity")
        .join(case)
}

#[test]
fn check_reports_architecture_and_single_token_numbers() {
    let dir = fixture("gpt2_tied");
    let v = model_check(&dir);
    assert_eq!(v["architecture"], "gpt2");
    assert_eq!(v["layers"], 2);
    assert_eq!(v["d_model"], 32);
    assert_eq!(v["single_token_numbers"], "0..=119");
    assert_eq!(v["plus_and_equals_single_tokens"], true);
    assert!(v["hooks_per_block"]
        .as_array()
        .unwrap()
        .contains(&"hook_resid_mid".into()));

    let dir = fixture("gptj_rotary_partial");
    let v = model_check(&dir);
    assert_eq!(v["architecture"], "gptj");
    assert_eq!(v["rotary"]["dim"], 4);
    assert!(!v["hooks_per_block"]
        .as_array()
        .unwrap()
        .contains(&"hook_resid_mid".into()));
}

#[test]
fn run_saves_ids_logits_and_hooks_equal_to_hf() {
    let dir = fixture("gpt2_tied");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sub/run.safetensors");
    let (ok, stdout, stderr) = model_run(
        &dir,
        "37+45=",
        &["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"],
        &out,
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("next token"), "{stdout}");
    let saved = candle_core::safetensors::load(&out, &Device::Cpu).unwrap();
    let hf =
        candle_core::safetensors::load(dir.join("hf_prompt.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = saved["input_ids"].to_vec1().unwrap();
    let hf_ids: Vec<u32> = hf["input_ids"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&i| i as u32)
        .collect();
    assert_eq!(ids, hf_ids);
    assert_eq!(ids, vec![37, 120, 45, 121]);
    let diff = (&saved["logits"] - &hf["logits"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff <= 1e-4, "logits differ from HF by {diff}");
    assert_eq!(saved["blocks.1.hook_resid_post"].dims(), &[4, 32]);
    assert_eq!(saved["blocks.0.attn.hook_z"].dims(), &[4, 4, 8]);
    let _: &Tensor = &saved["logits"];
}

#[test]
fn bad_input_fails_with_a_message_and_no_output() {
    let dir = fixture("gpt2_tied");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run.safetensors");
    let (ok, _, stderr) = model_run(&dir, "1+2=", &["blocks.7.hook_resid_pre"], &out, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("blocks.7.hook_resid_pre") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!out.exists());
    let (ok, _, stderr) = helixlab(&["model", "check", "/nonexistent/model"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/model"), "{stderr}");
    let (ok, _, stderr) = helixlab(&["model", "check", dir.to_str().unwrap(), "--dtype", "f64"]);
    assert!(!ok);
    assert!(stderr.contains("f64"), "{stderr}");
}

/// `model check` reads config.json and the safetensors headers only: a checkpoint whose one
/// tensor is 6.4 GB of f32 (a sparse file, so nothing is on disk) and whose names fit no
/// architecture is reported, with its parameter count and stored type, while `model run`, which
/// loads the weights, names the tensor the architecture lacks.
#[test]
fn check_reads_headers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture("gpt2_tied").join(f), dir.join(f)).unwrap();
    }
    let n: u64 = 40_000;
    let mut header = format!(
        r#"{{"x":{{"dtype":"F32","shape":[{n},{n}],"data_offsets":[0,{}]}}}}"#,
        n * n * 4
    )
    .into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(bytes.len() as u64 + n * n * 4).unwrap();
    drop(f);

    let v = model_check(dir);
    assert_eq!(v["parameters"], 1_600_000_000u64);
    assert_eq!(v["stored_types"]["F32"], 1);
    assert_eq!(v["architecture"], "gpt2");
    let (ok, _, stderr) = model_run(dir, "1+2=", &[], &dir.join("o.safetensors"), &[]);
    assert!(!ok);
    assert!(stderr.contains("not found in the checkpoint"), "{stderr}");
}

/// A load that cannot fit in the machine's available memory stops before reading a tensor,
/// with the size needed and a dtype that fits (HELIXLAB_MEMORY_AVAILABLE stands in for the
/// machine's MemAvailable); `model check` reports the sizes per dtype.
#[test]
fn a_model_that_cannot_fit_is_refused_with_the_size_it_needs() {
    let dir = fixture("llama_gqa_llama3");
    let v = model_check(&dir);
    let params = v["parameters"].as_f64().unwrap();
    let f32_gb = v["memory_gb"]["f32"].as_f64().unwrap();
    assert!((f32_gb - params * 4.0 / 1e9).abs() < 1e-9, "{v}");
    assert!((v["memory_gb"]["bf16"].as_f64().unwrap() * 2.0 - f32_gb).abs() < 1e-9);
    // Room for the bf16 weights and the headroom, not for f32.
    let room = (0.5e9 + params * 3.0) as u64;
    let never = std::env::temp_dir().join("helixlab-never-written.safetensors");
    let (ok, _, stderr) = model_run(
        &dir,
        "1",
        &[],
        &never,
        &[("HELIXLAB_MEMORY_AVAILABLE", &room.to_string())],
    );
    assert!(!ok);
    assert!(
        stderr.contains("config.json")
            && stderr.contains("GB in f32")
            && stderr.contains("in bf16 it needs"),
        "{stderr}"
    );
}
