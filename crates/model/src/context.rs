//! The state a forward pass carries through the layers: which hooks are live, and applying
//! interventions and captures where the architecture code calls [`HookCtx::hook`].

use std::collections::HashSet;

use candle_core::{Device, Tensor};

use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::hook::HookPoint;
use crate::request::{Capture, Edit, Intervention, Positions};

/// Live hooks of one forward.
pub struct HookCtx<'a> {
    batch: &'a Batch,
    captures: &'a [Capture],
    interventions: &'a [Intervention],
    live: HashSet<HookPoint>,
    /// Captured tensors, by capture index.
    pub captured: Vec<Option<Tensor>>,
    /// Use plain (autograd-recorded) ops instead of fused kernels.
    pub differentiable: bool,
    /// Every block's keys and values `(b, t, kv_heads, d)`, when a shared-prefix forward
    /// records them.
    pub(crate) kv_record: Option<Vec<(Tensor, Tensor)>>,
    /// Hooks see the last position only ([`HookCtx::narrow_to_last`]).
    last_only: bool,
    device: Device,
}

impl<'a> HookCtx<'a> {
    pub(crate) fn new(
        batch: &'a Batch,
        captures: &'a [Capture],
        interventions: &'a [Intervention],
        differentiable: bool,
        device: &Device,
    ) -> Self {
        let live = captures
            .iter()
            .map(|c| c.hook)
            .chain(interventions.iter().map(|i| i.hook))
            .collect();
        Self {
            batch,
            captures,
            interventions,
            live,
            captured: vec![None; captures.len()],
            differentiable,
            kv_record: None,
            last_only: false,
            device: device.clone(),
        }
    }

    /// Later hooks see the last position alone (the block that starts runs that position
    /// only); their positions, checked to name it, index that one row.
    pub(crate) fn narrow_to_last(&mut self) {
        self.last_only = true;
    }

    /// Positions per sequence of the tensors hooks see now.
    fn seq_len(&self) -> usize {
        match self.last_only {
            true => 1,
            false => self.batch.seq_len,
        }
    }

    /// The row of `position` of sequence `seq` in the tensors hooks see now.
    fn index(&self, seq: usize, position: i64) -> Result<usize> {
        let i = self.batch.index(seq, position)?;
        Ok(if self.last_only { 0 } else { i })
    }

    /// Whether anything reads or changes `hook` (lets callers skip layout work).
    pub fn is_live(&self, hook: HookPoint) -> bool {
        self.live.contains(&hook)
    }

    /// Flat row indices (into `(b * t)`) of `positions`, sequence-major.
    /// Flat `(b * t)` row indices of `positions` (not `All`), sequence by sequence.
    fn rows(&self, positions: &Positions) -> Result<Tensor> {
        let t = self.seq_len();
        let b = self.batch.size();
        if let Positions::Each(per) = positions {
            if per.len() != b {
                return Err(ModelError::BadRequest(format!(
                    "per-sequence positions for {} sequences in a batch of {b}",
                    per.len()
                )));
            }
            let n = per.first().map_or(0, Vec::len);
            if let Some(s) = per.iter().position(|p| p.len() != n) {
                return Err(ModelError::BadRequest(format!(
                    "sequence {s} has {} positions, sequence 0 has {n}: every sequence needs \
                     as many",
                    per[s].len()
                )));
            }
        }
        let n = positions.count(t);
        let mut rows = Vec::with_capacity(b * n);
        for s in 0..b {
            for &p in positions.of(s).expect("not All") {
                rows.push((s * t + self.index(s, p)?) as u32);
            }
        }
        Ok(Tensor::from_vec(rows, b * n, &self.device)?)
    }

    /// Runs the interventions, then the captures, registered at `hook` on `x: (b, t, ...)`.
    pub fn hook(&mut self, hook: HookPoint, x: Tensor) -> Result<Tensor> {
        if !self.live.contains(&hook) {
            return Ok(x);
        }
        let mut x = x;
        for iv in self.interventions.iter().filter(|i| i.hook == hook) {
            x = self.intervene(&x, iv)?;
        }
        for (i, c) in self.captures.iter().enumerate() {
            if c.hook == hook {
                self.captured[i] = Some(match &c.positions {
                    Positions::All => x.clone(),
                    ps => {
                        let dims = x.dims().to_vec();
                        let flat = x.flatten_to(1)?;
                        let picked = flat.index_select(&self.rows(ps)?, 0)?;
                        let mut shape = vec![dims[0], ps.count(dims[1])];
                        shape.extend_from_slice(&dims[2..]);
                        picked.reshape(shape)?
                    }
                });
            }
        }
        Ok(x)
    }

    fn intervene(&self, x: &Tensor, iv: &Intervention) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (b, t) = (dims[0], dims[1]);
        // A position listed twice (or by two names, -1 and t - 1) would be edited twice.
        let checked = if matches!(iv.positions, Positions::At(_)) {
            1
        } else {
            b
        };
        for s in 0..checked {
            let Some(ps) = iv.positions.of(s) else { break };
            let mut seen = HashSet::new();
            for &p in ps {
                if !seen.insert(self.index(s, p)?) {
                    return Err(ModelError::BadRequest(format!(
                        "intervention at {}: position {p} of sequence {s} is listed twice",
                        iv.hook
                    )));
                }
            }
        }
        let n_pos = iv.positions.count(t);
        let per_token = &dims[2..];
        let mut expected = vec![b, n_pos];
        expected.extend_from_slice(per_token);
        if let Some(ix) = &iv.index {
            if per_token.is_empty() {
                return Err(ModelError::BadRequest(format!(
                    "intervention at {}: index given but the hook has no per-token dimension",
                    iv.hook
                )));
            }
            if let Some(bad) = ix.iter().find(|&&i| i >= per_token[0]) {
                return Err(ModelError::BadRequest(format!(
                    "intervention at {}: index {bad} is out of range (size {})",
                    iv.hook, per_token[0]
                )));
            }
            expected[2] = ix.len();
        }
        if iv.value.dims() != expected.as_slice() {
            return Err(ModelError::BadRequest(format!(
                "intervention at {}: value has shape {:?}, expected {:?}",
                iv.hook,
                iv.value.dims(),
                expected
            )));
        }
        let value = iv.value.to_dtype(x.dtype())?;
        // Whole-tensor edits need no indexing.
        if iv.positions == Positions::All && iv.index.is_none() {
            return Ok(match iv.edit {
                Edit::Replace => value,
                Edit::Add => (x + value)?,
            });
        }
        let rows = match &iv.positions {
            Positions::All => Tensor::arange(0u32, (b * t) as u32, &self.device)?,
            ps => self.rows(ps)?,
        };
        let n = b * n_pos;
        let mut flat_shape = vec![n];
        flat_shape.extend_from_slice(&expected[2..]);
        let value = value.reshape(flat_shape)?;
        let flat = x.flatten_to(1)?;
        // A replace subtracts the current rows and adds the new value in two steps: x - x is
        // exactly zero, so the result equals the value bit for bit.
        let (remove, insert) = match (&iv.index, iv.edit) {
            (None, Edit::Replace) => (Some(flat.index_select(&rows, 0)?.neg()?), value),
            (None, Edit::Add) => (None, value),
            (Some(ix), edit) => {
                let ix = Tensor::from_vec(
                    ix.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    ix.len(),
                    &self.device,
                )?;
                let mut row_shape = vec![n];
                row_shape.extend_from_slice(per_token);
                let zeros = Tensor::zeros(row_shape, x.dtype(), &self.device)?;
                let remove = if edit == Edit::Replace {
                    let cur = flat.index_select(&rows, 0)?.index_select(&ix, 1)?;
                    Some(zeros.index_add(&ix, &cur.neg()?, 1)?)
                } else {
                    None
                };
                (remove, zeros.index_add(&ix, &value, 1)?)
            }
        };
        let mut flat = flat;
        if let Some(r) = remove {
            flat = flat.index_add(&rows, &r, 0)?;
        }
        flat = flat.index_add(&rows, &insert, 0)?;
        Ok(flat.reshape(dims)?)
    }
}
