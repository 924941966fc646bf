//! The seam between the sync session and the world it acts on: [`SessionWorld`], everything
//! the session loop does outside its own memory (the clock, the stop signals, the identity
//! checks of S-6.6, the journal, the two directory operations, and starting, polling and
//! stopping the base backup and the script), and [`RealWorld`], the one production
//! implementation (real processes, the real journal, the one [`SessionClock`], S-6.5).
//!
//! The session loop in `mod.rs` is written against the trait only, so the model-based tests
//! (`simulated.rs`) drive the very same loop through a simulated world: the random walks
//! exercise the real sync code, not a second hand-written driver.
//!
//! Invariant: [`RealWorld`] does exactly what the loop did before the seam existed (same
//! facts, same order, same log lines); decisions and log lines about facts stay in the loop.

use super::base_backup::RunningBase;
use crate::config::Config;
use crate::home::environment::PgbakHome;
use crate::home::journal_file::{self, JOURNAL_LOCK_WAIT, JournalFileError, OpenedJournal};
use crate::home::names::WAL_DIRECTORY_NAME;
use crate::journal::JournalError;
use crate::machine::{Event, State};
use crate::os::clock::SessionClock;
use crate::os::durable;
use crate::os::lock::{LockGuard, LockKind, LockRange, Wait};
use crate::os::signals::StopSignals;
use crate::sync::SessionError;
use crate::sync::base_backup::BaseBackupRun;
use crate::sync::base_backup::progress::ProgressFile;
use crate::sync::directories;
use crate::sync::log::SyncLog;
use crate::sync::script::{GroupLeader, ScriptOutcome, ScriptProcess, failure_output};
use crate::timestamp::{DirectoryName, UnixMillis};
use nix::sys::signal::Signal;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// How often a running prune script is looked at: it is waited for in place (S-8.3), so this is
/// also how soon a stop signal reaches it.
const PRUNE_SCRIPT_POLL: Duration = Duration::from_millis(50);

/// Whether a refresh found the journal as this process left it, or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Extended,
    Replaced,
}

/// What the session loop does to the world. A handle (`Script`, `BaseBackup`) exists exactly
/// while the loop believes the child runs; `stop_*` consumes it.
pub(crate) trait SessionWorld {
    /// A running backup script.
    type Script;
    /// A running base backup.
    type BaseBackup;

    /// The session's one clock (S-6.5): never steps, never goes back.
    fn now(&self) -> UnixMillis;
    /// Waits this long (the loop decides how long; the world only waits).
    fn sleep(&mut self, duration: Duration);
    /// A stop signal received (S-6.1), if any.
    fn stop_signal(&self) -> Option<Signal>;
    /// S-6.6: `$PGBAK` and `pgbak.lock` are still what this sync locked.
    fn check_still_same(&self) -> Result<(), SessionError>;

    /// The journal's state.
    fn state(&self) -> &State;
    /// Appends facts durably (S-3.2) before returning.
    fn append(&mut self, events: &[Event], at: UnixMillis) -> Result<(), SessionError>;
    /// Catches up with other processes' appends; notes a repair or rebuild in `log`.
    fn refresh(&mut self, at: UnixMillis, log: &SyncLog) -> Result<Freshness, SessionError>;

    /// Where `$PGBAK/current` points, if at a directory name.
    fn read_current_link(&self) -> Option<DirectoryName>;
    /// Points `$PGBAK/current` at `directory` atomically (S-4.3).
    fn point_current_link_at(&mut self, directory: DirectoryName) -> io::Result<()>;
    /// Removes a failed directory (S-4.5).
    fn remove_failed_directory(&mut self, directory: DirectoryName) -> io::Result<()>;
    /// Retention (S-8.3): renames the directory to `.pruning-TIMESTAMP`, fsyncs `$PGBAK`.
    fn move_directory_aside(&mut self, directory: DirectoryName) -> io::Result<()>;
    /// Retention (S-8.3): removes `.pruning-TIMESTAMP`, fsyncs `$PGBAK`.
    fn remove_moved_aside(&mut self, directory: DirectoryName) -> io::Result<()>;
    /// Whether `$PGBAK/scripts/prune` exists, in any form (a broken one fails when run and is
    /// retried like the backup script).
    fn prune_script_exists(&self) -> bool;
    /// Runs `scripts/prune DIRECTORY` to its end (S-8.3): `Err` is the failure's output. A stop
    /// signal or `script.timeout_seconds` stops it, as a failure.
    fn run_prune_script(
        &mut self,
        directory: DirectoryName,
        log: &Arc<SyncLog>,
    ) -> Result<(), String>;

    /// Creates the base backup's directory and its `pg_wal/`; the error as a log line.
    fn prepare_base_directory(&mut self, directory: DirectoryName) -> Result<(), String>;
    /// Starts `pg_basebackup` into `directory`; the error as a log line.
    fn start_base_backup(
        &mut self,
        directory: DirectoryName,
        log: &Arc<SyncLog>,
    ) -> Result<Self::BaseBackup, String>;
    /// Non-blocking: the bytes of a finished run, or its failure output.
    fn poll_base_backup(&mut self, run: &mut Self::BaseBackup) -> Option<Result<u64, String>>;
    /// Publishes a running base backup's progress for `status`.
    fn report_base_backup_progress(&mut self, run: &mut Self::BaseBackup, log: &SyncLog);
    /// Stops a run; returns its failure output ending with `reason`.
    fn stop_base_backup(&mut self, run: Self::BaseBackup, reason: &str) -> String;

    /// Starts the backup script (S-5.1); the error as a log line.
    fn start_script(
        &mut self,
        directory: DirectoryName,
        current_timestamp: DirectoryName,
        log: &Arc<SyncLog>,
    ) -> Result<Self::Script, String>;
    /// Non-blocking: how the run ended, once it did.
    fn poll_script(&mut self, script: &mut Self::Script) -> Option<ScriptOutcome>;
    /// Asks the script to stop without waiting (its group gets SIGTERM).
    fn terminate_script(&mut self, script: &Self::Script);
    /// Stops the script; returns its failure output ending with `reason`.
    fn stop_script(&mut self, script: Self::Script, reason: &str) -> String;
}

/// The world of a real sync: processes, files, the journal in `pgbak.lock`.
pub(crate) struct RealWorld<'a> {
    pub(crate) home: &'a PgbakHome,
    pub(crate) config: &'a Config,
    pub(crate) journal: OpenedJournal,
    pub(crate) signals: &'a StopSignals,
    pub(crate) clock: SessionClock,
    /// The sync lock this session holds, on the file it compares with `pgbak.lock` (S-6.6).
    pub(crate) sync_lock: &'a LockGuard,
}

/// Catches up with other processes' appends under the journal lock (the refresh may cut a torn
/// tail or compact, so the lock is exclusive). A journal that needs a rebuild is reopened, which
/// rebuilds it: for this process that is the same as another process having rebuilt it.
pub(crate) fn refresh_journal(
    home: &PgbakHome,
    journal: &mut OpenedJournal,
    at: UnixMillis,
    log: &SyncLog,
) -> Result<Freshness, SessionError> {
    let guard = journal.lock_file.lock(
        LockRange::Journal,
        LockKind::Exclusive,
        Wait::UpTo(JOURNAL_LOCK_WAIT),
    )?;
    match journal.journal.refresh(at) {
        Ok(report) => {
            if let Some(repair) = &report.repair {
                log.note(&format!("journal repaired: {repair:?}"));
            }
            Ok(if report.journal_replaced {
                Freshness::Replaced
            } else {
                Freshness::Extended
            })
        }
        Err(JournalError::NeedsRebuild { reason }) => {
            drop(guard);
            log.note(&format!(
                "the journal must be rebuilt ({reason}); rebuilding it"
            ));
            *journal = journal_file::open_journal(home, at)?;
            Ok(Freshness::Replaced)
        }
        Err(error) => Err(JournalFileError::in_journal(journal.lock_file.path())(error).into()),
    }
}

impl SessionWorld for RealWorld<'_> {
    type Script = ScriptProcess;
    type BaseBackup = RunningBase;

    fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn stop_signal(&self) -> Option<Signal> {
        self.signals.received()
    }

    fn check_still_same(&self) -> Result<(), SessionError> {
        self.sync_lock.check_still_same()?;
        self.journal.lock_file.check_still_same()?;
        Ok(())
    }

    fn state(&self) -> &State {
        self.journal.journal.state()
    }

    fn append(&mut self, events: &[Event], at: UnixMillis) -> Result<(), SessionError> {
        self.journal.append(events, at)?;
        Ok(())
    }

    fn refresh(&mut self, at: UnixMillis, log: &SyncLog) -> Result<Freshness, SessionError> {
        refresh_journal(self.home, &mut self.journal, at, log)
    }

    fn read_current_link(&self) -> Option<DirectoryName> {
        crate::home::tree_scan::current_link_target(&self.home.path)
    }

    fn point_current_link_at(&mut self, directory: DirectoryName) -> io::Result<()> {
        directories::point_current_link_at(self.home, directory)
    }

    fn remove_failed_directory(&mut self, directory: DirectoryName) -> io::Result<()> {
        directories::remove_failed_directory(self.home, directory)
    }

    fn move_directory_aside(&mut self, directory: DirectoryName) -> io::Result<()> {
        directories::move_directory_aside(self.home, directory)
    }

    fn remove_moved_aside(&mut self, directory: DirectoryName) -> io::Result<()> {
        directories::remove_moved_aside(self.home, directory)
    }

    fn prune_script_exists(&self) -> bool {
        std::fs::symlink_metadata(self.home.prune_script_path()).is_ok()
    }

    fn run_prune_script(
        &mut self,
        directory: DirectoryName,
        log: &Arc<SyncLog>,
    ) -> Result<(), String> {
        let mut script =
            ScriptProcess::start_prune(self.home, directory, log, GroupLeader::Guardian)
                .map_err(|error| error.to_string())?;
        let timeout = match self.config.script.timeout_seconds {
            0 => None,
            seconds => Some(Duration::from_secs(seconds)),
        };
        loop {
            match script.try_finish() {
                Some(ScriptOutcome::Succeeded) => return Ok(()),
                Some(ScriptOutcome::Failed { output }) => return Err(output),
                None => {}
            }
            if let Some(signal) = self.signals.received() {
                return Err(script.stop(&format!("interrupted by {signal}")));
            }
            if timeout.is_some_and(|timeout| script.running_for() >= timeout) {
                return Err(script.stop(&format!(
                    "timed out after {} s (script.timeout_seconds): killed",
                    self.config.script.timeout_seconds
                )));
            }
            std::thread::sleep(PRUNE_SCRIPT_POLL);
        }
    }

    fn prepare_base_directory(&mut self, directory: DirectoryName) -> Result<(), String> {
        let path = self.home.directory_path(directory);
        durable::create_private_directory(&path)
            .and_then(|_| durable::create_private_directory(&path.join(WAL_DIRECTORY_NAME)))
            .map(|_| ())
            .map_err(|error| format!("cannot create {}: {error}", path.display()))
    }

    fn start_base_backup(
        &mut self,
        directory: DirectoryName,
        log: &Arc<SyncLog>,
    ) -> Result<RunningBase, String> {
        let lines = Arc::clone(log);
        let run = BaseBackupRun::start_with_log(
            self.home,
            self.config,
            directory,
            Box::new(move |line: &str| lines.line("[pg_basebackup]", line)),
        )
        .map_err(|error| crate::error::one_line(&error))?;
        let progress = ProgressFile::create(self.home, directory)
            .inspect_err(|error| {
                log.note(&format!(
                    "cannot write the base backup's progress for status: {error}"
                ));
            })
            .ok();
        Ok(RunningBase { run, progress })
    }

    fn poll_base_backup(&mut self, running: &mut RunningBase) -> Option<Result<u64, String>> {
        running.run.try_finish()
    }

    fn report_base_backup_progress(&mut self, running: &mut RunningBase, log: &SyncLog) {
        running.report_progress(log);
    }

    fn stop_base_backup(&mut self, running: RunningBase, reason: &str) -> String {
        failure_output(&running.run.stop(), reason)
    }

    fn start_script(
        &mut self,
        directory: DirectoryName,
        current_timestamp: DirectoryName,
        log: &Arc<SyncLog>,
    ) -> Result<ScriptProcess, String> {
        ScriptProcess::start(
            self.home,
            directory,
            current_timestamp,
            log,
            GroupLeader::Guardian,
        )
        .map_err(|error| error.to_string())
    }

    fn poll_script(&mut self, script: &mut ScriptProcess) -> Option<ScriptOutcome> {
        script.try_finish()
    }

    fn terminate_script(&mut self, script: &ScriptProcess) {
        script.terminate();
    }

    fn stop_script(&mut self, script: ScriptProcess, reason: &str) -> String {
        script.stop(reason)
    }
}
