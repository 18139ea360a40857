//! The trainable GPT-2 of the toy adder, holding its parameters under HF's names and in HF's
//! layout (`Conv1D` weights stored `(in, out)`), so the export is a plain write.
//!
//! It is written with plain candle ops on purpose: candle's fused softmax and layer-norm
//! kernels are not recorded by autograd. The inference runtime (helixlab-model) loads the
//! exported checkpoint like any HF GPT-2.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

use crate::gelu::gelu_new;

/// Sizes of the toy model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Blocks.
    pub layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Learned positions (the task sequences have 4 tokens).
    pub positions: usize,
}

/// LayerNorm epsilon (GPT-2's).
pub const LN_EPS: f64 = 1e-5;

/// A GPT-2 with trainable parameters.
pub struct TinyGpt2 {
    /// Sizes.
    pub shape: Shape,
    params: BTreeMap<String, Var>,
}

impl TinyGpt2 {
    /// GPT-2's initialisation: weights N(0, 0.02), residual projections N(0, 0.02 / sqrt(2L)),
    /// biases 0, LayerNorm weights 1; from a seeded generator, so a seed fixes the model.
    pub fn init(shape: Shape, rng: &mut StdRng) -> candle_core::Result<Self> {
        let (d, v, p) = (shape.d_model, shape.vocab, shape.positions);
        let proj_std = 0.02 / (2.0 * shape.layers as f64).sqrt();
        let mut params = BTreeMap::new();
        let mut normal = |name: String, dims: &[usize], std: f64, rng: &mut StdRng| {
            let n: usize = dims.iter().product();
            let dist = Normal::new(0.0, std).expect("positive std");
            let data: Vec<f32> = (0..n).map(|_| dist.sample(rng) as f32).collect();
            let t = Tensor::from_vec(data, dims, &Device::Cpu)?;
            params.insert(name, Var::from_tensor(&t)?);
            Ok::<(), candle_core::Error>(())
        };
        normal("transformer.wte.weight".into(), &[v, d], 0.02, rng)?;
        normal("transformer.wpe.weight".into(), &[p, d], 0.01, rng)?;
        for l in 0..shape.layers {
            let b = format!("transformer.h.{l}");
            normal(format!("{b}.attn.c_attn.weight"), &[d, 3 * d], 0.02, rng)?;
            normal(format!("{b}.attn.c_proj.weight"), &[d, d], proj_std, rng)?;
            normal(format!("{b}.mlp.c_fc.weight"), &[d, 4 * d], 0.02, rng)?;
            normal(format!("{b}.mlp.c_proj.weight"), &[4 * d, d], proj_std, rng)?;
        }
        normal("lm_head.weight".into(), &[v, d], 0.02, rng)?;
        let mut constant = |name: String, n: usize, value: f32| -> candle_core::Result<()> {
            let t = Tensor::full(value, n, &Device::Cpu)?;
            params.insert(name, Var::from_tensor(&t)?);
            Ok(())
        };
        for l in 0..shape.layers {
            let b = format!("transformer.h.{l}");
            for ln in ["ln_1", "ln_2"] {
                constant(format!("{b}.{ln}.weight"), d, 1.0)?;
                constant(format!("{b}.{ln}.bias"), d, 0.0)?;
            }
            constant(format!("{b}.attn.c_attn.bias"), 3 * d, 0.0)?;
            constant(format!("{b}.attn.c_proj.bias"), d, 0.0)?;
            constant(format!("{b}.mlp.c_fc.bias"), 4 * d, 0.0)?;
            constant(format!("{b}.mlp.c_proj.bias"), d, 0.0)?;
        }
        constant("transformer.ln_f.weight".into(), d, 1.0)?;
        constant("transformer.ln_f.bias".into(), d, 0.0)?;
        Ok(Self { shape, params })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("parameter {name} is created by init"))
            .as_tensor()
    }

    /// Every parameter, for the optimiser.
    pub fn vars(&self) -> Vec<Var> {
        self.params.values().cloned().collect()
    }

    /// Parameters by HF name, for export.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    }

    /// Number of scalars.
    pub fn parameter_count(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm_slow(
            x,
            self.p(&format!("{prefix}.weight")),
            self.p(&format!("{prefix}.bias")),
            LN_EPS as f32,
        )
    }

    fn conv1d(&self, x2: &Tensor, prefix: &str) -> candle_core::Result<Tensor> {
        x2.matmul(self.p(&format!("{prefix}.weight")))?
            .broadcast_add(self.p(&format!("{prefix}.bias")))
    }

    /// Logits at the last position of `ids: (b, t)`, `(b, vocab)`.
    pub fn forward_last(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let (d, h) = (self.shape.d_model, self.shape.heads);
        let dh = d / h;
        let tok = self
            .p("transformer.wte.weight")
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        let mut x = tok.broadcast_add(&self.p("transformer.wpe.weight").narrow(0, 0, t)?)?;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, t, t), &Device::Cpu)?;
        for l in 0..self.shape.layers {
            let pre = format!("transformer.h.{l}");
            // Only the last position feeds the loss, so the last block computes its query,
            // attention output and MLP there alone (keys and values still see every position).
            let last_block = l + 1 == self.shape.layers;
            let tq = if last_block { 1 } else { t };
            let n = self
                .layer_norm(&x, &format!("{pre}.ln_1"))?
                .reshape((b * t, d))?;
            let qkv = self
                .conv1d(&n, &format!("{pre}.attn.c_attn"))?
                .reshape((b, t, 3, h, dh))?
                .permute((2, 0, 3, 1, 4))?;
            let (mut q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let mut m = mask.clone();
            if last_block {
                q = q.narrow(2, t - 1, 1)?;
                m = m.narrow(2, t - 1, 1)?;
                x = x.narrow(1, t - 1, 1)?;
            }
            let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?
                .broadcast_add(&m)?;
            let pattern = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let z = pattern
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((b * tq, d))?;
            let attn = self
                .conv1d(&z, &format!("{pre}.attn.c_proj"))?
                .reshape((b, tq, d))?;
            x = (x + attn)?;
            let n2 = self
                .layer_norm(&x, &format!("{pre}.ln_2"))?
                .reshape((b * tq, d))?;
            let hidden = gelu_new(&self.conv1d(&n2, &format!("{pre}.mlp.c_fc"))?)?;
            let mlp = self
                .conv1d(&hidden, &format!("{pre}.mlp.c_proj"))?
                .reshape((b, tq, d))?;
            x = (x + mlp)?;
        }
        let last = x.squeeze(1)?;
        let n = self.layer_norm(&last, "transformer.ln_f")?;
        n.matmul(&self.p("lm_head.weight").t()?)
    }

    /// The dtype of the parameters.
    pub fn dtype(&self) -> DType {
        DType::F32
    }
}
