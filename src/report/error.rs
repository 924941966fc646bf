//! [`ReportError`]: why `pgbak status` could not build or print its report.

use crate::hint::OperatorHint;
use crate::home::journal_file::JournalFileError;
use crate::os::lock::LockError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Asking whether a sync holds the sync lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Reading the journal's records (`status --journal`) failed.
    #[error(transparent)]
    Journal(#[from] JournalFileError),
    /// A record of the journal could not be shown as JSON (`status --journal`).
    #[error("status: encoding record {seq} as JSON")]
    EncodeRecord {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    /// Printing the report failed (a closed pipe is not reported: see `crate::error`).
    #[error("status: writing the {what}")]
    Write {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl ReportError {
    /// `writeln!(out, …).map_err(ReportError::write("report"))`.
    pub fn write(what: &'static str) -> impl FnOnce(io::Error) -> ReportError {
        move |source| ReportError::Write { what, source }
    }
}

impl OperatorHint for ReportError {
    fn hint(&self) -> Option<String> {
        match self {
            ReportError::Lock(error) => error.hint(),
            ReportError::Journal(error) => error.hint(),
            ReportError::EncodeRecord { .. } | ReportError::Write { .. } => None,
        }
    }
}
