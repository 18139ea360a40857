//! Bad input ends in an error that names the file, tensor, field or hook at fault.

mod common;

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use helixlab_model::{
    ForwardRequest, HookPoint, LoadOptions, Logits, Model, ModelError, Positions, Tokenizer,
};

fn copy_fixture(case: &str, to: &Path) {
    for e in fs::read_dir(fixture(case)).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match Model::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn missing_directory_config_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let e = load_err(&tmp.path().join("nope"));
    assert!(e.contains("nope") && e.contains("model directory"), "{e}");
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("missing"), "{e}");
    fs::copy(
        fixture("gpt2_tied").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model.safetensors") && e.contains("pytorch_model.bin"),
        "{e}"
    );
}

#[test]
fn unknown_model_type_and_bad_fields() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gpt2_tied", tmp.path());
    edit_config(tmp.path(), |v| v["model_type"] = "mamba".into());
    let e = load_err(tmp.path());
    assert!(
        e.contains("unsupported model_type `mamba`") && e.contains("gptj"),
        "{e}"
    );
    edit_config(tmp.path(), |v| {
        v["model_type"] = "gpt2".into();
        v["n_layer"] = "two".into();
    });
    let e = load_err(tmp.path());
    assert!(e.contains("`n_layer`") && e.contains("integer"), "{e}");
    fs::write(tmp.path().join("config.json"), "{not json").unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("config.json") && e.contains("not valid JSON"),
        "{e}"
    );
}

#[test]
fn wrong_shapes_and_missing_tensors_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("gpt2_tied", tmp.path());
    edit_config(tmp.path(), |v| v["n_inner"] = 100.into());
    let e = load_err(tmp.path());
    assert!(
        e.contains("transformer.h.0.mlp.c_fc.weight") && e.contains("[32, 100]"),
        "{e}"
    );
    edit_config(tmp.path(), |v| {
        v["n_inner"] = serde_json::Value::Null;
        v["n_layer"] = 3.into();
    });
    let e = load_err(tmp.path());
    assert!(
        e.contains("transformer.h.2.ln_1.weight") && e.contains("not found"),
        "{e}"
    );
}

#[test]
fn missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("llama_gqa_llama3", tmp.path());
    fs::remove_file(tmp.path().join("model-00002-of-00003.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.contains("model-00002-of-00003.safetensors") && e.contains("shard"),
        "{e}"
    );
}

#[test]
fn hooks_the_model_lacks_say_why() {
    let gptj = load("gptj_rotary_partial");
    let e = gptj
        .check_hook(HookPoint::ResidMid(0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blocks.0.hook_resid_mid") && e.contains("parallel"),
        "{e}"
    );
    assert!(
        e.contains("hook_resid_pre"),
        "the error lists valid hooks: {e}"
    );
    let e = gptj
        .check_hook(HookPoint::ResidPre(9))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer 9 does not exist") && e.contains("2 layers"),
        "{e}"
    );
    let e = gptj
        .check_hook(HookPoint::MlpPreLinear(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gated"), "{e}");
    let e = gptj
        .check_hook(HookPoint::PosEmbed)
        .unwrap_err()
        .to_string();
    assert!(e.contains("position embedding"), "{e}");
    let bert = load("bert");
    assert!(bert.check_hook(HookPoint::Logits).is_err());
    let batch = bert.batch(&[vec![1, 2, 3]]).unwrap();
    let e = bert
        .forward(&batch, &ForwardRequest::new().logits(Logits::Last))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no LM head"), "{e}");
    // A forward refuses a hook the model lacks before running anything.
    let batch = gptj.batch(&[vec![1, 2, 3]]).unwrap();
    let e = gptj
        .forward(
            &batch,
            &ForwardRequest::new().capture(HookPoint::ResidMid(1), Positions::All),
        )
        .unwrap_err();
    assert!(matches!(e, ModelError::BadHook { .. }));
}

#[test]
fn bad_requests_name_the_hook_and_position() {
    let model = load("gpt2_tied");
    let batch = model.batch(&[vec![1, 2, 3], vec![4]]).unwrap();
    let e = model
        .forward(
            &batch,
            &ForwardRequest::new().capture(HookPoint::ResidPre(0), Positions::At(vec![-2])),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("position -2") && e.contains("sequence 1"), "{e}");
    let wrong = Tensor::zeros((2, 1, 5), DType::F32, &Device::Cpu).unwrap();
    let e = model
        .forward(
            &batch,
            &ForwardRequest::new().replace(HookPoint::ResidPost(0), Positions::last(), wrong),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blocks.0.hook_resid_post") && e.contains("[2, 1, 32]"),
        "{e}"
    );
    let resid = Tensor::zeros((2, 3, 32), DType::F32, &Device::Cpu).unwrap();
    let e = model
        .forward(
            &batch,
            &ForwardRequest::new()
                .resume(1, resid)
                .capture(HookPoint::ResidPost(0), Positions::All),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("fires before layer 1"), "{e}");
    let e = model.batch(&[vec![1, 999]]).unwrap_err().to_string();
    assert!(e.contains("999") && e.contains("vocabulary"), "{e}");
}

#[test]
fn missing_tokenizer_is_named() {
    let e = match Tokenizer::from_dir(&fixture("llama_gqa_llama3")) {
        Ok(_) => panic!("no tokenizer there"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("tokenizer.json") && e.contains("merges.txt"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
    let e = match Tokenizer::from_dir(tmp.path()) {
        Ok(_) => panic!("not a tokenizer"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("tokenizer.json") && e.contains("not a tokenizer.json"),
        "{e}"
    );
}

/// Damaged safetensors headers and files: `model check` (headers only) and loading answer
/// with an error or a model, never a panic or a hang.
#[test]
fn damaged_safetensors_files_give_errors_not_panics() {
    let src = common::fixture("gpt2_tied");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let tmp = tempfile::tempdir().unwrap();
    for (i, damaged) in common::mutations(&bytes, header + 16, 300, 7)
        .into_iter()
        .enumerate()
    {
        let dir = tmp.path().join(format!("m{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("model.safetensors"), damaged).unwrap();
        common::answers_in_time(
            &format!("mutation {i}"),
            std::time::Duration::from_secs(10),
            move || {
                let _ = helixlab_model::CheckpointInfo::read(&dir);
                let _ = helixlab_model::Model::load(&dir, &helixlab_model::LoadOptions::default());
                let _ = std::fs::remove_dir_all(&dir);
            },
        );
    }
}
