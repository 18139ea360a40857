//! Scaled dot-product attention shared by every architecture, with the `hook_pattern` and
//! `hook_z` hook points and grouped-query heads. Projections and rotary stay in the
//! architecture files, where HF's module tree puts them.

use candle_core::{DType, Tensor};

use crate::context::HookCtx;
use crate::error::Result;
use crate::hook::HookPoint;
use crate::ops::softmax_last;
use crate::rotary::RotaryTables;

/// Per-forward tensors every block needs.
pub struct Env {
    /// Additive mask `(b, 1, t, t)`, f32.
    pub mask: Tensor,
    /// cos/sin tables for rotary models.
    pub rope: Option<RotaryTables>,
    /// Keys and values of a shared prefix, per layer, `(b, p, kv_heads, d)` (rotated); when
    /// set, `mask` covers `p + t` keys (`(b or 1, 1, t, p + t)`) and queries attend over the
    /// prefix's keys first.
    pub past: Option<Vec<(Tensor, Tensor)>>,
    /// `mask` with keys beyond the sliding window hidden too, for the layers in `local`.
    pub local_mask: Option<Tensor>,
    /// Which layers attend within the window (`ModelConfig::local_layers`).
    pub local: Vec<bool>,
    /// The scores' scale, when not 1/sqrt(d_head).
    pub scale: Option<f64>,
    /// Soft cap of the scores (`cap * tanh(score / cap)`), applied before the mask.
    pub softcap: Option<f64>,
    /// The block computes its output at the last position only (keys and values still cover
    /// every position): set for the last block a forward runs when it reads nothing else
    /// there or after it (see `Model::last_block_last_only`).
    pub last_position_only: bool,
}

impl Env {
    /// `x: (b, t, ...)` at the positions the block computes outputs for: the last one when
    /// [`Env::last_position_only`], every one otherwise. Architectures call it on the
    /// queries and the block's input once keys and values are made.
    pub fn output_positions(&self, x: &Tensor) -> Result<Tensor> {
        if !self.last_position_only {
            return Ok(x.clone());
        }
        let t = x.dim(1)?;
        Ok(x.narrow(1, t - 1, 1)?.contiguous()?)
    }
}

/// `mask` (`(b or 1, 1, t, k)`, the `t` queries being the last `t` of the `k` keys, as in every
/// mask the forward builds) with the keys more than `window - 1` before each query hidden:
/// HF's `kv_idx > q_idx - sliding_window`. Left padding keeps index distances equal to token
/// distances.
pub fn window_mask(mask: &Tensor, window: usize) -> Result<Tensor> {
    let (_, _, t, k) = mask.dims4()?;
    let mut m = vec![0f32; t * k];
    for q in 0..t {
        let at = k - t + q;
        for key in 0..k {
            if key + window <= at {
                m[q * k + key] = f32::MIN / 2.0;
            }
        }
    }
    Ok(mask.broadcast_add(&Tensor::from_vec(m, (1, 1, t, k), mask.device())?)?)
}

/// Attention of `q: (b, t, heads, d)` over `k, v: (b, t, kv_heads, d)` (already rotated);
/// returns `z: (b, t, heads, d)` after the `attn.hook_pattern` and `attn.hook_z` hooks.
/// Scores and softmax are computed in f32 whatever the model dtype, as HF does.
pub fn attend(
    ctx: &mut HookCtx,
    layer: usize,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    env: &Env,
) -> Result<Tensor> {
    let (b, queries, heads, d) = q.dims4()?;
    let kv_heads = k.dim(2)?;
    let dtype = q.dtype();
    if let Some(record) = ctx.kv_record.as_mut() {
        record.push((k.contiguous()?, v.contiguous()?));
    }
    let (k, v) = match env.past.as_ref().map(|p| &p[layer]) {
        Some((pk, pv)) => (Tensor::cat(&[pk, k], 1)?, Tensor::cat(&[pv, v], 1)?),
        None => (k.clone(), v.clone()),
    };
    let t = k.dim(1)?;
    let q = q.transpose(1, 2)?.contiguous()?;
    let (k, v) = if kv_heads == heads {
        (k.transpose(1, 2)?, v.transpose(1, 2)?)
    } else {
        // HF's repeat_kv: each key/value head serves `heads / kv_heads` consecutive queries.
        let rep = heads / kv_heads;
        let expand = |x: &Tensor| -> Result<Tensor> {
            Ok(x.transpose(1, 2)?
                .unsqueeze(2)?
                .expand((b, kv_heads, rep, t, d))?
                .reshape((b, heads, t, d))?)
        };
        (expand(&k)?, expand(&v)?)
    };
    let scores = q.matmul(&k.t()?.contiguous()?)?;
    let scale = env.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mut scores = (scores.to_dtype(DType::F32)? * scale)?;
    if let Some(cap) = env.softcap {
        scores = ((scores / cap)?.tanh()? * cap)?;
    }
    let mask = match &env.local_mask {
        Some(local) if env.local.get(layer) == Some(&true) => local,
        _ => &env.mask,
    };
    // The mask's rows are the last queries' when the block runs the last position only.
    let rows = mask.dim(2)?;
    let mask = if rows > queries {
        mask.narrow(2, rows - queries, queries)?
    } else {
        mask.clone()
    };
    let scores = scores.broadcast_add(&mask)?;
    let mut pattern = softmax_last(&scores, ctx.differentiable)?;
    let hp = HookPoint::AttnPattern(layer);
    if ctx.is_live(hp) {
        // Hook layout (b, query, head, key): positions index queries.
        pattern = ctx.hook(hp, pattern.transpose(1, 2)?)?.transpose(1, 2)?;
    }
    let z = pattern.to_dtype(dtype)?.matmul(&v.contiguous()?)?;
    ctx.hook(HookPoint::AttnZ(layer), z.transpose(1, 2)?)
}

/// Splits `(b, t, n * d)` into `(b, t, n, d)`.
pub fn split_heads(x: &Tensor, n: usize) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    Ok(x.reshape((b, t, n, w / n))?)
}

/// Merges `(b, t, n, d)` into `(b, t, n * d)`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, t, n, d) = x.dims4()?;
    Ok(x.contiguous()?.reshape((b, t, n * d))?)
}
