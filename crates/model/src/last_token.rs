//! Patching the last token only. In a causal model the positions before the last do not see
//! it, so when every intervention and capture is at the last token their keys and values are
//! the same in every patched run: [`Model::last_token_cache`] computes them once per batch, and
//! [`Model::forward_last`] runs the last token alone over them, from the resumed block on. The
//! results equal whole-prompt forwards to float rounding (tests/last_token.rs, every causal
//! architecture), at a fraction of the work: one token of `t` per patched forward.
//!
//! Not here: padded batches (sequences of different lengths), where the cache does not apply
//! and callers run whole prompts.

use candle_core::{DType, Tensor};

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::hook::Stage;
use crate::model::{KeysValues, Model, Plan, RunExtras};
use crate::request::{ForwardOutput, ForwardRequest, Intervention, Positions};

/// The keys and values of every block over a batch's positions before the last, and the last
/// token to run over them.
pub struct LastTokenCache {
    kv: KeysValues,
    tail: Batch,
    t: usize,
}

impl LastTokenCache {
    /// The length of the cached sequences (the last token included).
    pub fn seq_len(&self) -> usize {
        self.t
    }
}

/// An unpadded batch split into its positions before the last and its last token.
pub(crate) fn split_last(batch: &Batch) -> Result<(Batch, Batch)> {
    let (b, t) = (batch.size(), batch.seq_len);
    let head = Batch {
        input_ids: batch.input_ids.narrow(1, 0, t - 1)?,
        lengths: vec![t - 1; b],
        position_ids: batch
            .position_ids
            .iter()
            .map(|p| p[..t - 1].to_vec())
            .collect(),
        seq_len: t - 1,
    };
    let tail = Batch {
        input_ids: batch.input_ids.narrow(1, t - 1, 1)?,
        lengths: vec![1; b],
        position_ids: batch.position_ids.iter().map(|p| vec![p[t - 1]]).collect(),
        seq_len: 1,
    };
    Ok((head, tail))
}

impl Model {
    /// The cache of `batch` for [`Model::forward_last`]; `None` where it does not apply (a
    /// model that is not causal, one-token sequences, or a padded batch).
    pub fn last_token_cache(&self, batch: &Batch) -> Result<Option<LastTokenCache>> {
        let t = batch.seq_len;
        let c = self.config();
        if !c.arch.is_causal_lm() || t < 2 || batch.lengths.iter().any(|&l| l != t) {
            return Ok(None);
        }
        let (head, tail) = split_last(batch)?;
        let every_block = Plan {
            stop: Stage::Block(c.n_layers - 1),
            stop_at_input: false,
        };
        let (_, kv) = self.run_recording(&head, &ForwardRequest::new(), every_block)?;
        Ok(Some(LastTokenCache { kv, tail, t }))
    }

    /// `req` on the last token of the cached batch: every capture and intervention must be at
    /// the last position (`Positions::last()`), a resume residual is the last token's,
    /// `(b, 1, d_model)`. Captures come back `(b, 1, ...)` as from a whole-prompt forward.
    pub fn forward_last(
        &self,
        cache: &LastTokenCache,
        req: &ForwardRequest,
    ) -> Result<ForwardOutput> {
        let last = |p: &Positions| -> Result<Positions> {
            match p {
                Positions::At(ps) if ps.iter().all(|&i| i == -1 || i == cache.t as i64 - 1) => {
                    Ok(Positions::At(vec![-1; ps.len()]))
                }
                other => Err(ModelError::BadRequest(format!(
                    "a last-token forward reads and changes the last position only, not {other:?}"
                ))),
            }
        };
        let mut tail_req = req.clone();
        for c in &mut tail_req.captures {
            c.positions = last(&c.positions)?;
        }
        let interventions = req
            .interventions
            .iter()
            .map(|i| {
                Ok(Intervention {
                    positions: last(&i.positions)?,
                    ..i.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        tail_req.interventions.clear();
        let plan = self.plan(&tail_req, &interventions)?;
        let mask = Tensor::zeros((1, 1, 1, cache.t), DType::F32, self.device())?;
        Ok(self
            .run_with(
                &cache.tail,
                &tail_req,
                &interventions,
                false,
                RunExtras {
                    plan: Some(plan),
                    record_kv: false,
                    past: Some((cache.kv.clone(), mask)),
                },
            )?
            .0)
    }
}
