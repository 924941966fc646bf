//! `apply(state, event)`: folds one recorded fact into the state, or rejects it whole.
//!
//! Owns: the transition rules; the table they are checked against is [`EDGES`] (`table.rs`).
//! The state is seen as five components, each with a small set of kinds: every directory (`Absent`, `Pending`, `Current`,
//! `Sealed`, `Failed`), the base backup, the script, the sync process and the journal's health.
//! `apply` computes the new state on a copy, then checks that every component the event touched
//! moved along an edge of [`EDGES`]; anything else is rejected and the state is left untouched.
//! So "the transitions the code accepts" is exactly the table (or a subset the rules never
//! reach), and `state-diagrams/machine.md` draws the same table — `tests::diagram_matches_table`
//! compares the two, and the model-based tests check every edge is actually reachable.
//!
//! Intents without outcomes after a crash (base backup started, script started, sync started
//! with no stop) are not left to chance: `SyncAbandoned` is the explicit transition that turns
//! them into failures (S-4.5), recorded by the next sync when it finds the previous session
//! still open.

use super::FAILURE_OUTPUT_MAX_BYTES;
use super::event::{Event, SyncStopReason};
use super::state::{
    BaseInfo, Directory, DirectoryPhase, Failure, JournalHealth, LOST_DIRECTORIES_KEPT,
    LostDirectory, RunningBaseBackup, ScriptRun, Shipped, State, SyncEnd, SyncSession,
    TimelineSpan,
};
use super::table::{EDGES, Kinds, edges_taken};
use crate::timestamp::DirectoryName;
use crate::wal_name::{WalFileKind, WalFileName};

/// The machine refused a fact: it makes no sense in the current state. During replay this means
/// the journal cannot be trusted, and the state is rebuilt from the tree (S-3.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} rejected: {reason}")]
pub struct TransitionError {
    pub event: &'static str,
    pub reason: String,
}

/// Folds `event` into `state`. On `Err`, `state` is unchanged.
pub fn apply(state: &mut State, event: &Event) -> Result<(), TransitionError> {
    let before = Kinds::of(state);
    let mut next = state.clone();
    apply_rules(&mut next, event)?;
    let after = Kinds::of(&next);
    for taken in edges_taken(&before, &after, event) {
        if !EDGES.contains(&taken) {
            return Err(reject(
                event,
                format!(
                    "the {} would go from {} to {}, which is not a transition of the machine",
                    taken.component.name(),
                    taken.from,
                    taken.to
                ),
            ));
        }
    }
    // Every accepted fact keeps the state's invariants (state.rs); in debug builds (tests,
    // fuzzing) a rule that breaks one is caught at the fact that broke it.
    debug_assert!(
        next.check_invariants().is_ok(),
        "{} broke an invariant: {:?}",
        event.kind().name(),
        next.check_invariants()
    );
    *state = next;
    Ok(())
}

/// A duplicate (`already_present`) was counted already, except after a crash between linking
/// the file and recording it: then the journal never saw it. PostgreSQL archives segments in
/// order, so a segment (or `.partial`) newer than the directory's newest recorded one cannot
/// have been counted. History and `.backup` files are not ordered that way; in that rare
/// window they stay uncounted (status's counts are one low, nothing else depends on them).
fn counted_for_the_first_time(directory: &Directory, file: &WalFileName) -> bool {
    matches!(file.kind(), WalFileKind::Segment | WalFileKind::Partial)
        && directory.last_wal.as_ref().is_none_or(|last| file > last)
}

fn reject(event: &Event, reason: impl Into<String>) -> TransitionError {
    TransitionError {
        event: event.kind().name(),
        reason: reason.into(),
    }
}

/// Keeps the last `FAILURE_OUTPUT_MAX_BYTES` of a failure's output, on a character boundary.
fn last_bytes(output: &str) -> String {
    if output.len() <= FAILURE_OUTPUT_MAX_BYTES {
        return output.to_owned();
    }
    let mut start = output.len() - FAILURE_OUTPUT_MAX_BYTES;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    output[start..].to_owned()
}

fn directory_mut<'a>(
    state: &'a mut State,
    event: &Event,
    name: DirectoryName,
) -> Result<&'a mut Directory, TransitionError> {
    state
        .directories
        .get_mut(&name)
        .ok_or_else(|| reject(event, format!("directory {name} is unknown")))
}

fn require_sync(state: &State, event: &Event) -> Result<(), TransitionError> {
    if state.sync.is_none() {
        return Err(reject(event, "no sync process is recorded as running"));
    }
    Ok(())
}

/// Refuses `event` about `directory` while the backup script runs for it: the script's outcome
/// is recorded first (losing or pruning a directory under a running script would leave that
/// outcome nowhere to go).
fn no_script_running_for(
    state: &State,
    event: &Event,
    directory: DirectoryName,
) -> Result<(), TransitionError> {
    if state
        .script
        .running
        .is_some_and(|run| run.directory == directory)
    {
        return Err(reject(
            event,
            format!("the script runs for {directory}: its outcome comes first"),
        ));
    }
    Ok(())
}

/// The rules themselves. They may leave `state` half-changed on `Err`; `apply` works on a copy.
fn apply_rules(state: &mut State, event: &Event) -> Result<(), TransitionError> {
    match event {
        Event::DirectoryOpened { directory, at } => {
            if state.directories.contains_key(directory) {
                return Err(reject(
                    event,
                    format!("directory {directory} exists already"),
                ));
            }
            state.directories.insert(
                *directory,
                Directory {
                    phase: DirectoryPhase::Pending,
                    opened_at: *at,
                    base: None,
                    wal_files: 0,
                    wal_bytes: 0,
                    first_wal: None,
                    last_wal: None,
                    newest_file_at: *at,
                    content_version: 0,
                    shipped: None,
                },
            );
        }
        Event::WalArchived {
            file,
            compressed_bytes,
            directories,
            already_present,
            at,
        } => {
            if directories.is_empty() {
                return Err(reject(event, "the file was stored in no directory"));
            }
            for name in directories {
                let Some(directory) = state.directories.get_mut(name) else {
                    continue; // removed meanwhile (a failed directory): nothing to count
                };
                if matches!(
                    directory.phase,
                    DirectoryPhase::Failed | DirectoryPhase::Pruning | DirectoryPhase::MovedAside
                ) {
                    // About to be removed: a failed one was never shipped; one being pruned
                    // (S-8.3) was chosen by a `wal` just before it was sealed, and the file
                    // is in the current directory too (S-2.7).
                    continue;
                }
                // Every arrival changes what the script must ship, even a duplicate: after a
                // crash between link and record, the journal may never have counted it.
                directory.content_version += 1;
                directory.newest_file_at = directory.newest_file_at.max(*at);
                // Segments and history files say which timeline the directory's WAL is on
                // (S-4.7). A `.partial` is the old timeline's last segment, archived after the
                // switch, and a `.backup` file names where a base backup started: neither
                // means that this directory's WAL goes on past a switch.
                if matches!(file.kind(), WalFileKind::Segment | WalFileKind::History) {
                    let timeline = file.timeline();
                    let span = state.timelines.get(name).copied();
                    state.timelines.insert(
                        *name,
                        span.map_or(TimelineSpan::of(timeline), |span| span.including(timeline)),
                    );
                }
                if !already_present || counted_for_the_first_time(directory, file) {
                    directory.wal_files += 1;
                    directory.wal_bytes = directory.wal_bytes.saturating_add(*compressed_bytes);
                }
                if matches!(file.kind(), WalFileKind::Segment | WalFileKind::Partial) {
                    if directory
                        .first_wal
                        .as_ref()
                        .is_none_or(|first| file < first)
                    {
                        directory.first_wal = Some(file.clone());
                    }
                    if directory.last_wal.as_ref().is_none_or(|last| file > last) {
                        directory.last_wal = Some(file.clone());
                    }
                }
            }
            state.wal.archived_count += 1;
            state.wal.last_archived = Some(file.clone());
            state.wal.last_archived_at = Some(*at);
        }
        Event::BaseBackupStarted { directory, at } => {
            require_sync(state, event)?;
            if let Some(running) = state.base_backup.running {
                return Err(reject(
                    event,
                    format!("a base backup runs for {}", running.directory),
                ));
            }
            let attempt = state.base_backup.consecutive_failures.saturating_add(1);
            let target = directory_mut(state, event, *directory)?;
            if target.phase != DirectoryPhase::Pending {
                return Err(reject(
                    event,
                    format!("directory {directory} is not pending"),
                ));
            }
            state.base_backup.running = Some(RunningBaseBackup {
                directory: *directory,
                started_at: *at,
                attempt,
            });
        }
        Event::BaseBackupFinished {
            directory,
            base_bytes,
            at,
        } => {
            require_running_base_backup(state, event, *directory)?;
            for other in state.directories.values_mut() {
                if other.phase == DirectoryPhase::Current {
                    other.phase = DirectoryPhase::Sealed;
                }
            }
            let target = directory_mut(state, event, *directory)?;
            target.phase = DirectoryPhase::Current;
            target.base = Some(BaseInfo {
                bytes: *base_bytes,
                finished_at: *at,
            });
            target.content_version += 1;
            target.newest_file_at = target.newest_file_at.max(*at);
            // S-8.3: the journal's order of base backups, which retention goes by.
            let retention = &mut state.retention;
            retention
                .base_order
                .insert(*directory, retention.bases_finished);
            retention.bases_finished += 1;
            let base = &mut state.base_backup;
            base.running = None;
            base.consecutive_failures = 0;
            base.last_success_at = Some(*at);
            base.requested = false;
            state.base_backup_server_unreachable = false;
        }
        Event::BaseBackupFailed {
            directory,
            output,
            at,
        }
        | Event::BaseBackupServerUnreachable {
            directory,
            output,
            at,
        } => {
            require_running_base_backup(state, event, *directory)?;
            fail_base_backup(
                state,
                *directory,
                Failure {
                    at: *at,
                    message: last_bytes(output),
                },
            );
            state.base_backup_server_unreachable =
                matches!(event, Event::BaseBackupServerUnreachable { .. });
        }
        Event::DirectoryLost { directory, at } => {
            if state
                .base_backup
                .running
                .is_some_and(|running| running.directory == *directory)
            {
                return Err(reject(
                    event,
                    format!("the base backup runs for {directory}: its outcome comes first"),
                ));
            }
            no_script_running_for(state, event, *directory)?;
            let lost = directory_mut(state, event, *directory)?.clone();
            if lost.phase == DirectoryPhase::Failed {
                return Err(reject(
                    event,
                    format!("directory {directory} failed: its removal is DirectoryRemoved"),
                ));
            }
            if matches!(
                lost.phase,
                DirectoryPhase::Pruning | DirectoryPhase::MovedAside
            ) {
                return Err(reject(
                    event,
                    format!(
                        "directory {directory} is being pruned: its removal is DirectoryPruned"
                    ),
                ));
            }
            let shipped = state
                .directories
                .get(directory)
                .is_some_and(|d| d.shipped.is_some_and(|s| s.version == d.content_version));
            forget_directory(state, *directory);
            if state.lost_directories.len() == LOST_DIRECTORIES_KEPT {
                state.lost_directories.remove(0);
            }
            state.lost_directories.push(LostDirectory {
                directory: *directory,
                phase: lost.phase,
                had_base: lost.base.is_some(),
                wal_files: lost.wal_files,
                last_wal: lost.last_wal,
                shipped,
                noticed_at: *at,
            });
        }
        Event::SystemIdentifierRecorded {
            system_identifier, ..
        } => match state.system_identifier {
            Some(recorded) if recorded != *system_identifier => {
                return Err(reject(
                    event,
                    format!(
                        "the backups are of cluster {recorded}, not {system_identifier}: \
                         a new series must be started first"
                    ),
                ));
            }
            _ => state.system_identifier = Some(*system_identifier),
        },
        Event::NewSeriesStarted { .. } => {
            if let Some(running) = state.base_backup.running {
                return Err(reject(
                    event,
                    format!("a base backup runs for {}", running.directory),
                ));
            }
            for directory in state.directories.values_mut() {
                directory.phase = match directory.phase {
                    DirectoryPhase::Current => DirectoryPhase::Sealed,
                    DirectoryPhase::Pending => DirectoryPhase::Failed,
                    other => other,
                };
            }
            state.system_identifier = None;
            state.base_backup.requested = false;
        }
        Event::CurrentLinkObserved { directory, .. } => {
            state.current_link = directory.filter(|name| state.directories.contains_key(name));
        }
        Event::DirectoryRemoved { directory, .. } => {
            let target = directory_mut(state, event, *directory)?;
            if target.phase != DirectoryPhase::Failed {
                return Err(reject(
                    event,
                    format!("directory {directory} has not failed"),
                ));
            }
            forget_directory(state, *directory);
        }
        Event::CurrentLinkSwitched { directory, .. } => {
            let target = directory_mut(state, event, *directory)?;
            if target.phase != DirectoryPhase::Current {
                return Err(reject(
                    event,
                    format!("directory {directory} is not current"),
                ));
            }
            state.current_link = Some(*directory);
        }
        Event::ScriptStarted {
            directory,
            current_timestamp,
            through_version,
            at,
        } => {
            require_sync(state, event)?;
            if let Some(run) = state.script.running {
                return Err(reject(
                    event,
                    format!("the script runs for {}", run.directory),
                ));
            }
            let target = directory_mut(state, event, *directory)?;
            if !target.phase.is_shippable() {
                return Err(reject(
                    event,
                    format!("directory {directory} cannot be shipped yet"),
                ));
            }
            if *through_version > target.content_version {
                return Err(reject(
                    event,
                    "it claims content the directory does not have",
                ));
            }
            state.script.running = Some(ScriptRun {
                directory: *directory,
                current_timestamp: *current_timestamp,
                through_version: *through_version,
                started_at: *at,
            });
        }
        Event::ScriptSucceeded { directory, at } => {
            let run = require_running_script(state, event, *directory)?;
            let target = directory_mut(state, event, *directory)?;
            let is_current = target.phase == DirectoryPhase::Current;
            // A success never moves the shipped mark backwards (a forced run of old content).
            if target
                .shipped
                .is_none_or(|s| s.version <= run.through_version)
            {
                target.shipped = Some(Shipped {
                    version: run.through_version,
                    current_timestamp: run.current_timestamp,
                    at: *at,
                });
            }
            if is_current && let Some(session) = state.sync.as_mut() {
                session.force_script = false;
            }
            let script = &mut state.script;
            script.running = None;
            script.consecutive_failures = 0;
            script.last_success_at = Some(*at);
        }
        Event::ScriptFailed {
            directory,
            output,
            at,
        } => {
            require_running_script(state, event, *directory)?;
            fail_script(
                state,
                Failure {
                    at: *at,
                    message: last_bytes(output),
                },
            );
        }
        Event::SyncStarted {
            pid,
            force_script,
            force_base,
            at,
        } => {
            if let Some(session) = state.sync {
                return Err(reject(
                    event,
                    format!(
                        "sync {} never stopped: record SyncAbandoned first",
                        session.pid
                    ),
                ));
            }
            state.sync = Some(SyncSession {
                pid: *pid,
                started_at: *at,
                force_script: *force_script,
            });
            if *force_base {
                state.base_backup.requested = true;
            }
        }
        Event::SyncStopped { pid, reason, at } => {
            require_session(state, event, *pid)?;
            if state.base_backup.running.is_some() || state.script.running.is_some() {
                return Err(reject(
                    event,
                    "work is still running: record its outcome first",
                ));
            }
            state.sync = None;
            // A `sync --base` that was interrupted no longer asks for a base backup.
            if *reason != SyncStopReason::Finished {
                state.base_backup.requested = false;
            }
            state.last_sync_end = Some(SyncEnd {
                pid: *pid,
                at: *at,
                reason: Some(reason.clone()),
            });
        }
        Event::SyncAbandoned { pid, at } => {
            require_session(state, event, *pid)?;
            if let Some(running) = state.base_backup.running {
                let message = format!("sync process {pid} died while the base backup ran");
                fail_base_backup(state, running.directory, Failure { at: *at, message });
            }
            if state.script.running.is_some() {
                let message = format!("sync process {pid} died while the script ran");
                fail_script(state, Failure { at: *at, message });
            }
            state.sync = None;
            state.base_backup.requested = false;
            state.last_sync_end = Some(SyncEnd {
                pid: *pid,
                at: *at,
                reason: None,
            });
        }
        Event::PruneStarted { directory, .. } => {
            require_sync(state, event)?;
            no_script_running_for(state, event, *directory)?;
            // The one guard that matters most (S-8.3): whatever the policy, the clock or the
            // caller say, only a sealed directory whose last state was shipped is pruned.
            let shipped_whole = state.fully_shipped(*directory);
            let target = directory_mut(state, event, *directory)?;
            if target.phase != DirectoryPhase::Sealed {
                return Err(reject(
                    event,
                    format!("directory {directory} is not sealed"),
                ));
            }
            if target.base.is_none() || !shipped_whole {
                return Err(reject(
                    event,
                    format!("the backup script has not shipped the last state of {directory}"),
                ));
            }
            target.phase = DirectoryPhase::Pruning;
        }
        Event::DirectoryMovedAside { directory, .. } => {
            require_sync(state, event)?;
            let target = directory_mut(state, event, *directory)?;
            if target.phase != DirectoryPhase::Pruning {
                return Err(reject(
                    event,
                    format!("directory {directory} is not being pruned"),
                ));
            }
            target.phase = DirectoryPhase::MovedAside;
        }
        Event::DirectoryPruned {
            directory,
            prune_script,
            at,
        } => {
            require_sync(state, event)?;
            let target = directory_mut(state, event, *directory)?;
            if target.phase != DirectoryPhase::MovedAside {
                return Err(reject(
                    event,
                    format!("directory {directory} was not moved aside"),
                ));
            }
            forget_directory(state, *directory);
            let retention = &mut state.retention;
            if *prune_script {
                retention.offsite_pending.push(*directory);
            }
            retention.pruned_count += 1;
            retention.last_pruned = Some((*directory, *at));
        }
        Event::PruneScriptSucceeded { directory, at } => {
            require_sync(state, event)?;
            let retention = &mut state.retention;
            let Some(index) = retention
                .offsite_pending
                .iter()
                .position(|name| name == directory)
            else {
                return Err(reject(
                    event,
                    format!("no prune script is owed for {directory}"),
                ));
            };
            retention.offsite_pending.remove(index);
            retention.prune_script_failures = 0;
            retention.prune_script_last_success_at = Some(*at);
        }
        Event::PruneScriptFailed {
            directory,
            output,
            at,
        } => {
            require_sync(state, event)?;
            let retention = &mut state.retention;
            if !retention.offsite_pending.contains(directory) {
                return Err(reject(
                    event,
                    format!("no prune script is owed for {directory}"),
                ));
            }
            retention.prune_script_failures = retention.prune_script_failures.saturating_add(1);
            retention.prune_script_last_failure = Some(Failure {
                at: *at,
                message: last_bytes(output),
            });
        }
        Event::JournalRebuilt { reason, damage, at } => {
            state.journal = JournalHealth::Rebuilt {
                at: *at,
                reason: reason.clone(),
                damage: *damage,
                directories_found: state.directories.len() as u64,
            };
        }
        Event::JournalTailCut {
            offset,
            discarded_bytes,
            at,
        } => {
            state.journal = JournalHealth::TailCut {
                at: *at,
                offset: *offset,
                discarded_bytes: *discarded_bytes,
            };
        }
    }
    Ok(())
}

fn require_running_base_backup(
    state: &State,
    event: &Event,
    directory: DirectoryName,
) -> Result<(), TransitionError> {
    match state.base_backup.running {
        Some(running) if running.directory == directory => Ok(()),
        Some(running) => Err(reject(
            event,
            format!("the base backup runs for {}", running.directory),
        )),
        None => Err(reject(event, "no base backup is running")),
    }
}

fn require_running_script(
    state: &State,
    event: &Event,
    directory: DirectoryName,
) -> Result<ScriptRun, TransitionError> {
    match state.script.running {
        Some(run) if run.directory == directory => Ok(run),
        Some(run) => Err(reject(
            event,
            format!("the script runs for {}", run.directory),
        )),
        None => Err(reject(event, "the script is not running")),
    }
}

fn require_session(state: &State, event: &Event, pid: u32) -> Result<(), TransitionError> {
    match state.sync {
        Some(session) if session.pid == pid => Ok(()),
        Some(session) => Err(reject(
            event,
            format!("the recorded sync is process {}", session.pid),
        )),
        None => Err(reject(event, "no sync process is recorded as running")),
    }
}

/// Removes every trace of a directory that is gone from disk.
fn forget_directory(state: &mut State, directory: DirectoryName) {
    state.directories.remove(&directory);
    state.timelines.remove(&directory);
    state.retention.base_order.remove(&directory);
    if state.current_link == Some(directory) {
        state.current_link = None;
    }
}

fn fail_base_backup(state: &mut State, directory: DirectoryName, failure: Failure) {
    state.base_backup_server_unreachable = false;
    if let Some(target) = state.directories.get_mut(&directory) {
        target.phase = DirectoryPhase::Failed;
    }
    let base = &mut state.base_backup;
    base.running = None;
    base.consecutive_failures = base.consecutive_failures.saturating_add(1);
    base.last_failure = Some(failure);
}

fn fail_script(state: &mut State, failure: Failure) {
    let script = &mut state.script;
    script.running = None;
    script.consecutive_failures = script.consecutive_failures.saturating_add(1);
    script.last_failure = Some(failure);
}
