//! Study files: a pipeline TOML names a model, a task, the sites to extract, sample sizes,
//! seeds and the output directory. Every stage reads the same file, so one file describes one
//! study from accuracy to report.
//!
//! The main type is [`Pipeline`] ([`Pipeline::from_file`]); [`Task`] turns the task section
//! into concrete [`Problem`]s and their prompts.
//!
//! A key design decision is that positions are named (`a`, `b`, `x`, `last`) and resolved by
//! tokenizing each prompt, not written as fixed offsets: the same pipeline then works for
//! tokenizers that split the prefix differently, and a number that is not a single token is
//! caught before any heavy work, with the offending number named.
//!
//! The values a study names are types ([`Site`], [`Position`], [`NumberLabel`], [`Dtype`],
//! [`Device`], [`FitName`], [`PatchKind`]) that print and parse as the study file spells them,
//! so a misspelt value is refused when the file is read and the stages exchange no strings.
//! Hook names come from `helixlab-hooks`, so this crate (and every analysis crate) builds
//! without the model runtime.
//!
//! Not here: running anything. The stages (accuracy, extract, ...) read a [`Pipeline`].
#![deny(missing_docs)]

mod analysis;
mod file;
mod task;
mod vocab;

pub use analysis::{
    AnalysisSection, AnalysisTarget, ClockSection, FitSection, NeuronsSection, PatchSection,
    SpectralSection,
};
pub use file::{ExtractSection, Layers, ModelSection, OutputSection, Pipeline, PipelineError};
pub use task::{Problem, Task, TaskKind};
pub use vocab::{period_list, Device, Dtype, FitName, NumberLabel, PatchKind, Position, Site};
