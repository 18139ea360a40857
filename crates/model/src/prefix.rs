//! Forwards that share the computation of common prefixes.
//!
//! In a causal model a token's activations depend only on the tokens up to it, so prompts
//! that start with the same tokens (`37+45=` and `37+46=` share `37+`; an instruction before
//! every problem is shared by all of them) have identical activations over that prefix. The
//! shared-prefix forward runs each distinct prefix once, keeps its keys and values, and runs
//! only the rest of every sequence, attending over the prefix's keys first. The results are
//! the plain forward's up to float rounding (different matrix shapes; tests compare them).
//!
//! It covers what extraction and accuracy need: captures at any hook but the attention
//! pattern (whose key axis would be the suffix's), and last-position logits. No
//! interventions, no resume, no gradients, unpadded sequences of one length.

use std::collections::{HashMap, HashSet};

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::hook::HookPoint;
use crate::kv_cache::{mask_over_past, KvCache};
use crate::model::{Model, Plan, RunExtras};
use crate::request::{Capture, ForwardOutput, ForwardRequest, Logits, Positions};

/// Where to split `sequences` for [`Model::forward_shared_prefix`]: the prefix length that
/// minimises the tokens to run (each distinct prefix once, every suffix), or `None` when the
/// sequences differ in length or sharing would save less than a tenth of the tokens.
pub fn shared_prefix_split(sequences: &[Vec<u32>]) -> Option<usize> {
    let n = sequences.len();
    let len = sequences.first()?.len();
    if n < 2 || len < 2 || sequences.iter().any(|s| s.len() != len) {
        return None;
    }
    let full = n * len;
    let mut best: Option<(usize, usize)> = None;
    for split in 1..len {
        let distinct: HashSet<&[u32]> = sequences.iter().map(|s| &s[..split]).collect();
        let cost = distinct.len() * split + n * (len - split);
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, split));
        }
    }
    let (cost, split) = best?;
    (cost * 10 <= full * 9).then_some(split)
}

impl Model {
    /// Runs `sequences` (unpadded, one length) as [`Model::forward`] would, but each distinct
    /// `sequences[i][..split]` once: its keys and values are computed once and every
    /// sequence's remaining tokens attend over them. Captures come back laid out as the plain
    /// forward's (positions are of the whole sequence).
    // Long (about 170 lines) because the head and tail forwards and the re-assembly of their
    // captures must agree on the same position bookkeeping; splitting it would pass that
    // bookkeeping through several signatures.
    pub fn forward_shared_prefix(
        &self,
        sequences: &[Vec<u32>],
        split: usize,
        req: &ForwardRequest,
    ) -> Result<ForwardOutput> {
        Ok(self.shared_prefix(sequences, split, req, false, None)?.0)
    }

    /// [`Model::forward_shared_prefix`], also returning every block's keys and values over
    /// the whole sequences (the prefix's copied to every sequence that shares it), for
    /// patched forwards of the same sequences ([`Model::forward_cached`]).
    pub fn forward_shared_prefix_recording(
        &self,
        sequences: &[Vec<u32>],
        split: usize,
        req: &ForwardRequest,
    ) -> Result<(ForwardOutput, KvCache)> {
        let (out, cache) = self.shared_prefix(sequences, split, req, true, None)?;
        Ok((out, cache.expect("recorded")))
    }

    /// The shared-prefix forward, recording keys and values when `record`, through `plan`
    /// instead of the request's own when one is given.
    pub(crate) fn shared_prefix(
        &self,
        sequences: &[Vec<u32>],
        split: usize,
        req: &ForwardRequest,
        record: bool,
        plan: Option<Plan>,
    ) -> Result<(ForwardOutput, Option<KvCache>)> {
        let bad = |m: String| {
            Err(ModelError::BadRequest(format!(
                "shared-prefix forward: {m}"
            )))
        };
        let Some(len) = sequences.first().map(Vec::len) else {
            return bad("no sequences".into());
        };
        if sequences.iter().any(|s| s.len() != len) {
            return bad("the sequences differ in length".into());
        }
        if split == 0 || split >= len {
            return bad(format!(
                "split {split} is not inside sequences of {len} tokens"
            ));
        }
        if !self.config().arch.is_causal_lm() {
            return bad(format!("{} is not causal", self.config().arch.model_type()));
        }
        if !req.interventions.is_empty() || req.resume.is_some() {
            return bad("interventions and resume are not supported".into());
        }
        if req.logits == Logits::All {
            return bad("only last-position logits are supported".into());
        }
        if req
            .captures
            .iter()
            .any(|c| matches!(c.positions, Positions::Each(_)))
        {
            return bad("per-sequence positions are not supported".into());
        }
        if let Some(c) = req
            .captures
            .iter()
            .find(|c| matches!(c.hook, HookPoint::AttnPattern(_)))
        {
            return bad(format!(
                "{} cannot be captured (its key axis is split)",
                c.hook
            ));
        }
        let device = self.device().clone();
        // Distinct prefixes, and which one each sequence uses.
        let mut index: HashMap<&[u32], u32> = HashMap::new();
        let mut prefixes: Vec<Vec<u32>> = Vec::new();
        let mut owner = Vec::with_capacity(sequences.len());
        for s in sequences {
            let id = *index.entry(&s[..split]).or_insert_with(|| {
                prefixes.push(s[..split].to_vec());
                (prefixes.len() - 1) as u32
            });
            owner.push(id);
        }
        let owner = Tensor::new(owner.as_slice(), &device)?;
        // Every requested position as an index into the whole sequence.
        let absolute = |c: &Capture| -> Result<Vec<usize>> {
            match &c.positions {
                Positions::All => Ok((0..len).collect()),
                Positions::Each(_) => unreachable!("refused above"),
                Positions::At(ps) => ps
                    .iter()
                    .map(|&p| {
                        let i = if p < 0 { len as i64 + p } else { p };
                        if i < 0 || i >= len as i64 {
                            Err(ModelError::BadRequest(format!(
                                "position {p} is outside sequences of {len} tokens"
                            )))
                        } else {
                            Ok(i as usize)
                        }
                    })
                    .collect(),
            }
        };
        let wanted = req
            .captures
            .iter()
            .map(absolute)
            .collect::<Result<Vec<_>>>()?;
        let part = |lo: usize, hi: usize| -> ForwardRequest {
            let mut r = ForwardRequest::new();
            for (c, idx) in req.captures.iter().zip(&wanted) {
                let ps: Vec<i64> = idx
                    .iter()
                    .filter(|&&i| i >= lo && i < hi)
                    .map(|&i| (i - lo) as i64)
                    .collect();
                if !ps.is_empty() {
                    r = r.capture(c.hook, Positions::At(ps));
                }
            }
            r
        };
        let plan = match plan {
            Some(plan) => plan,
            None => self.plan(req, &[])?,
        };
        // The prefixes, recording keys and values through every block the request needs.
        let head_req = part(0, split);
        let head_batch = self.batch(&prefixes)?;
        let (head, kv) = self.run_recording(&head_batch, &head_req, plan)?;
        let past = kv
            .iter()
            .map(|(k, v)| Ok((k.index_select(&owner, 0)?, v.index_select(&owner, 0)?)))
            .collect::<Result<Vec<_>>>()?;
        // The rest of every sequence, at positions split.., over the prefix's keys.
        let tails: Vec<Vec<u32>> = sequences.iter().map(|s| s[split..].to_vec()).collect();
        let mut tail_batch = self.batch(&tails)?;
        for p in &mut tail_batch.position_ids {
            p.iter_mut().for_each(|x| *x += split as u32);
        }
        let mut tail_req = part(split, len);
        tail_req.logits = req.logits;
        let mask = mask_over_past(split, len - split, &device)?;
        let (tail, tail_kv) = self.run_with(
            &tail_batch,
            &tail_req,
            &[],
            false,
            RunExtras {
                plan: Some(plan),
                record_kv: record,
                past: Some((past.clone(), mask)),
            },
        )?;
        let cache = match tail_kv {
            Some(tail_kv) => {
                let kv = past
                    .iter()
                    .zip(&tail_kv)
                    .map(|((pk, pv), (k, v))| {
                        Ok((Tensor::cat(&[pk, k], 1)?, Tensor::cat(&[pv, v], 1)?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(KvCache::new(kv, self.batch(sequences)?, len))
            }
            None => None,
        };
        // Reassemble every capture in the requested position order.
        let mut head_caps = head_req.captures.iter().zip(head.captures);
        let mut tail_caps = tail_req.captures.iter().zip(tail.captures);
        let mut captures = Vec::with_capacity(req.captures.len());
        for idx in &wanted {
            let from_head = idx.iter().any(|&i| i < split);
            let from_tail = idx.iter().any(|&i| i >= split);
            let h = if from_head {
                Some(
                    head_caps
                        .next()
                        .expect("one head capture per capture with prefix positions")
                        .1
                        .contiguous()?
                        .index_select(&owner, 0)?,
                )
            } else {
                None
            };
            let t = if from_tail {
                Some(
                    tail_caps
                        .next()
                        .expect("one tail capture per capture with later positions")
                        .1,
                )
            } else {
                None
            };
            let (mut hi, mut ti) = (0usize, 0usize);
            let mut columns = Vec::with_capacity(idx.len());
            for &i in idx {
                columns.push(if i < split {
                    hi += 1;
                    h.as_ref().expect("head capture").narrow(1, hi - 1, 1)?
                } else {
                    ti += 1;
                    t.as_ref().expect("tail capture").narrow(1, ti - 1, 1)?
                });
            }
            captures.push(Tensor::cat(&columns, 1)?);
        }
        Ok((
            ForwardOutput {
                logits: tail.logits,
                captures,
                hooks: req.captures.iter().map(|c| c.hook).collect(),
                layers_run: tail.layers_run,
                positions_run: 0..len,
                last_block_last_only: tail.last_block_last_only,
            },
            cache,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_runs_the_fewest_tokens() {
        // 10 prompts per first token, 4 tokens: sharing 2 tokens runs 10*2 + 100*2 = 220.
        let seqs: Vec<Vec<u32>> = (0..100u32)
            .map(|i| vec![i / 10, 100, i % 10, 101])
            .collect();
        assert_eq!(shared_prefix_split(&seqs), Some(2));
        let distinct: Vec<Vec<u32>> = (0..100u32).map(|i| vec![i, 100, i, 101]).collect();
        assert_eq!(shared_prefix_split(&distinct), None);
        assert_eq!(shared_prefix_split(&[vec![1, 2], vec![1, 2, 3]]), None);
    }
}

#[cfg(test)]
mod grad_tests {
    use candle_core::{DType, Device, Tensor};

    use crate::hook::HookPoint;
    use crate::model::{LoadOptions, Model};
    use crate::request::{Capture, ForwardRequest, Logits, Positions};

    /// The last-position shortcut of `forward_with_grad` against the whole differentiable
    /// forward, on every causal architecture.
    #[test]
    fn last_position_gradients_equal_the_whole_backward() {
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
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/parity")
                .join(case);
            let model = Model::load(&dir, &LoadOptions::default()).unwrap();
            let cfg = model.config().clone();
            let vocab = cfg.vocab_size as u32;
            // The first 3 tokens are the same in every sequence, so the positions before the
            // last run through the shared-prefix forward.
            let seqs: Vec<Vec<u32>> = (0..5u32)
                .map(|i| {
                    (0..6u32)
                        .map(|j| {
                            if j < 3 {
                                j + 1
                            } else {
                                (i * 31 + j * 7 + 1) % vocab
                            }
                        })
                        .collect()
                })
                .collect();
            let batch = model.batch(&seqs).unwrap();
            let targets: Vec<Capture> = [
                HookPoint::MlpPost(0),
                HookPoint::ResidPre(1),
                HookPoint::AttnZ(cfg.n_layers - 1),
            ]
            .into_iter()
            .map(|hook| Capture {
                hook,
                positions: Positions::last(),
            })
            .collect();
            let w = Tensor::arange(0f32, cfg.vocab_size as f32, &Device::Cpu)
                .unwrap()
                .affine(1.0 / cfg.vocab_size as f64, -0.5)
                .unwrap();
            let metric = |o: &crate::request::ForwardOutput| {
                o.logits.as_ref().unwrap().broadcast_mul(&w)?.sum_all()
            };
            let req = ForwardRequest::new()
                .capture(HookPoint::ResidPost(0), Positions::last())
                .logits(Logits::Last);
            let (fast_out, fast) = model
                .forward_with_grad_as(&batch, &req, &targets, metric, true)
                .unwrap();
            let (slow_out, slow) = model
                .forward_with_grad_as(&batch, &req, &targets, metric, false)
                .unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let scale = |a: &Tensor| {
                a.abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .max(1e-3)
            };
            assert!(
                diff(
                    fast_out.logits.as_ref().unwrap(),
                    slow_out.logits.as_ref().unwrap()
                ) < 1e-4,
                "{case}: logits"
            );
            assert!(
                diff(&fast_out.captures[0], &slow_out.captures[0]) < 1e-4,
                "{case}"
            );
            for (t, (f, s)) in targets.iter().zip(fast.iter().zip(&slow)) {
                assert_eq!(f.dims(), s.dims(), "{case}: {}", t.hook);
                assert!(
                    scale(s) > 1e-6,
                    "{case}: {} has no gradient to compare",
                    t.hook
                );
                assert!(
                    diff(f, s) <= 1e-4 * scale(s),
                    "{case}: {} differs by {} (scale {})",
                    t.hook,
                    diff(f, s),
                    scale(s)
                );
            }
        }
    }
}
