//! GPT-J (HF `modeling_gptj.py`): attention and MLP run in parallel from one `ln_1`; rotary on
//! the first `rotary_dim` features of each head with interleaved pairs; q/k/v/out without
//! bias; fc_in/fc_out and lm_head with bias. There is no resid_mid.

use candle_core::Tensor;

use super::{rope, Arch, Mlp};
use crate::attention::{attend, merge_heads, split_heads, Env};
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
    let d_model = cfg.d_model;
    cfg.d_mlp = f.opt_usize("n_inner")?.unwrap_or(4 * d_model);
    cfg.max_positions = f.opt_usize("n_positions")?;
    cfg.norm_eps = f.f64_or("layer_norm_epsilon", 1e-5)?;
    cfg.activation = Activation::parse(
        f.str_or("activation_function", "gelu_new")?,
        &f.path,
        "activation_function",
    )?;
    cfg.parallel_block = true;
    cfg.attention_bias = false;
    cfg.tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;
    let dim = f.opt_usize("rotary_dim")?.unwrap_or(cfg.d_head);
    cfg.rotary = Some(RotaryConfig {
        dim,
        theta: f.rope_f64(&["rope_theta"])?.unwrap_or(10000.0),
        style: RotaryStyle::Interleaved,
        llama3: None,
    });
    Ok(())
}

struct Block {
    ln_1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    mlp: Mlp,
}

/// A GPT-J model.
pub struct GptJ {
    cfg: ModelConfig,
    wte: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    rotary: Rotary,
}

impl GptJ {
    /// Loads `transformer.*` and `lm_head.*`.
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let root = w.pp("transformer");
        let d = cfg.d_model;
        let wte = Embedding::load(&root.pp("wte"), cfg.vocab_size, d)?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let b = root.pp("h").pp(l);
            blocks.push(Block {
                ln_1: LayerNorm::load(&b.pp("ln_1"), d, cfg.norm_eps)?,
                q_proj: Linear::load(&b.pp("attn.q_proj"), d, d, false)?,
                k_proj: Linear::load(&b.pp("attn.k_proj"), d, d, false)?,
                v_proj: Linear::load(&b.pp("attn.v_proj"), d, d, false)?,
                out_proj: Linear::load(&b.pp("attn.out_proj"), d, d, false)?,
                mlp: Mlp {
                    fc_in: Linear::load(&b.pp("mlp.fc_in"), d, cfg.d_mlp, true)?,
                    fc_out: Linear::load(&b.pp("mlp.fc_out"), cfg.d_mlp, d, true)?,
                    act: cfg.activation,
                },
            });
        }
        let lm_head = if cfg.tie_word_embeddings {
            Linear::from_weight(wte.table.clone(), None)
        } else {
            Linear::load(&w.pp("lm_head"), d, cfg.vocab_size, true)?
        };
        Ok(Self {
            cfg: cfg.clone(),
            wte,
            blocks,
            ln_f: LayerNorm::load(&root.pp("ln_f"), d, cfg.norm_eps)?,
            lm_head,
            rotary: Rotary::new(cfg.rotary.expect("GPT-J config always has rotary")),
        })
    }
}

impl Arch for GptJ {
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor> {
        ctx.hook(HookPoint::Embed, self.wte.forward(&batch.input_ids)?)
    }

    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let h = self.cfg.n_heads;
        let n = blk.ln_1.forward(x, ctx.differentiable)?;
        let q = ctx.hook(
            HookPoint::AttnQ(l),
            split_heads(&blk.q_proj.forward(&n)?, h)?,
        )?;
        let k = ctx.hook(
            HookPoint::AttnK(l),
            split_heads(&blk.k_proj.forward(&n)?, h)?,
        )?;
        let v = ctx.hook(
            HookPoint::AttnV(l),
            split_heads(&blk.v_proj.forward(&n)?, h)?,
        )?;
        let (q, k) = rope(Some(&self.rotary), env, q, k)?;
        let (q, x) = (env.output_positions(&q)?, &env.output_positions(x)?);
        // The MLP reads the same norm as attention (parallel block).
        let n = env.output_positions(&n)?;
        let z = attend(ctx, l, &q, &k, &v, env)?;
        let attn_out = ctx.hook(
            HookPoint::AttnOut(l),
            blk.out_proj.forward(&merge_heads(&z)?)?,
        )?;
        let mlp_out = blk.mlp.forward(l, &n, ctx)?;
        Ok(((attn_out + mlp_out)? + x)?)
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
        Some(&self.rotary)
    }

    fn mlp_out_rows(&self, l: usize) -> &Tensor {
        self.blocks[l].mlp.fc_out.weight_t()
    }
}
