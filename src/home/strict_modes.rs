//! Strict modes (S-1.5), like sshd's `StrictModes`: who may change what pgbak runs.
//!
//! Owns: [`inspect`], the list of entries it checks ([`SCRIPT_NAMES`] among them), and
//! [`Insecurity`] with its message and repair.
//!
//! Why: `config.toml` names the `pg_basebackup` program and `scripts/` holds the backup script,
//! and pgbak runs both as the owner of `$PGBAK` — the PostgreSQL OS user. Anyone who can write
//! one of them, or `$PGBAK` itself (where a missing `config.toml` or `scripts/` can be created),
//! runs code as the database user on the next sync.
//!
//! What is checked, in this order (the first finding is what a refusing command reports):
//! 1. `$PGBAK` itself (followed if it is a symlink, as everywhere: S-1.1).
//! 2. `config.toml`, `scripts/`, and each script pgbak runs from `scripts/` ([`SCRIPT_NAMES`]),
//!    each looked at without following a final symlink (`lstat`).
//!
//! The rules:
//! - An entry in `$PGBAK` must be owned by the owner of `$PGBAK`, and not be writable by group
//!   or others (mode `& 0o022 == 0`). Root is no exception there: a file root left inside
//!   `$PGBAK` is the S-1.4 problem of `sudo pgbak`.
//! - A symlink's own mode means nothing on Linux (always 0777, and only the directory's write
//!   permission decides who can replace it), so of a symlink only the owner is checked. Its
//!   target (fully resolved) must not be writable by group or others, and must be owned by the
//!   owner of `$PGBAK` *or root*: the seed's `scripts/backup -> /bin/true` points at a root-owned
//!   system binary, and root can change anything anyway.
//! - The directories above `$PGBAK` and above a symlink's target are not checked. Whoever can
//!   write one of them can replace the entry below, but the replacement then belongs to them,
//!   which the owner rule catches (a new `$PGBAK` fails S-1.4's owner check the same way).
//! - Absent entries are not insecure: `config.toml` is optional (S-7), and a missing or dangling
//!   script is S-5.3's business (retried, reported by `status`). An entry that cannot be looked
//!   at (a search permission missing) is left to the code that uses it, which reports it.
//! - Access control lists are not read, as sshd does not: the mode bits are what operators
//!   check and what `chmod` in the hint repairs.
//!
//! Invariant: [`inspect`] only looks (`stat`, `lstat`, `realpath`); it never changes anything, so
//! `pgbak status` can report what it finds and `pgbak init` can repair `$PGBAK`'s mode itself.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::names::BACKUP_SCRIPT_NAME;
use crate::home::environment::{PgbakHome, UserIdentity};

/// The scripts pgbak runs from `scripts/`: each must be as safe as `scripts/` itself.
pub const SCRIPT_NAMES: &[&str] = &[BACKUP_SCRIPT_NAME];

/// The write bits of group and others.
const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const GROUP_WRITE: u32 = 0o020;

/// What every finding ends with: what the refusal means for the operator.
const CONSEQUENCE: &str =
    "pgbak refuses to archive or sync until only the owner of PGBAK can change it";

/// Whether the entry is `$PGBAK`, a directory in it, or a file: only for the repair's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Pgbak,
    Directory,
    File,
}

/// One path in `$PGBAK` that someone besides its owner can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insecurity {
    /// The entry in `$PGBAK` (for a symlink: the link, not its target).
    pub path: PathBuf,
    pub kind: EntryKind,
    pub reason: Reason,
}

/// Why an entry is insecure. Modes are the permission bits (`st_mode & 0o7777`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Writable {
        mode: u32,
        owner: UserIdentity,
    },
    OwnedByAnotherUser {
        mode: u32,
        owner: UserIdentity,
        expected: UserIdentity,
    },
    SymlinkOwnedByAnotherUser {
        owner: UserIdentity,
        expected: UserIdentity,
    },
    TargetWritable {
        target: PathBuf,
        mode: u32,
        owner: UserIdentity,
    },
    TargetOwnedByAnotherUser {
        target: PathBuf,
        mode: u32,
        owner: UserIdentity,
        expected: UserIdentity,
    },
}

impl std::fmt::Display for Insecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.reason {
            Reason::Writable { mode, owner } => write!(
                f,
                "{path}: writable by {} (mode {mode:04o}, owner {owner}); {CONSEQUENCE}",
                writers(*mode)
            ),
            Reason::OwnedByAnotherUser {
                mode,
                owner,
                expected,
            } => write!(
                f,
                "{path}: owned by {owner}, not by {expected}, the owner of PGBAK (mode \
                 {mode:04o}); {CONSEQUENCE}"
            ),
            Reason::SymlinkOwnedByAnotherUser { owner, expected } => write!(
                f,
                "{path}: a symlink owned by {owner}, not by {expected}, the owner of PGBAK; \
                 {CONSEQUENCE}"
            ),
            Reason::TargetWritable {
                target,
                mode,
                owner,
            } => write!(
                f,
                "{path}: its target {} is writable by {} (mode {mode:04o}, owner {owner}); \
                 {CONSEQUENCE}",
                target.display(),
                writers(*mode)
            ),
            Reason::TargetOwnedByAnotherUser {
                target,
                mode,
                owner,
                expected,
            } => write!(
                f,
                "{path}: its target {} is owned by {owner}, neither {expected}, the owner of \
                 PGBAK, nor root (mode {mode:04o}); {CONSEQUENCE}",
                target.display()
            ),
        }
    }
}

impl std::error::Error for Insecurity {}

impl Insecurity {
    /// The command that repairs it, for the `hint:` line, `status` and `init`'s warnings.
    pub fn repair(&self) -> String {
        let path = self.path.display();
        match &self.reason {
            Reason::Writable { .. } if self.kind == EntryKind::Pgbak => {
                format!("chmod 0700 {path} (pgbak init does it)")
            }
            Reason::Writable { .. } => format!("chmod go-w {path}"),
            Reason::OwnedByAnotherUser { expected, .. } => {
                let recursive = if self.kind == EntryKind::File {
                    ""
                } else {
                    "-R "
                };
                format!("as root: chown {recursive}{} {path}", user_word(expected))
            }
            Reason::SymlinkOwnedByAnotherUser { expected, .. } => {
                format!("as root: chown -h {} {path}", user_word(expected))
            }
            Reason::TargetWritable { target, .. } => format!("chmod go-w {}", target.display()),
            Reason::TargetOwnedByAnotherUser {
                target, expected, ..
            } => format!(
                "as root: chown {} {}, or point {path} at a file that only {} or root can change",
                user_word(expected),
                target.display(),
                user_word(expected)
            ),
        }
    }
}

/// `group`, `others` or `group and others`, from the write bits of `mode`.
fn writers(mode: u32) -> &'static str {
    match (mode & GROUP_WRITE != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        _ => "others",
    }
}

/// The user as `chown` takes it: the name, or the number when there is none.
fn user_word(user: &UserIdentity) -> String {
    user.name.clone().unwrap_or_else(|| user.uid.to_string())
}

/// Every insecure entry of `home`, in the order of the module header (empty: all is well).
pub fn inspect(home: &PgbakHome) -> Vec<Insecurity> {
    let owner_uid = home.owner_uid;
    let mut found = Vec::new();
    // $PGBAK itself is followed: a symlinked $PGBAK is a legitimate setup (S-1.1), and its
    // owner was checked by S-1.4 on the same followed path.
    if let Ok(metadata) = std::fs::metadata(&home.path) {
        found.extend(check_metadata(
            &home.path,
            EntryKind::Pgbak,
            &metadata,
            owner_uid,
        ));
    }
    let scripts = home.scripts_path();
    let mut entries = vec![
        (home.config_path(), EntryKind::File),
        (scripts.clone(), EntryKind::Directory),
    ];
    entries.extend(
        SCRIPT_NAMES
            .iter()
            .map(|name| (scripts.join(name), EntryKind::File)),
    );
    for (path, kind) in entries {
        found.extend(check_entry(&path, kind, owner_uid));
    }
    found
}

/// One entry, looked at without following a final symlink (see the module header).
fn check_entry(path: &Path, kind: EntryKind, owner_uid: u32) -> Option<Insecurity> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if !metadata.file_type().is_symlink() {
        return check_metadata(path, kind, &metadata, owner_uid);
    }
    let insecurity = |reason| {
        Some(Insecurity {
            path: path.to_path_buf(),
            kind,
            reason,
        })
    };
    if metadata.uid() != owner_uid {
        return insecurity(Reason::SymlinkOwnedByAnotherUser {
            owner: UserIdentity::look_up(metadata.uid()),
            expected: UserIdentity::look_up(owner_uid),
        });
    }
    // Dangling, a loop, or unreachable: nothing runs from there, so nothing to guard.
    let target = std::fs::canonicalize(path).ok()?;
    let target_metadata = std::fs::metadata(&target).ok()?;
    let mode = target_metadata.mode() & 0o7777;
    let target_owner = target_metadata.uid();
    if target_owner != owner_uid && target_owner != 0 {
        return insecurity(Reason::TargetOwnedByAnotherUser {
            target,
            mode,
            owner: UserIdentity::look_up(target_owner),
            expected: UserIdentity::look_up(owner_uid),
        });
    }
    if mode & GROUP_OR_OTHER_WRITE != 0 {
        return insecurity(Reason::TargetWritable {
            target,
            mode,
            owner: UserIdentity::look_up(target_owner),
        });
    }
    None
}

/// The owner and write-bit rules for something that is not a symlink.
fn check_metadata(
    path: &Path,
    kind: EntryKind,
    metadata: &std::fs::Metadata,
    owner_uid: u32,
) -> Option<Insecurity> {
    let mode = metadata.mode() & 0o7777;
    let reason = if metadata.uid() != owner_uid {
        Reason::OwnedByAnotherUser {
            mode,
            owner: UserIdentity::look_up(metadata.uid()),
            expected: UserIdentity::look_up(owner_uid),
        }
    } else if mode & GROUP_OR_OTHER_WRITE != 0 {
        Reason::Writable {
            mode,
            owner: UserIdentity::look_up(metadata.uid()),
        }
    } else {
        return None;
    };
    Some(Insecurity {
        path: path.to_path_buf(),
        kind,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// A uid with no passwd entry: its messages show the number.
    const STRANGER_UID: u32 = 3_999_999_917;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// `$PGBAK` 0700 with `scripts/` 0700, `scripts/backup` 0700 and `config.toml` 0600.
    fn secure_pgbak(label: &str) -> ScratchDirectory {
        let scratch = ScratchDirectory::new(label);
        chmod(&scratch.0, 0o700);
        fs::create_dir(scratch.0.join("scripts")).unwrap();
        chmod(&scratch.0.join("scripts"), 0o700);
        fs::write(scratch.0.join("scripts/backup"), "#!/bin/sh\n").unwrap();
        chmod(&scratch.0.join("scripts/backup"), 0o700);
        fs::write(scratch.0.join("config.toml"), "").unwrap();
        chmod(&scratch.0.join("config.toml"), 0o600);
        scratch
    }

    #[test]
    fn a_private_pgbak_and_an_empty_one_are_secure() {
        let scratch = secure_pgbak("strict-ok");
        assert_eq!(inspect(&scratch.home()), []);
        let empty = ScratchDirectory::new("strict-empty");
        chmod(&empty.0, 0o755); // readable by others is fine: only writing is dangerous
        assert_eq!(inspect(&empty.home()), []);
    }

    #[test]
    fn every_writable_entry_is_found_in_order_with_its_repair() {
        let scratch = secure_pgbak("strict-all");
        chmod(&scratch.0, 0o1777);
        chmod(&scratch.0.join("config.toml"), 0o620);
        chmod(&scratch.0.join("scripts"), 0o702);
        chmod(&scratch.0.join("scripts/backup"), 0o777);
        let found = inspect(&scratch.home());
        let summary: Vec<(PathBuf, String)> = found
            .iter()
            .map(|insecurity| (insecurity.path.clone(), insecurity.repair()))
            .collect();
        let path = |name: &str| scratch.0.join(name);
        assert_eq!(
            summary,
            [
                (
                    scratch.0.clone(),
                    format!("chmod 0700 {} (pgbak init does it)", scratch.0.display())
                ),
                (
                    path("config.toml"),
                    format!("chmod go-w {}", path("config.toml").display())
                ),
                (
                    path("scripts"),
                    format!("chmod go-w {}", path("scripts").display())
                ),
                (
                    path("scripts/backup"),
                    format!("chmod go-w {}", path("scripts/backup").display())
                ),
            ]
        );
        let writers: Vec<&str> = found
            .iter()
            .map(|insecurity| match insecurity.reason {
                Reason::Writable { mode, .. } => writers(mode),
                _ => panic!("{insecurity}"),
            })
            .collect();
        assert_eq!(
            writers,
            ["group and others", "group", "others", "group and others"]
        );
    }

    #[test]
    fn another_owner_is_named_by_number_when_it_has_no_name() {
        let scratch = secure_pgbak("strict-owner");
        // Pretend the owner of PGBAK is a stranger: every entry then belongs to "another user".
        let home = PgbakHome {
            path: scratch.0.clone(),
            owner_uid: STRANGER_UID,
        };
        let found = inspect(&home);
        assert_eq!(found.len(), 4, "{found:?}");
        let config = &found[1];
        let me = UserIdentity::look_up(nix::unistd::geteuid().as_raw());
        assert_eq!(
            config.to_string(),
            format!(
                "{}: owned by {me}, not by uid {STRANGER_UID}, the owner of PGBAK (mode 0600); \
                 {CONSEQUENCE}",
                scratch.0.join("config.toml").display()
            )
        );
        assert_eq!(
            config.repair(),
            format!(
                "as root: chown {STRANGER_UID} {}",
                scratch.0.join("config.toml").display()
            )
        );
        assert_eq!(
            found[2].repair(),
            format!(
                "as root: chown -R {STRANGER_UID} {}",
                scratch.0.join("scripts").display()
            )
        );
    }

    #[test]
    fn a_symlink_to_a_root_owned_system_binary_is_secure_and_a_writable_target_is_not() {
        let scratch = secure_pgbak("strict-link");
        let script = scratch.0.join("scripts/backup");
        fs::remove_file(&script).unwrap();
        std::os::unix::fs::symlink("/bin/true", &script).unwrap();
        if nix::unistd::geteuid().is_root() || fs::metadata("/bin/true").unwrap().uid() == 0 {
            assert_eq!(inspect(&scratch.home()), []);
        }

        let target = scratch.0.join("shared.sh");
        fs::write(&target, "#!/bin/sh\n").unwrap();
        chmod(&target, 0o775);
        fs::remove_file(&script).unwrap();
        std::os::unix::fs::symlink(&target, &script).unwrap();
        let found = inspect(&scratch.home());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            matches!(
                &found[0].reason,
                Reason::TargetWritable { target: t, mode: 0o775, .. } if t == &target
            ),
            "{found:?}"
        );
        assert_eq!(
            found[0].repair(),
            format!("chmod go-w {}", target.display())
        );
    }

    #[test]
    fn messages_and_repairs_are_single_lines() {
        let user = |uid| UserIdentity { uid, name: None };
        let reasons = [
            Reason::Writable {
                mode: 0o777,
                owner: user(1),
            },
            Reason::OwnedByAnotherUser {
                mode: 0o700,
                owner: user(1),
                expected: user(2),
            },
            Reason::SymlinkOwnedByAnotherUser {
                owner: user(1),
                expected: user(2),
            },
            Reason::TargetWritable {
                target: "/t".into(),
                mode: 0o666,
                owner: user(0),
            },
            Reason::TargetOwnedByAnotherUser {
                target: "/t".into(),
                mode: 0o755,
                owner: user(1),
                expected: user(2),
            },
        ];
        for reason in reasons {
            for kind in [EntryKind::Pgbak, EntryKind::Directory, EntryKind::File] {
                let insecurity = Insecurity {
                    path: "/srv/pgbak/x".into(),
                    kind,
                    reason: reason.clone(),
                };
                let message = insecurity.to_string();
                assert!(message.starts_with("/srv/pgbak/x: "), "{message}");
                assert!(message.ends_with(CONSEQUENCE), "{message}");
                assert!(!message.contains('\n') && !insecurity.repair().contains('\n'));
            }
        }
    }
}
