//! [`SessionError`]: why a sync session ended with an error instead of finishing or being
//! interrupted, with its `hint:` taken from the cause.
//!
//! A child that fails (the script, `pg_basebackup`) is not an error here: it is a fact the
//! session records and the machine retries. What ends the session is what it cannot work
//! without: its signal handlers, the sync lock, and the journal.

use crate::hint::OperatorHint;
use crate::home::journal_file::JournalFileError;
use crate::os::lock::LockError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("sync: installing the SIGTERM/SIGINT handlers")]
    Signals {
        #[source]
        source: io::Error,
    },
    /// The sync lock (byte 1) cannot be taken, or `$PGBAK/pgbak.lock` was replaced (S-6.6).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The journal cannot be opened, refreshed or appended to.
    #[error(transparent)]
    Journal(#[from] JournalFileError),
}

impl OperatorHint for SessionError {
    fn hint(&self) -> Option<String> {
        match self {
            SessionError::Signals { .. } => None,
            SessionError::Lock(error) => error.hint(),
            SessionError::Journal(error) => error.hint(),
        }
    }
}
