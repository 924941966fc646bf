//! Commands: what the machine tells the effects layer to do next, in the imperative.
//!
//! Owns: [`Action`] and [`Plan`]. Invariant: an action is a pure function of the state, the time
//! and the policy, so after a crash the same state yields the same actions again; every action
//! is therefore safe to repeat (its effect is idempotent or guarded by an intent record).

use crate::timestamp::{DirectoryName, UnixMillis};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Delete a failed directory's files, then record `DirectoryRemoved` (S-4.5).
    RemoveFailedDirectory { directory: DirectoryName },
    /// Point `$PGBAK/current` at this directory, then record `CurrentLinkSwitched` (S-4.3).
    PointCurrentLinkAt { directory: DirectoryName },
    /// Record `DirectoryOpened` if `open_directory`, then `BaseBackupStarted`, then run
    /// `pg_basebackup` into this directory (S-4.3).
    StartBaseBackup {
        directory: DirectoryName,
        open_directory: bool,
    },
    /// Record `ScriptStarted`, then run `$PGBAK/scripts/backup` in the directory with the base
    /// timestamp (the directory's name) and `current_timestamp` (S-5.1).
    RunScript {
        directory: DirectoryName,
        current_timestamp: DirectoryName,
        through_version: u64,
    },
    /// Retention (S-8.3): record `PruneStarted`, then carry on as `MoveDirectoryAside`.
    PruneDirectory { directory: DirectoryName },
    /// Rename `$PGBAK/TIMESTAMP` to `$PGBAK/.pruning-TIMESTAMP`, fsync `$PGBAK`, record
    /// `DirectoryMovedAside`, then carry on as `RemoveMovedAsideDirectory`. Also the resume of
    /// a prune whose intent is recorded and nothing else.
    MoveDirectoryAside { directory: DirectoryName },
    /// Remove `$PGBAK/.pruning-TIMESTAMP`, fsync `$PGBAK`, record `DirectoryPruned`.
    RemoveMovedAsideDirectory { directory: DirectoryName },
    /// Run `$PGBAK/scripts/prune TIMESTAMP` in `$PGBAK` to its end; record its outcome.
    RunPruneScript { directory: DirectoryName },
    /// Kill the running script's process group; record `ScriptFailed` (S-5.4).
    StopScript {
        directory: DirectoryName,
        reason: StopScriptReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopScriptReason {
    TimedOut { timeout_ms: u64 },
}

/// What to do now and when to look again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Start these now, in order.
    pub actions: Vec<Action>,
    /// Call `next_actions` again at this time at the latest (a backoff ends, a timeout
    /// expires). New facts (WAL archived, a run finished) are reasons to look earlier.
    pub wake_at: Option<UnixMillis>,
    /// Nothing is pending, due, running or being retried: a background sync exits (S-6.2).
    pub finished: bool,
}
