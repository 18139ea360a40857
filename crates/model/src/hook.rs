//! Which hooks a model has: the [`HookPoint`] vocabulary lives in `helixlab-hooks` (no
//! dependencies, so study files can name hooks without the runtime); whether a given model
//! has one (a parallel block has no `hook_resid_mid`) follows from its config, here.

pub use helixlab_hooks::{HookParseError, HookPoint, Stage};

use crate::config::ModelConfig;
use crate::error::ModelError;

impl From<HookParseError> for ModelError {
    fn from(e: HookParseError) -> Self {
        ModelError::BadHook {
            name: e.name,
            message: e.message,
        }
    }
}

/// Which hooks a model has follows from its config alone, so `model check` can list them
/// without loading weights.
impl ModelConfig {
    /// Every hook a model of this config has, in forward order.
    pub fn hooks(&self) -> Vec<HookPoint> {
        let mut all = vec![HookPoint::Embed, HookPoint::PosEmbed];
        for l in 0..self.n_layers {
            all.extend(HookPoint::block_hooks(l));
        }
        all.extend([HookPoint::LnFinal, HookPoint::Logits]);
        all.retain(|h| self.check_hook(*h).is_ok());
        all
    }

    /// Whether a model of this config has `hook`; the error says why not and what it has instead.
    pub fn check_hook(&self, hook: HookPoint) -> crate::error::Result<()> {
        let c = self;
        let name = c.arch.model_type();
        let refuse = |why: String| {
            Err(ModelError::BadHook {
                name: hook.to_string(),
                message: format!(
                    "{why}; this model's hooks are: hook_embed{}, blocks.{{0..{}}}.{{{}}}{}",
                    if c.arch.has_learned_positions() {
                        ", hook_pos_embed"
                    } else {
                        ""
                    },
                    c.n_layers - 1,
                    HookPoint::block_hooks(0)
                        .iter()
                        .filter(|h| self.block_hook_exists(**h))
                        .map(|h| h.to_string().trim_start_matches("blocks.0.").to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    if c.arch.is_causal_lm() {
                        ", ln_final.hook_normalized, logits"
                    } else {
                        ""
                    }
                ),
            })
        };
        if let Some(l) = hook.layer() {
            if l >= c.n_layers {
                return refuse(format!(
                    "layer {l} does not exist ({name} has {} layers)",
                    c.n_layers
                ));
            }
            if !self.block_hook_exists(hook) {
                return refuse(match hook {
                    HookPoint::ResidMid(_) => format!(
                        "{name} blocks are parallel: attention and MLP both read hook_resid_pre, \
                         so there is no resid_mid"
                    ),
                    _ => format!("{name} has no gated MLP, so there is no hook_pre_linear"),
                });
            }
            return Ok(());
        }
        match hook {
            HookPoint::PosEmbed if !c.arch.has_learned_positions() => {
                refuse(format!("{name} has no learned position embedding"))
            }
            HookPoint::LnFinal | HookPoint::Logits if !c.arch.is_causal_lm() => refuse(format!(
                "{name} is an encoder here, without final norm or LM head"
            )),
            _ => Ok(()),
        }
    }

    fn block_hook_exists(&self, hook: HookPoint) -> bool {
        match hook {
            HookPoint::ResidMid(_) => !self.parallel_block,
            HookPoint::MlpPreLinear(_) => self.gated_mlp,
            _ => true,
        }
    }
}
