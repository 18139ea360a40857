//! Shards: one stage's work split into N deterministic slices that run as independent jobs
//! (Slurm array tasks, Kubernetes Indexed Job pods, or plain processes), with no coordinator.
//!
//! The contract, for shard I of N of a stage on a run `R`:
//! - the shard runs the stage on its slice ([`Shard::range`], whole batches, so every batch is
//!   the one the unsharded run would have made) into a private run directory of its own;
//! - it moves each table into the hive layout of the shard set
//!   `R/shards/<stage>/<work>-of-<N>/<table>/part-<I>-<attempt>.parquet` (activation
//!   partitions: `activations/site=.../layer=.../part-<I>-<attempt>.parquet`), then commits
//!   `part-<I>.commit.json`, which lists every part with its sha256, rows and table manifest.
//!   The commit is create-only (a hard link of a complete temporary file, which fails when the
//!   name exists), so a second commit of a shard is refused and a committed shard is skipped:
//!   a retried shard never duplicates rows;
//! - the stage is complete when all N commits exist; [`ShardSet::gather`] then reads exactly
//!   the parts they list (each checked against its sha256) and writes the usual tables of `R`,
//!   whose manifests record the parts they were made from, and removes the parts (a study's
//!   activations are not kept twice). Whoever commits last gathers; so does `helixlab
//!   gather`, which fails naming the shards not committed; gathering twice does nothing.
//!
//! `<work>` is a hash of the study file and the tool version, so shards of a changed study are
//! never gathered with the old ones. Unsharded runs never touch `R/shards/`.
//!
//! Not here: which stages shard (the CLI decides) or how a slice is computed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::activations::writer_properties;
use crate::manifest::{now_unix, sha256_file, Manifest};
use crate::{atomic, io, Result, StoreError};

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, 0..count.
    pub index: u32,
    /// How many slices.
    pub count: u32,
}

/// Where a shard's index and count came from, for messages.
fn bad(what: &str, message: String) -> StoreError {
    StoreError::Shard(format!("{what}: {message}"))
}

impl Shard {
    /// `I/N`, with 0 <= I < N.
    pub fn parse(text: &str) -> Result<Shard> {
        let what = format!("--shard {text:?}");
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad(&what, "expected I/N, e.g. 0/4".into()))?;
        let num = |s: &str| -> Result<u32> {
            s.trim()
                .parse()
                .map_err(|_| bad(&what, format!("{s:?} is not a whole number")))
        };
        Shard::new(num(i)?, num(n)?).map_err(|e| bad(&what, e))
    }

    fn new(index: u32, count: u32) -> std::result::Result<Shard, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index} of {count}: the index must be below the count"
            ));
        }
        Ok(Shard { index, count })
    }

    /// The shard a scheduler gives this process through the environment: a Slurm array task
    /// (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`) or a
    /// Kubernetes Indexed Job pod (`JOB_COMPLETION_INDEX` of `HELIXLAB_SHARDS`, which the Job
    /// sets to its `completions`). `None` outside both.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let num = |k: &str| -> Result<Option<u32>> {
            env(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .map_err(|_| bad(k, format!("{v:?} is not a whole number")))
                })
                .transpose()
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                bad(
                    "SLURM_ARRAY_TASK_ID",
                    "set without SLURM_ARRAY_TASK_COUNT".into(),
                )
            })?;
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(min).ok_or_else(|| {
                bad(
                    "SLURM_ARRAY_TASK_ID",
                    format!("{id} is below SLURM_ARRAY_TASK_MIN {min}"),
                )
            })?;
            return Shard::new(index, count)
                .map(Some)
                .map_err(|e| bad("the Slurm array", e));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = num("HELIXLAB_SHARDS")?.ok_or_else(|| {
                bad(
                    "JOB_COMPLETION_INDEX",
                    "set without HELIXLAB_SHARDS (the Job's completions)".into(),
                )
            })?;
            return Shard::new(index, count)
                .map(Some)
                .map_err(|e| bad("the Indexed Job", e));
        }
        Ok(None)
    }

    /// Shard I of `count`, I being the scheduler's index as it stands: `SLURM_ARRAY_TASK_ID`
    /// or `JOB_COMPLETION_INDEX`. Resubmitting one index of an array (`sbatch --array=2`)
    /// with the same command therefore reruns that shard, whatever the new array's size.
    pub fn from_index_env(env: &dyn Fn(&str) -> Option<String>, count: u32) -> Result<Shard> {
        let (key, value) = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
            .iter()
            .find_map(|k| env(k).map(|v| (*k, v)))
            .ok_or_else(|| {
                bad(
                    &format!("--shards {count}"),
                    "neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set (outside a job \
                     array, give --shard I/N)"
                        .into(),
                )
            })?;
        let index = value
            .trim()
            .parse()
            .map_err(|_| bad(key, format!("{value:?} is not a whole number")))?;
        Shard::new(index, count).map_err(|e| bad(key, e))
    }

    /// This shard's items of `n`, in whole units of `unit` (a batch): the units are split as
    /// evenly as they go, earlier shards taking the remainder.
    pub fn range(self, n: usize, unit: usize) -> std::ops::Range<usize> {
        let unit = unit.max(1);
        let units = n.div_ceil(unit);
        let (i, k) = (self.index as usize, self.count as usize);
        let at = |s: usize| (s * units / k * unit).min(n);
        at(i)..at(i + 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One part of a commit: a table's slice written by one shard.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Part {
    /// The part's file, relative to the shard set.
    pub file: String,
    /// sha256 of the file.
    pub sha256: String,
    /// Its rows.
    pub rows: u64,
    /// The manifest the shard's table carried.
    pub manifest: Manifest,
}

/// What a shard commits: every table it wrote, by its path relative to the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Commit {
    /// The stage.
    pub stage: String,
    /// The shard.
    pub shard: Shard,
    /// Where it ran: host name and `CUDA_VISIBLE_DEVICES` (empty when unset).
    pub host: String,
    /// `CUDA_VISIBLE_DEVICES` of the process.
    pub cuda_visible_devices: String,
    /// Slurm's job and task, when it ran as an array task.
    pub scheduler_job: String,
    /// When the shard's work began (Unix seconds, to the microsecond: the cluster test reads
    /// which shards ran at once).
    pub started_unix: f64,
    /// When it was committed.
    pub committed_unix: f64,
    /// table path (relative to the run) -> its part.
    pub tables: BTreeMap<String, Part>,
}

/// The shards of one stage of one run for one piece of work.
#[derive(Clone, Debug)]
pub struct ShardSet {
    run: PathBuf,
    stage: String,
    root: PathBuf,
    count: u32,
    /// For a stage that runs in phases (each gathered before the next starts), which one.
    phase: Option<u32>,
}

/// `table` (relative, e.g. `problems.parquet` or `activations/site=x/layer=0`) as a hive
/// directory of parts.
fn part_dir(table: &str) -> String {
    table.strip_suffix(".parquet").unwrap_or(table).to_string()
}

impl ShardSet {
    /// The set of `count` shards of `stage` on the run at `run`, for the work `work` (a
    /// hash of what defines it: the study file and the tool version).
    pub fn new(run: &Path, stage: &str, work: &str, count: u32) -> ShardSet {
        Self::at(run, stage, None, work, count)
    }

    /// The set of phase `phase` of a stage that runs in phases: its own directory
    /// (`shards/<stage>/phase-<K>/<work>-of-<N>`), gathered before the next phase starts.
    pub fn phase(run: &Path, stage: &str, phase: u32, work: &str, count: u32) -> ShardSet {
        Self::at(run, stage, Some(phase), work, count)
    }

    fn at(run: &Path, stage: &str, phase: Option<u32>, work: &str, count: u32) -> ShardSet {
        let tag: String = work.chars().take(12).collect();
        let mut root = run.join("shards").join(stage);
        if let Some(k) = phase {
            root = root.join(format!("phase-{k}"));
        }
        ShardSet {
            run: run.to_path_buf(),
            stage: stage.into(),
            root: root.join(format!("{tag}-of-{count}")),
            count,
            phase,
        }
    }

    /// How many shards the set has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The directory of the set.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the set relative to the run (`shards/<stage>/<work>-of-<N>`).
    pub fn relative_root(&self) -> String {
        self.root
            .strip_prefix(&self.run)
            .expect("under the run")
            .to_string_lossy()
            .to_string()
    }

    /// The commit of shard `i` relative to the run.
    pub fn relative_commit(&self, i: u32) -> String {
        format!("{}/part-{i}.commit.json", self.relative_root())
    }

    /// Where shard `i` runs the stage before it commits.
    pub fn private_dir(&self, i: u32) -> PathBuf {
        self.root.join(format!(".work-{i}"))
    }

    /// The commit of shard `i`.
    pub fn commit_path(&self, i: u32) -> PathBuf {
        self.root.join(format!("part-{i}.commit.json"))
    }

    /// Shard `i`'s commit, when there is one.
    pub fn committed(&self, i: u32) -> Result<Option<Commit>> {
        let path = self.commit_path(i);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| StoreError::Shard(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The shards not committed yet.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.count)
            .filter(|&i| !self.commit_path(i).exists())
            .collect()
    }

    /// Moves the tables shard `shard` wrote in its private directory into the set's hive
    /// layout and commits them, create-only: refused when shard `shard` is committed already.
    pub fn commit(&self, shard: Shard, started_unix: f64) -> Result<Commit> {
        let private = self.private_dir(shard.index);
        let commit_path = self.commit_path(shard.index);
        if commit_path.exists() {
            return Err(self.already(shard));
        }
        let mut tables = BTreeMap::new();
        let attempt = format!(
            "{:x}{:05x}",
            (unix_seconds() * 1e3) as u64,
            std::process::id()
        );
        for table in complete_tables(&private)? {
            let rel = table
                .strip_prefix(&private)
                .expect("found under the private directory")
                .to_string_lossy()
                .to_string();
            let manifest = Manifest::read_for(&table).expect("listed by its manifest");
            // The attempt in the name: a losing retry's parts never replace the winner's.
            let file = format!("{}/part-{}-{attempt}.parquet", part_dir(&rel), shard.index);
            let target = self.root.join(&file);
            let dir = target.parent().expect("a part has a directory");
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let data = Manifest::data_file(&table);
            std::fs::rename(&data, &target).map_err(io(&target))?;
            tables.insert(
                rel,
                Part {
                    file,
                    sha256: sha256_file(&target)?,
                    rows: manifest.rows,
                    manifest,
                },
            );
        }
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        let commit = Commit {
            stage: self.stage.clone(),
            shard,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            cuda_visible_devices: env("CUDA_VISIBLE_DEVICES"),
            scheduler_job: match (env("SLURM_ARRAY_JOB_ID"), env("SLURM_ARRAY_TASK_ID")) {
                (j, t) if !j.is_empty() => format!("{j}_{t}"),
                _ => String::new(),
            },
            started_unix,
            committed_unix: unix_seconds(),
            tables,
        };
        let text = serde_json::to_string_pretty(&commit).expect("commits serialise");
        create_only(&commit_path, text.as_bytes()).map_err(|e| match e {
            CreateOnly::Exists => self.already(shard),
            CreateOnly::Io(e) => e,
        })?;
        let _ = std::fs::remove_dir_all(&private);
        Ok(commit)
    }

    /// How a gathered table's manifest names one of its parts: relative to the run (the same
    /// wherever the run is cached), with its sha256.
    /// Whether the run's `table` (relative to the run) was gathered from this set: every shard
    /// committed, and the table's manifest records exactly their parts and vouches for its
    /// data (a table folded into others and removed after gathering is not).
    pub fn gathered_into(&self, table: &str) -> Result<bool> {
        let mut listed = Vec::new();
        for i in 0..self.count {
            match self
                .committed(i)?
                .and_then(|c| c.tables.get(table).cloned())
            {
                Some(part) => listed.push(self.part_record(&part)),
                None => return Ok(false),
            }
        }
        let path = self.run.join(table);
        Ok(Manifest::read_for(&path).is_some_and(|m| m.parts == listed && m.vouches_for(&path)))
    }

    fn part_record(&self, part: &Part) -> String {
        format!(
            "{}/{} sha256:{}",
            self.relative_root(),
            part.file,
            part.sha256
        )
    }

    fn already(&self, shard: Shard) -> StoreError {
        StoreError::Shard(format!(
            "{}: shard {shard} of {} is committed already; a second commit is refused (remove \
             {} to redo the set)",
            self.commit_path(shard.index).display(),
            self.stage,
            self.root.display()
        ))
    }

    /// Writes the run's usual tables from the parts all N commits list, each checked against
    /// its sha256, in shard order, then removes the parts (the table's manifest and the
    /// commits record them); a table gathered already is left as it is. Fails naming the
    /// shards not committed, and when the shards were made by different work. Returns the
    /// tables written.
    pub fn gather(&self) -> Result<Vec<PathBuf>> {
        let missing = self.missing();
        if !missing.is_empty() {
            let listed: Vec<String> = missing.iter().map(u32::to_string).collect();
            return Err(StoreError::Shard(format!(
                "{}: shards {} of {} of {}{} are not committed (no part-I.commit.json); run \
                 those array indices (or `helixlab {} --shard I/{}{}`) first",
                self.root.display(),
                listed.join(", "),
                self.count,
                self.stage,
                self.phase
                    .map(|k| format!(" phase {k}"))
                    .unwrap_or_default(),
                self.stage,
                self.count,
                self.phase
                    .map(|k| format!(" --phase {k}"))
                    .unwrap_or_default(),
            )));
        }
        let commits: Vec<Commit> = (0..self.count)
            .map(|i| self.committed(i).map(|c| c.expect("not missing")))
            .collect::<Result<_>>()?;
        let mut written = Vec::new();
        for (rel, first) in &commits[0].tables {
            let table = self.run.join(rel);
            let listed: Vec<String> = commits
                .iter()
                .filter_map(|c| c.tables.get(rel))
                .map(|p| self.part_record(p))
                .collect();
            // Gathered already (the parts are gone, the table records them): nothing to do.
            if Manifest::read_for(&table)
                .is_some_and(|m| m.parts == listed && m.vouches_for(&table))
            {
                continue;
            }
            let mut parts = Vec::new();
            for c in &commits {
                let part = c.tables.get(rel).ok_or_else(|| {
                    StoreError::Shard(format!(
                        "{}: shard {} has no {rel}, shard 0 has",
                        self.root.display(),
                        c.shard
                    ))
                })?;
                if !part.manifest.same_work(&first.manifest) {
                    return Err(StoreError::Shard(format!(
                        "{}: {rel} of shard {} was made by other work than shard 0's (settings, \
                         inputs, model or version differ); remove {} and rerun the set",
                        self.root.display(),
                        c.shard,
                        self.root.display()
                    )));
                }
                let path = self.root.join(&part.file);
                let got = sha256_file(&path)?;
                if got != part.sha256 {
                    return Err(StoreError::Corrupt {
                        path,
                        message: format!("sha256 {got}, the commit says {}", part.sha256),
                        hint: format!("remove {} and rerun the set", self.root.display()),
                    });
                }
                parts.push((path, part));
            }
            let mut manifest = first.manifest.clone();
            manifest.rows = parts.iter().map(|(_, p)| p.rows).sum();
            manifest.wall_s = parts.iter().map(|(_, p)| p.manifest.wall_s).sum();
            manifest.completed_unix = now_unix();
            manifest.parts = parts.iter().map(|(_, p)| self.part_record(p)).collect();
            let files: Vec<PathBuf> = parts.iter().map(|(p, _)| p.clone()).collect();
            concat(&files, &table, &manifest)?;
            // The table holds every row now; its manifest and the commits keep the record.
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            written.push(table);
        }
        Ok(written)
    }
}

/// Now, in Unix seconds.
pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

enum CreateOnly {
    Exists,
    Io(StoreError),
}

/// Writes `bytes` to `path` only if no file has that name: the bytes go to a temporary file,
/// hard-linked to `path` (which fails when `path` exists, atomically).
fn create_only(path: &Path, bytes: &[u8]) -> std::result::Result<(), CreateOnly> {
    let (guard, mut file) = atomic::Temp::create(path).map_err(CreateOnly::Io)?;
    let tmp = atomic::temp_path(path);
    std::io::Write::write_all(&mut file, bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| CreateOnly::Io(io(&tmp)(e)))?;
    drop(file);
    let linked = std::fs::hard_link(&tmp, path);
    drop(guard);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(CreateOnly::Exists),
        Err(e) => Err(CreateOnly::Io(io(path)(e))),
    }
}

/// The complete tables under `dir` (file tables and partition directories with a manifest).
fn complete_tables(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io(&d))?.flatten() {
            let (path, name) = (e.path(), e.file_name().to_string_lossy().to_string());
            if path.is_dir() {
                stack.push(path);
            } else if name == "_manifest.json" {
                out.push(d.clone());
            } else if let Some(stem) = name.strip_suffix(".manifest.json") {
                out.push(d.join(format!("{stem}.parquet")));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Writes the rows of `parts`, in order, to `table` (a file table, or a partition directory's
/// part-0.parquet) with `manifest` in the footer and beside it; atomically.
fn concat(parts: &[PathBuf], table: &Path, manifest: &Manifest) -> Result<()> {
    let data = Manifest::data_file(table);
    let dir = data.parent().expect("a table has a directory");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // A stale manifest goes first: from here on the table is incomplete.
    let old = Manifest::path_for(table);
    if old.exists() {
        std::fs::remove_file(&old).map_err(io(&old))?;
    }
    let fmt = |path: &Path, e: &dyn std::fmt::Display| StoreError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let (temp, file) = atomic::Temp::create(&data)?;
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    for part in parts {
        let f = std::fs::File::open(part).map_err(io(part))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| fmt(part, &e))?;
        for batch in reader {
            let batch = batch.map_err(|e| fmt(part, &e))?;
            if writer.is_none() {
                writer = Some(
                    ArrowWriter::try_new(
                        file.take().expect("one writer"),
                        Arc::new(batch.schema().as_ref().clone()),
                        Some(writer_properties(manifest)),
                    )
                    .map_err(|e| fmt(&data, &e))?,
                );
            }
            let w = writer.as_mut().expect("made above");
            w.write(&batch).map_err(|e| fmt(&data, &e))?;
            if w.in_progress_size() >= crate::activations::ROW_GROUP_BYTES {
                w.flush().map_err(|e| fmt(&data, &e))?;
            }
        }
    }
    match writer {
        Some(w) => {
            w.close().map_err(|e| fmt(&data, &e))?;
        }
        None => {
            // Every part empty: the first part's schema, no rows.
            let f = std::fs::File::open(&parts[0]).map_err(io(&parts[0]))?;
            let schema = ParquetRecordBatchReaderBuilder::try_new(f)
                .map_err(|e| fmt(&parts[0], &e))?
                .schema()
                .clone();
            ArrowWriter::try_new(
                file.take().expect("unused"),
                schema,
                Some(writer_properties(manifest)),
            )
            .and_then(|w| w.close().map(|_| ()))
            .map_err(|e| fmt(&data, &e))?;
        }
    }
    temp.commit()?;
    manifest.write_for(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Table, Values};
    use crate::{RunLayout, StageRun};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn shards_come_from_the_flag_slurm_or_an_indexed_job() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1", "a/2", "0/0"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::from_env(&slurm).unwrap(),
            Some(Shard { index: 2, count: 4 })
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "1"), ("HELIXLAB_SHARDS", "3")]);
        assert_eq!(
            Shard::from_env(&k8s).unwrap(),
            Some(Shard { index: 1, count: 3 })
        );
        let e = Shard::from_env(&env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err();
        assert!(e.to_string().contains("HELIXLAB_SHARDS"), "{e}");
        assert_eq!(Shard::from_env(&env(&[])).unwrap(), None);
        // With the count given, the index is the scheduler's as it stands.
        let retry = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
        ]);
        assert_eq!(
            Shard::from_index_env(&retry, 4).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let e = Shard::from_index_env(&env(&[]), 4).unwrap_err().to_string();
        assert!(e.contains("--shard I/N"), "{e}");
        let e = Shard::from_index_env(&retry, 2).unwrap_err().to_string();
        assert!(e.contains("below the count"), "{e}");
    }

    #[test]
    fn slices_cover_the_work_once_in_whole_batches() {
        for (n, unit, k) in [(10_000, 64, 4), (7, 2, 3), (3, 8, 4), (0, 4, 2)] {
            let mut next = 0;
            for i in 0..k {
                let r = Shard { index: i, count: k }.range(n, unit);
                assert_eq!(r.start, next, "{n} {unit} {k}");
                assert!(r.start.is_multiple_of(unit) || r.start == n);
                next = r.end;
            }
            assert_eq!(next, n);
        }
    }

    fn glob_parts(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// A stage's table in shard `i`'s private directory: rows `rows`.
    fn shard_table(set: &ShardSet, i: u32, rows: std::ops::Range<u32>) {
        let run = RunLayout::new(set.private_dir(i));
        let mut s = StageRun::new("test", serde_json::json!({ "k": 1 }));
        let t = Table::new().column("x", Values::U32(rows.collect()));
        s.write_table(&run, crate::tables::PAIRS, &t).unwrap();
    }

    #[test]
    fn commits_are_create_only_and_gathering_needs_them_all() {
        let tmp = tempfile::tempdir().unwrap();
        let set = ShardSet::new(tmp.path(), "test", "abcdef0123456789", 3);
        for i in [0, 2] {
            shard_table(&set, i, i * 10..i * 10 + 4);
            set.commit(Shard { index: i, count: 3 }, 0.0).unwrap();
        }
        assert!(!glob_parts(&set.root().join("patch/pairs")).is_empty());
        assert!(!set.private_dir(2).exists());
        let e = set.gather().unwrap_err().to_string();
        assert!(
            e.contains("shards 1 of 3") && e.contains("--shard I/3"),
            "{e}"
        );
        // A retried shard 2 cannot commit again.
        shard_table(&set, 2, 0..1);
        let e = set
            .commit(Shard { index: 2, count: 3 }, 0.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("committed already"), "{e}");
        shard_table(&set, 1, 10..12);
        set.commit(Shard { index: 1, count: 3 }, 0.0).unwrap();
        let written = set.gather().unwrap();
        let run = RunLayout::new(tmp.path());
        assert_eq!(written, vec![run.path(crate::tables::PAIRS)]);
        let df = crate::Frame::open(&run.path(crate::tables::PAIRS))
            .unwrap()
            .unwrap();
        assert_eq!(
            df.i64("x").unwrap(),
            vec![0, 1, 2, 3, 10, 11, 20, 21, 22, 23]
        );
        let m = Manifest::read_for(&run.path(crate::tables::PAIRS)).unwrap();
        assert_eq!((m.rows, m.parts.len()), (10, 3));
        assert!(glob_parts(&set.root().join("patch/pairs")).is_empty());
        assert!(set.gather().unwrap().is_empty(), "gathered once");
        // The gathered table is what the unsharded stage would call fresh.
        let s = StageRun::new("test", serde_json::json!({ "k": 1 }));
        assert!(s.tables_fresh(&run, &[crate::tables::PAIRS]));
    }

    #[test]
    fn a_changed_part_is_refused_at_gathering() {
        let tmp = tempfile::tempdir().unwrap();
        let set = ShardSet::new(tmp.path(), "test", "w", 1);
        shard_table(&set, 0, 0..3);
        set.commit(Shard { index: 0, count: 1 }, 0.0).unwrap();
        std::fs::write(&glob_parts(&set.root().join("patch/pairs"))[0], b"x").unwrap();
        let e = set.gather().unwrap_err().to_string();
        assert!(e.contains("the commit says"), "{e}");
    }
}
