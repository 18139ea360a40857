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

/// Errors of the stages: those of every stage that runs the model.
pub use helixlab_study::{Result, StageError as ExtractError};

pub use helixlab_store::stage::{NoProgress, Outcome, Progress};
