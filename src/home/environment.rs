//! Finding and checking `$PGBAK`, the one directory pgbak works in (S-1.1, S-1.4, S-1.5).
//!
//! Owns: [`PgbakHome`] (the checked directory and the names of everything inside it),
//! [`locate_pgbak`] for the commands that archive, sync or wait, [`locate_for_status`] for
//! `pgbak status`, [`locate_for_init`] for `pgbak init`, and [`EnvironmentError`] with its
//! operator hints.
//!
//! Invariants kept:
//! - A [`PgbakHome`] from [`locate_pgbak`] names an absolute path that was an existing directory
//!   owned by the user pgbak runs as when it was checked (S-1.1, S-1.4), in which nothing that
//!   pgbak reads to decide what to run could be changed by another user (S-1.5, see
//!   [`crate::home::strict_modes`]). pgbak never creates `$PGBAK` outside `pgbak init`
//!   (S-1.1), so nothing here creates anything.
//! - Only S-1.5 is relaxed for `status` (it reports the findings as a problem, since it runs
//!   nothing) and for `init` (which repairs the mode of `$PGBAK`); S-1.1 and S-1.4 hold for
//!   every command.
//! - The environment is read in exactly one place ([`PgbakHome::from_process_environment`] and
//!   its `init` twin); the checks themselves take the value as a parameter, so tests never touch
//!   the process environment.
//! - Every file and directory name inside `$PGBAK` is spelled once, in [`crate::home::names`].

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::names::BACKUP_SCRIPT_NAME;
use super::names::CONFIG_FILE_NAME;
use super::names::CONFLICTS_DIRECTORY_NAME;
use super::names::CURRENT_LINK_NAME;
use super::names::LOCK_FILE_NAME;
use super::names::SCRIPTS_DIRECTORY_NAME;
use crate::hint::OperatorHint;
use crate::home::strict_modes::{self, Insecurity};
use crate::timestamp::DirectoryName;

/// The environment variable that names the backup directory (seed: "Data is stored in a local
/// directory provided through the `PGBAK` environment variable").
pub const PGBAK_VARIABLE: &str = "PGBAK";

/// The example directory used in hints, where the FHS puts a service's state.
const EXAMPLE_PGBAK_PATH: &str = "/var/lib/pgbak";

/// A checked `$PGBAK`: the directory and the user that owns it (and so runs pgbak, S-1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgbakHome {
    /// Absolute path, exactly as given in `PGBAK` (not canonicalized: messages show what the
    /// operator wrote, and a symlinked `$PGBAK` keeps working if the link is moved).
    pub path: PathBuf,
    /// The uid that owns `path`, equal to the uid pgbak runs as. For `pgbak init` on a directory
    /// that does not exist yet, the uid that will own it once `init` creates it.
    pub owner_uid: u32,
}

impl PgbakHome {
    /// [`locate_pgbak`] with the process's `PGBAK` and effective uid: the checks every command
    /// but `init` runs first. The effective uid is the one that owns the files pgbak creates.
    pub fn from_process_environment() -> Result<PgbakHome, EnvironmentError> {
        locate_pgbak(
            std::env::var_os(PGBAK_VARIABLE),
            nix::unistd::geteuid().as_raw(),
        )
    }

    /// [`locate_for_status`] with the process's `PGBAK` and effective uid, for `pgbak status`.
    pub fn for_status_from_process_environment() -> Result<PgbakHome, EnvironmentError> {
        locate_for_status(
            std::env::var_os(PGBAK_VARIABLE),
            nix::unistd::geteuid().as_raw(),
        )
    }

    /// [`locate_for_init`] with the process's `PGBAK` and effective uid, for `pgbak init`.
    pub fn for_init_from_process_environment() -> Result<PgbakHome, EnvironmentError> {
        locate_for_init(
            std::env::var_os(PGBAK_VARIABLE),
            nix::unistd::geteuid().as_raw(),
        )
    }

    /// `$PGBAK/pgbak.lock`: the OFD locks and the journal (S-3).
    pub fn lock_file_path(&self) -> PathBuf {
        self.path.join(LOCK_FILE_NAME)
    }

    /// `$PGBAK/config.toml` (S-7); it may be absent.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE_NAME)
    }

    /// `$PGBAK/scripts`.
    pub fn scripts_path(&self) -> PathBuf {
        self.path.join(SCRIPTS_DIRECTORY_NAME)
    }

    /// `$PGBAK/scripts/backup` (S-5).
    pub fn backup_script_path(&self) -> PathBuf {
        self.scripts_path().join(BACKUP_SCRIPT_NAME)
    }

    /// `$PGBAK/scripts/prune` (S-8.3), optional.
    pub fn prune_script_path(&self) -> PathBuf {
        self.scripts_path().join(super::names::PRUNE_SCRIPT_NAME)
    }

    /// `$PGBAK/.pruning-TIMESTAMP`: where a directory being pruned is moved aside (S-8.3).
    pub fn moved_aside_path(&self, name: DirectoryName) -> PathBuf {
        self.path
            .join(format!("{}{name}", super::names::PRUNING_PREFIX))
    }

    /// `$PGBAK/current`, the relative symlink to the current directory (S-1.3).
    pub fn current_link_path(&self) -> PathBuf {
        self.path.join(CURRENT_LINK_NAME)
    }

    /// `$PGBAK/conflicts` (S-2.4).
    pub fn conflicts_path(&self) -> PathBuf {
        self.path.join(CONFLICTS_DIRECTORY_NAME)
    }

    /// `$PGBAK/TIMESTAMP`, one backup directory (S-1.2).
    pub fn directory_path(&self, name: DirectoryName) -> PathBuf {
        self.path.join(name.to_string())
    }
}

/// A user as shown in messages: `user postgres (uid 101)`, or `uid 4242` when the uid has no
/// passwd entry (a container without one, or a deleted account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    pub uid: u32,
    pub name: Option<String>,
}

impl UserIdentity {
    /// Looks the name up in the passwd database. A failed lookup is not an error: the uid alone
    /// still identifies the user, and this only feeds a message.
    pub fn look_up(uid: u32) -> UserIdentity {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|user| user.name);
        UserIdentity { uid, name }
    }
}

impl std::fmt::Display for UserIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "user {name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// Why `$PGBAK` cannot be used. Every message names the variable and, where there is one, the
/// path (S-1.1: "one clear line naming the problem").
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    #[error("PGBAK is not set")]
    Unset,

    #[error("PGBAK is set but empty")]
    Empty,

    #[error("PGBAK={} is not an absolute path", .path.display())]
    NotAbsolute { path: PathBuf },

    #[error("PGBAK={} does not exist", .path.display())]
    Missing { path: PathBuf },

    #[error("PGBAK={} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },

    #[error("PGBAK={} cannot be read", .path.display())]
    Unreadable { path: PathBuf, source: io::Error },

    #[error("PGBAK={} is owned by {owner}, but pgbak runs as {running}", .path.display())]
    OwnedByAnotherUser {
        path: PathBuf,
        owner: UserIdentity,
        running: UserIdentity,
    },

    /// Only from [`locate_for_init`]: `init` creates the last component, not a whole chain,
    /// so a typo in the middle of the path is caught instead of creating a stray tree.
    #[error("PGBAK={}: its parent directory {} does not exist", .path.display(), .parent.display())]
    ParentMissing { path: PathBuf, parent: PathBuf },

    /// Only from `pgbak init`, when `mkdir` itself fails (usually: the parent belongs to root).
    #[error("PGBAK={} cannot be created", .path.display())]
    CannotCreate {
        path: PathBuf,
        running: UserIdentity,
        source: io::Error,
    },

    /// S-1.5: someone besides the owner can change `$PGBAK` or what pgbak runs from it. The
    /// message names the path, its owner and its mode (see [`Insecurity`]).
    /// Boxed: the finding is large, and every command's `Result` carries this enum.
    #[error("{0}")]
    Insecure(Box<Insecurity>),
}

impl OperatorHint for EnvironmentError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            EnvironmentError::Unset | EnvironmentError::Empty => format!(
                "set PGBAK where PostgreSQL runs: Environment=PGBAK={EXAMPLE_PGBAK_PATH} under \
                 [Service] in a systemd drop-in (see pgbak init), or export \
                 PGBAK={EXAMPLE_PGBAK_PATH} in a shell"
            ),
            EnvironmentError::NotAbsolute { .. } => format!(
                "PostgreSQL runs archive_command in its data directory, so PGBAK must be \
                 absolute, e.g. PGBAK={EXAMPLE_PGBAK_PATH}"
            ),
            EnvironmentError::Missing { path } => format!(
                "create it with: PGBAK={} pgbak init (as the PostgreSQL OS user)",
                path.display()
            ),
            EnvironmentError::NotADirectory { path } => format!(
                "point PGBAK at a directory, or move {} away and run pgbak init",
                path.display()
            ),
            EnvironmentError::Unreadable { path, .. } => format!(
                "check that the user running pgbak can search every directory leading to {}",
                path.display()
            ),
            EnvironmentError::OwnedByAnotherUser { path, owner, .. } => match &owner.name {
                Some(name) => {
                    format!("run pgbak as {name}, e.g. runuser -u {name} -- pgbak ...")
                }
                None => format!(
                    "run pgbak as uid {}, the owner of {}, or chown -R the directory to the \
                     PostgreSQL OS user",
                    owner.uid,
                    path.display()
                ),
            },
            EnvironmentError::ParentMissing { parent, .. } => format!(
                "create {} first, or fix a typo in PGBAK (pgbak init creates only the last \
                 directory)",
                parent.display()
            ),
            EnvironmentError::CannotCreate { path, running, .. } => match &running.name {
                Some(name) => format!(
                    "create it as root for the PostgreSQL OS user, e.g. install -d -m 0700 -o \
                     {name} {}, then run pgbak init again as {name}",
                    path.display()
                ),
                None => format!(
                    "create it as root with install -d -m 0700 -o {} {}, then run pgbak init again",
                    running.uid,
                    path.display()
                ),
            },
            EnvironmentError::Insecure(insecurity) => insecurity.repair(),
        })
    }
}

/// S-1.1, S-1.4 and S-1.5 for every command that archives, syncs or waits: `PGBAK` (the
/// variable's value, `None` when unset) must be an absolute path of an existing directory owned
/// by `running_uid`, and neither it nor what pgbak runs from it may be changeable by anyone
/// else (the first such finding is the error).
pub fn locate_pgbak(
    env_value: Option<OsString>,
    running_uid: u32,
) -> Result<PgbakHome, EnvironmentError> {
    let home = locate_for_status(env_value, running_uid)?;
    match strict_modes::inspect(&home).into_iter().next() {
        Some(insecurity) => Err(EnvironmentError::Insecure(Box::new(insecurity))),
        None => Ok(home),
    }
}

/// [`locate_pgbak`] without S-1.5, for `pgbak status`: it runs nothing from `$PGBAK`, so it
/// reports what [`strict_modes::inspect`] finds instead of refusing to say anything.
pub fn locate_for_status(
    env_value: Option<OsString>,
    running_uid: u32,
) -> Result<PgbakHome, EnvironmentError> {
    let path = absolute_path_from(env_value)?;
    match examine(&path)? {
        Examined::Missing => Err(EnvironmentError::Missing { path }),
        Examined::Directory { owner_uid } => check_owner(path, owner_uid, running_uid),
    }
}

/// The checks of [`locate_pgbak`] for `pgbak init` (S-8.4), which may create `$PGBAK`: a missing
/// directory is accepted when its parent is an existing directory, and the returned
/// [`PgbakHome::owner_uid`] is then `running_uid` (init creates it as that user).
pub fn locate_for_init(
    env_value: Option<OsString>,
    running_uid: u32,
) -> Result<PgbakHome, EnvironmentError> {
    let path = absolute_path_from(env_value)?;
    match examine(&path)? {
        Examined::Directory { owner_uid } => check_owner(path, owner_uid, running_uid),
        Examined::Missing => {
            // An absolute path other than "/" always has a parent, and "/" always exists, so
            // the fallback is never used; it only avoids an unwrap.
            let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            match std::fs::metadata(&parent) {
                Ok(metadata) if metadata.is_dir() => Ok(PgbakHome {
                    path,
                    owner_uid: running_uid,
                }),
                Ok(_) => Err(EnvironmentError::ParentMissing { path, parent }),
                Err(error) if is_missing(&error) => {
                    Err(EnvironmentError::ParentMissing { path, parent })
                }
                Err(source) => Err(EnvironmentError::Unreadable {
                    path: parent,
                    source,
                }),
            }
        }
    }
}

fn absolute_path_from(env_value: Option<OsString>) -> Result<PathBuf, EnvironmentError> {
    let value = env_value.ok_or(EnvironmentError::Unset)?;
    if value.is_empty() {
        return Err(EnvironmentError::Empty);
    }
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(EnvironmentError::NotAbsolute { path });
    }
    Ok(path)
}

enum Examined {
    Missing,
    Directory { owner_uid: u32 },
}

/// `stat` (following symlinks: a symlinked `$PGBAK` is a legitimate setup, e.g. onto a mount).
fn examine(path: &Path) -> Result<Examined, EnvironmentError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(Examined::Directory {
            owner_uid: metadata.uid(),
        }),
        Ok(_) => Err(EnvironmentError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(error) if is_missing(&error) => Ok(Examined::Missing),
        Err(source) => Err(EnvironmentError::Unreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// ENOENT only. ENOTDIR (a component is a file) stays an "unreadable" error: the path is not
/// merely missing, and `init` could not create it either.
fn is_missing(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound
}

/// S-1.4: a file created by `sudo pgbak sync` as root would break the next archive call made
/// as the PostgreSQL user, so pgbak refuses to run as anyone but the owner — root included.
fn check_owner(
    path: PathBuf,
    owner_uid: u32,
    running_uid: u32,
) -> Result<PgbakHome, EnvironmentError> {
    if owner_uid != running_uid {
        return Err(EnvironmentError::OwnedByAnotherUser {
            path,
            owner: UserIdentity::look_up(owner_uid),
            running: UserIdentity::look_up(running_uid),
        });
    }
    Ok(PgbakHome { path, owner_uid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use crate::test_support::ScratchDirectory;

    fn my_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    /// A uid that exists nowhere, so messages fall back to the number.
    const UNKNOWN_UID: u32 = 3_999_999_917;

    #[test]
    fn accepts_an_existing_directory_owned_by_the_running_user() {
        let scratch = ScratchDirectory::new("ok");
        let home = locate_pgbak(Some(scratch.0.clone().into_os_string()), my_uid()).unwrap();
        assert_eq!(home.path, scratch.0);
        assert_eq!(home.owner_uid, my_uid());
        assert_eq!(home.lock_file_path(), scratch.0.join("pgbak.lock"));
        assert_eq!(home.config_path(), scratch.0.join("config.toml"));
        assert_eq!(home.backup_script_path(), scratch.0.join("scripts/backup"));
        assert_eq!(home.current_link_path(), scratch.0.join("current"));
        assert_eq!(home.conflicts_path(), scratch.0.join("conflicts"));
        assert_eq!(
            home.directory_path(DirectoryName(1_795_534_987)),
            scratch.0.join("20261124T154307Z")
        );
    }

    #[test]
    fn a_writable_pgbak_is_refused_except_for_status() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = ScratchDirectory::new("strict");
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o777)).unwrap();
        let value = || Some(scratch.0.clone().into_os_string());
        let error = locate_pgbak(value(), my_uid()).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "{}: writable by group and others (mode 0777",
                scratch.0.display()
            )),
            "{error}"
        );
        assert_eq!(
            error.hint().unwrap(),
            format!("chmod 0700 {} (pgbak init does it)", scratch.0.display())
        );
        assert_eq!(
            locate_for_status(value(), my_uid()).unwrap().path,
            scratch.0
        );
        // S-1.4 still holds for status.
        assert!(matches!(
            locate_for_status(value(), UNKNOWN_UID),
            Err(EnvironmentError::OwnedByAnotherUser { .. })
        ));
    }

    #[test]
    fn unset_and_empty_are_refused_with_a_hint_for_postgresql() {
        let unset = locate_pgbak(None, 0).unwrap_err();
        assert_eq!(unset.to_string(), "PGBAK is not set");
        assert!(
            unset
                .hint()
                .unwrap()
                .contains("Environment=PGBAK=/var/lib/pgbak")
        );
        let empty = locate_pgbak(Some(OsString::new()), 0).unwrap_err();
        assert!(matches!(empty, EnvironmentError::Empty));
        assert!(empty.hint().unwrap().contains("export PGBAK="));
    }

    #[test]
    fn a_relative_path_is_refused_even_if_it_exists() {
        let error = locate_pgbak(Some(".".into()), my_uid()).unwrap_err();
        assert_eq!(error.to_string(), "PGBAK=. is not an absolute path");
        assert!(matches!(error, EnvironmentError::NotAbsolute { .. }));
    }

    #[test]
    fn a_missing_directory_points_at_pgbak_init() {
        let scratch = ScratchDirectory::new("missing");
        let path = scratch.0.join("absent");
        let error = locate_pgbak(Some(path.clone().into_os_string()), my_uid()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("PGBAK={} does not exist", path.display())
        );
        assert!(error.hint().unwrap().contains("pgbak init"));
    }

    #[test]
    fn a_file_is_not_a_directory_and_a_path_through_a_file_is_unreadable() {
        let scratch = ScratchDirectory::new("file");
        let file = scratch.0.join("file");
        fs::write(&file, b"x").unwrap();
        let error = locate_pgbak(Some(file.clone().into_os_string()), my_uid()).unwrap_err();
        assert!(
            matches!(error, EnvironmentError::NotADirectory { .. }),
            "{error}"
        );

        let through = file.join("below");
        let error = locate_pgbak(Some(through.clone().into_os_string()), my_uid()).unwrap_err();
        match &error {
            EnvironmentError::Unreadable { path, source } => {
                assert_eq!(path, &through);
                assert_eq!(source.raw_os_error(), Some(nix::libc::ENOTDIR));
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
        // The cause is the error's source, not part of its message, so main.rs's one line
        // (which joins the chain) prints it exactly once.
        assert_eq!(
            crate::error::one_line(&error),
            format!(
                "PGBAK={} cannot be read: Not a directory (os error 20)",
                through.display()
            )
        );
    }

    #[test]
    fn another_owner_is_refused_naming_both_users_with_names_and_uids() {
        let scratch = ScratchDirectory::new("owner");
        // The directory belongs to the test's user (root in CI); pretend to run as a uid with
        // no passwd entry, so one side has a name and the other falls back to the number.
        let error =
            locate_pgbak(Some(scratch.0.clone().into_os_string()), UNKNOWN_UID).unwrap_err();
        let owner = UserIdentity::look_up(my_uid());
        assert_eq!(
            error.to_string(),
            format!(
                "PGBAK={} is owned by {owner}, but pgbak runs as uid {UNKNOWN_UID}",
                scratch.0.display()
            )
        );
        if my_uid() == 0 {
            assert!(error.to_string().contains("is owned by user root (uid 0)"));
            assert_eq!(
                error.hint().unwrap(),
                "run pgbak as root, e.g. runuser -u root -- pgbak ..."
            );
        }
    }

    #[test]
    fn an_owner_without_a_passwd_entry_is_shown_by_number() {
        if my_uid() != 0 {
            return; // chown needs root.
        }
        let scratch = ScratchDirectory::new("chown");
        std::os::unix::fs::chown(&scratch.0, Some(UNKNOWN_UID), None).unwrap();
        let error = locate_pgbak(Some(scratch.0.clone().into_os_string()), 0).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "PGBAK={} is owned by uid {UNKNOWN_UID}, but pgbak runs as user root (uid 0)",
                scratch.0.display()
            )
        );
        assert!(
            error
                .hint()
                .unwrap()
                .contains(&format!("run pgbak as uid {UNKNOWN_UID}"))
        );
    }

    #[test]
    fn init_accepts_a_missing_directory_whose_parent_exists() {
        let scratch = ScratchDirectory::new("init");
        let path = scratch.0.join("pgbak");
        let home = locate_for_init(Some(path.clone().into_os_string()), UNKNOWN_UID).unwrap();
        assert_eq!(
            home,
            PgbakHome {
                path,
                owner_uid: UNKNOWN_UID
            }
        );
    }

    #[test]
    fn init_refuses_a_missing_parent_and_still_checks_an_existing_directory() {
        let scratch = ScratchDirectory::new("init-parent");
        let path = scratch.0.join("typo/pgbak");
        let error = locate_for_init(Some(path.clone().into_os_string()), my_uid()).unwrap_err();
        match &error {
            EnvironmentError::ParentMissing { parent, .. } => {
                assert_eq!(parent, &scratch.0.join("typo"))
            }
            other => panic!("expected ParentMissing, got {other:?}"),
        }
        let error = locate_for_init(Some(scratch.0.clone().into_os_string()), UNKNOWN_UID);
        assert!(matches!(
            error,
            Err(EnvironmentError::OwnedByAnotherUser { .. })
        ));
        let error = locate_for_init(Some("relative".into()), my_uid());
        assert!(matches!(error, Err(EnvironmentError::NotAbsolute { .. })));
    }

    #[test]
    fn every_error_has_a_one_line_hint() {
        let errors = [
            EnvironmentError::Unset,
            EnvironmentError::Empty,
            EnvironmentError::NotAbsolute { path: "x".into() },
            EnvironmentError::Missing { path: "/x".into() },
            EnvironmentError::NotADirectory { path: "/x".into() },
            EnvironmentError::Unreadable {
                path: "/x".into(),
                source: io::Error::from_raw_os_error(nix::libc::EACCES),
            },
            EnvironmentError::OwnedByAnotherUser {
                path: "/x".into(),
                owner: UserIdentity { uid: 5, name: None },
                running: UserIdentity { uid: 6, name: None },
            },
            EnvironmentError::ParentMissing {
                path: "/x/y".into(),
                parent: "/x".into(),
            },
            EnvironmentError::CannotCreate {
                path: "/x".into(),
                running: UserIdentity {
                    uid: 101,
                    name: Some("postgres".into()),
                },
                source: io::Error::from_raw_os_error(nix::libc::EACCES),
            },
            EnvironmentError::Insecure(Box::new(Insecurity {
                path: "/x".into(),
                kind: strict_modes::EntryKind::Pgbak,
                reason: strict_modes::Reason::Writable {
                    mode: 0o777,
                    owner: UserIdentity { uid: 5, name: None },
                },
            })),
        ];
        for error in errors {
            let hint = error.hint().unwrap();
            assert!(!hint.contains('\n'), "{hint}");
            assert!(!error.to_string().contains('\n'), "{error}");
            assert!(!error.to_string().starts_with("pgbak"), "{error}");
        }
    }
}
