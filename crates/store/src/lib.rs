//! The Parquet side of helixlab: table schemas, streaming writers (arrow + parquet), readers
//! (polars; the parquet crate for the reads every stage starts with), run manifests and
//! atomic writes. Stages meet only through what this crate writes.
//!
//! The run: [`RunLayout`] names the path of every table of a run once ([`tables`]);
//! [`StageRun`] is the skeleton every stage runs through (inputs recorded by the hash of their
//! manifests, the manifest built, freshness decided, the work timed, each table written
//! atomically); [`Frame`] is how stages and the report read a result table (typed columns,
//! errors that name the table).
//!
//! Tables: `problems.parquet` ([`problems`]) and activation partitions
//! `activations/site=<hook>/layer=<l>/part-0.parquet` ([`activations`]). Every table carries
//! its [`Manifest`] (stage, settings, input hashes, model identity, tool version) both as a
//! `helixlab.manifest` key-value entry in the Parquet footer and as a JSON file beside it.
//!
//! A key design decision is that completeness is marked by the manifest file, written last:
//! data goes to a temporary file that is renamed into place, then the manifest is written
//! (also by rename). A stage killed midway leaves at most a data file without a manifest,
//! which every reader and every rerun treats as absent. A stage whose manifest matches its
//! current settings and inputs does nothing, which is what makes reruns free. The manifest
//! also records the sha256 of its data file, which every reader checks, so a file changed,
//! truncated or copied in afterwards is refused rather than read ([`Manifest::verified_for`]);
//! weights are identified by content the same way ([`content_hash`]), and [`lock`] keeps two
//! processes off one stage of one run.
//!
//! Not here: computing anything. Schemas and I/O only.
#![deny(missing_docs)]

pub mod activations;
pub mod atomic;
pub mod content_hash;
pub mod frame;
pub mod inspect;
pub mod lock;
pub mod manifest;
pub mod problems;
pub mod read;
pub mod run;
pub mod shard;
pub mod stage;
pub mod table;

use std::path::PathBuf;

pub use frame::Frame;
pub use manifest::{Manifest, ModelFacts, ModelIdentity};
pub use run::{tables, RunLayout, StageRun, TableName};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error at a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A table that should exist does not (or is incomplete: no manifest).
    #[error("{path}: missing or incomplete ({hint})")]
    Missing {
        /// The table.
        path: PathBuf,
        /// How to make it.
        hint: String,
    },
    /// A file's contents are not those its manifest vouches for (changed, truncated or copied
    /// in after it was written).
    #[error("{path}: its contents do not match its manifest ({message}); {hint}")]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What differs.
        message: String,
        /// What to do (the command that writes it).
        hint: String,
    },
    /// Parquet or arrow failed on a file.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A shard's index, commit or gathering is wrong (crate::shard).
    #[error("{0}")]
    Shard(String),
    /// polars failed on a file.
    #[error("{path}: {source}")]
    Polars {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: polars::error::PolarsError,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
