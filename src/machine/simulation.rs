//! A simulated world around the machine: `wal` calls, a sync process that follows
//! `next_actions`, base backups and scripts that succeed or fail, crashes, signals and time.
//!
//! Owns: [`World`] and [`Step`]. Test and fuzz support only (built under `cfg(test)` or the
//! `simulation` feature, never in a normal build). The real session loop's model-based tests
//! (`sync::session::simulated`) keep the state, the clock and the facts here and play the
//! `wal` side with [`World::perform`]; its own sync driver (`Step::DriveSync`, a hand-written
//! stand-in for the real loop) remains for the fuzz targets (`fuzz/`), the postcard round trip
//! and the fixtures of `tests.rs` and the journal-compatibility history, which cannot run the
//! real loop. It is public for those outside users. It plays the part of the effects layer as
//! the real one must:
//! it records an intent before acting and an outcome after, and it only ever records facts a
//! correct effects layer could record. So a rejection from `apply` here is a machine bug.
//!
//! Invariants checked after every step by [`World::check`]: the state's own invariants
//! (`State::check_invariants`), that every archived file went to every open directory, and
//! that the sync never busy-waits (its plan starts something, waits for running work, names a
//! future wake time, or is finished).

use super::action::Action;
use super::decide::{archive_targets, next_actions};
use super::event::{Event, SyncStopReason};
use super::policy::{Backoff, Policy};
use super::state::State;
use super::table::{Edge, Kinds, edges_taken};
use super::transition::{TransitionError, apply};
use crate::timestamp::UnixMillis;
use crate::wal_name::WalFileName;
use std::collections::BTreeSet;

/// One thing that can happen in the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Step {
    /// PostgreSQL archives the next segment through `pgbak wal`.
    ArchiveWal,
    /// PostgreSQL retries the last segment (it crashed before seeing our exit status).
    ArchiveSameWalAgain,
    /// A `wal` call that chose its directories before the sync changed them (a base backup
    /// finished or failed meanwhile): it linked into the directories it chose then, and, under
    /// the journal lock, into any directory opened since.
    ArchiveWalWithStaleTargets,
    /// The clock moves on.
    AdvanceTime { millis: u32 },
    /// A sync process starts (from `wal`, `pgbak sync`, `sync --base` or `force-sync`).
    StartSync {
        force_script: bool,
        force_base: bool,
    },
    /// The live sync carries out the first action of its plan, or sleeps until `wake_at`, or
    /// exits if the plan says it is finished.
    DriveSync,
    /// The running `pg_basebackup` exits; a failure may be because the server is down.
    FinishBaseBackup {
        succeeded: bool,
        server_unreachable: bool,
    },
    /// The running backup script exits.
    FinishScript { succeeded: bool },
    /// `kill -9` of the sync process (and, with it, of what it was waiting for).
    CrashSync,
    /// SIGTERM: the sync stops its children, records their failure and stops.
    InterruptSync,
    /// A standby archiving into the same `$PGBAK` is promoted: from now on segments are of
    /// the next timeline, and its history file is archived first (S-4.7).
    PromoteToNewTimeline,
    /// An operator removes the current directory by hand; the next `wal` notices (S-4.8).
    LoseCurrentDirectory,
    /// `pgbak new-series`: a new cluster behind the same `$PGBAK` (S-2.9).
    StartNewSeries,
    /// Someone points `$PGBAK/current` elsewhere; the sync notices (S-6.4).
    MisdirectCurrentLink,
    /// `scripts/prune` starts failing (the offsite host is down) or works again (S-8.3).
    SetPruneScriptFailing { failing: bool },
}

impl Step {
    /// A step from two bytes of fuzz or property-test input, biased towards progress.
    pub fn from_bytes(choice: u8, argument: u8) -> Step {
        match choice % 17 {
            0 | 1 => Step::ArchiveWal,
            2 => Step::ArchiveWalWithStaleTargets,
            3 => Step::ArchiveSameWalAgain,
            4 | 5 => Step::AdvanceTime {
                millis: u32::from(argument) * 1_000 + 1,
            },
            6 => Step::StartSync {
                force_script: argument & 1 == 1,
                force_base: argument & 2 == 2,
            },
            7..=10 => Step::DriveSync,
            11 | 12 => Step::FinishBaseBackup {
                succeeded: argument % 4 != 0,
                server_unreachable: argument % 8 == 4,
            },
            13 => Step::FinishScript {
                succeeded: argument % 3 != 0,
            },
            14 => Step::CrashSync,
            15 => Step::InterruptSync,
            // The rare events of the world get one choice in 64 each.
            _ => match argument % 16 {
                0 => Step::PromoteToNewTimeline,
                1 => Step::LoseCurrentDirectory,
                2 => Step::StartNewSeries,
                3 => Step::MisdirectCurrentLink,
                4 => Step::SetPruneScriptFailing {
                    failing: argument & 16 != 0,
                },
                _ => Step::DriveSync,
            },
        }
    }
}

/// The simulated world. Fields are public so tests can inspect them.
#[derive(Debug, Clone)]
pub struct World {
    pub state: State,
    pub now: UnixMillis,
    pub policy: Policy,
    /// The pid of the live sync process, if one runs.
    pub live_sync: Option<u32>,
    /// Every fact recorded, in order: what the journal would hold.
    pub history: Vec<Event>,
    /// Every transition taken, for the diagram coverage check.
    pub edges_seen: BTreeSet<Edge>,
    next_pid: u32,
    next_segment: u64,
    /// The timeline PostgreSQL archives on.
    timeline: u32,
    /// The cluster PostgreSQL's segments belong to.
    system_identifier: u64,
    /// The directories the previous `wal` call chose: what a racing call may still hold.
    previous_targets: Vec<crate::timestamp::DirectoryName>,
    /// `scripts/prune` fails while this is set (S-8.3).
    pub prune_script_failing: bool,
}

/// The policy the simulations run with: the defaults, with short base-backup retries so a
/// bounded number of steps reaches every state.
pub fn simulation_policy() -> Policy {
    Policy {
        base_retry: Backoff {
            min_ms: 5_000,
            max_ms: 60_000,
        },
        script_timeout_ms: Some(600_000),
        // Retention on (S-8.3), keeping the fewest bases, so walks prune often.
        keep_bases: 1,
        ..Policy::default()
    }
}

impl World {
    pub fn new(policy: Policy) -> World {
        World {
            state: State::default(),
            // 2026-11-24T00:00:00Z: any fixed start works; a fixed one makes runs replayable.
            now: UnixMillis::from_seconds(1_795_478_400),
            policy,
            live_sync: None,
            history: Vec::new(),
            edges_seen: BTreeSet::new(),
            next_pid: 100,
            next_segment: 1,
            timeline: 1,
            system_identifier: 7_000_000_000_000_000_001,
            previous_targets: Vec::new(),
            prune_script_failing: false,
        }
    }

    /// Applies a recorded fact, remembering it and the transitions it took.
    pub fn record(&mut self, event: Event) -> Result<(), TransitionError> {
        let before = Kinds::of(&self.state);
        apply(&mut self.state, &event)?;
        let after = Kinds::of(&self.state);
        self.edges_seen.extend(edges_taken(&before, &after, &event));
        self.history.push(event);
        Ok(())
    }

    fn segment_name(timeline: u32, number: u64) -> WalFileName {
        let text = format!("{timeline:08X}{:08X}{:08X}", number / 256, number % 256);
        WalFileName::parse(&text).expect("generated segment names are valid")
    }

    /// Archives `file` as `pgbak wal` does: opens a directory if none is open, records the
    /// cluster with the first segment, then the file into every target.
    fn archive(
        &mut self,
        file: WalFileName,
        step: Step,
        repeat: bool,
    ) -> Result<(), TransitionError> {
        let now = self.now;
        let targets = archive_targets(&self.state, now);
        if let Some(directory) = targets.open_directory {
            self.record(Event::DirectoryOpened { directory, at: now })?;
        }
        let mut directories = targets.directories;
        if step == Step::ArchiveWalWithStaleTargets {
            directories.extend(self.previous_targets.iter().copied());
            directories.sort();
            directories.dedup();
        }
        self.previous_targets = directories.clone();
        if self.state.system_identifier.is_none() {
            self.record(Event::SystemIdentifierRecorded {
                system_identifier: self.system_identifier,
                at: now,
            })?;
        }
        self.record(Event::WalArchived {
            file,
            compressed_bytes: 1_000_000,
            directories,
            already_present: repeat,
            at: now,
        })
    }

    /// Performs one step; steps that cannot happen now (finishing a script that does not run)
    /// do nothing. Returns the number of facts recorded.
    pub fn perform(&mut self, step: Step) -> Result<usize, TransitionError> {
        let recorded_before = self.history.len();
        let now = self.now;
        match step {
            Step::ArchiveWal | Step::ArchiveSameWalAgain | Step::ArchiveWalWithStaleTargets => {
                let repeat = step == Step::ArchiveSameWalAgain && self.next_segment > 1;
                if !repeat {
                    self.next_segment += 1;
                }
                let file = Self::segment_name(self.timeline, self.next_segment - 1);
                self.archive(file, step, repeat)?;
            }
            Step::PromoteToNewTimeline => {
                self.timeline += 1;
                let history = WalFileName::parse(&format!("{:08X}.history", self.timeline))
                    .expect("generated history names are valid");
                self.archive(history, step, false)?;
            }
            Step::LoseCurrentDirectory => {
                if let Some((directory, _)) = self.state.current_directory()
                    && self
                        .state
                        .script
                        .running
                        .is_none_or(|run| run.directory != directory)
                {
                    self.record(Event::DirectoryLost { directory, at: now })?;
                }
            }
            Step::StartNewSeries => {
                if self.state.base_backup.running.is_none() {
                    self.record(Event::NewSeriesStarted { at: now })?;
                    self.system_identifier += 1;
                }
            }
            Step::MisdirectCurrentLink => {
                if self.live_sync.is_some() && self.state.current_link.is_some() {
                    self.record(Event::CurrentLinkObserved {
                        directory: None,
                        at: now,
                    })?;
                }
            }
            Step::AdvanceTime { millis } => self.now = now.plus_millis(u64::from(millis)),
            Step::SetPruneScriptFailing { failing } => self.prune_script_failing = failing,
            Step::StartSync {
                force_script,
                force_base,
            } => {
                if self.live_sync.is_none() {
                    if let Some(stale) = self.state.sync {
                        self.record(Event::SyncAbandoned {
                            pid: stale.pid,
                            at: now,
                        })?;
                    }
                    let pid = self.next_pid;
                    self.next_pid += 1;
                    self.record(Event::SyncStarted {
                        pid,
                        force_script,
                        force_base,
                        at: now,
                    })?;
                    self.live_sync = Some(pid);
                }
            }
            Step::DriveSync => self.drive_sync()?,
            Step::FinishBaseBackup {
                succeeded,
                server_unreachable,
            } => {
                if let (Some(_), Some(running)) = (self.live_sync, self.state.base_backup.running) {
                    let directory = running.directory;
                    self.record(if succeeded {
                        Event::BaseBackupFinished {
                            directory,
                            base_bytes: 10_000_000,
                            at: now,
                        }
                    } else if server_unreachable {
                        Event::BaseBackupServerUnreachable {
                            directory,
                            output: "pg_basebackup: error: connection to server on socket \
                                     failed: Is the server running locally?"
                                .into(),
                            at: now,
                        }
                    } else {
                        Event::BaseBackupFailed {
                            directory,
                            output: "pg_basebackup: error: connection refused".into(),
                            at: now,
                        }
                    })?;
                }
            }
            Step::FinishScript { succeeded } => {
                if let (Some(_), Some(run)) = (self.live_sync, self.state.script.running) {
                    let directory = run.directory;
                    self.record(if succeeded {
                        Event::ScriptSucceeded { directory, at: now }
                    } else {
                        Event::ScriptFailed {
                            directory,
                            output: "rsync: error".into(),
                            at: now,
                        }
                    })?;
                }
            }
            Step::CrashSync => self.live_sync = None,
            Step::InterruptSync => {
                if let Some(pid) = self.live_sync {
                    if let Some(running) = self.state.base_backup.running {
                        let directory = running.directory;
                        let output = "interrupted by SIGTERM".to_owned();
                        self.record(Event::BaseBackupFailed {
                            directory,
                            output,
                            at: now,
                        })?;
                    }
                    if let Some(run) = self.state.script.running {
                        let directory = run.directory;
                        let output = "interrupted by SIGTERM".to_owned();
                        self.record(Event::ScriptFailed {
                            directory,
                            output,
                            at: now,
                        })?;
                    }
                    let reason = SyncStopReason::Interrupted;
                    self.record(Event::SyncStopped {
                        pid,
                        reason,
                        at: now,
                    })?;
                    self.live_sync = None;
                }
            }
        }
        Ok(self.history.len() - recorded_before)
    }

    /// The live sync's turn: act on the plan exactly as the real driver does.
    fn drive_sync(&mut self) -> Result<(), TransitionError> {
        let Some(pid) = self.live_sync else {
            return Ok(());
        };
        let now = self.now;
        let plan = next_actions(&self.state, now, &self.policy);
        match plan.actions.first().cloned() {
            Some(Action::RemoveFailedDirectory { directory }) => {
                self.record(Event::DirectoryRemoved { directory, at: now })
            }
            Some(Action::PointCurrentLinkAt { directory }) => {
                self.record(Event::CurrentLinkSwitched { directory, at: now })
            }
            Some(Action::StartBaseBackup {
                directory,
                open_directory,
            }) => {
                if open_directory {
                    self.record(Event::DirectoryOpened { directory, at: now })?;
                }
                self.record(Event::BaseBackupStarted { directory, at: now })
            }
            Some(Action::RunScript {
                directory,
                current_timestamp,
                through_version,
            }) => self.record(Event::ScriptStarted {
                directory,
                current_timestamp,
                through_version,
                at: now,
            }),
            Some(Action::PruneDirectory { directory }) => {
                self.record(Event::PruneStarted { directory, at: now })
            }
            Some(Action::MoveDirectoryAside { directory }) => {
                self.record(Event::DirectoryMovedAside { directory, at: now })
            }
            Some(Action::RemoveMovedAsideDirectory { directory }) => {
                self.record(Event::DirectoryPruned {
                    directory,
                    prune_script: true,
                    at: now,
                })
            }
            Some(Action::RunPruneScript { directory }) => {
                self.record(if self.prune_script_failing {
                    Event::PruneScriptFailed {
                        directory,
                        output: "ssh: connect to host backup.example: Connection refused".into(),
                        at: now,
                    }
                } else {
                    Event::PruneScriptSucceeded { directory, at: now }
                })
            }
            Some(Action::StopScript { directory, .. }) => self.record(Event::ScriptFailed {
                directory,
                output: "timed out".into(),
                at: now,
            }),
            None if plan.finished => {
                self.live_sync = None;
                self.record(Event::SyncStopped {
                    pid,
                    reason: SyncStopReason::Finished,
                    at: now,
                })
            }
            None => {
                // Sleep until the plan's wake time (a backoff ends, a timeout expires); work
                // that is running finishes through its own step.
                if let Some(wake_at) = plan.wake_at.filter(|wake| *wake > now) {
                    self.now = wake_at;
                }
                Ok(())
            }
        }
    }

    /// The invariants of the module header. `previous` is the state before the step.
    pub fn check(&self, previous: &State, recorded: usize) -> Result<(), String> {
        self.state.check_invariants()?;
        // No busy waiting (S-6.5): a plan with nothing to start either is finished, or waits
        // for running work, or names a wake time in the future.
        let plan = next_actions(&self.state, self.now, &self.policy);
        let running =
            self.state.base_backup.running.is_some() || self.state.script.running.is_some();
        if let Some(wake_at) = plan.wake_at
            && wake_at <= self.now
        {
            return Err(format!(
                "the plan wakes at {wake_at:?}, not after now {:?}",
                self.now
            ));
        }
        if plan.actions.is_empty() && !plan.finished && !running && plan.wake_at.is_none() {
            return Err("the plan has nothing to do, no wake time, and is not finished".into());
        }
        let start = self.history.len() - recorded;
        for event in &self.history[start..] {
            if let Event::WalArchived { directories, .. } = event {
                for open in previous.open_directories() {
                    if !directories.contains(&open) {
                        return Err(format!("a WAL file missed open directory {open}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// From here on every base backup and script succeeds and no crash happens: drive the
    /// world until everything archived is shipped and the sync exits. Returns the steps it
    /// took, or `Err` if `max_steps` did not suffice (a liveness bug).
    pub fn run_until_shipped(&mut self, max_steps: usize) -> Result<usize, String> {
        self.prune_script_failing = false;
        for steps in 0..max_steps {
            if self.live_sync.is_none() && self.state.everything_shipped() {
                let plan = next_actions(&self.state, self.now, &self.policy);
                if plan.finished {
                    return Ok(steps);
                }
            }
            let plan = next_actions(&self.state, self.now, &self.policy);
            // A sync that left a base backup's retry to the next `wal` (the server was
            // unreachable, S-6.6) is started again by that `wal`, which comes with time.
            let retry_later = plan
                .wake_at
                .filter(|wake| plan.finished && *wake > self.now)
                .map(|wake| wake.millis_since(self.now));
            let step = if let (None, Some(millis)) = (self.live_sync, retry_later) {
                Step::AdvanceTime {
                    millis: u32::try_from(millis).unwrap_or(u32::MAX),
                }
            } else if self.live_sync.is_none() {
                Step::StartSync {
                    force_script: false,
                    force_base: false,
                }
            } else if self.state.base_backup.running.is_some() {
                Step::FinishBaseBackup {
                    succeeded: true,
                    server_unreachable: false,
                }
            } else if self.state.script.running.is_some() {
                Step::FinishScript { succeeded: true }
            } else {
                Step::DriveSync
            };
            let previous = self.state.clone();
            let recorded = self.perform(step).map_err(|e| e.to_string())?;
            self.check(&previous, recorded)?;
        }
        Err(format!(
            "not everything was shipped after {max_steps} steps: {:#?}",
            self.state
        ))
    }
}
