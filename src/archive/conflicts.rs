//! `$PGBAK/conflicts/` (S-2.10): where a rejected copy of a file already stored with other
//! bytes is kept, once per distinct content, while the copies stay within
//! `wal.conflicts_max_bytes`; the `not-kept` note when the cap refused one; and the usage
//! that `status` reports.
//!
//! Invariant: a kept copy is complete and durable before its name exists (it is linked from
//! an unnamed file); the note is advisory, like a log line.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::ArchiveError;
use super::CONFLICT_NAME_ATTEMPTS_MAX;
use super::RejectedCopy;
use super::Store;
use super::error::storage_error;
use super::existing::Comparison;
use super::existing::compare_stored;
use super::existing::open_stored;
use super::store::link_or_copy;
use crate::home::environment::PgbakHome;
use crate::home::names::CONFLICTS_NOT_KEPT_NOTE;
use crate::os::durable::{self, PRIVATE_FILE_MODE};

impl Store<'_, '_> {
    /// S-2.10: the rejected bytes, once per distinct content, as
    /// `$PGBAK/conflicts/NAME.TIMESTAMP.zst` (0600, durable), while the copies there stay within
    /// `wal.conflicts_max_bytes`. PostgreSQL retries a failing call forever, so a copy made
    /// per call would fill the disk: a copy of `NAME` with the same content (compared as in
    /// S-2.4) is reused. Concurrent calls can each keep a copy before seeing the other's, so
    /// the cap can be passed by what those few calls hold, never by retries.
    pub(super) fn keep_conflict(&mut self) -> Result<RejectedCopy, ArchiveError> {
        let conflicts = self.home.conflicts_path();
        let keep_error = |path: &Path, source: io::Error| {
            storage_error(
                self.home,
                self.input,
                format!("cannot keep the rejected file in {}", path.display()),
                source,
            )
        };
        durable::create_private_directory(&conflicts)
            .map_err(|source| keep_error(&conflicts, source))?;
        let prefix = format!("{}.", self.input.name);
        let mut used_bytes = 0u64;
        let mut same_name = Vec::new();
        let entries =
            std::fs::read_dir(&conflicts).map_err(|source| keep_error(&conflicts, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| keep_error(&conflicts, source))?;
            let metadata = entry
                .metadata()
                .map_err(|source| keep_error(&entry.path(), source))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|name| name.ends_with(".zst")) else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            used_bytes = used_bytes.saturating_add(metadata.len());
            if name.starts_with(&prefix) {
                same_name.push(entry.path());
            }
        }
        same_name.sort();
        for path in same_name {
            let comparison = compare_stored(&path, self.compressed.file(), self.input.size)
                .map_err(|source| keep_error(&path, source))?;
            if let Comparison::Identical { .. } = comparison {
                return Ok(RejectedCopy::Kept(path));
            }
        }
        let timestamp = self.now.to_timestamp_string();
        if used_bytes.saturating_add(self.compressed_bytes) > self.conflicts_max_bytes {
            // Best effort: the refusal itself is the error PostgreSQL logs; the note is what
            // `status` shows afterwards.
            let _ = write_not_kept_note(&conflicts, &format!("{} at {timestamp}", self.input.name));
            return Ok(RejectedCopy::NotKept {
                conflicts,
                used_bytes,
                max_bytes: self.conflicts_max_bytes,
            });
        }
        for attempt in 1..=CONFLICT_NAME_ATTEMPTS_MAX {
            let name = if attempt == 1 {
                format!("{}.{timestamp}.zst", self.input.name)
            } else {
                format!("{}.{timestamp}.{attempt}.zst", self.input.name)
            };
            let path = conflicts.join(&name);
            match link_or_copy(self.compressed, &conflicts, &name) {
                Ok(()) => {
                    // There was room for this copy: the cap no longer refuses.
                    let _ = std::fs::remove_file(conflicts.join(CONFLICTS_NOT_KEPT_NOTE));
                    return Ok(RejectedCopy::Kept(path));
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    // Taken meanwhile, by a concurrent call with this content or another.
                    let comparison = compare_stored(&path, self.compressed.file(), self.input.size)
                        .map_err(|source| keep_error(&path, source))?;
                    if let Comparison::Identical { .. } = comparison {
                        return Ok(RejectedCopy::Kept(path));
                    }
                }
                Err(source) => return Err(keep_error(&path, source)),
            }
        }
        Err(storage_error(
            self.home,
            self.input,
            format!(
                "cannot keep the rejected file in {}: {CONFLICT_NAME_ATTEMPTS_MAX} names for \
                 this second are taken",
                conflicts.display()
            ),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }
}

/// Replaces the note of S-2.10 (see [`CONFLICTS_NOT_KEPT_NOTE`]). Advisory, like a log line:
/// not fsynced, and a torn note only garbles what `status` prints.
pub(super) fn write_not_kept_note(conflicts: &Path, line: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut note = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(conflicts.join(CONFLICTS_NOT_KEPT_NOTE))?;
    if !note.metadata()?.is_file() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    note.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    note.write_all(format!("{line}\n").as_bytes())
}

/// The most of the note `status` reads.
pub(super) const NOT_KEPT_NOTE_BYTES_MAX: u64 = 1024;

/// What `$PGBAK/conflicts/` holds (S-2.10), for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConflictsUsage {
    /// Kept copies (`*.zst`).
    pub files: u64,
    pub bytes: u64,
    /// The note's line when the cap refused a copy since the last copy kept.
    pub not_kept: Option<String>,
}

/// Counts the kept copies in `conflicts/` (a missing directory holds none).
pub fn conflicts_usage(home: &PgbakHome) -> io::Result<ConflictsUsage> {
    let directory = home.conflicts_path();
    let mut usage = ConflictsUsage::default();
    let entries = match std::fs::read_dir(&directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(usage),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let metadata = entry.metadata()?;
        let name = entry.file_name();
        if !metadata.is_file() {
            continue;
        }
        if name.to_str().is_some_and(|name| name.ends_with(".zst")) {
            usage.files += 1;
            usage.bytes = usage.bytes.saturating_add(metadata.len());
        } else if name == CONFLICTS_NOT_KEPT_NOTE {
            let Ok(Ok(file)) = open_stored(&entry.path()) else {
                continue;
            };
            let mut note = String::new();
            let _ = file.take(NOT_KEPT_NOTE_BYTES_MAX).read_to_string(&mut note);
            usage.not_kept = Some(note.trim().to_string());
        }
    }
    Ok(usage)
}
