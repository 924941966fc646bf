//! `pgbak wait [TIMEOUT]`: block while a sync runs, then say whether everything is shipped
//! (S-6.3).
//!
//! Owns: [`WaitOutcome`], its exit codes ([`EXIT_DONE`], [`EXIT_TIMED_OUT`],
//! [`EXIT_FINISHED_WITH_FAILURES`]; errors are [`EXIT_ERROR`]) and [`run`].
//!
//! Every [`POLL_INTERVAL`] it looks whether a sync process holds the sync lock, and if none
//! does, reads the journal (read-only, under the shared journal lock) and decides:
//!
//! - **done** (exit 0): no sync runs and everything archived has been shipped
//!   (`State::everything_shipped`). How it got there does not matter: a failure that a later
//!   attempt repaired (a killed base backup that succeeded on retry) is not a failure.
//! - **finished with failures** (exit 3): no sync runs, work is left, and no sync has started
//!   for [`SYNC_START_GRACE`]: the last sync was interrupted, stopped on an error or died, or
//!   no sync was started at all (`sync.autostart = false`, or starting it failed). Nothing is
//!   working on it, so waiting longer would not help. The grace covers the moment between a
//!   `pgbak wal` acknowledgement and the background sync it starts: work pending then is not
//!   done, and not a failure either.
//! - **timed out** (exit 2): TIMEOUT seconds passed first — typically a sync still runs,
//!   for example retrying a failing backup script, which it does forever (S-5.3).
//!
//! For 2 and 3, one line on stderr says why (`pgbak: wait: …`). `wait` never starts, stops or
//! repairs anything (except that a journal no process can replay is rebuilt, as by every
//! command that opens it).

use crate::config;
use crate::home::environment::PgbakHome;
use crate::home::journal_file;
use crate::machine::{BaseBackupDue, State, SyncStopReason, base_backup_due};
use crate::os::clock::now;
use crate::os::lock::{LockFile, LockRange};
use crate::sync::log::last_line;
use std::io::Write;
use std::time::{Duration, Instant};

/// Exit status: no sync runs and everything archived has been shipped.
pub const EXIT_DONE: u8 = 0;
/// Exit status: an error (a message names it), as for every command.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: TIMEOUT passed while a sync was still running (or about to).
pub const EXIT_TIMED_OUT: u8 = 2;
/// Exit status: no sync runs, yet not everything is shipped: the last sync was interrupted,
/// failed or died with work left, or none was started.
pub const EXIT_FINISHED_WITH_FAILURES: u8 = 3;

/// How often `wait` looks at the sync lock (and, when it is free, the journal).
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long work may be pending with no sync running before `wait` decides that none is
/// coming. `pgbak wal` starts the background sync right after its acknowledgement, which takes
/// milliseconds; two seconds leave room for a loaded machine.
pub const SYNC_START_GRACE: Duration = Duration::from_secs(2);

/// What `wait` found; [`WaitOutcome::exit_code`] maps it to the documented exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Done,
    TimedOut,
    FinishedWithFailures,
}

impl WaitOutcome {
    pub fn exit_code(self) -> u8 {
        match self {
            WaitOutcome::Done => EXIT_DONE,
            WaitOutcome::TimedOut => EXIT_TIMED_OUT,
            WaitOutcome::FinishedWithFailures => EXIT_FINISHED_WITH_FAILURES,
        }
    }
}

/// Waits at most `timeout` (`None`: forever); see the module header. Prints one line to stderr
/// explaining a non-zero outcome.
pub fn run(home: &PgbakHome, timeout: Option<Duration>) -> Result<WaitOutcome, crate::Error> {
    let (outcome, explanation) = wait_for_sync(home, timeout)?;
    if let Some(explanation) = explanation {
        let _ = writeln!(std::io::stderr(), "pgbak: wait: {explanation}");
    }
    Ok(outcome)
}

/// What one look found.
enum Observation {
    SyncRunning,
    /// Everything is shipped; the note names a base backup that is overdue (S-6.6).
    Done(Option<String>),
    /// No sync runs and work is left; why, in words.
    Idle(String),
}

/// [`run`] without the printing: the outcome and, for a non-zero one, why.
pub fn wait_for_sync(
    home: &PgbakHome,
    timeout: Option<Duration>,
) -> Result<(WaitOutcome, Option<String>), crate::Error> {
    // An unused $PGBAK has nothing to ship; do not create a journal in it.
    if journal_file::is_unused(home)? {
        return Ok((WaitOutcome::Done, None));
    }
    let started = Instant::now();
    // A timeout too large for the clock means no deadline.
    let deadline = timeout.and_then(|timeout| started.checked_add(timeout));
    let lock_file = LockFile::open(&home.lock_file_path())?;
    let mut idle_since: Option<Instant> = None;
    loop {
        let observation = observe(home, &lock_file)?;
        let explanation = match observation {
            Observation::Done(note) => return Ok((WaitOutcome::Done, note)),
            Observation::SyncRunning => {
                idle_since = None;
                None
            }
            Observation::Idle(why) => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SYNC_START_GRACE {
                    return Ok((WaitOutcome::FinishedWithFailures, Some(why)));
                }
                Some(why)
            }
        };
        let now_instant = Instant::now();
        if deadline.is_some_and(|deadline| now_instant >= deadline) {
            let waited = now_instant.duration_since(started).as_secs_f64();
            let why = match explanation {
                Some(why) => why,
                None => describe_running_sync(&read_state(home, &lock_file)?),
            };
            return Ok((
                WaitOutcome::TimedOut,
                Some(format!("timed out after {waited:.1} s: {why}")),
            ));
        }
        let mut sleep = POLL_INTERVAL;
        if let Some(deadline) = deadline {
            sleep = sleep.min(deadline.saturating_duration_since(now_instant));
        }
        std::thread::sleep(sleep);
    }
}

/// One look: the lock before and after the journal read, so a sync that started meanwhile is
/// never judged by a state it has already changed.
fn observe(home: &PgbakHome, lock_file: &LockFile) -> Result<Observation, crate::Error> {
    if lock_file.is_locked_by_other(LockRange::Sync)? {
        return Ok(Observation::SyncRunning);
    }
    let state = read_state(home, lock_file)?;
    if lock_file.is_locked_by_other(LockRange::Sync)? {
        return Ok(Observation::SyncRunning);
    }
    if state.everything_shipped() {
        return Ok(Observation::Done(overdue_base_backup(home, &state)));
    }
    Ok(Observation::Idle(describe_idle(&state)))
}

/// The replayed state: read-only, or through a rebuild when no process could replay it.
fn read_state(home: &PgbakHome, lock_file: &LockFile) -> Result<State, crate::Error> {
    match journal_file::inspect_journal(lock_file)?.state {
        Some(state) => Ok(state),
        None => Ok(journal_file::open_journal(home, now())?
            .journal
            .state()
            .clone()),
    }
}

/// A base backup that is due but not being taken: the sync left it because the server could
/// not be reached (S-6.6), or it keeps failing. Everything archived is shipped, so `wait` is
/// done, but the operator should know that the next restore needs more WAL than usual.
fn overdue_base_backup(home: &PgbakHome, state: &State) -> Option<String> {
    // An unreadable config is reported by every other command; here the defaults will do.
    let policy = config::load(&home.config_path())
        .map(|config| config.machine_policy())
        .unwrap_or_default();
    let due = base_backup_due(state, now(), &policy)?;
    let why = match &state.base_backup.last_failure {
        Some(failure) if state.base_backup.consecutive_failures > 0 => format!(
            "it failed {} time(s) in a row{}; last: {}",
            state.base_backup.consecutive_failures,
            if state.base_backup_server_unreachable {
                " because the server could not be reached"
            } else {
                ""
            },
            last_line(&failure.message).trim()
        ),
        _ => "no sync has taken it yet".to_owned(),
    };
    Some(format!(
        "everything archived has been shipped, but a base backup is overdue ({}): {why}; the \
         next pgbak wal or pgbak sync takes it",
        due_reason(due)
    ))
}

fn due_reason(due: BaseBackupDue) -> &'static str {
    match due {
        BaseBackupDue::Requested => "requested with pgbak sync --base",
        BaseBackupDue::NoCurrentDirectory => "there is no complete base backup yet",
        BaseBackupDue::NewTimeline => "the server switched to a new timeline",
        BaseBackupDue::TooOld => "the current one is older than base.max_age_hours",
        BaseBackupDue::TooMuchWal => "the WAL since the current one outgrew base.max_wal_ratio",
    }
}

/// Why work is left with no sync running.
fn describe_idle(state: &State) -> String {
    let left = "not everything archived has been shipped";
    if let Some(session) = state.sync {
        return format!(
            "{left}, and sync process {} died without stopping; pgbak sync resumes its work",
            session.pid
        );
    }
    match &state.last_sync_end {
        Some(end) => match &end.reason {
            Some(SyncStopReason::Interrupted) => format!(
                "{left}: the last sync (process {}) was interrupted at {}; pgbak sync resumes \
                 its work",
                end.pid,
                end.at.to_rfc3339()
            ),
            Some(SyncStopReason::Error { message }) => format!(
                "{left}: the last sync (process {}) stopped on an error: {message}",
                end.pid
            ),
            None => format!(
                "{left}: the last sync (process {}) died; pgbak sync resumes its work",
                end.pid
            ),
            Some(SyncStopReason::Finished) => format!(
                "{left}, and no sync process is running (is sync.autostart off? run pgbak sync)"
            ),
        },
        None => format!("{left}, and no sync has run yet (run pgbak sync)"),
    }
}

/// What a running sync is busy with, for the timeout message.
fn describe_running_sync(state: &State) -> String {
    let who = match state.sync {
        Some(session) => format!("sync process {} is still running", session.pid),
        None => "a sync process is still running".to_owned(),
    };
    let mut doing = Vec::new();
    if let Some(running) = state.base_backup.running {
        doing.push(format!("a base backup into {}", running.directory));
    }
    if let Some(run) = state.script.running {
        doing.push(format!("the backup script for {}", run.directory));
    }
    if state.script.consecutive_failures > 0 {
        let last = state
            .script
            .last_failure
            .as_ref()
            .and_then(|failure| failure.message.lines().next_back())
            .unwrap_or("");
        doing.push(format!(
            "the backup script has failed {} time(s) in a row (last: {last})",
            state.script.consecutive_failures
        ));
    }
    if state.base_backup.consecutive_failures > 0 {
        doing.push(format!(
            "the base backup has failed {} time(s) in a row",
            state.base_backup.consecutive_failures
        ));
    }
    if doing.is_empty() {
        who
    } else {
        format!("{who}: {}", doing.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Event, archive_targets};
    use crate::test_support::ScratchDirectory;
    use crate::timestamp::UnixMillis;
    use crate::wal_name::WalFileName;

    fn home(scratch: &ScratchDirectory) -> PgbakHome {
        scratch.home()
    }

    #[test]
    fn exit_codes_are_distinct_and_documented_values() {
        assert_eq!(WaitOutcome::Done.exit_code(), 0);
        assert_eq!(WaitOutcome::TimedOut.exit_code(), 2);
        assert_eq!(WaitOutcome::FinishedWithFailures.exit_code(), 3);
        assert_eq!(EXIT_ERROR, 1);
    }

    #[test]
    fn an_unused_pgbak_is_done_and_left_untouched() {
        let scratch = ScratchDirectory::new("wait-unused");
        let home = home(&scratch);
        let (outcome, _) = wait_for_sync(&home, Some(Duration::ZERO)).unwrap();
        assert_eq!(outcome, WaitOutcome::Done);
        assert!(scratch.entries().is_empty());
    }

    /// A journal with one archived file and no sync: pending work nobody handles.
    fn journal_with_pending_work(home: &PgbakHome) {
        let at = UnixMillis(1_795_478_400_000);
        let mut opened = journal_file::open_journal(home, at).unwrap();
        let targets = archive_targets(opened.journal.state(), at);
        let directory = targets.open_directory.unwrap();
        opened
            .append(
                &[
                    Event::DirectoryOpened { directory, at },
                    Event::WalArchived {
                        file: WalFileName::parse("000000010000000000000001").unwrap(),
                        compressed_bytes: 10,
                        directories: vec![directory],
                        already_present: false,
                        at,
                    },
                ],
                at,
            )
            .unwrap();
    }

    #[test]
    fn pending_work_without_a_sync_is_not_done_within_the_grace() {
        let scratch = ScratchDirectory::new("wait-pending");
        let home = home(&scratch);
        journal_with_pending_work(&home);
        let (outcome, why) = wait_for_sync(&home, Some(Duration::ZERO)).unwrap();
        assert_eq!(outcome, WaitOutcome::TimedOut);
        assert!(why.unwrap().contains("no sync has run yet"));
    }

    #[test]
    fn pending_work_that_no_sync_picks_up_is_finished_with_failures() {
        let scratch = ScratchDirectory::new("wait-nobody");
        let home = home(&scratch);
        journal_with_pending_work(&home);
        let (outcome, why) = wait_for_sync(&home, Some(Duration::from_secs(600))).unwrap();
        assert_eq!(outcome, WaitOutcome::FinishedWithFailures);
        assert!(
            why.unwrap()
                .contains("not everything archived has been shipped")
        );
    }

    #[test]
    fn a_running_sync_makes_wait_time_out() {
        let scratch = ScratchDirectory::new("wait-running");
        let home = home(&scratch);
        journal_with_pending_work(&home);
        let _sync = crate::sync::lock::try_take_sync_lock(&home)
            .unwrap()
            .unwrap();
        let (outcome, why) = wait_for_sync(&home, Some(Duration::from_millis(300))).unwrap();
        assert_eq!(outcome, WaitOutcome::TimedOut);
        assert!(why.unwrap().contains("still running"));
    }
}
