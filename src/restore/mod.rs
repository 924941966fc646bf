//! `src/restore/`: writing a PostgreSQL data directory from a backup with the seed's layout
//! (S-8.1), and the `restore_command`'s write of one WAL file (S-8.1.1). A library room: the
//! commands (`pgbak restore`, `pgbak restore-wal`) decide *what* to restore (which directory,
//! which WAL, which settings: `src/backup_copy/`) and call in here to write it.
//!
//! Files, in the order the data flows:
//! - `dest.rs`: DEST taken (new, or an empty directory) and given back on failure.
//! - `extract.rs`: `base.tzst` streamed into DEST, every member checked before it is written.
//! - `wal_file.rs`: one archived WAL file decompressed and verified ([`decompress_verified`],
//!   [`restore_one`]).
//! - `wal_pool.rs`: the WAL files into `DEST/pg_wal`, on `jobs` threads, during the extraction.
//! - `recovery_settings.rs`: `postgresql.auto.conf` block and signal file ([`RecoverySettings`]).
//! - `finish.rs`: one `syncfs` of DEST ([`sync_tree`]).
//! - `replay.rs`: `--replay` ([`replay`]).
//! - `progress.rs`: the progress line on a terminal. `error.rs`: the errors.
//!
//! Invariants of [`materialize`]:
//! - Nothing is written outside DEST, and nothing into a DEST that was not new or empty.
//! - On any failure, what was written is removed (DEST itself if pgbak created it), so a
//!   half-restored directory is never left looking like a whole one; if even that fails the
//!   error says so ([`RestoreError::Cleanup`]).
//! - Success means durable: one `syncfs` at the end (unless the caller asked for no sync).
//! - Order: DEST, then `DEST/pg_wal/` (so the WAL pool can start at once; the empty `pg_wal/`
//!   entry of a `pg_basebackup -X none` tar is then accepted as already there), the
//!   extraction on this thread and the WAL pool on `jobs` others, then the settings, then the
//!   check that a data directory came out (`global/pg_control`), then the sync.

mod dest;
pub mod error;
mod extract;
pub mod finish;
mod progress;
pub mod recovery_settings;
pub mod replay;
pub mod wal_file;
mod wal_pool;

pub use error::{ReplayError, RestoreError, RestoreWalError, WalDamage};
pub use extract::ExtractReport;
pub use finish::{SyncMethod, sync_tree};
pub use recovery_settings::{
    RecoverySettings, RecoveryTarget, TargetAction, TargetTimeline, pgbak_executable,
};
pub use replay::{ControlData, ReplayReport, replay};
pub use wal_file::{decompress_verified, restore_one};
pub use wal_pool::WalPoolReport;

use crate::wal_name::WalFileName;
use progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The file that proves a data directory came out of the tar (PostgreSQL cannot start
/// without it; `pg_basebackup` sends it last).
pub const CONTROL_FILE: &str = "global/pg_control";

/// What to write, decided by the caller.
#[derive(Debug, Clone)]
pub struct Materialize<'a> {
    /// The data directory to create (or an empty directory to fill).
    pub dest: &'a Path,
    /// The base backup: a zstd-compressed tar from `pg_basebackup -Ft`.
    pub base_tzst: &'a Path,
    /// WAL files to decompress into `DEST/pg_wal`: (name, archived `.zst`). Empty for a
    /// restore with a recovery target or a standby, which fetch WAL through `restore_command`.
    pub wal: Vec<(WalFileName, PathBuf)>,
    /// The cluster's WAL segment size in bytes: every segment in `wal` must be this long.
    pub segment_size: u64,
    /// Settings and signal file for PostgreSQL; `None`: neither (the seed's plain restore).
    pub recovery: Option<RecoverySettings>,
    /// Threads decompressing WAL; 0 = the number of cores.
    pub jobs: usize,
    /// One `syncfs` at the end (`--no-sync` sets false).
    pub sync: bool,
    /// A progress line on stderr, if it is a terminal.
    pub progress: bool,
}

/// What [`materialize`] wrote and how long each part took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaterializeReport {
    pub base: ExtractReport,
    pub wal: WalPoolReport,
    /// Threads the WAL pool used.
    pub jobs: usize,
    /// The extraction (the WAL pool runs during it).
    pub extract_seconds: f64,
    /// From the start until the last WAL file was written.
    pub wal_seconds: f64,
    pub sync_seconds: f64,
    pub total_seconds: f64,
    /// `None` when the caller asked for no sync.
    pub sync: Option<SyncMethod>,
    /// The signal file written, if any.
    pub signal_file: Option<&'static str>,
}

/// Writes DEST from the base backup and the WAL (see the module header).
pub fn materialize(request: Materialize<'_>) -> Result<MaterializeReport, RestoreError> {
    let taken = dest::prepare(request.dest)?;
    write_all(&request).map_err(|failure| taken.fail(failure))
}

fn write_all(request: &Materialize<'_>) -> Result<MaterializeReport, RestoreError> {
    let started = Instant::now();
    let dest = request.dest;
    let jobs = match request.jobs {
        0 => std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        jobs => jobs,
    };
    let progress = Progress::new(request.progress, request.wal.len() as u64);
    let pg_wal = dest.join("pg_wal");
    std::fs::create_dir(&pg_wal).map_err(RestoreError::io("creating the directory", &pg_wal))?;
    let stop = AtomicBool::new(false);
    let (base, wal, extract_time, wal_time) = std::thread::scope(|scope| {
        let drawer = progress
            .is_enabled()
            .then(|| scope.spawn(|| progress.draw_until_finished()));
        let pool = scope.spawn(|| {
            let result = wal_pool::decompress_all(
                &request.wal,
                &pg_wal,
                request.segment_size,
                jobs,
                &stop,
                &progress,
            );
            (result, started.elapsed())
        });
        let base = extract::extract_tzst(request.base_tzst, dest, &progress);
        let extract_time = started.elapsed();
        if base.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let (wal, wal_time) = pool
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        progress.finish();
        if let Some(drawer) = drawer {
            let _ = drawer.join();
        }
        (base, wal, extract_time, wal_time)
    });
    let disk_full = |source: std::io::Error| RestoreError::DiskFull {
        dest: dest.to_owned(),
        written_bytes: progress.base_bytes.load(Ordering::Relaxed)
            + progress.wal_bytes.load(Ordering::Relaxed),
        pending_wal_bytes: (request.wal.len() as u64)
            .saturating_sub(progress.wal_files_done.load(Ordering::Relaxed))
            * request.segment_size,
        source,
    };
    // The extraction's failure first: it is the cause when both failed (it stops the pool).
    let base = match base {
        Err(RestoreError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::StorageFull =>
        {
            return Err(disk_full(source));
        }
        other => other?,
    };
    let wal = match wal {
        Err(RestoreWalError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::StorageFull =>
        {
            return Err(disk_full(source));
        }
        other => other?,
    };
    if !dest.join(CONTROL_FILE).is_file() {
        return Err(RestoreError::NotADataDirectory {
            base: request.base_tzst.to_owned(),
            missing: CONTROL_FILE,
        });
    }
    if let Some(settings) = &request.recovery {
        recovery_settings::write(dest, settings).map_err(|error| match error {
            RestoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                disk_full(source)
            }
            other => other,
        })?;
    }
    let sync_started = Instant::now();
    let sync = if request.sync {
        Some(sync_tree(dest).map_err(|source| {
            if source.kind() == std::io::ErrorKind::StorageFull {
                disk_full(source)
            } else {
                RestoreError::io("syncing", dest)(source)
            }
        })?)
    } else {
        None
    };
    let seconds = |duration: Duration| duration.as_secs_f64();
    Ok(MaterializeReport {
        base,
        wal,
        jobs,
        extract_seconds: seconds(extract_time),
        wal_seconds: seconds(wal_time),
        sync_seconds: seconds(sync_started.elapsed()),
        total_seconds: seconds(started.elapsed()),
        sync,
        signal_file: request.recovery.as_ref().map(RecoverySettings::signal_file),
    })
}

#[cfg(test)]
mod tests;
