//! [`Error`]: what a command returns to `main.rs`, and how it is printed.
//!
//! Owns: the one enum at the command boundary, with a `From` for each room's error, its
//! [`OperatorHint`], and [`one_line`], the single rendering of an error and its causes
//! (`pgbak: <subject>: <problem>: <cause>`), used for stderr, `sync.log` and the journal alike.
//!
//! Design (one way from an error to its `hint:`, without a hand-kept list of types): every
//! room's error enum implements [`OperatorHint`], and an error that wraps another one as a
//! typed variant (`ArchiveError::Journal`, `JournalFileError::Lock`, …) answers `hint()` by
//! asking its cause. At the top, [`Error`] has one variant per room error a command can return,
//! and its `hint()` delegates by an exhaustive `match`: a new room error reaches `main.rs` only
//! through a new variant, and the compiler then refuses a `hint()` that forgets it. The
//! alternative, walking an `anyhow` chain and downcasting to a registry of types, compiled
//! fine when a type was missing from the registry, and printed no hint: that is what this
//! replaces. `anyhow` is gone from the rooms: their errors stay typed up to this enum.
//!
//! Invariants: a message never repeats its cause (a variant with a `#[source]` leaves it out
//! of its `#[error]` text, or is `#[error(transparent)]`), because [`one_line`] appends every
//! cause; a reader that closed stdout is not an error of pgbak's ([`Error::is_broken_pipe`]).

use crate::archive::ArchiveError;
use crate::backup_copy::BackupCopyError;
use crate::commands::init::InitError;
use crate::commands::new_series::NewSeriesError;
use crate::commands::prune::PruneError;
use crate::commands::restore::RestoreCommandError;
use crate::commands::restore_wal::HoleInArchive;
use crate::commands::sync::SyncError;
use crate::config::ConfigError;
use crate::hint::OperatorHint;
use crate::home::environment::EnvironmentError;
use crate::home::journal_file::JournalFileError;
use crate::os::lock::LockError;
use crate::report::ReportError;
use crate::restore::{ReplayError, RestoreError, RestoreWalError};
use crate::sync::SessionError;
use std::io;

/// Why a command failed. Display is the top error's own line; [`one_line`] adds the causes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Journal(#[from] JournalFileError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    NewSeries(#[from] NewSeriesError),
    #[error(transparent)]
    Prune(#[from] PruneError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    RestoreWal(#[from] RestoreWalError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    BackupCopy(#[from] BackupCopyError),
    #[error(transparent)]
    RestoreCommand(#[from] RestoreCommandError),
    #[error(transparent)]
    HoleInArchive(#[from] HoleInArchive),
    /// Writing a command's report to stdout failed (a closed pipe is [`Error::is_broken_pipe`]).
    #[error("writing {what}")]
    Output {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// `writeln!(out, …).map_err(Error::output("the report"))`.
    pub fn output(what: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Output { what, source }
    }

    /// Whether this failed only because the reader of stdout went away (`pgbak status |
    /// head -1`): the command did its work, the rest of its report has no one to read it.
    pub fn is_broken_pipe(&self) -> bool {
        causes(self).any(|cause| {
            cause
                .downcast_ref::<io::Error>()
                .is_some_and(|error| error.kind() == io::ErrorKind::BrokenPipe)
        })
    }
}

impl OperatorHint for Error {
    fn hint(&self) -> Option<String> {
        match self {
            Error::Environment(error) => error.hint(),
            Error::Config(error) => error.hint(),
            Error::Lock(error) => error.hint(),
            Error::Journal(error) => error.hint(),
            Error::Archive(error) => error.hint(),
            Error::Session(error) => error.hint(),
            Error::Report(error) => error.hint(),
            Error::Init(error) => error.hint(),
            Error::Sync(error) => error.hint(),
            Error::NewSeries(error) => error.hint(),
            Error::Prune(error) => error.hint(),
            Error::Restore(error) => error.hint(),
            Error::RestoreWal(error) => error.hint(),
            Error::Replay(error) => error.hint(),
            Error::BackupCopy(error) => error.hint(),
            Error::RestoreCommand(error) => error.hint(),
            Error::HoleInArchive(error) => error.hint(),
            Error::Output { .. } => None,
        }
    }
}

/// An error and every cause below it, outermost first.
pub fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |cause| cause.source())
}

/// An error and its causes on one line, joined with ": " (subject first): what `main.rs`
/// prints after `pgbak: `, and what `sync.log` and a recorded failure say.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    causes(error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
