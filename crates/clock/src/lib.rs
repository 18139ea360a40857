//! `helixlab clock`: why the model adds with a clock (the paper's appendix, Figs 14 and 36-42),
//! from tables other stages wrote, without running a model.
//!
//! - [`line`]: a line fitted to the first PCs of the numbers' representation (layer 0 by
//!   default), and "linear addition", which adds two numbers on that line and reads the answer
//!   back, against the model's own accuracy (Fig 36);
//! - [`distances`]: how far the representation of a + dn is from a's, against dn (Fig 14);
//! - [`carry`]: the model's errors of -10 against its other errors, and how often each needed a
//!   carry, with a chi-squared test (Figs 37-38);
//! - [`logit_shape`]: the final logits over every possible answer, per problem: the slope of a
//!   fitted line (a bias to small answers) and the top period of what remains (Figs 41-42).
//!
//! Not here: the neuron logit lens (it needs the model's weights; crate `attribute`), the error
//! histogram (the report draws it from problems.parquet).
#![deny(missing_docs)]

pub mod carry;
pub mod distances;
pub mod line;
pub mod logit_shape;
pub mod stage;

/// Errors of the stage.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// Reading or writing a table failed.
    #[error(transparent)]
    Store(#[from] helixlab_store::StoreError),
    /// A decomposition failed.
    #[error(transparent)]
    Numeric(#[from] helixlab_numeric::NumericError),
    /// The tables do not support the analysis (too few numbers, a missing table).
    #[error("{0}")]
    Input(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ClockError>;
