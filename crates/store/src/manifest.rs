//! Run manifests: what produced a table, enough to rebuild the command and to know whether a
//! rerun would change anything.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{atomic, io, Result, StoreError};

/// Which model produced a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The model directory (or GGUF file) as given.
    pub dir: String,
    /// Architecture (`model_type`).
    pub architecture: String,
    /// sha256 of config.json, or of a GGUF file's header (metadata and tensor directory).
    pub config_sha256: String,
    /// Weight files with their sizes in bytes.
    pub weights: BTreeMap<String, u64>,
    /// Weight files with the sha256 of their content (cached by path, size and modification
    /// time: [`crate::content_hash`]), so a file swapped for another of the same size is
    /// another model.
    #[serde(default)]
    pub weight_sha256: BTreeMap<String, String>,
    /// Run dtype: what the weight matrices were held in (`f32`, `bf16`, `f16`).
    pub dtype: String,
    /// What the arithmetic ran in: the run dtype, or `f32` for half-precision weights on the
    /// CPU.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compute_dtype: String,
    /// Device.
    pub device: String,
    /// Tensors per stored type (`F32`; a GGUF file's quantization types, `Q4_1`, `Q8_0`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stored_types: BTreeMap<String, usize>,
}

/// What a loaded model says about itself, for [`ModelIdentity::describe`].
pub struct ModelFacts<'a> {
    /// Architecture (`model_type`).
    pub architecture: &'a str,
    /// sha256 of the config (config.json or a GGUF header).
    pub config_sha256: &'a str,
    /// The weight files read.
    pub weight_files: &'a [PathBuf],
    /// Tensors per stored type.
    pub stored_types: &'a BTreeMap<String, usize>,
    /// What the arithmetic runs in (`f32`, `bf16`, `f16`).
    pub compute_dtype: &'a str,
}

impl ModelIdentity {
    /// The identity of a loaded model: `dir` as the study gave it, what the model says of
    /// itself, dtype and device.
    pub fn describe(dir: &str, facts: ModelFacts<'_>, dtype: &str, device: &str) -> Result<Self> {
        let ModelFacts {
            architecture,
            config_sha256,
            weight_files,
            stored_types,
            compute_dtype,
        } = facts;
        let weights = weight_files
            .iter()
            .map(|f| {
                let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                (name, size)
            })
            .collect();
        Ok(ModelIdentity {
            dir: dir.to_string(),
            architecture: architecture.to_string(),
            config_sha256: config_sha256.to_string(),
            weights,
            weight_sha256: crate::content_hash::weight_hashes(weight_files)?,
            dtype: dtype.to_string(),
            compute_dtype: compute_dtype.to_string(),
            device: device.to_string(),
            stored_types: stored_types.clone(),
        })
    }
}

/// The provenance of one table (or one partition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The stage (`accuracy`, `extract`, ...).
    pub stage: String,
    /// The settings of the stage that shaped this output (pipeline sections, partition).
    pub settings: serde_json::Value,
    /// Inputs by path, with their sha256.
    pub inputs: BTreeMap<String, String>,
    /// The model, for stages that run one.
    pub model: Option<ModelIdentity>,
    /// helixlab version.
    pub tool_version: String,
    /// The command line.
    pub command: String,
    /// Unix time of completion (not compared by [`Manifest::same_work`]).
    pub completed_unix: u64,
    /// Rows written.
    pub rows: u64,
    /// Wall time of the stage for this output, seconds (not compared).
    pub wall_s: f64,
    /// sha256 of the data file this manifest vouches for, set by [`Manifest::write_for`] (the
    /// copy in the Parquet footer, written before the file is complete, has none). Readers
    /// check it ([`Manifest::verified_for`]), so a file changed, truncated or copied in after
    /// it was written is never taken as the result it claims to be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
    /// For a table gathered from shards: the part files it was made from, each as
    /// `<path relative to the run> sha256:<hex>` (crate::shard); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
}

impl Manifest {
    /// Whether `other` describes the same work: stage, settings, inputs, model and tool
    /// version (time, rows, command and duration aside).
    pub fn same_work(&self, other: &Manifest) -> bool {
        self.stage == other.stage
            && self.settings == other.settings
            && self.inputs == other.inputs
            && self.model == other.model
            && self.tool_version == other.tool_version
    }

    /// The manifest file of a table: `problems.parquet` -> `problems.manifest.json`; a
    /// partition directory -> `<dir>/_manifest.json`.
    pub fn path_for(table: &Path) -> PathBuf {
        if table.extension().is_some_and(|e| e == "parquet") {
            table.with_extension("manifest.json")
        } else {
            table.join("_manifest.json")
        }
    }

    /// The data file of `table`: the Parquet file itself, or a partition directory's
    /// `part-0.parquet`.
    pub fn data_file(table: &Path) -> PathBuf {
        if table.extension().is_some_and(|e| e == "parquet") {
            table.to_path_buf()
        } else {
            table.join("part-0.parquet")
        }
    }

    /// Whether `table`'s data file has the content this manifest vouches for (a manifest
    /// without a hash, from before hashes were recorded, vouches for nothing and fails).
    pub fn vouches_for(&self, table: &Path) -> bool {
        self.data_sha256
            .as_ref()
            .is_some_and(|want| sha256_file(&Self::data_file(table)).is_ok_and(|got| &got == want))
    }

    /// The manifest of `table` after checking that the data file is the one it vouches for:
    /// `None` when there is no manifest (absent or incomplete), an error naming the file and
    /// saying what to do (`hint`, e.g. "rerun `helixlab extract`") when the contents differ.
    pub fn verified_for(table: &Path, hint: &str) -> Result<Option<Manifest>> {
        let Some(m) = Self::read_for(table) else {
            return Ok(None);
        };
        let data = Self::data_file(table);
        let got = sha256_file(&data).map_err(|_| StoreError::Missing {
            path: data.clone(),
            hint: format!("its manifest is there but the data is not; {hint}"),
        })?;
        match &m.data_sha256 {
            Some(want) if *want == got => Ok(Some(m)),
            Some(want) => Err(StoreError::Corrupt {
                path: data,
                message: format!("sha256 {got}, the manifest says {want}"),
                hint: hint.into(),
            }),
            None => Err(StoreError::Corrupt {
                path: data,
                message: "the manifest records no content hash (written by an older helixlab)"
                    .into(),
                hint: hint.into(),
            }),
        }
    }

    /// Reads the manifest of `table`, `None` if it has none (absent or incomplete table).
    pub fn read_for(table: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(Self::path_for(table)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the manifest of `table`, atomically, with the sha256 of its data file; call after
    /// the data is in place.
    pub fn write_for(&self, table: &Path) -> Result<()> {
        let mut m = self.clone();
        m.data_sha256 = Some(sha256_file(&Self::data_file(table))?);
        let text = serde_json::to_string_pretty(&m).expect("manifests serialise");
        atomic::write(&Self::path_for(table), (text + "\n").as_bytes())
    }

    /// Removes `table` (a Parquet file) and its manifest, manifest first so that no reader
    /// takes a half-removed table as complete; a table that is not there is no error.
    pub fn remove_table(table: &Path) -> Result<()> {
        for f in [Self::path_for(table), table.to_path_buf()] {
            match std::fs::remove_file(&f) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(crate::io(&f)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `table` is complete, was made by the same work as `self`, and still holds what
    /// it was written with (a changed or truncated file is not fresh: the stage redoes it).
    pub fn is_fresh(&self, table: &Path) -> bool {
        Self::read_for(table).is_some_and(|m| m.same_work(self) && m.vouches_for(table))
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// This process's command line, as manifests record it.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
