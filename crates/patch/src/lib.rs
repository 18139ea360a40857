//! Causal tests: is the fitted helix the representation the model uses? (method.md E3.)
//!
//! `helixlab pairs` draws clean/corrupt pairs of correct problems by the paper's rules
//! ([`pairs`]); `helixlab patch` runs each clean prompt with the activation at the analysed
//! operand's token replaced, layer by layer, by a patch for the corrupt number ([`patches`]):
//! the corrupt activation itself (`layer`), its PCA-k projection, every fit the `fit` stage
//! stored (helix, discovered periods, subsets, circle, polynomials, random periods), or the
//! mean over numbers (an ablation that should recover nothing); and scores how far the answer
//! moves to the corrupt one ([`stage`]).
//!
//! A key design decision is that the patch values come from the tables, not from extra
//! forwards: the corrupt prompt's own activation is its row in the extraction, and a fit's
//! prediction is its coefficients times the basis. The operand is the `[analysis]` position:
//! `a` gives the paper's a-token experiment, `b` the b-token one (with fits at b). One clean forward per batch captures
//! the residual stream of every layer; each (layer, patch) then resumes at the patched layer.
//!
//! Not here yet: the last-token experiment and component effects (E4, E5).
#![deny(missing_docs)]

pub mod components;
pub mod effects;
pub mod gradients;
pub mod last;
pub mod pairs;
pub mod patches;
pub mod stage;

/// Errors of the stages.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] helixlab_model::ModelError),
    /// Reading or writing a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// A decomposition failed.
    #[error(transparent)]
    Numeric(#[from] helixlab_numeric::NumericError),
    /// The tables or settings do not support the experiment.
    #[error("{0}")]
    Input(String),
}

impl From<candle_core::Error> for PatchError {
    fn from(e: candle_core::Error) -> Self {
        PatchError::Model(e.into())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, PatchError>;
