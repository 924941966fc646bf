//! The directory operations of the sync: pointing `$PGBAK/current` at a finished directory,
//! atomically (a symlink renamed over the old one, S-4.5), removing a failed pending
//! directory, and retention's two steps (S-8.3): moving a directory aside to
//! `.pruning-TIMESTAMP`, then removing it.
//!
//! Invariants: `current` always names a directory or nothing, never a half-made link; a
//! removal only ever touches a directory pgbak created, and each step is fsynced (S-2.3);
//! every step is idempotent, so a sync that died after it and before its record can repeat it.

use crate::home::environment::PgbakHome;
use crate::home::names::CURRENT_LINK_NAME;
use crate::os::durable::fsync_directory;
use crate::timestamp::DirectoryName;
use std::ffi::OsStr;
use std::io::{self};
use std::path::Path;

/// Removes `$PGBAK/DIRECTORY` with everything in it (a failed pending directory, S-4.5), then
/// fsyncs `$PGBAK`. Already missing is success. Refuses (an `InvalidInput` error) when
/// `$PGBAK/current` points at it: the current directory is never a failed one.
pub fn remove_failed_directory(home: &PgbakHome, directory: DirectoryName) -> io::Result<()> {
    let path = home.directory_path(directory);
    let name = directory.to_string();
    let current = home.current_link_path();
    match std::fs::read_link(&current) {
        Ok(target) if target.file_name() == Some(OsStr::new(&name)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not removed: {} points at it, so it is not a failed directory",
                    path.display(),
                    current.display()
                ),
            ));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: readlink: {error}", current.display()),
            ));
        }
    }
    match std::fs::remove_dir_all(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: remove: {error}", path.display()),
            ));
        }
    }
    // Also when it was already missing: a previous call may have crashed before this fsync.
    fsync_directory(&home.path)
}

/// Refuses (an `InvalidInput` error) when `$PGBAK/current` points at `directory`.
fn refuse_current(home: &PgbakHome, directory: DirectoryName, what: &str) -> io::Result<()> {
    let current = home.current_link_path();
    match std::fs::read_link(&current) {
        Ok(target) if target.file_name() == Some(OsStr::new(&directory.to_string())) => {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: not {what}: {} points at it",
                    home.directory_path(directory).display(),
                    current.display()
                ),
            ))
        }
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("{}: readlink: {error}", current.display()),
        )),
    }
}

/// Retention's first step (S-8.3): renames `$PGBAK/TIMESTAMP` to `$PGBAK/.pruning-TIMESTAMP`,
/// then fsyncs `$PGBAK`. After a crash it is repeated: a directory already moved (or gone)
/// is success, and the fsync covers a rename that was not yet durable. Refuses when
/// `$PGBAK/current` points at it, or when both names exist (nothing is overwritten).
pub fn move_directory_aside(home: &PgbakHome, directory: DirectoryName) -> io::Result<()> {
    refuse_current(home, directory, "pruned")?;
    let path = home.directory_path(directory);
    let aside = home.moved_aside_path(directory);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => {
            if std::fs::symlink_metadata(&aside).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{}: not moved aside: {} exists already",
                        path.display(),
                        aside.display()
                    ),
                ));
            }
            std::fs::rename(&path, &aside).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("{}: rename to {}: {error}", path.display(), aside.display()),
                )
            })?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: {error}", path.display()),
            ));
        }
    }
    fsync_directory(&home.path)
}

/// Retention's second step (S-8.3): removes `$PGBAK/.pruning-TIMESTAMP` with everything in
/// it, then fsyncs `$PGBAK`. Already gone is success.
pub fn remove_moved_aside(home: &PgbakHome, directory: DirectoryName) -> io::Result<()> {
    let aside = home.moved_aside_path(directory);
    match std::fs::remove_dir_all(&aside) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: remove: {error}", aside.display()),
            ));
        }
    }
    fsync_directory(&home.path)
}

/// Points `$PGBAK/current` at `DIRECTORY` atomically (S-4.3, S-1.3: a relative symlink
/// `current -> 20261124T154307Z`): a symlink `current.tmp-PID` renamed over `current`, then
/// `$PGBAK` fsynced. Idempotent. The directory must exist (`NotFound` otherwise, and `current`
/// is left as it was).
pub fn point_current_link_at(home: &PgbakHome, directory: DirectoryName) -> io::Result<()> {
    let name = directory.to_string();
    let path = home.directory_path(directory);
    let current = home.current_link_path();
    match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a directory; current not changed", path.display()),
            ));
        }
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: {error}; current not changed", path.display()),
            ));
        }
    }
    if std::fs::read_link(&current).is_ok_and(|target| target == Path::new(&name)) {
        // Already there; the fsync covers a previous call that crashed before its own.
        return fsync_directory(&home.path);
    }
    let temporary = home
        .path
        .join(format!("{CURRENT_LINK_NAME}.tmp-{}", std::process::id()));
    // A leftover from a crashed run that had the same pid.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("{}: remove: {error}", temporary.display()),
            ));
        }
    }
    std::os::unix::fs::symlink(&name, &temporary).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!("{}: symlink: {error}", temporary.display()),
        )
    })?;
    if let Err(error) = std::fs::rename(&temporary, &current) {
        let _ = std::fs::remove_file(&temporary);
        return Err(io::Error::new(
            error.kind(),
            format!(
                "{}: rename to {}: {error}",
                temporary.display(),
                current.display()
            ),
        ));
    }
    fsync_directory(&home.path)
}
