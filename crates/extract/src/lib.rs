//! The first two stages of a study: `accuracy` (every prompt of the task through the model,
//! what it answers -> problems.parquet) and `extract` (activations at the pipeline's sites,
//! layers and named positions -> hive-partitioned Parquet).
//!
//! Reads a [`helixlab_pipeline::Pipeline`] and a model directory; writes through
//! `helixlab-store`. A key design decision is that both stages check the whole task against
//! the tokenizer first ([`prompts::encode_task`]): every operand and answer must be one token
//! and every named position must resolve, or the stage stops before loading weights into a
//! forward, naming the offending number. Extraction then runs each batch once, capturing
//! every missing (site, layer) together, and stops the forward after the deepest layer needed.
//!
//! Not here: analysis of the activations (spectral, fit stages).
#![deny(missing_docs)]

pub mod accuracy;
pub mod extraction;
pub mod prompts;

use std::path::PathBuf;

use helixlab_model::{
    dtype_name, parse_device, parse_dtype, shared_prefix_split, ForwardOutput, ForwardRequest,
    HookPoint, LoadOptions, Model, Tokenizer,
};
use helixlab_pipeline::{Pipeline, Site};
use helixlab_store::{ModelFacts, ModelIdentity};

/// Errors of the stages.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The model or tokenizer failed.
    #[error(transparent)]
    Model(#[from] helixlab_model::ModelError),
    /// Reading or writing a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// The task does not fit the tokenizer (a number is not one token, a position does not
    /// resolve).
    #[error("{pipeline}: {message}")]
    Task {
        /// The pipeline file.
        pipeline: PathBuf,
        /// What is wrong, naming the number or position.
        message: String,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ExtractError>;

pub use helixlab_store::stage::{NoProgress, Outcome, Progress};

/// Loads the pipeline's model and its tokenizer.
pub fn load_model(p: &Pipeline) -> Result<(Model, Tokenizer)> {
    let dir = p.model_dir();
    let opts = LoadOptions {
        dtype: parse_dtype(&p.model.dtype)?,
        device: parse_device(&p.model.device)?,
    };
    let tok = Tokenizer::for_checkpoint(&dir)?;
    let model = Model::load(&dir, &opts)?;
    Ok((model, tok))
}

/// The identity of the pipeline's model, as recorded in manifests.
pub fn model_identity(p: &Pipeline, model: &Model) -> Result<ModelIdentity> {
    Ok(ModelIdentity::describe(
        &p.model.dir,
        ModelFacts {
            architecture: model.config().arch.model_type(),
            config_sha256: model.config_sha256(),
            weight_files: model.weight_files(),
            stored_types: model.stored_types(),
            compute_dtype: dtype_name(model.dtype()),
        },
        &p.model.dtype,
        &p.model.device,
    )?)
}

/// Every (site, layer, hook) the pipeline extracts, checked against the model (layers that
/// exist, hooks the architecture has). Every stage calls it, so a bad site fails before any
/// work, whichever stage runs first.
pub fn resolve_sites(p: &Pipeline, model: &Model) -> Result<Vec<(Site, usize, HookPoint)>> {
    let layers = p
        .extract
        .layers
        .resolve(model.config().n_layers)
        .map_err(|message| ExtractError::Task {
            pipeline: p.path.clone(),
            message: format!("extract.layers: {message}"),
        })?;
    let mut out = Vec::new();
    for site in &p.extract.sites {
        for &layer in &layers {
            let hook = site.at(layer);
            model.check_hook(hook).map_err(|e| ExtractError::Task {
                pipeline: p.path.clone(),
                message: format!("extract.sites: {e}"),
            })?;
            out.push((site.clone(), layer, hook));
        }
    }
    Ok(out)
}

/// The command line, for manifests.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// One forward of a batch of prompts under `req`: through [`Model::forward_shared_prefix`]
/// when the study shares prefixes (`[extract] share_prefixes`), the prompts have one length
/// and sharing saves work, otherwise the plain forward.
pub fn forward_prompts(
    p: &Pipeline,
    model: &Model,
    seqs: &[Vec<u32>],
    req: &ForwardRequest,
) -> Result<ForwardOutput> {
    let pattern = req
        .captures
        .iter()
        .any(|c| matches!(c.hook, HookPoint::AttnPattern(_)));
    if p.extract.share_prefixes && !pattern && model.config().arch.is_causal_lm() {
        if let Some(split) = shared_prefix_split(seqs) {
            return Ok(model.forward_shared_prefix(seqs, split, req)?);
        }
    }
    Ok(model.forward(&model.batch(seqs)?, req)?)
}
