//! DEST, the data directory a restore writes: taking it, and giving it back on failure.
//!
//! Owns: [`prepare`] and [`PreparedDest`] (with [`PreparedDest::undo`]).
//!
//! Invariants (S-8.1):
//! - pgbak writes only into a DEST that does not exist (it is created, mode 0700, and its
//!   parent must exist: a typo in a parent should fail, not grow a tree) or that is an empty
//!   directory (its mode is set to 0700, what PostgreSQL requires of a data directory).
//!   Anything else is refused before a byte is written.
//! - A failed restore leaves no half-restored directory that could be mistaken for a whole
//!   one: [`PreparedDest::undo`] removes DEST if pgbak created it, or empties it if it was
//!   given empty. Removal never follows a symlink (std's `remove_dir_all` does not), so a
//!   symlink extracted into DEST cannot make cleanup delete anything outside it.

use crate::restore::error::RestoreError;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// PostgreSQL refuses a data directory readable by others (0700, or 0750 with group access,
/// which an operator can set later with `chmod`).
pub(crate) const DATA_DIRECTORY_MODE: u32 = 0o700;

/// DEST, taken for a restore.
#[derive(Debug)]
pub(crate) struct PreparedDest {
    pub(crate) path: PathBuf,
    /// pgbak created DEST (so undo removes it) rather than being given it empty.
    created: bool,
}

/// Checks DEST and takes it (see the module header).
pub(crate) fn prepare(dest: &Path) -> Result<PreparedDest, RestoreError> {
    match fs::metadata(dest) {
        Ok(metadata) if !metadata.is_dir() => Err(RestoreError::DestNotDirectory {
            dest: dest.to_owned(),
        }),
        Ok(_) => {
            let mut entries =
                fs::read_dir(dest).map_err(RestoreError::io("reading the directory", dest))?;
            if entries.next().is_some() {
                return Err(RestoreError::DestNotEmpty {
                    dest: dest.to_owned(),
                });
            }
            fs::set_permissions(dest, fs::Permissions::from_mode(DATA_DIRECTORY_MODE))
                .map_err(RestoreError::io("setting the mode of", dest))?;
            Ok(PreparedDest {
                path: dest.to_owned(),
                created: false,
            })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parent = match dest.parent() {
                Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
                Some(parent) => parent,
                None => Path::new("/"),
            };
            if !parent.is_dir() {
                return Err(RestoreError::DestParentMissing {
                    dest: dest.to_owned(),
                    parent: parent.to_owned(),
                });
            }
            fs::DirBuilder::new()
                .mode(DATA_DIRECTORY_MODE)
                .create(dest)
                .map_err(RestoreError::io("creating the directory", dest))?;
            // The umask may have taken bits away from 0700; set exactly that.
            let taken = PreparedDest {
                path: dest.to_owned(),
                created: true,
            };
            fs::set_permissions(dest, fs::Permissions::from_mode(DATA_DIRECTORY_MODE))
                .map_err(RestoreError::io("setting the mode of", dest))?;
            Ok(taken)
        }
        Err(error) => Err(RestoreError::io("looking at", dest)(error)),
    }
}

impl PreparedDest {
    /// Removes what the restore wrote: DEST itself if pgbak created it, else everything in it.
    pub(crate) fn undo(&self) -> io::Result<()> {
        if self.created {
            return match fs::remove_dir_all(&self.path) {
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            // `file_type` does not follow symlinks: a symlink is removed, never its target.
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Undoes the restore after `failure`; the error to report.
    pub(crate) fn fail(&self, failure: RestoreError) -> RestoreError {
        match self.undo() {
            Ok(()) => failure,
            Err(source) => RestoreError::Cleanup {
                dest: self.path.clone(),
                failure: crate::error::one_line(&failure),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_new_dest_is_created_0700_and_removed_by_undo() {
        let scratch = ScratchDirectory::new("dest-new");
        let dest = scratch.0.join("data");
        let taken = prepare(&dest).unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o700);
        fs::create_dir(dest.join("base")).unwrap();
        fs::write(dest.join("base/1"), b"x").unwrap();
        taken.undo().unwrap();
        assert!(!dest.exists());
    }

    #[test]
    fn an_empty_dest_is_taken_and_emptied_by_undo_but_kept() {
        let scratch = ScratchDirectory::new("dest-empty");
        let dest = scratch.0.join("data");
        fs::create_dir(&dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
        let taken = prepare(&dest).unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o700);
        let outside = scratch.0.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
        fs::create_dir(dest.join("global")).unwrap();
        taken.undo().unwrap();
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
        assert!(outside.join("keep").exists(), "undo followed a symlink");
    }

    #[test]
    fn a_non_empty_dest_a_file_or_a_missing_parent_is_refused_untouched() {
        let scratch = ScratchDirectory::new("dest-refused");
        let full = scratch.0.join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("PG_VERSION"), b"15\n").unwrap();
        assert!(matches!(
            prepare(&full),
            Err(RestoreError::DestNotEmpty { .. })
        ));
        assert!(full.join("PG_VERSION").exists());
        let file = scratch.0.join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            prepare(&file),
            Err(RestoreError::DestNotDirectory { .. })
        ));
        let orphan = scratch.0.join("no/such/parent");
        assert!(matches!(
            prepare(&orphan),
            Err(RestoreError::DestParentMissing { .. })
        ));
        assert!(!scratch.0.join("no").exists());
    }
}
