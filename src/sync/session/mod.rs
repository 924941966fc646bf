//! The sync loop: carries out the pure machine's actions on the world (S-3.2, S-5, S-6.1,
//! S-6.2, S-6.5, S-6.6).
//!
//! Owns: [`run_sync`] (what `pgbak sync`, `force-sync` and the background sync run),
//! [`SyncOptions`] and [`SyncEnded`]. Everything the loop does to the world goes through the
//! [`world::SessionWorld`] seam: [`world::RealWorld`] in production (real processes, the real
//! journal, one clock), a simulated world in the model-based tests (`simulated.rs`), so the
//! random walks drive this very loop:
//!
//! 1. Take the sync lock (S-3.5) through its own open file description. If another sync holds
//!    it, a background sync exits quietly (S-2.8: one sync at a time) and a foreground one waits
//!    for it first (S-6.1).
//! 2. Open the journal. A session left open by a sync that died (we hold the lock, so it is
//!    dead) is closed with `SyncAbandoned`, which records its running work as failed (S-4.5);
//!    then `SyncStarted`.
//! 3. Loop: check that `$PGBAK` and `pgbak.lock` are still the directory and file this sync
//!    holds (device and inode, S-6.6; otherwise stop the children, log one line and fail:
//!    another sync may already hold the lock on the new file), catch up with the journal (new WAL from `pgbak wal`), record the outcome of every
//!    child that ended, ask `next_actions(state, now, policy)`, and carry out its actions,
//!    each with its intent recorded before the effect and its outcome after (S-3.2):
//!    `RemoveFailedDirectory` → remove, `DirectoryRemoved`; `PointCurrentLinkAt` → switch,
//!    `CurrentLinkSwitched`; `StartBaseBackup` → `DirectoryOpened` (if asked), create the
//!    directory, `BaseBackupStarted`, start `pg_basebackup`; `RunScript` → `ScriptStarted`,
//!    start the script; `StopScript` → kill it, `ScriptFailed`. The base backup and the script
//!    run at the same time (S-5.5). With nothing to start, sleep until the plan's `wake_at`,
//!    but at most [`POLL_INTERVAL`]: that is how soon a finished child, a stop signal or new
//!    WAL is noticed. There is no other sleep: every wait (backoffs, the script timeout, the
//!    next base backup) is the machine's decision (S-6.5). Every `now` comes from one
//!    [`SessionClock`] (wall time at start plus monotonic time since), so a clock step neither
//!    stalls a backoff nor ends a script's timeout early.
//! 4. When the plan is finished (nothing pending, due, running or being retried, S-6.2), record
//!    `SyncStopped{Finished}`, release the lock, and look at the journal once more: a `pgbak
//!    wal` that recorded a file just before the release saw the lock held and started no sync,
//!    so if there is work now, take the lock again and go on (if another sync took it
//!    meanwhile, that one does the work).
//!
//! Stop signals (SIGTERM, SIGINT, SIGHUP, S-6.1): running children's process groups get SIGTERM,
//! then SIGKILL after a grace period; their failure is recorded ("interrupted by SIGTERM" after
//! their last output lines), then `SyncStopped{Interrupted}`. The next sync resumes: the machine
//! decides again from the recorded state (a failed base backup's directory is removed, the
//! script runs again).
//!
//! Errors (the journal cannot be written): children are stopped, their failure and
//! `SyncStopped{Error}` are recorded if the journal still takes them, and the error is
//! returned. Another process rebuilding the journal (S-3.3, `journal_replaced`) is not an
//! error: the children are stopped without recording anything about them (the rebuilt state
//! knows nothing of them) and the loop starts over from the rebuilt state with a new
//! `SyncStarted`.
//!
//! The sync log `$PGBAK/sync.log` gets a line per recorded fact and per output line of the
//! children; its format is documented in [`crate::sync::log`].
//!
//! Invariants: `SyncStarted` is recorded only while this process holds the sync lock, and
//! `SyncStopped` before it lets go, so "the journal shows a session and nobody holds the lock"
//! always means "that process died". A child runs only after its intent is durable, and its
//! handle here exists exactly while the state shows it running. An effect that fails without a
//! fact to record it (removing a directory, switching the link) is tried again after
//! [`UNRECORDED_RETRY`] instead of at once, so a persistent file-system problem never becomes a
//! busy loop, and the rest of the work (shipping WAL) goes on meanwhile.

use crate::config::Config;
use crate::home::environment::PgbakHome;
use crate::home::journal_file;
use crate::machine::{
    Action, Event, Policy, State, StopScriptReason, SyncStopReason, next_actions,
};
use crate::os::clock::SessionClock;
use crate::os::signals::StopSignals;
use crate::sync::SessionError;
use crate::sync::lock;
use crate::sync::log::SyncLog;
use crate::sync::script::ScriptOutcome;
use crate::timestamp::{DirectoryName, UnixMillis};
use base_backup::base_backup_outcome;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;
use world::{Freshness, RealWorld, SessionWorld, refresh_journal};

mod base_backup;
#[cfg(test)]
pub(crate) mod simulated;
mod world;

/// The longest the loop sleeps: how soon it notices a child that finished, a stop signal, or a
/// file `pgbak wal` archived ("notices new WAL within a second"). Each look is a `waitid` per
/// child and, for the journal, an `fstat` and a 4 KiB header read under the journal lock.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The shortest sleep, so a wake time that rounds to "now" never makes the loop spin.
const MINIMUM_SLEEP: Duration = Duration::from_millis(5);

/// An effect with no failure fact (removing a failed directory, switching `current`) that failed
/// is tried again this much later; the error is in the sync log each time.
pub const UNRECORDED_RETRY: Duration = Duration::from_secs(60);

/// What the sync was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncOptions {
    /// `force-sync`: run the script for the current directory even if nothing is new (S-6.1).
    pub force_script: bool,
    /// `sync --base`: take a base backup now (S-4.2).
    pub force_base: bool,
    /// Started by `pgbak wal` (S-2.8): exit quietly if another sync runs, log to `sync.log`
    /// only (not to stderr).
    pub background: bool,
}

/// How [`run_sync`] ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncEnded {
    /// Nothing pending, due, running or being retried: `SyncStopped{Finished}` is recorded.
    Finished,
    /// Another sync process holds the sync lock: a background sync left the work to it, or a
    /// sync that finished saw a new one take over. Nothing was recorded by this round.
    AnotherSyncRuns,
    /// A stop signal: running work was stopped and recorded as failed, then
    /// `SyncStopped{Interrupted}`.
    Interrupted { signal: Signal },
    /// A stop signal arrived while waiting for another sync to finish: this one never started
    /// and recorded nothing.
    InterruptedWhileWaiting { signal: Signal },
}

/// Runs the sync loop (see the module header) until it is finished, interrupted, or fails.
/// Installs the stop-signal handlers for its duration.
pub fn run_sync(
    home: &PgbakHome,
    config: &Config,
    options: SyncOptions,
) -> Result<SyncEnded, SessionError> {
    let signals = StopSignals::install().map_err(|source| SessionError::Signals { source })?;
    run_sync_with_signals(home, config, options, &signals)
}

/// [`run_sync`] with handlers the caller installed.
pub fn run_sync_with_signals(
    home: &PgbakHome,
    config: &Config,
    options: SyncOptions,
    signals: &StopSignals,
) -> Result<SyncEnded, SessionError> {
    let policy = config.machine_policy();
    let clock = SessionClock::start();
    let mut round_options = options;
    let mut first_round = true;
    loop {
        let sync_lock = match lock::try_take_sync_lock(home)? {
            Some(guard) => guard,
            None if options.background || !first_round => return Ok(SyncEnded::AnotherSyncRuns),
            None => {
                let log = SyncLog::stderr_only();
                log.note(
                    "another sync process is running; waiting for it to finish first \
                     (pgbak status shows what it is doing)",
                );
                match lock::wait_for_sync_lock(home, signals)? {
                    Some(guard) => guard,
                    None => {
                        let signal = signals.received().unwrap_or(Signal::SIGTERM);
                        return Ok(SyncEnded::InterruptedWhileWaiting { signal });
                    }
                }
            }
        };
        let log = Arc::new(SyncLog::open(home, !options.background));
        let journal = match journal_file::open_journal(home, clock.now()) {
            Ok(journal) => journal,
            Err(error) => {
                log.error(&crate::error::one_line(&error));
                return Err(error.into());
            }
        };
        let world = RealWorld {
            home,
            config,
            journal,
            signals,
            clock,
            sync_lock: &sync_lock,
        };
        let mut session = Session::new(
            home,
            policy,
            std::process::id(),
            round_options,
            Arc::clone(&log),
            world,
        );
        let ended = session.run()?;
        if ended != SyncEnded::Finished {
            return Ok(ended);
        }
        let mut journal = session.into_world().journal;
        // Let go first, then look: see step 4 in the module header.
        drop(sync_lock);
        if signals.received().is_some() {
            // Asked to stop just as the work finished: the next sync takes what came since.
            return Ok(SyncEnded::Finished);
        }
        let at = clock.now();
        refresh_journal(home, &mut journal, at, &log)?;
        if next_actions(journal.journal.state(), at, &policy).finished {
            return Ok(SyncEnded::Finished);
        }
        log.note("new work arrived as the sync stopped; starting again");
        // The forced run and the requested base backup were served by the round that finished.
        round_options = SyncOptions {
            force_script: false,
            force_base: false,
            ..options
        };
        first_round = false;
    }
}

/// One session: from `SyncStarted` to `SyncStopped`, holding the sync lock throughout.
/// Everything it does outside its own memory goes through its [`SessionWorld`].
pub(crate) struct Session<'a, W: SessionWorld> {
    /// For messages only (`$PGBAK/current`'s path).
    home: &'a PgbakHome,
    policy: Policy,
    pid: u32,
    options: SyncOptions,
    log: Arc<SyncLog>,
    world: W,
    /// The running script and its directory, exactly while the state shows it running.
    script: Option<(DirectoryName, W::Script)>,
    /// The running base backup and its directory, exactly while the state shows it running.
    base_backup: Option<(DirectoryName, W::BaseBackup)>,
    /// Effects that failed without a fact to record, and when (session clock) to try them
    /// again.
    deferred: Vec<(Action, UnixMillis)>,
}

impl<'a, W: SessionWorld> Session<'a, W> {
    pub(crate) fn new(
        home: &'a PgbakHome,
        policy: Policy,
        pid: u32,
        options: SyncOptions,
        log: Arc<SyncLog>,
        world: W,
    ) -> Self {
        Session {
            home,
            policy,
            pid,
            options,
            log,
            world,
            script: None,
            base_backup: None,
            deferred: Vec::new(),
        }
    }

    fn state(&self) -> &State {
        self.world.state()
    }

    pub(crate) fn into_world(self) -> W {
        self.world
    }

    pub(crate) fn run(&mut self) -> Result<SyncEnded, SessionError> {
        match self.run_loop() {
            Ok(ended) => Ok(ended),
            Err(error) => {
                self.stop_after_error(&error);
                Err(error)
            }
        }
    }

    fn now(&self) -> UnixMillis {
        self.world.now()
    }

    /// S-6.6: the lock this sync holds and the journal it writes must still be
    /// `$PGBAK/pgbak.lock` in `$PGBAK`. If not, the error ends the session (see
    /// [`Self::stop_after_error`]): its children are stopped, so they never overlap the runs
    /// of a sync that locked the new file.
    fn check_still_same(&self) -> Result<(), SessionError> {
        self.world.check_still_same()
    }

    fn run_loop(&mut self) -> Result<SyncEnded, SessionError> {
        self.check_still_same()?;
        self.world.refresh(self.now(), &self.log)?;
        self.begin()?;
        loop {
            if let Some(signal) = self.world.stop_signal() {
                return self.interrupt(signal);
            }
            self.check_still_same()?;
            if self.world.refresh(self.now(), &self.log)? == Freshness::Replaced {
                self.start_over()?;
                continue;
            }
            self.collect_outcomes()?;
            self.observe_current_link()?;
            let at = self.now();
            let plan = next_actions(self.state(), at, &self.policy);
            let mut acted = false;
            for action in &plan.actions {
                acted |= self.perform(action)?;
            }
            if acted {
                continue;
            }
            if plan.finished && self.script.is_none() && self.base_backup.is_none() {
                crate::failpoint::fail_point("sync-before-stopped");
                self.record(vec![Event::SyncStopped {
                    pid: self.pid,
                    reason: SyncStopReason::Finished,
                    at: self.now(),
                }])?;
                return Ok(SyncEnded::Finished);
            }
            self.sleep(plan.wake_at, at);
        }
    }

    /// Compares `$PGBAK/current` on disk with the journal's idea of it (S-6.4). Someone who
    /// pointed it elsewhere or removed it gets it back: the fact is recorded, and the plan
    /// then switches it to the current directory like after any base backup.
    fn observe_current_link(&mut self) -> Result<(), SessionError> {
        let Some(recorded) = self.state().current_link else {
            return Ok(()); // not switched yet: the plan switches it anyway
        };
        let on_disk = self.world.read_current_link();
        if on_disk == Some(recorded) {
            return Ok(());
        }
        self.log.note(&format!(
            "{} does not point at {recorded} as recorded: pointing it back",
            self.home.current_link_path().display()
        ));
        let at = self.now();
        self.record(vec![Event::CurrentLinkObserved {
            directory: on_disk,
            at,
        }])
    }

    /// `SyncAbandoned` for a dead predecessor's session, then `SyncStarted`, in one append.
    fn begin(&mut self) -> Result<(), SessionError> {
        let at = self.now();
        let mut events = Vec::new();
        if let Some(stale) = self.state().sync {
            self.log.note(&format!(
                "sync process {} died without stopping; recording its running work as failed",
                stale.pid
            ));
            events.push(Event::SyncAbandoned { pid: stale.pid, at });
        }
        events.push(Event::SyncStarted {
            pid: self.pid,
            force_script: self.options.force_script,
            force_base: self.options.force_base,
            at,
        });
        self.record(events)?;
        crate::failpoint::fail_point("sync-after-started");
        Ok(())
    }

    /// Another process rebuilt the journal: what we ran is unknown to the new state.
    fn start_over(&mut self) -> Result<(), SessionError> {
        self.log.note(
            "the journal was rebuilt from the directory tree by another process; stopping \
             running work and starting over from the rebuilt state",
        );
        if let Some((_, script)) = self.script.take() {
            self.world.terminate_script(&script);
            let _ = self
                .world
                .stop_script(script, "stopped: the journal was rebuilt");
        }
        if let Some((_, running)) = self.base_backup.take() {
            let _ = self.world.stop_base_backup(running, "");
        }
        self.deferred.clear();
        self.begin()
    }

    /// Records the outcome of every child that ended.
    fn collect_outcomes(&mut self) -> Result<(), SessionError> {
        if let Some((directory, script)) = self.script.as_mut()
            && let Some(outcome) = self.world.poll_script(script)
        {
            let directory = *directory;
            self.script = None;
            // The script exited; a crash here leaves its intent without an outcome.
            crate::failpoint::fail_point("sync-after-script-exit");
            let at = self.now();
            self.record(vec![match outcome {
                ScriptOutcome::Succeeded => Event::ScriptSucceeded { directory, at },
                ScriptOutcome::Failed { output } => Event::ScriptFailed {
                    directory,
                    output,
                    at,
                },
            }])?;
        }
        if let Some((directory, running)) = self.base_backup.as_mut() {
            match self.world.poll_base_backup(running) {
                Some(result) => {
                    let directory = *directory;
                    self.base_backup = None;
                    let event = base_backup_outcome(directory, result, self.now());
                    self.record(vec![event])?;
                }
                None => self.world.report_base_backup_progress(running, &self.log),
            }
        }
        Ok(())
    }

    /// Carries out one action; `false` if it is deferred (see [`UNRECORDED_RETRY`]).
    fn perform(&mut self, action: &Action) -> Result<bool, SessionError> {
        let retry_due = self
            .deferred
            .iter()
            .find(|(deferred, _)| deferred == action)
            .map(|(_, due)| *due);
        if retry_due.is_some_and(|due| self.now() < due) {
            return Ok(false);
        }
        self.deferred.retain(|(deferred, _)| deferred != action);
        match action {
            Action::RemoveFailedDirectory { directory } => {
                match self.world.remove_failed_directory(*directory) {
                    Ok(()) => self.record(vec![Event::DirectoryRemoved {
                        directory: *directory,
                        at: self.now(),
                    }])?,
                    Err(error) => {
                        self.defer(
                            action,
                            &format!("removing failed directory {directory}: {error}"),
                        );
                        return Ok(false);
                    }
                }
            }
            Action::PointCurrentLinkAt { directory } => {
                match self.world.point_current_link_at(*directory) {
                    Ok(()) => self.record(vec![Event::CurrentLinkSwitched {
                        directory: *directory,
                        at: self.now(),
                    }])?,
                    Err(error) => {
                        self.defer(action, &format!("pointing current at {directory}: {error}"));
                        return Ok(false);
                    }
                }
            }
            Action::PruneDirectory { directory } => {
                self.record(vec![Event::PruneStarted {
                    directory: *directory,
                    at: self.now(),
                }])?;
                crate::failpoint::fail_point("prune-after-intent");
                self.move_aside_and_remove(*directory)?;
            }
            Action::MoveDirectoryAside { directory } => self.move_aside_and_remove(*directory)?,
            Action::RemoveMovedAsideDirectory { directory } => {
                return self.remove_moved_aside(*directory);
            }
            Action::RunPruneScript { directory } => self.run_prune_script(*directory)?,
            Action::StartBaseBackup {
                directory,
                open_directory,
            } => self.start_base_backup(*directory, *open_directory)?,
            Action::RunScript {
                directory,
                current_timestamp,
                through_version,
            } => self.run_script(*directory, *current_timestamp, *through_version)?,
            Action::StopScript {
                directory,
                reason: StopScriptReason::TimedOut { timeout_ms },
            } => {
                let reason = format!(
                    "timed out after {} s (script.timeout_seconds): killed",
                    timeout_ms / 1000
                );
                let output = match self.script.take() {
                    Some((_, script)) => self.world.stop_script(script, &reason),
                    None => reason,
                };
                self.record(vec![Event::ScriptFailed {
                    directory: *directory,
                    output,
                    at: self.now(),
                }])?;
            }
        }
        Ok(true)
    }

    /// Retention's steps after the intent (S-8.3): move the directory aside (rename, fsync
    /// `$PGBAK`), record it, then remove it. A step that fails is deferred by the action that
    /// resumes it, which is what the next plan asks for.
    fn move_aside_and_remove(&mut self, directory: DirectoryName) -> Result<(), SessionError> {
        if let Err(error) = self.world.move_directory_aside(directory) {
            self.defer(
                &Action::MoveDirectoryAside { directory },
                &format!("moving {directory} aside to prune it: {error}"),
            );
            return Ok(());
        }
        crate::failpoint::fail_point("prune-after-move-aside");
        self.record(vec![Event::DirectoryMovedAside {
            directory,
            at: self.now(),
        }])?;
        crate::failpoint::fail_point("prune-before-remove");
        self.remove_moved_aside(directory).map(|_| ())
    }

    /// Retention's last step (S-8.3): remove the moved-aside directory, then record
    /// `DirectoryPruned`, noting whether `scripts/prune` is owed a run for it.
    fn remove_moved_aside(&mut self, directory: DirectoryName) -> Result<bool, SessionError> {
        if let Err(error) = self.world.remove_moved_aside(directory) {
            self.defer(
                &Action::RemoveMovedAsideDirectory { directory },
                &format!("removing pruned directory {directory}: {error}"),
            );
            return Ok(false);
        }
        crate::failpoint::fail_point("prune-after-remove");
        let prune_script = self.world.prune_script_exists();
        self.record(vec![Event::DirectoryPruned {
            directory,
            prune_script,
            at: self.now(),
        }])?;
        crate::failpoint::fail_point("prune-after-pruned");
        Ok(true)
    }

    /// S-8.3: `scripts/prune DIRECTORY`, waited for in place, its outcome recorded. It has no
    /// intent record: a run cut short by a crash is run again, like a failed one.
    fn run_prune_script(&mut self, directory: DirectoryName) -> Result<(), SessionError> {
        let outcome = self.world.run_prune_script(directory, &self.log);
        let at = self.now();
        self.record(vec![match outcome {
            Ok(()) => Event::PruneScriptSucceeded { directory, at },
            Err(output) => {
                self.log.error(&format!(
                    "prune script for {directory} failed: {}",
                    crate::sync::log::last_line(&output)
                ));
                Event::PruneScriptFailed {
                    directory,
                    output,
                    at,
                }
            }
        }])
    }

    fn defer(&mut self, action: &Action, what: &str) {
        self.log.error(&format!(
            "{what}; trying again in {} s",
            UNRECORDED_RETRY.as_secs()
        ));
        let retry_ms = u64::try_from(UNRECORDED_RETRY.as_millis()).unwrap_or(u64::MAX);
        let due = self.now().plus_millis(retry_ms);
        self.deferred.push((action.clone(), due));
    }

    /// S-5.1: `ScriptStarted` (intent), then the script. A script that cannot start (missing,
    /// not executable) fails at once and is retried with the machine's backoff (S-5.3).
    fn run_script(
        &mut self,
        directory: DirectoryName,
        current_timestamp: DirectoryName,
        through_version: u64,
    ) -> Result<(), SessionError> {
        self.record(vec![Event::ScriptStarted {
            directory,
            current_timestamp,
            through_version,
            at: self.now(),
        }])?;
        crate::failpoint::fail_point("sync-after-script-intent");
        match self
            .world
            .start_script(directory, current_timestamp, &self.log)
        {
            Ok(script) => self.script = Some((directory, script)),
            Err(message) => {
                self.log.error(&message);
                self.record(vec![Event::ScriptFailed {
                    directory,
                    output: message,
                    at: self.now(),
                }])?;
            }
        }
        Ok(())
    }

    /// Sleeps until the plan's wake time, a deferred retry, or [`POLL_INTERVAL`], whichever
    /// comes first.
    fn sleep(&mut self, wake_at: Option<UnixMillis>, at: UnixMillis) {
        let mut duration = POLL_INTERVAL;
        if let Some(wake_at) = wake_at {
            duration = duration.min(Duration::from_millis(wake_at.millis_since(at)));
        }
        let now = self.now();
        for (_, due) in &self.deferred {
            duration = duration.min(Duration::from_millis(due.millis_since(now)));
        }
        self.world.sleep(duration.max(MINIMUM_SLEEP));
    }

    /// Stops the children and returns the facts that record it: a child that already ended
    /// gets its real outcome, one that was stopped a failure ending with `reason`.
    fn stop_children(&mut self, reason: &str) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some((_, script)) = &self.script {
            // Both groups get SIGTERM at once; the base backup's stop below waits its grace.
            self.world.terminate_script(script);
        }
        if let Some((directory, mut run)) = self.base_backup.take() {
            let event = match self.world.poll_base_backup(&mut run) {
                Some(result) => base_backup_outcome(directory, result, self.now()),
                None => Event::BaseBackupFailed {
                    directory,
                    output: self.world.stop_base_backup(run, reason),
                    at: self.now(),
                },
            };
            events.push(event);
        }
        if let Some((directory, script)) = self.script.take() {
            events.push(Event::ScriptFailed {
                directory,
                output: self.world.stop_script(script, reason),
                at: self.now(),
            });
        }
        events
    }

    /// S-6.1: stop the children, record their failure and `SyncStopped{Interrupted}`.
    fn interrupt(&mut self, signal: Signal) -> Result<SyncEnded, SessionError> {
        self.log
            .note(&format!("received {signal}: stopping running work"));
        let mut events = self.stop_children(&format!("interrupted by {signal}"));
        events.push(Event::SyncStopped {
            pid: self.pid,
            reason: SyncStopReason::Interrupted,
            at: self.now(),
        });
        self.record(events)?;
        Ok(SyncEnded::Interrupted { signal })
    }

    /// After an error: stop the children and record what still can be (best effort: the
    /// journal may be what failed; then the next sync's `SyncAbandoned` records it).
    fn stop_after_error(&mut self, error: &SessionError) {
        let message = crate::error::one_line(error);
        self.log.error(&message);
        let mut events = self.stop_children(&format!("stopped: the sync failed: {message}"));
        // Only facts the state still accepts: the error may have come before `SyncStarted`.
        let state = self.state();
        events.retain(|event| match event {
            Event::BaseBackupFailed { directory, .. }
            | Event::BaseBackupFinished { directory, .. } => {
                state.base_backup.running.map(|r| r.directory) == Some(*directory)
            }
            Event::ScriptFailed { directory, .. } => {
                state.script.running.map(|r| r.directory) == Some(*directory)
            }
            _ => true,
        });
        if state.sync.map(|session| session.pid) == Some(self.pid) {
            events.push(Event::SyncStopped {
                pid: self.pid,
                reason: SyncStopReason::Error { message },
                at: self.now(),
            });
        }
        if !events.is_empty()
            && let Err(record_error) = self.record(events)
        {
            self.log.error(&format!(
                "could not record the stop either: {}",
                crate::error::one_line(&record_error)
            ));
        }
    }

    /// Appends facts durably (one append, one fsync), then logs them.
    fn record(&mut self, events: Vec<Event>) -> Result<(), SessionError> {
        let at = self.now();
        self.world.append(&events, at)?;
        for event in &events {
            self.log.event(event);
        }
        Ok(())
    }
}
