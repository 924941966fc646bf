//! The two directory operations of the sync around a base backup: pointing `$PGBAK/current`
//! at a finished directory, atomically (a symlink renamed over the old one, S-4.5), and
//! removing a failed pending directory.
//!
//! Invariants: `current` always names a directory or nothing, never a half-made link; a
//! removal only ever touches a directory pgbak created, and each step is fsynced (S-2.3).

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
