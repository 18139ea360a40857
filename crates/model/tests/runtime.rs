//! Identities the forward API must satisfy, checked against the plain forward: interventions
//! with a site's own value change nothing, resuming equals running, early stop returns the same
//! captures, edits land where asked, and gradients agree with finite differences.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use helixlab_model::{
    Capture, Edit, ForwardRequest, HookPoint, Intervention, Logits, Model, Positions,
};

fn logits(model: &Model, seqs: &[Vec<u32>], req: ForwardRequest) -> Tensor {
    let batch = model.batch(seqs).unwrap();
    model
        .forward(&batch, &req.logits(Logits::All))
        .unwrap()
        .logits
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

#[test]
fn replacing_a_site_with_its_own_value_changes_nothing() {
    for case in ["gpt2_tied", "llama_gqa_llama3", "neox_parallel"] {
        let model = load(case);
        let seqs = sequences(&reference(case));
        let batch = model.batch(&seqs).unwrap();
        let clean = logits(&model, &seqs, ForwardRequest::new());
        for (hook, positions) in [
            (HookPoint::ResidPre(1), Positions::At(vec![-1, -3])),
            (HookPoint::AttnZ(0), Positions::last()),
            (HookPoint::MlpPost(1), Positions::All),
        ] {
            let own = model
                .forward(
                    &batch,
                    &ForwardRequest::new().capture(hook, positions.clone()),
                )
                .unwrap()
                .captures
                .remove(0);
            let patched = logits(
                &model,
                &seqs,
                ForwardRequest::new().replace(hook, positions, own),
            );
            assert_eq!(max_diff(&clean, &patched), 0.0, "{case}: {hook}");
        }
    }
}

#[test]
fn resuming_at_a_layer_equals_the_full_forward() {
    for case in ["gptj_rotary_partial", "llama_gqa_llama3", "gpt2_tied"] {
        let model = load(case);
        let seqs = sequences(&reference(case));
        let batch = model.batch(&seqs).unwrap();
        let full = logits(&model, &seqs, ForwardRequest::new());
        for layer in 0..=model.config().n_layers {
            let hook = if layer < model.config().n_layers {
                HookPoint::ResidPre(layer)
            } else {
                HookPoint::ResidPost(layer - 1)
            };
            let resid = model
                .forward(&batch, &ForwardRequest::new().capture(hook, Positions::All))
                .unwrap()
                .captures
                .remove(0);
            let out = model
                .forward(
                    &batch,
                    &ForwardRequest::new()
                        .resume(layer, resid)
                        .logits(Logits::All),
                )
                .unwrap();
            assert_eq!(out.layers_run, layer..model.config().n_layers);
            assert_eq!(
                max_diff(&full, out.logits.as_ref().unwrap()),
                0.0,
                "{case} at {layer}"
            );
        }
    }
}

#[test]
fn a_forward_stops_after_the_last_layer_it_needs() {
    let model = load("neox_sequential");
    let seqs = sequences(&reference("neox_sequential"));
    let batch = model.batch(&seqs).unwrap();
    let early = model
        .forward(
            &batch,
            &ForwardRequest::new().capture(HookPoint::ResidMid(0), Positions::last()),
        )
        .unwrap();
    assert_eq!(early.layers_run, 0..1);
    assert!(early.logits.is_none());
    let full = model
        .forward(
            &batch,
            &ForwardRequest::new()
                .capture(HookPoint::ResidMid(0), Positions::last())
                .logits(Logits::Last),
        )
        .unwrap();
    assert_eq!(full.layers_run, 0..2);
    assert_eq!(max_diff(&early.captures[0], &full.captures[0]), 0.0);
    let embed_only = model
        .forward(
            &batch,
            &ForwardRequest::new().capture(HookPoint::Embed, Positions::All),
        )
        .unwrap();
    assert_eq!(embed_only.layers_run, 0..0);
    // Block 1's input is block 0's output: block 1 is not run for it.
    let input_only = model
        .forward(
            &batch,
            &ForwardRequest::new()
                .capture(HookPoint::ResidPre(1), Positions::last())
                .capture(HookPoint::ResidPre(0), Positions::last()),
        )
        .unwrap();
    assert_eq!(input_only.layers_run, 0..1);
    let post = model
        .forward(
            &batch,
            &ForwardRequest::new().capture(HookPoint::ResidPost(0), Positions::last()),
        )
        .unwrap();
    assert_eq!(max_diff(&input_only.captures[0], &post.captures[0]), 0.0);
}

#[test]
fn patching_every_position_at_layer_0_reproduces_the_corrupt_run() {
    let model = load("gptj_rotary_partial");
    let clean = vec![vec![5u32, 17, 120, 33, 121]];
    let corrupt = vec![vec![5u32, 42, 120, 33, 121]];
    let corrupt_batch = model.batch(&corrupt).unwrap();
    let corrupt_resid = model
        .forward(
            &corrupt_batch,
            &ForwardRequest::new().capture(HookPoint::ResidPre(0), Positions::All),
        )
        .unwrap()
        .captures
        .remove(0);
    let patched = logits(
        &model,
        &clean,
        ForwardRequest::new().replace(HookPoint::ResidPre(0), Positions::All, corrupt_resid),
    );
    let corrupt_logits = logits(&model, &corrupt, ForwardRequest::new());
    let clean_logits = logits(&model, &clean, ForwardRequest::new());
    assert_eq!(max_diff(&patched, &corrupt_logits), 0.0);
    assert!(
        max_diff(&patched, &clean_logits) > 1e-2,
        "the prompts must differ"
    );
}

#[test]
fn head_and_neuron_edits_touch_only_what_they_name() {
    let model = load("llama_gqa_llama3");
    let seqs = sequences(&reference("llama_gqa_llama3"));
    let batch = model.batch(&seqs).unwrap();
    let (b, h, d) = (seqs.len(), model.config().n_heads, model.config().d_head);
    let z = HookPoint::AttnZ(1);
    let before = model
        .forward(&batch, &ForwardRequest::new().capture(z, Positions::All))
        .unwrap()
        .captures
        .remove(0);
    let zeros = Tensor::zeros((b, 1, 1, d), DType::F32, &Device::Cpu).unwrap();
    let req = ForwardRequest::new()
        .intervene(Intervention {
            hook: z,
            positions: Positions::last(),
            index: Some(vec![2]),
            edit: Edit::Replace,
            value: zeros,
        })
        .capture(z, Positions::All);
    let after = model.forward(&batch, &req).unwrap().captures.remove(0);
    let t = batch.seq_len;
    let diff = (&after - &before).unwrap().abs().unwrap();
    // Only (every sequence, last position, head 2) changed, and it is now zero.
    let changed = diff.narrow(1, t - 1, 1).unwrap().narrow(2, 2, 1).unwrap();
    assert!(max_abs(&changed) > 0.0);
    assert_eq!(
        max_abs(&after.narrow(1, t - 1, 1).unwrap().narrow(2, 2, 1).unwrap()),
        0.0
    );
    let total = diff.sum_all().unwrap().to_scalar::<f32>().unwrap();
    let local = changed.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(
        (total - local).abs() < 1e-6,
        "other heads or positions changed"
    );
    assert_eq!(after.dims(), &[b, t, h, d]);

    // Adding to two neurons at one position.
    let post = HookPoint::MlpPost(0);
    let base = model
        .forward(
            &batch,
            &ForwardRequest::new().capture(post, Positions::At(vec![0])),
        )
        .unwrap()
        .captures
        .remove(0);
    let delta = Tensor::ones((b, 1, 2), DType::F32, &Device::Cpu).unwrap();
    let req = ForwardRequest::new()
        .intervene(Intervention {
            hook: post,
            positions: Positions::At(vec![0]),
            index: Some(vec![3, 7]),
            edit: Edit::Add,
            value: delta,
        })
        .capture(post, Positions::At(vec![0]));
    let added = model.forward(&batch, &req).unwrap().captures.remove(0);
    let diff = (added - base)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for row in diff {
        for (i, v) in row.iter().enumerate() {
            let want = if i == 3 || i == 7 { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-6, "neuron {i}: {v}");
        }
    }
}

/// Central differences in f32 on a few neurons, against the autograd gradient; an independent
/// check beside the HF parity of gradients.
#[test]
fn gradients_agree_with_finite_differences() {
    let model = load("gptj_rotary_partial");
    let seqs = sequences(&reference("gptj_rotary_partial"));
    let batch = model.batch(&seqs).unwrap();
    let (b, vocab) = (seqs.len(), model.config().vocab_size);
    let target = Tensor::from_vec(
        (0..b * vocab)
            .map(|i| if i % vocab == 11 { 1f32 } else { 0.0 })
            .collect(),
        (b, vocab),
        &Device::Cpu,
    )
    .unwrap();
    let hook = HookPoint::MlpPost(0);
    let site = Capture {
        hook,
        positions: Positions::last(),
    };
    let t2 = target.clone();
    let (_, grads) = model
        .forward_with_grad(
            &batch,
            &ForwardRequest::new().logits(Logits::Last),
            &[site],
            move |o| (o.logits.as_ref().unwrap() * &t2)?.sum_all(),
        )
        .unwrap();
    let g = grads[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d_mlp = model.config().d_mlp;
    let eps = 1e-2f32;
    let metric = |neuron: usize, step: f32| -> f32 {
        let value = Tensor::full(step, (b, 1, 1), &Device::Cpu).unwrap();
        let req = ForwardRequest::new()
            .intervene(Intervention {
                hook,
                positions: Positions::last(),
                index: Some(vec![neuron]),
                edit: Edit::Add,
                value,
            })
            .logits(Logits::Last);
        let l = model.forward(&batch, &req).unwrap().logits.unwrap();
        (l * &target)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    for neuron in [0, 5, 77, d_mlp - 1] {
        // Perturbing one neuron in every sequence at once sums the per-sequence gradients.
        let fd = (metric(neuron, eps) - metric(neuron, -eps)) / (2.0 * eps);
        let ad: f32 = (0..b).map(|s| g[s * d_mlp + neuron]).sum();
        assert!(
            (fd - ad).abs() < 2e-3 + 1e-2 * ad.abs(),
            "neuron {neuron}: fd {fd} vs autograd {ad}"
        );
    }
}

#[test]
fn sharing_prefixes_gives_the_plain_forward() {
    for case in [
        "gpt2_tied",
        "gptj_rotary_partial",
        "llama_gqa_llama3",
        "neox_parallel",
        "neox_sequential",
        "qwen2_bias_window",
        "mistral_window",
        "gemma2_softcap",
    ] {
        let model = load(case);
        let cfg = model.config().clone();
        let vocab = cfg.vocab_size as u32;
        // 12 sequences of 7 tokens: 3 distinct 3-token prefixes, then differing tails.
        let seqs: Vec<Vec<u32>> = (0..12u32)
            .map(|i| {
                let p = i % 3;
                vec![
                    (p * 7 + 1) % vocab,
                    (p * 11 + 2) % vocab,
                    5 % vocab,
                    (i * 13 + 3) % vocab,
                    (i * 17 + 4) % vocab,
                    6 % vocab,
                    (i * 5 + 7) % vocab,
                ]
            })
            .collect();
        assert_eq!(
            helixlab_model::shared_prefix_split(&seqs),
            Some(3),
            "{case}"
        );
        let last = cfg.n_layers - 1;
        let mut req = ForwardRequest::new()
            .capture(HookPoint::ResidPre(0), Positions::At(vec![-1, 0, 2, -4]))
            .capture(HookPoint::AttnK(0), Positions::All)
            .capture(HookPoint::AttnZ(last), Positions::At(vec![1, -2]))
            .capture(HookPoint::MlpPost(last), Positions::last())
            .logits(Logits::Last);
        for l in 0..cfg.n_layers {
            req = req.capture(HookPoint::ResidPre(l), Positions::At(vec![0, 3, -1]));
        }
        let plain = model.forward(&model.batch(&seqs).unwrap(), &req).unwrap();
        let shared = model.forward_shared_prefix(&seqs, 3, &req).unwrap();
        assert_eq!(plain.captures.len(), shared.captures.len());
        for (i, (a, b)) in plain.captures.iter().zip(&shared.captures).enumerate() {
            assert_eq!(a.dims(), b.dims(), "{case}: capture {i}");
            let scale = max_abs(a).max(1.0);
            assert!(
                max_diff(a, b) <= 1e-5 * scale,
                "{case}: capture {i} differs by {}",
                max_diff(a, b)
            );
        }
        let (a, b) = (plain.logits.unwrap(), shared.logits.unwrap());
        assert!(
            max_diff(&a, &b) <= 1e-4,
            "{case}: logits differ by {}",
            max_diff(&a, &b)
        );
        // Read only at layer inputs: the same plan, so the same blocks run.
        let inputs = ForwardRequest::new().capture(HookPoint::ResidPre(last), Positions::last());
        let plain = model
            .forward(&model.batch(&seqs).unwrap(), &inputs)
            .unwrap();
        let shared = model.forward_shared_prefix(&seqs, 2, &inputs).unwrap();
        assert_eq!(plain.layers_run, shared.layers_run);
        assert!(
            max_diff(&plain.captures[0], &shared.captures[0]) <= 1e-4,
            "{case}"
        );
    }
}

#[test]
fn the_shared_prefix_forward_refuses_what_it_cannot_do() {
    let model = load("gpt2_tied");
    let seqs = vec![vec![1, 2, 3], vec![1, 2, 4]];
    let err = |req: ForwardRequest, split: usize| {
        model
            .forward_shared_prefix(&seqs, split, &req)
            .unwrap_err()
            .to_string()
    };
    assert!(err(ForwardRequest::new(), 3).contains("split 3"));
    assert!(err(
        ForwardRequest::new().capture(HookPoint::AttnPattern(0), Positions::last()),
        2
    )
    .contains("blocks.0.attn.hook_pattern"));
    assert!(err(ForwardRequest::new().logits(Logits::All), 2).contains("last-position"));
    assert!(model
        .forward_shared_prefix(&[vec![1, 2], vec![1, 2, 3]], 1, &ForwardRequest::new())
        .unwrap_err()
        .to_string()
        .contains("differ in length"));
}

/// Per-sequence positions (`Positions::Each`, where a multi-token operand's tokens are): a
/// capture equals the plain forward's activation at the index each sequence names, in a ragged
/// batch; an intervention at per-sequence positions equals each prompt run alone with its own
/// positions.
#[test]
fn per_sequence_positions_address_each_prompt() {
    for case in ["gpt2_tied", "llama_gqa_llama3", "gemma2_softcap"] {
        let model = load(case);
        let vocab = model.config().vocab_size as u32;
        let seqs: Vec<Vec<u32>> = [7usize, 4, 6]
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                (0..n as u32)
                    .map(|i| (11 * s as u32 + 5 * i + 2) % vocab)
                    .collect()
            })
            .collect();
        // Mixed spellings: from the end and from the first real token.
        let per = vec![vec![-3, 1], vec![0, -1], vec![4, -5]];
        let batch = model.batch(&seqs).unwrap();
        let hook = HookPoint::ResidPost(0);
        let out = model
            .forward(
                &batch,
                &ForwardRequest::new()
                    .capture(hook, Positions::All)
                    .capture(hook, Positions::Each(per.clone())),
            )
            .unwrap();
        let (all, each) = (&out.captures[0], &out.captures[1]);
        assert_eq!(each.dims()[..2], [3, 2]);
        for (s, ps) in per.iter().enumerate() {
            for (j, &p) in ps.iter().enumerate() {
                let want = all.get(s).unwrap().get(batch.index(s, p).unwrap()).unwrap();
                let got = each.get(s).unwrap().get(j).unwrap();
                assert_eq!(max_diff(&want, &got), 0.0, "{case}: seq {s} position {p}");
            }
        }
        // Add a different vector at each sequence's own positions.
        let d = model.config().d_model;
        let delta = Tensor::randn(0f32, 1.0, (3, 2, d), &Device::Cpu).unwrap();
        let req = ForwardRequest::new().add(hook, Positions::Each(per.clone()), delta.clone());
        let batched = logits(&model, &seqs, req);
        for (s, ps) in per.iter().enumerate() {
            let one = ForwardRequest::new().add(
                hook,
                Positions::At(ps.clone()),
                delta.narrow(0, s, 1).unwrap(),
            );
            let alone = logits(&model, &seqs[s..s + 1], one);
            let n = seqs[s].len();
            let row = batched.get(s).unwrap();
            let row = row.narrow(0, batched.dim(1).unwrap() - n, n).unwrap();
            let d = max_diff(&row, &alone.get(0).unwrap());
            assert!(
                d < 1e-4,
                "{case}: sequence {s} differs from its own forward by {d}"
            );
        }
        let plain = logits(&model, &seqs, ForwardRequest::new());
        assert!(
            max_diff(&plain, &batched) > 1e-2,
            "{case}: the edit did nothing"
        );
        // A sequence without its list, or with a list of another length, is refused.
        let short = Positions::Each(vec![vec![0, 1], vec![0]]);
        let e = model
            .forward(&batch, &ForwardRequest::new().capture(hook, short))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 sequences in a batch of 3"), "{e}");
        let ragged = Positions::Each(vec![vec![0, 1], vec![0], vec![1, 2]]);
        let e = model
            .forward(&batch, &ForwardRequest::new().capture(hook, ragged))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sequence 1 has 1 positions"), "{e}");
    }
}
