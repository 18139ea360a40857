//! The last-token forward over a cached prefix ([`Model::forward_last`]) against whole-prompt
//! forwards with the same request, for every causal architecture: a neuron replaced at the
//! last token after resuming at a middle block, the logits and a later capture, within 1e-5 of
//! the largest |value|; requests that touch an earlier position are refused.

use helixlab_model::{
    Edit, ForwardRequest, HookPoint, Intervention, Logits, Model, Positions, Tensor,
};

mod common;

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs(&(a - b).unwrap()) / common::max_abs(b).max(1e-6)
}

fn request(model: &Model, l: usize, b: usize, resid: Tensor) -> ForwardRequest {
    let last = model.config().n_layers - 1;
    ForwardRequest::new()
        .logits(Logits::Last)
        .intervene(Intervention {
            hook: HookPoint::MlpPost(l),
            positions: Positions::last(),
            index: Some(vec![1, 3]),
            edit: Edit::Replace,
            value: Tensor::from_vec([0.7f32, -1.3].repeat(b), (b, 1, 2), model.device()).unwrap(),
        })
        .capture(HookPoint::ResidPost(last), Positions::last())
        .resume(l, resid)
}

#[test]
fn the_last_token_over_its_cached_prefix_equals_the_whole_prompt() {
    for case in [
        "gpt2_tied",
        "gptj_rotary_partial",
        "neox_parallel",
        "neox_sequential",
        "qwen2_bias_window",
        "mistral_window",
        "gemma2_softcap",
        "llama_gqa_llama3",
    ] {
        let model = common::load(case);
        let vocab = model.config().vocab_size as u32;
        let seqs: Vec<Vec<u32>> = (0..3)
            .map(|s| (0..6).map(|i| (7 * s + 5 * i + 1) % vocab).collect())
            .collect();
        let batch = model.batch(&seqs).unwrap();
        let cache = model
            .last_token_cache(&batch)
            .unwrap()
            .expect("equal lengths");
        let l = model.config().n_layers / 2;
        let whole = model
            .forward(
                &batch,
                &ForwardRequest::new().capture(HookPoint::ResidPre(l), Positions::All),
            )
            .unwrap();
        let resid = whole.capture(HookPoint::ResidPre(l)).unwrap();
        let want = model
            .forward(&batch, &request(&model, l, 3, resid.clone()))
            .unwrap();
        let t = batch.seq_len;
        let got = model
            .forward_last(
                &cache,
                &request(&model, l, 3, resid.narrow(1, t - 1, 1).unwrap()),
            )
            .unwrap();
        let d_logits = max_rel(got.logits.as_ref().unwrap(), want.logits.as_ref().unwrap());
        let d_resid = max_rel(&got.captures[0], &want.captures[0]);
        assert!(
            d_logits <= 1e-5 && d_resid <= 1e-5,
            "{case}: {d_logits:e} {d_resid:e}"
        );
        // The patch matters, so agreeing means something.
        let plain = model
            .forward(&batch, &ForwardRequest::new().logits(Logits::Last))
            .unwrap();
        let moved = max_rel(
            plain.logits.as_ref().unwrap(),
            want.logits.as_ref().unwrap(),
        );
        assert!(
            moved > 1e-4,
            "{case}: the patch moved the logits by {moved:e} only"
        );
        // Not the last position: refused.
        let bad = ForwardRequest::new().capture(HookPoint::ResidPost(0), Positions::All);
        assert!(model.forward_last(&cache, &bad).is_err(), "{case}");
    }
    // A padded batch has no cache (whole prompts run instead).
    let model = common::load("gpt2_tied");
    let ragged = model.batch(&[vec![1, 2, 3], vec![4, 5]]).unwrap();
    assert!(model.last_token_cache(&ragged).unwrap().is_none());
}
