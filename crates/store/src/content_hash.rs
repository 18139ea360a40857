//! Weight files identified by their content: the sha256 of each file, computed once and cached
//! by path, size and modification time (a 12 GB checkpoint is read once, its shards in
//! parallel), so a checkpoint swapped for another of the same size is a different model.
//!
//! The cache is `$HELIXLAB_CACHE/weight-sha256.json` (default `$XDG_CACHE_HOME/helixlab`, else
//! `~/.cache/helixlab`); it is a convenience: when it cannot be read or written the hashes are
//! computed again, never skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::manifest::sha256_file;
use crate::{io, Result};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

fn cache_file() -> Option<PathBuf> {
    let dir = std::env::var_os("HELIXLAB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("helixlab")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/helixlab")))?;
    Some(dir.join("weight-sha256.json"))
}

fn stamp(path: &Path) -> Result<(PathBuf, u64, u128)> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok((key, meta.len(), mtime))
}

/// The sha256 of each of `files`, by file name, from the cache where the file's size and
/// modification time are unchanged, hashed (in parallel) otherwise.
pub fn weight_hashes(files: &[PathBuf]) -> Result<BTreeMap<String, String>> {
    let cache_path = cache_file();
    let mut cache: BTreeMap<String, Entry> = cache_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let stamps: Vec<(PathBuf, u64, u128)> =
        files.iter().map(|f| stamp(f)).collect::<Result<_>>()?;
    let cached = |(key, size, mtime): &(PathBuf, u64, u128)| {
        cache
            .get(&key.display().to_string())
            .filter(|e| e.size == *size && e.mtime_ns == *mtime)
            .map(|e| e.sha256.clone())
    };
    let known: Vec<Option<String>> = stamps.iter().map(cached).collect();
    let fresh: Vec<Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .zip(&known)
            .map(|(f, k)| s.spawn(move || k.clone().map_or_else(|| sha256_file(f), Ok)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hashing does not panic"))
            .collect()
    });
    let mut out = BTreeMap::new();
    let mut changed = false;
    for ((f, (key, size, mtime)), (sha, k)) in
        files.iter().zip(stamps).zip(fresh.into_iter().zip(known))
    {
        let sha = sha?;
        if k.is_none() {
            changed = true;
            cache.insert(
                key.display().to_string(),
                Entry {
                    size,
                    mtime_ns: mtime,
                    sha256: sha.clone(),
                },
            );
        }
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        out.insert(name, sha);
    }
    if let (true, Some(p)) = (changed, cache_path) {
        let text = serde_json::to_string_pretty(&cache).expect("json");
        let _ = crate::atomic::write(&p, text.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_size_with_other_bytes_is_another_hash() {
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var("HELIXLAB_CACHE", tmp.path().join("cache"));
        let f = tmp.path().join("model.safetensors");
        std::fs::write(&f, b"aaaa").unwrap();
        let first = weight_hashes(std::slice::from_ref(&f)).unwrap();
        assert!(tmp.path().join("cache/weight-sha256.json").exists());
        // Cached: the same answer.
        assert_eq!(weight_hashes(std::slice::from_ref(&f)).unwrap(), first);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"bbbb").unwrap();
        let second = weight_hashes(std::slice::from_ref(&f)).unwrap();
        assert_ne!(first, second);
        assert_eq!(second["model.safetensors"], sha256_file(&f).unwrap());
    }
}
