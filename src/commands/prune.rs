//! `pgbak prune [--keep N] [--dry-run]` (S-8.3): retention on demand.
//!
//! Owns: [`PruneRequest`], [`run`] and [`PruneError`]. Pruning is the sync's work, so the
//! command is a foreground sync (the sync lock, one session, everything recorded in the journal
//! like any sync, S-3.2) whose `retention.keep_bases` is `--keep` when given: the machine's
//! `prune_candidates` decides what goes, under the same rules as the sync after a base backup,
//! and a prune a crashed sync left half done is finished first. Like `pgbak sync`, it also does
//! whatever else is due (a base backup, the backup script).
//!
//! `--dry-run` only reads the journal (under its shared lock) and the tree: it prints what would
//! be deleted, oldest first, the space that frees and the free space after, and changes
//! nothing.
//!
//! Invariant: nothing is deleted here but through the machine's actions; with `keep` 0 (no
//! `--keep`, retention off in the config) the command refuses rather than do a plain sync.

use crate::commands::sync::SyncError;
use crate::config;
use crate::hint::OperatorHint;
use crate::home::environment::PgbakHome;
use crate::home::journal_file;
use crate::home::tree_scan;
use crate::machine::{State, prune_candidates};
use crate::os::lock::LockFile;
use crate::report::human_bytes;
use crate::sync::session::{self, SyncEnded, SyncOptions};
use std::io::Write;

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneRequest {
    /// `--keep N`: overrides `retention.keep_bases`.
    pub keep: Option<u32>,
    /// `--dry-run`: say what would go, change nothing.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("prune: retention is off (retention.keep_bases = 0) and no --keep was given")]
    NothingToKeep,
    #[error("prune: --keep 0 would keep no base backup")]
    KeepZero,
    #[error("prune: cannot measure what pruning frees")]
    Measure {
        #[source]
        source: tree_scan::ScanError,
    },
    #[error("prune: cannot write the result")]
    Output {
        #[source]
        source: std::io::Error,
    },
}

impl OperatorHint for PruneError {
    fn hint(&self) -> Option<String> {
        match self {
            PruneError::NothingToKeep | PruneError::KeepZero => Some(
                "say how many base backups to keep: pgbak prune --keep N (N >= 1), or set \
                 [retention] keep_bases = N in $PGBAK/config.toml"
                    .into(),
            ),
            PruneError::Measure { .. } | PruneError::Output { .. } => None,
        }
    }
}

/// The journal's state, read under the shared journal lock; an unused `$PGBAK` has none.
fn read_state(home: &PgbakHome) -> Result<State, crate::Error> {
    let lock_file = LockFile::open(&home.lock_file_path())?;
    Ok(journal_file::inspect_journal(&lock_file)?
        .state
        .unwrap_or_default())
}

/// Runs the command; see the module header.
pub fn run(
    home: &PgbakHome,
    request: PruneRequest,
    out: &mut dyn Write,
) -> Result<(), crate::Error> {
    let mut config = config::load(&home.config_path())?;
    let keep = match (request.keep, config.retention.keep_bases) {
        (Some(0), _) => return Err(PruneError::KeepZero.into()),
        (Some(keep), _) => keep,
        (None, 0) => return Err(PruneError::NothingToKeep.into()),
        (None, keep) => keep,
    };
    let before = read_state(home)?;
    let candidates = prune_candidates(&before, keep);
    let output = |source| PruneError::Output { source };
    if request.dry_run {
        let freed = tree_scan::bytes_freed_by_removing(&home.path, &candidates)
            .map_err(|source| PruneError::Measure { source })?;
        print_plan(home, &before, keep, &candidates, freed, out).map_err(output)?;
        return Ok(());
    }
    config.retention.keep_bases = keep;
    let options = SyncOptions::default();
    match session::run_sync(home, &config, options)? {
        SyncEnded::Finished | SyncEnded::AnotherSyncRuns => {}
        SyncEnded::Interrupted { signal } => return Err(SyncError::Interrupted { signal }.into()),
        SyncEnded::InterruptedWhileWaiting { signal } => {
            return Err(SyncError::InterruptedWhileWaiting { signal }.into());
        }
    }
    let after = read_state(home)?;
    let pruned: Vec<String> = before
        .directories
        .keys()
        .filter(|name| !after.directories.contains_key(name))
        .map(|name| name.to_string())
        .collect();
    if pruned.is_empty() {
        writeln!(out, "nothing to prune: keeping {keep} base backup(s)").map_err(output)?;
    } else {
        writeln!(out, "pruned {}", pruned.join(", ")).map_err(output)?;
    }
    Ok(())
}

/// `--dry-run`'s report.
fn print_plan(
    home: &PgbakHome,
    state: &State,
    keep: u32,
    candidates: &[crate::timestamp::DirectoryName],
    freed: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let resuming: Vec<String> = state
        .directories
        .iter()
        .filter(|(_, d)| d.phase.is_being_pruned())
        .map(|(name, _)| name.to_string())
        .collect();
    if !resuming.is_empty() {
        writeln!(
            out,
            "being pruned already (the next sync finishes it): {}",
            resuming.join(", ")
        )?;
    }
    if candidates.is_empty() {
        writeln!(
            out,
            "would delete nothing: keeping {keep} base backup(s); only sealed directories the \
             backup script shipped whole, beyond the newest {keep}, are deleted"
        )?;
        return Ok(());
    }
    for name in candidates {
        writeln!(out, "would delete {}", home.directory_path(*name).display())?;
    }
    let free = nix::sys::statvfs::statvfs(&home.path).ok().map(|stats| {
        let fragment = u64::from(stats.fragment_size() as u32).max(1);
        stats.blocks_available().saturating_mul(fragment)
    });
    match free {
        Some(free) => writeln!(
            out,
            "would free {} ({} free after)",
            human_bytes(freed),
            human_bytes(free.saturating_add(freed))
        ),
        None => writeln!(out, "would free {}", human_bytes(freed)),
    }
}
