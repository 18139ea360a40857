//! Where a model's files are: an HF directory (config.json, weights, tokenizer) or one GGUF
//! file (config, weights and usually the tokenizer in one), given as the file or as a directory
//! that holds exactly one.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use sha2::{Digest, Sha256};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::weights::Weights;

/// A located checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// An HF directory with config.json.
    HfDir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

fn is_gguf(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

impl Checkpoint {
    /// Finds the checkpoint at `path`: a `.gguf` file; a directory with config.json (HF, even if
    /// GGUF files lie beside it); or a directory without config.json that holds one `.gguf`.
    pub fn locate(path: &Path) -> Result<Self> {
        if path.is_file() {
            if is_gguf(path) {
                return Ok(Checkpoint::Gguf(path.to_path_buf()));
            }
            return Err(ModelError::BadFile {
                path: path.to_path_buf(),
                message: "a model is an HF directory (with config.json) or a .gguf file".into(),
            });
        }
        if !path.is_dir() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "the model: an HF model directory or a .gguf file".into(),
            });
        }
        if path.join("config.json").exists() {
            return Ok(Checkpoint::HfDir(path.to_path_buf()));
        }
        let mut ggufs: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ModelError::BadFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_gguf(p))
            .collect();
        ggufs.sort();
        match ggufs.len() {
            // No GGUF either: the HF error names config.json, what most directories lack.
            0 => Ok(Checkpoint::HfDir(path.to_path_buf())),
            1 => Ok(Checkpoint::Gguf(ggufs.remove(0))),
            _ => Err(ModelError::BadFile {
                path: path.to_path_buf(),
                message: format!(
                    "holds {} GGUF files ({}): name the one to load",
                    ggufs.len(),
                    ggufs
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// The directory of the checkpoint (a GGUF file's parent).
    pub fn dir(&self) -> &Path {
        match self {
            Checkpoint::HfDir(d) => d,
            Checkpoint::Gguf(f) => f.parent().unwrap_or(Path::new(".")),
        }
    }

    /// The file that holds the config: config.json or the GGUF file.
    pub fn config_file(&self) -> PathBuf {
        match self {
            Checkpoint::HfDir(d) => d.join("config.json"),
            Checkpoint::Gguf(f) => f.clone(),
        }
    }
}

/// What a checkpoint is, read from its config and the headers of its weight files (no tensor
/// data): what `model check` reports and every manifest records.
#[derive(Clone, Debug)]
pub struct CheckpointInfo {
    /// Where it was found.
    pub checkpoint: Checkpoint,
    /// The normalised config.
    pub config: ModelConfig,
    /// sha256 of config.json, or of a GGUF file's header (metadata, tokenizer, tensor
    /// directory).
    pub config_sha256: String,
    /// The weight files.
    pub weight_files: Vec<PathBuf>,
    /// Scalars in the checkpoint (tied weights counted once, unused ones included).
    pub parameter_count: usize,
    /// Tensors per stored type (`F32`, `BF16`; `Q4_1`, `Q8_0`, ... for GGUF).
    pub stored_types: BTreeMap<String, usize>,
}

impl CheckpointInfo {
    /// Reads the config and the weight files' headers of the checkpoint at `path`; no tensor
    /// is read, so this takes about as long for 6B parameters as for 6M.
    pub fn read(path: &Path) -> Result<Self> {
        Self::open(path, DType::F32, &Device::Cpu).map(|(info, _)| info)
    }

    /// The info and the (lazily read) weights, converted on access to `dtype` on `device`.
    pub(crate) fn open(path: &Path, dtype: DType, device: &Device) -> Result<(Self, Weights)> {
        let checkpoint = Checkpoint::locate(path)?;
        let (config, weights, config_sha256) = match &checkpoint {
            Checkpoint::HfDir(dir) => {
                let file = dir.join("config.json");
                let config = ModelConfig::from_file(&file)?;
                let weights = Weights::open(dir, dtype, device)?;
                (config, weights, sha256_file(&file)?)
            }
            Checkpoint::Gguf(file) => {
                let g = GgufFile::open(file)?;
                let config = g.config()?;
                let sha = g.header_sha256().to_string();
                let weights = Weights::open_gguf(g, &config, dtype, device);
                (config, weights, sha)
            }
        };
        let info = Self {
            checkpoint,
            config,
            config_sha256,
            weight_files: weights.files.clone(),
            parameter_count: weights.parameter_count(),
            stored_types: weights.stored_types(),
        };
        Ok((info, weights))
    }
}

/// Gigabytes (10^9 bytes), as `free -g` and `df -H` count them.
pub const GB: f64 = 1e9;

impl CheckpointInfo {
    /// Bytes the weights take once loaded in `dtype`: every parameter at the dtype's size (on
    /// the CPU, norms and biases of a half-precision model are held in f32, a few MB more).
    pub fn weight_bytes(&self, dtype: DType) -> u64 {
        self.parameter_count as u64 * dtype.size_in_bytes() as u64
    }

    /// Refuses a CPU load whose weights cannot fit in the memory the machine has available
    /// (`MemAvailable` of /proc/meminfo, which counts the page cache the kernel can drop),
    /// before any tensor is read; the error names the size needed and a dtype that would fit.
    /// GPU memory is not checked here: the first allocation that fails says so.
    pub fn check_fits(&self, dtype: DType, device: &Device) -> Result<()> {
        if !device.is_cpu() {
            return Ok(());
        }
        match available_memory() {
            Some(available) => self.check_fits_in(dtype, device, available),
            None => Ok(()),
        }
    }

    /// [`CheckpointInfo::check_fits`] against `available` bytes.
    pub fn check_fits_in(&self, dtype: DType, device: &Device, available: u64) -> Result<()> {
        if !device.is_cpu() {
            return Ok(());
        }
        // Activations, tokenizer and runtime: a few hundred MB for a study's batch.
        const HEADROOM: u64 = 500_000_000;
        let needed = self.weight_bytes(dtype);
        if needed + HEADROOM <= available {
            return Ok(());
        }
        let hint = [DType::BF16]
            .into_iter()
            .filter(|&d| d.size_in_bytes() < dtype.size_in_bytes())
            .find(|&d| self.weight_bytes(d) + HEADROOM <= available)
            .map(|d| {
                format!(
                    "; in {} it needs {:.1} GB (--dtype {0}, or dtype = \"{0}\" in the \
                     pipeline's [model]), or run on a GPU",
                    crate::model::dtype_name(d),
                    self.weight_bytes(d) as f64 / GB
                )
            })
            .unwrap_or_else(|| "; run it on a machine with more memory or a GPU".into());
        Err(ModelError::TooLarge {
            path: self.checkpoint.config_file(),
            parameters: self.parameter_count,
            dtype: crate::model::dtype_name(dtype),
            needed_gb: needed as f64 / GB,
            available_gb: available as f64 / GB,
            hint,
        })
    }
}

/// Memory the kernel says is available for new allocations without swapping (Linux
/// `MemAvailable`), in bytes; `HELIXLAB_MEMORY_AVAILABLE` (bytes) overrides it, for tests and
/// for machines whose limit is a cgroup's rather than the kernel's.
pub fn available_memory() -> Option<u64> {
    if let Ok(v) = std::env::var("HELIXLAB_MEMORY_AVAILABLE") {
        return v.trim().parse().ok();
    }
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn sha256_file(path: &Path) -> Result<String> {
    let bad = |e: std::io::Error| ModelError::BadFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(bad)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(bad)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_one_gguf_is_that_file_and_two_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("m.Q4_1.gguf");
        std::fs::write(&a, b"x").unwrap();
        assert_eq!(
            Checkpoint::locate(tmp.path()).unwrap(),
            Checkpoint::Gguf(a.clone())
        );
        assert_eq!(Checkpoint::locate(&a).unwrap(), Checkpoint::Gguf(a.clone()));
        std::fs::write(tmp.path().join("m.Q8_0.gguf"), b"x").unwrap();
        let e = Checkpoint::locate(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains("2 GGUF files") && e.contains("m.Q8_0.gguf"),
            "{e}"
        );
        std::fs::write(tmp.path().join("config.json"), b"{}").unwrap();
        assert_eq!(
            Checkpoint::locate(tmp.path()).unwrap(),
            Checkpoint::HfDir(tmp.path().to_path_buf())
        );
        let e = Checkpoint::locate(&tmp.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
