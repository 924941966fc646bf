//! Printing the status report for people, and `status --journal`'s record listing.
//!
//! Invariant: prints only what the [`StatusReport`] holds, so the human rendering and `--json`
//! never disagree; reads nothing itself.

use super::FailureReport;
use super::RetentionReport;
use super::StatusReport;
use super::error::ReportError;
use crate::home::journal_file;
use crate::home::journal_file::OpenedJournal;
use crate::journal::DecodedJournal;
use crate::journal::Record;
use crate::journal::StopKind;
use crate::machine::{Event, State};
use std::io::Write;

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
/// S-8.3: retention's line, what it would delete next, and the prune script.
fn render_retention(retention: &RetentionReport, out: &mut dyn Write) -> std::io::Result<()> {
    if retention.keep_bases == 0 {
        writeln!(
            out,
            "\nretention    off (retention.keep_bases = 0): nothing is ever deleted"
        )?;
    } else {
        writeln!(
            out,
            "\nretention    keep {} base backup(s)",
            retention.keep_bases
        )?;
        if retention.would_delete.is_empty() {
            writeln!(out, "             would delete next: nothing")?;
        } else {
            let names: Vec<&str> = retention
                .would_delete
                .iter()
                .map(|candidate| candidate.name.as_str())
                .collect();
            writeln!(
                out,
                "             would delete next: {} ({} freed{})",
                names.join(", "),
                retention
                    .bytes_freed
                    .map_or("unknown".to_owned(), human_bytes),
                retention
                    .free_bytes_after
                    .map_or(String::new(), |free| format!(
                        ", {} free after",
                        human_bytes(free)
                    ))
            )?;
        }
    }
    for pruning in &retention.in_progress {
        writeln!(out, "             being pruned: {pruning}")?;
    }
    if let Some(last) = &retention.last_pruned {
        writeln!(
            out,
            "             pruned so far: {} (last {last} at {})",
            retention.pruned_count,
            retention.last_pruned_at.as_deref().unwrap_or("?")
        )?;
    }
    let script = &retention.prune_script;
    if script.present || !script.owed.is_empty() {
        writeln!(
            out,
            "             prune script {}{}",
            script.path,
            if script.present { "" } else { " (missing)" }
        )?;
        if !script.owed.is_empty() {
            writeln!(out, "             owed for: {}", script.owed.join(", "))?;
        }
        if script.consecutive_failures > 0 {
            writeln!(
                out,
                "             {} consecutive failure(s); next retry at {}",
                script.consecutive_failures,
                script.next_retry_at.as_deref().unwrap_or("once running")
            )?;
        }
        write_failure(out, &script.last_failure)?;
    }
    Ok(())
}

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

    render_retention(&report.retention, out)?;

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

pub(super) fn write_failure(
    out: &mut dyn Write,
    failure: &Option<FailureReport>,
) -> std::io::Result<()> {
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
pub fn render_journal(opened: &OpenedJournal, out: &mut dyn Write) -> Result<(), ReportError> {
    let decoded = journal_file::decode_journal(opened)?;
    // Every line is made first, so an encoding failure and a write failure stay apart.
    let mut lines = Vec::with_capacity(decoded.records.len());
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
                serde_json::to_string(event).map_err(|source| ReportError::EncodeRecord {
                    seq: record.seq,
                    source,
                })?,
            ),
        };
        lines.push(format!(
            "{} {} {at} {kind} {details}",
            record.seq, record.offset
        ));
    }
    write_journal(opened, &decoded, &lines, out).map_err(ReportError::write("journal listing"))
}

fn write_journal(
    opened: &OpenedJournal,
    decoded: &DecodedJournal<State, Event>,
    lines: &[String],
    out: &mut dyn Write,
) -> std::io::Result<()> {
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
    for line in lines {
        writeln!(out, "{line}")?;
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
