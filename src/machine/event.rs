//! Facts: what happened, in the past tense. The journal stores these and nothing else.
//!
//! Owns: [`Event`] (one variant per transition of S-3.2) and [`EventKind`] (its name alone, for
//! the transition table and the state diagram).
//!
//! Invariants: every event carries the time it happened (`at`), taken from the clock by the
//! effects layer, so replay never consults a clock. The encoding is postcard's: variants are
//! identified by index, so new variants are appended at the end and never reordered.

use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_name::WalFileName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Event {
    /// A new directory exists (S-2.7 first file, or the sync before a base backup). Intent:
    /// recorded before `mkdir`, which is idempotent.
    DirectoryOpened {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// `pgbak wal` stored `file` durably in each of `directories` (S-2.3). `already_present`:
    /// an identical copy was there before (S-2.4), so counters do not grow twice.
    WalArchived {
        file: WalFileName,
        compressed_bytes: u64,
        directories: Vec<DirectoryName>,
        already_present: bool,
        at: UnixMillis,
    },
    /// Intent: `pg_basebackup` is about to start for this pending directory (S-4.3).
    BaseBackupStarted {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// Outcome: `base.tzst` is durable. The directory becomes current, the previous one sealed.
    BaseBackupFinished {
        directory: DirectoryName,
        base_bytes: u64,
        at: UnixMillis,
    },
    /// Outcome: the attempt failed (or was interrupted); `output` is its last lines (S-4.5).
    BaseBackupFailed {
        directory: DirectoryName,
        output: String,
        at: UnixMillis,
    },
    /// A failed directory's files are gone.
    DirectoryRemoved {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// `$PGBAK/current` now points at `directory` (symlink + rename + directory fsync).
    CurrentLinkSwitched {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// Intent: the backup script is about to run (S-5.1).
    ScriptStarted {
        directory: DirectoryName,
        current_timestamp: DirectoryName,
        through_version: u64,
        at: UnixMillis,
    },
    /// Outcome: exit status 0.
    ScriptSucceeded {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// Outcome: non-zero exit, killed, timed out, missing or not executable (S-5.3).
    ScriptFailed {
        directory: DirectoryName,
        output: String,
        at: UnixMillis,
    },
    /// A sync process took the sync lock and starts its loop.
    SyncStarted {
        pid: u32,
        force_script: bool,
        force_base: bool,
        at: UnixMillis,
    },
    /// The sync ended its loop itself, with nothing running (S-6.2, S-6.1).
    SyncStopped {
        pid: u32,
        reason: SyncStopReason,
        at: UnixMillis,
    },
    /// A new sync holds the sync lock but the journal shows an earlier session that never
    /// stopped: that process died. Its in-flight work is recorded as failed (S-4.5).
    SyncAbandoned { pid: u32, at: UnixMillis },
    /// The journal could not be trusted and the state was rebuilt from the tree (S-3.3).
    /// `damage`: false when the file was merely missing or empty. Applied right after the
    /// rebuilt state's checkpoint, so the state it lands on is what the rebuild found.
    JournalRebuilt {
        reason: String,
        damage: bool,
        at: UnixMillis,
    },
    /// A torn last record (crash mid-append) was cut off (S-3.3).
    JournalTailCut {
        offset: u64,
        discarded_bytes: u64,
        at: UnixMillis,
    },
    /// The directory is gone from disk although the journal counted on it: removed by hand
    /// (S-4.8). It is forgotten; an open directory's place is taken by a new one.
    DirectoryLost {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// The cluster of the archived segments (S-2.9): the system identifier of the first
    /// segment whose long page header could be read. Recorded in the same append as that
    /// segment's `WalArchived`.
    SystemIdentifierRecorded {
        system_identifier: u64,
        at: UnixMillis,
    },
    /// The operator started a new backup series on purpose (`pgbak new-series`, S-2.9): the
    /// recorded cluster is forgotten, the current directory sealed and an idle pending one
    /// failed, so the next file opens a new directory whose base backup is of the new cluster.
    NewSeriesStarted { at: UnixMillis },
    /// Outcome: like `BaseBackupFailed`, because `pg_basebackup` could not reach the server
    /// (S-6.6): a sync with nothing else to do leaves the retry to the next `wal`.
    BaseBackupServerUnreachable {
        directory: DirectoryName,
        output: String,
        at: UnixMillis,
    },
    /// What `$PGBAK/current` really points at, read from disk because it disagreed with the
    /// journal (S-6.4): `None` when it is missing or points at no directory of the journal.
    /// The sync then switches it back (`PointCurrentLinkAt`).
    CurrentLinkObserved {
        directory: Option<DirectoryName>,
        at: UnixMillis,
    },
    /// Intent (S-8.3): retention deletes this sealed directory, whose last state the backup
    /// script shipped. From here on the directory is on its way out whatever the policy says
    /// next; the sync finishes the job (move aside, remove).
    PruneStarted {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// `$PGBAK/TIMESTAMP` is now `$PGBAK/.pruning-TIMESTAMP` and `$PGBAK` was fsynced: no
    /// reader of the tree takes it for a backup any more (S-8.3).
    DirectoryMovedAside {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// Outcome (S-8.3): the moved-aside directory is removed and `$PGBAK` fsynced.
    /// `prune_script`: `$PGBAK/scripts/prune` existed then, so it runs for this directory.
    DirectoryPruned {
        directory: DirectoryName,
        prune_script: bool,
        at: UnixMillis,
    },
    /// `$PGBAK/scripts/prune TIMESTAMP` exited 0 for a pruned directory (S-8.3).
    PruneScriptSucceeded {
        directory: DirectoryName,
        at: UnixMillis,
    },
    /// It failed (or could not start); retried with the backup script's backoff (S-8.3).
    PruneScriptFailed {
        directory: DirectoryName,
        output: String,
        at: UnixMillis,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SyncStopReason {
    /// Nothing pending, due or being retried.
    Finished,
    /// SIGTERM or SIGINT (S-6.1); running work was stopped and recorded as failed first.
    Interrupted,
    /// The sync hit an error it could not retry (e.g. the journal became unwritable).
    Error { message: String },
}

/// The name of an event, without its data: the vocabulary of the transition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    DirectoryOpened,
    WalArchived,
    BaseBackupStarted,
    BaseBackupFinished,
    BaseBackupFailed,
    DirectoryRemoved,
    CurrentLinkSwitched,
    ScriptStarted,
    ScriptSucceeded,
    ScriptFailed,
    SyncStarted,
    SyncStopped,
    SyncAbandoned,
    JournalRebuilt,
    JournalTailCut,
    DirectoryLost,
    SystemIdentifierRecorded,
    NewSeriesStarted,
    BaseBackupServerUnreachable,
    CurrentLinkObserved,
    PruneStarted,
    DirectoryMovedAside,
    DirectoryPruned,
    PruneScriptSucceeded,
    PruneScriptFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 25] = [
        EventKind::DirectoryOpened,
        EventKind::WalArchived,
        EventKind::BaseBackupStarted,
        EventKind::BaseBackupFinished,
        EventKind::BaseBackupFailed,
        EventKind::DirectoryRemoved,
        EventKind::CurrentLinkSwitched,
        EventKind::ScriptStarted,
        EventKind::ScriptSucceeded,
        EventKind::ScriptFailed,
        EventKind::SyncStarted,
        EventKind::SyncStopped,
        EventKind::SyncAbandoned,
        EventKind::JournalRebuilt,
        EventKind::JournalTailCut,
        EventKind::DirectoryLost,
        EventKind::SystemIdentifierRecorded,
        EventKind::NewSeriesStarted,
        EventKind::BaseBackupServerUnreachable,
        EventKind::CurrentLinkObserved,
        EventKind::PruneStarted,
        EventKind::DirectoryMovedAside,
        EventKind::DirectoryPruned,
        EventKind::PruneScriptSucceeded,
        EventKind::PruneScriptFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::DirectoryOpened => "DirectoryOpened",
            EventKind::WalArchived => "WalArchived",
            EventKind::BaseBackupStarted => "BaseBackupStarted",
            EventKind::BaseBackupFinished => "BaseBackupFinished",
            EventKind::BaseBackupFailed => "BaseBackupFailed",
            EventKind::DirectoryRemoved => "DirectoryRemoved",
            EventKind::CurrentLinkSwitched => "CurrentLinkSwitched",
            EventKind::ScriptStarted => "ScriptStarted",
            EventKind::ScriptSucceeded => "ScriptSucceeded",
            EventKind::ScriptFailed => "ScriptFailed",
            EventKind::SyncStarted => "SyncStarted",
            EventKind::SyncStopped => "SyncStopped",
            EventKind::SyncAbandoned => "SyncAbandoned",
            EventKind::JournalRebuilt => "JournalRebuilt",
            EventKind::JournalTailCut => "JournalTailCut",
            EventKind::DirectoryLost => "DirectoryLost",
            EventKind::SystemIdentifierRecorded => "SystemIdentifierRecorded",
            EventKind::NewSeriesStarted => "NewSeriesStarted",
            EventKind::BaseBackupServerUnreachable => "BaseBackupServerUnreachable",
            EventKind::CurrentLinkObserved => "CurrentLinkObserved",
            EventKind::PruneStarted => "PruneStarted",
            EventKind::DirectoryMovedAside => "DirectoryMovedAside",
            EventKind::DirectoryPruned => "DirectoryPruned",
            EventKind::PruneScriptSucceeded => "PruneScriptSucceeded",
            EventKind::PruneScriptFailed => "PruneScriptFailed",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::DirectoryOpened { .. } => EventKind::DirectoryOpened,
            Event::WalArchived { .. } => EventKind::WalArchived,
            Event::BaseBackupStarted { .. } => EventKind::BaseBackupStarted,
            Event::BaseBackupFinished { .. } => EventKind::BaseBackupFinished,
            Event::BaseBackupFailed { .. } => EventKind::BaseBackupFailed,
            Event::DirectoryRemoved { .. } => EventKind::DirectoryRemoved,
            Event::CurrentLinkSwitched { .. } => EventKind::CurrentLinkSwitched,
            Event::ScriptStarted { .. } => EventKind::ScriptStarted,
            Event::ScriptSucceeded { .. } => EventKind::ScriptSucceeded,
            Event::ScriptFailed { .. } => EventKind::ScriptFailed,
            Event::SyncStarted { .. } => EventKind::SyncStarted,
            Event::SyncStopped { .. } => EventKind::SyncStopped,
            Event::SyncAbandoned { .. } => EventKind::SyncAbandoned,
            Event::JournalRebuilt { .. } => EventKind::JournalRebuilt,
            Event::JournalTailCut { .. } => EventKind::JournalTailCut,
            Event::DirectoryLost { .. } => EventKind::DirectoryLost,
            Event::SystemIdentifierRecorded { .. } => EventKind::SystemIdentifierRecorded,
            Event::NewSeriesStarted { .. } => EventKind::NewSeriesStarted,
            Event::BaseBackupServerUnreachable { .. } => EventKind::BaseBackupServerUnreachable,
            Event::CurrentLinkObserved { .. } => EventKind::CurrentLinkObserved,
            Event::PruneStarted { .. } => EventKind::PruneStarted,
            Event::DirectoryMovedAside { .. } => EventKind::DirectoryMovedAside,
            Event::DirectoryPruned { .. } => EventKind::DirectoryPruned,
            Event::PruneScriptSucceeded { .. } => EventKind::PruneScriptSucceeded,
            Event::PruneScriptFailed { .. } => EventKind::PruneScriptFailed,
        }
    }

    /// When it happened.
    pub fn at(&self) -> UnixMillis {
        match self {
            Event::DirectoryOpened { at, .. }
            | Event::WalArchived { at, .. }
            | Event::BaseBackupStarted { at, .. }
            | Event::BaseBackupFinished { at, .. }
            | Event::BaseBackupFailed { at, .. }
            | Event::DirectoryRemoved { at, .. }
            | Event::CurrentLinkSwitched { at, .. }
            | Event::ScriptStarted { at, .. }
            | Event::ScriptSucceeded { at, .. }
            | Event::ScriptFailed { at, .. }
            | Event::SyncStarted { at, .. }
            | Event::SyncStopped { at, .. }
            | Event::SyncAbandoned { at, .. }
            | Event::JournalRebuilt { at, .. }
            | Event::JournalTailCut { at, .. }
            | Event::DirectoryLost { at, .. }
            | Event::SystemIdentifierRecorded { at, .. }
            | Event::NewSeriesStarted { at }
            | Event::BaseBackupServerUnreachable { at, .. }
            | Event::CurrentLinkObserved { at, .. }
            | Event::PruneStarted { at, .. }
            | Event::DirectoryMovedAside { at, .. }
            | Event::DirectoryPruned { at, .. }
            | Event::PruneScriptSucceeded { at, .. }
            | Event::PruneScriptFailed { at, .. } => *at,
        }
    }
}
