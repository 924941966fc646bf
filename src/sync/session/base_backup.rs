//! The session's side of the base-backup action (S-4.1 – S-4.5): recording
//! `BaseBackupStarted` before the program starts, and turning a finished run into the fact
//! that records it (`BaseBackupSucceeded` or `BaseBackupFailed`, noting an unreachable
//! server so the machine does not retry it before the next WAL file).
//!
//! Invariant: intent before effect: the directory exists in the journal as pending before
//! `pg_basebackup` writes into it.

use super::Session;
use super::world::SessionWorld;
use crate::machine::Event;
use crate::sync::base_backup::BaseBackupRun;
use crate::sync::base_backup::progress::ProgressFile;
use crate::sync::log::SyncLog;
use crate::timestamp::{DirectoryName, UnixMillis};

/// A base backup a real session is running (its directory is kept by the session).
pub(crate) struct RunningBase {
    pub(super) run: BaseBackupRun,
    /// For `status` only; `None` if the file could not be created (the run goes on). Dropping
    /// it with this struct removes the file.
    pub(super) progress: Option<ProgressFile>,
}

impl RunningBase {
    /// Publishes the bytes written so far (throttled). Failing to is noted once and the file
    /// is given up: status then shows the count as unknown, and the backup is unaffected.
    pub(super) fn report_progress(&mut self, log: &SyncLog) {
        if let Some(progress) = self.progress.as_mut()
            && let Err(error) = progress.update(self.run.bytes_read(), self.run.bytes_written())
        {
            log.note(&format!(
                "cannot write the base backup's progress for status: {error}"
            ));
            self.progress = None;
        }
    }
}

/// The fact for a finished base backup run.
pub(super) fn base_backup_outcome(
    directory: DirectoryName,
    result: Result<u64, String>,
    at: UnixMillis,
) -> Event {
    match result {
        Ok(base_bytes) => Event::BaseBackupFinished {
            directory,
            base_bytes,
            at,
        },
        Err(output) if server_unreachable(&output) => Event::BaseBackupServerUnreachable {
            directory,
            output,
            at,
        },
        Err(output) => Event::BaseBackupFailed {
            directory,
            output,
            at,
        },
    }
}

/// Whether `pg_basebackup`'s output says that it could not reach a running server: stopped,
/// starting up or shutting down (libpq's and the postmaster's wording, PostgreSQL 9.6 to 18).
/// A server that answered and refused (authentication, `max_wal_senders`) is a real failure
/// the sync keeps retrying; only an absent server lets it leave the retry to the next `wal`
/// (S-6.6).
pub(super) fn server_unreachable(output: &str) -> bool {
    const UNREACHABLE: [&str; 5] = [
        "Is the server running",
        "could not connect to server",
        "Connection refused",
        "the database system is shutting down",
        "the database system is starting up",
    ];
    UNREACHABLE.iter().any(|phrase| output.contains(phrase))
}

impl<W: SessionWorld> Session<'_, W> {
    /// S-4.3: `DirectoryOpened` (intent of the `mkdir`), the directory and its `pg_wal/`,
    /// `BaseBackupStarted` (intent of the run), then `pg_basebackup`. Failing to create the
    /// directory or to start the program is the attempt's failure, recorded at once, so the
    /// machine's backoff applies (S-4.5).
    pub(super) fn start_base_backup(
        &mut self,
        directory: DirectoryName,
        open_directory: bool,
    ) -> Result<(), crate::sync::SessionError> {
        if open_directory {
            self.record(vec![Event::DirectoryOpened {
                directory,
                at: self.now(),
            }])?;
        }
        let prepared = self.world.prepare_base_directory(directory);
        self.record(vec![Event::BaseBackupStarted {
            directory,
            at: self.now(),
        }])?;
        crate::failpoint::fail_point("sync-after-base-intent");
        let started = match prepared {
            Err(message) => Err(message),
            Ok(()) => self.world.start_base_backup(directory, &self.log),
        };
        match started {
            Ok(run) => self.base_backup = Some((directory, run)),
            Err(message) => {
                self.log.error(&message);
                self.record(vec![Event::BaseBackupFailed {
                    directory,
                    output: message,
                    at: self.now(),
                }])?;
            }
        }
        Ok(())
    }
}
