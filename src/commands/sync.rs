//! `pgbak sync [--base] [--background]` and `pgbak force-sync` (S-6.1, S-6.2, S-2.8).
//!
//! Owns: [`SyncRequest`], [`run`] and [`SyncError`]. The loop itself is
//! [`crate::sync::session`]; this module loads the configuration, runs the loop, and turns
//! how it ended into the command's result:
//!
//! - finished (nothing pending, due, running or being retried), or, for `--background`,
//!   another sync already runs: `Ok` (exit 0);
//! - stopped by SIGTERM, SIGINT or SIGHUP: [`SyncError::Interrupted`] (exit 1). The stop is
//!   clean — running work was stopped and recorded as failed, then `SyncStopped{Interrupted}`
//!   — and the next sync resumes; the non-zero status tells a script or systemd that the work
//!   asked for was not completed;
//! - an error (e.g. the journal cannot be written): `Err` (exit 1), also in `sync.log`;
//! - finished in the foreground with a base backup still due because the server cannot be
//!   reached (S-6.6): [`SyncError::BaseBackupUnreachable`] (exit 1).
//!
//! `sync` and `force-sync` wait for a running sync first (S-6.1); `--background` (what
//! `pgbak wal` starts, S-2.8) never waits: one sync at a time is enough. All of them run until
//! everything succeeded, retrying a failing script forever with backoff (S-5.3).

use crate::config;
use crate::hint::OperatorHint;
use crate::home::environment::PgbakHome;
use crate::home::journal_file;
use crate::machine::base_backup_due;
use crate::os::clock;
use crate::os::lock::LockFile;
use crate::sync::log::last_line;
use crate::sync::session::{self, SyncEnded, SyncOptions};
use nix::sys::signal::Signal;

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncRequest {
    /// `force-sync`: run the script for the current directory even if nothing is new.
    pub force_script: bool,
    /// `sync --base`: take a base backup now (S-4.2).
    pub force_base: bool,
    /// `sync --background`: started by `pgbak wal`; exit quietly if a sync runs.
    pub background: bool,
}

/// How a sync can end without succeeding, besides an error of a lower layer.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(
        "sync: interrupted by {signal}; running work was stopped and recorded, and the next \
         sync resumes it"
    )]
    Interrupted { signal: Signal },
    #[error("sync: interrupted by {signal} while waiting for the running sync; nothing was done")]
    InterruptedWhileWaiting { signal: Signal },
    #[error("sync: everything else is done, but the base backup cannot reach the server ({last})")]
    BaseBackupUnreachable { last: String },
}

impl OperatorHint for SyncError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            SyncError::BaseBackupUnreachable { .. } => {
                "start PostgreSQL (or fix [pg_basebackup] host and port in $PGBAK/config.toml); \
                 the next pgbak wal or pgbak sync retries the base backup"
                    .into()
            }
            _ => "run pgbak sync again to finish the work (or let the next pgbak wal start it); \
                  pgbak status shows what is left"
                .into(),
        })
    }
}

/// A foreground sync that finished with a base backup still due because the server cannot be
/// reached (S-6.6) did not do what it was asked: say so. The background sync just exits; the
/// next `wal` starts another.
fn check_base_backup_reached(
    home: &PgbakHome,
    config: &config::Config,
) -> Result<(), crate::Error> {
    let lock_file = LockFile::open(&home.lock_file_path())?;
    let Some(state) = journal_file::inspect_journal(&lock_file)?.state else {
        return Ok(());
    };
    let due = base_backup_due(&state, clock::now(), &config.machine_policy());
    if state.base_backup_server_unreachable && due.is_some() {
        let last = state
            .base_backup
            .last_failure
            .as_ref()
            .map(|failure| last_line(&failure.message).trim().to_owned())
            .unwrap_or_default();
        return Err(SyncError::BaseBackupUnreachable { last }.into());
    }
    Ok(())
}

/// Runs the sync loop for `request`; see the module header for the outcomes.
pub fn run(home: &PgbakHome, request: SyncRequest) -> Result<(), crate::Error> {
    let config = config::load(&home.config_path())?;
    let options = SyncOptions {
        force_script: request.force_script,
        force_base: request.force_base,
        background: request.background,
    };
    match session::run_sync(home, &config, options)? {
        SyncEnded::Finished if !request.background => check_base_backup_reached(home, &config),
        SyncEnded::Finished | SyncEnded::AnotherSyncRuns => Ok(()),
        SyncEnded::Interrupted { signal } => Err(SyncError::Interrupted { signal }.into()),
        SyncEnded::InterruptedWhileWaiting { signal } => {
            Err(SyncError::InterruptedWhileWaiting { signal }.into())
        }
    }
}
