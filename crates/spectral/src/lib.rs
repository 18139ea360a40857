//! The spectral stage: is the representation of numbers periodic, and with which periods?
//! (docs/method.md E2 and section 5.)
//!
//! For every analysed (site, layer), one row per number (activations averaged per number):
//! the Fourier spectrum along the number axis, raw and detrended, per number window
//! ([`fourier`]); PCA, raw and standardised, with how linear each component is in the number
//! ([`geometry`]); pairwise distances and cosine similarities; held-out mod-T probes with a
//! shuffled-label null ([`separability`]); and the strongest periods found by a greedy search
//! ([`periods`]), which `fit` uses as the model's own periods.
//!
//! Pure analysis of tables: this crate reads activation partitions and writes result tables,
//! and never loads a model. Not here: fitting the helix (crate `fit`).
#![deny(missing_docs)]

pub mod fourier;
pub mod geometry;
pub mod periods;
pub mod separability;
pub mod stage;

/// Errors of the stage.
#[derive(Debug, thiserror::Error)]
pub enum SpectralError {
    /// Reading or writing a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// A decomposition failed.
    #[error(transparent)]
    Numeric(#[from] helixlab_numeric::NumericError),
    /// The activations do not support the analysis (too few numbers, gaps).
    #[error("{0}")]
    Input(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, SpectralError>;
