//! What every stage shares: how it reports progress and what it did.

use std::path::PathBuf;

/// Progress reporting, implemented by the CLI (a progress bar) or by nothing.
pub trait Progress {
    /// A loop of `total` units starts.
    fn start(&self, label: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The loop ended.
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What a stage did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Outputs were current; nothing was done.
    UpToDate,
    /// Outputs written: tables, rows, seconds.
    Wrote {
        /// Tables (or partitions) written.
        tables: Vec<PathBuf>,
        /// Rows written.
        rows: u64,
        /// Wall time, seconds.
        seconds: f64,
    },
}
