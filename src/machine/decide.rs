//! Decisions: `next_actions(state, now, policy)` for the sync, `archive_targets(state, now)` for
//! `pgbak wal`.
//!
//! Owns: when a base backup is due (S-4.2) and in which directory it runs, which directory the
//! script runs for next and with which timestamps (S-5.1, S-5.2), the retry backoffs (S-4.5,
//! S-5.3), the script timeout (S-5.4), when the sync may exit (S-6.2), where an archived file
//! goes (S-2.7), and which directories retention deletes (S-8.3).
//!
//! Invariants: a pure function of its arguments; it never emits an action whose intent is
//! already recorded (a running base backup or script is never started twice); every wait is
//! returned as `wake_at`, never slept here (S-6.5), and `wake_at` is always in the future, so a
//! sync that has nothing to start never spins.

use super::action::{Action, Plan, StopScriptReason};
use super::policy::{Backoff, Policy};
use super::state::{DirectoryPhase, Failure, State};
use crate::timestamp::{DirectoryName, UnixMillis};

/// Where `pgbak wal` stores a file (S-2.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveTargets {
    /// No directory is open at all (first run, or the only pending one failed): open this one
    /// first (record `DirectoryOpened`), which makes a base backup due.
    pub open_directory: Option<DirectoryName>,
    /// Every directory the file goes into: all pending and current ones, oldest first.
    pub directories: Vec<DirectoryName>,
}

pub fn archive_targets(state: &State, now: UnixMillis) -> ArchiveTargets {
    let open: Vec<DirectoryName> = state.open_directories().collect();
    if open.is_empty() {
        let name = fresh_directory_name(state, now);
        ArchiveTargets {
            open_directory: Some(name),
            directories: vec![name],
        }
    } else {
        ArchiveTargets {
            open_directory: None,
            directories: open,
        }
    }
}

/// A name for a new directory: the current second, or one past the newest existing name, so
/// names stay unique and ordered even if the clock steps back or two open in one second.
/// A lost directory's name is never used again (S-4.8): its offsite copy may still exist, and
/// a new directory under the same name would be shipped on top of it.
fn fresh_directory_name(state: &State, now: UnixMillis) -> DirectoryName {
    let newest = state
        .directories
        .keys()
        .copied()
        .chain(state.lost_directories.iter().map(|lost| lost.directory))
        .max()
        .map(|name| name.0 + 1)
        .unwrap_or(0);
    DirectoryName(now.seconds().max(newest))
}

/// Why a base backup is due (S-4.2), for `status` and for the decision itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseBackupDue {
    /// `pgbak sync --base`.
    Requested,
    /// No directory has a finished base backup yet.
    NoCurrentDirectory,
    /// The current directory holds WAL of a timeline newer than its base backup's (a
    /// promotion, or a point-in-time restore archiving into the same `$PGBAK`, S-4.7): its
    /// base cannot be restored past the switch by the no-tool recipe.
    NewTimeline,
    /// The current base is older than `base.max_age_hours`.
    TooOld,
    /// The current directory's WAL outgrew `base.max_wal_ratio` × its base.
    TooMuchWal,
}

pub fn base_backup_due(state: &State, now: UnixMillis, policy: &Policy) -> Option<BaseBackupDue> {
    if state.base_backup.requested {
        return Some(BaseBackupDue::Requested);
    }
    let Some((name, current)) = state.current_directory() else {
        return Some(BaseBackupDue::NoCurrentDirectory);
    };
    if state.spans_timelines(name) {
        return Some(BaseBackupDue::NewTimeline);
    }
    let base = current.base?;
    if now.millis_since(base.finished_at) >= policy.base_max_age_ms {
        return Some(BaseBackupDue::TooOld);
    }
    // Compare in f64: byte counts stay far below 2^53, where f64 is exact.
    if base.bytes > 0 && current.wal_bytes as f64 > policy.base_max_wal_ratio * base.bytes as f64 {
        return Some(BaseBackupDue::TooMuchWal);
    }
    None
}

/// When the current base backup becomes too old: a time to look again, not a reason to stay.
fn base_backup_ages_out_at(state: &State, policy: &Policy) -> Option<UnixMillis> {
    let (_, current) = state.current_directory()?;
    Some(
        current
            .base?
            .finished_at
            .plus_millis(policy.base_max_age_ms),
    )
}

/// When the retry after `failures` consecutive failures (the last one `last_failure`) is due,
/// or `None` when nothing failed. Also what `status` shows as the next retry.
///
/// S-6.5: a failure recorded later than `now` means the wall clock stepped back since; its
/// retry time is clamped to `session_started_at` (or `now` outside a session) plus the
/// backoff's maximum, so the step never stalls the retry for as long as the step. The anchor
/// is the session's start, not `now`, so the clamped time stays put as `now` advances.
pub fn retry_due_at(
    failures: u32,
    last_failure: Option<&Failure>,
    backoff: Backoff,
    now: UnixMillis,
    session_started_at: Option<UnixMillis>,
) -> Option<UnixMillis> {
    let failure = last_failure.filter(|_| failures > 0)?;
    let retry_at = failure.at.plus_millis(backoff.delay_ms(failures));
    if failure.at <= now {
        return Some(retry_at);
    }
    let anchor = session_started_at.filter(|at| *at <= now).unwrap_or(now);
    Some(retry_at.min(anchor.plus_millis(backoff.max_ms)))
}

/// Whether a retry must still wait for its backoff ([`retry_due_at`]); if so, the retry time
/// is noted in `wake`.
fn backing_off(
    failures: u32,
    last_failure: Option<&Failure>,
    backoff: Backoff,
    now: UnixMillis,
    session_started_at: Option<UnixMillis>,
    wake: &mut Wake,
) -> bool {
    match retry_due_at(failures, last_failure, backoff, now, session_started_at) {
        Some(retry_at) if now < retry_at => {
            wake.at(retry_at);
            true
        }
        _ => false,
    }
}

#[derive(Default)]
struct Wake(Option<UnixMillis>);

impl Wake {
    fn at(&mut self, time: UnixMillis) {
        self.0 = Some(self.0.map_or(time, |earlier| earlier.min(time)));
    }
}

/// What the sync should start now, and when to look again (S-6.5). The caller holds the sync
/// lock and has recorded its `SyncStarted`.
pub fn next_actions(state: &State, now: UnixMillis, policy: &Policy) -> Plan {
    let mut actions = Vec::new();
    let mut wake = Wake::default();
    // Anything pending, due, running or being retried keeps the sync alive (S-6.2).
    let mut outstanding = false;

    for (name, directory) in &state.directories {
        if directory.phase == DirectoryPhase::Failed {
            actions.push(Action::RemoveFailedDirectory { directory: *name });
            outstanding = true;
        }
    }

    if let Some((current, _)) = state.current_directory()
        && state.current_link != Some(current)
    {
        actions.push(Action::PointCurrentLinkAt { directory: current });
        outstanding = true;
    }

    decide_prune(
        state,
        now,
        policy,
        &mut actions,
        &mut wake,
        &mut outstanding,
    );

    decide_base_backup(
        state,
        now,
        policy,
        &mut actions,
        &mut wake,
        &mut outstanding,
    );
    decide_script(
        state,
        now,
        policy,
        &mut actions,
        &mut wake,
        &mut outstanding,
    );

    // Only a future deadline is a reason to wake: one already passed made the base backup due
    // above (or is waiting for its retry, whose own time is already in `wake`).
    if let Some(ages_out) = base_backup_ages_out_at(state, policy).filter(|at| *at > now) {
        wake.at(ages_out);
    }
    Plan {
        finished: !outstanding && actions.is_empty(),
        actions,
        wake_at: wake.0,
    }
}

/// What retention would delete with `keep_bases` kept (S-8.3), oldest first. Empty when
/// `keep_bases` is 0 (never delete, the default).
///
/// The bases are the directories with a finished base backup that are still backups
/// (`Current`, `Sealed`), in the order their base backups finished, which is the journal's
/// order and neither the names' nor any clock's. The newest `keep_bases` of them stay. Of the
/// others, a directory goes only if it is `Sealed`, its last state was shipped (the backup
/// script succeeded for its final content) and the script is not running for it; and only
/// once the newest base backup itself was shipped, so that a newer restorable backup exists
/// offsite before an older one goes.
pub fn prune_candidates(state: &State, keep_bases: u32) -> Vec<DirectoryName> {
    if keep_bases == 0 {
        return Vec::new();
    }
    let bases = state.bases_newest_first();
    let Some(newest) = bases.first() else {
        return Vec::new();
    };
    if state.directories[newest].shipped.is_none() {
        return Vec::new();
    }
    let keep = usize::try_from(keep_bases).unwrap_or(usize::MAX);
    let script_runs_for = state.script.running.map(|run| run.directory);
    bases
        .iter()
        .skip(keep)
        .rev()
        .copied()
        .filter(|name| {
            state.directories[name].phase == DirectoryPhase::Sealed
                && state.fully_shipped(*name)
                && script_runs_for != Some(*name)
        })
        .collect()
}

/// Retention (S-8.3): a prune whose intent is recorded is finished first, whatever the policy
/// says now (the intent is a fact; the phase says which step is next); then new prunes by
/// [`prune_candidates`]; then the prune script owed for a pruned directory, with the backup
/// script's backoff.
fn decide_prune(
    state: &State,
    now: UnixMillis,
    policy: &Policy,
    actions: &mut Vec<Action>,
    wake: &mut Wake,
    outstanding: &mut bool,
) {
    for (name, directory) in &state.directories {
        match directory.phase {
            DirectoryPhase::Pruning => {
                actions.push(Action::MoveDirectoryAside { directory: *name });
            }
            DirectoryPhase::MovedAside => {
                actions.push(Action::RemoveMovedAsideDirectory { directory: *name });
            }
            _ => continue,
        }
        *outstanding = true;
    }
    for directory in prune_candidates(state, policy.keep_bases) {
        actions.push(Action::PruneDirectory { directory });
        *outstanding = true;
    }
    let retention = &state.retention;
    let Some(directory) = retention.offsite_pending.first().copied() else {
        return;
    };
    *outstanding = true;
    if backing_off(
        retention.prune_script_failures,
        retention.prune_script_last_failure.as_ref(),
        policy.script_retry,
        now,
        state.sync.map(|session| session.started_at),
        wake,
    ) {
        return;
    }
    actions.push(Action::RunPruneScript { directory });
}

fn decide_base_backup(
    state: &State,
    now: UnixMillis,
    policy: &Policy,
    actions: &mut Vec<Action>,
    wake: &mut Wake,
    outstanding: &mut bool,
) {
    let base = &state.base_backup;
    if base.running.is_some() {
        *outstanding = true;
        return;
    }
    if base_backup_due(state, now, policy).is_none() {
        return;
    }
    // A base backup that failed because the server is unreachable (stopped, most likely) is
    // no reason to stay: the sync waits for its retry only if it has other work, and
    // otherwise exits, and the next `wal` (which proves the server is back) starts a sync
    // that retries it (S-6.6). Without this, `pgbak wait` after the server stops would wait
    // out a sync that retries forever.
    *outstanding |= !state.base_backup_server_unreachable;
    let failure = base.last_failure.as_ref();
    if backing_off(
        base.consecutive_failures,
        failure,
        policy.base_retry,
        now,
        state.sync.map(|session| session.started_at),
        wake,
    ) {
        return;
    }
    // Reuse a pending directory nobody is backing up (the one `wal` opened on first run);
    // otherwise open a new one named for now.
    let idle_pending = state
        .directories
        .iter()
        .rev()
        .find(|(_, d)| d.phase == DirectoryPhase::Pending)
        .map(|(name, _)| *name);
    actions.push(match idle_pending {
        Some(directory) => Action::StartBaseBackup {
            directory,
            open_directory: false,
        },
        None => Action::StartBaseBackup {
            directory: fresh_directory_name(state, now),
            open_directory: true,
        },
    });
}

fn decide_script(
    state: &State,
    now: UnixMillis,
    policy: &Policy,
    actions: &mut Vec<Action>,
    wake: &mut Wake,
    outstanding: &mut bool,
) {
    let script = &state.script;
    if let Some(run) = script.running {
        *outstanding = true;
        if let Some(timeout_ms) = policy.script_timeout_ms {
            let deadline = run.started_at.plus_millis(timeout_ms);
            if now >= deadline {
                actions.push(Action::StopScript {
                    directory: run.directory,
                    reason: StopScriptReason::TimedOut { timeout_ms },
                });
            } else {
                wake.at(deadline);
            }
        }
        return;
    }
    let forced_current = state
        .sync
        .filter(|session| session.force_script)
        .and_then(|_| state.current_directory())
        .map(|(name, _)| name);
    // Oldest directory first (S-5.2): names sort by time.
    let Some(name) = state
        .directories
        .keys()
        .copied()
        .find(|name| state.needs_shipping(*name) || Some(*name) == forced_current)
    else {
        return;
    };
    *outstanding = true;
    let failure = script.last_failure.as_ref();
    if backing_off(
        script.consecutive_failures,
        failure,
        policy.script_retry,
        now,
        state.sync.map(|session| session.started_at),
        wake,
    ) {
        return;
    }
    let directory = &state.directories[&name];
    actions.push(Action::RunScript {
        directory: name,
        current_timestamp: DirectoryName::from_millis(directory.newest_file_at),
        through_version: directory.content_version,
    });
}
