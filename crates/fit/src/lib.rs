//! The fit stage: how well does a generalized helix describe the representation of numbers,
//! against baselines and controls? (docs/method.md E3.)
//!
//! For every analysed (site, layer), one row per number (activations averaged per number), the
//! fit of [`linear_fit`] with each variant of [`variants`]: the helix with the paper's periods,
//! with the periods `spectral` discovered, with every subset of the paper's periods, a circle,
//! scaled polynomials, and PCA-k reconstructions as baselines; controls with random periods,
//! with the numbers shuffled, and the continuity test. Each variant is scored in sample and on
//! numbers held out by a seeded split drawn once and stored (`split.parquet`).
//!
//! Pure analysis of tables: this crate never loads a model. Not here: using the fits causally
//! (crate `patch`).
#![deny(missing_docs)]

/// The bases live in `helixlab-numeric`, shared with `patch`, which evaluates stored fits.
pub use helixlab_numeric::basis;
pub mod linear_fit;
pub mod stage;
pub mod variants;

/// Errors of the stage.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// Reading or writing a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// A decomposition failed.
    #[error(transparent)]
    Numeric(#[from] helixlab_numeric::NumericError),
    /// The activations or settings do not support the fit.
    #[error("{0}")]
    Input(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, FitError>;
