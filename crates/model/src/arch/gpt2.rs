//! GPT-2 (HF `modeling_gpt2.py`): learned positions, `Conv1D` weights stored `(in, out)`,
//! sequential pre-LN blocks, fused `c_attn` laid out `[q | k | v]`, tied or untied head.

use candle_core::Tensor;

use super::{Arch, Mlp};
use crate::attention::{attend, merge_heads, split_heads, Env};
use crate::batch::Batch;
use crate::config::{Activation, Fields, ModelConfig};
use crate::context::HookCtx;
use crate::error::Result;
use crate::hook::HookPoint;
use crate::ops::{Embedding, LayerNorm, Linear};
use crate::rotary::Rotary;
use crate::weights::Weights;

/// The config.json fields of this architecture (the shared ones are read by
/// [`ModelConfig::from_json`]); errors name the field.
pub(crate) fn read_config(f: &Fields<'_>, cfg: &mut ModelConfig) -> Result<()> {
    let d_model = cfg.d_model;
    cfg.d_mlp = f.opt_usize("n_inner")?.unwrap_or(4 * d_model);
    cfg.max_positions = Some(f.first_usize(&["n_positions", "n_ctx"])?);
    cfg.norm_eps = f.f64_or("layer_norm_epsilon", 1e-5)?;
    cfg.activation = Activation::parse(
        f.str_or("activation_function", "gelu_new")?,
        &f.path,
        "activation_function",
    )?;
    for unsupported in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if f.bool_or(unsupported, false)? {
            return Err(f.err(unsupported, "true is not supported"));
        }
    }
    Ok(())
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    mlp: Mlp,
}

/// A GPT-2 model.
pub struct Gpt2 {
    cfg: ModelConfig,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
}

impl Gpt2 {
    /// Loads from `transformer.*` (GPT2LMHeadModel) or unprefixed (GPT2Model) names.
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let root = if w.contains("transformer.wte.weight") {
            w.pp("transformer")
        } else {
            w.pp("")
        };
        let d = cfg.d_model;
        let wte = Embedding::load(&root.pp("wte"), cfg.vocab_size, d)?;
        let wpe = Embedding::load(&root.pp("wpe"), cfg.max_positions.unwrap_or(1024), d)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let b = root.pp("h").pp(l);
            blocks.push(Block {
                ln_1: LayerNorm::load(&b.pp("ln_1"), d, cfg.norm_eps)?,
                c_attn: Linear::load_conv1d(&b.pp("attn.c_attn"), d, 3 * d)?,
                c_proj: Linear::load_conv1d(&b.pp("attn.c_proj"), d, d)?,
                ln_2: LayerNorm::load(&b.pp("ln_2"), d, cfg.norm_eps)?,
                mlp: Mlp {
                    fc_in: Linear::load_conv1d(&b.pp("mlp.c_fc"), d, cfg.d_mlp)?,
                    fc_out: Linear::load_conv1d(&b.pp("mlp.c_proj"), cfg.d_mlp, d)?,
                    act: cfg.activation,
                },
            });
        }
        let ln_f = LayerNorm::load(&root.pp("ln_f"), d, cfg.norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_weight(wte.table.clone(), None)
        } else {
            Linear::load(&w.pp("lm_head"), d, cfg.vocab_size, false)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }
}

impl Arch for Gpt2 {
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor> {
        let tok = ctx.hook(HookPoint::Embed, self.wte.forward(&batch.input_ids)?)?;
        let pos_ids = batch.position_tensor(batch.input_ids.device())?;
        let pos = ctx.hook(HookPoint::PosEmbed, self.wpe.forward(&pos_ids)?)?;
        Ok((tok + pos)?)
    }

    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let (h, d) = (self.cfg.n_heads, self.cfg.d_model);
        let n = blk.ln_1.forward(x, ctx.differentiable)?;
        let qkv = blk.c_attn.forward(&n)?;
        let q = ctx.hook(HookPoint::AttnQ(l), split_heads(&qkv.narrow(2, 0, d)?, h)?)?;
        let k = ctx.hook(HookPoint::AttnK(l), split_heads(&qkv.narrow(2, d, d)?, h)?)?;
        let v = ctx.hook(
            HookPoint::AttnV(l),
            split_heads(&qkv.narrow(2, 2 * d, d)?, h)?,
        )?;
        let (q, x) = (env.output_positions(&q)?, &env.output_positions(x)?);
        let z = attend(ctx, l, &q, &k, &v, env)?;
        let attn_out = ctx.hook(
            HookPoint::AttnOut(l),
            blk.c_proj.forward(&merge_heads(&z)?)?,
        )?;
        let mid = ctx.hook(HookPoint::ResidMid(l), (x + attn_out)?)?;
        let n2 = blk.ln_2.forward(&mid, ctx.differentiable)?;
        let mlp_out = blk.mlp.forward(l, &n2, ctx)?;
        Ok((mid + mlp_out)?)
    }

    fn final_norm(&self, x: &Tensor, differentiable: bool) -> Result<Option<Tensor>> {
        self.ln_f.forward(x, differentiable).map(Some)
    }

    fn unembed(&self, x: &Tensor) -> Result<Option<Tensor>> {
        self.lm_head.forward(x).map(Some)
    }

    fn head(&self) -> Option<&Linear> {
        Some(&self.lm_head)
    }

    fn rotary(&self) -> Option<&Rotary> {
        None
    }

    fn mlp_out_rows(&self, l: usize) -> &Tensor {
        self.blocks[l].mlp.fc_out.weight_t()
    }
}
