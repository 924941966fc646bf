//! Why `pgbak wal` did not archive a file: [`ArchiveError`], its `hint:` lines, and the
//! mapping of an I/O or journal failure to it (a full disk anywhere in the chain becomes
//! [`ArchiveError::StorageFull`], S-8.5).
//!
//! Invariant: every message starts with `wal` and the path or name it is about, and every
//! variant says what the operator can do (see `crate::hint`).

use std::io;
use std::path::PathBuf;

use super::input::WalInput;
use crate::hint::OperatorHint;
use crate::home::environment::PgbakHome;
use crate::home::journal_file::JournalFileError;
use crate::timestamp::DirectoryName;

/// Why `pgbak wal` did not archive the file. Every message starts with `wal` and the path or
/// name it is about; the hint says what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "wal {}: not a file PostgreSQL archives (a WAL segment of 24 hex digits, \
         SEGMENT.partial, TIMELINE.history or SEGMENT.OFFSET.backup)",
        .path.display()
    )]
    RefusedName { path: PathBuf },

    #[error("wal {}: no such file", .path.display())]
    Missing { path: PathBuf },

    #[error("wal {}: is {what}, not a regular file", .path.display())]
    NotARegularFile { path: PathBuf, what: &'static str },

    #[error("wal {}: cannot be read", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("wal {}: is {size_bytes} bytes, but {expected}", .path.display())]
    WrongSize {
        path: PathBuf,
        size_bytes: u64,
        expected: &'static str,
    },

    #[error("wal {}: changed while it was read ({detail})", .path.display())]
    ChangedWhileRead { path: PathBuf, detail: String },

    #[error("wal {name}: cannot set up zstd compression")]
    Compression {
        name: String,
        #[source]
        source: io::Error,
    },

    #[error("wal {name}: $PGBAK {} is full ({reason}), the file is not archived", .pgbak.display())]
    StorageFull {
        name: String,
        pgbak: PathBuf,
        reason: &'static str,
        /// Boxed, like the journal's error below: every `Result` of the archive path
        /// carries this enum, and these causes are its largest part.
        #[source]
        source: Box<StorageFullCause>,
    },

    #[error("wal {name}: {action}")]
    Storage {
        name: String,
        action: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "wal {name}: {} already exists and {detail}; it was left unchanged, and {rejected}",
        .archived.display()
    )]
    Conflict {
        name: String,
        archived: PathBuf,
        rejected: RejectedCopy,
        detail: String,
    },

    #[error("wal {name}")]
    Journal {
        name: String,
        #[source]
        source: Box<JournalFileError>,
    },

    #[error(
        "wal {name}: the journal says {} should receive WAL, but {} missing on disk",
        list_directories(.missing),
        if .missing.len() == 1 { "it is" } else { "they are" }
    )]
    NoDirectoryOnDisk {
        name: String,
        missing: Vec<DirectoryName>,
    },

    #[error(
        "wal {name}: segment of another cluster: its system identifier is {found}, the backups \
         in {} are of cluster {recorded}",
        .pgbak.display()
    )]
    OtherCluster {
        name: String,
        found: u64,
        recorded: u64,
        pgbak: PathBuf,
    },

    #[error(
        "wal {name}: the open backup directories changed on each of {attempts} attempts; the \
         file is stored in {} but not recorded",
        list_directories(.linked)
    )]
    TargetsUnsettled {
        name: String,
        attempts: usize,
        linked: Vec<DirectoryName>,
    },
}

/// Where the file system ran out of space (S-8.5): the rest of the line after the summary.
#[derive(Debug, thiserror::Error)]
pub enum StorageFullCause {
    /// Storing the compressed file: `action` says which step.
    #[error("{action}")]
    Storage {
        action: String,
        #[source]
        source: io::Error,
    },
    /// Appending to (or opening) the journal.
    #[error(transparent)]
    Journal(JournalFileError),
}

/// What became of the rejected bytes of a conflict (S-2.4, S-2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectedCopy {
    /// Kept as this file: by this call, or by an earlier one with the same content.
    Kept(PathBuf),
    /// Not kept: the copies in `conflicts/` (`used_bytes`) and this one would pass the cap.
    NotKept {
        conflicts: PathBuf,
        used_bytes: u64,
        max_bytes: u64,
    },
}

impl std::fmt::Display for RejectedCopy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectedCopy::Kept(path) => {
                write!(
                    formatter,
                    "the rejected file was kept as {}",
                    path.display()
                )
            }
            RejectedCopy::NotKept {
                conflicts,
                used_bytes,
                max_bytes,
            } => write!(
                formatter,
                "the rejected file was not kept because {} reached its cap \
                 (wal.conflicts_max_bytes = {max_bytes}, {used_bytes} bytes kept)",
                conflicts.display()
            ),
        }
    }
}

pub(super) fn list_directories(names: &[DirectoryName]) -> String {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    if names.is_empty() {
        "no directory".to_string()
    } else {
        names.join(", ")
    }
}

impl OperatorHint for ArchiveError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ArchiveError::RefusedName { .. } | ArchiveError::NotARegularFile { .. } => {
                "set archive_command = 'pgbak wal %p': PostgreSQL replaces %p with the path of \
                 the WAL file to archive"
                    .to_string()
            }
            ArchiveError::Missing { .. } => {
                "PostgreSQL runs archive_command in its data directory with %p relative to it: \
                 check archive_command = 'pgbak wal %p'"
                    .to_string()
            }
            ArchiveError::Unreadable { .. } => {
                "run pgbak as the PostgreSQL OS user (the one that runs archive_command), which \
                 can read pg_wal"
                    .to_string()
            }
            ArchiveError::WrongSize { .. } => {
                "PostgreSQL archives only complete WAL files: check that archive_command is \
                 'pgbak wal %p' and that nothing else writes to pg_wal"
                    .to_string()
            }
            ArchiveError::ChangedWhileRead { .. } => {
                "PostgreSQL archives only finished WAL files: look for another program writing \
                 to pg_wal; PostgreSQL retries archive_command"
                    .to_string()
            }
            ArchiveError::Compression { .. } => {
                "check wal.compression_level and wal.compression_threads in $PGBAK/config.toml"
                    .to_string()
            }
            ArchiveError::StorageFull { pgbak, .. } => format!(
                "free space on the file system that holds {} (or raise the quota): PostgreSQL \
                 keeps the WAL in pg_wal and retries archive_command, so nothing is lost, but \
                 pg_wal grows until then",
                pgbak.display()
            ),
            ArchiveError::Storage { .. } => {
                "check the file system that holds $PGBAK: is it read-only or failing (see \
                 dmesg)? PostgreSQL retries archive_command"
                    .to_string()
            }
            ArchiveError::Conflict { rejected, .. } => {
                let mut hint = "pgbak never overwrites an archived file: find out why two \
                                versions exist (two servers archiving into one $PGBAK, or a \
                                restored server reusing a timeline) and compare them with zstd \
                                -d -c; PostgreSQL retries until the call succeeds"
                    .to_string();
                if let RejectedCopy::NotKept { .. } = rejected {
                    hint.push_str(
                        "; to keep copies again, remove old ones from $PGBAK/conflicts or \
                         raise wal.conflicts_max_bytes",
                    );
                }
                hint
            }
            // The journal's own error (or the lock's) knows what to do about it.
            ArchiveError::Journal { source, .. } => return source.hint(),
            ArchiveError::NoDirectoryOnDisk { .. } => {
                "a backup directory was removed by hand: see pgbak status; pgbak sync --base \
                 starts a new one"
                    .to_string()
            }
            ArchiveError::OtherCluster { .. } => {
                "two servers must not archive into one $PGBAK: point this server's PGBAK \
                 elsewhere; if it is this database's new cluster on purpose (pg_upgrade, a new \
                 initdb), run `pgbak new-series` once to start a new backup series"
                    .to_string()
            }
            ArchiveError::TargetsUnsettled { .. } => {
                "PostgreSQL retries archive_command; if this repeats, see pgbak status".to_string()
            }
        })
    }
}

pub(super) fn is_storage_full(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

pub(super) fn storage_full_reason(kind: io::ErrorKind) -> &'static str {
    if kind == io::ErrorKind::QuotaExceeded {
        "Disk quota exceeded"
    } else {
        "No space left on device"
    }
}

/// An I/O failure while storing: disk full (S-8.5) gets its own message and hint.
pub(super) fn storage_error(
    home: &PgbakHome,
    input: &WalInput,
    action: impl Into<String>,
    source: io::Error,
) -> ArchiveError {
    if is_storage_full(source.kind()) {
        ArchiveError::StorageFull {
            name: input.name(),
            pgbak: home.path.clone(),
            reason: storage_full_reason(source.kind()),
            source: Box::new(StorageFullCause::Storage {
                action: action.into(),
                source,
            }),
        }
    } else {
        ArchiveError::Storage {
            name: input.name(),
            action: action.into(),
            source,
        }
    }
}

/// A journal failure; a full disk anywhere in its chain is reported as such (S-8.5).
pub(super) fn journal_error(
    home: &PgbakHome,
    input: &WalInput,
    source: JournalFileError,
) -> ArchiveError {
    let full = crate::error::causes(&source)
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .map(io::Error::kind)
        .find(|kind| is_storage_full(*kind));
    match full {
        Some(kind) => ArchiveError::StorageFull {
            name: input.name(),
            pgbak: home.path.clone(),
            reason: storage_full_reason(kind),
            source: Box::new(StorageFullCause::Journal(source)),
        },
        None => ArchiveError::Journal {
            name: input.name(),
            source: Box::new(source),
        },
    }
}
