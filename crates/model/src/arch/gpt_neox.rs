//! GPT-NeoX / Pythia (HF `modeling_gpt_neox.py`): parallel residual (two LayerNorms on the
//! same input) or sequential; rotary on `rotary_pct` of each head with half-split pairs; fused
//! `query_key_value` laid out per head as `[q | k | v]` blocks.

use candle_core::Tensor;

use super::{rope, Arch, Mlp};
use crate::attention::{attend, merge_heads, Env};
use crate::batch::Batch;
use crate::config::{Activation, Fields, ModelConfig, RotaryConfig, RotaryStyle};
use crate::context::HookCtx;
use crate::error::Result;
use crate::hook::HookPoint;
use crate::ops::{Embedding, LayerNorm, Linear};
use crate::rotary::Rotary;
use crate::weights::Weights;

/// The config.json fields of this architecture (the shared ones are read by
/// [`ModelConfig::from_json`]); errors name the field.
pub(crate) fn read_config(f: &Fields<'_>, cfg: &mut ModelConfig) -> Result<()> {
    cfg.d_mlp = f.usize("intermediate_size")?;
    cfg.max_positions = f.opt_usize("max_position_embeddings")?;
    cfg.norm_eps = f.f64_or("layer_norm_eps", 1e-5)?;
    cfg.activation = Activation::parse(f.str_or("hidden_act", "gelu")?, &f.path, "hidden_act")?;
    cfg.parallel_block = f.bool_or("use_parallel_residual", true)?;
    cfg.attention_bias = f.bool_or("attention_bias", true)?;
    cfg.tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;
    let pct = f
        .rope_f64(&["partial_rotary_factor", "rotary_pct"])?
        .unwrap_or(0.25);
    cfg.rotary = Some(RotaryConfig {
        dim: (cfg.d_head as f64 * pct) as usize,
        theta: f
            .rope_f64(&["rope_theta", "rotary_emb_base"])?
            .unwrap_or(10000.0),
        style: RotaryStyle::HalfSplit,
        llama3: None,
    });
    Ok(())
}

struct Block {
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    query_key_value: Linear,
    dense: Linear,
    mlp: Mlp,
}

/// A GPT-NeoX model.
pub struct GptNeoX {
    cfg: ModelConfig,
    embed_in: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: LayerNorm,
    embed_out: Linear,
    rotary: Rotary,
}

impl GptNeoX {
    /// Loads `gpt_neox.*` and `embed_out.*`.
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let root = w.pp("gpt_neox");
        let d = cfg.d_model;
        let embed_in = Embedding::load(&root.pp("embed_in"), cfg.vocab_size, d)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let b = root.pp("layers").pp(l);
            blocks.push(Block {
                input_layernorm: LayerNorm::load(&b.pp("input_layernorm"), d, cfg.norm_eps)?,
                post_attention_layernorm: LayerNorm::load(
                    &b.pp("post_attention_layernorm"),
                    d,
                    cfg.norm_eps,
                )?,
                query_key_value: Linear::load(
                    &b.pp("attention.query_key_value"),
                    d,
                    3 * d,
                    cfg.attention_bias,
                )?,
                dense: Linear::load(&b.pp("attention.dense"), d, d, cfg.attention_bias)?,
                mlp: Mlp {
                    fc_in: Linear::load(&b.pp("mlp.dense_h_to_4h"), d, cfg.d_mlp, true)?,
                    fc_out: Linear::load(&b.pp("mlp.dense_4h_to_h"), cfg.d_mlp, d, true)?,
                    act: cfg.activation,
                },
            });
        }
        // Checkpoints name the head `embed_out`; transformers 5 calls it `lm_head` in memory.
        let embed_out = if cfg.tie_word_embeddings {
            Linear::from_weight(embed_in.table.clone(), None)
        } else if w.contains("lm_head.weight") && !w.contains("embed_out.weight") {
            Linear::load(&w.pp("lm_head"), d, cfg.vocab_size, false)?
        } else {
            Linear::load(&w.pp("embed_out"), d, cfg.vocab_size, false)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            embed_in,
            blocks,
            final_layer_norm: LayerNorm::load(&root.pp("final_layer_norm"), d, cfg.norm_eps)?,
            embed_out,
            rotary: Rotary::new(cfg.rotary.expect("GPT-NeoX config always has rotary")),
        })
    }
}

impl Arch for GptNeoX {
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor> {
        ctx.hook(HookPoint::Embed, self.embed_in.forward(&batch.input_ids)?)
    }

    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let (h, dh) = (self.cfg.n_heads, self.cfg.d_head);
        let n = blk.input_layernorm.forward(x, ctx.differentiable)?;
        let (b, t, _) = n.dims3()?;
        // (b, t, heads, 3 * d_head): each head's q, k and v are adjacent.
        let qkv = blk
            .query_key_value
            .forward(&n)?
            .reshape((b, t, h, 3 * dh))?;
        let q = ctx.hook(HookPoint::AttnQ(l), qkv.narrow(3, 0, dh)?)?;
        let k = ctx.hook(HookPoint::AttnK(l), qkv.narrow(3, dh, dh)?)?;
        let v = ctx.hook(HookPoint::AttnV(l), qkv.narrow(3, 2 * dh, dh)?)?;
        let (q, k) = rope(Some(&self.rotary), env, q, k)?;
        let (q, x) = (env.output_positions(&q)?, &env.output_positions(x)?);
        let z = attend(ctx, l, &q, &k, &v, env)?;
        let attn_out = ctx.hook(HookPoint::AttnOut(l), blk.dense.forward(&merge_heads(&z)?)?)?;
        if self.cfg.parallel_block {
            let n2 = blk
                .post_attention_layernorm
                .forward(x, ctx.differentiable)?;
            let mlp_out = blk.mlp.forward(l, &n2, ctx)?;
            Ok(((mlp_out + attn_out)? + x)?)
        } else {
            let mid = ctx.hook(HookPoint::ResidMid(l), (attn_out + x)?)?;
            let n2 = blk
                .post_attention_layernorm
                .forward(&mid, ctx.differentiable)?;
            let mlp_out = blk.mlp.forward(l, &n2, ctx)?;
            Ok((mlp_out + mid)?)
        }
    }

    fn final_norm(&self, x: &Tensor, differentiable: bool) -> Result<Option<Tensor>> {
        self.final_layer_norm.forward(x, differentiable).map(Some)
    }

    fn unembed(&self, x: &Tensor) -> Result<Option<Tensor>> {
        self.embed_out.forward(x).map(Some)
    }

    fn head(&self) -> Option<&Linear> {
        Some(&self.embed_out)
    }

    fn rotary(&self) -> Option<&Rotary> {
        Some(&self.rotary)
    }

    fn mlp_out_rows(&self, l: usize) -> &Tensor {
        self.blocks[l].mlp.fc_out.weight_t()
    }
}
