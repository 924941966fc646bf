//! The WAL pool: a list of archived WAL files decompressed into `DEST/pg_wal` by several
//! threads, while the main thread extracts `base.tzst` (S-8.1: parallel decompression).
//!
//! Owns: [`decompress_all`] and [`WalPoolReport`].
//!
//! Invariants:
//! - Each file goes through [`decompress_verified`] into `pg_wal/NAME.pgbak-tmp` and is
//!   renamed to `pg_wal/NAME` only once whole and verified; no per-file fsync, because the
//!   restore ends with one `syncfs` of DEST (`finish.rs`), and a restore that dies before it
//!   is not a restore anyone uses (DEST is removed on failure).
//! - Files are taken in list order from a shared counter; the first failure stops the others
//!   from starting new files, and of several failures the one for the earliest file in the
//!   list is reported, so the message does not depend on thread timing.
//! - A caller's stop flag (set when the extraction failed) also stops the pool.

use crate::restore::error::RestoreWalError;
use crate::restore::progress::Progress;
use crate::restore::wal_file::decompress_verified;
use crate::wal_name::WalFileName;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Suffix of a WAL file being written in `pg_wal/` (PostgreSQL ignores names that are not WAL
/// file names there).
pub(crate) const TEMPORARY_SUFFIX: &str = ".pgbak-tmp";

/// What the pool wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WalPoolReport {
    pub files: u64,
    pub bytes: u64,
}

/// Decompresses every `(name, source .zst)` of `files` into `pg_wal` with `jobs` threads (at
/// least one). Returns early, with the earliest failure, once one file fails or `stop` is set.
pub(crate) fn decompress_all(
    files: &[(WalFileName, PathBuf)],
    pg_wal: &Path,
    segment_size: u64,
    jobs: usize,
    stop: &AtomicBool,
    progress: &Progress,
) -> Result<WalPoolReport, RestoreWalError> {
    let next = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    let failure: Mutex<Option<(usize, RestoreWalError)>> = Mutex::new(None);
    let worker = || {
        while !stop.load(Ordering::Relaxed) {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some((name, source)) = files.get(index) else {
                return;
            };
            match one(name, source, pg_wal, segment_size) {
                Ok(written) => {
                    bytes.fetch_add(written, Ordering::Relaxed);
                    progress.wal_bytes.fetch_add(written, Ordering::Relaxed);
                    progress.wal_files_done.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    let mut first = failure.lock().unwrap_or_else(|poison| poison.into_inner());
                    if first.as_ref().is_none_or(|(earlier, _)| index < *earlier) {
                        *first = Some((index, error));
                    }
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    let threads = jobs.clamp(1, files.len().max(1));
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
    if let Some((_, error)) = failure
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner())
    {
        return Err(error);
    }
    Ok(WalPoolReport {
        files: files.len() as u64,
        bytes: bytes.into_inner(),
    })
}

fn one(
    name: &WalFileName,
    source: &Path,
    pg_wal: &Path,
    segment_size: u64,
) -> Result<u64, RestoreWalError> {
    let temporary = pg_wal.join(format!("{name}{TEMPORARY_SUFFIX}"));
    let destination = pg_wal.join(name.as_str());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(&temporary)
        .map_err(RestoreWalError::io("creating", &temporary))?;
    let written = decompress_verified(source, name, Some(segment_size), &mut file, &temporary)
        .and_then(|written| {
            fs::rename(&temporary, &destination)
                .map_err(RestoreWalError::io("renaming into place", &destination))?;
            Ok(written)
        })
        .inspect_err(|_| {
            let _ = fs::remove_file(&temporary);
        })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::wal_file::tests::{SEGMENT_SIZE, archived, segment_bytes};
    use crate::test_support::ScratchDirectory;

    fn names(count: u64) -> Vec<String> {
        (1..=count)
            .map(|segment| format!("00000001000000000000{segment:04X}"))
            .collect()
    }

    #[test]
    fn every_file_lands_whole_in_pg_wal() {
        let scratch = ScratchDirectory::new("wal-pool");
        let archive = scratch.0.join("archive");
        let pg_wal = scratch.0.join("pg_wal");
        fs::create_dir(&archive).unwrap();
        fs::create_dir(&pg_wal).unwrap();
        let mut files = Vec::new();
        for name in names(6) {
            let source = archived(&archive, &name, &segment_bytes(&name, None));
            files.push((WalFileName::parse(&name).unwrap(), source));
        }
        let history = b"1\t0/3000000\tno recovery target specified\n";
        let source = archived(&archive, "00000002.history", history);
        files.push((WalFileName::parse("00000002.history").unwrap(), source));
        let progress = Progress::new(false, files.len() as u64);
        let report = decompress_all(
            &files,
            &pg_wal,
            SEGMENT_SIZE,
            3,
            &AtomicBool::new(false),
            &progress,
        )
        .unwrap();
        assert_eq!(report.files, 7);
        assert_eq!(report.bytes, 6 * SEGMENT_SIZE + history.len() as u64);
        for name in names(6) {
            assert_eq!(
                fs::read(pg_wal.join(&name)).unwrap(),
                segment_bytes(&name, None)
            );
        }
        assert_eq!(fs::read_dir(&pg_wal).unwrap().count(), 7);
        assert_eq!(progress.wal_files_done.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn the_earliest_damaged_file_is_reported_and_no_temporary_file_is_left() {
        let scratch = ScratchDirectory::new("wal-pool-damaged");
        let archive = scratch.0.join("archive");
        let pg_wal = scratch.0.join("pg_wal");
        fs::create_dir(&archive).unwrap();
        fs::create_dir(&pg_wal).unwrap();
        let mut files = Vec::new();
        for (index, name) in names(8).into_iter().enumerate() {
            let mut bytes = segment_bytes(&name, None);
            if index == 2 || index == 6 {
                bytes.truncate(4096);
            }
            files.push((
                WalFileName::parse(&name).unwrap(),
                archived(&archive, &name, &bytes),
            ));
        }
        let progress = Progress::new(false, 8);
        let error = decompress_all(
            &files,
            &pg_wal,
            SEGMENT_SIZE,
            1,
            &AtomicBool::new(false),
            &progress,
        )
        .unwrap_err();
        match error {
            RestoreWalError::Damaged { name, .. } => assert_eq!(name.as_str(), names(8)[2]),
            other => panic!("{other:?}"),
        }
        let left: Vec<_> = fs::read_dir(&pg_wal)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            left.iter().all(|name| !name.ends_with(TEMPORARY_SUFFIX)),
            "{left:?}"
        );
    }
}
