//! A run directory and the tables in it: where each stage's tables live ([`RunLayout`],
//! [`TableName`]), and the skeleton every stage runs through ([`StageRun`]): record the
//! inputs, build the manifest, decide freshness, time the work, write atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::activations::partition_dir;
use crate::manifest::{command_line, now_unix, sha256_file, Manifest, ModelIdentity};
use crate::stage::Outcome;
use crate::table::Table;
use crate::{Result, StoreError};

/// A table of a run: its stage directory (empty for the run's root) and file stem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    /// Directory under the run (`spectral`, `fit`, `patch`; empty for the root).
    pub dir: &'static str,
    /// File stem (`spectra` for `spectral/spectra.parquet`).
    pub stem: &'static str,
    /// The command that writes it, named in "missing" errors.
    pub writer: &'static str,
}

/// The key of an input inside the run at `root` in a manifest: `<run>/` and its path in the
/// run (`<run>/patch/pairs.parquet`), not where this machine keeps the run; other paths as
/// they are.
pub fn run_key(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("<run>/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

/// Declares the tables: `NAME = (dir, stem, writer)`, documented by their path.
macro_rules! tables {
    ($($name:ident = ($dir:literal, $stem:literal, $writer:literal);)*) => {
        $(
            #[doc = concat!("`", $dir, "/", $stem, ".parquet`, written by `helixlab ", $writer, "`.")]
            pub const $name: TableName = TableName { dir: $dir, stem: $stem, writer: $writer };
        )*
    };
}

/// Every table a study writes, by stage. The activation partitions are addressed by
/// [`RunLayout::partition`].
pub mod tables {
    use super::TableName;

    tables! {
        PROBLEMS = ("", "problems", "accuracy");
        SPECTRA = ("spectral", "spectra", "spectral");
        PCA = ("spectral", "pca", "spectral");
        PCA_SCORES = ("spectral", "pca_scores", "spectral");
        SIMILARITY = ("spectral", "similarity", "spectral");
        SEPARABILITY = ("spectral", "separability", "spectral");
        PERIODS = ("spectral", "periods", "spectral");
        SPLIT = ("fit", "split", "fit");
        COEFFICIENTS = ("fit", "coefficients", "fit");
        PREDICTIONS = ("fit", "predictions", "fit");
        HELIX_COORDS = ("fit", "helix_coords", "fit");
        CONTINUITY = ("fit", "continuity", "fit");
        FITS = ("fit", "fits", "fit");
        PAIRS = ("patch", "pairs", "pairs");
        PATCHING = ("patch", "patching", "patch");
        PATCHING_SUMMARY = ("patch", "patching_summary", "patch");
        LAST_TOKEN = ("patch", "last_token", "patch-last");
        LAST_TOKEN_SUMMARY = ("patch", "last_token_summary", "patch-last");
        LAST_FITS = ("patch", "last_fits", "patch-last");
        COMPONENTS = ("patch", "components", "components");
        COMPONENTS_SUMMARY = ("patch", "components_summary", "components");
        COMPONENT_ROLES = ("patch", "component_roles", "components");
        PATH_PATCHING = ("patch", "path_patching", "components");
        HEAD_ATTENTION = ("patch", "head_attention", "components");
        COMPONENT_SINGLES = ("patch", "component_singles", "components");
        NEURON_GRADS = ("neurons", "gradients", "neuron-grads");
        NEURON_ATTRIBUTION = ("neurons", "attribution", "neurons");
        NEURON_TOP = ("neurons", "top", "neurons");
        NEURON_SPARSITY = ("neurons", "sparsity", "neurons");
        NEURON_PREACTIVATIONS = ("neurons", "preactivations", "neurons");
        NEURON_FITS = ("neurons", "fits", "neurons");
        NEURON_FIT_TERMS = ("neurons", "fit_terms", "neurons");
        NEURON_PERIODS = ("neurons", "periods", "neurons");
        NEURON_MLPS = ("neurons", "mlps", "neurons");
        NEURON_LOGIT_LENS = ("neurons", "logit_lens", "neurons");
        NEURON_LENS_DIRECTIONS = ("neurons", "lens_directions", "neurons");
        ANSWER_LOGITS = ("", "answer_logits", "accuracy");
        LINE_FIT = ("clock", "line_fit", "clock");
        LINEAR_ADDITION = ("clock", "linear_addition", "clock");
        DISTANCES = ("clock", "distances", "clock");
        CARRY = ("clock", "carry", "clock");
        LOGIT_SHAPES = ("clock", "logit_shapes", "clock");
    }

    /// What `helixlab clock` writes, in order.
    pub const CLOCK: [TableName; 5] = [LINE_FIT, LINEAR_ADDITION, DISTANCES, CARRY, LOGIT_SHAPES];

    /// What `helixlab neurons` writes, in order.
    pub const NEURONS: [TableName; 9] = [
        NEURON_ATTRIBUTION,
        NEURON_TOP,
        NEURON_SPARSITY,
        NEURON_PREACTIVATIONS,
        NEURON_FITS,
        NEURON_FIT_TERMS,
        NEURON_PERIODS,
        NEURON_MLPS,
        NEURON_LOGIT_LENS,
    ];

    /// What `helixlab spectral` writes, in order.
    pub const SPECTRAL: [TableName; 6] =
        [SPECTRA, PCA, PCA_SCORES, SIMILARITY, SEPARABILITY, PERIODS];
    /// What `helixlab fit` writes, in order.
    pub const FIT: [TableName; 6] = [
        SPLIT,
        COEFFICIENTS,
        PREDICTIONS,
        HELIX_COORDS,
        CONTINUITY,
        FITS,
    ];
}

/// The directory of one run (`[output] dir`) and the path of everything in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    /// The run at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunLayout { root: root.into() }
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `table` lives.
    pub fn path(&self, table: TableName) -> PathBuf {
        let file = format!("{}.parquet", table.stem);
        if table.dir.is_empty() {
            self.root.join(file)
        } else {
            self.root.join(table.dir).join(file)
        }
    }

    /// The activation tables (hive partitions under `activations/`).
    pub fn activations(&self) -> PathBuf {
        self.root.join("activations")
    }

    /// The partition of one (site, layer).
    pub fn partition(&self, site: &str, layer: usize) -> PathBuf {
        partition_dir(&self.root, site, layer)
    }

    /// `patch/timing.json`: how much resuming saved in the last `helixlab patch`.
    pub fn patch_timing(&self) -> PathBuf {
        self.root.join("patch").join("timing.json")
    }

    /// `neurons/timing.json`: the seconds of each step of the last `helixlab neurons`.
    pub fn neuron_timing(&self) -> PathBuf {
        self.root.join("neurons").join("timing.json")
    }

    /// The report's directory.
    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }

    /// The "missing" error of `table`, naming the command that writes it.
    pub fn missing(&self, table: TableName) -> StoreError {
        StoreError::Missing {
            path: self.path(table),
            hint: format!("run `helixlab {}` first", table.writer),
        }
    }
}

/// One run of a stage: the manifest its outputs will carry, built from the stage name, its
/// settings, its inputs (recorded by the hash of their manifests) and the model; whether the
/// outputs are already current; the timing; and the atomic writes.
///
/// The manifest's `completed_unix` and `wall_s` are set at each write, so a table's manifest
/// says when it was finished; neither is compared by freshness.
#[derive(Debug)]
pub struct StageRun {
    manifest: Manifest,
    start: Instant,
    written: Vec<PathBuf>,
    rows: u64,
}

impl StageRun {
    /// A run of `stage` with `settings` (what shapes its outputs), by this build of helixlab,
    /// from this process's command line.
    pub fn new(stage: &str, settings: serde_json::Value) -> Self {
        StageRun {
            manifest: Manifest {
                stage: stage.into(),
                settings,
                inputs: BTreeMap::new(),
                model: None,
                tool_version: env!("CARGO_PKG_VERSION").into(),
                command: command_line(),
                completed_unix: 0,
                rows: 0,
                wall_s: 0.0,
                data_sha256: None,
                parts: Vec::new(),
            },
            start: Instant::now(),
            written: Vec::new(),
            rows: 0,
        }
    }

    /// The model the stage runs.
    pub fn with_model(mut self, model: ModelIdentity) -> Self {
        self.manifest.model = Some(model);
        self
    }

    /// Records the complete table at `path` as an input; a table without a manifest is an
    /// error that says which command writes it (`hint`).
    pub fn input(&mut self, path: &Path, hint: &str) -> Result<()> {
        self.input_keyed(path, path.display().to_string(), hint)
    }

    /// Records `path` as an input under `key`.
    fn input_keyed(&mut self, path: &Path, key: String, hint: &str) -> Result<()> {
        // The data must be what its manifest vouches for (not changed or copied in since).
        if Manifest::verified_for(path, hint)?.is_none() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
                hint: hint.into(),
            });
        }
        let sha = sha256_file(&Manifest::path_for(path)).map_err(|_| StoreError::Missing {
            path: path.to_path_buf(),
            hint: hint.into(),
        })?;
        self.manifest.inputs.insert(key, sha);
        Ok(())
    }

    /// Records the run's `table` as an input (missing: says which command writes it), keyed
    /// by its place in the run ([`run_key`]), so that the same work on another machine, whose
    /// copy of the run is elsewhere, is the same work.
    pub fn input_table(&mut self, run: &RunLayout, table: TableName) -> Result<()> {
        let path = run.path(table);
        let hint = format!("run `helixlab {}` first", table.writer);
        self.input_keyed(&path, run_key(run.root(), &path), &hint)
    }

    /// [`StageRun::input_table`] for a table that may not be there: `false` when it is not.
    pub fn optional_input_table(&mut self, run: &RunLayout, table: TableName) -> Result<bool> {
        let path = run.path(table);
        if Manifest::read_for(&path).is_none() {
            return Ok(false);
        }
        self.input_keyed(&path, run_key(run.root(), &path), "")?;
        Ok(true)
    }

    /// Records `path` as an input when it is complete; `false` when it is not there.
    pub fn optional_input(&mut self, path: &Path) -> Result<bool> {
        if Manifest::read_for(path).is_none() {
            return Ok(false);
        }
        self.input(path, "")?;
        Ok(true)
    }

    /// Records inputs already hashed (path -> sha256 of its manifest).
    pub fn inputs(&mut self, inputs: BTreeMap<String, String>) {
        self.manifest.inputs.extend(inputs);
    }

    /// The manifest as it stands.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether every one of `outputs` is complete and was made by the same work.
    pub fn is_fresh(&self, outputs: &[PathBuf]) -> bool {
        outputs.iter().all(|p| self.manifest.is_fresh(p))
    }

    /// Whether the run's `tables` are all current.
    pub fn tables_fresh(&self, run: &RunLayout, tables: &[TableName]) -> bool {
        tables.iter().all(|t| self.manifest.is_fresh(&run.path(*t)))
    }

    /// Starts the clock (the work after the freshness check).
    pub fn begin(&mut self) {
        self.start = Instant::now();
    }

    /// Seconds since [`StageRun::begin`].
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The manifest a finished output carries now (completion time and wall time set), for
    /// writers that stream (activation partitions).
    pub fn finished(&self) -> Manifest {
        let mut m = self.manifest.clone();
        m.completed_unix = now_unix();
        m.wall_s = self.elapsed();
        m
    }

    /// Counts an output written by a streaming writer.
    pub fn record(&mut self, path: PathBuf, rows: u64) {
        self.written.push(path);
        self.rows += rows;
    }

    /// Writes `table` to `path` with its manifest, atomically.
    pub fn write(&mut self, path: &Path, table: &Table) -> Result<()> {
        table.write(path, &self.finished())?;
        self.record(path.to_path_buf(), table.rows() as u64);
        Ok(())
    }

    /// Writes the run's `name` table.
    pub fn write_table(&mut self, run: &RunLayout, name: TableName, table: &Table) -> Result<()> {
        self.write(&run.path(name), table)
    }

    /// What the stage did: the outputs, their rows and the time since [`StageRun::begin`].
    pub fn outcome(self) -> Outcome {
        let seconds = self.elapsed();
        Outcome::Wrote {
            tables: self.written,
            rows: self.rows,
            seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Values;

    #[test]
    fn inputs_in_the_run_are_keyed_by_their_place_in_it() {
        let (a, b) = (Path::new("/scratch/job-1/run"), Path::new("/cache/x/run"));
        let key = |root: &Path| run_key(root, &root.join("patch/pairs.parquet"));
        assert_eq!(key(a), "<run>/patch/pairs.parquet");
        assert_eq!(key(a), key(b), "two machines' copies of one run");
        assert_eq!(run_key(a, Path::new("/models/m")), "/models/m");
    }

    #[test]
    fn every_table_has_one_path() {
        let run = RunLayout::new("/r");
        assert_eq!(
            run.path(tables::PROBLEMS),
            PathBuf::from("/r/problems.parquet")
        );
        assert_eq!(
            run.path(tables::PATCHING_SUMMARY),
            PathBuf::from("/r/patch/patching_summary.parquet")
        );
        let all = [tables::SPECTRAL.as_slice(), tables::FIT.as_slice()].concat();
        let mut paths: Vec<PathBuf> = all.iter().map(|t| run.path(*t)).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 12);
    }

    #[test]
    fn a_stage_run_is_fresh_only_for_the_same_work() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunLayout::new(dir.path());
        let t = Table::new().column("x", Values::U32(vec![1, 2, 3]));
        let mut s = StageRun::new("test", serde_json::json!({ "k": 1 }));
        assert!(!s.tables_fresh(&run, &[tables::PAIRS]));
        s.write_table(&run, tables::PAIRS, &t).unwrap();
        assert!(s.tables_fresh(&run, &[tables::PAIRS]));
        let Outcome::Wrote { rows, tables, .. } = s.outcome() else {
            panic!("wrote")
        };
        assert_eq!((rows, tables.len()), (3, 1));
        let other = StageRun::new("test", serde_json::json!({ "k": 2 }));
        assert!(!other.tables_fresh(&run, &[tables::PAIRS]));
        let mut reader = StageRun::new("next", serde_json::json!({}));
        reader.input_table(&run, tables::PAIRS).unwrap();
        let e = reader.input_table(&run, tables::PATCHING).unwrap_err();
        assert!(e.to_string().contains("helixlab patch"), "{e}");
    }
}
