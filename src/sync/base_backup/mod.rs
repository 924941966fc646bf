//! Taking a base backup: `pg_basebackup` streamed through the zstd library into
//! `$PGBAK/TIMESTAMP/base.tzst` (S-4.3, S-4.4, S-4.6). The directory operations around it
//! (the `current` link, removing a failed directory) are in `sync::directories`.
//!
//! Owns: [`BaseBackupRun`] (one running `pg_basebackup`, its threads and its output file) and
//! [`BaseBackupError`] (what can go wrong before the program runs, in `error`). The files:
//! this one starts, polls and stops a run; `stream` spawns the program under the supervisor
//! ([`crate::os::process_group::ChildGroup`]) and moves its stdout through zstd into the
//! unnamed file (the base backup thread); `progress`
//! publishes the byte counts `status` shows.
//!
//! # The command
//!
//! `pg_basebackup -D - -F tar -X none -w [-h HOST] [-p PORT] [-U USER] EXTRA_ARGS…`
//!
//! - `-D - -F tar` writes the main data directory as one tar stream (`base.tar`) to stdout;
//!   `-X none` adds no `pg_wal.tar`: the WAL the backup needs arrives through archiving into
//!   the pending directory, and `-X fetch` fails on busy servers with "segment already
//!   removed" (S-4.3). So `base.tzst` is exactly zstd(base.tar), and `tar -C data -xf
//!   base.tzst` (GNU tar, which detects zstd by its magic number) restores it.
//! - `-w` (`--no-password`): pgbak runs in the background with nobody to answer a prompt. In
//!   its own process group, a prompt on the terminal of a foreground `pgbak sync` would stop
//!   the program with SIGTTIN and hang the sync forever; with `-w` a missing password is an
//!   immediate failure carrying libpq's own message. Use `~/.pgpass` or `PGPASSWORD`.
//! - Host, port and user come from the config file when set, else from the libpq environment
//!   (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSFILE` …) inherited from PostgreSQL (S-4.4).
//!
//! # Extra tablespaces (S-4.6)
//!
//! pgbak streams only the main tablespace. A cluster with tablespaces besides `pg_default`
//! and `pg_global` makes `pg_basebackup -D - -F tar` refuse with "can only write single
//! tablespace to stdout, database has N"; that refusal is detected in the output and reported
//! with a line naming the limitation (see [`TABLESPACE_LIMITATION`]), so the operator does not
//! have to decode it. Supporting them would need one tarball per tablespace and a documented
//! restore layout; that is not built.
//!
//! # Threads and processes
//!
//! The program runs under the same supervisor as the backup script (its own process group,
//! S-5.4), stdin `/dev/null`. Two threads serve it:
//! - the *base backup thread* reads stdout into the zstd encoder (multithreaded: its workers are more
//!   threads), which writes into an `O_TMPFILE` in the directory; once stdout ends it waits for
//!   the program to exit, kills whatever is left of its process group, reaps it, and only if the
//!   exit status is 0 finishes the zstd frame, fsyncs, links the file as `base.tzst` and
//!   fsyncs the directory;
//! - the supervisor's *drain* keeps the last lines of stderr in a bounded tail (and passes each
//!   line to an optional log callback), so the program never blocks on a full stderr pipe.
//!
//! Invariants kept:
//! - `base.tzst` appears complete and durable, or not at all: a failure at any point, a crash
//!   of pgbak included, leaves at most the directory (the unnamed file vanishes). An existing
//!   `base.tzst` is never replaced.
//! - Signals go to the process group only while its leader is unreaped (a zombie leader keeps
//!   the group id reserved), so a recycled id is never signalled.
//! - Everything is bounded: the output tail ([`OUTPUT_TAIL_BYTES_MAX`],
//!   [`OUTPUT_TAIL_LINES_MAX`]), the grace between SIGTERM and SIGKILL
//!   ([`STOP_GRACE`]), and how long [`BaseBackupRun::stop`] waits for a thread that cannot
//!   finish (a process that escaped the group holding a pipe open).

mod error;
pub mod progress;
mod stream;

pub use error::BaseBackupError;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::home::environment::PgbakHome;
use crate::home::names::BASE_FILE_NAME;
use crate::os::durable::{PRIVATE_FILE_MODE, UnnamedFile, create_private_directory};
use crate::os::process_group::{ChildGroup, POLL_INTERVAL, STOP_GRACE};
use crate::timestamp::DirectoryName;
use stream::CountingWriter;
use stream::Shared;
use stream::build_encoder;
use stream::join_supervisor;
use stream::spawn_program;
use stream::supervise;
use stream::wait_for_thread;

/// The options pgbak always passes (S-4.3), then `-w` (see the module header).
const FIXED_ARGUMENTS: &[&str] = &["-D", "-", "-F", "tar", "-X", "none", "-w"];

/// What `pg_basebackup` prints when the cluster has more than one tablespace and the tar goes
/// to stdout (`src/bin/pg_basebackup/pg_basebackup.c`, every version since 9.1).
const TABLESPACE_REFUSAL: &str = "can only write single tablespace to stdout";

/// The line pgbak puts above the program's own output when it refused because of extra
/// tablespaces (S-4.6).
pub const TABLESPACE_LIMITATION: &str = "the database has tablespaces besides pg_default and \
    pg_global: pgbak streams only the main tablespace (pg_basebackup -D - -F tar), extra \
    tablespaces are not supported (S-4.6); move their tables and indexes to pg_default \
    (ALTER TABLE … SET TABLESPACE pg_default) and drop the extra tablespaces, or back this \
    cluster up another way";

/// The output tail kept for the journal and `status`: the last lines, at most this many bytes…
pub const OUTPUT_TAIL_BYTES_MAX: usize = 2048;
/// … and at most this many lines.
pub const OUTPUT_TAIL_LINES_MAX: usize = 20;
/// A longer stderr line is cut (a progress bar without newlines must not grow without bound).
const OUTPUT_LINE_BYTES_MAX: usize = 512;

/// How much of stdout is read at a time; the zstd workers consume jobs of several MiB.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// How long [`BaseBackupRun::stop`] waits, after SIGKILL, for a supervisor still reading a pipe
/// (held open by a process that left the group) before it gives up on the thread.
pub const STOP_AFTER_KILL_WAIT: Duration = Duration::from_secs(5);

/// A tar archive ends with two 512-byte blocks of zeros; `pg_basebackup` writes them in every
/// version (the client appends them when the server does not).
const TAR_BLOCK_BYTES: u64 = 512;
const TAR_END_OF_ARCHIVE_BYTES: usize = 1024;

/// One running `pg_basebackup` into `$PGBAK/DIRECTORY/base.tzst` (see the module header).
///
/// Dropping it without [`BaseBackupRun::stop`] stops it the same way (and blocks as long).
pub struct BaseBackupRun {
    shared: Arc<Shared>,
    group: Arc<ChildGroup>,
    supervisor: Option<JoinHandle<Result<u64, String>>>,
    outcome: Option<Result<u64, String>>,
}

impl std::fmt::Debug for BaseBackupRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackupRun")
            .field("directory", &self.shared.directory)
            .field("bytes_written", &self.bytes_written())
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl BaseBackupRun {
    /// Creates `$PGBAK/DIRECTORY` (0700) if needed and starts `pg_basebackup` into it (see the
    /// module header for the command line and the threads).
    pub fn start(
        home: &PgbakHome,
        config: &Config,
        directory: DirectoryName,
    ) -> Result<BaseBackupRun, BaseBackupError> {
        Self::start_with_log(home, config, directory, Box::new(|_| {}))
    }

    /// [`BaseBackupRun::start`], also handing each stderr line of `pg_basebackup` to `log`
    /// (called on the stderr thread, so it must not block for long).
    pub fn start_with_log(
        home: &PgbakHome,
        config: &Config,
        directory: DirectoryName,
        log: Box<dyn FnMut(&str) + Send>,
    ) -> Result<BaseBackupRun, BaseBackupError> {
        let directory_path = home.directory_path(directory);
        create_private_directory(&directory_path).map_err(|source| {
            BaseBackupError::CreateDirectory {
                path: directory_path.clone(),
                source,
            }
        })?;
        if std::fs::symlink_metadata(directory_path.join(BASE_FILE_NAME)).is_ok() {
            return Err(BaseBackupError::BaseAlreadyPresent {
                directory: directory_path,
            });
        }
        let output =
            UnnamedFile::create_in(&directory_path, PRIVATE_FILE_MODE).map_err(|source| {
                match source.kind() {
                    io::ErrorKind::Unsupported => BaseBackupError::TmpfileUnsupported {
                        directory: directory_path.clone(),
                        source,
                    },
                    _ => BaseBackupError::CreateOutput {
                        directory: directory_path.clone(),
                        source,
                    },
                }
            })?;

        let shared = Arc::new(Shared {
            directory: directory_path.clone(),
            program: config.pg_basebackup.path.clone(),
            stop_requested: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            tablespace_refusal: AtomicBool::new(false),
        });
        let encoder = build_encoder(
            CountingWriter {
                file: output,
                shared: Arc::clone(&shared),
            },
            config,
        )
        .map_err(|source| BaseBackupError::Encoder {
            directory: directory_path.clone(),
            source,
        })?;

        let (group, stdout) = spawn_program(config, &shared, log)?;
        let group = Arc::new(group);
        let supervisor_shared = Arc::clone(&shared);
        let supervisor_group = Arc::clone(&group);
        let supervisor = std::thread::Builder::new()
            .name("pgbak-basebackup".into())
            .spawn(move || supervise(&supervisor_group, stdout, encoder, &supervisor_shared));
        let supervisor = match supervisor {
            Ok(handle) => handle,
            Err(source) => {
                // The closure and its share of the group are gone; ours kills and reaps it.
                group.kill_and_reap();
                return Err(BaseBackupError::Thread {
                    directory: directory_path,
                    source,
                });
            }
        };

        Ok(BaseBackupRun {
            shared,
            group,
            supervisor: Some(supervisor),
            outcome: None,
        })
    }

    /// Non-blocking. `None` while running; `Some(Ok(bytes))` once `pg_basebackup` exited 0 and
    /// `base.tzst` (that many bytes) is finished, fsynced and linked, with the directory
    /// fsynced; `Some(Err(message))` on any failure: the message's first line says what failed
    /// (exit status, signal, I/O error such as ENOSPC; preceded by the S-4.6 line when extra
    /// tablespaces were the reason), the lines after it are the last lines of
    /// `pg_basebackup`'s stderr. After a failure no `base.tzst` exists. Once `Some`, every
    /// later call returns the same value.
    pub fn try_finish(&mut self) -> Option<Result<u64, String>> {
        if self.outcome.is_none() {
            let handle = self.supervisor.take_if(|handle| handle.is_finished())?;
            self.outcome = Some(join_supervisor(handle));
        }
        self.outcome.clone()
    }

    /// Stops the run: SIGTERM to the process group, SIGKILL [`STOP_GRACE`] later if
    /// anything is left, then waits for the threads; returns the output tail (the last lines
    /// of stderr, with the S-4.6 line first when it applies).
    ///
    /// How long it blocks: usually until the program has died of SIGTERM (milliseconds);
    /// [`STOP_GRACE`] more when it ignores SIGTERM; if a process that left the group keeps
    /// stdout open, it gives up on the supervisor thread after [`STOP_AFTER_KILL_WAIT`] more (that
    /// thread then never links `base.tzst`), so about 10 s in all. One exception: if the program
    /// had already exited 0 and `base.tzst` is being fsynced and linked, it waits for that to end
    /// (never returning while a link could still happen), and `base.tzst` then exists; the
    /// caller removes the directory with [`remove_failed_directory`](crate::sync::directories::remove_failed_directory) if it does not want it.
    pub fn stop(mut self) -> String {
        self.shutdown();
        self.shared.tail_text(&self.group)
    }

    /// Bytes of `pg_basebackup`'s (uncompressed) tar stream read so far.
    pub fn bytes_read(&self) -> u64 {
        self.shared.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes of compressed output written so far; at the end, the size of `base.tzst`.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// The directory being written, `$PGBAK/TIMESTAMP`.
    pub fn directory_path(&self) -> &Path {
        &self.shared.directory
    }

    fn shutdown(&mut self) {
        let Some(handle) = self.supervisor.take() else {
            return;
        };
        self.shared.stop_requested.store(true, Ordering::SeqCst);
        self.group.terminate();
        if wait_for_thread(&handle, STOP_GRACE) {
            self.outcome = Some(join_supervisor(handle));
            return;
        }
        self.group.kill();
        // Once the leader is reaped the supervisor is past reading stdout; what is left (the
        // bounded stderr wait, a link already under way) ends, so wait for it: returning
        // while it could still link base.tzst would race with the caller's cleanup.
        let deadline = Instant::now() + STOP_AFTER_KILL_WAIT;
        while !handle.is_finished() {
            if !self.group.is_reaped() && Instant::now() >= deadline {
                // Still reading a pipe held open by a process outside the group. The
                // supervisor sees `stop_requested` whenever that read ends and links nothing.
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        self.outcome = Some(join_supervisor(handle));
    }
}

impl Drop for BaseBackupRun {
    fn drop(&mut self) {
        self.shutdown();
    }
}
