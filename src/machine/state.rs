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

/// The state. Its encoding (in journal checkpoints) is its fields in declaration order; the
/// fields from `timelines` on were added after the first release and are encoded as one trailing
/// group, which a checkpoint written before they existed simply lacks: see `state_encoding`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
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
    /// The timelines of the files recorded in each directory (S-4.7), beside `directories`
    /// rather than inside `Directory` so that older checkpoints still decode. A directory
    /// without an entry has recorded no file yet.
    pub timelines: BTreeMap<DirectoryName, TimelineSpan>,
    /// The cluster every archived segment must belong to (S-2.9): the system identifier in the
    /// long page header of the first segment whose header pgbak could read.
    pub system_identifier: Option<u64>,
    /// Directories that vanished from disk while the journal still counted on them (S-4.8),
    /// newest last, at most `LOST_DIRECTORIES_KEPT`.
    pub lost_directories: Vec<LostDirectory>,
    /// The last base backup attempt failed because it could not reach the server (S-6.6): a
    /// sync with nothing else to do leaves the retry to the next `wal`.
    pub base_backup_server_unreachable: bool,
    /// Retention (S-8.3): the order base backups finished in, and the offsite prunes owed.
    /// Encoded as a second trailing group, after the first one (see `state_encoding`).
    pub retention: Retention,
}

/// What retention (S-8.3) needs beyond the directories themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Retention {
    /// How many base backups finished since this was first recorded: the next one's place.
    pub bases_finished: u64,
    /// Each directory's place in the order its base backup finished. This order, not the
    /// directories' names nor any clock, is what "oldest first" means (S-8.3): a clock that
    /// jumped cannot change it. A directory with a base and no entry finished before pgbak
    /// recorded the order, so before every directory that has one.
    pub base_order: BTreeMap<DirectoryName, u64>,
    /// Pruned directories `scripts/prune` has not yet succeeded for, in the order pruned.
    pub offsite_pending: Vec<DirectoryName>,
    /// Failures of `scripts/prune` since its last success; drives the backoff (S-8.3, the
    /// backup script's: `script.retry_delay_*`).
    pub prune_script_failures: u32,
    pub prune_script_last_failure: Option<Failure>,
    pub prune_script_last_success_at: Option<UnixMillis>,
    /// Directories pruned so far, and the last one with when.
    pub pruned_count: u64,
    pub last_pruned: Option<(DirectoryName, UnixMillis)>,
}

/// How many [`LostDirectory`] records the state keeps: enough to explain what happened, small
/// enough to keep checkpoints small whatever an operator does.
pub(super) const LOST_DIRECTORIES_KEPT: usize = 16;

/// The lowest and the highest timeline among the files recorded in a directory. The lowest is
/// the timeline its base backup started on (the first WAL a base backup needs is archived
/// into its directory before anything newer); a higher one means the directory spans a
/// timeline switch (S-4.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimelineSpan {
    pub lowest: u32,
    pub highest: u32,
}

impl TimelineSpan {
    pub fn of(timeline: u32) -> TimelineSpan {
        TimelineSpan {
            lowest: timeline,
            highest: timeline,
        }
    }

    pub fn including(self, timeline: u32) -> TimelineSpan {
        TimelineSpan {
            lowest: self.lowest.min(timeline),
            highest: self.highest.max(timeline),
        }
    }

    pub fn spans_timelines(self) -> bool {
        self.highest > self.lowest
    }
}

/// A directory found gone from disk, and what the journal knew of it then (S-4.8).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LostDirectory {
    pub directory: DirectoryName,
    pub phase: DirectoryPhase,
    pub had_base: bool,
    pub wal_files: u64,
    pub last_wal: Option<WalFileName>,
    /// Whether everything in it had been shipped by the backup script.
    pub shipped: bool,
    pub noticed_at: UnixMillis,
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
    /// Retention chose it (S-8.3): a sealed directory whose last state was shipped. The
    /// intent is recorded; the directory may still be at its name.
    Pruning,
    /// On its way out: renamed to `.pruning-TIMESTAMP`, to be removed (S-8.3).
    MovedAside,
}

impl DirectoryPhase {
    /// Retention's deletion of it has begun and not finished (S-8.3).
    pub fn is_being_pruned(self) -> bool {
        matches!(self, DirectoryPhase::Pruning | DirectoryPhase::MovedAside)
    }

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

    /// Whether the directory holds files of a timeline newer than its base backup's (S-4.7).
    pub fn spans_timelines(&self, name: DirectoryName) -> bool {
        self.timelines
            .get(&name)
            .is_some_and(|span| span.spans_timelines())
    }

    /// The directories with a finished base backup that are still backups (`Current` and
    /// `Sealed`), newest first in the order their base backups finished (S-8.3).
    pub fn bases_newest_first(&self) -> Vec<DirectoryName> {
        let mut bases: Vec<(Option<u64>, DirectoryName)> = self
            .directories
            .iter()
            .filter(|(_, d)| {
                d.base.is_some()
                    && matches!(d.phase, DirectoryPhase::Current | DirectoryPhase::Sealed)
            })
            .map(|(name, _)| (self.retention.base_order.get(name).copied(), *name))
            .collect();
        bases.sort();
        bases.into_iter().rev().map(|(_, name)| name).collect()
    }

    /// Whether the backup script succeeded for the directory's last state: its shipped mark
    /// covers every file it holds (S-8.3).
    pub fn fully_shipped(&self, name: DirectoryName) -> bool {
        self.directories
            .get(&name)
            .is_some_and(|d| d.shipped.is_some_and(|s| s.version == d.content_version))
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
                // Their content was shipped before retention took them (S-8.3).
                DirectoryPhase::Failed | DirectoryPhase::Pruning | DirectoryPhase::MovedAside => {
                    true
                }
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
            // S-8.3: nothing is ever pruned that the backup script has not shipped whole.
            if matches!(
                directory.phase,
                DirectoryPhase::Pruning | DirectoryPhase::MovedAside
            ) && (directory.base.is_none() || !self.fully_shipped(*name))
            {
                return Err(format!("{name} is pruned but was not shipped whole"));
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
        if let Some(name) = self
            .timelines
            .keys()
            .find(|name| !self.directories.contains_key(name))
        {
            return Err(format!("timelines recorded for unknown {name}"));
        }
        if let Some(name) = self
            .retention
            .base_order
            .keys()
            .find(|name| self.directories.get(name).is_none_or(|d| d.base.is_none()))
        {
            return Err(format!("base order recorded for {name}, which has no base"));
        }
        if let Some(name) = self
            .retention
            .offsite_pending
            .iter()
            .find(|name| self.directories.contains_key(name))
        {
            return Err(format!("{name} awaits the prune script but is not pruned"));
        }
        if self.lost_directories.len() > LOST_DIRECTORIES_KEPT {
            return Err(format!(
                "{} lost directories kept",
                self.lost_directories.len()
            ));
        }
        Ok(())
    }
}

/// The encoding of [`State`]: a tuple of its fields, the later ones as one trailing group.
///
/// postcard encodes a struct as its fields one after the other, so this is byte for byte what
/// a derived implementation gave for the first eight fields, and an older checkpoint is exactly
/// those eight fields. On decoding, a trailing group that is absent (the payload ends) gives
/// the defaults: nothing was known of timelines, system identifier or lost directories then,
/// and the next files recorded fill them in. Anything else that goes wrong is caught by the
/// journal, which requires a payload to be consumed exactly.
mod state_encoding {
    use super::*;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;

    /// Fields in the order of the original `State`, plus the two trailing groups.
    const FIELDS: usize = 10;

    #[derive(Serialize)]
    struct AddedRef<'a> {
        timelines: &'a BTreeMap<DirectoryName, TimelineSpan>,
        system_identifier: &'a Option<u64>,
        lost_directories: &'a Vec<LostDirectory>,
        base_backup_server_unreachable: &'a bool,
    }

    #[derive(Deserialize, Default)]
    struct Added {
        timelines: BTreeMap<DirectoryName, TimelineSpan>,
        system_identifier: Option<u64>,
        lost_directories: Vec<LostDirectory>,
        base_backup_server_unreachable: bool,
    }

    impl Serialize for State {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut tuple = serializer.serialize_tuple(FIELDS)?;
            tuple.serialize_element(&self.directories)?;
            tuple.serialize_element(&self.current_link)?;
            tuple.serialize_element(&self.base_backup)?;
            tuple.serialize_element(&self.script)?;
            tuple.serialize_element(&self.sync)?;
            tuple.serialize_element(&self.last_sync_end)?;
            tuple.serialize_element(&self.wal)?;
            tuple.serialize_element(&self.journal)?;
            tuple.serialize_element(&AddedRef {
                timelines: &self.timelines,
                system_identifier: &self.system_identifier,
                lost_directories: &self.lost_directories,
                base_backup_server_unreachable: &self.base_backup_server_unreachable,
            })?;
            tuple.serialize_element(&self.retention)?;
            tuple.end()
        }
    }

    struct StateVisitor;

    impl<'de> Visitor<'de> for StateVisitor {
        type Value = State;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("pgbak's machine state")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<State, A::Error> {
            fn required<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
                seq: &mut A,
                index: usize,
            ) -> Result<T, A::Error> {
                seq.next_element()?
                    .ok_or_else(|| de::Error::invalid_length(index, &"the state's fields"))
            }
            let directories = required(&mut seq, 0)?;
            let current_link = required(&mut seq, 1)?;
            let base_backup = required(&mut seq, 2)?;
            let script = required(&mut seq, 3)?;
            let sync = required(&mut seq, 4)?;
            let last_sync_end = required(&mut seq, 5)?;
            let wal = required(&mut seq, 6)?;
            let journal = required(&mut seq, 7)?;
            // Absent in checkpoints written before these fields existed: the payload ends here.
            let added: Added = seq.next_element().ok().flatten().unwrap_or_default();
            // Absent in checkpoints written before retention existed (S-8.3).
            let retention: Retention = seq.next_element().ok().flatten().unwrap_or_default();
            Ok(State {
                directories,
                current_link,
                base_backup,
                script,
                sync,
                last_sync_end,
                wal,
                journal,
                timelines: added.timelines,
                system_identifier: added.system_identifier,
                lost_directories: added.lost_directories,
                base_backup_server_unreachable: added.base_backup_server_unreachable,
                retention,
            })
        }
    }

    impl<'de> Deserialize<'de> for State {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<State, D::Error> {
            deserializer.deserialize_tuple(FIELDS, StateVisitor)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The state as the first release encoded it: the derived encoding of its eight fields.
        #[derive(Serialize)]
        struct FirstReleaseState<'a> {
            directories: &'a BTreeMap<DirectoryName, Directory>,
            current_link: &'a Option<DirectoryName>,
            base_backup: &'a BaseBackup,
            script: &'a Script,
            sync: &'a Option<SyncSession>,
            last_sync_end: &'a Option<SyncEnd>,
            wal: &'a WalTotals,
            journal: &'a JournalHealth,
        }

        fn sample() -> State {
            let mut state = State::default();
            state.directories.insert(
                DirectoryName(1_700_000_000),
                Directory {
                    phase: DirectoryPhase::Current,
                    opened_at: UnixMillis(1_700_000_000_000),
                    base: Some(BaseInfo {
                        bytes: 10,
                        finished_at: UnixMillis(1_700_000_001_000),
                    }),
                    wal_files: 2,
                    wal_bytes: 20,
                    first_wal: WalFileName::parse("000000010000000000000001"),
                    last_wal: WalFileName::parse("000000010000000000000002"),
                    newest_file_at: UnixMillis(1_700_000_002_000),
                    content_version: 3,
                    shipped: None,
                },
            );
            state.current_link = Some(DirectoryName(1_700_000_000));
            state
        }

        #[test]
        fn a_checkpoint_of_the_first_release_decodes_with_empty_additions() {
            let state = sample();
            let old = postcard::to_stdvec(&FirstReleaseState {
                directories: &state.directories,
                current_link: &state.current_link,
                base_backup: &state.base_backup,
                script: &state.script,
                sync: &state.sync,
                last_sync_end: &state.last_sync_end,
                wal: &state.wal,
                journal: &state.journal,
            })
            .unwrap();
            let (decoded, rest) = postcard::take_from_bytes::<State>(&old).unwrap();
            assert!(rest.is_empty());
            assert_eq!(decoded, state);
        }

        #[test]
        fn the_additions_round_trip_after_the_first_release_fields() {
            let mut state = sample();
            let name = DirectoryName(1_700_000_000);
            state
                .timelines
                .insert(name, TimelineSpan::of(1).including(2));
            state.system_identifier = Some(7_300_000_000_000_000_001);
            state.base_backup_server_unreachable = true;
            state.lost_directories.push(LostDirectory {
                directory: DirectoryName(1_600_000_000),
                phase: DirectoryPhase::Current,
                had_base: true,
                wal_files: 4,
                last_wal: None,
                shipped: false,
                noticed_at: UnixMillis(1_700_000_003_000),
            });
            let bytes = postcard::to_stdvec(&state).unwrap();
            let first_release = postcard::to_stdvec(&sample()).unwrap();
            // The first eight fields encode exactly as before; the two trailing groups of
            // defaults take 4 and 8 bytes.
            assert_eq!(
                &bytes[..first_release.len() - 12],
                &first_release[..first_release.len() - 12]
            );
            assert_eq!(postcard::from_bytes::<State>(&bytes).unwrap(), state);
        }

        /// A checkpoint written before retention existed (S-8.3): the first trailing group and
        /// nothing after it. It decodes, with no retention recorded.
        #[test]
        fn a_checkpoint_without_retention_decodes_with_its_first_group_intact() {
            let mut state = sample();
            state.system_identifier = Some(42);
            state.base_backup_server_unreachable = true;
            let bytes = postcard::to_stdvec(&state).unwrap();
            let without_retention = &bytes[..bytes.len() - 8];
            let (decoded, rest) = postcard::take_from_bytes::<State>(without_retention).unwrap();
            assert!(rest.is_empty());
            assert_eq!(decoded, state);
        }

        #[test]
        fn retention_round_trips() {
            let mut state = sample();
            let name = DirectoryName(1_700_000_000);
            state.retention.bases_finished = 3;
            state.retention.base_order.insert(name, 2);
            state
                .retention
                .offsite_pending
                .push(DirectoryName(1_600_000_000));
            state.retention.prune_script_failures = 2;
            state.retention.prune_script_last_failure = Some(Failure {
                at: UnixMillis(5),
                message: "ssh: connection refused".into(),
            });
            state.retention.pruned_count = 1;
            state.retention.last_pruned = Some((DirectoryName(1_600_000_000), UnixMillis(4)));
            let bytes = postcard::to_stdvec(&state).unwrap();
            assert_eq!(postcard::from_bytes::<State>(&bytes).unwrap(), state);
        }
    }
}
