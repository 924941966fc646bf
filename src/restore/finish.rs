//! The end of a restore: everything written into DEST made durable at once (S-8.1: one sync
//! at the end).
//!
//! Owns: [`sync_tree`] and [`SyncMethod`].
//!
//! Why one `syncfs` instead of an fsync per file: a data directory has thousands of files and
//! the WAL pool writes hundreds of segments; one `syncfs(2)` on DEST's file system writes them
//! all back in one pass, in the order the kernel likes, and reports any write-back error that
//! happened since DEST was opened (Linux 5.8+). Where the call does not exist (`ENOSYS`: some
//! sandboxes and old kernels), every file and directory under DEST is fsynced instead, files
//! before the directory holding them, symlinks never followed. `--no-sync` skips both, as
//! `initdb --no-sync` does, for throwaway restores.

use nix::errno::Errno;
use std::fs::{self, File};
use std::io;
use std::path::Path;

/// How DEST was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMethod {
    /// One `syncfs(2)` on DEST's file system.
    Syncfs,
    /// `syncfs` is not available: every file and directory fsynced.
    EveryFile,
}

/// Makes everything under `dest` durable (see the module header).
pub fn sync_tree(dest: &Path) -> io::Result<SyncMethod> {
    let directory = File::open(dest)?;
    match nix::unistd::syncfs(&directory) {
        Ok(()) => Ok(SyncMethod::Syncfs),
        Err(Errno::ENOSYS) => {
            fsync_every_file(dest)?;
            Ok(SyncMethod::EveryFile)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// The fallback: fsync each regular file and directory under `directory`, then `directory`.
pub(crate) fn fsync_every_file(directory: &Path) -> io::Result<()> {
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            fsync_every_file(&entry.path())?;
        } else if kind.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    #[test]
    fn a_tree_is_synced_either_way() {
        let scratch = ScratchDirectory::new("finish-sync");
        fs::create_dir(scratch.0.join("base")).unwrap();
        fs::write(scratch.0.join("base/1"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent", scratch.0.join("dangling")).unwrap();
        assert_eq!(sync_tree(&scratch.0).unwrap(), SyncMethod::Syncfs);
        fsync_every_file(&scratch.0).unwrap();
    }
}
