//! `pgbak restore-wal NAME PATH [--from SOURCE]`, the `restore_command` (S-8.1.1).
//!
//! Owns the mapping from what the source holds to PostgreSQL's exit-status contract.
//! Invariant: exit 1 ("the archive ends here", after which PostgreSQL promotes) only when
//! [`crate::backup_copy::lookup`] proved it; a damaged file, a hole before a later segment and
//! every error — including one this module does not foresee — exit [`EXIT_ABORT_RECOVERY`].

use crate::Error;
use crate::backup_copy::{BackupCopyError, Lookup, Source, lookup};
use crate::hint::OperatorHint;
use crate::restore::restore_one;
use crate::wal_name::WalFileName;
use std::path::{Path, PathBuf};

/// Above 125, so PostgreSQL aborts recovery (it treats 1–125 as "not in the archive"); not
/// 126/127 (the shell's "cannot execute"/"not found") nor 128+n (a signal; 143 is SIGTERM,
/// which PostgreSQL takes for a shutdown request).
pub const EXIT_ABORT_RECOVERY: u8 = 200;
/// The archive ends here: not archived, and nothing later on its timeline is.
pub const EXIT_END_OF_ARCHIVE: u8 = 1;

/// What `restore-wal` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreWalOutcome {
    Written,
    EndOfArchive,
}

/// A segment that is not there although its timeline goes on: recovery must not end here.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name}: not in the archive, but the later {later} is: the WAL has a hole here, and ending \
     recovery at it would silently lose everything after it"
)]
pub struct HoleInArchive {
    pub name: String,
    pub later: WalFileName,
}

impl OperatorHint for HoleInArchive {
    fn hint(&self) -> Option<String> {
        Some(format!(
            "recovery was stopped on purpose; copy {}.zst from the offsite copy into the \
             source's pg_wal/ and start the server again, or restore to a point before it \
             (pgbak restore --target-lsn/--target-time)",
            self.name
        ))
    }
}

/// Runs `restore-wal`: `from` is `--from`, `pgbak_home` `$PGBAK` (the default source).
pub fn run(
    name: &str,
    path: &Path,
    from: Option<&Path>,
    pgbak_home: Option<&Path>,
) -> Result<RestoreWalOutcome, Error> {
    // `--from` is always a path here: restore writes it absolute, never as a TIMESTAMP.
    let source = match from {
        Some(from) => Source::resolve(Some(&absolute_path(from)), None)?,
        None => Source::resolve(None, pgbak_home)?,
    };
    match lookup(&source.pool(), name)? {
        Lookup::Found(stored) => {
            let parsed = WalFileName::parse(name).ok_or_else(|| BackupCopyError::NotAWalName {
                name: name.to_owned(),
            })?;
            restore_one(&stored, &parsed, path, None)?;
            Ok(RestoreWalOutcome::Written)
        }
        Lookup::EndOfArchive => Ok(RestoreWalOutcome::EndOfArchive),
        Lookup::MissingBeforeLater { later } => Err(Error::HoleInArchive(HoleInArchive {
            name: name.to_owned(),
            later,
        })),
    }
}

/// A path of the form `restore` writes, or a relative one made absolute, so that a
/// 16-character directory name is never taken for a `TIMESTAMP` of `$PGBAK`.
fn absolute_path(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}
