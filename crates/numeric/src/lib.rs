//! The linear algebra the analysis stages (spectral, fit, patch) share: the helix and
//! polynomial bases of a number with typed function names ([`basis`]), PCA, minimum-norm
//! least squares, ridge-classifier probes, R^2, seeded splits, and the helices of several
//! numbers (a, b, a+b) that `patch` fits at the last token and on heads and MLPs.
//! Beside them, [`logits`]: the reductions the patching stages make over each row of f32
//! logits (log-sum-exp, argmax).
//!
//! The linear algebra is f64 on [`ndarray`] arrays, with the decompositions of `linfa-linalg`
//! (pure Rust, exact SVD; no BLAS to link). Each routine follows the numpy / scikit-learn definition
//! it is checked against (`tools/make_numeric_reference.py` writes the reference values the
//! tests compare with): PCA as `sklearn.decomposition.PCA` (full SVD, `svd_flip` signs),
//! least squares as `numpy.linalg.lstsq` (rcond = eps * max(n, p)), the probe as
//! `StandardScaler` + `RidgeClassifier`.
//!
//! Not here: models, tables, or which periods a study uses. Those are the stage crates' business.
#![deny(missing_docs)]

pub mod basis;
pub mod logits;
pub mod lstsq;
pub mod multi_helix;
pub mod pca;
pub mod probe;
pub mod split;
pub mod stats;
pub mod trend;

pub use basis::{Basis, BasisKind, BasisTerm};
pub use lstsq::lstsq;
pub use pca::Pca;
pub use probe::RidgeProbe;

/// Errors of the numeric routines.
#[derive(Debug, thiserror::Error)]
pub enum NumericError {
    /// A decomposition failed (e.g. did not converge on non-finite input).
    #[error("linear algebra: {0}")]
    Linalg(#[from] linfa_linalg::LinalgError),
    /// Inputs of the wrong shape or size.
    #[error("{0}")]
    Shape(String),
}

/// Result alias.
pub type Result<T> = std::result::Result<T, NumericError>;
