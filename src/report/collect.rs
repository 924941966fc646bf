//! Collecting the status report: one replay of the journal plus a look at the tree and the
//! file system (stored segment sizes from zstd headers, the `current` link, `conflicts/`,
//! `statvfs`, the backup script, the base backup's progress file), and [`build_report`],
//! which puts every part together.
//!
//! Invariant: reads only; never creates, repairs or removes anything (opening the journal,
//! done by the caller, is the one step that may repair it, and that is recorded).

use super::ConflictsReport;
use super::DirectoryReport;
use super::DiskReport;
use super::GapReport;
use super::Problem;
use super::SCHEMA_NAME;
use super::SCHEMA_VERSION;
use super::ScriptReport;
use super::ScriptRunReport;
use super::StatusReport;
use super::WalReport;
use super::analyse::base_backup_report;
use super::analyse::failure_report;
use super::analyse::journal_report;
use super::analyse::lost_directories_report;
use super::analyse::phase_label;
use super::analyse::sync_report;
use super::analyse::time;
use super::error::ReportError;
use super::render::human_bytes;
use crate::archive;
use crate::home::environment::PgbakHome;
use crate::home::journal_file::OpenedJournal;
use crate::home::names::BASE_FILE_NAME;
use crate::home::names::WAL_DIRECTORY_NAME;
use crate::home::strict_modes;
use crate::home::tree_scan;
use crate::machine::{DirectoryPhase, Policy, State, retry_due_at};
use crate::os::lock::LockRange;
use crate::sync::base_backup::progress;
use crate::sync::log::last_line;
use crate::timestamp::{DirectoryName, UnixMillis};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Free space below which `status` warns (S-8.5): 5 % of the file system or 1 GiB.
pub(super) const LOW_DISK_FRACTION: f64 = 0.05;
pub(super) const LOW_DISK_BYTES: u64 = 1 << 30;

/// PostgreSQL's default WAL segment size, used when no stored segment tells us the real one.
pub(super) const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// The WAL segment size of a directory, from the content sizes a stored segment's zstd frame
/// headers record (S-2.2); the default when there is none to read.
pub(super) fn segment_bytes(
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
        .join(WAL_DIRECTORY_NAME)
        .join(name.compressed_name());
    // Every frame's content size, summed: a stored file may be several frames (S-2.2).
    match archive::stored_content_bytes(&path) {
        Ok(Some(size)) if size.is_power_of_two() => size,
        _ => DEFAULT_SEGMENT_BYTES,
    }
}

pub(super) fn directory_report(
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
                message: format!(
                    "{name}: cannot list its WAL files to look for gaps: {}",
                    crate::error::one_line(&error)
                ),
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

/// `$PGBAK/current` as it is on disk, and a problem when it is not what the journal says
/// (S-6.4): someone pointed it elsewhere, or removed it.
pub(super) fn current_link_on_disk(
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

pub(super) fn conflicts_report(
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

pub(super) fn disk_report(path: &Path) -> Option<DiskReport> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = u64::from(stats.fragment_size() as u32).max(1);
    Some(DiskReport {
        free_bytes: (stats.blocks_available() as u64).saturating_mul(fragment),
        total_bytes: (stats.blocks() as u64).saturating_mul(fragment),
    })
}

pub(super) fn script_report(
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
            .map(|f| last_line(&f.message).trim().to_owned())
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

/// Builds the report. `opened` is `None` for an unused `$PGBAK`.
pub fn build_report(
    home: &PgbakHome,
    opened: Option<&OpenedJournal>,
    policy: &Policy,
    conflicts_max_bytes: u64,
    now: UnixMillis,
) -> Result<StatusReport, ReportError> {
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
    let retention =
        super::retention::retention_report(home, state, policy, disk.as_ref(), now, &mut problems);
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
        retention,
        everything_shipped: state.everything_shipped(),
        problems,
    })
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
        let wal = scratch.0.join(WAL_DIRECTORY_NAME);
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
