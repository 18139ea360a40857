//! Path patching between heads (the paper's Fig 29, Wang et al.'s method), run by
//! `helixlab components` for its top heads.
//!
//! For a sender head s (layer ls) and a receiver r in a later layer lr > ls: the sender's
//! corrupt output is let into the residual stream as a change Δs (its output with the corrupt z
//! minus with the clean z, at every position: one run of block ls), and reaches the logits only
//! through r. For a receiver head, r's z is recomputed from r's layer input clean + Δs (its
//! query, key and value inputs all see the sender's change) and put in place of r's clean z at
//! every position in the clean run, everything after it recomputed; the other heads and MLPs
//! never see Δs. For a receiver MLP, the MLP's input is clean + Δs with its layer's attention
//! output held at the clean value. The score is the corrupt answer's logit, patched minus
//! clean (`path_patching.parquet`, one row per pair x sender x receiver).
//!
//! Receivers are the top heads in later layers and every later MLP; answers of one token only
//! (a teacher-forced clean run would need the sender's change at the answer's positions, which
//! the corrupt prompt does not have: with answers of several tokens the table is empty).

use candle_core::{DType, Tensor};
use helixlab_model::Positions;
use helixlab_model::{Batch, Edit, ForwardRequest, HookPoint, Intervention, Logits, Model};
use helixlab_store::table::{Table, Values};

use crate::pairs::Pair;
use crate::Result;

/// Where a sender's change is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Receiver {
    /// A head: layer, head.
    Head(usize, usize),
    /// An MLP: layer.
    Mlp(usize),
}

impl Receiver {
    fn layer(self) -> usize {
        match self {
            Receiver::Head(l, _) | Receiver::Mlp(l) => l,
        }
    }
}

/// The receivers of `sender` among `heads` and the model's MLPs: everything in a later layer.
pub fn receivers_of(
    sender: (usize, usize),
    heads: &[(usize, usize)],
    n_layers: usize,
) -> Vec<Receiver> {
    let mut out: Vec<Receiver> = heads
        .iter()
        .filter(|h| h.0 > sender.0)
        .map(|&(l, h)| Receiver::Head(l, h))
        .collect();
    out.extend((sender.0 + 1..n_layers).map(Receiver::Mlp));
    out.sort();
    out
}

/// path_patching.parquet, column-wise.
#[derive(Default)]
pub struct PathRows {
    pair_id: Vec<u32>,
    sender: Vec<(usize, usize)>,
    receiver: Vec<Receiver>,
    clean_logit: Vec<f64>,
    patched_logit: Vec<f64>,
}

impl PathRows {
    /// The table.
    pub fn table(&self) -> Table {
        let kind = |r: &Receiver| match r {
            Receiver::Head(..) => "head",
            Receiver::Mlp(_) => "mlp",
        };
        Table::new()
            .u32s("pair_id", self.pair_id.iter().copied())
            .u32s("sender_layer", self.sender.iter().map(|s| s.0 as u32))
            .u32s("sender_head", self.sender.iter().map(|s| s.1 as u32))
            .strs("receiver", self.receiver.iter().map(kind))
            .u32s(
                "receiver_layer",
                self.receiver.iter().map(|r| r.layer() as u32),
            )
            .column(
                "receiver_head",
                Values::OptI64(
                    self.receiver
                        .iter()
                        .map(|r| match r {
                            Receiver::Head(_, h) => Some(*h as i64),
                            Receiver::Mlp(_) => None,
                        })
                        .collect(),
                ),
            )
            .f64s("clean_logit", self.clean_logit.iter().copied())
            .f64s("patched_logit", self.patched_logit.iter().copied())
            .f64s(
                "logit_diff",
                self.patched_logit
                    .iter()
                    .zip(&self.clean_logit)
                    .map(|(p, c)| p - c),
            )
    }
}

fn logits(t: &Option<Tensor>) -> Result<Vec<Vec<f32>>> {
    Ok(t.as_ref()
        .expect("asked for logits")
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?)
}

/// Path patching of one batch: `clean` and `corrupt` are the pairs' prompts (of equal lengths,
/// pair by pair), `senders` the heads whose change is sent, `heads` the candidate receivers.
pub fn path_patch_batch(
    model: &Model,
    (clean, corrupt): (&Batch, &Batch),
    chunk: &[Pair],
    senders: &[(usize, usize)],
    heads: &[(usize, usize)],
    rows: &mut PathRows,
) -> Result<()> {
    if let Some(i) = (0..chunk.len()).find(|&i| clean.lengths[i] != corrupt.lengths[i]) {
        return Err(crate::PatchError::Input(format!(
            "path patching: pair {} has a clean prompt of {} tokens and a corrupt one of {}: the \
             sender's change must be added position by position",
            chunk[i].pair_id, clean.lengths[i], corrupt.lengths[i]
        )));
    }
    let n = model.config().n_layers;
    let mut req = ForwardRequest::new().logits(Logits::Last);
    for l in 0..n {
        req = req
            .capture(HookPoint::ResidPre(l), Positions::All)
            .capture(HookPoint::AttnOut(l), Positions::All)
            .capture(HookPoint::AttnZ(l), Positions::All);
    }
    let base = model.forward(clean, &req)?;
    let base_logits = logits(&base.logits)?;
    let mut zreq = ForwardRequest::new();
    for &(l, _) in senders {
        zreq = zreq.capture(HookPoint::AttnZ(l), Positions::All);
    }
    let other = model.forward(corrupt, &zreq)?;
    let target: Vec<usize> = chunk
        .iter()
        .map(|p| p.corrupt.answer_token as usize)
        .collect();
    let resid = |l: usize| -> Result<Tensor> { Ok(base.capture(HookPoint::ResidPre(l))?.clone()) };
    for &(ls, hs) in senders {
        // The sender's change to the residual stream, every position: block ls alone with its
        // z replaced by the corrupt run's.
        let z = other.capture(HookPoint::AttnZ(ls))?.narrow(2, hs, 1)?;
        let sent = model.forward(
            clean,
            &ForwardRequest::new()
                .resume(ls, resid(ls)?)
                .intervene(Intervention {
                    hook: HookPoint::AttnZ(ls),
                    positions: Positions::All,
                    index: Some(vec![hs]),
                    edit: Edit::Replace,
                    value: z,
                })
                .capture(HookPoint::AttnOut(ls), Positions::All),
        )?;
        let delta =
            (sent.capture(HookPoint::AttnOut(ls))? - base.capture(HookPoint::AttnOut(ls))?)?;
        for r in receivers_of((ls, hs), heads, n) {
            let lr = r.layer();
            // What the receiver computes from its layer's input with the change added.
            let input = (resid(lr)? + &delta)?;
            let mut seen = ForwardRequest::new().resume(lr, input);
            let (hook, index) = match r {
                Receiver::Head(_, h) => (HookPoint::AttnZ(lr), Some(vec![h])),
                Receiver::Mlp(_) => {
                    seen = seen.replace(
                        HookPoint::AttnOut(lr),
                        Positions::All,
                        base.capture(HookPoint::AttnOut(lr))?.clone(),
                    );
                    (HookPoint::MlpOut(lr), None)
                }
            };
            let seen = model.forward(clean, &seen.capture(hook, Positions::All))?;
            let value = match r {
                Receiver::Head(_, h) => seen.capture(hook)?.narrow(2, h, 1)?,
                Receiver::Mlp(_) => seen.capture(hook)?.clone(),
            };
            // The clean run with only the receiver's output changed.
            let out = model.forward(
                clean,
                &ForwardRequest::new()
                    .logits(Logits::Last)
                    .resume(lr, resid(lr)?)
                    .intervene(Intervention {
                        hook,
                        positions: Positions::All,
                        index,
                        edit: Edit::Replace,
                        value,
                    }),
            )?;
            let patched = logits(&out.logits)?;
            for (i, pair) in chunk.iter().enumerate() {
                rows.pair_id.push(pair.pair_id);
                rows.sender.push((ls, hs));
                rows.receiver.push(r);
                rows.clean_logit.push(base_logits[i][target[i]] as f64);
                rows.patched_logit.push(patched[i][target[i]] as f64);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_are_the_later_heads_and_mlps() {
        let heads = [(0, 1), (1, 2), (1, 0), (2, 3)];
        assert_eq!(
            receivers_of((1, 2), &heads, 3),
            vec![Receiver::Head(2, 3), Receiver::Mlp(2)]
        );
        assert_eq!(receivers_of((2, 3), &heads, 3), vec![]);
    }
}
