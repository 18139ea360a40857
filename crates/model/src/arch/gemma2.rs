//! Gemma 2 (HF `modeling_gemma2.py`): the Llama module tree with
//! - RMSNorm scaled by `1 + weight`, in f32 ([`RmsNorm::load_one_plus`]), before *and after*
//!   attention and the MLP (`post_attention_layernorm` normalises the attention output, not
//!   the residual as in Llama; `pre_`/`post_feedforward_layernorm` wrap the MLP);
//! - a GeGLU MLP (`gelu_pytorch_tanh(gate) * up`; hooks as in Llama);
//! - token embeddings times sqrt(d_model), rounded to the weights' dtype as HF does;
//! - scores scaled by `query_pre_attn_scalar^-1/2` and soft-capped (`attn_logit_softcapping`),
//!   logits soft-capped (`final_logit_softcapping`);
//! - local (sliding-window) and global layers alternating, as `layer_types` says.
//!
//! Hooks: `hook_attn_out` and `hook_mlp_out` are what is added to the residual stream, after
//! the post-norms (as TransformerLens places them). Because that norm follows `o_proj` and
//! `down_proj`, one head's or one neuron's share of an output is not a linear piece of it:
//! the per-neuron directions ([`Arch::mlp_out_rows`]) are `down_proj`'s rows, before the norm.

use candle_core::{DType, Tensor};

use super::{rope, Arch};
use crate::attention::{attend, merge_heads, split_heads, Env};
use crate::batch::Batch;
use crate::config::{Activation, Fields, ModelConfig, RotaryConfig, RotaryStyle};
use crate::context::HookCtx;
use crate::error::Result;
use crate::hook::HookPoint;
use crate::ops::{activate, Embedding, Linear, RmsNorm};
use crate::rotary::Rotary;
use crate::weights::Weights;

/// The config.json fields of Gemma 2 (the shared ones are read by [`ModelConfig::from_json`]).
pub(crate) fn read_config(f: &Fields<'_>, cfg: &mut ModelConfig) -> Result<()> {
    let n_heads = cfg.n_heads;
    cfg.d_mlp = f.usize("intermediate_size")?;
    cfg.max_positions = f.opt_usize("max_position_embeddings")?;
    cfg.norm_eps = f.f64_or("rms_norm_eps", 1e-6)?;
    let act = match f.get("hidden_activation") {
        Some(_) => ("hidden_activation", f.str_or("hidden_activation", "")?),
        None => ("hidden_act", f.str_or("hidden_act", "gelu_pytorch_tanh")?),
    };
    cfg.activation = Activation::parse(act.1, &f.path, act.0)?;
    cfg.gated_mlp = true;
    cfg.n_kv_heads = f.kv_heads(n_heads)?;
    cfg.d_head = f.opt_usize("head_dim")?.unwrap_or(256);
    cfg.attention_bias = f.bool_or("attention_bias", false)?;
    cfg.mlp_bias = false;
    cfg.tie_word_embeddings = f.bool_or("tie_word_embeddings", true)?;
    let scalar = f.f64_or("query_pre_attn_scalar", 256.0)?;
    if scalar <= 0.0 {
        return Err(f.err("query_pre_attn_scalar", "must be positive"));
    }
    cfg.attention_scale = Some(scalar.powf(-0.5));
    for (field, cap) in [
        ("attn_logit_softcapping", &mut cfg.attention_softcap),
        ("final_logit_softcapping", &mut cfg.final_softcap),
    ] {
        *cap = f.opt_f64(field)?;
        if cap.is_some_and(|c| c <= 0.0) {
            return Err(f.err(field, "a soft cap must be positive"));
        }
    }
    // HF's default: layers 0, 2, 4, ... local.
    f.sliding_layers(cfg, |l| l % 2 == 0)?;
    cfg.rotary = Some(RotaryConfig {
        dim: cfg.d_head,
        theta: f.rope_f64(&["rope_theta"])?.unwrap_or(10000.0),
        style: RotaryStyle::HalfSplit,
        llama3: None,
    });
    Ok(())
}

struct Block {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    post_feedforward_layernorm: RmsNorm,
}

/// A Gemma 2 model.
pub struct Gemma2 {
    cfg: ModelConfig,
    embed_tokens: Embedding,
    /// sqrt(d_model) in the weights' dtype, as a scalar.
    embed_scale: f64,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
}

impl Gemma2 {
    /// Loads `model.*` and `lm_head.*` (or ties the head to the embedding).
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let root = w.pp("model");
        let d = cfg.d_model;
        let (qd, kvd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let ab = cfg.attention_bias;
        let eps = cfg.norm_eps;
        let embed_tokens = Embedding::load(&root.pp("embed_tokens"), cfg.vocab_size, d)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let b = root.pp("layers").pp(l);
            let norm = |name: &str| RmsNorm::load_one_plus(&b.pp(name), d, eps);
            blocks.push(Block {
                input_layernorm: norm("input_layernorm")?,
                q_proj: Linear::load(&b.pp("self_attn.q_proj"), d, qd, ab)?,
                k_proj: Linear::load(&b.pp("self_attn.k_proj"), d, kvd, ab)?,
                v_proj: Linear::load(&b.pp("self_attn.v_proj"), d, kvd, ab)?,
                o_proj: Linear::load(&b.pp("self_attn.o_proj"), qd, d, ab)?,
                post_attention_layernorm: norm("post_attention_layernorm")?,
                pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
                gate_proj: Linear::load(&b.pp("mlp.gate_proj"), d, cfg.d_mlp, false)?,
                up_proj: Linear::load(&b.pp("mlp.up_proj"), d, cfg.d_mlp, false)?,
                down_proj: Linear::load(&b.pp("mlp.down_proj"), cfg.d_mlp, d, false)?,
                post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings && !w.contains("lm_head.weight") {
            Linear::from_weight(embed_tokens.table.clone(), None)
        } else {
            Linear::load(&w.pp("lm_head"), d, cfg.vocab_size, false)?
        };
        // HF: `embed_scale.to(weight.dtype)`, a bf16 checkpoint multiplies by sqrt(d) rounded
        // to bf16 (59.866 -> 60.0 for Gemma 2 9B).
        let embed_scale = Tensor::new((d as f32).sqrt(), w.device())?
            .to_dtype(w.dtype())?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            embed_scale,
            blocks,
            norm: RmsNorm::load_one_plus(&root.pp("norm"), d, eps)?,
            lm_head,
            rotary: Rotary::new(cfg.rotary.expect("Gemma 2 config always has rotary")),
        })
    }
}

impl Arch for Gemma2 {
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor> {
        let e = (self.embed_tokens.forward(&batch.input_ids)? * self.embed_scale)?;
        ctx.hook(HookPoint::Embed, e)
    }

    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let (h, kvh) = (self.cfg.n_heads, self.cfg.n_kv_heads);
        let diff = ctx.differentiable;
        let n = blk.input_layernorm.forward(x, diff)?;
        let q = ctx.hook(
            HookPoint::AttnQ(l),
            split_heads(&blk.q_proj.forward(&n)?, h)?,
        )?;
        let k = ctx.hook(
            HookPoint::AttnK(l),
            split_heads(&blk.k_proj.forward(&n)?, kvh)?,
        )?;
        let v = ctx.hook(
            HookPoint::AttnV(l),
            split_heads(&blk.v_proj.forward(&n)?, kvh)?,
        )?;
        let (q, k) = rope(Some(&self.rotary), env, q, k)?;
        let (q, x) = (env.output_positions(&q)?, &env.output_positions(x)?);
        let z = attend(ctx, l, &q, &k, &v, env)?;
        let attn = blk.o_proj.forward(&merge_heads(&z)?)?;
        let attn_out = ctx.hook(
            HookPoint::AttnOut(l),
            blk.post_attention_layernorm.forward(&attn, diff)?,
        )?;
        let mid = ctx.hook(HookPoint::ResidMid(l), (x + attn_out)?)?;
        let n2 = blk.pre_feedforward_layernorm.forward(&mid, diff)?;
        let gate = ctx.hook(HookPoint::MlpPre(l), blk.gate_proj.forward(&n2)?)?;
        let up = ctx.hook(HookPoint::MlpPreLinear(l), blk.up_proj.forward(&n2)?)?;
        let post = ctx.hook(
            HookPoint::MlpPost(l),
            (activate(&gate, self.cfg.activation)? * up)?,
        )?;
        let down = blk.down_proj.forward(&post)?;
        let mlp_out = ctx.hook(
            HookPoint::MlpOut(l),
            blk.post_feedforward_layernorm.forward(&down, diff)?,
        )?;
        Ok((mid + mlp_out)?)
    }

    fn final_norm(&self, x: &Tensor, differentiable: bool) -> Result<Option<Tensor>> {
        self.norm.forward(x, differentiable).map(Some)
    }

    fn unembed(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let logits = self.lm_head.forward(x)?;
        Ok(Some(match self.cfg.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        }))
    }

    fn head(&self) -> Option<&Linear> {
        Some(&self.lm_head)
    }

    fn final_softcap(&self) -> Option<f64> {
        self.cfg.final_softcap
    }

    fn rotary(&self) -> Option<&Rotary> {
        Some(&self.rotary)
    }

    fn mlp_out_rows(&self, l: usize) -> &Tensor {
        self.blocks[l].down_proj.weight_t()
    }
}
