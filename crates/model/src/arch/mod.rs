//! One file per architecture, each read side by side with HF's modeling file: the same module
//! tree and weight names, with hook calls where TransformerLens puts its HookPoints.

pub mod bert;
pub mod gemma2;
pub mod gpt2;
pub mod gpt_neox;
pub mod gptj;
pub mod llama;

use candle_core::Tensor;

use crate::attention::Env;
use crate::batch::Batch;
use crate::config::{Activation, ModelConfig};
use crate::context::HookCtx;
use crate::error::Result;
use crate::hook::HookPoint;
use crate::ops::{activate, Linear};
use crate::rotary::Rotary;
use crate::weights::Weights;

/// What the forward driver needs from an architecture.
pub trait Arch: Send + Sync {
    /// Token ids to the residual stream entering block 0 (`hook_embed` etc. called inside).
    fn embed(&self, batch: &Batch, ctx: &mut HookCtx) -> Result<Tensor>;
    /// Block `l` on the residual stream; the driver hooks resid_pre and resid_post.
    fn block(&self, l: usize, x: &Tensor, env: &Env, ctx: &mut HookCtx) -> Result<Tensor>;
    /// The final norm, for models that have one.
    fn final_norm(&self, x: &Tensor, differentiable: bool) -> Result<Option<Tensor>>;
    /// Logits from the normalised residual, for models with an LM head.
    fn unembed(&self, x: &Tensor) -> Result<Option<Tensor>>;
    /// The LM head [`Arch::unembed`] applies, for models with one.
    fn head(&self) -> Option<&Linear>;
    /// The cap `c` of Gemma 2's final logits (`c * tanh(logit / c)`), where there is one.
    fn final_softcap(&self) -> Option<f64> {
        None
    }
    /// Rotary frequencies, for rotary models.
    fn rotary(&self) -> Option<&Rotary>;
    /// The output projection of block `l`'s MLP as `(d_mlp, d_model)`: row n is what neuron n
    /// (`mlp.hook_post`) adds to the residual stream per unit of activation.
    fn mlp_out_rows(&self, l: usize) -> &Tensor;
}

/// Builds the architecture named by the config from the checkpoint.
pub fn load(cfg: &ModelConfig, w: &Weights) -> Result<Box<dyn Arch>> {
    use crate::config::Architecture::*;
    Ok(match cfg.arch {
        Gpt2 => Box::new(gpt2::Gpt2::load(cfg, w)?),
        GptJ => Box::new(gptj::GptJ::load(cfg, w)?),
        GptNeoX => Box::new(gpt_neox::GptNeoX::load(cfg, w)?),
        Llama | Qwen2 | Mistral => Box::new(llama::Llama::load(cfg, w)?),
        Gemma2 => Box::new(gemma2::Gemma2::load(cfg, w)?),
        Bert => Box::new(bert::Bert::load(cfg, w)?),
    })
}

/// The two-layer MLP of GPT-2, GPT-J, GPT-NeoX and BERT, with `mlp.hook_pre` and
/// `mlp.hook_post` around the activation and `hook_mlp_out` on its output.
pub struct Mlp {
    /// Up projection (neuron preactivations).
    pub fc_in: Linear,
    /// Down projection.
    pub fc_out: Linear,
    /// Activation.
    pub act: Activation,
}

impl Mlp {
    /// Runs the MLP of layer `l` on the normalised input.
    pub fn forward(&self, l: usize, h: &Tensor, ctx: &mut HookCtx) -> Result<Tensor> {
        let pre = ctx.hook(HookPoint::MlpPre(l), self.fc_in.forward(h)?)?;
        let post = ctx.hook(HookPoint::MlpPost(l), activate(&pre, self.act)?)?;
        ctx.hook(HookPoint::MlpOut(l), self.fc_out.forward(&post)?)
    }
}

/// Applies rotary embeddings to q and k when the model has them.
pub fn rope(rotary: Option<&Rotary>, env: &Env, q: Tensor, k: Tensor) -> Result<(Tensor, Tensor)> {
    match (rotary, &env.rope) {
        (Some(r), Some(tables)) => Ok((r.apply(&q, tables)?, r.apply(&k, tables)?)),
        _ => Ok((q, k)),
    }
}
