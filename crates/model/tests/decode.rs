//! Greedy decoding with the key/value cache equals re-running the whole sequence at every step,
//! on every causal architecture, in a ragged batch.

mod common;

use helixlab_model::{ForwardRequest, Logits};

#[test]
fn cached_greedy_decoding_equals_whole_sequence_forwards() {
    for case in common::CASES.iter().filter(|c| **c != "bert") {
        let model = common::load(case);
        let vocab = model.config().vocab_size as u32;
        let seqs: Vec<Vec<u32>> = [5usize, 3, 7]
            .iter()
            .enumerate()
            .map(|(s, &n)| {
                (0..n as u32)
                    .map(|i| (13 * s as u32 + 7 * i + 3) % vocab)
                    .collect()
            })
            .collect();
        let steps = 6;
        let cached = model.greedy(&seqs, steps).unwrap();
        assert!(cached.iter().all(|w| w.len() == steps));
        // Step by step: the whole sequence each time, one prompt at a time.
        for (s, seq) in seqs.iter().enumerate() {
            let mut cur = seq.clone();
            for (step, &want) in cached[s].iter().enumerate() {
                let batch = model.batch(std::slice::from_ref(&cur)).unwrap();
                let logits = model
                    .forward(&batch, &ForwardRequest::new().logits(Logits::Last))
                    .unwrap()
                    .logits
                    .unwrap();
                let next = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap()[0];
                assert_eq!(want, next, "{case}: sequence {s}, step {step}");
                cur.push(next);
            }
        }
        assert!(
            cached
                .iter()
                .flatten()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 2,
            "{case}: decoding wrote one token over and over"
        );
    }
    let e = common::load("bert")
        .greedy(&[vec![1, 2]], 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to decode"), "{e}");
}
