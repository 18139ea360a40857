//! Greedy decoding with a key/value cache: the prompts run once, recording every block's keys
//! and values, then each new token runs alone over them and adds its own. Used to read what a
//! model writes after a prompt (the accuracy stage's wrong answers); equal to re-running the
//! whole sequence at every step (tests/decode.rs, every causal architecture).
//!
//! Not here: sampling, stopping rules (callers read what they need from the tokens), hooks.

use candle_core::{DType, Tensor};

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::hook::Stage;
use crate::model::{Model, Plan, RunExtras};
use crate::request::{ForwardRequest, Logits};

impl Model {
    /// The `steps` tokens greedy decoding writes after each of `sequences` (a ragged batch is
    /// fine): argmax of the next-token logits, fed back.
    pub fn greedy(&self, sequences: &[Vec<u32>], steps: usize) -> Result<Vec<Vec<u32>>> {
        let c = self.config();
        if !c.arch.is_causal_lm() {
            return Err(ModelError::BadRequest(format!(
                "{} does not predict tokens: there is nothing to decode",
                c.arch.model_type()
            )));
        }
        let mut written = vec![Vec::with_capacity(steps); sequences.len()];
        if steps == 0 {
            return Ok(written);
        }
        let batch = self.batch(sequences)?;
        let every_block = Plan {
            stop: Stage::Final,
            stop_at_input: false,
        };
        let (out, mut kv) = self.run_recording(
            &batch,
            &ForwardRequest::new().logits(Logits::Last),
            every_block,
        )?;
        let mut next = argmax_rows(&out.logits.expect("asked for logits"))?;
        // Pads sit at the start of each cached sequence: masked for every later token.
        let t0 = batch.seq_len;
        let pads: Vec<usize> = batch.lengths.iter().map(|&l| t0 - l).collect();
        for step in 0..steps {
            for (w, &n) in written.iter_mut().zip(&next) {
                w.push(n);
            }
            if step + 1 == steps {
                break;
            }
            let keys = t0 + step + 1;
            let mut mask = vec![0f32; sequences.len() * keys];
            for (s, &p) in pads.iter().enumerate() {
                mask[s * keys..s * keys + p].fill(f32::MIN / 2.0);
            }
            let mask = Tensor::from_vec(mask, (sequences.len(), 1, 1, keys), self.device())?;
            let tail = Batch {
                input_ids: Tensor::from_vec(next.clone(), (sequences.len(), 1), self.device())?,
                lengths: vec![1; sequences.len()],
                position_ids: batch
                    .lengths
                    .iter()
                    .map(|&l| vec![(l + step) as u32])
                    .collect(),
                seq_len: 1,
            };
            let (out, new) = self.run_with(
                &tail,
                &ForwardRequest::new().logits(Logits::Last),
                &[],
                false,
                RunExtras {
                    plan: Some(Plan {
                        stop: Stage::Final,
                        stop_at_input: false,
                    }),
                    record_kv: true,
                    past: Some((kv.clone(), mask)),
                },
            )?;
            let new = new.unwrap_or_default();
            kv = kv
                .iter()
                .zip(&new)
                .map(|((k, v), (nk, nv))| {
                    Ok((Tensor::cat(&[k, nk], 1)?, Tensor::cat(&[v, nv], 1)?))
                })
                .collect::<Result<_>>()?;
            next = argmax_rows(&out.logits.expect("asked for logits"))?;
        }
        Ok(written)
    }
}

/// The argmax of each row of `(b, vocab)` logits.
fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.to_dtype(DType::F32)?.argmax(1)?.to_vec1::<u32>()?)
}
