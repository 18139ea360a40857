//! Where a model's files are: an HF directory (config.json, weights, tokenizer) or one GGUF
//! file (config, weights and usually the tokenizer in one), given as the file or as a directory
//! that holds exactly one.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

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
