//! Llama 2/3.x (HF `modeling_llama.py`): RMSNorm, grouped-query attention, SwiGLU MLP
//! (`mlp.hook_pre` is the gate projection, `mlp.hook_pre_linear` the up projection,
//! `mlp.hook_post` = silu(gate) * up), half-split rotary with optional llama3 rescaling.
//!
//! Qwen2 (`modeling_qwen2.py`) and Mistral (`modeling_mistral.py`) are this module tree with
//! two differences, read from their configs: Qwen2 puts biases on q, k and v (not o) and
//! attends within `sliding_window` on the layers from `max_window_layers` on when
//! `use_sliding_window` is set; Mistral attends within `sliding_window` on every layer. The
//! window itself is applied by the shared attention ([`crate::attention`]).

use candle_core::Tensor;

use super::{rope, Arch};
use crate::attention::{attend, merge_heads, split_heads, Env};
use crate::batch::Batch;
use crate::config::{Activation, Architecture, Fields, ModelConfig, RotaryConfig, RotaryStyle};
use crate::context::HookCtx;
use crate::error::Result;
use crate::hook::HookPoint;
use crate::ops::{activate, Embedding, Linear, RmsNorm};
use crate::rotary::Rotary;
use crate::weights::Weights;

/// The config.json fields of this architecture (the shared ones are read by
/// [`ModelConfig::from_json`]); errors name the field.
pub(crate) fn read_config(f: &Fields<'_>, cfg: &mut ModelConfig) -> Result<()> {
    let (d_model, n_heads) = (cfg.d_model, cfg.n_heads);
    cfg.d_mlp = f.usize("intermediate_size")?;
    cfg.max_positions = f.opt_usize("max_position_embeddings")?;
    cfg.norm_eps = f.f64_or("rms_norm_eps", 1e-6)?;
    cfg.activation = Activation::parse(f.str_or("hidden_act", "silu")?, &f.path, "hidden_act")?;
    cfg.gated_mlp = true;
    cfg.n_kv_heads = f.kv_heads(n_heads)?;
    cfg.d_head = f.opt_usize("head_dim")?.unwrap_or(d_model / n_heads);
    cfg.attention_bias = f.bool_or("attention_bias", false)?;
    cfg.mlp_bias = f.bool_or("mlp_bias", false)?;
    cfg.tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;
    match cfg.arch {
        Architecture::Qwen2 => {
            cfg.qkv_bias = true;
            let first = f.opt_usize("max_window_layers")?.unwrap_or(28);
            if !f.bool_or("use_sliding_window", false)? {
                cfg.sliding_window = None;
            } else {
                f.sliding_layers(cfg, |l| l >= first)?;
            }
        }
        Architecture::Mistral => f.sliding_layers(cfg, |_| true)?,
        _ => {}
    }
    cfg.rotary = Some(RotaryConfig {
        dim: cfg.d_head,
        theta: f.rope_f64(&["rope_theta"])?.unwrap_or(10000.0),
        style: RotaryStyle::HalfSplit,
        llama3: f.llama3_scaling()?,
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
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// A Llama model.
pub struct Llama {
    cfg: ModelConfig,
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    act: Activation,
}

impl Llama {
    /// Loads `model.*` and `lm_head.*` (or ties the head to the embedding).
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let root = w.pp("model");
        let d = cfg.d_model;
        let (qd, kvd) = (cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head);
        let (ab, mb) = (cfg.attention_bias, cfg.mlp_bias);
        let qkv = ab || cfg.qkv_bias;
        let embed_tokens = Embedding::load(&root.pp("embed_tokens"), cfg.vocab_size, d)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let b = root.pp("layers").pp(l);
            blocks.push(Block {
                input_layernorm: RmsNorm::load(&b.pp("input_layernorm"), d, cfg.norm_eps)?,
                q_proj: Linear::load(&b.pp("self_attn.q_proj"), d, qd, qkv)?,
                k_proj: Linear::load(&b.pp("self_attn.k_proj"), d, kvd, qkv)?,
                v_proj: Linear::load(&b.pp("self_attn.v_proj"), d, kvd, qkv)?,
                o_proj: Linear::load(&b.pp("self_attn.o_proj"), qd, d, ab)?,
                post_attention_layernorm: RmsNorm::load(
                    &b.pp("post_attention_layernorm"),
                    d,
                    cfg.norm_eps,
                )?,
                gate_proj: Linear::load(&b.pp("mlp.gate_proj"), d, cfg.d_mlp, mb)?,
                up_proj: Linear::load(&b.pp("mlp.up_proj"), d, cfg.d_mlp, mb)?,
                down_proj: Linear::load(&b.pp("mlp.down_proj"), cfg.d_mlp, d, mb)?,
            });
        }
        let lm_head = if cfg.tie_word_embeddings && !w.contains("lm_head.weight") {
            Linear::from_weight(embed_tokens.table.clone(), None)
        } else {
            Linear::load(&w.pp("lm_head"), d, cfg.vocab_size, false)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_tokens,
            blocks,
            norm: RmsNorm::load(&root.pp("norm"), d, cfg.norm_eps)?,
            lm_head,
            rotary: Rotary::new(cfg.rotary.expect("Llama config always has rotary")),
            act: cfg.activation,
        })
    }
}

impl Arch for Llama {
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor> {
        ctx.hook(
            HookPoint::Embed,
            self.embed_tokens.forward(&batch.input_ids)?,
        )
    }

    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let (h, kvh) = (self.cfg.n_heads, self.cfg.n_kv_heads);
        let n = blk.input_layernorm.forward(x, ctx.differentiable)?;
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
        let attn_out = ctx.hook(
            HookPoint::AttnOut(l),
            blk.o_proj.forward(&merge_heads(&z)?)?,
        )?;
        let mid = ctx.hook(HookPoint::ResidMid(l), (x + attn_out)?)?;
        let n2 = blk
            .post_attention_layernorm
            .forward(&mid, ctx.differentiable)?;
        let gate = ctx.hook(HookPoint::MlpPre(l), blk.gate_proj.forward(&n2)?)?;
        let up = ctx.hook(HookPoint::MlpPreLinear(l), blk.up_proj.forward(&n2)?)?;
        let post = ctx.hook(HookPoint::MlpPost(l), (activate(&gate, self.act)? * up)?)?;
        let mlp_out = ctx.hook(HookPoint::MlpOut(l), blk.down_proj.forward(&post)?)?;
        Ok((mid + mlp_out)?)
    }

    fn final_norm(&self, x: &Tensor, differentiable: bool) -> Result<Option<Tensor>> {
        self.norm.forward(x, differentiable).map(Some)
    }

    fn unembed(&self, x: &Tensor) -> Result<Option<Tensor>> {
        self.lm_head.forward(x).map(Some)
    }

    fn head(&self) -> Option<&Linear> {
        Some(&self.lm_head)
    }

    fn rotary(&self) -> Option<&Rotary> {
        Some(&self.rotary)
    }

    fn mlp_out_rows(&self, l: usize) -> &Tensor {
        self.blocks[l].down_proj.weight_t()
    }
}
