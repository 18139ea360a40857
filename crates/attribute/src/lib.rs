//! The neurons of the addition (docs/method.md E6): which single MLP neurons carry a + b, and
//! what they compute. `helixlab neurons` ([`stage::run_neurons`]) runs, on the last-token pairs
//! of `helixlab pairs`:
//!
//! - attribution patching over every neuron (`mlp.hook_post`, last token): gradient of the
//!   clean answer's logit in the corrupt run times (clean - corrupt activation), summed over
//!   pairs, in one forward and one backward per batch ([`forwards::attribution`]);
//! - the top neurons patched exactly, one at a time, beside their attribution, with their
//!   total and direct effects ([`forwards::neuron_effects`]);
//! - the sparsity sweep: the top k neurons kept, every other one mean-ablated
//!   ([`forwards::evaluate`]);
//! - the top neurons' preactivations (`mlp.hook_pre`) over the whole a x b grid, their dominant
//!   periods ([`periods`]) and closed-form fits in a, b and a+b ([`neuron_fit`]), and the fits
//!   patched in place of the preactivations.
//!
//! A key design decision is that the neuron fits are linear least squares, not SGD: with the
//! periods fixed the fit is exact and takes milliseconds for every neuron at once.
//!
//! Not here: drawing the pairs (patch crate), the components' circuit (read from
//! `component_roles.parquet` when it exists), the figures (report crate).
#![deny(missing_docs)]

pub mod forwards;
pub mod logit_lens;
pub mod neuron_fit;
pub mod neuron_grads;
pub mod periods;
pub mod stage;

/// Errors of the stage: those of every stage that runs the model.
pub use helixlab_study::{Result, StageError as AttributeError};
