//! The sync log, `$PGBAK/sync.log`: [`SyncLog`].
//!
//! `$PGBAK/sync.log` (mode 0600, appended to, never truncated in place) holds one line per
//! journal fact the sync records, one line per line of output of the backup script and of
//! `pg_basebackup`, and the sync's own notes and errors. Every line starts with the time it
//! was written (RFC 3339, UTC, milliseconds) and a source tag:
//!
//! ```text
//! 2026-11-24T15:43:07.123Z pgbak[4242] SyncStarted force_script=false force_base=false
//! 2026-11-24T15:43:07.130Z pgbak[4242] ScriptStarted 20261124T154307Z current=20261124T160002Z
//! 2026-11-24T15:43:07.412Z [script 20261124T154307Z] sending incremental file list
//! 2026-11-24T15:43:09.020Z pgbak[4242] ScriptSucceeded 20261124T154307Z
//! 2026-11-24T15:43:09.030Z [pg_basebackup] pg_basebackup: error: connection refused
//! 2026-11-24T15:43:09.031Z pgbak[4242] note: the backup script is not running …
//! ```
//!
//! - `pgbak[PID] KIND details`: a fact the sync process PID recorded in the journal (the same
//!   facts `pgbak status --journal` decodes, here in short human form); `pgbak[PID] note: …` and
//!   `pgbak[PID] error: …` are the sync's own remarks.
//! - `[script DIRECTORY] …`: one line of the backup script's stdout or stderr (they share one
//!   pipe, so their lines interleave as the script wrote them) while it ships DIRECTORY.
//! - `[pg_basebackup] …`: a line of `pg_basebackup`'s error output.
//!
//! The log is bounded: when a line would take it past [`SYNC_LOG_MAX_BYTES`], `sync.log` is
//! renamed to `sync.log.1` (replacing the previous one) and a new `sync.log` is started, so the
//! two files together stay under 2 × 10 MiB. Only the process holding the sync lock writes the
//! log, so rotation needs no further coordination. The log is diagnostics, not a record: the
//! journal is the record. A log that cannot be written never stops the sync; the first failure
//! is reported on stderr.
//!
//! A new `sync.log` (first run, or after rotation) is followed by an fsync of `$PGBAK`, like
//! every entry pgbak creates there: the log's lines are not fsynced (they are a diagnostic
//! copy of what the journal holds durably), but its name must not vanish in a crash.
//!
//! Invariant: every descriptor opened here is `O_CLOEXEC` (std's default), so children
//! inherit none (S-3.5).

use crate::home::environment::PgbakHome;
use crate::machine::{Event, SyncStopReason};
use crate::os::clock;
use crate::os::regular_file::{NON_BLOCKING_OPEN_FLAGS, require_regular};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::home::names::SYNC_LOG_FILE_NAME;
use crate::home::names::SYNC_LOG_ROTATED_FILE_NAME;
use crate::os::durable::PRIVATE_FILE_MODE;

/// A sync log larger than this is rotated: a year of a busy server's lines stays within the two
/// files, and neither is too large to open in an editor.
pub const SYNC_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// `$PGBAK/sync.log`.
pub fn sync_log_path(home: &PgbakHome) -> PathBuf {
    home.path.join(SYNC_LOG_FILE_NAME)
}

/// The sync log (see the module header). Shared between the driver and the threads that drain
/// children's output; every line is written with one `write` under the mutex, so lines from
/// different threads never interleave within a line.
#[derive(Debug)]
pub struct SyncLog {
    inner: Mutex<LogFile>,
    /// Also copy every line to stderr (a foreground `pgbak sync` shows what it does).
    echo_to_stderr: bool,
    pid: u32,
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    rotated_path: PathBuf,
    file: Option<File>,
    bytes: u64,
    /// A write failed once and was reported; later failures are silent.
    failure_reported: bool,
}

impl SyncLog {
    /// Opens (creating, 0600) `$PGBAK/sync.log` for appending. Never fails: a log that cannot be
    /// opened is reported once on stderr and the sync runs without it.
    pub fn open(home: &PgbakHome, echo_to_stderr: bool) -> SyncLog {
        let mut log = LogFile {
            path: sync_log_path(home),
            rotated_path: home.path.join(SYNC_LOG_ROTATED_FILE_NAME),
            file: None,
            bytes: 0,
            failure_reported: false,
        };
        log.reopen();
        SyncLog {
            inner: Mutex::new(log),
            echo_to_stderr,
            pid: std::process::id(),
        }
    }

    /// A log that only echoes to stderr (for tests and for code paths without `$PGBAK`).
    pub fn stderr_only() -> SyncLog {
        SyncLog {
            inner: Mutex::new(LogFile {
                path: PathBuf::new(),
                rotated_path: PathBuf::new(),
                file: None,
                bytes: 0,
                failure_reported: true,
            }),
            echo_to_stderr: true,
            pid: std::process::id(),
        }
    }

    /// A log that writes nowhere (the simulated sync of the model-based tests).
    #[cfg(test)]
    pub(crate) fn discard() -> SyncLog {
        SyncLog {
            echo_to_stderr: false,
            ..SyncLog::stderr_only()
        }
    }

    /// One line `TIME SOURCE TEXT`. Control characters in `text` (a script printing `\r` or
    /// escape sequences) are shown escaped so one output line stays one log line.
    pub fn line(&self, source: &str, text: &str) {
        let mut line = format!("{} {source} ", clock::now().to_rfc3339());
        for character in text.chars() {
            if character.is_control() && character != '\t' {
                line.extend(character.escape_default());
            } else {
                line.push(character);
            }
        }
        line.push('\n');
        if self.echo_to_stderr {
            // Best effort: a closed stderr must not stop the sync (eprintln! would panic).
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            // A thread that panicked while logging left nothing half-done that matters here.
            Err(poisoned) => poisoned.into_inner(),
        };
        inner.write_line(line.as_bytes());
    }

    /// A fact this process recorded in the journal.
    pub fn event(&self, event: &Event) {
        self.line(&format!("pgbak[{}]", self.pid), &describe_event(event));
    }

    /// The sync's own remark.
    pub fn note(&self, text: &str) {
        self.line(&format!("pgbak[{}]", self.pid), &format!("note: {text}"));
    }

    /// An error the sync hit.
    pub fn error(&self, text: &str) {
        self.line(&format!("pgbak[{}]", self.pid), &format!("error: {text}"));
    }
}

impl LogFile {
    fn reopen(&mut self) {
        // Non-blocking and no symlinks (S-7.1): a FIFO named sync.log would block a plain
        // open for writing until a reader came, stopping the sync before it starts. A log
        // created here gets its directory entry fsynced (S-3.6).
        let open = |create_new: bool| {
            std::fs::OpenOptions::new()
                .append(true)
                .create_new(create_new)
                .mode(PRIVATE_FILE_MODE)
                .custom_flags(NON_BLOCKING_OPEN_FLAGS | nix::libc::O_NOFOLLOW)
                .open(&self.path)
        };
        let opened = match open(true) {
            Ok(file) => self.directory_fsynced().map(|()| file),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => open(false),
            Err(error) => Err(error),
        }
        .and_then(|file| {
            require_regular(&file)?;
            // The umask may have narrowed the mode; S-1.3 wants exactly 0600.
            file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
            let bytes = file.metadata()?.len();
            Ok((file, bytes))
        });
        match opened {
            Ok((file, bytes)) => {
                self.file = Some(file);
                self.bytes = bytes;
            }
            Err(error) => {
                self.file = None;
                self.report_failure("cannot be opened", &error);
            }
        }
    }

    /// Makes a new log's name (and a rotation's rename) durable: `$PGBAK` is fsynced.
    fn directory_fsynced(&self) -> io::Result<()> {
        match self.path.parent() {
            Some(directory) => crate::os::durable::fsync_directory(directory),
            None => Ok(()),
        }
    }

    fn write_line(&mut self, line: &[u8]) {
        if self.file.is_some() && self.bytes + line.len() as u64 > SYNC_LOG_MAX_BYTES {
            self.file = None;
            if let Err(error) = std::fs::rename(&self.path, &self.rotated_path) {
                self.report_failure("cannot be rotated", &error);
            }
            self.reopen();
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(line) {
            Ok(()) => self.bytes += line.len() as u64,
            Err(error) => self.report_failure("cannot be written", &error),
        }
    }

    fn report_failure(&mut self, what: &str, error: &io::Error) {
        if !self.failure_reported {
            self.failure_reported = true;
            let _ = writeln!(
                std::io::stderr(),
                "pgbak: sync log {}: {what}: {error} (the sync goes on without it)",
                self.path.display()
            );
        }
    }
}

/// A fact in one short line: its kind, then what matters about it.
fn describe_event(event: &Event) -> String {
    let kind = event.kind().name();
    let details = match event {
        Event::DirectoryOpened { directory, .. }
        | Event::BaseBackupStarted { directory, .. }
        | Event::DirectoryRemoved { directory, .. }
        | Event::CurrentLinkSwitched { directory, .. }
        | Event::DirectoryLost { directory, .. }
        | Event::ScriptSucceeded { directory, .. }
        | Event::PruneStarted { directory, .. }
        | Event::DirectoryMovedAside { directory, .. }
        | Event::PruneScriptSucceeded { directory, .. } => directory.to_string(),
        Event::DirectoryPruned {
            directory,
            prune_script,
            ..
        } => format!("{directory} prune_script={prune_script}"),
        Event::SystemIdentifierRecorded {
            system_identifier, ..
        } => system_identifier.to_string(),
        Event::NewSeriesStarted { .. } => String::new(),
        Event::CurrentLinkObserved { directory, .. } => match directory {
            Some(directory) => format!("current -> {directory}"),
            None => "current points at no directory of the journal".to_owned(),
        },
        Event::WalArchived {
            file, directories, ..
        } => {
            let names: Vec<String> = directories.iter().map(|d| d.to_string()).collect();
            format!("{} into {}", file.as_str(), names.join(","))
        }
        Event::BaseBackupFinished {
            directory,
            base_bytes,
            ..
        } => format!("{directory} base_bytes={base_bytes}"),
        Event::BaseBackupFailed {
            directory, output, ..
        }
        | Event::BaseBackupServerUnreachable {
            directory, output, ..
        }
        | Event::ScriptFailed {
            directory, output, ..
        }
        | Event::PruneScriptFailed {
            directory, output, ..
        } => format!("{directory}: {}", last_line(output)),
        Event::ScriptStarted {
            directory,
            current_timestamp,
            through_version,
            ..
        } => format!("{directory} current={current_timestamp} version={through_version}"),
        Event::SyncStarted {
            pid,
            force_script,
            force_base,
            ..
        } => format!("pid={pid} force_script={force_script} force_base={force_base}"),
        Event::SyncStopped { pid, reason, .. } => {
            let reason = match reason {
                SyncStopReason::Finished => "finished".to_owned(),
                SyncStopReason::Interrupted => "interrupted".to_owned(),
                SyncStopReason::Error { message } => format!("error: {message}"),
            };
            format!("pid={pid} {reason}")
        }
        Event::SyncAbandoned { pid, .. } => format!("pid={pid} (died without stopping)"),
        Event::JournalRebuilt { reason, .. } => reason.clone(),
        Event::JournalTailCut {
            offset,
            discarded_bytes,
            ..
        } => format!("at offset {offset}, {discarded_bytes} bytes discarded"),
    };
    format!("{kind} {details}")
}

/// The last non-empty line of a failure's output: the one that usually says what went wrong.
pub fn last_line(output: &str) -> &str {
    output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;
    use crate::timestamp::{DirectoryName, UnixMillis};
    use std::os::unix::fs::MetadataExt;

    fn home(scratch: &ScratchDirectory) -> PgbakHome {
        scratch.home()
    }

    #[test]
    fn the_log_is_private_and_one_line_per_call_with_control_characters_escaped() {
        let scratch = ScratchDirectory::new("sync-log");
        let home = home(&scratch);
        let log = SyncLog::open(&home, false);
        log.line("[script 20261124T154307Z]", "progress\r50%\x1b[K");
        log.event(&Event::ScriptSucceeded {
            directory: DirectoryName(1_795_478_400),
            at: UnixMillis(0),
        });
        let text = std::fs::read_to_string(sync_log_path(&home)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(" [script 20261124T154307Z] progress\\r50%\\u{1b}[K"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(&format!(
                " pgbak[{}] ScriptSucceeded 20261124T000000Z",
                std::process::id()
            )),
            "{}",
            lines[1]
        );
        let mode = std::fs::metadata(sync_log_path(&home)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_full_log_is_rotated_to_sync_log_1() {
        let scratch = ScratchDirectory::new("sync-log-rotate");
        let home = home(&scratch);
        // A log just under the limit: the next line rotates it.
        let filler = vec![b'x'; (SYNC_LOG_MAX_BYTES - 10) as usize];
        std::fs::write(sync_log_path(&home), &filler).unwrap();
        let log = SyncLog::open(&home, false);
        log.note("after rotation");
        let rotated = std::fs::metadata(home.path.join(SYNC_LOG_ROTATED_FILE_NAME)).unwrap();
        assert_eq!(rotated.len(), filler.len() as u64);
        let text = std::fs::read_to_string(sync_log_path(&home)).unwrap();
        assert!(text.ends_with("note: after rotation\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}
