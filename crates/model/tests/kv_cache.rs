//! Patched forwards over a recorded clean run ([`Model::forward_cached`]) against whole-prompt
//! forwards with the same request (every position of every block run), for every causal
//! architecture: a residual patched at a middle position after resuming at a middle block, a
//! neuron at the last token, a head at a different position per sequence, and the caches of
//! the plain and the shared-prefix clean forwards. Logits and later captures within 1e-5 of
//! the largest |value|.

use helixlab_model::{
    Edit, ForwardRequest, HookPoint, Intervention, KvCache, Logits, Model, Positions, Tensor,
};

mod common;

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs(&(a - b).unwrap()) / common::max_abs(b).max(1e-6)
}

/// Four patched requests, resumed at block `l` from the clean residual `resid`.
fn requests(model: &Model, l: usize, b: usize, resid: &Tensor) -> Vec<ForwardRequest> {
    let c = model.config();
    let last = c.n_layers - 1;
    let dev = model.device();
    let d = c.d_model;
    let noise = |n: usize, s: f32| {
        Tensor::from_vec(
            (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * s).collect(),
            n,
            dev,
        )
        .unwrap()
    };
    let resid_patch = ForwardRequest::new()
        .logits(Logits::Last)
        .replace(
            HookPoint::ResidPre(l),
            Positions::At(vec![5]),
            noise(b * d, 0.3).reshape((b, 1, d)).unwrap(),
        )
        .capture(HookPoint::ResidPost(last), Positions::At(vec![6, -1]))
        .resume(l, resid.clone());
    let neuron = ForwardRequest::new()
        .logits(Logits::Last)
        .intervene(Intervention {
            hook: HookPoint::MlpPost(l),
            positions: Positions::last(),
            index: Some(vec![1, 3]),
            edit: Edit::Replace,
            value: noise(b * 2, 0.5).reshape((b, 1, 2)).unwrap(),
        })
        .capture(HookPoint::ResidPost(last), Positions::last())
        .resume(l, resid.clone());
    let head = ForwardRequest::new()
        .logits(Logits::Last)
        .intervene(Intervention {
            hook: HookPoint::AttnZ(l),
            positions: Positions::Each((0..b).map(|s| vec![3 + s as i64 % 3, 7]).collect()),
            index: Some(vec![0]),
            edit: Edit::Add,
            value: noise(b * 2 * c.d_head, 2.0)
                .reshape((b, 2, 1, c.d_head))
                .unwrap(),
        })
        .resume(l, resid.clone());
    // Reads nothing in the final block but its input: that block runs the last position only.
    let resid_only = ForwardRequest::new()
        .logits(Logits::Last)
        .replace(
            HookPoint::ResidPre(l),
            Positions::At(vec![6]),
            noise(b * d, 0.2).reshape((b, 1, d)).unwrap(),
        )
        .resume(l, resid.clone());
    vec![resid_patch, neuron, head, resid_only]
}

fn check(model: &Model, case: &str, what: &str, cache: &KvCache, resid: &Tensor) {
    let l = model.config().n_layers / 2;
    let batch = cache.batch();
    let plain = model
        .forward(batch, &ForwardRequest::new().logits(Logits::Last))
        .unwrap();
    for (i, req) in requests(model, l, batch.size(), resid).iter().enumerate() {
        // The reference runs every position of every block (all logits, the last row kept):
        // neither the cache nor the final block's last-position shortcut.
        let mut want = model
            .forward(batch, &req.clone().logits(Logits::All))
            .unwrap();
        assert!(!want.last_block_last_only);
        want.logits = Some(
            want.logits
                .unwrap()
                .narrow(1, 7, 1)
                .unwrap()
                .squeeze(1)
                .unwrap(),
        );
        let got = model.forward_cached(cache, req).unwrap();
        assert_eq!(
            got.last_block_last_only,
            i == 3,
            "{case} {what} request {i}"
        );
        // From the earliest position each request touches: 5, the last, 3, 6.
        assert_eq!(
            got.positions_run,
            [5, 7, 3, 6][i]..8,
            "{case} {what} request {i}"
        );
        let d = max_rel(got.logits.as_ref().unwrap(), want.logits.as_ref().unwrap());
        assert!(
            d <= 1e-5,
            "{case} {what} request {i}: logits differ by {d:e}"
        );
        for (g, w) in got.captures.iter().zip(&want.captures) {
            assert_eq!(g.dims(), w.dims(), "{case} {what} request {i}");
            let d = max_rel(g, w);
            assert!(
                d <= 1e-5,
                "{case} {what} request {i}: capture differs by {d:e}"
            );
        }
        // The patch matters, so agreeing means something.
        let moved = max_rel(
            plain.logits.as_ref().unwrap(),
            want.logits.as_ref().unwrap(),
        );
        assert!(
            moved > 1e-4,
            "{case} request {i}: the patch moved the logits by {moved:e}"
        );
    }
}

#[test]
fn patched_forwards_over_the_clean_cache_equal_whole_prompts() {
    for case in common::CASES.iter().filter(|c| **c != "bert") {
        let model = common::load(case);
        let vocab = model.config().vocab_size as u32;
        let n = model.config().n_layers;
        // Two of the four sequences share their first 3 tokens, as the paper's prompts do.
        let seqs: Vec<Vec<u32>> = (0..4u32)
            .map(|s| {
                (0..8u32)
                    .map(|i| {
                        if i < 3 {
                            i + 1
                        } else {
                            (7 * s + 5 * i + 1) % vocab
                        }
                    })
                    .collect()
            })
            .collect();
        let clean_req = ForwardRequest::new()
            .logits(Logits::Last)
            .capture(HookPoint::ResidPre(n / 2), Positions::All);
        let batch = model.batch(&seqs).unwrap();
        let (clean, cache) = model.forward_recording(&batch, &clean_req).unwrap();
        let cache = cache.expect("unpadded sequences are cached");
        let resid = clean.capture(HookPoint::ResidPre(n / 2)).unwrap().clone();
        check(&model, case, "plain", &cache, &resid);
        let (shared, cache) = model
            .forward_shared_prefix_recording(&seqs, 3, &clean_req)
            .unwrap();
        let resid = shared.capture(HookPoint::ResidPre(n / 2)).unwrap().clone();
        check(&model, case, "shared prefix", &cache, &resid);
        // Whatever reads every position runs whole, and still agrees.
        let all = ForwardRequest::new().capture(HookPoint::ResidPost(0), Positions::All);
        let want = model.forward(&batch, &all).unwrap();
        let got = model.forward_cached(&cache, &all).unwrap();
        assert!(
            max_rel(&got.captures[0], &want.captures[0]) <= 1e-5,
            "{case}"
        );
        assert_eq!(got.positions_run, 0..8, "{case}");
        // A request that asks for nothing runs the last position alone.
        let nothing = model
            .forward_cached(&cache, &ForwardRequest::new())
            .unwrap();
        assert_eq!(nothing.positions_run, 7..8, "{case}");
    }
    // A padded batch records no cache.
    let model = common::load("gpt2_tied");
    let ragged = model.batch(&[vec![1, 2, 3], vec![4, 5]]).unwrap();
    let (_, cache) = model
        .forward_recording(&ragged, &ForwardRequest::new().logits(Logits::Last))
        .unwrap();
    assert!(cache.is_none());
}
