//! `pgbak wal PATH`, PostgreSQL's `archive_command` (S-2): archive one file, then make sure a
//! sync runs (S-2.8).
//!
//! Owns: [`run`] and [`start_background_sync`].
//!
//! Invariants kept:
//! - `run` returns `Ok` only after the ack point of S-2.3 (file, directory entry and journal
//!   record durable); every failure is an `Err`, which `main.rs` turns into exit status 1
//!   (S-2.5).
//! - Nothing after the ack can fail the call: a sync that cannot be started is reported on
//!   stderr and left to the next `wal` (S-2.6: the local copy is the first line of defence).
//! - `wal` never waits for the sync (S-2.6, S-2.8): the child is started in its own session,
//!   with `/dev/null` as stdin, stdout and stderr and every other inherited descriptor closed
//!   at exec, and is not waited for. PostgreSQL's archiver gets its exit status at once and no
//!   pipe of its stays open in the child; when `wal` exits, init adopts and reaps the child.

use std::io;
use std::path::Path;
use std::process::Command;

use crate::archive;
use crate::config;
use crate::home::environment::{PGBAK_VARIABLE, PgbakHome};
use crate::os::clock;
use crate::os::detach;
use crate::os::lock::{LockError, LockFile, LockRange};

/// Why no background sync was started after the ack (reported on stderr, never an exit 1).
#[derive(Debug, thiserror::Error)]
pub enum BackgroundSyncError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot start `pgbak sync --background`")]
    Spawn {
        #[source]
        source: io::Error,
    },
}

/// The arguments of the background sync `wal` starts (S-2.8). `sync --background` takes the
/// sync lock with a try-lock and exits 0 quietly if another sync holds it, so two `wal` calls
/// racing here start at most one running sync.
pub const BACKGROUND_SYNC_ARGUMENTS: [&str; 2] = ["sync", "--background"];

/// Archives `source` (S-2.1 – S-2.7), then starts a background sync if `sync.autostart` is on
/// and none runs (S-2.8).
pub fn run(home: &PgbakHome, source: &Path) -> Result<(), crate::Error> {
    // The WAL file is mapped, not copied: a truncation under us must exit 1, not kill us.
    archive::guard_against_truncation();
    let config = config::load(&home.config_path())?;
    let outcome = archive::archive_wal(home, &config, source, clock::now())?;
    if config.sync.autostart {
        if let Err(error) = start_sync_unless_running(home) {
            // After the ack: say so in PostgreSQL's log, but succeed (S-2.6).
            eprintln!(
                "pgbak: wal {}: archived, but no background sync could be started: {}",
                outcome.file,
                crate::error::one_line(&error)
            );
        }
    }
    Ok(())
}

/// Starts a background sync unless the sync lock is held (a sync runs).
fn start_sync_unless_running(home: &PgbakHome) -> Result<(), BackgroundSyncError> {
    let lock_file = LockFile::open(&home.lock_file_path())?;
    if lock_file.is_locked_by_other(LockRange::Sync)? {
        return Ok(());
    }
    start_background_sync(home).map_err(|source| BackgroundSyncError::Spawn { source })
}

/// Starts `pgbak sync --background` (this same executable) fully detached, and does not wait
/// for it (see [`crate::os::detach`]), with `PGBAK` set to `home`.
pub fn start_background_sync(home: &PgbakHome) -> io::Result<()> {
    let executable = std::env::current_exe()?;
    let mut command = Command::new(executable);
    command
        .args(BACKGROUND_SYNC_ARGUMENTS)
        .env(PGBAK_VARIABLE, &home.path);
    detach::spawn_detached(command)
}
