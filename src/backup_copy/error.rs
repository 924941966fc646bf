//! [`BackupCopyError`]: everything that can go wrong reading a backup copy, one line each,
//! subject first (the path, the timeline or the target it is about), with a hint where the
//! operator can act.
//!
//! Invariant: a variant with a `#[source]` leaves the cause out of its own text (`one_line`
//! appends it).

use super::backup_history::BackupHistoryProblem;
use super::choose::TimeProblem;
use super::history::HistoryProblem;
use super::lsn::Lsn;
use crate::hint::OperatorHint;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BackupCopyError {
    #[error("no backup source: PGBAK is not set and no --from was given")]
    NoSource,
    #[error("cannot read {}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: neither a backup directory (base.tzst or pg_wal/) nor a directory of TIMESTAMP directories",
        .path.display()
    )]
    NotABackupSource { path: PathBuf },
    #[error("{}: no such backup directory", .path.display())]
    UnknownDirectory { path: PathBuf },
    #[error("{}: no base backup here (no base.tzst: pending, or its base backup failed)", .path.display())]
    NoBase { path: PathBuf },
    #[error("{}: no backup directory holds a base backup (base.tzst)", .path.display())]
    NoBaseInHome { path: PathBuf },
    #[error("{}: {what}, not a regular file", .path.display())]
    NotRegularFile { path: PathBuf, what: &'static str },
    #[error("{}: damaged (not a complete zstd stream)", .path.display())]
    Damaged {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: decompresses to more than {limit_bytes} bytes, too large for its kind", .path.display())]
    TooLarge { path: PathBuf, limit_bytes: u64 },
    #[error("{}: not a timeline history file", .path.display())]
    BadHistory {
        path: PathBuf,
        #[source]
        source: HistoryProblem,
    },
    #[error("{}: not a backup history file", .path.display())]
    BadBackupHistory {
        path: PathBuf,
        #[source]
        source: BackupHistoryProblem,
    },
    #[error("{name:?}: not a WAL file name")]
    NotAWalName { name: String },
    #[error("timeline {timeline}: {reason}")]
    TimelineNotFollowable { timeline: u32, reason: String },
    #[error(
        "recovery target {target}: before the base backup's end {stop}, where recovery becomes consistent"
    )]
    TargetBeforeConsistency { target: Lsn, stop: Lsn },
    #[error("WAL chain from {first} to {last}: {count} segments, more than a restore can list")]
    ChainTooLong {
        first: String,
        last: String,
        count: u64,
    },
    #[error("no base backup ended at or before the target {target}")]
    NoBaseBeforeTarget {
        target: String,
        known_stops: usize,
        oldest_stop: Option<String>,
    },
    #[error("no base backup with a whole WAL chain ({candidates} considered)")]
    NoWholeChain { candidates: usize },
    #[error("--target-time {text:?}")]
    BadTargetTime {
        text: String,
        #[source]
        source: TimeProblem,
    },
}

impl OperatorHint for BackupCopyError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            BackupCopyError::NoSource => {
                "set PGBAK to the backup directory, or pass --from PATH (a copy of it, or one TIMESTAMP directory)".to_owned()
            }
            BackupCopyError::NotABackupSource { .. } => {
                "--from takes $PGBAK, a copy of it, one of its TIMESTAMP directories, or a TIMESTAMP name".to_owned()
            }
            BackupCopyError::UnknownDirectory { .. } => {
                "pick one of the TIMESTAMP directories that exist (ls $PGBAK), or pass --from PATH".to_owned()
            }
            BackupCopyError::NoBase { .. } | BackupCopyError::NoBaseInHome { .. } => {
                "restore from a directory that has base.tzst (--from TIMESTAMP or --from PATH)".to_owned()
            }
            BackupCopyError::NotRegularFile { .. } => {
                "pgbak reads only regular files in pg_wal/: put the archived file itself there (or its copy from offsite)".to_owned()
            }
            BackupCopyError::Damaged { .. } | BackupCopyError::TooLarge { .. } => {
                "replace it with an intact copy (the offsite copy made by scripts/backup), then run the restore again".to_owned()
            }
            BackupCopyError::BadHistory { .. } | BackupCopyError::BadBackupHistory { .. } => {
                "compare it with the file in the server's pg_wal/ or in the offsite copy".to_owned()
            }
            BackupCopyError::TimelineNotFollowable { .. } => {
                "choose a timeline with --target-timeline (current, or a number whose .history file is archived)".to_owned()
            }
            BackupCopyError::TargetBeforeConsistency { .. } => {
                "choose a later target, or an older base backup with --from".to_owned()
            }
            BackupCopyError::ChainTooLong { .. } => "check the recovery target LSN".to_owned(),
            BackupCopyError::NoBaseBeforeTarget { oldest_stop: Some(oldest), .. } => {
                format!("the oldest base backup with a known end ended at {oldest}: choose a later target, or a base with --from")
            }
            BackupCopyError::NoBaseBeforeTarget { .. } => {
                "no base backup has a backup history file with its end: choose one with --from".to_owned()
            }
            BackupCopyError::NoWholeChain { .. } => {
                "see which WAL is missing with pgbak verify; choose a base with --from (and --allow-gap to restore anyway)".to_owned()
            }
            BackupCopyError::BadTargetTime { source: TimeProblem::NoZone | TimeProblem::UnknownZone(_), .. } => {
                "write the zone explicitly: '2026-12-02 14:03:00+00', '2026-12-02 14:03:00 UTC' or '...+01:00'".to_owned()
            }
            BackupCopyError::BadTargetTime { .. } => {
                "write it as YYYY-MM-DD HH:MM:SS with a zone, e.g. '2026-12-02 14:03:00+00'".to_owned()
            }
            BackupCopyError::Unreadable { .. } | BackupCopyError::NotAWalName { .. } => return None,
        })
    }
}
