//! Write-to-temp-then-rename, so a path either holds a complete file or nothing new.

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

/// Renames the temporary file into place.
pub fn commit(path: &Path) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    commit(path)
}
