//! Tests of retention in the pure machine (S-8.3): which directories `prune_candidates` picks
//! and in which order, the steps of a prune and their resume after a crash, and the property
//! that a directory whose last state was not shipped is never pruned, whatever the clock, the
//! names and `keep_bases` say.

use super::*;
use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_name::WalFileName;
use proptest::prelude::*;

const START: UnixMillis = UnixMillis(1_795_478_400_000);
const PID: u32 = 7;

fn segment(number: u64) -> WalFileName {
    WalFileName::parse(&format!("0000000100000000{number:08X}")).unwrap()
}

fn step(state: &mut State, event: Event) {
    apply(state, &event).unwrap_or_else(|error| panic!("{error}\n{state:#?}"));
}

/// One base backup per name, in the order given (so the names need not follow it: a clock
/// that jumped), each followed by a WAL file; then the script ships those whose flag is set,
/// oldest first. `at` only ever goes forward, in steps of a second.
fn bases(names: &[u64], shipped: &[bool]) -> State {
    let mut state = State::default();
    let mut at = START;
    let mut tick = || {
        at = at.plus_millis(1_000);
        at
    };
    step(
        &mut state,
        Event::SyncStarted {
            pid: PID,
            force_script: false,
            force_base: false,
            at: tick(),
        },
    );
    for (index, name) in names.iter().enumerate() {
        let directory = DirectoryName(*name);
        step(
            &mut state,
            Event::DirectoryOpened {
                directory,
                at: tick(),
            },
        );
        step(
            &mut state,
            Event::BaseBackupStarted {
                directory,
                at: tick(),
            },
        );
        step(
            &mut state,
            Event::BaseBackupFinished {
                directory,
                base_bytes: 1_000,
                at: tick(),
            },
        );
        step(
            &mut state,
            Event::CurrentLinkSwitched {
                directory,
                at: tick(),
            },
        );
        step(
            &mut state,
            Event::WalArchived {
                file: segment(index as u64 + 1),
                compressed_bytes: 100,
                directories: vec![directory],
                already_present: false,
                at: tick(),
            },
        );
    }
    for (name, ship) in names.iter().zip(shipped) {
        if !ship {
            continue;
        }
        let directory = DirectoryName(*name);
        let version = state.directories[&directory].content_version;
        step(
            &mut state,
            Event::ScriptStarted {
                directory,
                current_timestamp: directory,
                through_version: version,
                at: tick(),
            },
        );
        step(
            &mut state,
            Event::ScriptSucceeded {
                directory,
                at: tick(),
            },
        );
    }
    state
}

fn names(list: &[u64]) -> Vec<DirectoryName> {
    list.iter().copied().map(DirectoryName).collect()
}

#[test]
fn keep_zero_never_deletes_anything() {
    let state = bases(&[100, 200, 300], &[true, true, true]);
    assert!(prune_candidates(&state, 0).is_empty());
    let plan = next_actions(&state, START, &Policy::default());
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn the_oldest_shipped_sealed_directories_beyond_keep_go_oldest_first() {
    let state = bases(&[100, 200, 300, 400], &[true, true, true, true]);
    assert_eq!(prune_candidates(&state, 1), names(&[100, 200, 300]));
    assert_eq!(prune_candidates(&state, 2), names(&[100, 200]));
    assert_eq!(prune_candidates(&state, 4), names(&[]));
    let policy = Policy {
        keep_bases: 2,
        ..Policy::default()
    };
    let plan = next_actions(&state, START, &policy);
    assert_eq!(
        plan.actions,
        [
            Action::PruneDirectory {
                directory: DirectoryName(100)
            },
            Action::PruneDirectory {
                directory: DirectoryName(200)
            }
        ]
    );
    assert!(!plan.finished);
}

/// A clock that jumped back made the newer base backups' names older: the journal's order of
/// base backups decides, never the names (S-8.3).
#[test]
fn a_clock_that_jumped_does_not_change_what_is_deleted() {
    // Finished in this order: 300, then 100, then 200 (the clock went back twice).
    let state = bases(&[300, 100, 200], &[true, true, true]);
    assert_eq!(
        state.current_directory().map(|(name, _)| name),
        Some(DirectoryName(200))
    );
    assert_eq!(prune_candidates(&state, 1), names(&[300, 100]));
    assert_eq!(prune_candidates(&state, 2), names(&[300]));
}

#[test]
fn nothing_goes_before_the_newest_base_backup_is_shipped() {
    let state = bases(&[100, 200, 300], &[true, true, false]);
    assert!(prune_candidates(&state, 1).is_empty());
}

#[test]
fn an_unshipped_directory_stays_and_a_newer_shipped_one_may_go() {
    let state = bases(&[100, 200, 300], &[false, true, true]);
    assert_eq!(prune_candidates(&state, 1), names(&[200]));
    let mut refused = state.clone();
    let error = apply(
        &mut refused,
        &Event::PruneStarted {
            directory: DirectoryName(100),
            at: START,
        },
    )
    .unwrap_err();
    assert!(error.reason.contains("has not shipped"), "{error}");
    assert_eq!(refused, state);
}

#[test]
fn wal_arriving_after_the_shipment_makes_a_directory_unprunable_again() {
    let mut state = bases(&[100, 200], &[true, true]);
    assert_eq!(prune_candidates(&state, 1), names(&[100]));
    // A `wal` that chose the old directory just before it was sealed (S-2.7).
    step(
        &mut state,
        Event::WalArchived {
            file: segment(9),
            compressed_bytes: 100,
            directories: vec![DirectoryName(100)],
            already_present: false,
            at: START.plus_millis(60_000),
        },
    );
    assert!(prune_candidates(&state, 1).is_empty());
}

#[test]
fn current_and_pending_directories_are_never_pruned() {
    let mut state = bases(&[100], &[true]);
    for directory in [DirectoryName(100), DirectoryName(500)] {
        if directory == DirectoryName(500) {
            step(
                &mut state,
                Event::DirectoryOpened {
                    directory,
                    at: START,
                },
            );
        }
        let before = state.clone();
        assert!(
            apply(
                &mut state,
                &Event::PruneStarted {
                    directory,
                    at: START
                }
            )
            .is_err(),
            "{directory}"
        );
        assert_eq!(state, before);
    }
    assert!(prune_candidates(&state, 1).is_empty());
}

/// The whole prune, with the action that resumes each step after a crash there: the phase says
/// which step is next, and the policy no longer matters once the intent is recorded.
#[test]
fn a_prune_resumes_from_each_recorded_step_whatever_the_policy_says_now() {
    let mut state = bases(&[100, 200], &[true, true]);
    let old = DirectoryName(100);
    let off = Policy::default();
    step(
        &mut state,
        Event::PruneStarted {
            directory: old,
            at: START,
        },
    );
    assert_eq!(state.directories[&old].phase, DirectoryPhase::Pruning);
    assert_eq!(
        next_actions(&state, START, &off).actions,
        [Action::MoveDirectoryAside { directory: old }]
    );
    // A sync that died and the next one that abandons it change nothing of the prune.
    step(
        &mut state,
        Event::SyncAbandoned {
            pid: PID,
            at: START,
        },
    );
    step(
        &mut state,
        Event::SyncStarted {
            pid: PID + 1,
            force_script: false,
            force_base: false,
            at: START,
        },
    );
    step(
        &mut state,
        Event::DirectoryMovedAside {
            directory: old,
            at: START,
        },
    );
    assert_eq!(
        next_actions(&state, START, &off).actions,
        [Action::RemoveMovedAsideDirectory { directory: old }]
    );
    step(
        &mut state,
        Event::DirectoryPruned {
            directory: old,
            prune_script: true,
            at: START,
        },
    );
    assert!(!state.directories.contains_key(&old));
    assert!(!state.retention.base_order.contains_key(&old));
    assert_eq!(state.retention.offsite_pending, [old]);
    assert_eq!(
        next_actions(&state, START, &off).actions,
        [Action::RunPruneScript { directory: old }]
    );
    // The prune script backs off like the backup script (S-5.3), and success settles it.
    let failed_at = START.plus_millis(5_000);
    step(
        &mut state,
        Event::PruneScriptFailed {
            directory: old,
            output: "ssh: connection refused".into(),
            at: failed_at,
        },
    );
    let plan = next_actions(&state, failed_at, &off);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.wake_at, Some(failed_at.plus_millis(1_000)));
    assert!(!plan.finished);
    assert_eq!(
        next_actions(&state, failed_at.plus_millis(1_000), &off).actions,
        [Action::RunPruneScript { directory: old }]
    );
    step(
        &mut state,
        Event::PruneScriptSucceeded {
            directory: old,
            at: failed_at,
        },
    );
    assert!(state.retention.offsite_pending.is_empty());
    assert_eq!(state.retention.pruned_count, 1);
    // A name once pruned is never given to a new directory: names only grow.
    assert!(next_actions(&state, failed_at, &off).finished);
}

proptest! {
    /// S-8.3: whatever the order the bases finished in (the names a clock gave them), which
    /// were shipped, `keep_bases`, and however many prunes already ran, every candidate is
    /// sealed and shipped whole, the newest `keep_bases` bases stay, and the facts a sync would
    /// record for them are accepted while `PruneStarted` for anything else is refused.
    #[test]
    fn a_directory_not_shipped_whole_is_never_pruned(
        order in Just((1u64..=6).collect::<Vec<_>>()).prop_shuffle(),
        shipped in proptest::collection::vec(any::<bool>(), 6),
        keep in 0u32..8,
    ) {
        let names_in_order: Vec<u64> = order.iter().map(|n| n * 100).collect();
        let mut state = bases(&names_in_order, &shipped);
        let candidates = prune_candidates(&state, keep);
        let newest_first = state.bases_newest_first();
        for candidate in &candidates {
            prop_assert_eq!(state.directories[candidate].phase, DirectoryPhase::Sealed);
            prop_assert!(state.fully_shipped(*candidate));
            let place = newest_first.iter().position(|name| name == candidate).unwrap();
            prop_assert!(place >= keep as usize);
        }
        for name in state.directories.keys().copied().collect::<Vec<_>>() {
            let mut tried = state.clone();
            let accepted = apply(&mut tried, &Event::PruneStarted { directory: name, at: START })
                .is_ok();
            prop_assert_eq!(
                accepted,
                state.directories[&name].phase == DirectoryPhase::Sealed
                    && state.fully_shipped(name)
            );
        }
        for directory in candidates {
            step(&mut state, Event::PruneStarted { directory, at: START });
            step(&mut state, Event::DirectoryMovedAside { directory, at: START });
            step(&mut state, Event::DirectoryPruned { directory, prune_script: false, at: START });
        }
        prop_assert!(prune_candidates(&state, keep).is_empty());
        if keep > 0 {
            prop_assert!(state.bases_newest_first().len() >= (keep as usize).min(newest_first.len()));
        }
    }
}
