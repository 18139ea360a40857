//! SmolLM2-135M-Instruct, real pretrained weights, loaded from its Q4_1 GGUF file
//! (data/models/SmolLM2-135M-Instruct, `make fetch-smollm2`, part of `make test`), against HF
//! transformers loading the same file (`from_pretrained(dir, gguf_file=...)`, dequantized, f32;
//! tests/fixtures/real/smollm2_reference.safetensors by tools/make_real_references.py). The
//! batch is the paper's three prompt layouts, left-padded and ragged. Compared: every hook of
//! every layer at the last position, the residual stream of six layers at every real position,
//! the last-position logits, and gradients of a logit difference at five sites; each within
//! 1e-4 of the reference's largest |value| (relative), in f32.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{
    hooks_but_logits, max_abs, max_diff_real, metric_weights, position_ids, repo_file, sequences,
};
use helixlab_model::{
    Capture, Checkpoint, ForwardOutput, ForwardRequest, HookPoint, LoadOptions, Logits, Model,
    Positions, Tokenizer,
};

const REL: f32 = 1e-4;

fn model_dir() -> PathBuf {
    repo_file("data/models/SmolLM2-135M-Instruct")
}

fn reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        repo_file("tests/fixtures/real/smollm2_reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    let got = got.to_dtype(DType::F32).unwrap();
    assert_eq!(got.dims(), want.dims());
    max_abs(&(got - want).unwrap()) / max_abs(want).max(1e-12)
}

#[test]
fn the_gguf_file_reads_as_smollm2s_config() {
    let dir = model_dir();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let c = model.config();
    assert!(
        matches!(model.checkpoint(), Checkpoint::Gguf(f) if f.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"))
    );
    assert_eq!(
        (
            c.n_layers,
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.d_head,
            c.d_mlp,
            c.vocab_size
        ),
        (30, 576, 9, 3, 64, 1536, 49152)
    );
    assert!(c.tie_word_embeddings && c.gated_mlp);
    let r = c.rotary.unwrap();
    assert_eq!((r.dim, r.theta), (64, 100000.0));
    assert!((c.norm_eps - 1e-5).abs() < 1e-9);
    assert_eq!(c.max_positions, Some(8192));
    let types: Vec<(String, usize)> = model
        .stored_types()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        types,
        vec![("F32".into(), 61), ("Q4_1".into(), 210), ("Q8_0".into(), 1)]
    );
    assert_eq!(model.parameter_count(), 134_515_008);
    // The header hash identifies the file's config; it is stable across loads.
    let again = Model::load(
        &dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(model.config_sha256(), again.config_sha256());
    assert_eq!(model.config_sha256().len(), 64);
}

// Long: one real checkpoint compared with HF at every hook, the logits and the gradients.
#[test]
fn every_hook_logits_and_gradients_equal_hf_loading_the_same_gguf() {
    let model = Model::load(&model_dir(), &LoadOptions::default()).unwrap();
    let tok = Tokenizer::for_checkpoint(&model_dir()).unwrap();
    let r = reference();
    let seqs = sequences(&r);
    // The inputs of tools/make_real_references.py, through our tokenizer.
    let prompts = [
        "Output ONLY a number.\n37+45=",
        "The following is a correct addition problem. \n8+91=",
        "Output ONLY a number. 3+4=",
    ];
    for (p, s) in prompts.iter().zip(&seqs) {
        assert_eq!(&tok.encode(p, true).unwrap(), s, "{p:?}");
    }
    let batch = model.batch(&seqs).unwrap();
    assert_eq!(batch.position_ids, position_ids(&r), "position ids");

    let last_hooks = hooks_but_logits(&model);
    let full = [0usize, 1, 2, 14, 28, 29];
    let mut req = ForwardRequest::new().logits(Logits::Last);
    for h in &last_hooks {
        req = req.capture(*h, Positions::last());
    }
    for &l in &full {
        req = req.capture(HookPoint::ResidPost(l), Positions::All);
    }
    let out = model.forward(&batch, &req).unwrap();
    let mut worst: Vec<(String, f32)> = Vec::new();
    for (h, got) in last_hooks.iter().zip(&out.captures) {
        let key = format!("last.{h}");
        let want = r
            .get(&key)
            .unwrap_or_else(|| panic!("the reference lacks {key}"));
        let d = rel_diff(&got.squeeze(1).unwrap(), want);
        assert!(
            d <= REL,
            "{h}: differs from HF by {d:.2e} of its largest |value|"
        );
        worst.push((h.to_string(), d));
    }
    let mask = &r["attention_mask"];
    for (&l, got) in full.iter().zip(&out.captures[last_hooks.len()..]) {
        let want = &r[&format!("blocks.{l}.hook_resid_post")];
        let d = max_diff_real(got, want, mask) / max_abs(want);
        assert!(
            d <= REL,
            "blocks.{l}.hook_resid_post at every position: {d:.2e}"
        );
        worst.push((format!("blocks.{l}.hook_resid_post (all positions)"), d));
    }
    let logits = out.logits.as_ref().unwrap().squeeze(1).unwrap();
    let d = rel_diff(&logits, &r["last.logits"]);
    assert!(d <= REL, "logits: {d:.2e}");
    assert!(max_abs(&r["last.logits"]) > 10.0);
    worst.push(("logits".into(), d));
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!(
        "SmolLM2 GGUF vs HF: {} comparisons, worst {:?}",
        worst.len(),
        &worst[..5]
    );

    // Gradients of sum_b logit[b, -1, t0] - logit[b, -1, t1].
    let w = metric_weights(&r, model.config().vocab_size);
    let sites: Vec<Capture> = common::gradient_sites(&r);
    assert_eq!(sites.len(), 5);
    let w2 = w.clone();
    let metric = move |o: &ForwardOutput| (o.logits.as_ref().unwrap() * &w2)?.sum_all();
    let (out, grads) = model
        .forward_with_grad(
            &batch,
            &ForwardRequest::new().logits(Logits::Last),
            &sites,
            metric,
        )
        .unwrap();
    let m = (out.logits.unwrap() * w)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want_m = r["metric"].to_vec1::<f32>().unwrap()[0];
    assert!(
        (m - want_m).abs() <= REL * 40.0,
        "metric {m} vs HF {want_m}"
    );
    for (s, g) in sites.iter().zip(&grads) {
        let want = &r[&format!("grad.{}", s.hook)];
        let d = max_diff_real(g, want, mask) / max_abs(want);
        assert!(d <= REL, "gradient at {}: {d:.2e}", s.hook);
        eprintln!("gradient at {}: {d:.2e} of its largest |value|", s.hook);
    }
}
