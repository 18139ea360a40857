//! The loading paths give the same model: weights mapped from their files and weights read into
//! fresh buffers, weights stored in the run dtype and weights converted at load (stored f32 run
//! in bf16, stored bf16 run in f32) produce identical logits, and bf16 weights multiplied in
//! f32 blocks agree with f32 arithmetic on the same values. The checkpoints are the parity
//! fixtures with every weight rounded to bf16, so that each value is exact in both stored
//! types. This test binary installs the allocator that lets weights stay mapped, as the CLI
//! does.

mod common;

#[global_allocator]
static GLOBAL: helixlab_model::mapped::MappedAwareAlloc<std::alloc::System> =
    helixlab_model::mapped::MappedAwareAlloc(std::alloc::System);

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use helixlab_model::{ForwardRequest, LoadOptions, Logits, Model};

/// A copy of the fixture `case` with every tensor rounded to bf16, stored as `stored`.
fn rounded_copy(case: &str, stored: DType, out: &Path) {
    let src = fixture(case);
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(src.join("config.json"), out.join("config.json")).unwrap();
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            all.extend(candle_core::safetensors::load(&p, &Device::Cpu).unwrap());
        }
    }
    assert!(!all.is_empty(), "{case}: no safetensors weights");
    let all: HashMap<String, Tensor> = all
        .into_iter()
        .map(|(n, t)| {
            let r = t.to_dtype(DType::BF16).unwrap().to_dtype(stored).unwrap();
            (n, r)
        })
        .collect();
    candle_core::safetensors::save(&all, out.join("model.safetensors")).unwrap();
}

fn logits(dir: &Path, dtype: DType, case: &str) -> Vec<f32> {
    let model = Model::load(
        dir,
        &LoadOptions {
            dtype,
            ..Default::default()
        },
    )
    .unwrap();
    let batch = model.batch(&sequences(&reference(case))).unwrap();
    let out = model
        .forward(&batch, &ForwardRequest::new().logits(Logits::All))
        .unwrap();
    out.logits
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn stored_and_converted_weights_give_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["gpt2_tied", "llama_gqa_llama3", "neox_parallel"] {
        let as_f32 = tmp.path().join(format!("{case}-f32"));
        let as_bf16 = tmp.path().join(format!("{case}-bf16"));
        rounded_copy(case, DType::F32, &as_f32);
        rounded_copy(case, DType::BF16, &as_bf16);
        for run in [DType::F32, DType::BF16] {
            let a = logits(&as_f32, run, case);
            let b = logits(&as_bf16, run, case);
            assert_eq!(
                a, b,
                "{case}: run in {run:?}, stored f32 and stored bf16 differ"
            );
        }
        // bf16 weights in f32 blocks against f32 arithmetic on the same values: only the
        // order of the sums differs.
        let f = logits(&as_bf16, DType::F32, case);
        let h = logits(&as_bf16, DType::BF16, case);
        let scale = f.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = f
            .iter()
            .zip(&h)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{case}: bf16 weights computed in f32 differ from f32 by {diff} (scale {scale})"
        );
    }
}

#[test]
fn mapped_and_read_weights_give_identical_logits() {
    assert!(
        helixlab_model::mapped::available(),
        "the test allocator is installed"
    );
    let tmp = tempfile::tempdir().unwrap();
    for case in ["gpt2_tied", "llama_gqa_llama3"] {
        let dir = tmp.path().join(case);
        rounded_copy(case, DType::BF16, &dir);
        for run in [DType::F32, DType::BF16] {
            helixlab_model::mapped::set_enabled(true);
            let mapped = logits(&dir, run, case);
            helixlab_model::mapped::set_enabled(false);
            let read = logits(&dir, run, case);
            helixlab_model::mapped::set_enabled(true);
            assert_eq!(
                mapped, read,
                "{case} in {run:?}: mapped and read weights differ"
            );
        }
        // The parity fixture itself (f32, several shards for Llama), mapped, equals HF.
        let model = Model::load(&fixture(case), &LoadOptions::default()).unwrap();
        let r = reference(case);
        let batch = model.batch(&sequences(&r)).unwrap();
        let out = model
            .forward(&batch, &ForwardRequest::new().logits(Logits::All))
            .unwrap();
        let d = max_diff_real(&out.logits.unwrap(), &r["logits"], &r["attention_mask"]);
        assert!(d <= 1e-4, "{case}: mapped weights differ from HF by {d}");
        drop(model);
    }
}

#[test]
fn a_model_too_large_for_the_memory_is_refused_before_loading() {
    let dir = fixture("llama_gqa_llama3");
    let info = helixlab_model::CheckpointInfo::read(&dir).unwrap();
    let f32_bytes = info.weight_bytes(DType::F32);
    let needed = 500_000_000 + f32_bytes;
    let e = info
        .check_fits_in(DType::F32, &Device::Cpu, needed - 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("need about") && e.contains("in f32") && e.contains("config.json"),
        "{e}"
    );
    assert!(e.contains("in bf16 it needs"), "{e}");
    info.check_fits_in(DType::F32, &Device::Cpu, needed)
        .unwrap();
}
