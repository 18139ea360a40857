//! GGUF checkpoints (llama.cpp's single-file format): the metadata becomes an HF-style config,
//! tensors get their HF names back and are dequantized (every type candle's quantized module
//! reads: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and the K-quants), and the
//! tokenizer is rebuilt from `tokenizer.ggml.*` as HF transformers rebuilds it.
//!
//! A key design decision is that a GGUF file is translated into what the rest of the runtime
//! already reads, not given a code path of its own: the metadata becomes the JSON that
//! [`ModelConfig::from_json`] parses, and tensors are served under HF names through
//! [`crate::weights::Weights`], so the Llama forward that HF parity tests cover is the one that
//! runs. The one real transformation is llama.cpp's row permutation of the query and key
//! projections (its converter interleaves each head's rotary halves), undone here exactly as
//! HF's GGUF loader does.
//!
//! Not supported (each refused with an error that says so): GGUF architectures other than
//! `llama`, rope frequency-factor tensors (`rope_freqs.weight`, Llama 3.1's scaling), and
//! sentencepiece (`tokenizer.ggml.model = llama`) vocabularies without a tokenizer.json beside
//! the file.

mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// A GGUF tensor as the runtime asks for it by its HF name.
#[derive(Clone, Debug)]
struct Source {
    /// The tensor's name in the file.
    gguf_name: String,
    /// Heads whose rotary rows llama.cpp's converter interleaved (q and k projections).
    unpermute_heads: Option<usize>,
}

/// An opened GGUF file: its metadata and tensor directory (no tensor data read).
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    header_sha256: String,
}

fn bad(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl GgufFile {
    /// Reads the header, metadata and tensor directory of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut f = File::open(path).map_err(|e| bad(path, e.to_string()))?;
        let content =
            Content::read(&mut f).map_err(|e| bad(path, format!("not a GGUF file: {e}")))?;
        // A damaged directory must not send the reader past the file (or make it allocate
        // what a huge offset asks for): every extent is checked against the file's size.
        let file_len = std::fs::metadata(path)
            .map_err(|e| bad(path, e.to_string()))?
            .len();
        if content.tensor_data_offset > file_len {
            return Err(bad(
                path,
                format!(
                    "the tensor data starts at byte {}, past the end of the file ({file_len} bytes)",
                    content.tensor_data_offset
                ),
            ));
        }
        for (name, t) in &content.tensor_infos {
            let dims = t.shape.dims();
            let elems = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|n| n % t.ggml_dtype.block_size() == 0);
            let end = elems
                .and_then(|n| (n / t.ggml_dtype.block_size()).checked_mul(t.ggml_dtype.type_size()))
                .and_then(|bytes| (bytes as u64).checked_add(t.offset))
                .and_then(|e| e.checked_add(content.tensor_data_offset));
            if end.is_none_or(|e| e > file_len) {
                return Err(bad(
                    path,
                    format!(
                        "tensor `{name}` (shape {dims:?}, {:?}, offset {}) does not fit in the \
                         file ({file_len} bytes)",
                        t.ggml_dtype, t.offset
                    ),
                ));
            }
        }
        // The header (metadata and tensor directory) identifies config, tokenizer and layout;
        // the tensor data is the rest of the file, whose size the manifests record.
        let mut f = File::open(path).map_err(|e| bad(path, e.to_string()))?;
        let mut header = vec![0u8; content.tensor_data_offset as usize];
        f.read_exact(&mut header)
            .map_err(|e| bad(path, format!("cannot read the header again: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            header_sha256: format!("{:x}", Sha256::digest(&header)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// sha256 of the header (metadata and tensor directory), which stands for config.json.
    pub fn header_sha256(&self) -> &str {
        &self.header_sha256
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn need(&self, key: &str) -> Result<&Value> {
        self.meta(key)
            .ok_or_else(|| bad(&self.path, format!("metadata key `{key}` is missing")))
    }

    fn u64_of(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.meta(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            other => {
                return Err(bad(
                    &self.path,
                    format!("metadata `{key}`: expected a non-negative integer, got {other:?}"),
                ))
            }
        };
        Ok(Some(n))
    }

    fn need_u64(&self, key: &str) -> Result<u64> {
        self.need(key)?;
        Ok(self.u64_of(key)?.expect("present"))
    }

    fn f64_of(&self, key: &str) -> Result<Option<f64>> {
        Ok(match self.meta(key) {
            None => None,
            Some(Value::F32(x)) => Some(*x as f64),
            Some(Value::F64(x)) => Some(*x),
            Some(_) => self.u64_of(key)?.map(|x| x as f64),
        })
    }

    fn str_of(&self, key: &str) -> Result<Option<&str>> {
        match self.meta(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(bad(
                &self.path,
                format!("metadata `{key}`: expected a string, got {other:?}"),
            )),
        }
    }

    fn bool_of(&self, key: &str) -> Result<Option<bool>> {
        match self.meta(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(
                &self.path,
                format!("metadata `{key}`: expected true or false, got {other:?}"),
            )),
        }
    }

    fn strings_of(&self, key: &str) -> Result<Vec<String>> {
        match self.need(key)? {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(
                        &self.path,
                        format!("metadata `{key}`[{i}]: expected a string, got {other:?}"),
                    )),
                })
                .collect(),
            other => Err(bad(
                &self.path,
                format!("metadata `{key}`: expected an array, got {other:?}"),
            )),
        }
    }

    fn ints_of(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.meta(key) else {
            return Ok(None);
        };
        let Value::Array(a) = v else {
            return Err(bad(
                &self.path,
                format!("metadata `{key}`: expected an array"),
            ));
        };
        a.iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x as i64),
                Value::U32(x) => Ok(*x as i64),
                Value::I64(x) => Ok(*x),
                Value::U8(x) => Ok(*x as i64),
                Value::I8(x) => Ok(*x as i64),
                other => Err(bad(
                    &self.path,
                    format!("metadata `{key}`: expected integers, got {other:?}"),
                )),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.str_of("general.architecture")?
            .ok_or_else(|| bad(&self.path, "metadata key `general.architecture` is missing"))
    }

    /// The metadata as the HF config.json it stands for (`llama` only).
    pub fn config_json(&self) -> Result<serde_json::Value> {
        let arch = self.architecture()?;
        if arch != "llama" {
            return Err(bad(
                &self.path,
                format!(
                    "GGUF architecture `{arch}` is not supported (llama); load its HF \
                     directory instead"
                ),
            ));
        }
        let k = |name: &str| format!("{arch}.{name}");
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(bad(
                &self.path,
                "tensor `rope_freqs.weight` (rotary frequency factors, Llama 3.1's scaling) is \
                 not supported from GGUF; load the HF directory, whose config.json carries the \
                 scaling",
            ));
        }
        if let Some(kind) = self.str_of(&k("rope.scaling.type"))? {
            if kind != "none" {
                return Err(bad(
                    &self.path,
                    format!(
                        "metadata `{}` = `{kind}` is not supported",
                        k("rope.scaling.type")
                    ),
                ));
            }
        }
        let d_model = self.need_u64(&k("embedding_length"))?;
        let heads = self.need_u64(&k("attention.head_count"))?;
        let kv = self.u64_of(&k("attention.head_count_kv"))?.unwrap_or(heads);
        let head_dim = self
            .u64_of(&k("attention.key_length"))?
            .unwrap_or(d_model.checked_div(heads).unwrap_or(0));
        if let Some(rot) = self.u64_of(&k("rope.dimension_count"))? {
            if rot != head_dim {
                return Err(bad(
                    &self.path,
                    format!(
                        "metadata `{}` = {rot}: partial rotary (head width {head_dim}) is not \
                         supported for llama",
                        k("rope.dimension_count")
                    ),
                ));
            }
        }
        let vocab = match self.u64_of(&k("vocab_size"))? {
            Some(v) => v,
            None => match self.content.tensor_infos.get("token_embd.weight") {
                Some(t) => t.shape.dims()[0] as u64,
                None => self.strings_of("tokenizer.ggml.tokens")?.len() as u64,
            },
        };
        let mut cfg = json!({
            "model_type": "llama",
            "hidden_size": d_model,
            "num_hidden_layers": self.need_u64(&k("block_count"))?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": head_dim,
            "intermediate_size": self.need_u64(&k("feed_forward_length"))?,
            "rms_norm_eps": self.f64_of(&k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            "rope_theta": self.f64_of(&k("rope.freq_base"))?.unwrap_or(10000.0),
            "vocab_size": vocab,
            "tie_word_embeddings": !self.content.tensor_infos.contains_key("output.weight"),
            "attention_bias": self.content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        });
        if let Some(n) = self.u64_of(&k("context_length"))? {
            cfg["max_position_embeddings"] = json!(n);
        }
        for (hf, key) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.u64_of(key)? {
                cfg[hf] = json!(id);
            }
        }
        Ok(cfg)
    }

    /// The normalised config.
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_json(&self.config_json()?, &self.path)
    }

    /// How many tensors of each stored type (`Q4_1`, `F32`, ...) the file holds.
    pub fn tensor_types(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in self.content.tensor_infos.values() {
            *out.entry(format!("{:?}", t.ggml_dtype)).or_insert(0) += 1;
        }
        out
    }

    /// Scalars in the file (from the tensor directory).
    pub fn parameter_count(&self) -> usize {
        self.content
            .tensor_infos
            .values()
            .map(|t| t.shape.elem_count())
            .sum()
    }

    /// HF names of the file's tensors (`llama` layout), with where each comes from; tensors
    /// with no HF counterpart keep their GGUF name.
    fn hf_names(&self, cfg: &ModelConfig) -> HashMap<String, Source> {
        let mut out = HashMap::new();
        for name in self.content.tensor_infos.keys() {
            let (hf, heads) = hf_name(name, cfg);
            out.insert(
                hf,
                Source {
                    gguf_name: name.clone(),
                    unpermute_heads: heads,
                },
            );
        }
        out
    }

    fn read(&self, src: &Source) -> Result<Tensor> {
        let mut f = File::open(&self.path).map_err(|e| bad(&self.path, e.to_string()))?;
        let q = self
            .content
            .tensor(&mut f, &src.gguf_name, &Device::Cpu)
            .map_err(|e| bad(&self.path, format!("tensor `{}`: {e}", src.gguf_name)))?;
        let t = q
            .dequantize(&Device::Cpu)
            .map_err(|e| bad(&self.path, format!("tensor `{}`: {e}", src.gguf_name)))?;
        match src.unpermute_heads {
            Some(h) => unpermute_rows(&t, h)
                .map_err(|e| bad(&self.path, format!("tensor `{}`: {e}", src.gguf_name))),
            None => Ok(t),
        }
    }

    /// The tokenizer described by `tokenizer.ggml.*`, built as HF transformers builds it.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        tokenizer::from_gguf(self)
    }
}

/// The HF name of GGUF tensor `name` in the llama layout, and the head count to unpermute
/// its rows by (q and k projections).
fn hf_name(name: &str, cfg: &ModelConfig) -> (String, Option<usize>) {
    let top = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return (t.to_string(), None);
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return (name.to_string(), None);
    };
    let Some((layer, rest)) = rest.split_once('.') else {
        return (name.to_string(), None);
    };
    let Some((module, param)) = rest.rsplit_once('.') else {
        return (name.to_string(), None);
    };
    let (hf, heads) = match module {
        "attn_norm" => ("input_layernorm", None),
        "attn_q" => ("self_attn.q_proj", Some(cfg.n_heads)),
        "attn_k" => ("self_attn.k_proj", Some(cfg.n_kv_heads)),
        "attn_v" => ("self_attn.v_proj", None),
        "attn_output" => ("self_attn.o_proj", None),
        "ffn_norm" => ("post_attention_layernorm", None),
        "ffn_gate" => ("mlp.gate_proj", None),
        "ffn_up" => ("mlp.up_proj", None),
        "ffn_down" => ("mlp.down_proj", None),
        _ => return (name.to_string(), None),
    };
    (format!("model.layers.{layer}.{hf}.{param}"), heads)
}

/// Undoes llama.cpp's `permute(w, n_head)` on the rows of a q or k projection (weight or bias):
/// within each head, GGUF row `2i + j` is HF row `j * d/2 + i`.
fn unpermute_rows(t: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = dims[0];
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        candle_core::bail!("{rows} rows do not split into {heads} heads of rotary pairs");
    }
    let half = rows / heads / 2;
    let mut split = vec![heads, half, 2];
    split.extend_from_slice(&dims[1..]);
    t.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// The tensors of a GGUF file under their HF names.
pub(crate) struct GgufTensors {
    file: GgufFile,
    sources: HashMap<String, Source>,
}

impl GgufTensors {
    pub(crate) fn new(file: GgufFile, cfg: &ModelConfig) -> Self {
        let sources = file.hf_names(cfg);
        Self { file, sources }
    }

    pub(crate) fn file(&self) -> &GgufFile {
        &self.file
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.sources.keys()
    }

    /// The dequantized f32 tensor `hf_name` on the CPU, rows in HF order.
    pub(crate) fn load(&self, hf_name: &str) -> Result<Tensor> {
        self.file.read(&self.sources[hf_name])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's converter, written out per row: `permute` reshapes (heads, 2, d/2, ...) and
    /// swaps the middle axes, so HF row `h*d + j*d/2 + i` lands at GGUF row `h*d + 2i + j`.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, d, cols) = (3usize, 8usize, 2usize);
        let hf: Vec<f32> = (0..heads * d * cols).map(|x| x as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    for c in 0..cols {
                        let src = (h * d + j * d / 2 + i) * cols + c;
                        let dst = (h * d + 2 * i + j) * cols + c;
                        gguf[dst] = hf[src];
                    }
                }
            }
        }
        let t = Tensor::from_vec(gguf, (heads * d, cols), &Device::Cpu).unwrap();
        let back = unpermute_rows(&t, heads).unwrap();
        assert_eq!(back.flatten_all().unwrap().to_vec1::<f32>().unwrap(), hf);
        let bias = Tensor::from_vec(
            (0..heads * d).map(|x| x as f32).collect::<Vec<_>>(),
            heads * d,
            &Device::Cpu,
        )
        .unwrap();
        let b = unpermute_rows(&bias, heads)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Head 0: GGUF rows 0, 2, 4, 6 are HF rows 0..4, rows 1, 3, 5, 7 are HF rows 4..8.
        assert_eq!(&b[..8], &[0., 2., 4., 6., 1., 3., 5., 7.]);
        assert!(unpermute_rows(&bias, 5).is_err());
    }
}
