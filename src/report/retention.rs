//! The retention part of the status report (S-8.3): what `retention.keep_bases` would delete
//! next and the free space after it, prunes under way, and `scripts/prune`'s state.
//!
//! Owns: [`retention_report`]. Invariant: reads only; what it calls "next" is exactly what the
//! sync would prune, because it asks the machine's own [`prune_candidates`].

use super::Problem;
use super::analyse::{failure_report, phase_label, time};
use super::model::{DiskReport, PruneCandidateReport, PruneScriptReport, RetentionReport};
use crate::home::environment::PgbakHome;
use crate::home::tree_scan;
use crate::machine::{Policy, State, prune_candidates, retry_due_at};
use crate::sync::log::last_line;
use crate::timestamp::UnixMillis;

pub(super) fn retention_report(
    home: &PgbakHome,
    state: &State,
    policy: &Policy,
    disk: Option<&DiskReport>,
    now: UnixMillis,
    problems: &mut Vec<Problem>,
) -> RetentionReport {
    let candidates = prune_candidates(state, policy.keep_bases);
    let would_delete: Vec<PruneCandidateReport> = candidates
        .iter()
        .map(|name| {
            let directory = &state.directories[name];
            PruneCandidateReport {
                name: name.to_string(),
                base_finished_at: directory.base.map(|base| time(base.finished_at)),
                wal_files: directory.wal_files,
            }
        })
        .collect();
    // Unknown when the tree cannot be read: the report says so rather than guess.
    let bytes_freed = tree_scan::bytes_freed_by_removing(&home.path, &candidates).ok();
    let free_bytes_after = disk
        .zip(bytes_freed)
        .map(|(disk, freed)| disk.free_bytes.saturating_add(freed));
    let in_progress = state
        .directories
        .iter()
        .filter(|(_, d)| d.phase.is_being_pruned())
        .map(|(name, d)| format!("{name} ({})", phase_label(d.phase)))
        .collect();
    let retention = &state.retention;
    if retention.prune_script_failures > 0 {
        let last = retention
            .prune_script_last_failure
            .as_ref()
            .map(|f| last_line(&f.message).trim().to_owned())
            .unwrap_or_default();
        problems.push(Problem {
            code: "prune_script_failing",
            message: format!(
                "the prune script failed {} time(s) in a row; {} pruned director(ies) still \
                 wait for it offsite; last: {last}",
                retention.prune_script_failures,
                retention.offsite_pending.len()
            ),
        });
    }
    let prune_script_path = home.prune_script_path();
    RetentionReport {
        keep_bases: policy.keep_bases,
        would_delete,
        bytes_freed,
        free_bytes_after,
        in_progress,
        pruned_count: retention.pruned_count,
        last_pruned: retention.last_pruned.map(|(name, _)| name.to_string()),
        last_pruned_at: retention.last_pruned.map(|(_, at)| time(at)),
        prune_script: PruneScriptReport {
            present: std::fs::symlink_metadata(&prune_script_path).is_ok(),
            path: prune_script_path.display().to_string(),
            owed: retention
                .offsite_pending
                .iter()
                .map(|name| name.to_string())
                .collect(),
            consecutive_failures: retention.prune_script_failures,
            next_retry_at: retry_due_at(
                retention.prune_script_failures,
                retention.prune_script_last_failure.as_ref(),
                policy.script_retry,
                now,
                state.sync.map(|session| session.started_at),
            )
            .map(time),
            last_success_at: retention.prune_script_last_success_at.map(time),
            last_failure: failure_report(&retention.prune_script_last_failure),
        },
    }
}
