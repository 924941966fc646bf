//! The status report's shape: [`StatusReport`] and its parts, which are both the `--json`
//! schema (version [`SCHEMA_VERSION`], documented in the README) and what the human rendering
//! prints (S-6.4).
//!
//! Invariant: plain data, built once by `collect` and printed by `render`, so the two
//! renderings never disagree. A change of a field's meaning bumps [`SCHEMA_VERSION`].

use serde::Serialize;

/// `status --json`'s schema name and version (README, "status --json schema").
pub const SCHEMA_NAME: &str = "pgbak.status";
pub const SCHEMA_VERSION: u32 = 1;

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
    pub retention: RetentionReport,
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

/// Retention (S-8.3): `retention.keep_bases`, what it would delete next, and the prune script.
#[derive(Debug, Serialize)]
pub struct RetentionReport {
    /// 0: retention is off, nothing is ever deleted.
    pub keep_bases: u32,
    /// What the sync (or `pgbak prune`) would delete now, oldest first.
    pub would_delete: Vec<PruneCandidateReport>,
    /// Bytes on disk those deletions free (files linked into a kept directory excluded).
    pub bytes_freed: Option<u64>,
    /// The free space after them.
    pub free_bytes_after: Option<u64>,
    /// Directories being pruned now (a sync resumes them), with their step.
    pub in_progress: Vec<String>,
    pub pruned_count: u64,
    pub last_pruned: Option<String>,
    pub last_pruned_at: Option<String>,
    pub prune_script: PruneScriptReport,
}

#[derive(Debug, Serialize)]
pub struct PruneCandidateReport {
    pub name: String,
    pub base_finished_at: Option<String>,
    pub wal_files: u64,
}

/// `$PGBAK/scripts/prune` (S-8.3).
#[derive(Debug, Serialize)]
pub struct PruneScriptReport {
    pub path: String,
    pub present: bool,
    /// Pruned directories it has not yet succeeded for, oldest first.
    pub owed: Vec<String>,
    pub consecutive_failures: u32,
    pub next_retry_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_failure: Option<FailureReport>,
}

#[derive(Debug, Serialize)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
}
