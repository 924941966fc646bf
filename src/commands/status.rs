//! `pgbak status`: what is stored, shipped, running, due and wrong (S-6.4).
//!
//! Owns: the [`StatusReport`] (the `--json` schema, version [`SCHEMA_VERSION`], documented in
//! the README) and its human rendering, and `--journal`'s record listing.
//!
//! Invariants: the report is computed once, from one consistent replay of the journal plus a
//! look at the tree, and both renderings print that same report, so they never disagree.
//! Opening the journal may repair it (cut a torn tail, rebuild from the tree); the repair is
//! recorded in the journal and reported. An unused `$PGBAK` (no journal bytes, no backup
//! directory) is reported as empty and left untouched. Strict modes (S-1.5) are reported as
//! `insecure_permissions` problems, first, instead of refused: status runs nothing from
//! `$PGBAK`, and an operator needs it most when something is wrong.

use crate::archive;
use crate::config;
use crate::home::environment::PgbakHome;
use crate::home::journal_file::{self, OpenedJournal};
use crate::home::strict_modes;
use crate::home::tree_scan::{self, BASE_FILE_NAME};
use crate::journal::{Record, StopKind};
use crate::machine::{
    BaseBackupDue, DirectoryPhase, Failure, JournalHealth, Policy, State, base_backup_due,
    retry_due_at,
};
use crate::os::lock::LockRange;
use crate::sync::base_backup::progress;
use crate::timestamp::{DirectoryName, UnixMillis};
use anyhow::Context;
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `status --json`'s schema name and version (README, "status --json schema").
pub const SCHEMA_NAME: &str = "pgbak.status";
pub const SCHEMA_VERSION: u32 = 1;

/// Free space below which `status` warns (S-8.5): 5 % of the file system or 1 GiB.
const LOW_DISK_FRACTION: f64 = 0.05;
const LOW_DISK_BYTES: u64 = 1 << 30;

/// PostgreSQL's default WAL segment size, used when no stored segment tells us the real one.
const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    Journal,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub schema: &'static str,
    pub schema_version: u32,
    pub pgbak_version: &'static str,
    pub pgbak_directory: String,
    pub generated_at: String,
    /// `None` for an unused `$PGBAK`.
    pub journal: Option<JournalReport>,
    pub current: Option<String>,
    /// Where `$PGBAK/current` really points, read from disk (S-6.4): the link's text, which
    /// is a directory name unless someone changed it.
    pub current_link: Option<String>,
    /// The cluster the backups belong to (S-2.9), as a decimal string (it does not fit a
    /// JavaScript number).
    pub system_identifier: Option<String>,
    pub directories: Vec<DirectoryReport>,
    /// Directories found removed from disk by hand, newest last (S-4.8).
    pub lost_directories: Vec<LostDirectoryReport>,
    pub wal: WalReport,
    pub sync: SyncReport,
    pub base_backup: BaseBackupReport,
    pub script: ScriptReport,
    pub disk: Option<DiskReport>,
    pub conflicts: ConflictsReport,
    pub everything_shipped: bool,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct JournalReport {
    pub path: String,
    pub file_bytes: u64,
    pub records: u64,
    pub health: &'static str,
    pub repaired_at: Option<String>,
    pub repair: Option<String>,
    pub repaired_now: bool,
    /// Where the damaged journal's bytes were kept by this run's rebuild.
    pub damaged_copy: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DirectoryReport {
    pub name: String,
    pub state: &'static str,
    pub opened_at: String,
    pub base_bytes: Option<u64>,
    pub base_finished_at: Option<String>,
    pub wal_files: u64,
    pub wal_bytes: u64,
    pub first_wal: Option<String>,
    pub last_wal: Option<String>,
    pub newest_file_at: String,
    pub shipped_through: Option<String>,
    pub shipped_at: Option<String>,
    pub unshipped_changes: u64,
    pub wal_gaps: Vec<GapReport>,
    /// Lowest and highest timeline of its WAL; two different ones: it spans a switch (S-4.7).
    pub timelines: Option<[u32; 2]>,
}

#[derive(Debug, Serialize)]
pub struct LostDirectoryReport {
    pub name: String,
    pub state: &'static str,
    pub had_base: bool,
    pub wal_files: u64,
    pub last_wal: Option<String>,
    pub shipped: bool,
    pub noticed_at: String,
}

#[derive(Debug, Serialize)]
pub struct GapReport {
    pub after: String,
    pub before: String,
}

#[derive(Debug, Serialize)]
pub struct WalReport {
    pub archived_count: u64,
    pub last_archived: Option<String>,
    pub last_archived_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub running: bool,
    pub pid: Option<u32>,
    pub since: Option<String>,
    pub died: bool,
    pub doing: Vec<String>,
    pub last_end: Option<SyncEndReport>,
}

#[derive(Debug, Serialize)]
pub struct SyncEndReport {
    pub pid: u32,
    pub at: String,
    pub reason: &'static str,
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BaseBackupReport {
    pub running: Option<RunningBaseBackupReport>,
    pub due: Option<&'static str>,
    pub next_due_at: Option<String>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_failure: Option<FailureReport>,
}

#[derive(Debug, Serialize)]
pub struct RunningBaseBackupReport {
    pub directory: String,
    pub started_at: String,
    pub attempt: u32,
    /// Uncompressed tar bytes read from `pg_basebackup` so far (`None`: not published yet).
    pub bytes_read: Option<u64>,
    /// Compressed bytes written so far (lags: the encoder emits jobs of several MiB).
    pub bytes_written: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ScriptReport {
    pub path: String,
    pub present: bool,
    pub executable: bool,
    pub running: Option<ScriptRunReport>,
    pub last_success_at: Option<String>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<String>,
    pub last_failure: Option<FailureReport>,
}

#[derive(Debug, Serialize)]
pub struct ScriptRunReport {
    pub directory: String,
    pub current_timestamp: String,
    pub started_at: String,
}

#[derive(Debug, Serialize)]
pub struct FailureReport {
    pub at: String,
    pub output: String,
}

#[derive(Debug, Serialize)]
pub struct DiskReport {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// `$PGBAK/conflicts/`: rejected different-content duplicates (S-2.4, S-2.10).
#[derive(Debug, Serialize)]
pub struct ConflictsReport {
    pub files: u64,
    pub bytes: u64,
    /// `wal.conflicts_max_bytes`.
    pub max_bytes: u64,
    /// A copy was refused because of the cap since the last one kept.
    pub cap_reached: bool,
    /// Which file and when, as `wal` noted it.
    pub not_kept: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
}

fn time(at: UnixMillis) -> String {
    at.to_rfc3339()
}

fn failure_report(failure: &Option<Failure>) -> Option<FailureReport> {
    failure.as_ref().map(|f| FailureReport {
        at: time(f.at),
        output: f.message.clone(),
    })
}

fn phase_label(phase: DirectoryPhase) -> &'static str {
    match phase {
        DirectoryPhase::Pending => "pending",
        DirectoryPhase::Current => "current",
        DirectoryPhase::Sealed => "sealed",
        DirectoryPhase::Failed => "failed",
    }
}

fn due_label(due: BaseBackupDue) -> &'static str {
    match due {
        BaseBackupDue::Requested => "requested",
        BaseBackupDue::NoCurrentDirectory => "no_current_directory",
        BaseBackupDue::NewTimeline => "new_timeline",
        BaseBackupDue::TooOld => "too_old",
        BaseBackupDue::TooMuchWal => "too_much_wal",
    }
}

/// The WAL segment size of a directory, from the content sizes a stored segment's zstd frame
/// headers record (S-2.2); the default when there is none to read.
fn segment_bytes(
    directory: &Path,
    files: &[(crate::wal_name::WalFileName, u64, UnixMillis)],
) -> u64 {
    let Some((name, _, _)) = files
        .iter()
        .find(|(n, _, _)| n.kind() == crate::wal_name::WalFileKind::Segment)
    else {
        return DEFAULT_SEGMENT_BYTES;
    };
    let path = directory
        .join(tree_scan::WAL_DIRECTORY_NAME)
        .join(name.compressed_name());
    // Every frame's content size, summed: a stored file may be several frames (S-2.2).
    match archive::stored_content_bytes(&path) {
        Ok(Some(size)) if size.is_power_of_two() => size,
        _ => DEFAULT_SEGMENT_BYTES,
    }
}

fn directory_report(
    home: &PgbakHome,
    name: DirectoryName,
    state: &State,
    problems: &mut Vec<Problem>,
) -> DirectoryReport {
    let directory = &state.directories[&name];
    let shipped_version = directory.shipped.map_or(0, |s| s.version);
    let mut wal_gaps = Vec::new();
    let timelines = state.timelines.get(&name).copied();
    // A problem only while the current directory spans a switch: its base backup is due, and
    // until it finishes the newest restorable state needs archive recovery. A sealed directory
    // that spans timelines keeps the note on its own line below, for whoever restores it.
    if let Some(span) = timelines.filter(|span| span.spans_timelines())
        && directory.phase == DirectoryPhase::Current
    {
        problems.push(Problem {
            code: "spans_timelines",
            message: format!(
                "{name} spans timelines {} to {}: restore it by archive recovery \
                 (recovery.signal, restore_command and recovery_target_timeline = 'latest'; \
                 see the README, \"Restoring\"), not by decompressing its WAL into pg_wal, which \
                 replays only timeline {}; a base backup on the new timeline is due",
                span.lowest, span.highest, span.lowest,
            ),
        });
    }
    if directory.phase.is_shippable() {
        let path = home.directory_path(name);
        match tree_scan::stored_wal_files(&path) {
            Ok(files) => {
                let segment_size = segment_bytes(&path, &files);
                for (after, before) in tree_scan::segment_gaps(&files, segment_size) {
                    problems.push(Problem {
                        code: "wal_gap",
                        message: format!(
                            "{name}: WAL segments missing between {after} and {before}: a restore \
                             from this directory stops at {after}"
                        ),
                    });
                    wal_gaps.push(GapReport {
                        after: after.to_string(),
                        before: before.to_string(),
                    });
                }
            }
            Err(error) => problems.push(Problem {
                code: "wal_gap",
                message: format!("{name}: cannot list its WAL files to look for gaps: {error}"),
            }),
        }
        if directory.base.is_some() && !path.join(BASE_FILE_NAME).is_file() {
            problems.push(Problem {
                code: "missing_base",
                message: format!(
                    "{name}: {BASE_FILE_NAME} is missing although its base backup finished"
                ),
            });
        }
    }
    DirectoryReport {
        name: name.to_string(),
        state: phase_label(directory.phase),
        opened_at: time(directory.opened_at),
        base_bytes: directory.base.map(|b| b.bytes),
        base_finished_at: directory.base.map(|b| time(b.finished_at)),
        wal_files: directory.wal_files,
        wal_bytes: directory.wal_bytes,
        first_wal: directory.first_wal.as_ref().map(|w| w.to_string()),
        last_wal: directory.last_wal.as_ref().map(|w| w.to_string()),
        newest_file_at: time(directory.newest_file_at),
        shipped_through: directory.shipped.map(|s| s.current_timestamp.to_string()),
        shipped_at: directory.shipped.map(|s| time(s.at)),
        unshipped_changes: if directory.phase.is_shippable() {
            directory.content_version.saturating_sub(shipped_version)
        } else {
            0
        },
        wal_gaps,
        timelines: timelines.map(|span| [span.lowest, span.highest]),
    }
}

/// Lost directories (S-4.8). Each is a problem until a base backup finishes after it was
/// noticed: from then on the backups are whole again, and it is history.
fn lost_directories_report(state: &State, problems: &mut Vec<Problem>) -> Vec<LostDirectoryReport> {
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

/// `$PGBAK/current` as it is on disk, and a problem when it is not what the journal says
/// (S-6.4): someone pointed it elsewhere, or removed it.
fn current_link_on_disk(
    home: &PgbakHome,
    state: &State,
    problems: &mut Vec<Problem>,
) -> Option<String> {
    let on_disk = std::fs::read_link(home.current_link_path())
        .ok()
        .map(|target| target.to_string_lossy().into_owned());
    if let Some((current, _)) = state.current_directory()
        && on_disk.as_deref() != Some(current.to_string().as_str())
    {
        let found = match &on_disk {
            Some(target) => format!("points at {target}"),
            None => "is missing or not a symbolic link".to_owned(),
        };
        problems.push(Problem {
            code: "current_link_wrong",
            message: format!(
                "{} {found}, but the current directory is {current}; the next sync points it \
                 back",
                home.current_link_path().display()
            ),
        });
    }
    on_disk
}

fn conflicts_report(
    home: &PgbakHome,
    max_bytes: u64,
    problems: &mut Vec<Problem>,
) -> ConflictsReport {
    let conflicts = home.conflicts_path();
    let usage = archive::conflicts_usage(home).unwrap_or_else(|error| {
        problems.push(Problem {
            code: "wal_conflicts",
            message: format!("cannot list {}: {error}", conflicts.display()),
        });
        archive::ConflictsUsage::default()
    });
    if usage.files > 0 || usage.not_kept.is_some() {
        let mut message = format!(
            "{} holds {} rejected WAL file(s), {} of its cap of {} (wal.conflicts_max_bytes): \
             PostgreSQL tried to archive files that differ from the archived ones (two servers \
             archiving into one $PGBAK?)",
            conflicts.display(),
            usage.files,
            human_bytes(usage.bytes),
            human_bytes(max_bytes)
        );
        if let Some(not_kept) = &usage.not_kept {
            message.push_str(&format!(
                "; the cap was reached and a rejected file was not kept ({not_kept})"
            ));
        }
        problems.push(Problem {
            code: "wal_conflicts",
            message,
        });
    }
    ConflictsReport {
        files: usage.files,
        bytes: usage.bytes,
        max_bytes,
        cap_reached: usage.not_kept.is_some(),
        not_kept: usage.not_kept,
    }
}

fn disk_report(path: &Path) -> Option<DiskReport> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = u64::from(stats.fragment_size() as u32).max(1);
    Some(DiskReport {
        free_bytes: (stats.blocks_available() as u64).saturating_mul(fragment),
        total_bytes: (stats.blocks() as u64).saturating_mul(fragment),
    })
}

fn script_report(
    home: &PgbakHome,
    state: &State,
    policy: &Policy,
    now: UnixMillis,
    problems: &mut Vec<Problem>,
) -> ScriptReport {
    let path = home.backup_script_path();
    // Follow symlinks: `scripts/backup -> /bin/true` is the seed's local-only setup.
    let metadata = std::fs::metadata(&path).ok();
    let present = metadata.as_ref().is_some_and(|m| m.is_file());
    let executable = present
        && metadata
            .as_ref()
            .is_some_and(|m| m.permissions().mode() & 0o111 != 0)
        && nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_ok();
    if !present {
        problems.push(Problem {
            code: "missing_script",
            message: format!(
                "{} does not exist: nothing is shipped offsite (the local copy is kept); create \
                 it, or symlink it to /bin/true for local-only backups",
                path.display()
            ),
        });
    } else if !executable {
        problems.push(Problem {
            code: "script_not_executable",
            message: format!("{} is not executable: chmod 0700 it", path.display()),
        });
    }
    let script = &state.script;
    // The same bound as the sync's (S-6.5): a clock that stepped back shows no retry "tomorrow".
    let next_retry_at = retry_due_at(
        script.consecutive_failures,
        script.last_failure.as_ref(),
        policy.script_retry,
        now,
        state.sync.map(|session| session.started_at),
    )
    .filter(|_| script.running.is_none())
    .map(time);
    if script.consecutive_failures > 0 {
        let last = script
            .last_failure
            .as_ref()
            .map(|f| last_line(&f.message))
            .unwrap_or_default();
        problems.push(Problem {
            code: "script_failing",
            message: format!(
                "the backup script failed {} time(s) in a row; last: {last}",
                script.consecutive_failures
            ),
        });
    }
    ScriptReport {
        path: path.display().to_string(),
        present,
        executable,
        running: script.running.map(|run| ScriptRunReport {
            directory: run.directory.to_string(),
            current_timestamp: run.current_timestamp.to_string(),
            started_at: time(run.started_at),
        }),
        last_success_at: script.last_success_at.map(time),
        consecutive_failures: script.consecutive_failures,
        next_retry_at,
        last_failure: failure_report(&script.last_failure),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn base_backup_report(
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
            .map(|f| last_line(&f.message))
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

fn sync_report(state: &State, sync_lock_held: bool, problems: &mut Vec<Problem>) -> SyncReport {
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

fn journal_report(
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

/// Builds the report. `opened` is `None` for an unused `$PGBAK`.
pub fn build_report(
    home: &PgbakHome,
    opened: Option<&OpenedJournal>,
    policy: &Policy,
    conflicts_max_bytes: u64,
    now: UnixMillis,
) -> anyhow::Result<StatusReport> {
    let empty = State::default();
    let state = opened.map_or(&empty, |o| o.journal.state());
    let mut problems = Vec::new();
    // First: while any of these stands, `wal` and `sync` refuse to run (S-1.5).
    for insecurity in strict_modes::inspect(home) {
        problems.push(Problem {
            code: "insecure_permissions",
            message: format!("{insecurity}; to repair: {}", insecurity.repair()),
        });
    }
    let journal = opened.map(|o| journal_report(o, state, &mut problems));
    let sync_lock_held = match opened {
        Some(o) => o.lock_file.is_locked_by_other(LockRange::Sync)?,
        None => false,
    };
    let directories = state
        .directories
        .keys()
        .map(|name| directory_report(home, *name, state, &mut problems))
        .collect();
    let lost_directories = lost_directories_report(state, &mut problems);
    let current_link = if opened.is_some() {
        current_link_on_disk(home, state, &mut problems)
    } else {
        None
    };
    let script = script_report(home, state, policy, now, &mut problems);
    let mut base_backup = base_backup_report(state, now, policy, &mut problems);
    if let Some(running) = base_backup.running.as_mut() {
        // Only a count for the run the journal says is running: a file left by a killed sync
        // names another directory (or the same one, dead: then the sync is reported dead).
        let progress = progress::read_progress(home)
            .filter(|progress| progress.directory.to_string() == running.directory);
        running.bytes_read = progress.map(|p| p.bytes_read);
        running.bytes_written = progress.map(|p| p.bytes_written);
    }
    if opened.is_none() {
        // Unused: the first base backup is taken once the first WAL file arrives (S-2.7).
        base_backup.due = None;
        base_backup.next_due_at = None;
    }
    let sync = sync_report(state, sync_lock_held, &mut problems);
    let conflicts = conflicts_report(home, conflicts_max_bytes, &mut problems);
    let disk = disk_report(&home.path);
    if let Some(disk) = &disk
        && (disk.free_bytes < LOW_DISK_BYTES
            || (disk.free_bytes as f64) < LOW_DISK_FRACTION * disk.total_bytes as f64)
    {
        problems.push(Problem {
            code: "low_disk_space",
            message: format!(
                "only {} free of {} on the file system of {}: when it fills, archiving fails \
                 and PostgreSQL keeps its WAL in pg_wal until space is freed",
                human_bytes(disk.free_bytes),
                human_bytes(disk.total_bytes),
                home.path.display()
            ),
        });
    }
    Ok(StatusReport {
        schema: SCHEMA_NAME,
        schema_version: SCHEMA_VERSION,
        pgbak_version: env!("CARGO_PKG_VERSION"),
        pgbak_directory: home.path.display().to_string(),
        generated_at: time(now),
        journal,
        current: state.current_directory().map(|(name, _)| name.to_string()),
        current_link,
        system_identifier: state.system_identifier.map(|id| id.to_string()),
        directories,
        lost_directories,
        wal: WalReport {
            archived_count: state.wal.archived_count,
            last_archived: state.wal.last_archived.as_ref().map(|w| w.to_string()),
            last_archived_at: state.wal.last_archived_at.map(time),
        },
        sync,
        base_backup,
        script,
        disk,
        conflicts,
        everything_shipped: state.everything_shipped(),
        problems,
    })
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The human rendering: one section per part of S-6.4, problems last.
pub fn render_human(report: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "pgbak {} status of {} at {}",
        report.pgbak_version, report.pgbak_directory, report.generated_at
    )?;
    match &report.journal {
        None => {
            writeln!(
                out,
                "\n{} is unused: no journal, nothing archived, no backup directories.",
                report.pgbak_directory
            )?;
            writeln!(
                out,
                "Set archive_command = 'pgbak wal %p' (see `pgbak init`) and restart PostgreSQL."
            )?;
        }
        Some(journal) => {
            writeln!(
                out,
                "\njournal      {}: {} records replayed, {}",
                journal.path,
                journal.records,
                human_bytes(journal.file_bytes)
            )?;
            match (&journal.repair, &journal.repaired_at) {
                (Some(created), Some(at)) if journal.health == "intact" => {
                    writeln!(out, "             intact ({created}; at {at})")?;
                }
                (Some(repair), Some(at)) => {
                    let when = if journal.repaired_now {
                        "just now"
                    } else {
                        "earlier"
                    };
                    writeln!(
                        out,
                        "             {} ({when}, at {at}): {repair}",
                        journal.health.to_uppercase().replace('_', " ")
                    )?;
                }
                _ => writeln!(out, "             intact")?,
            }
            if let Some(copy) = &journal.damaged_copy {
                writeln!(out, "             the damaged journal was kept as {copy}")?;
            }
        }
    }

    writeln!(
        out,
        "\ndirectories  (oldest first; current: {})",
        report.current.as_deref().unwrap_or("none yet")
    )?;
    if report.directories.is_empty() {
        writeln!(out, "             none")?;
    }
    for d in &report.directories {
        let base = match d.base_bytes {
            Some(bytes) => format!("base {}", human_bytes(bytes)),
            None => "no base yet".to_owned(),
        };
        let range = match (&d.first_wal, &d.last_wal) {
            (Some(first), Some(last)) if first != last => format!(" ({first} … {last})"),
            (Some(first), _) => format!(" ({first})"),
            _ => String::new(),
        };
        writeln!(
            out,
            "  {}  {:<8} {}, {} WAL files, {}{range}",
            d.name,
            d.state,
            base,
            d.wal_files,
            human_bytes(d.wal_bytes)
        )?;
        let shipped = match (&d.shipped_through, &d.shipped_at) {
            (Some(through), Some(at)) => format!("shipped through {through} (at {at})"),
            _ => "never shipped".to_owned(),
        };
        let shipping = match d.state {
            "pending" => "not shipped until its base backup is complete".to_owned(),
            "failed" => "base backup failed; removed by the next sync".to_owned(),
            _ if d.unshipped_changes == 0 => format!("{shipped}; up to date"),
            _ => format!(
                "{shipped}; {} new file(s) not yet shipped",
                d.unshipped_changes
            ),
        };
        writeln!(out, "                    {shipping}")?;
        if let Some([lowest, highest]) = d.timelines.filter(|[l, h]| h > l) {
            writeln!(
                out,
                "                    spans timelines {lowest} to {highest}: restore with \
                 archive recovery and recovery_target_timeline = 'latest'"
            )?;
        }
    }
    if let Some(current) = &report.current
        && report.current_link.as_deref() != Some(current.as_str())
    {
        writeln!(
            out,
            "  current -> {} (to be switched to {current})",
            report.current_link.as_deref().unwrap_or("nothing")
        )?;
    }
    for lost in &report.lost_directories {
        writeln!(
            out,
            "  {}  lost     vanished from disk (noticed at {}); {} WAL file(s){}",
            lost.name,
            lost.noticed_at,
            lost.wal_files,
            if lost.shipped {
                ", all shipped"
            } else {
                ", not all shipped"
            }
        )?;
    }
    if let Some(id) = &report.system_identifier {
        writeln!(out, "\ncluster      system identifier {id}")?;
    }

    writeln!(
        out,
        "\nwal          {} archived; last {} at {}",
        report.wal.archived_count,
        report.wal.last_archived.as_deref().unwrap_or("none"),
        report.wal.last_archived_at.as_deref().unwrap_or("-")
    )?;

    let sync = &report.sync;
    if sync.running {
        writeln!(
            out,
            "\nsync         running (pid {}, since {})",
            sync.pid.map_or("?".into(), |p| p.to_string()),
            sync.since.as_deref().unwrap_or("?")
        )?;
    } else if sync.died {
        writeln!(
            out,
            "\nsync         not running; process {} died without stopping",
            sync.pid.map_or("?".into(), |p| p.to_string())
        )?;
    } else {
        let last = sync
            .last_end
            .as_ref()
            .map_or("never ran".to_owned(), |end| {
                format!("last ended {} at {} (pid {})", end.reason, end.at, end.pid)
            });
        writeln!(out, "\nsync         not running; {last}")?;
    }
    for doing in &sync.doing {
        writeln!(out, "             {doing}")?;
    }

    let base = &report.base_backup;
    match (&base.running, base.due) {
        (Some(running), _) => writeln!(
            out,
            "\nbase backup  running into {} since {} (attempt {}): {} read from pg_basebackup, \
             {} written",
            running.directory,
            running.started_at,
            running.attempt,
            running.bytes_read.map_or("? bytes".to_owned(), human_bytes),
            running
                .bytes_written
                .map_or("? bytes".to_owned(), human_bytes)
        )?,
        (None, Some(due)) => writeln!(out, "\nbase backup  due now ({})", due.replace('_', " "))?,
        (None, None) => writeln!(
            out,
            "\nbase backup  next due {}",
            base.next_due_at
                .as_deref()
                .unwrap_or("when the first WAL file arrives")
        )?,
    }
    if let Some(at) = &base.last_success_at {
        writeln!(out, "             last success at {at}")?;
    }
    if base.consecutive_failures > 0 {
        writeln!(
            out,
            "             {} consecutive failure(s); next attempt at {}",
            base.consecutive_failures,
            base.next_retry_at.as_deref().unwrap_or("once running")
        )?;
    }
    write_failure(out, &base.last_failure)?;

    let script = &report.script;
    writeln!(
        out,
        "\nscript       {}{}",
        script.path,
        if !script.present {
            " (missing)"
        } else if !script.executable {
            " (not executable)"
        } else {
            ""
        }
    )?;
    if let Some(run) = &script.running {
        writeln!(
            out,
            "             running for {} (current timestamp {}) since {}",
            run.directory, run.current_timestamp, run.started_at
        )?;
    }
    writeln!(
        out,
        "             last success: {}",
        script.last_success_at.as_deref().unwrap_or("never")
    )?;
    if script.consecutive_failures > 0 {
        writeln!(
            out,
            "             {} consecutive failure(s); next retry at {}",
            script.consecutive_failures,
            script.next_retry_at.as_deref().unwrap_or("once running")
        )?;
    }
    write_failure(out, &script.last_failure)?;

    if let Some(disk) = &report.disk {
        writeln!(
            out,
            "\ndisk         {} free of {}",
            human_bytes(disk.free_bytes),
            human_bytes(disk.total_bytes)
        )?;
    }
    let conflicts = &report.conflicts;
    if conflicts.files > 0 || conflicts.cap_reached {
        writeln!(
            out,
            "\nconflicts    {} rejected file(s), {} of {}{}",
            conflicts.files,
            human_bytes(conflicts.bytes),
            human_bytes(conflicts.max_bytes),
            if conflicts.cap_reached {
                "; cap reached, a rejected file was not kept"
            } else {
                ""
            }
        )?;
    }
    let shipped = match (report.wal.archived_count, report.everything_shipped) {
        (0, _) if report.directories.is_empty() => "nothing archived yet",
        (_, true) => "everything archived has been shipped",
        (_, false) => "NOT everything archived has been shipped yet",
    };
    writeln!(out, "\nshipped      {shipped}")?;

    if report.problems.is_empty() {
        writeln!(out, "\nproblems     none")?;
    } else {
        writeln!(out, "\nproblems")?;
        for problem in &report.problems {
            writeln!(out, "  - {}: {}", problem.code, problem.message)?;
        }
    }
    Ok(())
}

fn write_failure(out: &mut dyn Write, failure: &Option<FailureReport>) -> std::io::Result<()> {
    if let Some(failure) = failure {
        writeln!(out, "             last failure at {}:", failure.at)?;
        let lines: Vec<&str> = failure.output.lines().collect();
        for line in &lines[lines.len().saturating_sub(10)..] {
            writeln!(out, "               | {line}")?;
        }
    }
    Ok(())
}

/// `status --journal`: the records, decoded, one per line, newest last.
fn render_journal(opened: &OpenedJournal, out: &mut dyn Write) -> anyhow::Result<()> {
    let decoded = journal_file::decode_journal(opened)?;
    writeln!(
        out,
        "# journal {}: {} bytes, id {:016x}, generation {}, log from offset {}, first record {}",
        opened.lock_file.path().display(),
        decoded.file_bytes,
        decoded.journal_id,
        decoded.generation,
        decoded.log_start,
        decoded.first_seq
    )?;
    writeln!(out, "# seq offset time kind details")?;
    for record in &decoded.records {
        let (at, kind, details) = match &record.record {
            Record::Checkpoint(state) => (
                "-".to_owned(),
                "Checkpoint",
                format!(
                    "{} directories, {} WAL files archived",
                    state.directories.len(),
                    state.wal.archived_count
                ),
            ),
            Record::Event(event) => (
                event.at().to_rfc3339(),
                event.kind().name(),
                serde_json::to_string(event).context("encoding a record as JSON")?,
            ),
        };
        writeln!(
            out,
            "{} {} {at} {kind} {details}",
            record.seq, record.offset
        )?;
    }
    if let Some(stop) = &decoded.stopped {
        let what = match stop.kind {
            StopKind::TornTail => "a torn tail",
            StopKind::Damage => "damage",
        };
        writeln!(
            out,
            "# stopped at offset {} (expected record {}): {what}: {}",
            stop.offset, stop.expected_seq, stop.detail
        )?;
    }
    Ok(())
}

pub fn run(home: &PgbakHome, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    let config = config::load(&home.config_path())?;
    let policy = config.machine_policy();
    let now = journal_file::now();
    if journal_file::is_unused(home)? {
        if format == Format::Journal {
            writeln!(
                out,
                "# no journal: {} is unused (nothing archived yet)",
                home.path.display()
            )?;
            return Ok(());
        }
        let report = build_report(home, None, &policy, config.wal.conflicts_max_bytes, now)?;
        return print(&report, format, out);
    }
    let opened = journal_file::open_journal(home, now)?;
    if format == Format::Journal {
        return render_journal(&opened, out);
    }
    let report = build_report(
        home,
        Some(&opened),
        &policy,
        config.wal.conflicts_max_bytes,
        now,
    )?;
    print(&report, format, out)
}

fn print(report: &StatusReport, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report).context("writing the JSON report")?;
            writeln!(out)?;
        }
        _ => render_human(report, out)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    #[test]
    fn the_segment_size_of_a_file_of_several_frames_is_their_sum() {
        // S-2.2: a stored segment may be several zstd frames; the first one's content size is
        // only a part of the segment, and taking it for the segment size invents WAL gaps.
        let scratch = ScratchDirectory::new("status-multi-frame");
        let wal = scratch.0.join(tree_scan::WAL_DIRECTORY_NAME);
        std::fs::create_dir(&wal).unwrap();
        let half = vec![7u8; 8 << 20];
        let mut file = zstd::bulk::compress(&half, 1).unwrap();
        file.extend_from_slice(&zstd::bulk::compress(&half, 1).unwrap());
        std::fs::write(wal.join("0000000100000000000000FF.zst"), &file).unwrap();
        let files = tree_scan::stored_wal_files(&scratch.0).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(segment_bytes(&scratch.0, &files), 16 << 20);
    }
}
