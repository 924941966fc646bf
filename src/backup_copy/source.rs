//! Where a restore reads from (S-8.1): a [`Source`] is a base backup directory and the WAL pool,
//! the directories searched for `pg_wal/NAME.zst`, newest first.
//!
//! Owns: the resolution of `--from` ([`Source::resolve`]). It works on `$PGBAK`, on one
//! `TIMESTAMP/` directory, or on an offsite copy with the same layout, with `PGBAK` unset and
//! without the journal: only the directory tree is read (read-only).
//!
//! - no `--from`: `$PGBAK` as a home;
//! - `--from TIMESTAMP` (a bare name that parses as a directory name, with `$PGBAK` known):
//!   that directory of `$PGBAK` is the base, every directory of `$PGBAK` is in the pool (WAL
//!   goes into every pending and current directory, S-4.1, so an older directory's WAL goes on
//!   in the newer ones);
//! - `--from PATH`: with `base.tzst` or `pg_wal/` it is one backup directory (base and pool);
//!   holding `TIMESTAMP/` directories it is a home; anything else is refused.
//!
//! In a home, the base is the directory `current` names if it has `base.tzst`, else the newest
//! directory with `base.tzst`. Invariants: a directory without a regular `base.tzst` is never a
//! base (pending or failed), but its WAL counts; every path in a `Source` is absolute, so the
//! `restore_command` written from [`Source::origin`] works from any working directory.

use super::error::BackupCopyError;
use crate::home::names::{BASE_FILE_NAME, WAL_DIRECTORY_NAME};
use crate::home::tree_scan::{self, ScanError};
use crate::timestamp::DirectoryName;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A home (`$PGBAK` or a copy of it) or a single backup directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Home,
    Directory,
}

/// One backup directory of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupDirectory {
    /// `None` for a single directory whose name is not a `TIMESTAMP` (a renamed copy).
    pub name: Option<DirectoryName>,
    pub path: PathBuf,
    pub has_base: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub kind: SourceKind,
    /// The home or the single directory, absolute: what `restore-wal --from` is given.
    pub origin: PathBuf,
    /// Newest first. Their paths, in this order, are the WAL pool.
    pub directories: Vec<BackupDirectory>,
    /// The directory asked for (`--from TIMESTAMP`, a single directory) or picked (a home).
    wanted_base: Option<PathBuf>,
}

fn unreadable(path: &Path) -> impl FnOnce(io::Error) -> BackupCopyError + '_ {
    move |source| BackupCopyError::Unreadable {
        path: path.to_owned(),
        source,
    }
}

impl From<ScanError> for BackupCopyError {
    fn from(error: ScanError) -> Self {
        BackupCopyError::Unreadable {
            path: error.path,
            source: error.source,
        }
    }
}

/// Whether `path` is (`Ok(true)`) or is not (`Ok(false)`) of the kind `wanted` says, without
/// following a link: a `base.tzst` that is a link is not a base backup pgbak wrote.
fn entry_is(path: &Path, wanted: fn(&fs::Metadata) -> bool) -> Result<bool, BackupCopyError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(wanted(&metadata)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(unreadable(path)(error)),
    }
}

fn has_base(directory: &Path) -> Result<bool, BackupCopyError> {
    entry_is(&directory.join(BASE_FILE_NAME), fs::Metadata::is_file)
}

fn has_wal_directory(directory: &Path) -> Result<bool, BackupCopyError> {
    entry_is(&directory.join(WAL_DIRECTORY_NAME), fs::Metadata::is_dir)
}

impl Source {
    /// Resolves `--from` (`from`) against `$PGBAK` (`pgbak`, `None` when unset), as the module
    /// header says. Relative paths are made absolute against the working directory.
    pub fn resolve(from: Option<&Path>, pgbak: Option<&Path>) -> Result<Source, BackupCopyError> {
        let timestamp = from.and_then(|f| f.to_str()).and_then(DirectoryName::parse);
        match (from, pgbak, timestamp) {
            (None, None, _) => Err(BackupCopyError::NoSource),
            (None, Some(pgbak), _) => Source::home(&absolute(pgbak)?, None),
            (Some(_), Some(pgbak), Some(name)) => Source::home(&absolute(pgbak)?, Some(name)),
            (Some(path), _, _) => Source::at_path(&absolute(path)?),
        }
    }

    fn at_path(path: &Path) -> Result<Source, BackupCopyError> {
        let metadata = fs::metadata(path).map_err(unreadable(path))?;
        if !metadata.is_dir() {
            return Err(BackupCopyError::NotABackupSource {
                path: path.to_owned(),
            });
        }
        let base = has_base(path)?;
        if base || has_wal_directory(path)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(DirectoryName::parse);
            return Ok(Source {
                kind: SourceKind::Directory,
                origin: path.to_owned(),
                directories: vec![BackupDirectory {
                    name,
                    path: path.to_owned(),
                    has_base: base,
                }],
                wanted_base: Some(path.to_owned()),
            });
        }
        if tree_scan::timestamp_directories(path)?.is_empty() {
            return Err(BackupCopyError::NotABackupSource {
                path: path.to_owned(),
            });
        }
        Source::home(path, None)
    }

    fn home(home: &Path, wanted: Option<DirectoryName>) -> Result<Source, BackupCopyError> {
        let mut directories = Vec::new();
        for (name, path) in tree_scan::timestamp_directories(home)?.into_iter().rev() {
            directories.push(BackupDirectory {
                name: Some(name),
                has_base: has_base(&path)?,
                path,
            });
        }
        let wanted_base = match wanted {
            Some(name) => {
                let path = home.join(name.to_string());
                if !directories.iter().any(|d| d.path == path) {
                    return Err(BackupCopyError::UnknownDirectory { path });
                }
                Some(path)
            }
            None => {
                let current = tree_scan::current_link_target(home);
                let with_base = |d: &&BackupDirectory| d.has_base;
                directories
                    .iter()
                    .filter(with_base)
                    .find(|d| d.name == current)
                    .or_else(|| directories.iter().find(|d| d.has_base))
                    .map(|d| d.path.clone())
            }
        };
        Ok(Source {
            kind: SourceKind::Home,
            origin: home.to_owned(),
            directories,
            wanted_base,
        })
    }

    /// The directories searched for WAL, newest first.
    pub fn pool(&self) -> Vec<PathBuf> {
        self.directories.iter().map(|d| d.path.clone()).collect()
    }

    /// The base backup directory, or why there is none.
    pub fn base(&self) -> Result<&Path, BackupCopyError> {
        let Some(wanted) = &self.wanted_base else {
            return Err(BackupCopyError::NoBaseInHome {
                path: self.origin.clone(),
            });
        };
        match self.directories.iter().find(|d| &d.path == wanted) {
            Some(directory) if directory.has_base => Ok(&directory.path),
            _ => Err(BackupCopyError::NoBase {
                path: wanted.clone(),
            }),
        }
    }

    /// The same source with another of its directories as the base (what `choose` picked).
    pub fn with_base(mut self, directory: &Path) -> Result<Source, BackupCopyError> {
        if !self.directories.iter().any(|d| d.path == directory) {
            return Err(BackupCopyError::UnknownDirectory {
                path: directory.to_owned(),
            });
        }
        self.wanted_base = Some(directory.to_owned());
        self.base()?;
        Ok(self)
    }

    /// The directories with a base backup, newest first.
    pub fn bases(&self) -> impl Iterator<Item = &BackupDirectory> {
        self.directories.iter().filter(|d| d.has_base)
    }
}

fn absolute(path: &Path) -> Result<PathBuf, BackupCopyError> {
    std::path::absolute(path).map_err(unreadable(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    fn directory(root: &Path, name: &str, base: bool) -> PathBuf {
        let path = root.join(name);
        fs::create_dir_all(path.join("pg_wal")).unwrap();
        if base {
            fs::write(path.join("base.tzst"), b"base").unwrap();
        }
        path
    }

    /// A home with a sealed, a current and a pending directory.
    fn home(scratch: &ScratchDirectory) -> (PathBuf, PathBuf, PathBuf) {
        let sealed = directory(&scratch.0, "20261201T000000Z", true);
        let current = directory(&scratch.0, "20261202T000000Z", true);
        let pending = directory(&scratch.0, "20261203T000000Z", false);
        std::os::unix::fs::symlink("20261202T000000Z", scratch.0.join("current")).unwrap();
        fs::create_dir(scratch.0.join("scripts")).unwrap();
        (sealed, current, pending)
    }

    #[test]
    fn without_from_pgbak_is_the_home_and_current_the_base() {
        let scratch = ScratchDirectory::new("source-home");
        let (sealed, current, pending) = home(&scratch);
        let source = Source::resolve(None, Some(&scratch.0)).unwrap();
        assert_eq!(source.kind, SourceKind::Home);
        assert_eq!(source.origin, scratch.0);
        assert_eq!(source.base().unwrap(), current);
        assert_eq!(
            source.pool(),
            vec![pending, current.clone(), sealed.clone()]
        );
        assert_eq!(source.bases().count(), 2);
        let older = source.with_base(&sealed).unwrap();
        assert_eq!(older.base().unwrap(), sealed);
    }

    #[test]
    fn a_home_without_a_current_link_uses_its_newest_base() {
        let scratch = ScratchDirectory::new("source-copy");
        let (_, current, _) = home(&scratch);
        fs::remove_file(scratch.0.join("current")).unwrap();
        let source = Source::resolve(Some(&scratch.0), None).unwrap();
        assert_eq!(source.kind, SourceKind::Home);
        assert_eq!(source.base().unwrap(), current);
    }

    #[test]
    fn from_timestamp_picks_that_directory_of_pgbak() {
        let scratch = ScratchDirectory::new("source-timestamp");
        let (sealed, _, _) = home(&scratch);
        let name = Path::new("20261201T000000Z");
        let source = Source::resolve(Some(name), Some(&scratch.0)).unwrap();
        assert_eq!(source.base().unwrap(), sealed);
        assert_eq!(source.pool().len(), 3);
        let pending = Source::resolve(Some(Path::new("20261203T000000Z")), Some(&scratch.0));
        let error = pending.unwrap().base().unwrap_err();
        assert!(matches!(error, BackupCopyError::NoBase { .. }), "{error}");
        let missing = Source::resolve(Some(Path::new("20261204T000000Z")), Some(&scratch.0));
        assert!(matches!(
            missing,
            Err(BackupCopyError::UnknownDirectory { .. })
        ));
    }

    #[test]
    fn from_a_directory_is_one_backup_directory() {
        let scratch = ScratchDirectory::new("source-one");
        let (_, current, pending) = home(&scratch);
        let source = Source::resolve(Some(&current), None).unwrap();
        assert_eq!(source.kind, SourceKind::Directory);
        assert_eq!(source.pool(), vec![current.clone()]);
        assert_eq!(source.base().unwrap(), current);
        // A pending directory's WAL still serves restore-wal; it is no base.
        let source = Source::resolve(Some(&pending), None).unwrap();
        assert_eq!(source.pool(), vec![pending]);
        assert!(matches!(source.base(), Err(BackupCopyError::NoBase { .. })));
    }

    #[test]
    fn anything_else_is_refused_with_one_line() {
        let scratch = ScratchDirectory::new("source-bad");
        let error = Source::resolve(Some(&scratch.0), None).unwrap_err();
        assert!(
            matches!(error, BackupCopyError::NotABackupSource { .. }),
            "{error}"
        );
        let error = Source::resolve(Some(&scratch.0.join("nothing")), None).unwrap_err();
        assert!(
            matches!(error, BackupCopyError::Unreadable { .. }),
            "{error}"
        );
        assert!(matches!(
            Source::resolve(None, None),
            Err(BackupCopyError::NoSource)
        ));
        fs::create_dir(scratch.0.join("20261201T000000Z")).unwrap();
        let empty_home = Source::resolve(Some(&scratch.0), None).unwrap();
        assert!(matches!(
            empty_home.base(),
            Err(BackupCopyError::NoBaseInHome { .. })
        ));
    }
}
