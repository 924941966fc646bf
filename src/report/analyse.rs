//! The parts of the status report computed from the replayed journal state alone: the lost
//! directories, the base backup, the sync, the journal's health, and the problems they show.
//!
//! Invariant: pure; no file system, no clock (`now` is a parameter), so what the report says
//! about the state is reproducible from the journal. Problem codes are stable
//! strings the README documents.

use super::BaseBackupReport;
use super::FailureReport;
use super::JournalReport;
use super::LostDirectoryReport;
use super::Problem;
use super::RunningBaseBackupReport;
use super::SyncEndReport;
use super::SyncReport;
use crate::home::journal_file::OpenedJournal;
use crate::machine::BaseBackupDue;
use crate::machine::DirectoryPhase;
use crate::machine::Failure;
use crate::machine::JournalHealth;
use crate::machine::Policy;
use crate::machine::State;
use crate::machine::base_backup_due;
use crate::machine::retry_due_at;
use crate::sync::log::last_line;
use crate::timestamp::UnixMillis;

pub(super) fn time(at: UnixMillis) -> String {
    at.to_rfc3339()
}

pub(super) fn failure_report(failure: &Option<Failure>) -> Option<FailureReport> {
    failure.as_ref().map(|f| FailureReport {
        at: time(f.at),
        output: f.message.clone(),
    })
}

pub(super) fn phase_label(phase: DirectoryPhase) -> &'static str {
    match phase {
        DirectoryPhase::Pending => "pending",
        DirectoryPhase::Current => "current",
        DirectoryPhase::Sealed => "sealed",
        DirectoryPhase::Failed => "failed",
        DirectoryPhase::Pruning => "pruning",
        DirectoryPhase::MovedAside => "moved_aside",
    }
}

pub(super) fn due_label(due: BaseBackupDue) -> &'static str {
    match due {
        BaseBackupDue::Requested => "requested",
        BaseBackupDue::NoCurrentDirectory => "no_current_directory",
        BaseBackupDue::NewTimeline => "new_timeline",
        BaseBackupDue::TooOld => "too_old",
        BaseBackupDue::TooMuchWal => "too_much_wal",
    }
}

/// Lost directories (S-4.8). Each is a problem until a base backup finishes after it was
/// noticed: from then on the backups are whole again, and it is history.
pub(super) fn lost_directories_report(
    state: &State,
    problems: &mut Vec<Problem>,
) -> Vec<LostDirectoryReport> {
    state
        .lost_directories
        .iter()
        .map(|lost| {
            let healed = state
                .base_backup
                .last_success_at
                .is_some_and(|at| at > lost.noticed_at);
            if !healed {
                problems.push(Problem {
                    code: "directory_lost",
                    message: format!(
                        "{} ({}, {}, {} WAL file(s){}, {}) vanished from disk; noticed at {}: \
                         WAL archived since goes to a new directory whose base backup is due",
                        lost.directory,
                        phase_label(lost.phase),
                        if lost.had_base {
                            "with its base backup"
                        } else {
                            "no base backup"
                        },
                        lost.wal_files,
                        lost.last_wal
                            .as_ref()
                            .map_or(String::new(), |last| format!(" through {last}")),
                        if lost.shipped {
                            "all of it shipped offsite"
                        } else {
                            "NOT all of it shipped offsite"
                        },
                        time(lost.noticed_at)
                    ),
                });
            }
            LostDirectoryReport {
                name: lost.directory.to_string(),
                state: phase_label(lost.phase),
                had_base: lost.had_base,
                wal_files: lost.wal_files,
                last_wal: lost.last_wal.as_ref().map(|w| w.to_string()),
                shipped: lost.shipped,
                noticed_at: time(lost.noticed_at),
            }
        })
        .collect()
}

pub(super) fn base_backup_report(
    state: &State,
    now: UnixMillis,
    policy: &Policy,
    problems: &mut Vec<Problem>,
) -> BaseBackupReport {
    let base = &state.base_backup;
    let due = if base.running.is_some() {
        None
    } else {
        base_backup_due(state, now, policy)
    };
    let next_due_at = match due {
        Some(_) => Some(time(now)),
        None => state
            .current_directory()
            .and_then(|(_, d)| d.base)
            .map(|b| time(b.finished_at.plus_millis(policy.base_max_age_ms))),
    };
    let next_retry_at = retry_due_at(
        base.consecutive_failures,
        base.last_failure.as_ref(),
        policy.base_retry,
        now,
        state.sync.map(|session| session.started_at),
    )
    .filter(|_| base.running.is_none())
    .map(time);
    if base.consecutive_failures > 0 {
        let last = base
            .last_failure
            .as_ref()
            .map(|f| last_line(&f.message).trim().to_owned())
            .unwrap_or_default();
        problems.push(Problem {
            code: "base_backup_failing",
            message: format!(
                "the base backup failed {} time(s) in a row; last: {last}{}",
                base.consecutive_failures,
                if state.base_backup_server_unreachable {
                    " (the server could not be reached: the sync retries once PostgreSQL \
                     archives again)"
                } else {
                    ""
                }
            ),
        });
    }
    BaseBackupReport {
        running: base.running.map(|running| RunningBaseBackupReport {
            directory: running.directory.to_string(),
            started_at: time(running.started_at),
            attempt: running.attempt,
            bytes_read: None,
            bytes_written: None,
        }),
        due: due.map(due_label),
        next_due_at,
        consecutive_failures: base.consecutive_failures,
        next_retry_at,
        last_success_at: base.last_success_at.map(time),
        last_failure: failure_report(&base.last_failure),
    }
}

pub(super) fn sync_report(
    state: &State,
    sync_lock_held: bool,
    problems: &mut Vec<Problem>,
) -> SyncReport {
    let mut doing = Vec::new();
    if let Some(running) = state.base_backup.running {
        doing.push(format!(
            "base backup into {} (attempt {}) since {}",
            running.directory,
            running.attempt,
            time(running.started_at)
        ));
    }
    if let Some(run) = state.script.running {
        doing.push(format!(
            "backup script for {} {} {} since {}",
            run.directory,
            run.directory,
            run.current_timestamp,
            time(run.started_at)
        ));
    }
    // The journal says a session is open but nobody holds the sync lock: that process died;
    // the next sync records it as abandoned and resumes its work.
    let died = state.sync.is_some() && !sync_lock_held;
    if died {
        problems.push(Problem {
            code: "sync_died",
            message: format!(
                "sync process {} died without stopping; the next sync resumes its work",
                state.sync.map_or(0, |s| s.pid)
            ),
        });
    }
    SyncReport {
        running: sync_lock_held,
        pid: state.sync.map(|s| s.pid),
        since: state.sync.map(|s| time(s.started_at)),
        died,
        doing,
        last_end: state.last_sync_end.as_ref().map(|end| {
            let (reason, message) = match &end.reason {
                None => ("died", None),
                Some(crate::machine::SyncStopReason::Finished) => ("finished", None),
                Some(crate::machine::SyncStopReason::Interrupted) => ("interrupted", None),
                Some(crate::machine::SyncStopReason::Error { message }) => {
                    ("error", Some(message.clone()))
                }
            };
            SyncEndReport {
                pid: end.pid,
                at: time(end.at),
                reason,
                message,
            }
        }),
    }
}

pub(super) fn journal_report(
    opened: &OpenedJournal,
    state: &State,
    problems: &mut Vec<Problem>,
) -> JournalReport {
    let (health, repaired_at, repair) = match &state.journal {
        JournalHealth::Intact => ("intact", None, None),
        fresh @ JournalHealth::Rebuilt { at, .. } if fresh.is_fresh() => (
            "intact",
            Some(time(*at)),
            Some("created: there was no journal and no backup directory yet".to_owned()),
        ),
        JournalHealth::TailCut {
            at,
            offset,
            discarded_bytes,
        } => (
            "tail_cut",
            Some(time(*at)),
            Some(format!(
                "cut off a torn record at offset {offset} ({discarded_bytes} bytes): the last \
                 write before a crash was incomplete; no complete record was lost"
            )),
        ),
        JournalHealth::Rebuilt { at, reason, .. } => (
            "rebuilt",
            Some(time(*at)),
            Some(format!(
                "rebuilt the state from the backup directories because {reason}; upload state \
                 that could not be recovered counts as not shipped"
            )),
        ),
    };
    let repaired_now = opened.report.repair.is_some() && !state.journal.is_fresh();
    match health {
        "rebuilt" => problems.push(Problem {
            code: "journal_rebuilt",
            message: format!("journal: {}", repair.clone().unwrap_or_default()),
        }),
        "tail_cut" if repaired_now => problems.push(Problem {
            code: "journal_tail_cut",
            message: format!("journal: {}", repair.clone().unwrap_or_default()),
        }),
        _ => {}
    }
    JournalReport {
        path: opened.lock_file.path().display().to_string(),
        file_bytes: opened.journal.file_bytes(),
        records: opened.report.records_replayed,
        health,
        repaired_at,
        repair,
        repaired_now,
        damaged_copy: opened
            .damaged_copy
            .as_ref()
            .map(|p| p.display().to_string()),
    }
}
