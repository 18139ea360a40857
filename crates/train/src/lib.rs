//! Trains the toy adder: a 2-layer GPT-2 that adds two numbers 0..=99 and, with auxiliary
//! tasks, stores numbers with period-10 Fourier features, exported as an HF checkpoint that
//! both helixlab's runtime and HF transformers load unchanged.
//!
//! The main entry points are [`train`] (a [`Recipe`] and a seed to a [`Trained`] model) and
//! [`export`] (to a directory).
//!
//! A key design decision is to train a separate, minimal GPT-2 ([`model::TinyGpt2`]) instead
//! of reusing the inference runtime: training needs parameters as autograd variables and plain
//! (differentiable) ops everywhere, inference wants fused kernels and hooks. The export writes
//! HF's names and layouts, and parity tests check that the runtime and HF transformers agree
//! on the exported checkpoint, which is what ties the two together.
//!
//! Not here: analysing the trained model (that is what the study stages are for).
#![deny(missing_docs)]

pub mod data;
pub mod export;
pub mod gelu;
pub mod model;
pub mod recipe;
pub mod trainer;
pub mod vocab;

use std::path::PathBuf;

pub use export::{export, Provenance};
pub use recipe::Recipe;
pub use trainer::{train, StepLog, Trained};

/// Errors from training or exporting.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The output directory exists and overwriting was not asked for.
    #[error("{0} exists (use --force to replace it)")]
    Exists(PathBuf),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
