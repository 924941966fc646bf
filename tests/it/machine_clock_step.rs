//! The pure machine after a wall-clock step (S-6.5): a failure recorded "in the future" (the
//! clock stepped back since it was recorded) has its retry time clamped to the session's start
//! plus the backoff's maximum, and that clamped time does not move as `now` advances, so the
//! retry really happens. Failures in the past keep their ordinary backoff.

use pgbak::machine::{
    Action, Backoff, Failure, Policy, State, SyncSession, next_actions, retry_due_at,
};
use pgbak::timestamp::UnixMillis;

const DAY_MS: u64 = 24 * 3600 * 1000;
const BACKOFF: Backoff = Backoff {
    min_ms: 1_000,
    max_ms: 300_000,
};

fn failure_at(at: UnixMillis) -> Failure {
    Failure {
        at,
        message: "exit 1".into(),
    }
}

#[test]
fn a_failure_in_the_past_keeps_its_backoff() {
    let failed = UnixMillis(10 * DAY_MS);
    let now = failed.plus_millis(500);
    // Three failures: 4 s after the last one, session or not.
    for session in [None, Some(failed)] {
        assert_eq!(
            retry_due_at(3, Some(&failure_at(failed)), BACKOFF, now, session),
            Some(failed.plus_millis(4_000))
        );
    }
    assert_eq!(
        retry_due_at(0, Some(&failure_at(failed)), BACKOFF, now, None),
        None
    );
    assert_eq!(retry_due_at(2, None, BACKOFF, now, None), None);
}

#[test]
fn a_failure_a_day_ahead_is_retried_within_the_maximum_from_the_session_start_however_now_moves() {
    let failed = UnixMillis(10 * DAY_MS);
    // The clock stepped back a day; the sync started just after.
    let started = failed.plus_millis(60_000).0 - DAY_MS;
    let started = UnixMillis(started);
    let failure = failure_at(failed);
    let mut retries = Vec::new();
    for elapsed_ms in [0, 1_000, 60_000, 299_999] {
        let now = started.plus_millis(elapsed_ms);
        retries.push(retry_due_at(9, Some(&failure), BACKOFF, now, Some(started)));
    }
    // Without the clamp the retry would be a day (plus 256 s) away; with it, it stays at the
    // session start plus the maximum while `now` advances, so it becomes due.
    assert!(
        retries
            .iter()
            .all(|at| *at == Some(started.plus_millis(300_000)))
    );
    // Outside a session (what `status` shows) the bound is counted from now.
    let now = started.plus_millis(5);
    assert_eq!(
        retry_due_at(9, Some(&failure), BACKOFF, now, None),
        Some(now.plus_millis(300_000))
    );
}

#[test]
fn next_actions_starts_the_base_backup_once_the_clamped_retry_time_is_reached() {
    let policy = Policy::default();
    let failed = UnixMillis(10 * DAY_MS);
    let started = UnixMillis(failed.0 - DAY_MS + 1_000);
    let mut state = State::default();
    state.base_backup.consecutive_failures = 1;
    state.base_backup.last_failure = Some(failure_at(failed));
    state.sync = Some(SyncSession {
        pid: 4242,
        started_at: started,
        force_script: false,
    });
    let retry_at = started.plus_millis(policy.base_retry.max_ms);

    let waiting = next_actions(&state, started.plus_millis(1), &policy);
    assert!(waiting.actions.is_empty(), "{waiting:?}");
    assert!(!waiting.finished);
    assert_eq!(waiting.wake_at, Some(retry_at));

    let due = next_actions(&state, retry_at, &policy);
    assert!(
        matches!(due.actions.as_slice(), [Action::StartBaseBackup { .. }]),
        "{due:?}"
    );
}
