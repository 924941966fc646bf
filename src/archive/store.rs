//! Steps 4 and 5 of the archive path: choose the targets under the journal lock, link the
//! compressed file into each (S-2.7, S-2.3), and record `WalArchived` (the ack point).
//!
//! Owns: [`Store`], one call's progress across lock holds, and the [`Decision`] each hold
//! takes. Invariants (see the module header of `archive` for the why): `DirectoryOpened` is
//! recorded before its `mkdir` (S-3.2); only `TIMESTAMP/pg_wal/` is created outside the lock,
//! so a removed directory is never resurrected; at most `TARGET_ATTEMPTS_MAX` lock holds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Seek};
use std::path::{Path, PathBuf};

use super::ArchiveError;
use super::ArchiveOutcome;
use super::BeforeLinkHook;
use super::TARGET_ATTEMPTS_MAX;
use super::error::journal_error;
use super::error::storage_error;
use super::existing::Comparison;
use super::existing::compare_stored;
use super::existing::make_existing_durable;
use super::input::WalInput;
use crate::home::environment::PgbakHome;
use crate::home::journal_file::{self, JOURNAL_LOCK_WAIT, JournalFileError, OpenedJournal};
use crate::home::names::WAL_DIRECTORY_NAME;
use crate::journal::JournalError;
use crate::machine::{DirectoryPhase, Event, archive_targets};
use crate::os::durable::{self, PRIVATE_FILE_MODE, UnnamedFile};
use crate::os::lock::{LockKind, LockRange, Wait};
use crate::timestamp::{DirectoryName, UnixMillis};

/// How a target directory holds `NAME.zst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// Linked by this call.
    Linked,
    /// An identical copy was there already, now made durable.
    AlreadyPresent { compressed_bytes: u64 },
}

/// What one lock hold decided.
pub(super) enum Decision {
    /// `DirectoryOpened` was recorded for this directory: create it.
    Opened(DirectoryName),
    /// These open directories (with their phase) do not hold the file yet.
    Link(Vec<(DirectoryName, DirectoryPhase)>),
    /// `WalArchived` was recorded.
    Recorded,
    /// Nothing holds the file and no open directory is left to put it in.
    NoDirectory(Vec<DirectoryName>),
    /// `DirectoryLost` was recorded for these: the next hold chooses targets again (S-4.8).
    Lost,
    /// The input is of another cluster than the recorded one (S-2.9).
    OtherCluster { recorded: u64 },
}

/// Why a lock hold ended without a decision.
pub(super) enum HoldError {
    /// The refresh found the journal damaged: reopen it (which rebuilds it) and go on.
    Reopen,
    Failed(JournalFileError),
    /// Creating a directory under the lock failed.
    Storage(ArchiveError),
}

/// Steps 4 and 5 of the module header.
pub(super) struct Store<'a, 'h> {
    pub(super) home: &'a PgbakHome,
    pub(super) input: &'a WalInput,
    /// From the input's long page header, when it has one pgbak recognizes (S-2.9).
    pub(super) system_identifier: Option<u64>,
    pub(super) compressed: &'a mut UnnamedFile,
    pub(super) compressed_bytes: u64,
    pub(super) now: UnixMillis,
    pub(super) stored: BTreeMap<DirectoryName, Stored>,
    /// Targets whose `TIMESTAMP/` was gone: removed by the sync after a failed base backup.
    pub(super) vanished: BTreeSet<DirectoryName>,
    pub(super) opened_directory: Option<DirectoryName>,
    /// `wal.conflicts_max_bytes` (S-2.10).
    pub(super) conflicts_max_bytes: u64,
    pub(super) before_link: BeforeLinkHook<'h>,
}

impl Store<'_, '_> {
    pub(super) fn run(&mut self) -> Result<ArchiveOutcome, ArchiveError> {
        crate::failpoint::fail_point("wal-after-compress");
        let mut journal = journal_file::open_journal(self.home, self.now)
            .map_err(|error| journal_error(self.home, self.input, error))?;
        let mut reopened = false;
        for _ in 0..TARGET_ATTEMPTS_MAX {
            let decision = match self.decide(&mut journal) {
                Ok(decision) => decision,
                Err(HoldError::Reopen) if !reopened => {
                    reopened = true;
                    journal = journal_file::open_journal(self.home, self.now)
                        .map_err(|error| journal_error(self.home, self.input, error))?;
                    continue;
                }
                Err(HoldError::Reopen) => {
                    return Err(journal_error(
                        self.home,
                        self.input,
                        JournalFileError::DamagedAgain {
                            path: self.home.lock_file_path(),
                        },
                    ));
                }
                Err(HoldError::Failed(error)) => {
                    return Err(journal_error(self.home, self.input, error));
                }
                Err(HoldError::Storage(error)) => return Err(error),
            };
            match decision {
                Decision::Opened(directory) => {
                    self.opened_directory = Some(directory);
                    if !self.create_wal_directory(directory)? {
                        // Failed and removed by a sync already: the next hold decides anew.
                        self.vanished.insert(directory);
                    }
                }
                Decision::Link(targets) => {
                    if let Some(hook) = self.before_link.as_mut() {
                        hook();
                    }
                    self.link_into_targets(&targets)?;
                    crate::failpoint::fail_point("wal-after-link");
                }
                Decision::Recorded => {
                    crate::failpoint::fail_point("wal-after-journal");
                    return Ok(self.outcome());
                }
                Decision::NoDirectory(missing) => {
                    return Err(ArchiveError::NoDirectoryOnDisk {
                        name: self.input.name(),
                        missing,
                    });
                }
                Decision::Lost => {}
                Decision::OtherCluster { recorded } => {
                    return Err(ArchiveError::OtherCluster {
                        name: self.input.name(),
                        found: self.system_identifier.unwrap_or_default(),
                        recorded,
                        pgbak: self.home.path.clone(),
                    });
                }
            }
        }
        Err(ArchiveError::TargetsUnsettled {
            name: self.input.name(),
            attempts: TARGET_ATTEMPTS_MAX,
            linked: self.stored.keys().copied().collect(),
        })
    }

    pub(super) fn outcome(&self) -> ArchiveOutcome {
        ArchiveOutcome {
            file: self.input.name.clone(),
            stored_in: self.stored.keys().copied().collect(),
            compressed_bytes: self.recorded_bytes(),
            source_bytes: self.input.size,
            already_present: self.all_already_present(),
            opened_directory: self.opened_directory,
        }
    }

    /// Every target had an identical copy. A mix (a crash between two links) counts as new:
    /// the record comes after all links, so the journal has not counted the file anywhere.
    pub(super) fn all_already_present(&self) -> bool {
        !self.stored.is_empty()
            && self
                .stored
                .values()
                .all(|stored| matches!(stored, Stored::AlreadyPresent { .. }))
    }

    pub(super) fn recorded_bytes(&self) -> u64 {
        self.stored
            .values()
            .find_map(|stored| match stored {
                Stored::AlreadyPresent { compressed_bytes } => Some(*compressed_bytes),
                Stored::Linked => None,
            })
            .filter(|_| self.all_already_present())
            .unwrap_or(self.compressed_bytes)
    }

    /// One hold of the journal lock: refresh, look at the targets, append if the decision is
    /// an append. Never compresses, links or creates directories (S-2.6: milliseconds).
    pub(super) fn decide(&self, opened: &mut OpenedJournal) -> Result<Decision, HoldError> {
        let lock_path = opened.lock_file.path().to_path_buf();
        let in_journal = |error: JournalError| JournalFileError::in_journal(&lock_path)(error);
        let _guard = opened
            .lock_file
            .lock(
                LockRange::Journal,
                LockKind::Exclusive,
                Wait::UpTo(JOURNAL_LOCK_WAIT),
            )
            .map_err(|error| HoldError::Failed(error.into()))?;
        match opened.journal.refresh(self.now) {
            Ok(_) => {}
            Err(JournalError::NeedsRebuild { .. }) => return Err(HoldError::Reopen),
            Err(error) => return Err(HoldError::Failed(in_journal(error))),
        }
        let state = opened.journal.state();
        if let (Some(found), Some(recorded)) = (self.system_identifier, state.system_identifier)
            && found != recorded
        {
            return Ok(Decision::OtherCluster { recorded });
        }
        // An open directory whose `TIMESTAMP/` vanished was removed by hand (S-4.8): forget it,
        // so that the next hold opens a new one instead of failing every call from now on.
        // Not while the sync works in it: that run fails on its own and records its outcome.
        let lost: Vec<Event> = self
            .vanished
            .iter()
            .filter(|name| {
                state.directories.get(name).is_some_and(|d| {
                    d.phase == DirectoryPhase::Current
                        && state
                            .script
                            .running
                            .is_none_or(|run| run.directory != **name)
                })
            })
            .map(|name| Event::DirectoryLost {
                directory: *name,
                at: self.now,
            })
            .collect();
        if !lost.is_empty() {
            opened
                .journal
                .append(&lost, self.now)
                .map_err(|error| HoldError::Failed(in_journal(error)))?;
            return Ok(Decision::Lost);
        }
        let targets = archive_targets(state, self.now);
        if let Some(directory) = targets.open_directory {
            // Recorded before the mkdir (intent, S-3.2), in the same lock hold that saw no
            // open directory: concurrent first calls open exactly one.
            let event = Event::DirectoryOpened {
                directory,
                at: self.now,
            };
            opened
                .journal
                .append(&[event], self.now)
                .map_err(|error| HoldError::Failed(in_journal(error)))?;
            self.create_pending_directory(directory)
                .map_err(HoldError::Storage)?;
            return Ok(Decision::Opened(directory));
        }
        let missing: Vec<(DirectoryName, DirectoryPhase)> = targets
            .directories
            .iter()
            .filter(|name| !self.stored.contains_key(name) && !self.vanished.contains(name))
            .filter_map(|name| state.directories.get(name).map(|d| (*name, d.phase)))
            .collect();
        if !missing.is_empty() {
            // A pending directory may be recorded but not created yet (the sync, or another
            // `wal`, records DirectoryOpened before its mkdir). Its `TIMESTAMP/` is created
            // here, in the hold that saw it pending: a sync records a failed base backup under
            // this lock before it removes the directory, so what is created here is either
            // removed by that sync afterwards or was never failed. Created after the lock is
            // released, it could come back after the removal, an orphan the journal does not
            // know. Rare (once per directory at most), so the mkdir's fsync is paid here.
            for (directory, phase) in &missing {
                if *phase == DirectoryPhase::Pending {
                    self.create_pending_directory(*directory)
                        .map_err(HoldError::Storage)?;
                }
            }
            return Ok(Decision::Link(missing));
        }
        if self.stored.is_empty() {
            return Ok(Decision::NoDirectory(targets.directories));
        }
        crate::failpoint::fail_point("wal-before-journal");
        // S-6.6: the record is the ack; never into a journal that `$PGBAK` no longer holds.
        opened
            .lock_file
            .check_still_same()
            .map_err(|error| HoldError::Failed(error.into()))?;
        let mut events = Vec::new();
        if let Some(system_identifier) = self.system_identifier
            && state.system_identifier.is_none()
        {
            // The first segment with a readable header names the cluster, in the same append
            // as its own record (S-2.9).
            events.push(Event::SystemIdentifierRecorded {
                system_identifier,
                at: self.now,
            });
        }
        events.extend(self.archived_events());
        opened
            .journal
            .append(&events, self.now)
            .map_err(|error| HoldError::Failed(in_journal(error)))?;
        Ok(Decision::Recorded)
    }

    /// The `WalArchived` facts of this call. Directories that closed meanwhile (sealed,
    /// failed) stay in the record: the file is in them, and the machine counts it only where
    /// that still matters. Where an identical copy was found and where the file was linked
    /// now are two facts, so that a retry that finds the file in the current directory and
    /// links it into a new pending one counts it once in each, not twice in the current one.
    pub(super) fn archived_events(&self) -> Vec<Event> {
        let (present, linked): (Vec<_>, Vec<_>) = self
            .stored
            .iter()
            .partition(|(_, stored)| matches!(stored, Stored::AlreadyPresent { .. }));
        let mut events = Vec::new();
        for (group, already_present) in [(present, true), (linked, false)] {
            if group.is_empty() {
                continue;
            }
            let compressed_bytes = group
                .iter()
                .find_map(|(_, stored)| match stored {
                    Stored::AlreadyPresent { compressed_bytes } => Some(*compressed_bytes),
                    Stored::Linked => None,
                })
                .unwrap_or(self.compressed_bytes);
            events.push(Event::WalArchived {
                file: self.input.name.clone(),
                compressed_bytes,
                directories: group.iter().map(|(name, _)| **name).collect(),
                already_present,
                at: self.now,
            });
        }
        events
    }

    pub(super) fn wal_directory(&self, directory: DirectoryName) -> PathBuf {
        self.home.directory_path(directory).join(WAL_DIRECTORY_NAME)
    }

    /// `TIMESTAMP/` of a directory the journal says is pending, 0700, its entry fsynced
    /// (idempotent). Called only under the journal lock (see [`Store::decide`]).
    pub(super) fn create_pending_directory(
        &self,
        directory: DirectoryName,
    ) -> Result<(), ArchiveError> {
        let path = self.home.directory_path(directory);
        durable::create_private_directory(&path).map_err(|source| {
            storage_error(
                self.home,
                self.input,
                format!("cannot create {}", path.display()),
                source,
            )
        })?;
        Ok(())
    }

    /// `TIMESTAMP/pg_wal/`, 0700, its entry fsynced (idempotent); `false` if `TIMESTAMP/` is
    /// gone. Never creates `TIMESTAMP/` itself: a directory that vanished stays gone.
    pub(super) fn create_wal_directory(
        &self,
        directory: DirectoryName,
    ) -> Result<bool, ArchiveError> {
        let path = self.wal_directory(directory);
        match durable::create_private_directory(&path) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(storage_error(
                self.home,
                self.input,
                format!("cannot create {}", path.display()),
                source,
            )),
        }
    }

    pub(super) fn link_into_targets(
        &mut self,
        targets: &[(DirectoryName, DirectoryPhase)],
    ) -> Result<(), ArchiveError> {
        // First look for existing copies everywhere, so a conflict is found before the new
        // bytes went into any directory.
        let mut to_link = Vec::new();
        for &(directory, _phase) in targets {
            let target = self.wal_directory(directory).join(self.compressed_name());
            match std::fs::symlink_metadata(&target) {
                Ok(_) => {
                    let stored = self.accept_existing(&target)?;
                    self.stored.insert(directory, stored);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    to_link.push(directory);
                }
                Err(source) => {
                    return Err(storage_error(
                        self.home,
                        self.input,
                        format!("cannot look at {}", target.display()),
                        source,
                    ));
                }
            }
        }
        for directory in to_link {
            if let Some(stored) = self.link_into(directory)? {
                self.stored.insert(directory, stored);
            } else {
                self.vanished.insert(directory);
            }
        }
        Ok(())
    }

    pub(super) fn compressed_name(&self) -> String {
        self.input.name.compressed_name()
    }

    /// Links the file into one target; `None` if the directory is gone.
    pub(super) fn link_into(
        &mut self,
        directory: DirectoryName,
    ) -> Result<Option<Stored>, ArchiveError> {
        if !self.create_wal_directory(directory)? {
            return Ok(None);
        }
        let wal_directory = self.wal_directory(directory);
        let name = self.compressed_name();
        match link_or_copy(self.compressed, &wal_directory, &name) {
            Ok(()) => Ok(Some(Stored::Linked)),
            // The directory was removed between mkdir and link.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            // Another process stored the same name meanwhile (S-2.4).
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                self.accept_existing(&wal_directory.join(&name)).map(Some)
            }
            Err(source) => Err(storage_error(
                self.home,
                self.input,
                format!("cannot store {}", wal_directory.join(&name).display()),
                source,
            )),
        }
    }

    /// S-2.4: an identical existing copy is made durable and accepted; anything else is a
    /// conflict, and the rejected bytes are kept in `conflicts/`.
    pub(super) fn accept_existing(&mut self, archived: &Path) -> Result<Stored, ArchiveError> {
        let looking = |source: io::Error| {
            storage_error(
                self.home,
                self.input,
                format!("cannot compare with {}", archived.display()),
                source,
            )
        };
        let comparison =
            compare_stored(archived, self.compressed.file(), self.input.size).map_err(looking)?;
        match comparison {
            Comparison::Identical { compressed_bytes } => {
                make_existing_durable(archived).map_err(looking)?;
                Ok(Stored::AlreadyPresent { compressed_bytes })
            }
            Comparison::Different(detail) => {
                let rejected = self.keep_conflict()?;
                Err(ArchiveError::Conflict {
                    name: self.input.name(),
                    archived: archived.to_path_buf(),
                    rejected,
                    detail,
                })
            }
        }
    }
}

/// Hard-links the unnamed file as `directory/name`; should `directory` be on another file
/// system (an operator's symlink), writes a durable copy there instead.
pub(super) fn link_or_copy(file: &mut UnnamedFile, directory: &Path, name: &str) -> io::Result<()> {
    match file.link_into(directory, name) {
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
            let mut copy = UnnamedFile::create_in(directory, PRIVATE_FILE_MODE)?;
            let mut reader = file.file();
            reader.rewind()?;
            io::copy(&mut reader, &mut copy)?;
            copy.persist_as(name)
        }
        other => other,
    }
}
