//! BERT encoder (HF `modeling_bert.py`), for number representations only: word + position +
//! token-type embeddings with a LayerNorm, post-LN blocks, bidirectional attention, no head.
//!
//! Post-LN hook semantics: `hook_attn_out` and `hook_mlp_out` are the dense outputs before the
//! residual add; `hook_resid_mid` is the normalised stream the MLP reads (HF's
//! `attention.output`); `hook_resid_post` the normalised block output. Token types are 0.

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
    cfg.d_mlp = f.usize("intermediate_size")?;
    cfg.max_positions = Some(f.usize("max_position_embeddings")?);
    cfg.norm_eps = f.f64_or("layer_norm_eps", 1e-12)?;
    cfg.activation = Activation::parse(f.str_or("hidden_act", "gelu")?, &f.path, "hidden_act")?;
    cfg.type_vocab_size = f.opt_usize("type_vocab_size")?.unwrap_or(2);
    let pe = f.str_or("position_embedding_type", "absolute")?;
    if pe != "absolute" {
        return Err(f.err(
            "position_embedding_type",
            format!("`{pe}` is not supported (absolute)"),
        ));
    }
    Ok(())
}

struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_dense: Linear,
    attn_ln: LayerNorm,
    mlp: Mlp,
    out_ln: LayerNorm,
}

/// A BERT encoder.
pub struct Bert {
    cfg: ModelConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_ln: LayerNorm,
    blocks: Vec<Block>,
}

impl Bert {
    /// Loads `bert.*` (BertFor... models) or unprefixed (BertModel) names.
    pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Self> {
        let root = if w.contains("bert.embeddings.word_embeddings.weight") {
            w.pp("bert")
        } else {
            w.pp("")
        };
        let (d, eps) = (cfg.d_model, cfg.norm_eps);
        let e = root.pp("embeddings");
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let b = root.pp("encoder.layer").pp(l);
            blocks.push(Block {
                query: Linear::load(&b.pp("attention.self.query"), d, d, true)?,
                key: Linear::load(&b.pp("attention.self.key"), d, d, true)?,
                value: Linear::load(&b.pp("attention.self.value"), d, d, true)?,
                attn_dense: Linear::load(&b.pp("attention.output.dense"), d, d, true)?,
                attn_ln: LayerNorm::load(&b.pp("attention.output.LayerNorm"), d, eps)?,
                mlp: Mlp {
                    fc_in: Linear::load(&b.pp("intermediate.dense"), d, cfg.d_mlp, true)?,
                    fc_out: Linear::load(&b.pp("output.dense"), cfg.d_mlp, d, true)?,
                    act: cfg.activation,
                },
                out_ln: LayerNorm::load(&b.pp("output.LayerNorm"), d, eps)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word: Embedding::load(&e.pp("word_embeddings"), cfg.vocab_size, d)?,
            position: Embedding::load(
                &e.pp("position_embeddings"),
                cfg.max_positions.unwrap_or(512),
                d,
            )?,
            token_type: Embedding::load(&e.pp("token_type_embeddings"), cfg.type_vocab_size, d)?,
            emb_ln: LayerNorm::load(&e.pp("LayerNorm"), d, eps)?,
            blocks,
        })
    }
}

impl Arch for Bert {
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor> {
        let dev = batch.input_ids.device();
        let tok = ctx.hook(HookPoint::Embed, self.word.forward(&batch.input_ids)?)?;
        let pos_ids = batch.position_tensor(dev)?;
        let types = self.token_type.forward(&pos_ids.zeros_like()?)?;
        let pos = ctx.hook(HookPoint::PosEmbed, self.position.forward(&pos_ids)?)?;
        self.emb_ln
            .forward(&((tok + types)? + pos)?, ctx.differentiable)
    }

    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor> {
        let blk = &self.blocks[l];
        let h = self.cfg.n_heads;
        let q = ctx.hook(HookPoint::AttnQ(l), split_heads(&blk.query.forward(x)?, h)?)?;
        let k = ctx.hook(HookPoint::AttnK(l), split_heads(&blk.key.forward(x)?, h)?)?;
        let v = ctx.hook(HookPoint::AttnV(l), split_heads(&blk.value.forward(x)?, h)?)?;
        let z = attend(ctx, l, &q, &k, &v, env)?;
        let attn_out = ctx.hook(
            HookPoint::AttnOut(l),
            blk.attn_dense.forward(&merge_heads(&z)?)?,
        )?;
        let mid = blk.attn_ln.forward(&(attn_out + x)?, ctx.differentiable)?;
        let mid = ctx.hook(HookPoint::ResidMid(l), mid)?;
        let mlp_out = blk.mlp.forward(l, &mid, ctx)?;
        blk.out_ln.forward(&(mlp_out + mid)?, ctx.differentiable)
    }

    fn final_norm(&self, _x: &Tensor, _differentiable: bool) -> Result<Option<Tensor>> {
        Ok(None)
    }

    fn unembed(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    fn head(&self) -> Option<&Linear> {
        None
    }

    fn rotary(&self) -> Option<&Rotary> {
        None
    }

    fn mlp_out_rows(&self, l: usize) -> &Tensor {
        self.blocks[l].mlp.fc_out.weight_t()
    }
}
