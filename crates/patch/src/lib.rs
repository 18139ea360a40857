//! Causal tests: is the fitted helix the representation the model uses, and which components
//! compute a + b with it? (docs/method.md E3-E6.) One module per command:
//!
//! - [`pairs`] (`helixlab pairs`): clean/corrupt pairs of correct problems by the paper's
//!   rules.
//! - [`patching`] (`helixlab patch`, E3): each clean prompt run with the activation at the
//!   analysed operand's token replaced, layer by layer, by a patch for the corrupt number
//!   ([`patches`]): the corrupt activation itself (`layer`), its PCA-k projection, every fit
//!   the `fit` stage stored (helix, discovered periods, subsets, circle, polynomials, random
//!   periods), or the mean over numbers (an ablation that should recover nothing); scored by
//!   how far the answer moves to the corrupt one.
//! - [`patch_last`] (`helixlab patch-last`, E4): the last token as helix(a+b), helix(a,b) and
//!   helix(a,b,a+b).
//! - [`components`] (`helixlab components`, E5): total and direct effects of every MLP,
//!   attention layer and head, the MLP circuit, head types ([`effects`] holds the rows), and
//!   path patching from the top heads to later heads and MLPs ([`path_patching`]), and where
//!   the top heads look ([`head_attention`]).
//!
//! [`inputs`] is what they read in common: the analysed operand, the study's model with the
//! stage's run record, the drawn pairs.
//!
//! A key design decision is that the patch values come from the tables, not from extra
//! forwards: the corrupt prompt's own activation is its row in the extraction, and a fit's
//! prediction is its coefficients times the basis. The operand is the `[analysis]` position:
//! `a` gives the paper's a-token experiment, `b` the b-token one (with fits at b). One clean forward per batch captures
//! the residual stream of every layer; each (layer, patch) then resumes at the patched layer.
//!
//! Not here: the neurons of E6 (crates/attribute).
#![deny(missing_docs)]

pub mod components;
pub mod effects;
pub mod head_attention;
pub mod inputs;
pub mod pairs;
pub mod patch_last;
pub mod patches;
pub mod patching;
pub mod path_patching;

/// Errors of the stages: those of every stage that runs the model.
pub use helixlab_study::{Result, StageError as PatchError};
