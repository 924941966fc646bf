//! Tests of the pure machine: transcripts with exact actions, model-based property tests that
//! check the invariants after every step, replay of every prefix, liveness, coverage of every
//! transition, agreement with `state-diagrams/machine.md`, and purity of the source.

use super::simulation::{Step, World, simulation_policy};
use super::table::{ABSENT, Component, EDGES};
use super::*;
use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_name::WalFileName;
use proptest::prelude::*;
use std::collections::BTreeSet;

const START: UnixMillis = UnixMillis(1_795_478_400_000);

fn segment(number: u64) -> WalFileName {
    WalFileName::parse(&format!("0000000100000000{number:08X}")).unwrap()
}

fn archive(state: &mut State, number: u64, at: UnixMillis) -> Vec<DirectoryName> {
    let targets = archive_targets(state, at);
    if let Some(directory) = targets.open_directory {
        apply(state, &Event::DirectoryOpened { directory, at }).unwrap();
    }
    let event = Event::WalArchived {
        file: segment(number),
        compressed_bytes: 1000,
        directories: targets.directories.clone(),
        already_present: false,
        at,
    };
    apply(state, &event).unwrap();
    targets.directories
}

fn start_sync(state: &mut State, pid: u32, at: UnixMillis) {
    let event = Event::SyncStarted {
        pid,
        force_script: false,
        force_base: false,
        at,
    };
    apply(state, &event).unwrap();
}

#[test]
fn a_duplicate_is_counted_once_even_when_the_crash_hid_the_first_copy_from_the_journal() {
    let mut state = State::default();
    let directory = archive(&mut state, 1, START)[0];
    let duplicate = |number| Event::WalArchived {
        file: segment(number),
        compressed_bytes: 1000,
        directories: vec![directory],
        already_present: true,
        at: START,
    };
    // Segment 1 again (PostgreSQL re-sent it): counted already.
    apply(&mut state, &duplicate(1)).unwrap();
    assert_eq!(state.directories[&directory].wal_files, 1);
    // Segment 2 was linked by a `wal` killed before its record; the retry finds it present.
    apply(&mut state, &duplicate(2)).unwrap();
    let stored = &state.directories[&directory];
    assert_eq!((stored.wal_files, stored.wal_bytes), (2, 2000));
    assert_eq!(stored.last_wal, Some(segment(2)));
    // And re-sent once more: still two.
    apply(&mut state, &duplicate(2)).unwrap();
    assert_eq!(state.directories[&directory].wal_files, 2);
}

#[test]
fn first_file_ever_opens_a_pending_directory_and_makes_a_base_backup_due() {
    let mut state = State::default();
    let targets = archive_targets(&state, START);
    let first = DirectoryName::from_millis(START);
    assert_eq!(targets.open_directory, Some(first));
    assert_eq!(archive(&mut state, 1, START), vec![first]);
    assert_eq!(state.directories[&first].phase, DirectoryPhase::Pending);

    start_sync(&mut state, 7, START);
    let plan = next_actions(&state, START, &Policy::default());
    // The pending directory wal opened is reused; the script never runs for it (S-4.1).
    assert_eq!(
        plan.actions,
        vec![Action::StartBaseBackup {
            directory: first,
            open_directory: false
        }]
    );
    assert!(!plan.finished);
}

#[test]
fn the_whole_first_backup_transcript() {
    let policy = Policy::default();
    let mut state = State::default();
    let first = DirectoryName::from_millis(START);
    archive(&mut state, 1, START);
    start_sync(&mut state, 7, START);
    let t1 = START.plus_millis(10);
    apply(
        &mut state,
        &Event::BaseBackupStarted {
            directory: first,
            at: t1,
        },
    )
    .unwrap();
    // While the base backup runs: WAL goes to the pending directory; nothing to ship yet.
    let t2 = START.plus_millis(2_000);
    assert_eq!(archive(&mut state, 2, t2), vec![first]);
    let plan = next_actions(&state, t2, &policy);
    assert!(plan.actions.is_empty() && !plan.finished, "{plan:?}");

    let t3 = START.plus_millis(60_000);
    let finished = Event::BaseBackupFinished {
        directory: first,
        base_bytes: 5_000,
        at: t3,
    };
    apply(&mut state, &finished).unwrap();
    assert_eq!(state.directories[&first].phase, DirectoryPhase::Current);
    let plan = next_actions(&state, t3, &policy);
    assert_eq!(
        plan.actions,
        vec![
            Action::PointCurrentLinkAt { directory: first },
            Action::RunScript {
                directory: first,
                current_timestamp: DirectoryName::from_millis(t3),
                through_version: 3,
            },
        ]
    );
    apply(
        &mut state,
        &Event::CurrentLinkSwitched {
            directory: first,
            at: t3,
        },
    )
    .unwrap();
    let run = Event::ScriptStarted {
        directory: first,
        current_timestamp: DirectoryName::from_millis(t3),
        through_version: 3,
        at: t3,
    };
    apply(&mut state, &run).unwrap();
    // A file arrives during the run: after success, the script runs again with a refreshed
    // current timestamp (S-5.2).
    let t4 = t3.plus_millis(5_000);
    archive(&mut state, 3, t4);
    apply(
        &mut state,
        &Event::ScriptSucceeded {
            directory: first,
            at: t4,
        },
    )
    .unwrap();
    let plan = next_actions(&state, t4, &policy);
    assert_eq!(
        plan.actions,
        vec![Action::RunScript {
            directory: first,
            current_timestamp: DirectoryName::from_millis(t4),
            through_version: 4,
        }]
    );
    let rerun = Event::ScriptStarted {
        directory: first,
        current_timestamp: DirectoryName::from_millis(t4),
        through_version: 4,
        at: t4,
    };
    apply(&mut state, &rerun).unwrap();
    apply(
        &mut state,
        &Event::ScriptSucceeded {
            directory: first,
            at: t4,
        },
    )
    .unwrap();
    let plan = next_actions(&state, t4, &policy);
    assert!(plan.finished, "{plan:?}");
    let stop = Event::SyncStopped {
        pid: 7,
        reason: SyncStopReason::Finished,
        at: t4,
    };
    apply(&mut state, &stop).unwrap();
    assert!(state.everything_shipped());
}

/// Drives a state with one current, shipped directory, and the sync running.
fn shipped_current(policy: &Policy) -> (State, DirectoryName) {
    let mut world = World::new(*policy);
    world.perform(Step::ArchiveWal).unwrap();
    world.run_until_shipped(100).unwrap();
    world
        .perform(Step::StartSync {
            force_script: false,
            force_base: false,
        })
        .unwrap();
    let (current, _) = world.state.current_directory().unwrap();
    (world.state, current)
}

#[test]
fn script_failures_back_off_from_one_second_doubling_and_success_resets() {
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let mut now = state.directories[&current]
        .newest_file_at
        .plus_millis(1_000);
    archive(&mut state, 50, now);
    let mut waits = Vec::new();
    for failure in 0..4 {
        let plan = next_actions(&state, now, &policy);
        let Some(Action::RunScript {
            directory,
            current_timestamp,
            through_version,
        }) = plan.actions.first().cloned()
        else {
            panic!("failure {failure}: expected a script run, got {plan:?}");
        };
        let started = Event::ScriptStarted {
            directory,
            current_timestamp,
            through_version,
            at: now,
        };
        apply(&mut state, &started).unwrap();
        let failed = Event::ScriptFailed {
            directory,
            output: "exit 1".into(),
            at: now,
        };
        apply(&mut state, &failed).unwrap();
        let plan = next_actions(&state, now, &policy);
        assert!(plan.actions.is_empty() && !plan.finished);
        let wake = plan.wake_at.unwrap();
        waits.push(wake.millis_since(now));
        // Same timestamps on retry when nothing new arrived (seed: "The timestamps will be
        // the same if no new WAL files have appeared").
        assert_eq!(
            current_timestamp,
            DirectoryName::from_millis(state.directories[&current].newest_file_at)
        );
        now = wake;
    }
    assert_eq!(waits, [1_000, 2_000, 4_000, 8_000]);
    let plan = next_actions(&state, now, &policy);
    let Some(Action::RunScript {
        directory,
        current_timestamp,
        through_version,
    }) = plan.actions.first().cloned()
    else {
        panic!("expected a retry, got {plan:?}");
    };
    apply(
        &mut state,
        &Event::ScriptStarted {
            directory,
            current_timestamp,
            through_version,
            at: now,
        },
    )
    .unwrap();
    apply(&mut state, &Event::ScriptSucceeded { directory, at: now }).unwrap();
    assert_eq!(state.script.consecutive_failures, 0);
    assert!(next_actions(&state, now, &policy).finished);
}

#[test]
fn base_backup_becomes_due_by_age_and_by_wal_ratio() {
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let base = state.directories[&current].base.unwrap();
    assert_eq!(base_backup_due(&state, base.finished_at, &policy), None);
    let aged = base.finished_at.plus_millis(policy.base_max_age_ms);
    assert_eq!(
        base_backup_due(&state, aged, &policy),
        Some(BaseBackupDue::TooOld)
    );
    // Ratio: the simulated base is 10 MB and each segment 1 MB compressed.
    let mut now = base.finished_at;
    while base_backup_due(&state, now, &policy).is_none() {
        now = now.plus_millis(1);
        archive(&mut state, 1000 + now.0 % 1000, now);
    }
    assert_eq!(
        base_backup_due(&state, now, &policy),
        Some(BaseBackupDue::TooMuchWal)
    );
    let wal_bytes = state.directories[&current].wal_bytes;
    assert!(wal_bytes > base.bytes && wal_bytes <= base.bytes + 1_000_000);
    // The new base backup opens a new pending directory named for now.
    let plan = next_actions(&state, now, &policy);
    assert!(
        plan.actions.contains(&Action::StartBaseBackup {
            directory: DirectoryName::from_millis(now).max(DirectoryName(current.0 + 1)),
            open_directory: true,
        }),
        "{plan:?}"
    );
}

#[test]
fn files_archived_while_a_base_backup_runs_go_to_pending_and_current() {
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let now = state.directories[&current]
        .newest_file_at
        .plus_millis(5_000);
    apply(
        &mut state,
        &Event::SyncStarted {
            pid: 1,
            force_script: false,
            force_base: true,
            at: now,
        },
    )
    .unwrap_err(); // the sync from shipped_current still runs
    let pid = state.sync.unwrap().pid;
    apply(
        &mut state,
        &Event::SyncStopped {
            pid,
            reason: SyncStopReason::Finished,
            at: now,
        },
    )
    .unwrap();
    apply(
        &mut state,
        &Event::SyncStarted {
            pid: 1,
            force_script: false,
            force_base: true,
            at: now,
        },
    )
    .unwrap();
    let plan = next_actions(&state, now, &policy);
    let pending = DirectoryName::from_millis(now);
    assert_eq!(
        plan.actions,
        vec![Action::StartBaseBackup {
            directory: pending,
            open_directory: true
        }]
    );
    apply(
        &mut state,
        &Event::DirectoryOpened {
            directory: pending,
            at: now,
        },
    )
    .unwrap();
    apply(
        &mut state,
        &Event::BaseBackupStarted {
            directory: pending,
            at: now,
        },
    )
    .unwrap();
    assert_eq!(archive(&mut state, 77, now), vec![current, pending]);
    // The script keeps shipping the current directory during the base backup (S-5.5).
    let plan = next_actions(&state, now, &policy);
    assert!(
        matches!(plan.actions[..], [Action::RunScript { directory, .. }] if directory == current)
    );
    // On success the old directory is sealed and still shipped first (oldest first).
    let done = Event::BaseBackupFinished {
        directory: pending,
        base_bytes: 1 << 30,
        at: now,
    };
    apply(&mut state, &done).unwrap();
    assert_eq!(state.directories[&current].phase, DirectoryPhase::Sealed);
    assert_eq!(state.directories[&pending].phase, DirectoryPhase::Current);
    assert!(!state.base_backup.requested);
    let plan = next_actions(&state, now, &policy);
    assert!(
        matches!(plan.actions[..], [Action::PointCurrentLinkAt { .. }, Action::RunScript { directory, .. }] if directory == current)
    );
}

#[test]
fn a_crashed_sync_is_abandoned_explicitly_and_its_work_counts_as_failed() {
    let policy = Policy::default();
    let mut state = State::default();
    archive(&mut state, 1, START);
    start_sync(&mut state, 7, START);
    let first = DirectoryName::from_millis(START);
    apply(
        &mut state,
        &Event::BaseBackupStarted {
            directory: first,
            at: START,
        },
    )
    .unwrap();
    // The sync dies (kill -9). A new one finds the session open: starting without recording
    // the abandonment is refused — the intent without outcome must be resolved explicitly.
    let later = START.plus_millis(1_000);
    let restart = Event::SyncStarted {
        pid: 8,
        force_script: false,
        force_base: false,
        at: later,
    };
    assert!(apply(&mut state.clone(), &restart).is_err());
    apply(&mut state, &Event::SyncAbandoned { pid: 7, at: later }).unwrap();
    assert_eq!(state.directories[&first].phase, DirectoryPhase::Failed);
    assert_eq!(state.base_backup.consecutive_failures, 1);
    assert!(
        state
            .base_backup
            .last_failure
            .as_ref()
            .unwrap()
            .message
            .contains("died")
    );
    apply(&mut state, &restart).unwrap();
    // Resume: remove the dead attempt's directory; the retry waits for the backoff (S-4.5).
    let plan = next_actions(&state, later, &policy);
    assert_eq!(
        plan.actions,
        vec![Action::RemoveFailedDirectory { directory: first }]
    );
    assert_eq!(
        plan.wake_at,
        Some(later.plus_millis(policy.base_retry.min_ms))
    );
}

/// Found by `fuzz/machine_step` (input kept in `fuzz/regressions/machine_step/`): the current
/// base ages out while a failed attempt is backing off. The plan must wait for the retry time,
/// not wake "now" forever (a busy loop).
#[test]
fn an_aged_base_backup_in_backoff_waits_for_the_retry_not_now() {
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let aged = state.directories[&current]
        .base
        .unwrap()
        .finished_at
        .plus_millis(policy.base_max_age_ms);
    let plan = next_actions(&state, aged, &policy);
    let Some(Action::StartBaseBackup {
        directory,
        open_directory: true,
    }) = plan.actions.first().cloned()
    else {
        panic!("expected a base backup, got {plan:?}");
    };
    apply(
        &mut state,
        &Event::DirectoryOpened {
            directory,
            at: aged,
        },
    )
    .unwrap();
    apply(
        &mut state,
        &Event::BaseBackupStarted {
            directory,
            at: aged,
        },
    )
    .unwrap();
    let output = "connection refused".to_owned();
    apply(
        &mut state,
        &Event::BaseBackupFailed {
            directory,
            output,
            at: aged,
        },
    )
    .unwrap();
    apply(
        &mut state,
        &Event::DirectoryRemoved {
            directory,
            at: aged,
        },
    )
    .unwrap();
    let plan = next_actions(&state, aged, &policy);
    assert!(plan.actions.is_empty() && !plan.finished, "{plan:?}");
    assert_eq!(
        plan.wake_at,
        Some(aged.plus_millis(policy.base_retry.min_ms))
    );
}

#[test]
fn sync_exits_only_when_nothing_is_pending_due_or_retried() {
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let now = state.directories[&current].newest_file_at;
    assert!(next_actions(&state, now, &policy).finished);
    archive(&mut state, 99, now);
    assert!(!next_actions(&state, now, &policy).finished);
}

#[test]
fn a_hung_script_is_stopped_at_its_timeout() {
    let policy = Policy {
        script_timeout_ms: Some(30_000),
        ..Policy::default()
    };
    let (mut state, current) = shipped_current(&policy);
    let now = state.directories[&current].newest_file_at;
    archive(&mut state, 99, now);
    let Some(Action::RunScript {
        directory,
        current_timestamp,
        through_version,
    }) = next_actions(&state, now, &policy).actions.first().cloned()
    else {
        panic!("expected a run")
    };
    apply(
        &mut state,
        &Event::ScriptStarted {
            directory,
            current_timestamp,
            through_version,
            at: now,
        },
    )
    .unwrap();
    assert_eq!(
        next_actions(&state, now, &policy).wake_at,
        Some(now.plus_millis(30_000))
    );
    let plan = next_actions(&state, now.plus_millis(30_000), &policy);
    assert!(
        matches!(plan.actions[..], [Action::StopScript { .. }]),
        "{plan:?}"
    );
}

#[test]
fn force_sync_runs_the_script_for_the_current_directory_once() {
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let now = state.directories[&current].newest_file_at;
    let pid = state.sync.unwrap().pid;
    apply(
        &mut state,
        &Event::SyncStopped {
            pid,
            reason: SyncStopReason::Finished,
            at: now,
        },
    )
    .unwrap();
    apply(
        &mut state,
        &Event::SyncStarted {
            pid: 9,
            force_script: true,
            force_base: false,
            at: now,
        },
    )
    .unwrap();
    let plan = next_actions(&state, now, &policy);
    assert!(
        matches!(plan.actions[..], [Action::RunScript { directory, .. }] if directory == current)
    );
    let Action::RunScript {
        current_timestamp,
        through_version,
        ..
    } = plan.actions[0]
    else {
        unreachable!()
    };
    apply(
        &mut state,
        &Event::ScriptStarted {
            directory: current,
            current_timestamp,
            through_version,
            at: now,
        },
    )
    .unwrap();
    apply(
        &mut state,
        &Event::ScriptSucceeded {
            directory: current,
            at: now,
        },
    )
    .unwrap();
    assert!(next_actions(&state, now, &policy).finished);
}

#[test]
fn invalid_facts_are_rejected_and_leave_the_state_untouched() {
    let mut state = State::default();
    let ghost = DirectoryName(5);
    let cases = [
        Event::BaseBackupFinished {
            directory: ghost,
            base_bytes: 1,
            at: START,
        },
        Event::ScriptSucceeded {
            directory: ghost,
            at: START,
        },
        Event::DirectoryRemoved {
            directory: ghost,
            at: START,
        },
        Event::CurrentLinkSwitched {
            directory: ghost,
            at: START,
        },
        Event::SyncStopped {
            pid: 1,
            reason: SyncStopReason::Finished,
            at: START,
        },
        Event::SyncAbandoned { pid: 1, at: START },
        Event::WalArchived {
            file: segment(1),
            compressed_bytes: 1,
            directories: vec![],
            already_present: false,
            at: START,
        },
    ];
    for event in cases {
        let before = state.clone();
        assert!(apply(&mut state, &event).is_err(), "{event:?}");
        assert_eq!(state, before);
    }
    // A base backup needs a sync to run it, and a pending directory.
    archive(&mut state, 1, START);
    let first = DirectoryName::from_millis(START);
    assert!(
        apply(
            &mut state,
            &Event::BaseBackupStarted {
                directory: first,
                at: START
            }
        )
        .is_err()
    );
    start_sync(&mut state, 3, START);
    apply(
        &mut state,
        &Event::BaseBackupStarted {
            directory: first,
            at: START,
        },
    )
    .unwrap();
    // Never two at once; never the script for a pending directory.
    assert!(
        apply(
            &mut state,
            &Event::BaseBackupStarted {
                directory: first,
                at: START
            }
        )
        .is_err()
    );
    let run = Event::ScriptStarted {
        directory: first,
        current_timestamp: first,
        through_version: 0,
        at: START,
    };
    assert!(apply(&mut state, &run).is_err());
    // A sync cannot stop with work in flight: the outcome must be recorded first.
    let stop = Event::SyncStopped {
        pid: 3,
        reason: SyncStopReason::Interrupted,
        at: START,
    };
    assert!(apply(&mut state, &stop).is_err());
}

#[test]
fn rebuild_from_the_tree_trusts_only_complete_base_backups() {
    let scanned = |name: u64, base: bool, wal_files: u64| ScannedDirectory {
        name: DirectoryName(name),
        base: base.then_some((100, UnixMillis::from_seconds(name + 60))),
        timelines: None,
        wal_files,
        wal_bytes: wal_files * 10,
        first_wal: None,
        last_wal: None,
        newest_file_at: UnixMillis::from_seconds(name + 100),
    };
    let scan = TreeScan {
        directories: vec![
            scanned(1000, true, 5),
            scanned(2000, true, 3),
            scanned(3000, false, 2),
        ],
        current_link: Some(DirectoryName(1000)),
        distinct_wal_files: 7,
    };
    let state = State::rebuilt_from(&scan);
    state.check_invariants().unwrap();
    let phase = |n: u64| state.directories[&DirectoryName(n)].phase;
    assert_eq!(phase(1000), DirectoryPhase::Sealed);
    assert_eq!(phase(2000), DirectoryPhase::Current);
    assert_eq!(phase(3000), DirectoryPhase::Failed);
    // The link pointed at an older directory: it is re-pointed; nothing counts as shipped.
    assert_eq!(state.current_link, None);
    assert!(state.needs_shipping(DirectoryName(1000)) && state.needs_shipping(DirectoryName(2000)));
}

// ---------------------------------------------------------------------------------------------
// Model-based property tests.

fn run_steps(bytes: &[u8]) -> (World, Vec<State>) {
    let mut world = World::new(simulation_policy());
    let mut states = vec![world.state.clone()];
    for pair in bytes.chunks(2) {
        let step = Step::from_bytes(pair[0], pair.get(1).copied().unwrap_or(0));
        let previous = world.state.clone();
        let recorded = world
            .perform(step)
            .unwrap_or_else(|e| panic!("{step:?} was rejected: {e}\n{:#?}", world.state));
        if let Err(broken) = world.check(&previous, recorded) {
            panic!("after {step:?}: {broken}\n{:#?}", world.state);
        }
        // Remember the state after every recorded fact (for the encoding round trip).
        let mut replay = states.last().unwrap().clone();
        for event in &world.history[world.history.len() - recorded..] {
            apply(&mut replay, event).unwrap();
            states.push(replay.clone());
        }
        assert_eq!(states.last().unwrap(), &world.state);
    }
    (world, states)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every event and state the simulation produces survives the journal's encoding.
    #[test]
    fn events_and_states_round_trip_through_postcard(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (world, states) = run_steps(&bytes);
        for event in &world.history {
            let encoded = postcard::to_stdvec(event).unwrap();
            prop_assert_eq!(&postcard::from_bytes::<Event>(&encoded).unwrap(), event);
        }
        for state in &states {
            let encoded = postcard::to_stdvec(state).unwrap();
            prop_assert_eq!(&postcard::from_bytes::<State>(&encoded).unwrap(), state);
        }
    }
}

// The invariants after every step, prefix replay, liveness and the reachability of every edge
// of the table are checked on the real session loop (`sync::session::simulated`), not on the
// hand-written driver here.

/// `state-diagrams/machine.md` draws exactly the table: one Mermaid `stateDiagram-v2` block
/// per component, under a `## <component>` heading, edges written `From --> To : Event`.
#[test]
fn diagram_matches_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/state-diagrams/machine.md");
    let text = std::fs::read_to_string(path).expect("state-diagrams/machine.md is readable");
    let mut drawn: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let mut component: Option<String> = None;
    let mut in_block = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(heading) = line.strip_prefix("## ") {
            component = Some(heading.trim().to_owned());
        } else if line.starts_with("```mermaid") {
            in_block = true;
        } else if line.starts_with("```") {
            in_block = false;
        } else if in_block && let Some((from, rest)) = line.split_once("-->") {
            let Some((to, events)) = rest.split_once(':') else {
                // `[*] --> Idle` marks a component's initial kind; it is not a transition.
                assert_eq!(from.trim(), ABSENT, "unlabelled edge {line:?}");
                continue;
            };
            let component = component.clone().expect("edges sit under a ## heading");
            for event in events.split('/') {
                drawn.insert((
                    component.clone(),
                    from.trim().to_owned(),
                    event.trim().to_owned(),
                    to.trim().to_owned(),
                ));
            }
        }
    }
    let table: BTreeSet<(String, String, String, String)> = EDGES
        .iter()
        .map(|e| {
            (
                e.component.name().to_owned(),
                e.from.to_owned(),
                e.event.name().to_owned(),
                e.to.to_owned(),
            )
        })
        .collect();
    let missing: Vec<_> = table.difference(&drawn).collect();
    let extra: Vec<_> = drawn.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not drawn: {missing:#?}\nnot in code: {extra:#?}"
    );
    for component in Component::ALL {
        assert!(
            text.contains(&format!("## {}", component.name())),
            "{component:?}"
        );
    }
    assert!(EDGES.iter().any(|e| e.from == ABSENT));
}

/// The machine is pure (S-3.2: the next action is a pure function of the state and the time):
/// nothing in it touches the file system, processes, the clock or randomness, and only ordered
/// maps are iterated. Checked on the source text, which is what a reviewer would check.
#[test]
fn machine_is_pure() {
    const FORBIDDEN: [&str; 16] = [
        "std::fs",
        "std::process",
        "std::net",
        "std::env",
        "std::thread",
        "std::io",
        "SystemTime",
        "Instant",
        "HashMap",
        "HashSet",
        "rand::",
        "nix::",
        "libc::",
        "File::",
        "thread_rng",
        "getrandom",
    ];
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/src/machine");
    let mut checked = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        // This file reads the diagram and its own sources: it is the test, not the machine.
        if path.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for token in FORBIDDEN {
            assert!(!source.contains(token), "{} uses {token}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} machine files found");
}

// ---------------------------------------------------------------------------------------------
// Timelines, lost directories, the cluster, the server's absence and the current link.

fn archive_file(state: &mut State, name: &str, at: UnixMillis) -> Vec<DirectoryName> {
    let targets = archive_targets(state, at);
    let event = Event::WalArchived {
        file: WalFileName::parse(name).unwrap(),
        compressed_bytes: 1000,
        directories: targets.directories.clone(),
        already_present: false,
        at,
    };
    apply(state, &event).unwrap();
    targets.directories
}

#[test]
fn wal_of_a_newer_timeline_makes_a_base_backup_due_at_once() {
    // S-4.7: a promoted standby archives into the same $PGBAK.
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let at = START.plus_millis(3_600_000);
    assert_eq!(base_backup_due(&state, at, &policy), None);
    // The old timeline's last, partial segment says nothing about a switch yet.
    archive_file(&mut state, "000000010000000000000009.partial", at);
    assert_eq!(base_backup_due(&state, at, &policy), None);
    archive_file(&mut state, "00000002.history", at);
    assert!(state.spans_timelines(current));
    assert_eq!(
        base_backup_due(&state, at, &policy),
        Some(BaseBackupDue::NewTimeline)
    );
    let plan = next_actions(&state, at, &policy);
    assert!(
        plan.actions
            .iter()
            .any(|action| matches!(action, Action::StartBaseBackup { .. })),
        "{plan:?}"
    );
    // The new base backup's directory gets only the new timeline's WAL: once it is current,
    // nothing is due any more.
    let Some(Action::StartBaseBackup { directory, .. }) = plan
        .actions
        .iter()
        .find(|action| matches!(action, Action::StartBaseBackup { .. }))
        .cloned()
    else {
        unreachable!()
    };
    apply(&mut state, &Event::DirectoryOpened { directory, at }).unwrap();
    apply(&mut state, &Event::BaseBackupStarted { directory, at }).unwrap();
    assert_eq!(
        archive_file(&mut state, "00000002000000000000000A", at),
        vec![current, directory]
    );
    let done = at.plus_millis(1_000);
    apply(
        &mut state,
        &Event::BaseBackupFinished {
            directory,
            base_bytes: 1_000_000,
            at: done,
        },
    )
    .unwrap();
    assert_eq!(base_backup_due(&state, done, &policy), None);
    assert!(state.spans_timelines(current) && !state.spans_timelines(directory));
}

#[test]
fn a_base_backup_that_cannot_reach_the_server_does_not_keep_an_idle_sync_alive() {
    // S-6.6: the server stopped; everything is shipped; only the base backup is left.
    let policy = Policy::default();
    let (mut state, _) = shipped_current(&policy);
    let at = START.plus_millis(policy.base_max_age_ms + 1);
    let plan = next_actions(&state, at, &policy);
    let Some(Action::StartBaseBackup { directory, .. }) = plan.actions.first().cloned() else {
        panic!("{plan:?}");
    };
    apply(&mut state, &Event::DirectoryOpened { directory, at }).unwrap();
    apply(&mut state, &Event::BaseBackupStarted { directory, at }).unwrap();
    let unreachable = Event::BaseBackupServerUnreachable {
        directory,
        output: "pg_basebackup: error: connection to server on socket \"/tmp/.s.PGSQL.5432\" \
                 failed: No such file or directory\n\tIs the server running locally?"
            .into(),
        at,
    };
    let mut failed = state.clone();
    apply(&mut state, &unreachable).unwrap();
    apply(&mut state, &Event::DirectoryRemoved { directory, at }).unwrap();
    let plan = next_actions(&state, at, &policy);
    assert!(plan.finished && plan.actions.is_empty(), "{plan:?}");
    assert!(base_backup_due(&state, at, &policy).is_some());
    // Any other failure keeps the sync retrying, as before.
    let other = Event::BaseBackupFailed {
        directory,
        output: "pg_basebackup: error: FATAL: password authentication failed".into(),
        at,
    };
    apply(&mut failed, &other).unwrap();
    apply(&mut failed, &Event::DirectoryRemoved { directory, at }).unwrap();
    let plan = next_actions(&failed, at, &policy);
    assert!(!plan.finished && plan.wake_at.is_some(), "{plan:?}");
}

#[test]
fn a_current_directory_lost_from_disk_is_forgotten_and_a_new_one_opens() {
    // S-4.8.
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let at = START.plus_millis(5_000);
    apply(
        &mut state,
        &Event::DirectoryLost {
            directory: current,
            at,
        },
    )
    .unwrap();
    assert!(!state.directories.contains_key(&current));
    assert_eq!(state.current_link, None);
    assert_eq!(state.lost_directories.len(), 1);
    assert!(state.lost_directories[0].shipped && state.lost_directories[0].had_base);
    // The next file opens a new directory, never the lost one's name again.
    let targets = archive_targets(&state, at);
    let opened = targets.open_directory.unwrap();
    assert!(opened > current, "{opened} after {current}");
    assert_eq!(
        base_backup_due(&state, at, &policy),
        Some(BaseBackupDue::NoCurrentDirectory)
    );
    // At most LOST_DIRECTORIES_KEPT are remembered.
    for _ in 0..40 {
        let (fresh, lost) = shipped_current(&policy);
        let mut fresh = fresh;
        apply(
            &mut fresh,
            &Event::DirectoryLost {
                directory: lost,
                at,
            },
        )
        .unwrap();
        fresh
            .lost_directories
            .extend(state.lost_directories.iter().cloned());
        fresh
            .lost_directories
            .truncate(super::state::LOST_DIRECTORIES_KEPT);
        state = fresh;
    }
    assert!(state.check_invariants().is_ok());
}

#[test]
fn segments_of_another_cluster_are_refused_until_a_new_series_starts() {
    // S-2.9.
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let record = |id| Event::SystemIdentifierRecorded {
        system_identifier: id,
        at: START,
    };
    // The simulated `wal` recorded the cluster with the first segment.
    let recorded = state.system_identifier.unwrap();
    apply(&mut state, &record(recorded)).unwrap();
    let before = state.clone();
    assert!(apply(&mut state, &record(recorded + 1)).is_err());
    assert_eq!(state, before);
    apply(&mut state, &Event::NewSeriesStarted { at: START }).unwrap();
    assert_eq!(state.system_identifier, None);
    assert_eq!(state.directories[&current].phase, DirectoryPhase::Sealed);
    apply(&mut state, &record(recorded + 1)).unwrap();
    // Nothing is open: the next file opens the new series' first directory.
    assert!(archive_targets(&state, START).open_directory.is_some());
    assert_eq!(
        base_backup_due(&state, START, &policy),
        Some(BaseBackupDue::NoCurrentDirectory)
    );
}

#[test]
fn a_current_link_pointed_elsewhere_is_switched_back() {
    // S-6.4: the journal said current -> X, the disk says something else.
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    assert_eq!(state.current_link, Some(current));
    let observed = Event::CurrentLinkObserved {
        directory: None,
        at: START,
    };
    apply(&mut state, &observed).unwrap();
    let plan = next_actions(&state, START, &policy);
    assert_eq!(
        plan.actions,
        vec![Action::PointCurrentLinkAt { directory: current }]
    );
}

#[test]
fn a_retry_found_in_current_and_linked_into_pending_counts_once_in_each() {
    // The `wal` side records what it found (already present) and what it linked as two
    // facts; the current directory's count must not grow, or a base backup comes early.
    let policy = Policy::default();
    let (mut state, current) = shipped_current(&policy);
    let at = START.plus_millis(1_000);
    let pending = DirectoryName(current.0 + 100);
    apply(
        &mut state,
        &Event::DirectoryOpened {
            directory: pending,
            at,
        },
    )
    .unwrap();
    let before = state.directories[&current].clone();
    let last = before.last_wal.clone().unwrap();
    for (directories, already_present) in [(vec![current], true), (vec![pending], false)] {
        let event = Event::WalArchived {
            file: last.clone(),
            compressed_bytes: 1000,
            directories,
            already_present,
            at,
        };
        apply(&mut state, &event).unwrap();
    }
    assert_eq!(state.directories[&current].wal_files, before.wal_files);
    assert_eq!(state.directories[&current].wal_bytes, before.wal_bytes);
    assert_eq!(state.directories[&pending].wal_files, 1);
}
