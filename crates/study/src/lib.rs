//! What every stage that runs the model shares (accuracy, extract, pairs-based patching,
//! components, neuron gradients): the study's `[model]` loaded once with the identity its
//! manifests record ([`StudyModel::load`]), the study's sites resolved against that model
//! ([`StudyModel::sites`]), and a forward over prompts that shares their common prefix where
//! the study allows it ([`StudyModel::forward_prompts`]).
//!
//! A key design decision is that this is the only place a study's dtype and device become
//! candle values, and the only place a model's identity is described: two stages can then
//! never disagree on what "the same model" means.
//!
//! Not here: tasks and prompts (extract), manifests and tables (store), any stage's work.
#![deny(missing_docs)]

pub mod answers;
pub mod pairs;

use std::path::PathBuf;

use helixlab_model::{
    dtype_name, shared_prefix_split, Batch, DType, Device, ForwardOutput, ForwardRequest,
    HookPoint, KvCache, LoadOptions, Model, Positions, Tokenizer,
};
use helixlab_pipeline::{ModelSection, Pipeline, Site};
use helixlab_store::{ModelFacts, ModelIdentity};

/// Errors of the stages that run the model (accuracy, extract, pairs, the patching stages):
/// one type for all of them, so an error keeps its kind as it crosses from loading to the
/// stage's own work.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The model or tokenizer failed.
    #[error(transparent)]
    Model(#[from] helixlab_model::ModelError),
    /// Reading or writing a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// A decomposition failed.
    #[error(transparent)]
    Numeric(#[from] helixlab_numeric::NumericError),
    /// The model produced NaN or infinite values (bad weights, or an overflow in half
    /// precision); nothing is written from them.
    #[error("non-finite values (NaN or Inf) in {what}: the weights or the computation produced them (try dtype = \"f32\"); nothing was written")]
    NonFinite {
        /// Where: the hook or the logits, and the prompt.
        what: String,
    },
    /// The study does not fit the model or its tokenizer (a site or layer the model lacks, a
    /// number that is not one token, a position that does not resolve).
    #[error("{pipeline}: {message}")]
    Study {
        /// The pipeline file.
        pipeline: PathBuf,
        /// What is wrong, naming the field, number or position.
        message: String,
    },
    /// The tables or settings do not support the experiment.
    #[error("{0}")]
    Input(String),
}

impl From<candle_core::Error> for StageError {
    fn from(e: candle_core::Error) -> Self {
        StageError::Model(e.into())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StageError>;

/// The candle dtype and device a study's `[model]` asks for.
pub fn load_options(m: &ModelSection) -> Result<LoadOptions> {
    candle_options(m.dtype, m.device)
}

/// The candle dtype and device of a study's (or the command line's) dtype and device; a GPU
/// this build cannot use is an error that names the cargo feature.
pub fn candle_options(
    dtype: helixlab_pipeline::Dtype,
    device: helixlab_pipeline::Device,
) -> Result<LoadOptions> {
    let wanted = device;
    let dtype = match dtype {
        helixlab_pipeline::Dtype::F32 => DType::F32,
        helixlab_pipeline::Dtype::Bf16 => DType::BF16,
        helixlab_pipeline::Dtype::F16 => DType::F16,
    };
    let gpu = |r: candle_core::Result<Device>, feature: &str| {
        r.map_err(|e| {
            StageError::Model(helixlab_model::ModelError::BadRequest(format!(
                "device `{wanted}` is not available ({e}); build with `--features {feature}`"
            )))
        })
    };
    let device = match wanted {
        helixlab_pipeline::Device::Cpu => Device::Cpu,
        helixlab_pipeline::Device::Cuda(n) => gpu(Device::new_cuda(n), "cuda")?,
        helixlab_pipeline::Device::Metal => gpu(Device::new_metal(0), "metal")?,
    };
    Ok(LoadOptions { dtype, device })
}

/// The study's model, its tokenizer and the identity its outputs' manifests record.
pub struct StudyModel {
    /// The model.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// What the manifests say produced a table.
    pub identity: ModelIdentity,
}

impl StudyModel {
    /// Loads the pipeline's `[model]` (weights and tokenizer, from local files only).
    pub fn load(p: &Pipeline) -> Result<Self> {
        let dir = p.model_dir();
        let opts = load_options(&p.model)?;
        let tokenizer = Tokenizer::for_checkpoint(&dir)?;
        let model = Model::load(&dir, &opts)?;
        let identity = ModelIdentity::describe(
            p.model.fetched_from.as_deref().unwrap_or(&p.model.dir),
            ModelFacts {
                architecture: model.config().arch.model_type(),
                config_sha256: model.config_sha256(),
                weight_files: model.weight_files(),
                stored_types: model.stored_types(),
                compute_dtype: dtype_name(model.dtype()),
            },
            p.model.dtype.name(),
            &p.model.device.to_string(),
        )?;
        Ok(StudyModel {
            model,
            tokenizer,
            identity,
        })
    }

    /// Every (site, layer, hook) the pipeline extracts, checked against the model (layers
    /// that exist, hooks the architecture has). Every model stage calls it, so a bad site
    /// fails before any work, whichever stage runs first.
    pub fn sites(&self, p: &Pipeline) -> Result<Vec<(Site, usize, HookPoint)>> {
        let bad = |message: String| StageError::Study {
            pipeline: p.path.clone(),
            message,
        };
        let layers = p
            .extract
            .layers
            .resolve(self.model.config().n_layers)
            .map_err(|m| bad(format!("extract.layers: {m}")))?;
        let mut out = Vec::new();
        for site in &p.extract.sites {
            for &layer in &layers {
                let hook = site.at(layer);
                self.model
                    .check_hook(hook)
                    .map_err(|e| bad(format!("extract.sites: {e}")))?;
                out.push((site.clone(), layer, hook));
            }
        }
        Ok(out)
    }

    /// One forward of a batch of prompts under `req`: through
    /// [`Model::forward_shared_prefix`] when the study shares prefixes (`[extract]
    /// share_prefixes`), the prompts have one length and sharing saves work, otherwise the
    /// plain forward.
    pub fn forward_prompts(
        &self,
        p: &Pipeline,
        seqs: &[Vec<u32>],
        req: &ForwardRequest,
    ) -> Result<ForwardOutput> {
        forward_prompts(p, &self.model, seqs, req)
    }
}

/// The clean forward of a batch that patched forwards of the same batch resume from. When the
/// study shares prefixes (`[extract] share_prefixes`, on by default) it records every block's
/// keys and values, so that [`patched_forward`] runs only the positions from the patched one
/// on (the earlier ones cannot see the patch); otherwise, or for a padded batch, it is the
/// plain forward and patched forwards run whole.
pub fn clean_forward(
    p: &Pipeline,
    model: &Model,
    batch: &Batch,
    req: &ForwardRequest,
) -> Result<(ForwardOutput, Option<KvCache>)> {
    if p.extract.share_prefixes {
        Ok(model.forward_recording(batch, req)?)
    } else {
        Ok((model.forward(batch, req)?, None))
    }
}

/// A patched forward of `batch`, over its clean run's cache when there is one
/// ([`clean_forward`]).
pub fn patched_forward(
    model: &Model,
    batch: &Batch,
    cache: Option<&KvCache>,
    req: &ForwardRequest,
) -> Result<ForwardOutput> {
    Ok(match cache {
        Some(cache) => model.forward_cached(cache, req)?,
        None => model.forward(batch, req)?,
    })
}

/// [`StudyModel::forward_prompts`] for a model held elsewhere.
pub fn forward_prompts(
    p: &Pipeline,
    model: &Model,
    seqs: &[Vec<u32>],
    req: &ForwardRequest,
) -> Result<ForwardOutput> {
    // Attention patterns split over the prefix's keys, and per-sequence positions, are not
    // reassembled by the shared-prefix forward.
    let unshared = req.captures.iter().any(|c| {
        matches!(c.hook, HookPoint::AttnPattern(_)) || matches!(c.positions, Positions::Each(_))
    });
    if p.extract.share_prefixes && !unshared && model.config().arch.is_causal_lm() {
        if let Some(split) = shared_prefix_split(seqs) {
            return Ok(model.forward_shared_prefix(seqs, split, req)?);
        }
    }
    Ok(model.forward(&model.batch(seqs)?, req)?)
}
