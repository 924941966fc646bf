//! Yesterday's journals must replay tomorrow (S-3.7): a journal file written by pgbak 0.1 is
//! checked in (`tests/fixtures/journal-0.1.lock`: a fresh journal, a simulated history with
//! base backups, a timeline switch, a lost directory and a new series, a compaction, then more
//! facts after the checkpoint), and every later version must replay it without a repair and
//! reach the same state. The postcard variant index of every fact and state enum is pinned too:
//! a reordered or removed variant would make old journals mean something else.
//!
//! To regenerate the fixture (only when the format version changes on purpose):
//! `PGBAK_WRITE_JOURNAL_FIXTURE=1 cargo test --release --test it journal_compat::write_the_fixture`.
//! Without that variable the writer does nothing: `.ci/run` runs ignored tests too, and must
//! never overwrite the file it checks.

use pgbak::journal::{Journal, JournalOptions};
use pgbak::machine::simulation::{Step, World, simulation_policy};
use pgbak::machine::{DirectoryPhase, Event, JournalHealth, State, SyncStopReason};
use pgbak::timestamp::{DirectoryName, UnixMillis};
use pgbak::wal_name::WalFileName;
use std::convert::Infallible;
use std::fs;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "tests/fixtures/journal-0.1.lock";
const NOW: UnixMillis = UnixMillis(1_795_478_400_000);

/// The steps of the recorded history: deterministic, so the fixture can be made again.
fn history_steps() -> Vec<Step> {
    let mut steps = vec![
        Step::ArchiveWal,
        Step::StartSync {
            force_script: false,
            force_base: false,
        },
    ];
    let settle = |steps: &mut Vec<Step>| {
        for _ in 0..6 {
            steps.push(Step::DriveSync);
            steps.push(Step::FinishBaseBackup {
                succeeded: true,
                server_unreachable: false,
            });
            steps.push(Step::FinishScript { succeeded: true });
        }
    };
    settle(&mut steps);
    steps.extend([Step::ArchiveWal, Step::ArchiveSameWalAgain]);
    settle(&mut steps);
    steps.push(Step::PromoteToNewTimeline);
    steps.push(Step::ArchiveWal);
    settle(&mut steps);
    steps.push(Step::LoseCurrentDirectory);
    steps.push(Step::ArchiveWal);
    steps.push(Step::DriveSync);
    steps.push(Step::FinishBaseBackup {
        succeeded: false,
        server_unreachable: true,
    });
    steps.push(Step::AdvanceTime { millis: 120_000 });
    settle(&mut steps);
    steps.push(Step::InterruptSync);
    steps.push(Step::StartNewSeries);
    steps.push(Step::ArchiveWal);
    steps
}

fn recorded_history() -> Vec<Event> {
    let mut world = World::new(simulation_policy());
    for step in history_steps() {
        world.perform(step).expect("the simulated history is valid");
    }
    world.history
}

fn scratch_copy(label: &str) -> PathBuf {
    let path = crate::util::unique_temp_path(label);
    fs::copy(FIXTURE, &path).expect("the fixture is checked in");
    path
}

fn open(path: &Path) -> (Journal<State, fs::File>, pgbak::journal::OpenReport) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    Journal::open(file, &JournalOptions::default(), NOW, 0x5EED, |_| {
        Ok::<State, Infallible>(State::default())
    })
    .expect("open")
}

#[test]
fn write_the_fixture() {
    if std::env::var_os("PGBAK_WRITE_JOURNAL_FIXTURE").is_none() {
        return;
    }
    let _ = fs::remove_file(FIXTURE);
    let (mut journal, _) = open(Path::new(FIXTURE));
    let history = recorded_history();
    let (before, after) = history.split_at(history.len() * 2 / 3);
    for chunk in before.chunks(3) {
        journal.append(chunk, NOW).unwrap();
    }
    journal.compact_now().unwrap();
    for chunk in after.chunks(2) {
        journal.append(chunk, NOW).unwrap();
    }
}

#[test]
fn a_journal_written_by_pgbak_0_1_replays_without_repair_to_the_same_state() {
    let path = scratch_copy("journal-compat");
    let (journal, report) = open(&path);
    let _ = fs::remove_file(&path);
    assert_eq!(report.repair, None, "the 0.1 journal needed a repair");
    assert!(report.records_replayed >= 4, "{report:?}");
    let state = journal.state();
    state.check_invariants().unwrap();
    // The same history folded today gives the same facts (plus the journal's creation).
    let mut expected = State::default();
    pgbak::machine::apply(
        &mut expected,
        &Event::JournalRebuilt {
            reason: String::new(),
            damage: false,
            at: NOW,
        },
    )
    .unwrap();
    for event in recorded_history() {
        pgbak::machine::apply(&mut expected, &event).unwrap();
    }
    assert_eq!(state.directories, expected.directories);
    assert_eq!(state.wal, expected.wal);
    assert_eq!(state.timelines, expected.timelines);
    assert_eq!(state.lost_directories, expected.lost_directories);
    assert_eq!(state.system_identifier, expected.system_identifier);
    assert_eq!(state.script, expected.script);
    assert_eq!(state.base_backup, expected.base_backup);
    // And what the fixture holds, pinned: a later simulation change must not hide a decoding
    // change behind an equally changed expectation.
    assert!(state.directories.len() >= 2, "{state:#?}");
    assert_eq!(state.lost_directories.len(), 1);
    assert!(!state.timelines.is_empty() && state.system_identifier.is_some());
    assert!(matches!(state.journal, JournalHealth::Rebuilt { .. }));
}

/// postcard identifies an enum variant by its index (a varint; one byte below 128). These are
/// part of the journal format: new variants are appended, none is ever moved or removed.
#[test]
fn postcard_variant_indexes_of_facts_and_states_are_pinned() {
    let directory = DirectoryName(1_795_478_400);
    let at = NOW;
    let file = WalFileName::parse("000000010000000000000001").unwrap();
    let events = [
        Event::DirectoryOpened { directory, at },
        Event::WalArchived {
            file,
            compressed_bytes: 1,
            directories: vec![directory],
            already_present: false,
            at,
        },
        Event::BaseBackupStarted { directory, at },
        Event::BaseBackupFinished {
            directory,
            base_bytes: 1,
            at,
        },
        Event::BaseBackupFailed {
            directory,
            output: String::new(),
            at,
        },
        Event::DirectoryRemoved { directory, at },
        Event::CurrentLinkSwitched { directory, at },
        Event::ScriptStarted {
            directory,
            current_timestamp: directory,
            through_version: 1,
            at,
        },
        Event::ScriptSucceeded { directory, at },
        Event::ScriptFailed {
            directory,
            output: String::new(),
            at,
        },
        Event::SyncStarted {
            pid: 1,
            force_script: false,
            force_base: false,
            at,
        },
        Event::SyncStopped {
            pid: 1,
            reason: SyncStopReason::Finished,
            at,
        },
        Event::SyncAbandoned { pid: 1, at },
        Event::JournalRebuilt {
            reason: String::new(),
            damage: false,
            at,
        },
        Event::JournalTailCut {
            offset: 0,
            discarded_bytes: 0,
            at,
        },
        Event::DirectoryLost { directory, at },
        Event::SystemIdentifierRecorded {
            system_identifier: 1,
            at,
        },
        Event::NewSeriesStarted { at },
        Event::BaseBackupServerUnreachable {
            directory,
            output: String::new(),
            at,
        },
        Event::CurrentLinkObserved {
            directory: None,
            at,
        },
    ];
    let names: Vec<(u8, &str)> = events
        .iter()
        .map(|event| (postcard::to_stdvec(event).unwrap()[0], event.kind().name()))
        .collect();
    let expected: Vec<(u8, &str)> = [
        "DirectoryOpened",
        "WalArchived",
        "BaseBackupStarted",
        "BaseBackupFinished",
        "BaseBackupFailed",
        "DirectoryRemoved",
        "CurrentLinkSwitched",
        "ScriptStarted",
        "ScriptSucceeded",
        "ScriptFailed",
        "SyncStarted",
        "SyncStopped",
        "SyncAbandoned",
        "JournalRebuilt",
        "JournalTailCut",
        "DirectoryLost",
        "SystemIdentifierRecorded",
        "NewSeriesStarted",
        "BaseBackupServerUnreachable",
        "CurrentLinkObserved",
    ]
    .into_iter()
    .enumerate()
    .map(|(index, name)| (index as u8, name))
    .collect();
    assert_eq!(names, expected);

    let index = |bytes: Vec<u8>| bytes[0];
    let phases = [
        DirectoryPhase::Pending,
        DirectoryPhase::Current,
        DirectoryPhase::Sealed,
        DirectoryPhase::Failed,
    ];
    let phase_indexes: Vec<u8> = phases
        .iter()
        .map(|phase| index(postcard::to_stdvec(phase).unwrap()))
        .collect();
    assert_eq!(phase_indexes, [0, 1, 2, 3]);
    let reasons = [
        SyncStopReason::Finished,
        SyncStopReason::Interrupted,
        SyncStopReason::Error {
            message: String::new(),
        },
    ];
    let reason_indexes: Vec<u8> = reasons
        .iter()
        .map(|reason| index(postcard::to_stdvec(reason).unwrap()))
        .collect();
    assert_eq!(reason_indexes, [0, 1, 2]);
    let healths = [
        JournalHealth::Intact,
        JournalHealth::TailCut {
            at,
            offset: 0,
            discarded_bytes: 0,
        },
        JournalHealth::Rebuilt {
            at,
            reason: String::new(),
            damage: false,
            directories_found: 0,
        },
    ];
    let health_indexes: Vec<u8> = healths
        .iter()
        .map(|health| index(postcard::to_stdvec(health).unwrap()))
        .collect();
    assert_eq!(health_indexes, [0, 1, 2]);
}
