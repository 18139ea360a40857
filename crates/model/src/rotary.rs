//! Rotary position embeddings in the two pairings HF uses (GPT-J's interleaved
//! `rotate_every_two`, NeoX/Llama's half-split `rotate_half`), on a leading slice of each head
//! (`rotary_dim` / `rotary_pct`), with Llama 3.1's frequency rescaling.

use candle_core::{DType, Device, Tensor, D};

use crate::config::{RotaryConfig, RotaryStyle};
use crate::error::Result;

/// Precomputed inverse frequencies of one model.
#[derive(Clone, Debug)]
pub struct Rotary {
    cfg: RotaryConfig,
    inv_freq: Vec<f32>,
}

/// cos and sin of every (sequence, position) angle, shaped `(b, t, 1, rotary_dim)` so they
/// broadcast over heads.
#[derive(Clone, Debug)]
pub struct RotaryTables {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    /// Computes the frequencies as HF does (in f32), rescaled for `rope_type = "llama3"`.
    pub fn new(cfg: RotaryConfig) -> Self {
        let dim = cfg.dim;
        let mut inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / (cfg.theta as f32).powf((2 * i) as f32 / dim as f32))
            .collect();
        if let Some(s) = cfg.llama3 {
            // transformers' _compute_llama3_parameters.
            let old = s.original_max_position_embeddings as f32;
            let low_wavelen = old / s.low_freq_factor as f32;
            let high_wavelen = old / s.high_freq_factor as f32;
            let factor = s.factor as f32;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (old / wavelen - s.low_freq_factor as f32)
                        / (s.high_freq_factor as f32 - s.low_freq_factor as f32);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        Self { cfg, inv_freq }
    }

    /// The rotated width per head.
    pub fn dim(&self) -> usize {
        self.cfg.dim
    }

    /// cos/sin tables for the given positions (one row per sequence).
    pub fn tables(
        &self,
        positions: &[Vec<u32>],
        dtype: DType,
        device: &Device,
    ) -> Result<RotaryTables> {
        let b = positions.len();
        let t = positions.first().map_or(0, |p| p.len());
        let half = self.cfg.dim / 2;
        let mut cos = Vec::with_capacity(b * t * self.cfg.dim);
        let mut sin = Vec::with_capacity(b * t * self.cfg.dim);
        for row in positions {
            for &p in row {
                let angles: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
                match self.cfg.style {
                    RotaryStyle::HalfSplit => {
                        for _ in 0..2 {
                            cos.extend(angles.iter().map(|a| a.cos()));
                            sin.extend(angles.iter().map(|a| a.sin()));
                        }
                    }
                    RotaryStyle::Interleaved => {
                        for a in &angles {
                            cos.extend([a.cos(), a.cos()]);
                            sin.extend([a.sin(), a.sin()]);
                        }
                    }
                }
            }
        }
        debug_assert_eq!(cos.len(), b * t * 2 * half);
        let shape = (b, t, 1, self.cfg.dim);
        Ok(RotaryTables {
            cos: Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?,
        })
    }

    /// Rotates the leading `dim` features of every head of `x: (b, t, heads, d_head)`.
    pub fn apply(&self, x: &Tensor, tables: &RotaryTables) -> Result<Tensor> {
        let d_head = x.dim(D::Minus1)?;
        let r = self.cfg.dim;
        let x_rot = x.narrow(D::Minus1, 0, r)?;
        let rotated = match self.cfg.style {
            RotaryStyle::HalfSplit => {
                let x1 = x_rot.narrow(D::Minus1, 0, r / 2)?;
                let x2 = x_rot.narrow(D::Minus1, r / 2, r / 2)?;
                Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?
            }
            RotaryStyle::Interleaved => {
                let (b, t, h, _) = x.dims4()?;
                let pairs = x_rot.reshape((b, t, h, r / 2, 2))?;
                let even = pairs.narrow(D::Minus1, 0, 1)?;
                let odd = pairs.narrow(D::Minus1, 1, 1)?;
                Tensor::cat(&[&odd.neg()?, &even], D::Minus1)?.reshape((b, t, h, r))?
            }
        };
        let out = (x_rot.broadcast_mul(&tables.cos)? + rotated.broadcast_mul(&tables.sin)?)?;
        if r == d_head {
            Ok(out)
        } else {
            let pass = x.narrow(D::Minus1, r, d_head - r)?;
            Ok(Tensor::cat(&[&out, &pass], D::Minus1)?)
        }
    }
}
