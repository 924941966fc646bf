//! The settings a restore with a recovery target or `--standby` leaves for PostgreSQL (S-8.1):
//! a block appended to `DEST/postgresql.auto.conf` and the signal file.
//!
//! Owns: [`RecoverySettings`] (what the caller decided), its exact text ([`RecoverySettings::text`]),
//! the quoting ([`quote_config_value`], [`quote_shell_word`]) and [`pgbak_executable`].
//!
//! Invariants:
//! - Every value is written as PostgreSQL's configuration parser reads it back unchanged: in
//!   single quotes, with `'` and `\` doubled (what `ALTER SYSTEM` itself writes: PostgreSQL's
//!   `escape_single_quotes_ascii`; the parser takes `\` as an escape, so a lone one would be
//!   lost). A value with a line break cannot be written and is refused.
//! - `restore_command` is run by `/bin/sh` after PostgreSQL replaced `%f`, `%p` and `%%`: the
//!   paths in it are quoted for the shell where they need it, then every `%` in them doubled.
//!   pgbak's path is this executable's canonical path, so the command does not depend on
//!   PostgreSQL's `PATH`.
//! - The block starts with the line `# added by pgbak restore`, comes after everything already
//!   in the file (later lines win in PostgreSQL's configuration), and the file is created 0600
//!   if the base backup had none. The signal file is `standby.signal` for `--standby`, else
//!   `recovery.signal`, empty, 0600.

use crate::restore::error::RestoreError;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The first line of the block pgbak appends.
pub const BLOCK_MARK: &str = "# added by pgbak restore";
/// The file the block goes into, in DEST.
pub const AUTO_CONF: &str = "postgresql.auto.conf";

/// `--target-*`: where recovery stops. The texts are passed to PostgreSQL as given (the caller
/// checks them: e.g. a time must carry its zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(String),
    Lsn(String),
    Name(String),
    Xid(String),
    Immediate,
}

/// `--target-action`: `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

/// `--target-timeline`: `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    Latest,
    Current,
    Number(u32),
}

/// What recovery should do, as the caller decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// pgbak's own executable, absolute ([`pgbak_executable`]).
    pub pgbak: PathBuf,
    /// What `restore-wal --from` reads: the backup home or directory, absolute.
    pub source: PathBuf,
    pub target: Option<RecoveryTarget>,
    pub target_action: Option<TargetAction>,
    pub target_timeline: Option<TargetTimeline>,
    /// `standby.signal` instead of `recovery.signal`.
    pub standby: bool,
    /// `--primary-conninfo`, for a standby.
    pub primary_conninfo: Option<String>,
}

/// This executable's canonical path: what `restore_command` runs.
pub fn pgbak_executable() -> io::Result<PathBuf> {
    std::env::current_exe()?.canonicalize()
}

impl RecoverySettings {
    /// The signal file's name in DEST.
    pub fn signal_file(&self) -> &'static str {
        if self.standby {
            "standby.signal"
        } else {
            "recovery.signal"
        }
    }

    /// The `restore_command` value (before configuration quoting).
    pub fn restore_command(&self) -> String {
        let path = |path: &Path| quote_shell_word(&path.to_string_lossy()).replace('%', "%%");
        format!(
            "{} restore-wal %f %p --from {}",
            path(&self.pgbak),
            path(&self.source)
        )
    }

    /// The block appended to `postgresql.auto.conf`, from [`BLOCK_MARK`] to its last newline.
    pub fn text(&self) -> Result<String, RestoreError> {
        let mut settings: Vec<(&'static str, String)> =
            vec![("restore_command", self.restore_command())];
        match &self.target {
            None => {}
            Some(RecoveryTarget::Time(time)) => {
                settings.push(("recovery_target_time", time.clone()))
            }
            Some(RecoveryTarget::Lsn(lsn)) => settings.push(("recovery_target_lsn", lsn.clone())),
            Some(RecoveryTarget::Name(name)) => {
                settings.push(("recovery_target_name", name.clone()));
            }
            Some(RecoveryTarget::Xid(xid)) => settings.push(("recovery_target_xid", xid.clone())),
            Some(RecoveryTarget::Immediate) => {
                settings.push(("recovery_target", "immediate".into()))
            }
        }
        if let Some(action) = self.target_action {
            let action = match action {
                TargetAction::Pause => "pause",
                TargetAction::Promote => "promote",
                TargetAction::Shutdown => "shutdown",
            };
            settings.push(("recovery_target_action", action.into()));
        }
        if let Some(timeline) = self.target_timeline {
            let timeline = match timeline {
                TargetTimeline::Latest => "latest".to_owned(),
                TargetTimeline::Current => "current".to_owned(),
                TargetTimeline::Number(number) => number.to_string(),
            };
            settings.push(("recovery_target_timeline", timeline));
        }
        if let Some(conninfo) = &self.primary_conninfo {
            settings.push(("primary_conninfo", conninfo.clone()));
        }
        let mut text = format!("{BLOCK_MARK}\n");
        for (setting, value) in settings {
            let quoted = quote_config_value(&value).map_err(|problem| RestoreError::Setting {
                setting,
                problem: problem.into(),
            })?;
            text.push_str(&format!("{setting} = {quoted}\n"));
        }
        Ok(text)
    }
}

/// `value` as a quoted string of PostgreSQL's configuration files (see the module header).
pub fn quote_config_value(value: &str) -> Result<String, &'static str> {
    if value.contains(['\n', '\r']) {
        return Err("a line break cannot be written into postgresql.auto.conf");
    }
    Ok(format!(
        "'{}'",
        value.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// `word` as one word for `/bin/sh`: as it is if made only of characters the shell leaves
/// alone, else in single quotes (a `'` inside written `'\''`).
pub fn quote_shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@%+,=-".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Appends the block to `DEST/postgresql.auto.conf` (created if missing) and writes the signal
/// file. Durability comes from the restore's final sync.
pub(crate) fn write(dest: &Path, settings: &RecoverySettings) -> Result<(), RestoreError> {
    let text = settings.text()?;
    let path = dest.join(AUTO_CONF);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(RestoreError::io("opening", &path))?;
    let mut existing = Vec::new();
    file.read_to_end(&mut existing)
        .map_err(RestoreError::io("reading", &path))?;
    let separator = if existing.is_empty() || existing.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    file.write_all(format!("{separator}{text}").as_bytes())
        .map_err(RestoreError::io("writing", &path))?;
    let signal = dest.join(settings.signal_file());
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_CLOEXEC)
        .open(&signal)
        .map_err(RestoreError::io("creating", &signal))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;
    use std::fs;

    fn settings() -> RecoverySettings {
        RecoverySettings {
            pgbak: "/usr/local/bin/pgbak".into(),
            source: "/var/lib/pgbak".into(),
            target: None,
            target_action: None,
            target_timeline: None,
            standby: false,
            primary_conninfo: None,
        }
    }

    #[test]
    fn a_target_time_block_is_exactly_this() {
        let settings = RecoverySettings {
            target: Some(RecoveryTarget::Time("2026-12-02 14:10:00+00".into())),
            target_action: Some(TargetAction::Promote),
            target_timeline: Some(TargetTimeline::Latest),
            ..settings()
        };
        assert_eq!(
            settings.text().unwrap(),
            "# added by pgbak restore\n\
             restore_command = '/usr/local/bin/pgbak restore-wal %f %p --from /var/lib/pgbak'\n\
             recovery_target_time = '2026-12-02 14:10:00+00'\n\
             recovery_target_action = 'promote'\n\
             recovery_target_timeline = 'latest'\n"
        );
        assert_eq!(settings.signal_file(), "recovery.signal");
    }

    #[test]
    fn each_target_and_the_standby_settings_have_their_line() {
        for (target, line) in [
            (
                RecoveryTarget::Lsn("0/3000060".into()),
                "recovery_target_lsn = '0/3000060'",
            ),
            (
                RecoveryTarget::Name("before upgrade".into()),
                "recovery_target_name = 'before upgrade'",
            ),
            (
                RecoveryTarget::Xid("771".into()),
                "recovery_target_xid = '771'",
            ),
            (RecoveryTarget::Immediate, "recovery_target = 'immediate'"),
        ] {
            let text = RecoverySettings {
                target: Some(target),
                target_timeline: Some(TargetTimeline::Number(3)),
                target_action: Some(TargetAction::Shutdown),
                ..settings()
            }
            .text()
            .unwrap();
            assert!(text.contains(&format!("\n{line}\n")), "{text}");
            assert!(text.ends_with(
                "recovery_target_action = 'shutdown'\nrecovery_target_timeline = '3'\n"
            ));
        }
        let standby = RecoverySettings {
            standby: true,
            primary_conninfo: Some("host=primary user=replicator password='it''s'".into()),
            ..settings()
        };
        assert_eq!(standby.signal_file(), "standby.signal");
        assert!(
            standby.text().unwrap().ends_with(
                "primary_conninfo = 'host=primary user=replicator password=''it''''s'''\n"
            )
        );
    }

    #[test]
    fn paths_are_quoted_for_the_shell_then_for_percent_then_for_the_config_file() {
        let settings = RecoverySettings {
            pgbak: "/opt/pg bak/pgbak".into(),
            source: "/backups/it's 100%\\x".into(),
            ..settings()
        };
        assert_eq!(
            settings.restore_command(),
            r"'/opt/pg bak/pgbak' restore-wal %f %p --from '/backups/it'\''s 100%%\x'"
        );
        assert_eq!(
            settings.text().unwrap().lines().nth(1).unwrap(),
            r"restore_command = '''/opt/pg bak/pgbak'' restore-wal %f %p --from ''/backups/it''\\''''s 100%%\\x'''"
        );
    }

    #[test]
    fn config_quoting_doubles_quotes_and_backslashes_and_refuses_line_breaks() {
        assert_eq!(quote_config_value("plain").unwrap(), "'plain'");
        assert_eq!(quote_config_value("it's").unwrap(), "'it''s'");
        assert_eq!(quote_config_value(r"a\b").unwrap(), r"'a\\b'");
        assert_eq!(quote_config_value("").unwrap(), "''");
        assert!(quote_config_value("two\nlines").is_err());
        let error = RecoverySettings {
            primary_conninfo: Some("host=a\nhost=b".into()),
            ..settings()
        }
        .text()
        .unwrap_err();
        assert!(matches!(
            error,
            RestoreError::Setting {
                setting: "primary_conninfo",
                ..
            }
        ));
    }

    #[test]
    fn the_block_is_appended_after_what_is_there_and_the_signal_file_written() {
        let scratch = ScratchDirectory::new("recovery-settings");
        fs::write(scratch.0.join(AUTO_CONF), "work_mem = '64MB'").unwrap();
        write(&scratch.0, &settings()).unwrap();
        assert_eq!(
            fs::read_to_string(scratch.0.join(AUTO_CONF)).unwrap(),
            "work_mem = '64MB'\n# added by pgbak restore\n\
             restore_command = '/usr/local/bin/pgbak restore-wal %f %p --from /var/lib/pgbak'\n"
        );
        assert_eq!(fs::read(scratch.0.join("recovery.signal")).unwrap(), b"");
        // Missing: created, with the block alone.
        let fresh = ScratchDirectory::new("recovery-settings-fresh");
        write(
            &fresh.0,
            &RecoverySettings {
                standby: true,
                ..settings()
            },
        )
        .unwrap();
        assert!(
            fs::read_to_string(fresh.0.join(AUTO_CONF))
                .unwrap()
                .starts_with(BLOCK_MARK)
        );
        assert!(fresh.0.join("standby.signal").exists());
    }

    #[test]
    fn the_executable_is_absolute() {
        assert!(pgbak_executable().unwrap().is_absolute());
    }
}
