//! Weights of a checkpoint: one safetensors file, a sharded safetensors index,
//! pytorch_model.bin, a sharded .bin index, or a GGUF file (dequantized, under HF names), read
//! one tensor at a time when asked for and checked against the shape the config implies, with
//! errors that name the tensor and the file or directory.
//!
//! Two dtypes: weight matrices (linear layers, embedding tables) are held in the run dtype;
//! vectors (norms, biases) and activations in the compute dtype, which is f32 on the CPU when
//! the run dtype is bf16 or f16 (candle has no fast half-precision CPU arithmetic; see
//! `half_matmul`) and the run dtype otherwise.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{pickle::PthTensors, DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, GgufTensors};
use crate::safetensors_reader::SafetensorsShards;

/// The dtype of activations, norms and biases for weights held in `dtype` on `device`: f32 on
/// the CPU for bf16 and f16 weights, else `dtype` itself.
pub fn compute_dtype(dtype: DType, device: &Device) -> DType {
    match dtype {
        DType::BF16 | DType::F16 if device.is_cpu() => DType::F32,
        other => other,
    }
}

enum Backend {
    Safetensors(SafetensorsShards),
    Pth {
        shards: Vec<PthTensors>,
        routing: HashMap<String, usize>,
    },
    Gguf(GgufTensors),
}

/// The tensors of a checkpoint, converted on access to one dtype and device.
pub struct Weights {
    dir: PathBuf,
    backend: Backend,
    names: Vec<String>,
    /// What weight matrices are held in.
    dtype: DType,
    /// What vectors (and activations) are computed in.
    compute: DType,
    device: Device,
    /// The files the tensors come from, for provenance.
    pub files: Vec<PathBuf>,
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let bad = |message: String| ModelError::BadFile {
        path: index.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let name = file
            .as_str()
            .ok_or_else(|| bad(format!("weight_map value {file} is not a file name")))?;
        // A shard lives in the model directory: a name that climbs out of it (`..`) or is
        // absolute would open any file on the machine. (Links inside the directory, as in the
        // HF cache's snapshots, are followed as usual.)
        let confined = Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !confined || name.is_empty() {
            return Err(bad(format!(
                "weight_map names the shard {name:?}, which is not a file inside the model \
                 directory"
            )));
        }
        let p = dir.join(name);
        if !files.contains(&p) {
            if !p.exists() {
                return Err(ModelError::MissingFile {
                    path: p,
                    what: format!("a shard listed in {}", index.display()),
                });
            }
            files.push(p);
        }
    }
    Ok(files)
}

impl Weights {
    /// Opens the weights of `dir`, preferring safetensors over pytorch pickles.
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let st = dir.join("model.safetensors");
        let st_index = dir.join("model.safetensors.index.json");
        let bin = dir.join("pytorch_model.bin");
        let bin_index = dir.join("pytorch_model.bin.index.json");
        let (backend, files) = if st.exists() || st_index.exists() {
            let files = if st.exists() {
                vec![st]
            } else {
                shard_files(&st_index)?
            };
            (
                Backend::Safetensors(SafetensorsShards::open(&files)?),
                files,
            )
        } else if bin.exists() || bin_index.exists() {
            let files = if bin.exists() {
                vec![bin]
            } else {
                shard_files(&bin_index)?
            };
            let mut shards = Vec::new();
            let mut routing = HashMap::new();
            for (i, f) in files.iter().enumerate() {
                let p = PthTensors::new(f, None).map_err(|e| ModelError::BadFile {
                    path: f.clone(),
                    message: format!("cannot read pytorch checkpoint: {e}"),
                })?;
                for name in p.tensor_infos().keys() {
                    routing.insert(name.clone(), i);
                }
                shards.push(p);
            }
            (Backend::Pth { shards, routing }, files)
        } else {
            return Err(ModelError::MissingFile {
                path: dir.join("model.safetensors"),
                what: "the weights: model.safetensors, model.safetensors.index.json, \
                       pytorch_model.bin or pytorch_model.bin.index.json"
                    .into(),
            });
        };
        Ok(Self::with_backend(dir, backend, files, dtype, device))
    }

    /// The tensors of a GGUF file under the HF names of `cfg`'s architecture.
    pub fn open_gguf(file: GgufFile, cfg: &ModelConfig, dtype: DType, device: &Device) -> Self {
        let path = file.path().to_path_buf();
        Self::with_backend(
            &path.clone(),
            Backend::Gguf(GgufTensors::new(file, cfg)),
            vec![path],
            dtype,
            device,
        )
    }

    fn with_backend(
        dir: &Path,
        backend: Backend,
        files: Vec<PathBuf>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        let mut names: Vec<String> = match &backend {
            Backend::Safetensors(m) => m.entries().map(|(n, _)| n.clone()).collect(),
            Backend::Pth { routing, .. } => routing.keys().cloned().collect(),
            Backend::Gguf(g) => g.names().cloned().collect(),
        };
        names.sort();
        Self {
            dir: dir.to_path_buf(),
            backend,
            names,
            dtype,
            compute: compute_dtype(dtype, device),
            device: device.clone(),
            files,
        }
    }

    /// What weight matrices are held in (the run dtype).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// What vectors and activations are computed in (see [`compute_dtype`]).
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// The device tensors are put on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// How many tensors of each stored type the checkpoint holds (`F32`, `BF16` for
    /// safetensors and pickles; `Q4_1`, `Q8_0`, ... for GGUF).
    pub fn stored_types(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        match &self.backend {
            Backend::Safetensors(m) => {
                for (_, e) in m.entries() {
                    *out.entry(format!("{:?}", e.dtype).to_uppercase())
                        .or_insert(0) += 1;
                }
            }
            Backend::Pth { shards, .. } => {
                for i in shards.iter().flat_map(|s| s.tensor_infos().values()) {
                    *out.entry(format!("{:?}", i.dtype).to_uppercase())
                        .or_insert(0) += 1;
                }
            }
            Backend::Gguf(g) => out = g.file().tensor_types(),
        }
        out
    }

    /// The number of scalars in the checkpoint (read from headers, no data loaded).
    pub fn parameter_count(&self) -> usize {
        match &self.backend {
            Backend::Safetensors(m) => m
                .entries()
                .map(|(_, e)| e.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d)))
                .fold(0usize, usize::saturating_add),
            Backend::Pth { shards, .. } => shards
                .iter()
                .flat_map(|s| s.tensor_infos().values())
                .map(|i| i.layout.shape().elem_count())
                .sum(),
            Backend::Gguf(g) => g.file().parameter_count(),
        }
    }

    /// Every tensor name in the checkpoint, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The layers the checkpoint's tensor names index (`h.3.`, `layers.3.`, `layer.3.`), the
    /// largest first, with an example name: a config whose layer count is smaller leaves
    /// those tensors unused.
    pub fn deepest_layer(&self) -> Option<(usize, &str)> {
        self.names
            .iter()
            .filter_map(|n| {
                let parts: Vec<&str> = n.split('.').collect();
                parts.windows(2).find_map(|w| {
                    matches!(w[0], "h" | "layers" | "layer" | "blocks")
                        .then(|| w[1].parse::<usize>().ok())
                        .flatten()
                        .map(|l| (l, n.as_str()))
                })
            })
            .max_by_key(|x| x.0)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    /// The vector (or any tensor computed with as it is) `name`, checked to have `shape`, in
    /// the compute dtype on the device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fetch(name, shape, self.compute)
    }

    /// The weight matrix `name`, checked to have `shape`, in the run dtype on the device.
    pub fn get_matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fetch(name, shape, self.dtype)
    }

    fn fetch(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if !self.contains(name) {
            return Err(ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
                count: self.names.len(),
                examples: self
                    .names
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let t = match &self.backend {
            Backend::Safetensors(m) => m.load(name)?,
            Backend::Pth { shards, routing } => shards[routing[name]]
                .get(name)?
                .expect("name listed by the shard's own index"),
            Backend::Gguf(g) => g.load(name)?,
        };
        if t.dims() != shape {
            return Err(ModelError::TensorShape {
                dir: self.dir.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                got: t.dims().to_vec(),
            });
        }
        Ok(t.to_dtype(dtype)?.to_device(&self.device)?)
    }

    /// The tensor `name`, checked to have `shape`, in f32 whatever the run dtype (what HF
    /// upcasts before use, such as Gemma's norm weights).
    pub fn get_f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.fetch(name, shape, DType::F32)
    }

    /// A view that prefixes names with `prefix.`.
    pub fn pp(&self, prefix: &str) -> Vb<'_> {
        Vb {
            w: self,
            prefix: prefix.to_string(),
        }
    }
}

/// A prefixed view of [`Weights`], as the module tree of an HF model spells it.
#[derive(Clone)]
pub struct Vb<'a> {
    w: &'a Weights,
    prefix: String,
}

impl<'a> Vb<'a> {
    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A deeper view.
    pub fn pp(&self, name: impl std::fmt::Display) -> Vb<'a> {
        Vb {
            w: self.w,
            prefix: self.full(&name.to_string()),
        }
    }

    /// The vector `name` under this prefix, checked to have `shape`, in the compute dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.w.get(&self.full(name), shape)
    }

    /// The weight matrix `name` under this prefix, checked to have `shape`, in the run dtype.
    pub fn get_matrix(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.w.get_matrix(&self.full(name), shape)
    }

    /// The tensor `name` under this prefix, checked to have `shape`, in f32.
    pub fn get_f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.w.get_f32(&self.full(name), shape)
    }

    /// The checkpoint's weights (dtypes, device).
    pub fn weights(&self) -> &'a Weights {
        self.w
    }

    /// Whether `name` exists under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.w.contains(&self.full(name))
    }
}
