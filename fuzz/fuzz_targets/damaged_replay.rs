//! Fuzz target: replay of damaged journals.
//!
//! A valid journal is written through the real append path from a simulated world (with a
//! compaction threshold small enough that compaction happens), then damaged: cut at an
//! arbitrary offset, a byte flipped, a range zeroed, or the tail replaced by garbage. Opening
//! it must give either a rebuild (recorded as such) or exactly the state after some complete
//! prefix of the records — never a state that did not exist — and a cut that only removes bytes
//! must give exactly the state of the records that still fit in the file, no more, no less. The repaired file must
//! then reopen cleanly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgbak::journal::{Journal, JournalOptions, MemoryStorage, Record, Repair};
use pgbak::machine::simulation::{Step, World, simulation_policy};
use pgbak::machine::{JournalHealth, State, apply};
use std::convert::Infallible;

/// The journal's own health is what a repair changes; everything else must match a prefix.
fn normalized(state: &State) -> State {
    State { journal: JournalHealth::Intact, ..state.clone() }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (control, walk) = data.split_at(8);
    let threshold = [256, 1024, 4096, 1 << 20][usize::from(control[0] % 4)];
    let options = JournalOptions { compaction_threshold_bytes: threshold };
    let mut world = World::new(simulation_policy());
    let (mut journal, _) = Journal::<State, MemoryStorage>::open(
        MemoryStorage::new(),
        &options,
        world.now,
        1,
        |_| Ok::<State, Infallible>(State::default()),
    )
    .expect("a fresh journal opens");
    let mut prefixes = vec![normalized(journal.state())];
    for pair in walk.chunks(2).take(300) {
        let step = Step::from_bytes(pair[0], pair.get(1).copied().unwrap_or(0));
        let before = world.history.len();
        world.perform(step).expect("the simulated world only records valid facts");
        let new_events = world.history[before..].to_vec();
        if new_events.is_empty() {
            continue;
        }
        journal.append(&new_events, world.now).expect("append to memory storage");
        let mut state = journal.state().clone();
        state.journal = JournalHealth::Intact;
        let mut replay = prefixes.last().cloned().expect("non-empty");
        for event in &new_events {
            apply(&mut replay, event).expect("replay");
            prefixes.push(normalized(&replay));
        }
        assert_eq!(&state, prefixes.last().expect("non-empty"));
    }

    let mut bytes = journal.into_storage().contents().to_vec();
    // Where every record of the undamaged journal lies, to compute the exact state a cut must
    // give: the replay of the records that end at or before the cut.
    let stored = Journal::<State, MemoryStorage>::decode_records(&MemoryStorage::unrecorded(bytes.clone()))
        .expect("the undamaged journal decodes");
    assert!(stored.stopped.is_none(), "the undamaged journal decodes to its end");
    let offset = u32::from_le_bytes([control[1], control[2], control[3], control[4]]) as usize
        % (bytes.len() + 1);
    let only_cut = control[5] % 4 == 0;
    match control[5] % 4 {
        0 => bytes.truncate(offset),
        1 => {
            if offset < bytes.len() {
                bytes[offset] ^= control[6] | 1;
            }
        }
        2 => {
            let end = (offset + usize::from(control[6]) + 1).min(bytes.len());
            bytes[offset..end].fill(0);
        }
        _ => {
            bytes.truncate(offset);
            bytes.extend((0..usize::from(control[6])).map(|i| control[7].wrapping_mul(i as u8 | 1)));
        }
    }

    let mut rebuilt = false;
    let later = world.now.plus_millis(1_000);
    let (recovered, report) = Journal::<State, MemoryStorage>::open(
        MemoryStorage::unrecorded(bytes),
        &options,
        later,
        2,
        |_| {
            rebuilt = true;
            Ok::<State, Infallible>(State::default())
        },
    )
    .unwrap_or_else(|error| panic!("open of a damaged journal failed: {error}"));
    if rebuilt {
        assert!(matches!(report.repair, Some(Repair::Rebuilt { .. })), "{:?}", report.repair);
    } else {
        let state = normalized(recovered.state());
        assert!(
            prefixes.contains(&state),
            "recovered a state that never existed (repair {:?})",
            report.repair
        );
        if only_cut {
            // Exactly the last complete state: every record that still fits, nothing more.
            let mut expected: Option<State> = None;
            for entry in &stored.records {
                if entry.offset + entry.frame_bytes > offset as u64 {
                    break;
                }
                match &entry.record {
                    Record::Checkpoint(checkpoint) => expected = Some(checkpoint.clone()),
                    Record::Event(event) => {
                        let replay = expected.as_mut().expect("a checkpoint comes first");
                        apply(replay, event).expect("stored events apply");
                    }
                }
            }
            let expected = normalized(&expected.expect("not rebuilt, so the checkpoint fits"));
            assert_eq!(state, expected, "a cut at {offset} lost or invented records");
        }
    }
    let state = recovered.state().clone();
    let bytes = recovered.into_storage().contents().to_vec();
    let (again, report) = Journal::<State, MemoryStorage>::open(
        MemoryStorage::unrecorded(bytes),
        &options,
        later,
        3,
        |_| -> Result<State, Infallible> { panic!("a repaired journal needed another rebuild") },
    )
    .unwrap_or_else(|error| panic!("reopen after repair failed: {error}"));
    assert!(report.repair.is_none(), "second repair: {:?}", report.repair);
    assert_eq!(again.state(), &state);
});
