//! config.json, read into one normalised [`ModelConfig`] for every architecture.
//!
//! HF spells the same quantity differently per model (`n_embd`, `hidden_size`) and changed
//! how rotary settings are written between transformers 4 (`rope_theta`, `rope_scaling`,
//! `rotary_pct`, `rotary_emb_base`) and 5 (`rope_parameters`); both spellings are read here so
//! that the architecture code never sees a JSON field. The fields every architecture has are
//! read here; each architecture reads its own beside its forward (`arch/<x>.rs`,
//! `read_config`), as candle keeps a model's config with its model.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};

/// The architectures this runtime implements, by HF `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `gpt2`: learned positions, Conv1D weights, sequential pre-LN blocks.
    Gpt2,
    /// `gptj`: parallel attention + MLP from one LayerNorm, interleaved partial rotary.
    GptJ,
    /// `gpt_neox`: parallel or sequential residual, half-split partial rotary, fused QKV.
    GptNeoX,
    /// `llama`: RMSNorm, grouped-query attention, SwiGLU, rotary with optional llama3 scaling.
    Llama,
    /// `bert`: post-LN encoder with absolute positions and token types.
    Bert,
    /// `qwen2` (Qwen2, Qwen2.5): the Llama layout with biases on q, k and v.
    Qwen2,
    /// `mistral`: the Llama layout with sliding-window attention.
    Mistral,
    /// `gemma2`: GeGLU, RMSNorm scaled by 1 + w before and after attention and MLP, embeddings
    /// times sqrt(d_model), soft-capped attention scores and logits, alternating local and
    /// global attention.
    Gemma2,
}

impl Architecture {
    /// The HF `model_type` strings accepted.
    pub const SUPPORTED: &'static str = "gpt2, gptj, gpt_neox, llama, qwen2, mistral, gemma2, bert";

    /// Every architecture, in the order of [`Architecture::SUPPORTED`].
    pub const ALL: [Architecture; 8] = [
        Architecture::Gpt2,
        Architecture::GptJ,
        Architecture::GptNeoX,
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Mistral,
        Architecture::Gemma2,
        Architecture::Bert,
    ];

    /// Whether the model predicts the next token (has causal attention and logits).
    pub fn is_causal_lm(&self) -> bool {
        !matches!(self, Architecture::Bert)
    }

    /// Whether positions are a learned embedding (`hook_pos_embed`) rather than rotary.
    pub fn has_learned_positions(&self) -> bool {
        matches!(self, Architecture::Gpt2 | Architecture::Bert)
    }

    /// The HF `model_type` string.
    pub fn model_type(&self) -> &'static str {
        match self {
            Architecture::Gpt2 => "gpt2",
            Architecture::GptJ => "gptj",
            Architecture::GptNeoX => "gpt_neox",
            Architecture::Llama => "llama",
            Architecture::Bert => "bert",
            Architecture::Qwen2 => "qwen2",
            Architecture::Mistral => "mistral",
            Architecture::Gemma2 => "gemma2",
        }
    }

    /// The config.json field that holds the number of layers.
    pub fn layer_count_field(&self) -> &'static str {
        match self {
            Architecture::Gpt2 | Architecture::GptJ => "n_layer",
            _ => "num_hidden_layers",
        }
    }
}

/// Elementwise activation of the MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`gelu`).
    GeluErf,
    /// Tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish` (used gated in Llama).
    Silu,
}

impl Activation {
    pub(crate) fn parse(name: &str, path: &Path, field: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(ModelError::BadConfig {
                    path: path.to_path_buf(),
                    field: field.to_string(),
                    message: format!(
                        "activation `{other}` is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu, silu)"
                    ),
                })
            }
        })
    }
}

/// How rotary embeddings pair up the dimensions they rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotaryStyle {
    /// Pairs (0,1), (2,3), ... (GPT-J's `rotate_every_two`).
    Interleaved,
    /// Pairs (i, i + dim/2) (GPT-NeoX and Llama's `rotate_half`).
    HalfSplit,
}

/// Llama 3.1's rescaling of rotary frequencies (`rope_type = "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    /// `factor`.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_position_embeddings: f64,
}

/// Rotary position embedding settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RotaryConfig {
    /// How many leading dimensions of each head are rotated (even, <= d_head).
    pub dim: usize,
    /// The base of the frequencies.
    pub theta: f64,
    /// Pairing of dimensions.
    pub style: RotaryStyle,
    /// Llama 3 frequency rescaling, when configured.
    pub llama3: Option<Llama3Scaling>,
}

/// Everything the runtime needs from config.json, whatever the architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Architecture,
    /// Number of blocks.
    pub n_layers: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (= n_heads without grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub d_head: usize,
    /// MLP hidden width (neurons per layer).
    pub d_mlp: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Learned or maximum positions, where the config gives it.
    pub max_positions: Option<usize>,
    /// Epsilon of every LayerNorm / RMSNorm.
    pub norm_eps: f64,
    /// MLP activation.
    pub activation: Activation,
    /// Rotary settings (GPT-J, GPT-NeoX, Llama).
    pub rotary: Option<RotaryConfig>,
    /// Attention and MLP read the same block input (no resid_mid).
    pub parallel_block: bool,
    /// Gated MLP (SwiGLU): hook_pre is the gate, hook_pre_linear the up projection.
    pub gated_mlp: bool,
    /// The unembedding reuses the token embedding (when the checkpoint has no separate one).
    pub tie_word_embeddings: bool,
    /// Q/K/V/O projections carry biases.
    pub attention_bias: bool,
    /// MLP projections carry biases.
    pub mlp_bias: bool,
    /// Token types (BERT).
    pub type_vocab_size: usize,
    /// `bos_token_id`, if any.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (the first, if a list), if any.
    pub eos_token_id: Option<u32>,
    /// `pad_token_id`, if any.
    pub pad_token_id: Option<u32>,
    /// Biases on q, k and v only (Qwen2); `attention_bias` puts them on all four projections.
    pub qkv_bias: bool,
    /// How many keys a local layer's query sees, itself included (HF: key `k` is visible
    /// from query `q` when `q - window < k <= q`).
    pub sliding_window: Option<usize>,
    /// Which layers attend locally (within `sliding_window`); the others attend globally.
    pub local_layers: Vec<bool>,
    /// The attention scores' scale instead of 1/sqrt(d_head) (Gemma 2:
    /// `query_pre_attn_scalar^-1/2`).
    pub attention_scale: Option<f64>,
    /// Scores soft-capped as `cap * tanh(score / cap)` before the mask (Gemma 2).
    pub attention_softcap: Option<f64>,
    /// Logits soft-capped as `cap * tanh(logit / cap)` (Gemma 2).
    pub final_softcap: Option<f64>,
}

/// A config.json being read: typed field access whose errors name the file and the field.
pub(crate) struct Fields<'a> {
    v: &'a Value,
    pub(crate) path: PathBuf,
}

impl Fields<'_> {
    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::BadConfig {
            path: self.path.clone(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.v.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn usize(&self, field: &str) -> Result<usize> {
        match self.get(field) {
            None => Err(self.err(field, "missing")),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| {
                self.err(field, format!("expected a non-negative integer, got {v}"))
            }),
        }
    }

    pub(crate) fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.usize(field).map(Some),
        }
    }

    pub(crate) fn first_usize(&self, fields: &[&str]) -> Result<usize> {
        for f in fields {
            if self.get(f).is_some() {
                return self.usize(f);
            }
        }
        Err(self.err(
            fields[0],
            format!("missing (also looked for {})", fields[1..].join(", ")),
        ))
    }

    pub(crate) fn f64_or(&self, field: &str, default: f64) -> Result<f64> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(field, format!("expected a number, got {v}"))),
        }
    }

    pub(crate) fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(field, format!("expected true or false, got {v}"))),
        }
    }

    pub(crate) fn str_or<'b>(&'b self, field: &str, default: &'b str) -> Result<&'b str> {
        match self.get(field) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(field, format!("expected a string, got {v}"))),
        }
    }

    pub(crate) fn token_id(&self, field: &str) -> Option<u32> {
        match self.get(field)? {
            Value::Number(n) => n.as_u64().map(|x| x as u32),
            Value::Array(a) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
            _ => None,
        }
    }

    /// A rotary setting from transformers 5's `rope_parameters`, else the top level.
    pub(crate) fn rope_f64(&self, names: &[&str]) -> Result<Option<f64>> {
        if let Some(rp) = self.get("rope_parameters") {
            for n in names {
                if let Some(v) = rp.get(*n).filter(|v| !v.is_null()) {
                    return v.as_f64().map(Some).ok_or_else(|| {
                        self.err(&format!("rope_parameters.{n}"), "expected a number")
                    });
                }
            }
        }
        for n in names {
            if self.get(n).is_some() {
                return self.f64_or(n, 0.0).map(Some);
            }
        }
        Ok(None)
    }

    /// `sliding_window` and which layers use it: `layer_types` (transformers 5 writes it:
    /// `sliding_attention` / `full_attention` per layer) when present, else `default(l)`.
    /// A window of `null` makes every layer global.
    pub(crate) fn sliding_layers(
        &self,
        cfg: &mut ModelConfig,
        default: impl Fn(usize) -> bool,
    ) -> Result<()> {
        cfg.sliding_window = self.opt_usize("sliding_window")?;
        if cfg.sliding_window == Some(0) {
            return Err(self.err("sliding_window", "a window of 0 keys hides every token"));
        }
        let n = cfg.n_layers;
        cfg.local_layers = match self.get("layer_types") {
            None => (0..n).map(default).collect(),
            Some(v) => {
                let kinds = v.as_array().filter(|a| a.len() == n).ok_or_else(|| {
                    self.err("layer_types", format!("expected a list of {n} layer kinds"))
                })?;
                kinds
                    .iter()
                    .enumerate()
                    .map(|(l, k)| match k.as_str() {
                        Some("sliding_attention") => Ok(true),
                        Some("full_attention") => Ok(false),
                        _ => Err(self.err(
                            &format!("layer_types[{l}]"),
                            format!("{k} is not sliding_attention or full_attention"),
                        )),
                    })
                    .collect::<Result<_>>()?
            }
        };
        if cfg.sliding_window.is_none() {
            cfg.local_layers = vec![false; n];
        }
        Ok(())
    }

    /// `num_key_value_heads` (grouped-query attention), which must divide the query heads.
    pub(crate) fn kv_heads(&self, n_heads: usize) -> Result<usize> {
        let kv = self.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
        if kv == 0 || !n_heads.is_multiple_of(kv) {
            return Err(self.err(
                "num_key_value_heads",
                format!("{kv} does not divide num_attention_heads {n_heads}"),
            ));
        }
        Ok(kv)
    }

    pub(crate) fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        match self.get(field) {
            None => Ok(None),
            Some(_) => self.f64_or(field, 0.0).map(Some),
        }
    }

    pub(crate) fn llama3_scaling(&self) -> Result<Option<Llama3Scaling>> {
        let (field, obj) = match (self.get("rope_scaling"), self.get("rope_parameters")) {
            (Some(s), _) => ("rope_scaling", s),
            (None, Some(p)) => ("rope_parameters", p),
            (None, None) => return Ok(None),
        };
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        match kind {
            "default" => Ok(None),
            "llama3" => {
                let num = |k: &str| {
                    obj.get(k)
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| self.err(&format!("{field}.{k}"), "missing or not a number"))
                };
                Ok(Some(Llama3Scaling {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?,
                }))
            }
            other => Err(self.err(
                &format!("{field}.rope_type"),
                format!("rope scaling `{other}` is not supported (default, llama3)"),
            )),
        }
    }
}

impl ModelConfig {
    /// Reads and normalises `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ModelError::MissingFile {
                    path: path.to_path_buf(),
                    what: "the HF config that names the architecture".into(),
                }
            } else {
                ModelError::BadFile {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }
            }
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&v, path)
    }

    /// Normalises an already parsed config; `path` is only used in error messages.
    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let f = Fields {
            v,
            path: path.to_path_buf(),
        };
        let model_type = f.str_or("model_type", "")?;
        let arch = match model_type {
            "gpt2" => Architecture::Gpt2,
            "gptj" => Architecture::GptJ,
            "gpt_neox" => Architecture::GptNeoX,
            "llama" => Architecture::Llama,
            "bert" => Architecture::Bert,
            "qwen2" => Architecture::Qwen2,
            "mistral" => Architecture::Mistral,
            "gemma2" => Architecture::Gemma2,
            "" => {
                return Err(f.err(
                    "model_type",
                    "missing: config.json must name the architecture",
                ))
            }
            other => {
                return Err(ModelError::UnsupportedModelType {
                    path: path.to_path_buf(),
                    model_type: other.to_string(),
                    supported: Architecture::SUPPORTED.to_string(),
                })
            }
        };
        let d_model = f.first_usize(&["n_embd", "hidden_size", "d_model"])?;
        let n_layers = f.first_usize(&["n_layer", "num_hidden_layers"])?;
        let n_heads = f.first_usize(&["n_head", "num_attention_heads"])?;
        if n_heads == 0 || d_model % n_heads != 0 {
            return Err(f.err(
                "num_attention_heads",
                format!("{n_heads} heads do not divide the width {d_model}"),
            ));
        }
        let vocab_size = f.usize("vocab_size")?;
        let mut cfg = ModelConfig {
            arch,
            n_layers,
            d_model,
            n_heads,
            n_kv_heads: n_heads,
            d_head: d_model / n_heads,
            d_mlp: 4 * d_model,
            vocab_size,
            max_positions: None,
            norm_eps: 1e-5,
            activation: Activation::GeluErf,
            rotary: None,
            parallel_block: false,
            gated_mlp: false,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", true)?,
            attention_bias: true,
            mlp_bias: true,
            type_vocab_size: 0,
            bos_token_id: f.token_id("bos_token_id"),
            eos_token_id: f.token_id("eos_token_id"),
            pad_token_id: f.token_id("pad_token_id"),
            qkv_bias: false,
            sliding_window: None,
            local_layers: vec![false; n_layers],
            attention_scale: None,
            attention_softcap: None,
            final_softcap: None,
        };
        match arch {
            Architecture::Gpt2 => crate::arch::gpt2::read_config(&f, &mut cfg)?,
            Architecture::GptJ => crate::arch::gptj::read_config(&f, &mut cfg)?,
            Architecture::GptNeoX => crate::arch::gpt_neox::read_config(&f, &mut cfg)?,
            Architecture::Llama | Architecture::Qwen2 | Architecture::Mistral => {
                crate::arch::llama::read_config(&f, &mut cfg)?
            }
            Architecture::Gemma2 => crate::arch::gemma2::read_config(&f, &mut cfg)?,
            Architecture::Bert => crate::arch::bert::read_config(&f, &mut cfg)?,
        }
        if let Some(r) = cfg.rotary {
            if r.dim == 0 || r.dim % 2 != 0 || r.dim > cfg.d_head {
                return Err(f.err(
                    "rotary_dim",
                    format!(
                        "rotary dimension {} must be even and in 2..={}",
                        r.dim, cfg.d_head
                    ),
                ));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    #[test]
    fn llama31_rope_scaling_is_read_in_both_spellings() {
        let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let v4 = parse(
            json!({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "intermediate_size": 128, "rope_theta": 500000.0, "rope_scaling": scaling}),
        )
        .unwrap();
        let mut params = scaling.clone();
        params["rope_theta"] = json!(500000.0);
        let v5 = parse(
            json!({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
            "intermediate_size": 128, "rope_parameters": params}),
        )
        .unwrap();
        assert_eq!(v4, v5);
        let r = v4.rotary.unwrap();
        assert_eq!(r.theta, 500000.0);
        assert_eq!(r.llama3.unwrap().factor, 8.0);
        assert_eq!((v4.n_kv_heads, v4.d_head), (2, 16));
    }

    #[test]
    fn pythia_partial_rotary() {
        let c = parse(
            json!({"model_type": "gpt_neox", "hidden_size": 4096, "num_hidden_layers": 32,
            "num_attention_heads": 32, "vocab_size": 50432, "intermediate_size": 16384,
            "rotary_pct": 0.25, "rotary_emb_base": 10000, "use_parallel_residual": true}),
        )
        .unwrap();
        assert_eq!(c.rotary.unwrap().dim, 32);
        assert!(c.parallel_block);
    }

    #[test]
    fn windows_follow_each_architecture_rules() {
        let base = json!({"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": 100, "intermediate_size": 128,
            "sliding_window": 16});
        let with = |extra: Value| {
            let mut v = base.clone();
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            parse(v).unwrap()
        };
        // Qwen2.5's shipped configs: a window given but switched off.
        let q = with(json!({"model_type": "qwen2", "use_sliding_window": false}));
        assert_eq!(
            (q.sliding_window, q.qkv_bias, q.attention_bias),
            (None, true, false)
        );
        assert_eq!(q.local_layers, vec![false; 4]);
        let q = with(
            json!({"model_type": "qwen2", "use_sliding_window": true, "max_window_layers": 2}),
        );
        assert_eq!(q.local_layers, vec![false, false, true, true]);
        let m = with(json!({"model_type": "mistral"}));
        assert_eq!(
            (m.sliding_window, m.local_layers.clone()),
            (Some(16), vec![true; 4])
        );
        let m = with(json!({"model_type": "mistral", "sliding_window": null}));
        assert_eq!(m.local_layers, vec![false; 4]);
        let g = with(
            json!({"model_type": "gemma2", "head_dim": 32, "query_pre_attn_scalar": 64,
            "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}),
        );
        assert_eq!(g.local_layers, vec![true, false, true, false]);
        assert_eq!((g.d_head, g.attention_scale), (32, Some(0.125)));
        assert_eq!(
            (g.attention_softcap, g.final_softcap),
            (Some(50.0), Some(30.0))
        );
        assert_eq!(g.activation, Activation::GeluTanh);
        let e = parse({
            let mut v = base.clone();
            v["model_type"] = json!("mistral");
            v["layer_types"] = json!(["full_attention", "sliding"]);
            v
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("layer_types") && e.contains("4 layer kinds"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(json!({"model_type": "mamba"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mamba") && e.contains("gpt_neox"), "{e}");
        let e = parse(json!({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "vocab_size": 10}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_layer"), "{e}");
        let e = parse(
            json!({"model_type": "gpt2", "n_embd": 64, "n_layer": 1, "n_head": 5,
            "vocab_size": 10, "n_positions": 8}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("do not divide"), "{e}");
    }
}
