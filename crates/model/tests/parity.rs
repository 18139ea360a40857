//! Parity with HF transformers: logits, every hook, and gradients, on tiny random checkpoints
//! of every architecture (tests/fixtures/parity, made by tools/make_parity_fixtures.py with
//! torch 2.15.0 / transformers 5.23.0). Tolerance: f32 max abs difference <= 1e-4 at every
//! real (unpadded) position; weights are O(1) so activations are too and 1e-4 is tight.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use helixlab_model::{
    Architecture, Capture, ForwardOutput, ForwardRequest, HookPoint, LoadOptions, Logits, Model,
    Positions,
};

const TOL: f32 = 1e-4;

type Metric = Box<dyn Fn(&ForwardOutput) -> candle_core::Result<Tensor>>;

/// `Model::token_logits` (one token's logit per row, from `ln_final`) against HF's logits, at
/// each sequence's last real position, for a different token in every row.
fn check_token_logits(
    case: &str,
    model: &Model,
    hooks: &[HookPoint],
    out: &ForwardOutput,
    r: &std::collections::HashMap<String, Tensor>,
) {
    let at = hooks.iter().position(|h| *h == HookPoint::LnFinal).unwrap();
    let ln = out.captures[at].to_dtype(DType::F32).unwrap();
    let hf = r["logits"]
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let mask = r["attention_mask"]
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let vocab = model.config().vocab_size;
    let (mut rows, mut tokens, mut want) = (Vec::new(), Vec::new(), Vec::new());
    for (i, m) in mask.iter().enumerate() {
        let last = m.iter().rposition(|&v| v > 0.5).unwrap();
        let tok = (i * 7919 + 13) % vocab;
        rows.push(ln.get(i).unwrap().get(last).unwrap());
        tokens.push(tok as u32);
        want.push(hf[i][last][tok]);
    }
    let got = model
        .token_logits(&Tensor::stack(&rows, 0).unwrap(), &tokens)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= TOL,
            "{case}: token logit of row {i} is {g}, HF's {w}"
        );
    }
    assert!(want.iter().any(|w| w.abs() > 0.1), "{case}: logits ~0");
}

/// Forwards that read the last position only (the last block they run computes that position
/// alone): logits and hooks there against HF's last rows, with the padded batch.
fn check_last_position(
    case: &str,
    model: &Model,
    batch: &helixlab_model::Batch,
    r: &std::collections::HashMap<String, Tensor>,
) {
    let at_last = |x: &Tensor| x.narrow(1, x.dim(1).unwrap() - 1, 1).unwrap();
    // Runs `req`, which must take the shortcut, and checks every capture against HF's.
    let run = |what: &str, req: ForwardRequest| {
        let out = model.forward(batch, &req).unwrap();
        assert!(
            out.last_block_last_only,
            "{case} {what}: ran every position"
        );
        for (h, got) in out.hooks.iter().zip(&out.captures) {
            let d = max_abs(&(got - at_last(&r[&h.to_string()])).unwrap());
            assert!(
                d <= TOL,
                "{case} {what}: last position of {h} differs from HF by {d}"
            );
        }
        out
    };
    let last = model.config().n_layers - 1;
    let mut req = ForwardRequest::new().logits(Logits::Last);
    for h in [
        HookPoint::AttnOut(last),
        HookPoint::MlpOut(last),
        HookPoint::ResidPost(last),
        HookPoint::LnFinal,
    ] {
        req = req.capture(h, Positions::last());
    }
    let out = run("logits", req);
    let got = out.logits.as_ref().unwrap().unsqueeze(1).unwrap();
    let d = max_abs(&(got - at_last(&r["logits"])).unwrap());
    assert!(
        d <= TOL,
        "{case}: last-position logits differ from HF by {d}"
    );
    // The last position named from each sequence's first token, as the shared-prefix
    // forward names it.
    let each = Positions::Each(batch.lengths.iter().map(|&n| vec![n as i64 - 1]).collect());
    let req = ForwardRequest::new()
        .logits(Logits::Last)
        .capture(HookPoint::ResidPost(last), each);
    run("per-sequence positions", req);
    // No logits: the forward stops after block 0, which runs the last position alone.
    let req = ForwardRequest::new()
        .capture(HookPoint::MlpOut(0), Positions::last())
        .capture(HookPoint::ResidPost(0), Positions::last());
    let out = run("block 0", req);
    assert_eq!(out.layers_run, 0..1, "{case}");
}

// Long: one HF reference case checked at every hook, the logits and the gradients, each with its
// own tolerance and message.
fn check_case(case: &str) {
    let model = load(case);
    let r = reference(case);
    let mask = &r["attention_mask"];
    let batch = model.batch(&sequences(&r)).unwrap();
    assert_eq!(batch.position_ids, position_ids(&r), "{case}: position ids");

    // Every hook the model has must be in the reference, and match it.
    let hooks = hooks_but_logits(&model);
    for h in &hooks {
        assert!(
            r.contains_key(&h.to_string()),
            "{case}: reference lacks {h}"
        );
    }
    let causal = model.config().arch.is_causal_lm();
    let mut req = ForwardRequest::new().logits(if causal { Logits::All } else { Logits::None });
    for h in &hooks {
        req = req.capture(*h, Positions::All);
    }
    let out = model.forward(&batch, &req).unwrap();
    let mut worst = (String::new(), 0f32);
    for (h, got) in hooks.iter().zip(&out.captures) {
        let d = max_diff_real(got, &r[&h.to_string()], mask);
        assert!(
            d <= TOL,
            "{case}: {h} differs from HF by {d} (max |x| {})",
            max_abs(got)
        );
        if d > worst.1 {
            worst = (h.to_string(), d);
        }
    }
    if causal {
        let d = max_diff_real(out.logits.as_ref().unwrap(), &r["logits"], mask);
        assert!(d <= TOL, "{case}: logits differ from HF by {d}");
        assert!(
            max_abs(&r["logits"]) > 1.0,
            "{case}: logits too small to be a real test"
        );
        check_token_logits(case, &model, &hooks, &out, &r);
        check_last_position(case, &model, &batch, &r);
    }
    eprintln!(
        "{case}: {} hooks match HF, worst {} ({:.2e})",
        hooks.len(),
        worst.0,
        worst.1
    );

    // Gradients of the fixture's metric at the recorded sites.
    let targets: Vec<Capture> = common::gradient_sites(&r);
    assert!(!targets.is_empty());
    let cfg = model.config().clone();
    let metric: Metric = if causal {
        let w = metric_weights(&r, cfg.vocab_size);
        Box::new(move |o: &ForwardOutput| (o.logits.as_ref().unwrap() * &w)?.sum_all())
    } else {
        let v = r["metric_vector"].clone();
        Box::new(move |o: &ForwardOutput| o.captures[0].squeeze(1)?.broadcast_mul(&v)?.sum_all())
    };
    let req = if causal {
        ForwardRequest::new().logits(Logits::Last)
    } else {
        ForwardRequest::new().capture(HookPoint::ResidPost(cfg.n_layers - 1), Positions::last())
    };
    let (out, grads) = model
        .forward_with_grad(&batch, &req, &targets, metric)
        .unwrap();
    let m = if causal {
        (out.logits.unwrap() * metric_weights(&r, cfg.vocab_size))
            .unwrap()
            .sum_all()
            .unwrap()
    } else {
        out.captures[0]
            .squeeze(1)
            .unwrap()
            .broadcast_mul(&r["metric_vector"])
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let hf_metric = r["metric"].to_vec1::<f32>().unwrap()[0];
    assert!(
        (m.to_scalar::<f32>().unwrap() - hf_metric).abs() < TOL,
        "{case}: metric"
    );
    for (t, g) in targets.iter().zip(&grads) {
        let want = &r[&format!("grad.{}", t.hook)];
        let d = max_diff_real(g, want, mask);
        assert!(
            d <= TOL,
            "{case}: gradient at {} differs from HF by {d} (max |g| {})",
            t.hook,
            max_abs(want)
        );
        assert!(
            max_abs(want) > 1e-3,
            "{case}: HF gradient at {} is ~0",
            t.hook
        );
    }
    eprintln!("{case}: gradients at {} sites match HF", targets.len());
}

#[test]
fn gpt2_matches_hf() {
    check_case("gpt2_tied");
}

#[test]
fn gptj_matches_hf() {
    check_case("gptj_rotary_partial");
}

#[test]
fn neox_parallel_matches_hf() {
    check_case("neox_parallel");
}

#[test]
fn neox_sequential_matches_hf() {
    check_case("neox_sequential");
}

#[test]
fn llama_matches_hf() {
    check_case("llama_gqa_llama3");
}

#[test]
fn qwen2_matches_hf() {
    check_case("qwen2_bias_window");
}

#[test]
fn mistral_matches_hf() {
    check_case("mistral_window");
}

#[test]
fn gemma2_matches_hf() {
    check_case("gemma2_softcap");
}

/// The windowed fixtures test the window: the same weights with every layer global (the
/// window removed from config.json) give logits far from HF's.
#[test]
fn sliding_windows_change_the_result() {
    for case in ["qwen2_bias_window", "mistral_window", "gemma2_softcap"] {
        let tmp = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(fixture(case)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
        }
        let p = tmp.path().join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v["sliding_window"] = serde_json::Value::Null;
        std::fs::write(&p, v.to_string()).unwrap();
        let global = Model::load(tmp.path(), &LoadOptions::default()).unwrap();
        assert!(global.config().sliding_window.is_none());
        let windowed = load(case);
        assert!(windowed.config().local_layers.contains(&true), "{case}");
        let r = reference(case);
        let batch = global.batch(&sequences(&r)).unwrap();
        let req = ForwardRequest::new().logits(Logits::All);
        let d = max_diff_real(
            global
                .forward(&batch, &req)
                .unwrap()
                .logits
                .as_ref()
                .unwrap(),
            &r["logits"],
            &r["attention_mask"],
        );
        assert!(
            d > 1e-2,
            "{case}: without the window the logits still match HF ({d})"
        );
    }
}

#[test]
fn bert_matches_hf() {
    check_case("bert");
}

#[test]
fn fixtures_cover_every_architecture_and_weight_format() {
    let mut archs = Vec::new();
    let mut files = Vec::new();
    for case in CASES {
        let m = load(case);
        archs.push(m.config().arch);
        files.extend(
            m.weight_files()
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().to_string()),
        );
    }
    for a in Architecture::ALL {
        assert!(archs.contains(&a), "{a:?} has no fixture");
    }
    assert!(files.iter().any(|f| f == "pytorch_model.bin"));
    assert!(files.iter().any(|f| f.starts_with("pytorch_model-0000")));
    assert!(files.iter().any(|f| f == "model.safetensors"));
    assert!(files.iter().any(|f| f.starts_with("model-0000")));
}

/// bf16 weights against HF's f32 logits. On the CPU the arithmetic is f32, so only the weights
/// are rounded: 8 bits of mantissa (relative step 2^-8 = 0.4 %) per weight, averaging out over
/// each dot product; measured up to 0.8 % of the largest |logit|, the test allows 2 %.
#[test]
fn bf16_is_close_to_hf_f32() {
    half_precision_is_close_to_hf_f32(DType::BF16, 0.02);
}

/// f16 keeps 11 bits of mantissa (0.05 %), 8x finer than bf16: measured up to 0.12 %, allowed
/// 0.5 % of the largest |logit|.
#[test]
fn f16_is_close_to_hf_f32() {
    half_precision_is_close_to_hf_f32(DType::F16, 0.005);
}

fn half_precision_is_close_to_hf_f32(dtype: DType, rel_tol: f32) {
    for case in [
        "gpt2_tied",
        "llama_gqa_llama3",
        "gptj_rotary_partial",
        "neox_parallel",
    ] {
        let model = Model::load(
            &fixture(case),
            &LoadOptions {
                dtype,
                ..Default::default()
            },
        )
        .unwrap();
        let r = reference(case);
        let batch = model.batch(&sequences(&r)).unwrap();
        let out = model
            .forward(&batch, &ForwardRequest::new().logits(Logits::All))
            .unwrap();
        let logits = out.logits.unwrap();
        // On the CPU half-precision weights are multiplied in f32.
        assert_eq!(model.weight_dtype(), dtype);
        assert_eq!(logits.dtype(), DType::F32);
        let d = max_diff_real(&logits, &r["logits"], &r["attention_mask"]);
        let scale = max_abs(&r["logits"]);
        eprintln!("{case} {dtype:?}: max |diff| {d:.4} against max |logit| {scale:.2}");
        assert!(
            d <= rel_tol * scale,
            "{case}: {dtype:?} logits off by {d} (scale {scale})"
        );
    }
}

/// The shipped toy adders (data/models/, made by `helixlab train`) loaded unchanged by HF
/// transformers and by this runtime give the same logits (fixture: toy-adder*_hf.safetensors).
#[test]
fn shipped_toy_adders_match_hf() {
    for name in ["toy-adder", "toy-adder-plain"] {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/models")
            .join(name);
        let model = Model::load(&dir, &LoadOptions::default()).unwrap();
        let r = candle_core::safetensors::load(
            fixture("").join(format!("{name}_hf.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let ids: Vec<Vec<u32>> = r["input_ids"]
            .to_vec2::<i64>()
            .unwrap()
            .iter()
            .map(|row| row.iter().map(|&i| i as u32).collect())
            .collect();
        let batch = model.batch(&ids).unwrap();
        let out = model
            .forward(&batch, &ForwardRequest::new().logits(Logits::All))
            .unwrap();
        let d = max_abs(&(out.logits.unwrap() - &r["logits"]).unwrap());
        eprintln!("{name}: logits differ from HF by {d:.2e}");
        assert!(d <= TOL, "{name}: logits differ from HF by {d}");
    }
}
