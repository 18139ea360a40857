//! How a patching stage scores the corrupt answer of a batch of pairs.
//!
//! The paper's metrics read the logits at the prompt's last position, where the answer's
//! first token is predicted. When every answer is one token that is all a stage runs
//! ([`AnswerScoring::is_forced`] is false; requests ask for the last position's logits). When
//! some corrupt answer is several tokens, every sequence becomes the prompt followed by that
//! answer's tokens but its last (teacher forcing), the final residual stream is read before
//! each answer token, and the log-probability of the whole answer is summed from them. The
//! prompt's last token is then no longer the sequence's last: a patch at an offset from the
//! end moves back by the tokens appended ([`AnswerScoring::shift`]).
//!
//! Not here: the metrics themselves (the patch crate's `Scores`), which answer a stage scores
//! (the corrupt one, in every experiment of the paper).

use helixlab_model::{DType, ForwardOutput, ForwardRequest, HookPoint, Logits, Model, Positions};

use crate::pairs::{log_softmax_at, log_sum_exp, Pair};
use crate::Result;

/// The corrupt answers of one batch, and how they are scored.
pub struct AnswerScoring<'m> {
    model: &'m Model,
    /// The answer of each sequence.
    answers: Vec<Vec<u32>>,
    /// Positions read per sequence (the longest answer's count; 1 when not forced).
    width: usize,
}

/// What one forward gave for each sequence of a batch.
pub struct Scored {
    /// The logits at the prompt's last position.
    pub first: Vec<Vec<f32>>,
    /// log P(answer) of each sequence, summed over the answer's tokens (teacher forced), or
    /// `None` when every answer is one token (the first position's log-softmax is all of it).
    pub logprob: Option<Vec<f64>>,
    /// log-sum-exp of each row of `first`, computed once: a patch sweep reads the clean run's
    /// log-softmax against every patched run.
    lse: Vec<f64>,
}

impl Scored {
    /// The scores of logits at the prompt's last position only (every answer one token).
    pub fn from_first(first: Vec<Vec<f32>>) -> Scored {
        let lse = first.iter().map(|row| log_sum_exp(row)).collect();
        Scored {
            first,
            logprob: None,
            lse,
        }
    }

    /// log-softmax of sequence `i`'s first logits at `token`.
    pub fn first_logprob(&self, i: usize, token: u32) -> f64 {
        self.first[i][token as usize] as f64 - self.lse[i]
    }

    /// log P(answer) of sequence `i`: the whole answer's where it was run, else the first
    /// position's log-softmax at `token`.
    pub fn logprob(&self, i: usize, token: u32) -> f64 {
        match &self.logprob {
            Some(lp) => lp[i],
            None => self.first_logprob(i, token),
        }
    }
}

impl<'m> AnswerScoring<'m> {
    /// Scoring of `answers` (one per sequence).
    pub fn new(model: &'m Model, answers: Vec<Vec<u32>>) -> Self {
        let width = answers.iter().map(Vec::len).max().unwrap_or(1).max(1);
        Self {
            model,
            answers,
            width,
        }
    }

    /// Scoring at the prompts' last position only, for runs whose answers are not scored or are
    /// one token.
    pub fn prompts(model: &'m Model) -> Self {
        Self::new(model, Vec::new())
    }

    /// Scoring of the corrupt answers of `pairs`.
    pub fn corrupt(model: &'m Model, pairs: &[Pair]) -> Self {
        Self::new(
            model,
            pairs
                .iter()
                .map(|p| p.corrupt.answer_tokens.clone())
                .collect(),
        )
    }

    /// Whether some answer is several tokens, so the answers are run after the prompts.
    pub fn is_forced(&self) -> bool {
        self.width > 1
    }

    /// The sequences to run: `prompts` as they are, or each followed by its answer but the
    /// answer's last token.
    pub fn sequences(&self, prompts: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
        if !self.is_forced() {
            return prompts;
        }
        prompts
            .into_iter()
            .zip(&self.answers)
            .map(|(mut s, a)| {
                s.extend_from_slice(&a[..a.len().saturating_sub(1)]);
                s
            })
            .collect()
    }

    fn final_hook(&self) -> HookPoint {
        HookPoint::ResidPost(self.model.config().n_layers - 1)
    }

    /// `req` asking for what [`AnswerScoring::score`] and [`AnswerScoring::final_residual`]
    /// read: the last position's logits and final residual, or the final residual stream before
    /// each answer token.
    pub fn request(&self, req: ForwardRequest) -> ForwardRequest {
        if !self.is_forced() {
            return req
                .logits(Logits::Last)
                .capture(self.final_hook(), Positions::last());
        }
        let per = self
            .answers
            .iter()
            .map(|a| {
                let n = a.len() as i64;
                (0..self.width as i64).map(|j| -n + j.min(n - 1)).collect()
            })
            .collect();
        req.capture(self.final_hook(), Positions::Each(per))
    }

    /// The prompt's last position in each sequence.
    pub fn prompt_last(&self) -> Positions {
        self.shift(&Positions::last())
    }

    /// Offsets from the prompt's end, as offsets from each sequence's end.
    pub fn shift(&self, at: &Positions) -> Positions {
        if !self.is_forced() {
            return at.clone();
        }
        Positions::Each(
            self.answers
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let ps = at.of(i).expect("offsets are listed");
                    ps.iter().map(|&o| o - (a.len() as i64 - 1)).collect()
                })
                .collect(),
        )
    }

    /// The final residual stream at the prompt's last position, `(b, d)`, from a forward asked
    /// for by [`AnswerScoring::request`].
    pub fn final_residual(&self, out: &ForwardOutput) -> Result<candle_core::Tensor> {
        Ok(out
            .capture(self.final_hook())?
            .narrow(1, 0, 1)?
            .squeeze(1)?)
    }

    /// The logits at each prompt's last position and, when forced, log P(answer) of each
    /// sequence, from a forward asked for by [`AnswerScoring::request`].
    pub fn score(&self, out: &ForwardOutput) -> Result<Scored> {
        if !self.is_forced() {
            let first = out
                .logits
                .as_ref()
                .expect("asked for logits")
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            return Ok(Scored::from_first(first));
        }
        let resid = out.capture(self.final_hook())?;
        let (b, d) = (self.answers.len(), self.model.config().d_model);
        let logits = self
            .model
            .logits_from_final_residual(&resid.reshape((b * self.width, d))?)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let first = (0..b).map(|i| logits[i * self.width].clone()).collect();
        let mut scored = Scored::from_first(first);
        // The first answer token's log-softmax reads the row's log-sum-exp `Scored` holds.
        let logprob = self
            .answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.iter()
                    .enumerate()
                    .map(|(j, &t)| match j {
                        0 => scored.first_logprob(i, t),
                        _ => log_softmax_at(&logits[i * self.width + j], t as usize),
                    })
                    .sum()
            })
            .collect();
        scored.logprob = Some(logprob);
        Ok(scored)
    }
}
