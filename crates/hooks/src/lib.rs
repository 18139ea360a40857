//! The hook points of a transformer forward, named as TransformerLens names them.
//!
//! A [`HookPoint`] parses from and prints to the TransformerLens string
//! (`"blocks.5.attn.hook_z".parse()`), so users type the names they already know. This crate
//! has no dependencies: the study files (`helixlab-pipeline`) name hooks without compiling the
//! model runtime. Whether a given model has a hook (a parallel block has no `hook_resid_mid`)
//! is the model's question (`helixlab_model::ModelConfig::check_hook`), not this crate's.
#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

/// A hook name that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookParseError {
    /// The name as written.
    pub name: String,
    /// Why it is refused, with the valid names where that helps.
    pub message: String,
}

impl fmt::Display for HookParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hook `{}`: {}", self.name, self.message)
    }
}

impl std::error::Error for HookParseError {}

/// A place in the forward pass where activations can be read or changed.
///
/// Per-token shapes (what one position of the hook holds):
/// residual hooks, `hook_attn_out`, `hook_mlp_out`, `ln_final.hook_normalized`: `[d_model]`;
/// `attn.hook_q` / `hook_z`: `[n_heads, d_head]`; `attn.hook_k` / `hook_v`: `[n_kv_heads, d_head]`;
/// `attn.hook_pattern`: `[n_heads, n_keys]` (the query is the position);
/// `mlp.hook_pre` / `hook_pre_linear` / `hook_post`: `[d_mlp]`; `logits`: `[vocab]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings.
    Embed,
    /// `hook_pos_embed`: learned position embeddings (GPT-2, BERT).
    PosEmbed,
    /// `blocks.{l}.hook_resid_pre`: input of block l (l = 0: the embedding output).
    ResidPre(usize),
    /// `blocks.{l}.hook_resid_mid`: between attention and MLP, sequential blocks only.
    ResidMid(usize),
    /// `blocks.{l}.hook_resid_post`: output of block l.
    ResidPost(usize),
    /// `blocks.{l}.attn.hook_q`: queries per head, before rotary.
    AttnQ(usize),
    /// `blocks.{l}.attn.hook_k`: keys per key/value head, before rotary.
    AttnK(usize),
    /// `blocks.{l}.attn.hook_v`: values per key/value head.
    AttnV(usize),
    /// `blocks.{l}.attn.hook_pattern`: attention probabilities.
    AttnPattern(usize),
    /// `blocks.{l}.attn.hook_z`: per-head attention result, the input of the output projection.
    AttnZ(usize),
    /// `blocks.{l}.hook_attn_out`: attention output (after the output projection).
    AttnOut(usize),
    /// `blocks.{l}.mlp.hook_pre`: neuron preactivation, the input of the activation
    /// function (for gated MLPs: the gate projection).
    MlpPre(usize),
    /// `blocks.{l}.mlp.hook_pre_linear`: gated MLPs only, the up projection.
    MlpPreLinear(usize),
    /// `blocks.{l}.mlp.hook_post`: neuron activations, the input of the down projection.
    MlpPost(usize),
    /// `blocks.{l}.hook_mlp_out`: MLP output.
    MlpOut(usize),
    /// `ln_final.hook_normalized`: after the final norm.
    LnFinal,
    /// `logits`: the unembedding output.
    Logits,
}

/// When in the forward pass a hook fires, used to know how far a forward must run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Before block 0.
    Embedding,
    /// Inside (or at the boundary of) block l.
    Block(usize),
    /// After the last block.
    Final,
}

impl HookPoint {
    /// The layer the hook belongs to, if it is a block hook.
    pub fn layer(&self) -> Option<usize> {
        use HookPoint::*;
        match *self {
            Embed | PosEmbed | LnFinal | Logits => None,
            ResidPre(l) | ResidMid(l) | ResidPost(l) | AttnQ(l) | AttnK(l) | AttnV(l)
            | AttnPattern(l) | AttnZ(l) | AttnOut(l) | MlpPre(l) | MlpPreLinear(l) | MlpPost(l)
            | MlpOut(l) => Some(l),
        }
    }

    /// When the hook fires.
    pub fn stage(&self) -> Stage {
        match (self, self.layer()) {
            (_, Some(l)) => Stage::Block(l),
            (HookPoint::Embed | HookPoint::PosEmbed, None) => Stage::Embedding,
            _ => Stage::Final,
        }
    }

    /// Every hook kind of one block, in forward order, for layer `l`.
    pub fn block_hooks(l: usize) -> [HookPoint; 13] {
        use HookPoint::*;
        [
            ResidPre(l),
            AttnQ(l),
            AttnK(l),
            AttnV(l),
            AttnPattern(l),
            AttnZ(l),
            AttnOut(l),
            ResidMid(l),
            MlpPre(l),
            MlpPreLinear(l),
            MlpPost(l),
            MlpOut(l),
            ResidPost(l),
        ]
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use HookPoint::*;
        match *self {
            Embed => write!(f, "hook_embed"),
            PosEmbed => write!(f, "hook_pos_embed"),
            ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            AttnQ(l) => write!(f, "blocks.{l}.attn.hook_q"),
            AttnK(l) => write!(f, "blocks.{l}.attn.hook_k"),
            AttnV(l) => write!(f, "blocks.{l}.attn.hook_v"),
            AttnPattern(l) => write!(f, "blocks.{l}.attn.hook_pattern"),
            AttnZ(l) => write!(f, "blocks.{l}.attn.hook_z"),
            AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            MlpPre(l) => write!(f, "blocks.{l}.mlp.hook_pre"),
            MlpPreLinear(l) => write!(f, "blocks.{l}.mlp.hook_pre_linear"),
            MlpPost(l) => write!(f, "blocks.{l}.mlp.hook_post"),
            MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            LnFinal => write!(f, "ln_final.hook_normalized"),
            Logits => write!(f, "logits"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = HookParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use HookPoint::*;
        let bad = |message: &str| HookParseError {
            name: s.to_string(),
            message: message.to_string(),
        };
        match s {
            "hook_embed" => return Ok(Embed),
            "hook_pos_embed" => return Ok(PosEmbed),
            "ln_final.hook_normalized" => return Ok(LnFinal),
            "logits" => return Ok(Logits),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(|| {
            bad(
                "not a hook name; expected hook_embed, hook_pos_embed, blocks.{l}.<hook>, \
                 ln_final.hook_normalized or logits",
            )
        })?;
        let (layer, name) = rest
            .split_once('.')
            .ok_or_else(|| bad("expected blocks.{l}.<hook>"))?;
        let l: usize = layer
            .parse()
            .map_err(|_| bad(&format!("`{layer}` is not a layer number")))?;
        Ok(match name {
            "hook_resid_pre" => ResidPre(l),
            "hook_resid_mid" => ResidMid(l),
            "hook_resid_post" => ResidPost(l),
            "attn.hook_q" => AttnQ(l),
            "attn.hook_k" => AttnK(l),
            "attn.hook_v" => AttnV(l),
            "attn.hook_pattern" => AttnPattern(l),
            "attn.hook_z" => AttnZ(l),
            "hook_attn_out" => AttnOut(l),
            "mlp.hook_pre" => MlpPre(l),
            "mlp.hook_pre_linear" => MlpPreLinear(l),
            "mlp.hook_post" => MlpPost(l),
            "hook_mlp_out" => MlpOut(l),
            other => {
                return Err(bad(&format!(
                    "unknown block hook `{other}`; block hooks are: {}",
                    HookPoint::block_hooks(0)
                        .iter()
                        .map(|h| h.to_string().trim_start_matches("blocks.0.").to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_round_trips_through_its_name() {
        let mut all = vec![
            HookPoint::Embed,
            HookPoint::PosEmbed,
            HookPoint::LnFinal,
            HookPoint::Logits,
        ];
        all.extend(HookPoint::block_hooks(7));
        for h in all {
            let parsed: HookPoint = h.to_string().parse().unwrap();
            assert_eq!(parsed, h);
        }
        assert_eq!(
            "blocks.12.attn.hook_z".parse::<HookPoint>().unwrap(),
            HookPoint::AttnZ(12)
        );
    }

    #[test]
    fn bad_names_say_why() {
        let e = "blocks.3.hook_resid_middle"
            .parse::<HookPoint>()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("hook_resid_middle"), "{msg}");
        assert!(msg.contains("hook_resid_mid"), "{msg}");
        let e = "blocks.x.hook_resid_pre".parse::<HookPoint>().unwrap_err();
        assert!(e.to_string().contains("not a layer number"));
        assert!("resid_pre".parse::<HookPoint>().is_err());
    }

    #[test]
    fn stages_order_the_forward() {
        assert!(HookPoint::Embed.stage() < HookPoint::ResidPre(0).stage());
        assert!(HookPoint::MlpOut(3).stage() < HookPoint::ResidPre(4).stage());
        assert!(HookPoint::ResidPost(30).stage() < HookPoint::Logits.stage());
    }
}
