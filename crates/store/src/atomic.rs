//! Write-to-temp-then-rename, so a path either holds a complete file or nothing new; the
//! temporary file never outlives a failure ([`Temp`] removes it when dropped uncommitted, and
//! the next write of the same path removes what a killed process left).

use std::path::{Path, PathBuf};

use crate::{io, Result};

/// The temporary sibling a file is written to before it is renamed to `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The temporary file of `path`, created: leftovers of earlier writers of `path` (killed
/// processes; the per-stage lock keeps live ones out) are removed first, and the file is
/// removed again if the guard is dropped before [`Temp::commit`].
pub struct Temp {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl Temp {
    /// Creates the temporary file of `path`.
    pub fn create(path: &Path) -> Result<(Temp, std::fs::File)> {
        remove_leftovers(path);
        let tmp = temp_path(path);
        let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let guard = Temp {
            tmp,
            path: path.to_path_buf(),
            committed: false,
        };
        Ok((guard, file))
    }

    /// Renames the temporary file into place.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes `.<name>.tmp-<pid>` siblings of `path` (any pid).
pub fn remove_leftovers(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let (guard, mut file) = Temp::create(path)?;
    std::io::Write::write_all(&mut file, bytes).map_err(io(&guard.tmp))?;
    drop(file);
    guard.commit()
}
