//! One process at a time per (run directory, stage): two `helixlab extract` on the same run
//! would otherwise both decide there is work and race on the same files. The second one waits,
//! saying for whom.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::{io, Result};

/// Held for the life of a stage run; released when dropped (or when the process dies: the
/// lock is the kernel's, not the file's existence, so a killed run never leaves a stale lock).
pub struct StageLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

impl StageLock {
    /// Takes the lock of `stage` on the run at `run_dir`, waiting (and saying so on stderr) while
    /// another process holds it.
    pub fn acquire(run_dir: &Path, stage: &str) -> Result<StageLock> {
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let path = run_dir.join(format!(".helixlab-{stage}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        let fd = file.as_raw_fd();
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "{stage}: another helixlab {stage} is working on {}; waiting for it",
                run_dir.display()
            );
            // SAFETY: as above; blocks until the holder releases the lock.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(io(&path)(std::io::Error::last_os_error()));
            }
        }
        // The file stays empty (reruns leave the run's bytes as they were).
        Ok(StageLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StageLock::acquire(tmp.path(), "extract").unwrap();
        let dir = tmp.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _second = StageLock::acquire(&dir, "extract").unwrap();
            tx.send(()).unwrap();
        });
        // flock locks belong to open file descriptions, so a second open in this process
        // blocks like another process would.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        // Another stage's lock is independent.
        let _a = StageLock::acquire(tmp.path(), "spectral").unwrap();
        let _b = StageLock::acquire(tmp.path(), "fit").unwrap();
    }
}
