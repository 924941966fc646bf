//! The errors of `src/restore/`: [`RestoreError`] (writing a data directory), [`RestoreWalError`]
//! (one WAL file: the `restore_command`'s write, and each file of the WAL pool) and
//! [`ReplayError`] (`--replay`).
//!
//! Invariants: every message names its subject first (the destination, `base.tzst`, the WAL
//! file) and says what was expected and what was found; a variant with a `#[source]` leaves
//! the cause out of its text (`crate::error::one_line` appends it). [`RestoreWalError`] keeps
//! "the archived copy is damaged" ([`RestoreWalError::Damaged`]) apart from "an I/O error
//! happened" ([`RestoreWalError::Io`]): the first is a fact about the backup, the second may
//! pass; `restore-wal` reports both as fatal to recovery (S-8.1.1), but says different things.

use crate::hint::OperatorHint;
use crate::wal_name::WalFileName;
use std::io;
use std::path::PathBuf;

/// Why a restore into DEST failed. Whatever pgbak wrote into DEST has been removed again by the
/// time the caller sees this, unless it is [`RestoreError::Cleanup`].
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("destination {dest}: exists and is not an empty directory")]
    DestNotEmpty { dest: PathBuf },
    #[error("destination {dest}: exists and is not a directory")]
    DestNotDirectory { dest: PathBuf },
    #[error("destination {dest}: its parent directory {parent} does not exist")]
    DestParentMissing { dest: PathBuf, parent: PathBuf },
    /// A member of `base.tzst` that pgbak refuses to write (S-8.1: nothing outside DEST).
    #[error("{base}: member {member:?}: {problem}")]
    UnsafeMember {
        base: PathBuf,
        member: String,
        problem: String,
    },
    /// The zstd or tar stream of `base.tzst` is damaged or ends early.
    #[error("{base}: damaged or incomplete (zstd or tar stream)")]
    BaseDamaged {
        base: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{base}: member {member:?}: the archive ends after {found} of its {expected} bytes")]
    MemberTruncated {
        base: PathBuf,
        member: String,
        expected: u64,
        found: u64,
    },
    /// The tar stream was whole but held no data directory.
    #[error(
        "{base}: holds no {missing}, so it is not a base backup of a PostgreSQL data directory"
    )]
    NotADataDirectory {
        base: PathBuf,
        missing: &'static str,
    },
    /// ENOSPC while writing into DEST.
    #[error("destination {dest}: no space left on the device after writing {written_bytes} bytes")]
    DiskFull {
        dest: PathBuf,
        written_bytes: u64,
        /// Bytes of WAL known to be still to come (what more is needed, at least).
        pending_wal_bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("{operation} {path}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("recovery setting {setting}: {problem}")]
    Setting {
        setting: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Wal(#[from] RestoreWalError),
    /// The restore failed and removing what it wrote failed too: DEST is left half-written.
    #[error(
        "destination {dest}: the restore failed ({failure}), and removing what it wrote failed"
    )]
    Cleanup {
        dest: PathBuf,
        failure: String,
        #[source]
        source: io::Error,
    },
}

impl RestoreError {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> RestoreError {
        let path = path.into();
        move |source| RestoreError::Io {
            path,
            operation,
            source,
        }
    }
}

impl OperatorHint for RestoreError {
    fn hint(&self) -> Option<String> {
        match self {
            RestoreError::DestNotEmpty { .. } | RestoreError::DestNotDirectory { .. } => Some(
                "give a path that does not exist yet, or an empty directory: pgbak restore never writes over files".into(),
            ),
            RestoreError::DestParentMissing { parent, .. } => {
                Some(format!("create {} first", parent.display()))
            }
            RestoreError::UnsafeMember { .. } => Some(
                "pg_basebackup never writes such a member: this base.tzst was altered or is not a base backup; nothing was written outside the destination".into(),
            ),
            RestoreError::BaseDamaged { base, .. } | RestoreError::MemberTruncated { base, .. } => Some(format!(
                "restore from another backup directory (--from), or from another copy of {}",
                base.display()
            )),
            RestoreError::NotADataDirectory { .. } => {
                Some("restore from a directory that pgbak sync filled (--from)".into())
            }
            RestoreError::DiskFull {
                pending_wal_bytes, ..
            } => Some(if *pending_wal_bytes > 0 {
                format!(
                    "free space on the destination's file system (at least {pending_wal_bytes} more bytes of WAL were still to come), or restore elsewhere"
                )
            } else {
                "free space on the destination's file system, or restore elsewhere".into()
            }),
            RestoreError::Io { .. } | RestoreError::Setting { .. } => None,
            RestoreError::Wal(error) => error.hint(),
            RestoreError::Cleanup { dest, .. } => Some(format!(
                "remove {} by hand before restoring again: it is not a usable data directory",
                dest.display()
            )),
        }
    }
}

/// Why one archived WAL file could not be written where it is wanted.
#[derive(Debug, thiserror::Error)]
pub enum RestoreWalError {
    /// The archived copy is damaged: zstd stream, size or page header (S-8.1.1).
    #[error("{source_zst}: {name} is damaged: {problem}")]
    Damaged {
        source_zst: PathBuf,
        name: WalFileName,
        problem: WalDamage,
    },
    /// Reading the copy or writing the result failed; the copy may be fine.
    #[error("{operation} {path}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RestoreWalError {
    /// Whether the archived copy itself is bad (as opposed to an I/O error on the way).
    pub fn is_damaged(&self) -> bool {
        matches!(self, RestoreWalError::Damaged { .. })
    }

    /// Whether this is ENOSPC on the written side.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, RestoreWalError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }

    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> RestoreWalError {
        let path = path.into();
        move |source| RestoreWalError::Io {
            path,
            operation,
            source,
        }
    }
}

impl OperatorHint for RestoreWalError {
    fn hint(&self) -> Option<String> {
        match self {
            RestoreWalError::Damaged { .. } => Some(
                "restore this file from another copy of the backup (--from), or end recovery before it".into(),
            ),
            RestoreWalError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                Some("free space on the destination's file system".into())
            }
            RestoreWalError::Io { .. } => None,
        }
    }
}

/// What is wrong with an archived WAL file's content: expected, then found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalDamage {
    #[error("not a whole zstd stream: {0}")]
    Decode(String),
    #[error("decompressed to {found} bytes, expected exactly {expected} (the segment size)")]
    WrongSize { expected: u64, found: u64 },
    #[error("decompressed to more than {limit} bytes, expected {expected}")]
    TooLarge { limit: u64, expected: &'static str },
    #[error("no WAL long page header at its start{detail}")]
    NoLongPageHeader { detail: String },
    #[error("its page header says timeline {found}, its name says timeline {expected}")]
    WrongTimeline { expected: u32, found: u32 },
    #[error(
        "its page header says page address {found}, expected {expected} (the start of the segment its name gives)"
    )]
    WrongPageAddress { expected: String, found: String },
}

/// Why `--replay` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--replay: refusing to run postgres as root (PostgreSQL refuses to run as root)")]
    AsRoot,
    #[error("--replay: {dest} belongs to user id {owner}, pgbak runs as user id {uid}")]
    NotOwner { dest: PathBuf, owner: u32, uid: u32 },
    #[error("--replay: starting {program}")]
    Start {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--replay: postgres --single on {dest} {exit}; its last output: {output}")]
    PostgresFailed {
        dest: PathBuf,
        exit: String,
        output: String,
    },
    #[error("--replay: pg_controldata {dest}: {problem}")]
    ControlData { dest: PathBuf, problem: String },
    #[error("{operation} {path}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
}

impl OperatorHint for ReplayError {
    fn hint(&self) -> Option<String> {
        match self {
            ReplayError::AsRoot | ReplayError::NotOwner { .. } => Some(
                "run pgbak restore as the owner of the data directory, e.g. runuser -u postgres -- pgbak restore ...".into(),
            ),
            ReplayError::Start { .. } => Some(
                "give the directory of the PostgreSQL binaries with --pg-bin DIR".into(),
            ),
            ReplayError::PostgresFailed { dest, .. } => Some(format!(
                "the restored data directory {} stays as it is; start PostgreSQL on it by hand to see what recovery says",
                dest.display()
            )),
            ReplayError::ControlData { .. } | ReplayError::Io { .. } => None,
        }
    }
}
