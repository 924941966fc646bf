//! The machine's state: nouns only, every field a recorded fact's consequence.
//!
//! Owns: [`State`] and its parts. Invariants (asserted by `State::check_invariants`, which the
//! model-based tests call after every step):
//! - a directory is `Current` only if its base backup finished (`base` is `Some`), and at most
//!   one directory is `Current`;
//! - a running base backup's directory exists and is `Pending`; at most one runs;
//! - a running script's directory exists and is `Current` or `Sealed`;
//! - `shipped.version <= content_version` for every directory.
//!
//! The state is bounded by the number of directories, never by the number of WAL files: per
//! directory it keeps counters and the newest name, not a list. That keeps checkpoints small.

use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_name::WalFileName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct State {
    /// Every backup directory pgbak knows about, oldest first (names sort by time).
    pub directories: BTreeMap<DirectoryName, Directory>,
    /// Where `$PGBAK/current` points on disk, as last recorded. It lags the `Current` phase
    /// between `BaseBackupFinished` and `CurrentLinkSwitched`; `next_actions` closes the gap.
    pub current_link: Option<DirectoryName>,
    pub base_backup: BaseBackup,
    pub script: Script,
    /// The sync process that recorded `SyncStarted` and has not yet stopped (or been noticed
    /// dead). `Some` after a crash until the next sync records `SyncAbandoned`.
    pub sync: Option<SyncSession>,
    pub last_sync_end: Option<SyncEnd>,
    pub wal: WalTotals,
    pub journal: JournalHealth,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Directory {
    pub phase: DirectoryPhase,
    pub opened_at: UnixMillis,
    /// Set when the base backup finished (S-4.3).
    pub base: Option<BaseInfo>,
    /// Compressed WAL files recorded in this directory (segments, history, partial, backup).
    pub wal_files: u64,
    pub wal_bytes: u64,
    pub first_wal: Option<WalFileName>,
    pub last_wal: Option<WalFileName>,
    /// When the newest file arrived: the backup script's second argument (S-5.1).
    pub newest_file_at: UnixMillis,
    /// Goes up by one for every file added (WAL or base). The script has shipped the directory
    /// when `shipped.version == content_version`; counting, not comparing clocks, means two
    /// files in the same second are never mistaken for one.
    pub content_version: u64,
    /// The last successful script run.
    pub shipped: Option<Shipped>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DirectoryPhase {
    /// Its base backup is due or running; receives WAL; never handed to the script (S-4.1).
    Pending,
    /// Base backup complete and `current` (logically) points here; receives WAL.
    Current,
    /// A newer directory became current; finished once its last state was shipped (S-5.2).
    Sealed,
    /// Its base backup failed; it was never shipped and is removed next (S-4.5).
    Failed,
}

impl DirectoryPhase {
    /// Open directories receive archived WAL (S-2.7, S-4.1).
    pub fn is_open(self) -> bool {
        matches!(self, DirectoryPhase::Pending | DirectoryPhase::Current)
    }

    /// Directories the backup script may run for (S-4.1, S-5.2).
    pub fn is_shippable(self) -> bool {
        matches!(self, DirectoryPhase::Current | DirectoryPhase::Sealed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BaseInfo {
    pub bytes: u64,
    pub finished_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shipped {
    /// `content_version` the successful run covered.
    pub version: u64,
    /// The second argument that run was given.
    pub current_timestamp: DirectoryName,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BaseBackup {
    pub running: Option<RunningBaseBackup>,
    /// Failures since the last success; drives the backoff (S-4.5).
    pub consecutive_failures: u32,
    pub last_failure: Option<Failure>,
    pub last_success_at: Option<UnixMillis>,
    /// `pgbak sync --base` asked for one and it has not finished yet (S-4.2).
    pub requested: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunningBaseBackup {
    pub directory: DirectoryName,
    pub started_at: UnixMillis,
    /// 1 for the first try after a success, counting failed attempts since.
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Script {
    pub running: Option<ScriptRun>,
    /// Failures since the last success; drives the backoff (S-5.3).
    pub consecutive_failures: u32,
    pub last_failure: Option<Failure>,
    pub last_success_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScriptRun {
    pub directory: DirectoryName,
    /// Argument 2 (S-5.1); argument 1 is `directory` itself.
    pub current_timestamp: DirectoryName,
    /// The directory's `content_version` when the run started: what success will cover.
    pub through_version: u64,
    pub started_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Failure {
    pub at: UnixMillis,
    /// The last lines of the failed run's output, or why it could not run at all.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncSession {
    pub pid: u32,
    pub started_at: UnixMillis,
    /// `force-sync`: run the script for the current directory even if nothing is new (S-6.1).
    /// Cleared by the first successful run for the current directory in this session.
    pub force_script: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncEnd {
    pub pid: u32,
    pub at: UnixMillis,
    /// How it stopped; `None`: it died and a later sync recorded `SyncAbandoned`.
    pub reason: Option<crate::machine::SyncStopReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct WalTotals {
    /// Every `WalArchived` fact ever recorded (duplicates included).
    pub archived_count: u64,
    pub last_archived: Option<WalFileName>,
    pub last_archived_at: Option<UnixMillis>,
}

/// The last repair of the journal itself (S-3.3), so `status` can say what happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum JournalHealth {
    #[default]
    Intact,
    TailCut {
        at: UnixMillis,
        offset: u64,
        discarded_bytes: u64,
    },
    Rebuilt {
        at: UnixMillis,
        reason: String,
        /// False when the journal file was merely missing or empty.
        damage: bool,
        /// Backup directories the rebuild found in the tree.
        directories_found: u64,
    },
}

impl JournalHealth {
    /// A journal that was simply created (no file, nothing in the tree): nothing was lost, so
    /// nothing to report as a problem.
    pub fn is_fresh(&self) -> bool {
        matches!(
            self,
            JournalHealth::Rebuilt {
                damage: false,
                directories_found: 0,
                ..
            }
        )
    }
}

impl State {
    /// The directory in phase `Current`, if any (at most one: an invariant).
    pub fn current_directory(&self) -> Option<(DirectoryName, &Directory)> {
        self.directories
            .iter()
            .rev()
            .find(|(_, d)| d.phase == DirectoryPhase::Current)
            .map(|(name, d)| (*name, d))
    }

    /// Directories that receive archived WAL (S-2.7).
    pub fn open_directories(&self) -> impl Iterator<Item = DirectoryName> + '_ {
        self.directories
            .iter()
            .filter(|(_, d)| d.phase.is_open())
            .map(|(name, _)| *name)
    }

    /// Whether the directory has content the script has not yet succeeded on.
    pub fn needs_shipping(&self, name: DirectoryName) -> bool {
        self.directories.get(&name).is_some_and(|d| {
            d.phase.is_shippable() && d.shipped.map_or(0, |s| s.version) < d.content_version
        })
    }

    /// Every archived file has been shipped and nothing is in flight: what `wait` exits 0 on
    /// (S-6.3). A pending directory's files are shipped with it once it becomes current, so a
    /// pending directory means "not done".
    pub fn everything_shipped(&self) -> bool {
        self.sync.is_none()
            && self.base_backup.running.is_none()
            && self.script.running.is_none()
            && self.directories.iter().all(|(name, d)| match d.phase {
                DirectoryPhase::Pending => false,
                DirectoryPhase::Failed => true,
                DirectoryPhase::Current | DirectoryPhase::Sealed => !self.needs_shipping(*name),
            })
    }

    /// The invariants listed in the module header; `Err` names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let current: Vec<_> = self
            .directories
            .iter()
            .filter(|(_, d)| d.phase == DirectoryPhase::Current)
            .collect();
        if current.len() > 1 {
            return Err(format!("{} directories are current", current.len()));
        }
        for (name, directory) in &self.directories {
            if directory.phase == DirectoryPhase::Current && directory.base.is_none() {
                return Err(format!("{name} is current without a finished base backup"));
            }
            if let Some(shipped) = directory.shipped
                && shipped.version > directory.content_version
            {
                return Err(format!("{name} shipped beyond its content"));
            }
        }
        if let Some(running) = self.base_backup.running {
            match self.directories.get(&running.directory) {
                Some(d) if d.phase == DirectoryPhase::Pending => {}
                _ => {
                    return Err(format!(
                        "base backup runs for non-pending {}",
                        running.directory
                    ));
                }
            }
            if self.sync.is_none() {
                return Err("a base backup runs without a sync".into());
            }
        }
        if let Some(run) = self.script.running {
            match self.directories.get(&run.directory) {
                Some(d) if d.phase.is_shippable() => {}
                _ => return Err(format!("script runs for unshippable {}", run.directory)),
            }
            if self.sync.is_none() {
                return Err("the script runs without a sync".into());
            }
        }
        if let Some(link) = self.current_link
            && !self.directories.contains_key(&link)
        {
            return Err(format!("current link points at unknown {link}"));
        }
        Ok(())
    }
}
