//! Patched forwards that run only the positions from the first one they change.
//!
//! In a causal model the positions before the first patched one cannot see the patch, so their
//! keys and values are the same in the clean run and in every patched run of the same prompts.
//! A clean forward that records them ([`Model::forward_recording`],
//! [`Model::forward_shared_prefix_recording`]) gives a [`KvCache`]; [`Model::forward_cached`]
//! then runs a patched request over the cached batch from the earliest position any of its
//! interventions or captures touches, attending over the cached keys and values first, and
//! from the resumed block on. For the paper's prompts (`Output ONLY a number.\n{a}+{b}=`,
//! 10 tokens with the GPT-2 BPE) an a-token patch runs 4 tokens of 10, a last-token one 1.
//! Results equal whole-prompt forwards to float rounding (tests/kv_cache.rs, every causal
//! architecture).
//!
//! Not here: padded batches (the cache does not apply; callers run whole prompts), the
//! attention pattern (its key axis would be the suffix's), gradients.

use candle_core::Tensor;

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::hook::{HookPoint, Stage};
use crate::model::{KeysValues, Model, RunExtras};
use crate::request::{ForwardOutput, ForwardRequest, Intervention, Logits, Positions};

/// Every block's keys and values over the first `cached` positions of an unpadded batch, and
/// the batch itself, to run later forwards of the same sequences from a position on.
#[derive(Clone, Debug)]
pub struct KvCache {
    kv: KeysValues,
    batch: Batch,
    cached: usize,
}

impl KvCache {
    /// The length of the cached sequences.
    pub fn seq_len(&self) -> usize {
        self.batch.seq_len
    }

    /// The batch the cache was recorded for.
    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    /// The cache over the first `n` positions only (a later forward runs from `n` at least).
    pub fn truncated(&self, n: usize) -> Result<KvCache> {
        let n = n.min(self.cached);
        Ok(KvCache {
            kv: self
                .kv
                .iter()
                .map(|(k, v)| Ok((k.narrow(1, 0, n)?, v.narrow(1, 0, n)?)))
                .collect::<Result<_>>()?,
            batch: self.batch.clone(),
            cached: n,
        })
    }

    pub(crate) fn into_keys_values(self) -> KeysValues {
        self.kv
    }

    pub(crate) fn new(kv: KeysValues, batch: Batch, cached: usize) -> Self {
        Self { kv, batch, cached }
    }
}

/// Whether the cache can hold `batch`: a causal model's unpadded sequences.
pub(crate) fn cacheable(model: &Model, batch: &Batch) -> bool {
    model.config().arch.is_causal_lm()
        && batch.seq_len > 1
        && batch.lengths.iter().all(|&l| l == batch.seq_len)
}

/// Positions `from..` of an unpadded batch, with their position ids.
pub(crate) fn batch_from(batch: &Batch, from: usize) -> Result<Batch> {
    let (b, t) = (batch.size(), batch.seq_len);
    Ok(Batch {
        input_ids: batch.input_ids.narrow(1, from, t - from)?,
        lengths: vec![t - from; b],
        position_ids: batch
            .position_ids
            .iter()
            .map(|p| p[from..].to_vec())
            .collect(),
        seq_len: t - from,
    })
}

/// Positions `..n` of an unpadded batch.
pub(crate) fn batch_until(batch: &Batch, n: usize) -> Result<Batch> {
    Ok(Batch {
        input_ids: batch.input_ids.narrow(1, 0, n)?,
        lengths: vec![n; batch.size()],
        position_ids: batch.position_ids.iter().map(|p| p[..n].to_vec()).collect(),
        seq_len: n,
    })
}

/// The additive mask of `t` queries over `p` earlier keys (all visible) and their own `t`
/// keys (causal): `(1, 1, t, p + t)`, broadcast over the batch and heads.
pub(crate) fn mask_over_past(p: usize, t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut m = vec![0f32; t * (p + t)];
    for q in 0..t {
        for k in (p + q + 1)..(p + t) {
            m[q * (p + t) + k] = f32::MIN / 2.0;
        }
    }
    Ok(Tensor::from_vec(m, (1, 1, t, p + t), device)?)
}

/// The earliest position of sequences of `t` tokens that `positions` touches (`None`: every
/// position is, or one is outside the sequence, which the whole forward reports).
fn earliest(positions: &Positions, t: usize) -> Option<usize> {
    let abs = |p: i64| {
        let i = if p < 0 { t as i64 + p } else { p };
        (0..t as i64).contains(&i).then_some(i as usize)
    };
    let all = match positions {
        Positions::All => return None,
        Positions::At(ps) => ps.iter().map(|&p| abs(p)).collect::<Option<Vec<_>>>()?,
        Positions::Each(per) => per
            .iter()
            .flatten()
            .map(|&p| abs(p))
            .collect::<Option<Vec<_>>>()?,
    };
    all.into_iter().min()
}

/// `positions` of the whole sequence as positions of its part from `from` on (the ones from
/// the end are the same).
fn shifted(positions: &Positions, from: usize) -> Positions {
    let f = |p: &i64| if *p < 0 { *p } else { p - from as i64 };
    match positions {
        Positions::All => Positions::All,
        Positions::At(ps) => Positions::At(ps.iter().map(f).collect()),
        Positions::Each(per) => {
            Positions::Each(per.iter().map(|ps| ps.iter().map(f).collect()).collect())
        }
    }
}

impl Model {
    /// [`Model::forward`], recording every block's keys and values when the batch can be
    /// cached (a causal model, unpadded sequences; else `None`, and later forwards run whole).
    /// The request must start at the embedding (no resume).
    pub fn forward_recording(
        &self,
        batch: &Batch,
        req: &ForwardRequest,
    ) -> Result<(ForwardOutput, Option<KvCache>)> {
        if req.resume.is_some() {
            return Err(ModelError::BadRequest(
                "a recording forward starts at the embedding (no resume)".into(),
            ));
        }
        if !cacheable(self, batch) {
            return Ok((self.forward(batch, req)?, None));
        }
        let (out, kv) = self.run_with(
            batch,
            req,
            &req.interventions,
            false,
            RunExtras {
                plan: None,
                record_kv: true,
                past: None,
            },
        )?;
        let kv = kv.unwrap_or_default();
        let t = batch.seq_len;
        Ok((out, Some(KvCache::new(kv, batch.clone(), t))))
    }

    /// `req` over the cached batch, running only the positions from the earliest one any
    /// intervention, capture or logit it asks for touches (the earlier ones attend from the
    /// cache), from the resumed block on. A resume residual is the whole sequence's,
    /// `(b, t, d_model)`, as for [`Model::forward`]; captures come back as from it. Where
    /// nothing can be skipped (a capture of every position, all logits, the attention
    /// pattern) the whole batch runs.
    pub fn forward_cached(&self, cache: &KvCache, req: &ForwardRequest) -> Result<ForwardOutput> {
        let t = cache.seq_len();
        let batch = &cache.batch;
        let pattern = |h: HookPoint| matches!(h, HookPoint::AttnPattern(_));
        let touched = req
            .interventions
            .iter()
            .map(|i| (i.hook, &i.positions))
            .chain(req.captures.iter().map(|c| (c.hook, &c.positions)));
        let mut from = Some(if req.logits == Logits::None { t } else { t - 1 });
        for (hook, positions) in touched {
            from = match (from, earliest(positions, t)) {
                (Some(f), Some(e)) if !pattern(hook) => Some(f.min(e)),
                _ => None,
            };
        }
        // A request that reads nothing still runs the last position (an empty tail would
        // be no forward at all).
        let from = from.unwrap_or(0).min(cache.cached).min(t - 1);
        if from == 0 {
            return self.forward(batch, req);
        }
        let tail = batch_from(batch, from)?;
        let mut tail_req = ForwardRequest {
            captures: req.captures.clone(),
            interventions: Vec::new(),
            logits: req.logits,
            resume: req.resume.clone(),
        };
        for c in &mut tail_req.captures {
            c.positions = shifted(&c.positions, from);
        }
        if let Some(r) = &mut tail_req.resume {
            if r.resid.dims3()?.1 != t {
                return Err(ModelError::BadRequest(format!(
                    "resume residual has shape {:?}, expected {t} positions",
                    r.resid.dims()
                )));
            }
            r.resid = r.resid.narrow(1, from, t - from)?;
        }
        let interventions: Vec<Intervention> = req
            .interventions
            .iter()
            .map(|i| Intervention {
                positions: shifted(&i.positions, from),
                ..i.clone()
            })
            .collect();
        let mut out = self.run_over_past(cache, from, &tail, &tail_req, &interventions)?;
        out.positions_run = from..t;
        Ok(out)
    }

    /// `req` (positions of `tail`, the cached batch from `from` on) over the first `from`
    /// cached positions' keys and values.
    pub(crate) fn run_over_past(
        &self,
        cache: &KvCache,
        from: usize,
        tail: &Batch,
        req: &ForwardRequest,
        interventions: &[Intervention],
    ) -> Result<ForwardOutput> {
        let plan = self.plan(req, interventions)?;
        let n = self.config().n_layers;
        let needed = match plan.stop {
            Stage::Final => n,
            Stage::Block(l) => l + 1,
            _ => 0,
        };
        if cache.kv.len() < needed {
            return Err(ModelError::BadRequest(format!(
                "the cache holds keys and values of {} blocks; this forward runs to block {}",
                cache.kv.len(),
                needed - 1
            )));
        }
        let past = cache
            .kv
            .iter()
            .map(|(k, v)| Ok((k.narrow(1, 0, from)?, v.narrow(1, 0, from)?)))
            .collect::<Result<Vec<_>>>()?;
        let mask = mask_over_past(from, tail.seq_len, self.device())?;
        Ok(self
            .run_with(
                tail,
                req,
                interventions,
                false,
                RunExtras {
                    plan: Some(plan),
                    record_kv: false,
                    past: Some((past, mask)),
                },
            )?
            .0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_positions_and_their_shift() {
        assert_eq!(earliest(&Positions::At(vec![-1, 3]), 10), Some(3));
        assert_eq!(earliest(&Positions::At(vec![-4]), 10), Some(6));
        assert_eq!(earliest(&Positions::All, 10), None);
        assert_eq!(earliest(&Positions::At(vec![10]), 10), None);
        assert_eq!(
            earliest(&Positions::Each(vec![vec![5], vec![7]]), 10),
            Some(5)
        );
        assert_eq!(
            shifted(&Positions::At(vec![-1, 6, 8]), 6),
            Positions::At(vec![-1, 0, 2])
        );
    }
}
