//! Helpers shared by the unit tests of several modules (compiled only for tests).
//!
//! Owns: [`ScratchDirectory`], a fresh directory removed on drop. Invariant: every name is unique
//! per process, label and nanosecond, so tests running in parallel never share a directory.

use std::fs;
use std::path::{Path, PathBuf};

/// A fresh directory, removed with everything in it when dropped.
pub(crate) struct ScratchDirectory(pub PathBuf);

impl ScratchDirectory {
    /// A fresh directory under `base` (e.g. `/dev/shm` for tmpfs), named after `label`.
    pub(crate) fn under(base: &Path, label: &str) -> ScratchDirectory {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = base.join(format!("pgbak-test-{label}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).unwrap();
        ScratchDirectory(path)
    }

    /// A fresh directory under the system's temporary directory.
    pub(crate) fn new(label: &str) -> ScratchDirectory {
        ScratchDirectory::under(&std::env::temp_dir(), label)
    }

    /// This directory as a checked `$PGBAK` owned by the running user.
    pub(crate) fn home(&self) -> crate::home::environment::PgbakHome {
        crate::home::environment::PgbakHome {
            path: self.0.clone(),
            owner_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    /// The names in the directory, sorted.
    pub(crate) fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for ScratchDirectory {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
