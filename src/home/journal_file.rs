//! Opening `$PGBAK/pgbak.lock` as pgbak's journal: lock, replay, repair, rebuild.
//!
//! Owns: the one way every command gets at the journal. It takes the journal lock (byte 0,
//! exclusive, bounded wait) only while the journal is opened, so a concurrent `pgbak wal`
//! waits milliseconds at most (S-2.6). When recovery decides the journal cannot be trusted, the
//! state is rebuilt from the directory tree (S-3.3) and the damaged bytes are first kept as
//! `pgbak.lock.damaged-TIMESTAMP` (0600, durably) for inspection.
//!
//! Invariants: `pgbak.lock` is opened, never created anew over an existing file, never renamed
//! or deleted (other processes hold OFD locks on it, S-3.5); every descriptor is `O_CLOEXEC`.
//! Every failure is a [`JournalFileError`] naming `pgbak.lock` (or the path it is about).

use super::names::LOCK_FILE_NAME;
use crate::hint::OperatorHint;
use crate::home::environment::PgbakHome;
use crate::home::tree_scan::{self, ScanError};
use crate::journal::{
    DecodedJournal, Inspection, Journal, JournalError, JournalOptions, OpenError, OpenReport,
    RebuildReason, RebuildRequest,
};
use crate::machine::{Event, State};
use crate::os::durable::{self, Existing, PRIVATE_FILE_MODE};
use crate::os::lock::{LockError, LockFile, LockKind, LockRange, Wait};
use crate::timestamp::UnixMillis;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal lock is held for one append: milliseconds. Waiting longer than this means
/// another pgbak process is stuck holding it; failing loudly beats stalling the archiver.
pub const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(30);

/// pgbak's journal: the machine's state over the lock file.
pub type PgbakJournal = Journal<State, File>;

/// An open journal and what opening it did.
pub struct OpenedJournal {
    /// The lock file the journal lives in; keep it to take the locks again.
    pub lock_file: LockFile,
    pub journal: PgbakJournal,
    pub report: OpenReport,
    /// Where the damaged journal's bytes were kept, when it was rebuilt.
    pub damaged_copy: Option<PathBuf>,
}

/// A new journal's identity: distinct across rebuilds by time and process (no randomness is
/// needed; `choose_journal_id` also makes it differ from the damaged journal's).
fn journal_id_seed(now: UnixMillis) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or_default();
    now.0.rotate_left(20) ^ (u64::from(std::process::id()) << 44) ^ nanos
}

/// Whether `$PGBAK` has never been used: no journal bytes and no backup directory. `status`
/// reports such a directory as empty instead of creating a journal in it.
pub fn is_unused(home: &PgbakHome) -> Result<bool, JournalFileError> {
    let lock_path = home.lock_file_path();
    let journal_bytes = match std::fs::metadata(&lock_path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => {
            return Err(JournalFileError::Stat {
                path: lock_path,
                source,
            });
        }
    };
    if journal_bytes > 0 {
        return Ok(false);
    }
    let scan = tree_scan::scan(&home.path)?;
    Ok(scan.directories.is_empty())
}

/// Keeps the damaged journal's bytes next to it, durably, before the rebuild overwrites them.
fn keep_damaged_copy(
    pgbak: &Path,
    request: &RebuildRequest<'_>,
    now: UnixMillis,
) -> std::io::Result<Option<PathBuf>> {
    let Some(bytes) = request.damaged_bytes.filter(|_| request.reason.is_damage()) else {
        return Ok(None);
    };
    let name = format!("{LOCK_FILE_NAME}.damaged-{}", now.to_timestamp_string());
    durable::write_file_durably(pgbak, &name, bytes, PRIVATE_FILE_MODE, Existing::Keep)?;
    Ok(Some(pgbak.join(name)))
}

/// Opens the journal for writing: replays it, cuts a torn tail, or rebuilds it from the tree.
/// Creates `pgbak.lock` if it does not exist (that is a rebuild from an empty tree: a first run).
pub fn open_journal(home: &PgbakHome, now: UnixMillis) -> Result<OpenedJournal, JournalFileError> {
    let lock_path = home.lock_file_path();
    let lock_file = LockFile::open(&lock_path)?;
    let guard = lock_file.lock(
        LockRange::Journal,
        LockKind::Exclusive,
        Wait::UpTo(JOURNAL_LOCK_WAIT),
    )?;
    let storage = lock_file
        .file()
        .try_clone()
        .map_err(|source| JournalFileError::Duplicate {
            path: lock_path.clone(),
            source,
        })?;
    let mut damaged_copy = None;
    let opened = Journal::open(
        storage,
        &JournalOptions::default(),
        now,
        journal_id_seed(now),
        |request: &RebuildRequest<'_>| -> Result<State, RebuildError> {
            damaged_copy = keep_damaged_copy(&home.path, request, now).map_err(|source| {
                RebuildError::KeepCopy {
                    path: home.path.join(LOCK_FILE_NAME),
                    source,
                }
            })?;
            let scan = tree_scan::scan(&home.path).map_err(RebuildError::Scan)?;
            Ok(State::rebuilt_from(&scan))
        },
    );
    drop(guard);
    let (journal, report) = opened.map_err(|error| match error {
        OpenError::Journal(source) => JournalFileError::Journal {
            path: lock_path.clone(),
            source,
        },
        OpenError::RebuildFailed { reason, source } => JournalFileError::RebuildFailed {
            path: lock_path.clone(),
            reason,
            source,
        },
    })?;
    Ok(OpenedJournal {
        lock_file,
        journal,
        report,
        damaged_copy,
    })
}

impl OpenedJournal {
    /// Appends facts under the exclusive journal lock, held only for the append (S-2.6): the
    /// journal first folds in what other processes appended, the machine checks every fact,
    /// then the frames are written and fsynced (S-3.2) before this returns.
    pub fn append(&mut self, events: &[Event], now: UnixMillis) -> Result<(), JournalFileError> {
        let _guard = self.lock_file.lock(
            LockRange::Journal,
            LockKind::Exclusive,
            Wait::UpTo(JOURNAL_LOCK_WAIT),
        )?;
        self.journal
            .append(events, now)
            .map_err(JournalFileError::in_journal(self.lock_file.path()))?;
        Ok(())
    }
}

/// Why the journal in `$PGBAK/pgbak.lock` could not be opened, read or appended to. Every
/// message starts with `journal` and the path; the cause (the journal's, the lock's or the
/// file system's) follows in the chain, and so does its hint.
#[derive(Debug, thiserror::Error)]
pub enum JournalFileError {
    /// The journal lock (byte 0) could not be taken, or the file is no longer `pgbak.lock`.
    #[error(transparent)]
    Lock(#[from] LockError),

    #[error("journal {}", .path.display())]
    Stat { path: PathBuf, source: io::Error },

    /// Looking for backup directories (is `$PGBAK` unused?) failed.
    #[error(transparent)]
    Scan(#[from] ScanError),

    #[error("journal {}: cannot duplicate its descriptor", .path.display())]
    Duplicate { path: PathBuf, source: io::Error },

    #[error("journal {}", .path.display())]
    Journal {
        path: PathBuf,
        #[source]
        source: JournalError,
    },

    #[error(
        "journal {}: needs a rebuild because {reason}, and the rebuild failed",
        .path.display()
    )]
    RebuildFailed {
        path: PathBuf,
        reason: RebuildReason,
        #[source]
        source: RebuildError,
    },

    /// `pgbak wal` reopened (rebuilt) the journal because it was damaged, and the next look
    /// found it damaged again: something else is writing into it.
    #[error("journal {}: damaged again right after it was rebuilt", .path.display())]
    DamagedAgain { path: PathBuf },
}

impl JournalFileError {
    /// Wraps a journal error of the journal in `path` (the journal does not know its path).
    pub fn in_journal(path: &Path) -> impl FnOnce(JournalError) -> JournalFileError + '_ {
        move |source| JournalFileError::Journal {
            path: path.to_owned(),
            source,
        }
    }
}

impl OperatorHint for JournalFileError {
    fn hint(&self) -> Option<String> {
        match self {
            JournalFileError::Lock(error) => error.hint(),
            JournalFileError::Journal { source, .. } => source.hint(),
            JournalFileError::Stat { .. }
            | JournalFileError::Scan(_)
            | JournalFileError::Duplicate { .. }
            | JournalFileError::RebuildFailed { .. }
            | JournalFileError::DamagedAgain { .. } => None,
        }
    }
}

/// Why rebuilding the journal from the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Scan(ScanError),
    #[error("cannot keep a copy of the damaged journal {}", .path.display())]
    KeepCopy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The journal's records as stored, read under the shared journal lock (`status --journal`).
pub fn decode_journal(
    opened: &OpenedJournal,
) -> Result<DecodedJournal<State, Event>, JournalFileError> {
    let _guard = opened.lock_file.lock(
        LockRange::Journal,
        LockKind::Shared,
        Wait::UpTo(JOURNAL_LOCK_WAIT),
    )?;
    Journal::<State, File>::decode_records(opened.journal.storage())
        .map_err(JournalFileError::in_journal(opened.lock_file.path()))
}

/// A read-only replay (no repair), under the shared journal lock.
pub fn inspect_journal(lock_file: &LockFile) -> Result<Inspection<State>, JournalFileError> {
    let _guard = lock_file.lock(
        LockRange::Journal,
        LockKind::Shared,
        Wait::UpTo(JOURNAL_LOCK_WAIT),
    )?;
    Journal::<State, File>::inspect(lock_file.file())
        .map_err(JournalFileError::in_journal(lock_file.path()))
}
