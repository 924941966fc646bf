//! `pgbak init` (S-8.4): create `$PGBAK` with the right modes and a backup script template,
//! then print the PostgreSQL and systemd settings that make PostgreSQL use it.
//!
//! Owns: the layout `init` creates (`$PGBAK/`, `scripts/`, `conflicts/`, `scripts/backup`), the
//! script template ([`BACKUP_SCRIPT_TEMPLATE`]) and the setup instructions it prints.
//!
//! Invariants kept:
//! - Idempotent: running `init` again creates only what is missing and never overwrites
//!   anything, above all not a `scripts/backup` the operator has edited.
//! - Everything created is private (S-1.3: directories 0700, the script 0700) and durable (each
//!   new entry's directory is fsynced), whatever the umask.
//! - An existing `$PGBAK` gets mode 0700 (S-1.5), and the report says so with the mode it had:
//!   `init` is the one command that repairs strict modes instead of refusing. What else strict
//!   modes find (`config.toml`, `scripts/`, a script) is printed as a warning with the command
//!   that repairs it, and left alone: those are the operator's files, and one may belong to a
//!   user only root can take it from.
//! - `config.toml` is not written: every key has a default (S-7), and a file full of copied
//!   defaults would hide which settings the operator actually chose. The keys are printed.
//! - The journal (`pgbak.lock`) is created (or opened, and repaired if it needs it) last, so a
//!   crash before it leaves a directory the next `init` completes.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::config::documented_keys;
use crate::hint::OperatorHint;
use crate::home::environment::{EnvironmentError, PgbakHome, UserIdentity};
use crate::home::names::BACKUP_SCRIPT_NAME;
use crate::home::strict_modes;
use crate::os::durable::{self, DirectoryCreation, Existing, PRIVATE_DIRECTORY_MODE, WriteOutcome};

/// What `init` could not create or change; every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("init {}: cannot be created", .path.display())]
    CreateDirectory { path: PathBuf, source: io::Error },
    #[error("init {}: cannot be written", .path.display())]
    WriteScript { path: PathBuf, source: io::Error },
    #[error("stat {}", .path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error("chmod 0700 {}", .path.display())]
    Chmod { path: PathBuf, source: io::Error },
    #[error("init {}: cannot be made durable (fsync)", .path.display())]
    Fsync { path: PathBuf, source: io::Error },
}

impl OperatorHint for InitError {
    fn hint(&self) -> Option<String> {
        let path = match self {
            InitError::CreateDirectory { path, .. }
            | InitError::WriteScript { path, .. }
            | InitError::Stat { path, .. }
            | InitError::Chmod { path, .. }
            | InitError::Fsync { path, .. } => path,
        };
        Some(format!(
            "run pgbak init as the PostgreSQL OS user, which must own {}, on a file system that \
             is writable and not full; running it again completes what is missing",
            path.display()
        ))
    }
}

/// The template's mode: private and executable by the owner (S-1.3).
pub const BACKUP_SCRIPT_MODE: u32 = 0o700;

/// Where Debian and Ubuntu's `postgresql@VERSION-CLUSTER` units pick up a drop-in for every
/// cluster.
pub const SYSTEMD_DROP_IN_PATH: &str = "/etc/systemd/system/postgresql@.service.d/pgbak.conf";

/// `pgbak wait` timeout after PostgreSQL stops, as in the seed's example unit.
pub const STOP_WAIT_SECONDS: u32 = 120;

/// `scripts/backup` as `init` ships it. It fails on purpose: nothing is reported as shipped
/// offsite until the operator has decided where it goes (S-5).
pub const BACKUP_SCRIPT_TEMPLATE: &str = r#"#!/bin/sh
# $PGBAK/scripts/backup: ships one pgbak backup directory offsite.
#
# How pgbak runs it (see the README, "The backup script"):
#   - The current directory is the backup directory to ship, $PGBAK/TIMESTAMP/, holding
#     base.tzst and pg_wal/*.zst.
#   - $1 is that directory's base backup timestamp, e.g. 20261124T154307Z (UTC).
#   - $2 is the current timestamp: the time of the newest file in the directory.
#   - PGBAK is set in the environment; stdin is /dev/null; stdout and stderr go to the sync
#     log, and the last lines of a failed run are shown by `pgbak status`.
#
# The contract:
#   - Files in the directory never change or disappear while $1 stays the same, but new
#     pg_wal/*.zst files may appear at any time; pgbak then runs the script again with a
#     newer $2.
#   - The script must be idempotent: it may run again for files it already shipped (after a
#     crash, or when pgbak cannot tell whether a run finished). Copy; never move or delete.
#   - Exit 0 only when everything in the directory is safely offsite. Any other exit status
#     (or a crash) makes pgbak retry, forever, with exponential backoff (1 s up to 5 min by
#     default; script.retry_delay_*_seconds in $PGBAK/config.toml).
#
# To use it, delete the last two lines below and uncomment one example, or write your own.
#
#   rsync over ssh, one remote directory per base backup:
#     exec rsync -a ./ "backup@host.example:pg-$1/"
#
#   rclone to any object store set up with `rclone config` (here a remote named "offsite"):
#     exec rclone copy --immutable ./ "offsite:pgbak/pg-$1/"
#
# Local backups only? Replace this script by a symlink to /bin/true:
#     ln -sf /bin/true "$PGBAK/scripts/backup"

set -eu

echo "scripts/backup is the pgbak template: edit it to ship $PWD offsite" >&2
exit 1
"#;

/// `pgbak init` as `main.rs` calls it: `PGBAK` and the user from the process environment
/// ([`PgbakHome::for_init_from_process_environment`]), then [`run`].
pub fn run_from_environment(out: &mut dyn Write) -> Result<(), Error> {
    let home = PgbakHome::for_init_from_process_environment()?;
    run(&home, out)
}

/// Runs `pgbak init` for `home` (from [`crate::home::environment::locate_for_init`]) and
/// prints what it did and what to configure next to `out`.
pub fn run(home: &PgbakHome, out: &mut dyn Write) -> Result<(), Error> {
    // The absolute path of this very binary, so the printed settings work whatever PATH
    // PostgreSQL and systemd run with. If it cannot be found, the bare name still works when
    // pgbak is installed in PATH.
    let program = std::env::current_exe().unwrap_or_else(|_| "pgbak".into());
    run_with_program(home, &program, out)
}

/// [`run`] with the program path to print, so tests get stable output.
pub fn run_with_program(
    home: &PgbakHome,
    program: &Path,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let created = create_layout(home)?;
    print_report(home, program, &created, out).map_err(Error::output("the pgbak init report"))?;
    Ok(())
}

/// What `init` did to one path, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Created,
    AlreadyPresent,
    /// An existing `$PGBAK` whose mode was changed to 0700; the mode it had.
    ModeSet {
        previous_mode: u32,
    },
}

/// One line of the report: a path and what `init` did to it.
struct Step {
    path: String,
    done: Done,
    note: &'static str,
}

fn done(creation: DirectoryCreation) -> Done {
    match creation {
        DirectoryCreation::Created => Done::Created,
        DirectoryCreation::AlreadyPresent => Done::AlreadyPresent,
    }
}

fn create_layout(home: &PgbakHome) -> Result<Vec<Step>, Error> {
    let mut steps = Vec::new();
    check_parent_is_writable(home)?;
    let create = |path: &Path| {
        durable::create_private_directory(path).map_err(|source| InitError::CreateDirectory {
            path: path.to_owned(),
            source,
        })
    };
    let pgbak_done = match create(&home.path)? {
        DirectoryCreation::Created => Done::Created,
        DirectoryCreation::AlreadyPresent => make_pgbak_private(home)?,
    };
    steps.push(Step {
        path: home.path.display().to_string(),
        done: pgbak_done,
        note: "",
    });
    for directory in [home.scripts_path(), home.conflicts_path()] {
        let outcome = create(&directory)?;
        steps.push(Step {
            path: directory.display().to_string(),
            done: done(outcome),
            note: "",
        });
    }
    let script = durable::write_file_durably(
        &home.scripts_path(),
        BACKUP_SCRIPT_NAME,
        BACKUP_SCRIPT_TEMPLATE.as_bytes(),
        BACKUP_SCRIPT_MODE,
        Existing::Keep,
    )
    .map_err(|source| InitError::WriteScript {
        path: home.backup_script_path(),
        source,
    })?;
    steps.push(Step {
        path: home.backup_script_path().display().to_string(),
        done: if script == WriteOutcome::Created {
            Done::Created
        } else {
            Done::AlreadyPresent
        },
        note: match script {
            WriteOutcome::Created => " (the template: edit it, see below)",
            WriteOutcome::KeptExisting => " (left unchanged)",
        },
    });
    let lock_path = home.lock_file_path();
    let journal_existed = std::fs::metadata(&lock_path).is_ok_and(|m| m.len() > 0);
    let opened = crate::home::journal_file::open_journal(home, crate::os::clock::now())?;
    steps.push(Step {
        path: lock_path.display().to_string(),
        done: if journal_existed {
            Done::AlreadyPresent
        } else {
            Done::Created
        },
        note: match &opened.report.repair {
            Some(crate::journal::Repair::TailCut { .. }) => {
                " (the journal; a torn last record was cut off)"
            }
            Some(crate::journal::Repair::Rebuilt { reason }) if reason.is_damage() => {
                " (the journal; it was damaged and was rebuilt from the backup directories)"
            }
            _ => " (the journal)",
        },
    });
    Ok(steps)
}

/// S-1.5 (and S-1.3): an existing `$PGBAK` gets exactly mode 0700, durably (the directory's
/// inode is fsynced). Returns what was done, for the report.
fn make_pgbak_private(home: &PgbakHome) -> Result<Done, Error> {
    let previous_mode = std::fs::metadata(&home.path)
        .map_err(|source| InitError::Stat {
            path: home.path.clone(),
            source,
        })?
        .mode()
        & 0o7777;
    if previous_mode == PRIVATE_DIRECTORY_MODE {
        return Ok(Done::AlreadyPresent);
    }
    std::fs::set_permissions(
        &home.path,
        std::fs::Permissions::from_mode(PRIVATE_DIRECTORY_MODE),
    )
    .map_err(|source| InitError::Chmod {
        path: home.path.clone(),
        source,
    })?;
    durable::fsync_directory(&home.path).map_err(|source| InitError::Fsync {
        path: home.path.clone(),
        source,
    })?;
    Ok(Done::ModeSet { previous_mode })
}

/// Refuses early, with a hint, when `$PGBAK` is missing and its parent is not writable for
/// us: the common case of `runuser -u postgres -- pgbak init` with `/var/lib` owned by root.
fn check_parent_is_writable(home: &PgbakHome) -> Result<(), EnvironmentError> {
    if home.path.exists() {
        return Ok(());
    }
    let Some(parent) = home.path.parent() else {
        return Ok(());
    };
    let access = nix::unistd::access(
        parent,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    );
    match access {
        Ok(()) => Ok(()),
        Err(errno) => Err(EnvironmentError::CannotCreate {
            path: home.path.clone(),
            running: UserIdentity::look_up(home.owner_uid),
            source: errno.into(),
        }),
    }
}

fn print_report(
    home: &PgbakHome,
    program: &Path,
    steps: &[Step],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let pgbak = home.path.display().to_string();
    let program = program.display().to_string();

    writeln!(out, "pgbak init: PGBAK={pgbak}")?;
    for step in steps {
        let (status, note) = match step.done {
            Done::Created => ("created", step.note.to_string()),
            Done::AlreadyPresent => ("already present", step.note.to_string()),
            Done::ModeSet { previous_mode } if previous_mode & 0o022 != 0 => (
                "mode set to 0700",
                format!(" (it was {previous_mode:04o}: others could write it)"),
            ),
            Done::ModeSet { previous_mode } => {
                ("mode set to 0700", format!(" (it was {previous_mode:04o})"))
            }
        };
        writeln!(out, "  {status:<16} {}{note}", step.path)?;
    }
    writeln!(
        out,
        "  {:<16} config.toml is optional: every key has a default (listed below)",
        "not written"
    )?;
    // What S-1.5 still finds after init: the operator's files, left for the operator.
    for insecurity in strict_modes::inspect(home) {
        writeln!(out, "\nWarning: {insecurity}")?;
        writeln!(out, "To repair: {}", insecurity.repair())?;
    }
    if home.owner_uid == 0 {
        writeln!(
            out,
            "\nWarning: {pgbak} belongs to root, but PostgreSQL runs archive_command as its own OS \
             user (never root), and pgbak runs only as the owner of PGBAK (S-1.4). Hand it over: \
             chown -R postgres: {pgbak} (or your PostgreSQL OS user)."
        )?;
    }

    let archive_command = format!("{} wal %p", shell_word(&program));
    writeln!(out, "\n1. Add to postgresql.conf:\n")?;
    writeln!(out, "archive_mode = on")?;
    writeln!(
        out,
        "archive_command = {}",
        postgresql_string(&archive_command)
    )?;
    writeln!(out, "archive_timeout = 1h")?;
    writeln!(out, "wal_level = replica")?;

    writeln!(
        out,
        "\n2. Give PostgreSQL the PGBAK variable with a systemd drop-in, \
         {SYSTEMD_DROP_IN_PATH}\n   (Debian and Ubuntu; elsewhere use systemctl edit postgresql, \
         or your unit's name):\n"
    )?;
    writeln!(out, "[Unit]")?;
    writeln!(
        out,
        "# Name resolution must work while the backup script runs."
    )?;
    writeln!(out, "After=nss-lookup.target")?;
    writeln!(out)?;
    writeln!(out, "[Service]")?;
    writeln!(
        out,
        "Environment={}",
        systemd_word(&format!("PGBAK={pgbak}"))
    )?;
    writeln!(
        out,
        "# Let a running pgbak sync finish, up to {STOP_WAIT_SECONDS} s, after PostgreSQL stops."
    )?;
    writeln!(
        out,
        "ExecStopPost={} wait {STOP_WAIT_SECONDS}",
        systemd_word(&program)
    )?;

    writeln!(
        out,
        "\n3. Optional: {pgbak}/config.toml. Every key with its default (uncomment to change):\n"
    )?;
    let mut section_written = "";
    for (key, default, meaning) in documented_keys() {
        let Some((section, name)) = key.split_once('.') else {
            continue;
        };
        if section != section_written {
            if !section_written.is_empty() {
                writeln!(out)?;
            }
            writeln!(out, "#[{section}]")?;
            section_written = section;
        }
        writeln!(out, "#{name} = {default}  # {meaning}")?;
    }

    writeln!(out, "\nNext steps:")?;
    writeln!(
        out,
        "  1. Edit {} to ship each backup directory offsite\n     \
         (local backups only: ln -sf /bin/true {}).",
        home.backup_script_path().display(),
        home.backup_script_path().display()
    )?;
    writeln!(
        out,
        "  2. Make sure pg_basebackup can connect: the PostgreSQL OS user needs a replication \
         entry in pg_hba.conf\n     (Debian's default \"local replication all peer\" is enough)."
    )?;
    writeln!(
        out,
        "  3. Add the settings above, then: systemctl daemon-reload && systemctl restart postgresql"
    )?;
    writeln!(
        out,
        "  4. Start the first backup: psql -c 'SELECT pg_switch_wal();' and watch it with \
         pgbak status"
    )?;
    Ok(())
}

/// Characters that need no quoting in sh, systemd or postgresql.conf.
fn is_plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
}

/// One sh word: as is when plain, else single-quoted.
fn shell_word(text: &str) -> String {
    if is_plain(text) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A postgresql.conf string literal: single quotes, a quote doubled.
fn postgresql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// One word of a systemd unit setting: `%` is a specifier and must be doubled; anything not
/// plain goes in double quotes with `\` and `"` escaped (systemd.syntax(7)).
fn systemd_word(text: &str) -> String {
    let escaped_specifiers = text.replace('%', "%%");
    if is_plain(text) {
        escaped_specifiers
    } else {
        format!(
            "\"{}\"",
            escaped_specifiers.replace('\\', r"\\").replace('"', "\\\"")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::environment::locate_for_init;
    use std::fs;

    use crate::test_support::ScratchDirectory;

    const PROGRAM: &str = "/usr/local/bin/pgbak";

    fn my_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn init(path: &Path) -> String {
        let home = locate_for_init(Some(path.as_os_str().to_owned()), my_uid()).unwrap();
        let mut out = Vec::new();
        run_with_program(&home, Path::new(PROGRAM), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_fresh_pgbak_is_created_private_with_the_template() {
        let scratch = ScratchDirectory::new("fresh");
        let pgbak = scratch.0.join("pgbak");
        let report = init(&pgbak);

        assert_eq!(mode_of(&pgbak), PRIVATE_DIRECTORY_MODE);
        assert_eq!(mode_of(&pgbak.join("scripts")), 0o700);
        assert_eq!(mode_of(&pgbak.join("conflicts")), 0o700);
        assert_eq!(mode_of(&pgbak.join("scripts/backup")), 0o700);
        assert_eq!(
            fs::read_to_string(pgbak.join("scripts/backup")).unwrap(),
            BACKUP_SCRIPT_TEMPLATE
        );
        assert!(
            !pgbak.join("config.toml").exists(),
            "defaults apply: no config.toml"
        );
        assert_eq!(mode_of(&pgbak.join("pgbak.lock")), 0o600);

        assert!(
            report.contains(&format!("  created          {}\n", pgbak.display())),
            "{report}"
        );
        assert!(report.contains("archive_mode = on\n"));
        assert!(report.contains("archive_command = '/usr/local/bin/pgbak wal %p'\n"));
        assert!(report.contains("archive_timeout = 1h\n"));
        assert!(report.contains("wal_level = replica\n"));
        assert!(report.contains(SYSTEMD_DROP_IN_PATH));
        assert!(report.contains(
            "[Unit]\n# Name resolution must work while the backup script runs.\n\
             After=nss-lookup.target\n"
        ));
        assert!(report.contains(&format!(
            "[Service]\nEnvironment=PGBAK={}\n",
            pgbak.display()
        )));
        assert!(report.contains("ExecStopPost=/usr/local/bin/pgbak wait 120\n"));
        assert!(report.contains("#[base]\n#compression_level = 3  # "));
        assert!(report.contains("SELECT pg_switch_wal();"));
    }

    #[test]
    fn running_twice_changes_nothing_and_keeps_an_edited_script() {
        let scratch = ScratchDirectory::new("twice");
        let pgbak = scratch.0.join("pgbak");
        init(&pgbak);
        let edited = "#!/bin/sh\nexec rsync -a ./ \"backup@host.example:pg-$1/\"\n";
        fs::write(pgbak.join("scripts/backup"), edited).unwrap();

        let report = init(&pgbak);
        assert_eq!(
            fs::read_to_string(pgbak.join("scripts/backup")).unwrap(),
            edited
        );
        assert!(!report.contains("  created "), "{report}");
        assert!(report.contains("already present"), "{report}");
        assert!(report.contains("backup (left unchanged)"), "{report}");
    }

    #[test]
    fn an_existing_empty_pgbak_gets_the_layout_and_a_symlinked_script_is_kept() {
        let scratch = ScratchDirectory::new("existing");
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(scratch.0.join("scripts")).unwrap();
        std::os::unix::fs::symlink("/bin/true", scratch.0.join("scripts/backup")).unwrap();
        let report = init(&scratch.0);
        assert!(
            report.contains(&format!("  already present  {}\n", scratch.0.display())),
            "{report}"
        );
        assert!(!report.contains("To repair:"), "{report}");
        assert!(report.contains(&format!(
            "  created          {}/conflicts\n",
            scratch.0.display()
        )));
        let link = fs::read_link(scratch.0.join("scripts/backup")).unwrap();
        assert_eq!(link, Path::new("/bin/true"));
    }

    #[test]
    fn an_existing_pgbak_gets_mode_0700_and_the_report_names_the_old_mode() {
        let scratch = ScratchDirectory::new("existing-mode");
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o750)).unwrap();
        let report = init(&scratch.0);
        assert_eq!(mode_of(&scratch.0), 0o700);
        assert!(
            report.contains(&format!(
                "  mode set to 0700 {} (it was 0750)\n",
                scratch.0.display()
            )),
            "{report}"
        );
        let report = init(&scratch.0);
        assert!(
            report.contains(&format!("  already present  {}\n", scratch.0.display())),
            "{report}"
        );
    }

    #[test]
    fn a_pgbak_whose_parent_does_not_exist_is_refused() {
        let scratch = ScratchDirectory::new("parent");
        let pgbak = scratch.0.join("missing/pgbak");
        let error = locate_for_init(Some(pgbak.clone().into_os_string()), my_uid()).unwrap_err();
        assert!(
            matches!(error, EnvironmentError::ParentMissing { .. }),
            "{error}"
        );
        assert!(!scratch.0.join("missing").exists());
    }

    #[test]
    fn the_template_is_valid_sh_and_refuses_to_report_anything_shipped() {
        let scratch = ScratchDirectory::new("template");
        let pgbak = scratch.0.join("pgbak");
        init(&pgbak);
        let script = pgbak.join("scripts/backup");
        let syntax = std::process::Command::new("sh")
            .arg("-n")
            .arg(&script)
            .status()
            .unwrap();
        assert!(syntax.success());

        let directory = pgbak.join("20261124T154307Z");
        fs::create_dir(&directory).unwrap();
        let run = std::process::Command::new(&script)
            .args(["20261124T154307Z", "20261124T160000Z"])
            .current_dir(&directory)
            .env("PGBAK", &pgbak)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(
            stderr,
            format!(
                "scripts/backup is the pgbak template: edit it to ship {} offsite\n",
                directory.display()
            )
        );
    }

    #[test]
    fn paths_that_need_quoting_are_quoted_for_each_syntax() {
        assert_eq!(shell_word("/usr/bin/pgbak"), "/usr/bin/pgbak");
        assert_eq!(shell_word("/opt/my tools/pgbak"), "'/opt/my tools/pgbak'");
        assert_eq!(
            postgresql_string("/o'k/pgbak wal %p"),
            "'/o''k/pgbak wal %p'"
        );
        assert_eq!(systemd_word("PGBAK=/srv/pg bak"), "\"PGBAK=/srv/pg bak\"");
        assert_eq!(systemd_word("PGBAK=/srv/100%"), "\"PGBAK=/srv/100%%\"");
        assert_eq!(systemd_word("/usr/bin/pgbak"), "/usr/bin/pgbak");
    }
}
