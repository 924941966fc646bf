//! The journal through its public API only, as pgbak's commands and the fuzz targets use it: a
//! state defined outside the crate, a real file, crash images from `MemoryStorage`, and replay
//! of arbitrary bytes (S-3.1 – S-3.4). The exhaustive tests live next to the code in
//! `src/journal/tests.rs`; this file checks that everything they need is exported.

use pgbak::journal::{
    CompactionOutcome, Journal, JournalOptions, MemoryStorage, Record, Repair, Replay, Storage,
    decode_records, inspect,
};
use pgbak::timestamp::UnixMillis;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;

const NOW: UnixMillis = UnixMillis(1_795_534_987_000);

/// A running total that refuses to go below zero: small, but with rejected transitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Balance {
    cents: u64,
    repairs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Movement {
    Deposited(u64),
    Withdrew(u64),
    JournalRepaired { at: UnixMillis },
}

impl Replay for Balance {
    type Event = Movement;
    type Rejection = String;

    fn initial() -> Self {
        Balance::default()
    }

    fn apply(&mut self, event: &Movement) -> Result<(), String> {
        match event {
            Movement::Deposited(cents) => {
                self.cents = self.cents.checked_add(*cents).ok_or("overflow")?;
            }
            Movement::Withdrew(cents) => {
                self.cents = self.cents.checked_sub(*cents).ok_or("insufficient funds")?;
            }
            Movement::JournalRepaired { .. } => self.repairs += 1,
        }
        Ok(())
    }

    fn repair_event(_repair: &Repair, at: UnixMillis) -> Movement {
        Movement::JournalRepaired { at }
    }
}

fn open<F: Storage>(storage: F) -> (Journal<Balance, F>, Option<Repair>) {
    let (journal, report) = Journal::open(storage, &JournalOptions::default(), NOW, 7, |_| {
        Ok::<Balance, Infallible>(Balance::default())
    })
    .expect("open");
    (journal, report.repair)
}

#[test]
fn a_journal_on_a_real_file_survives_reopening() {
    let directory = crate::util::unique_temp_path("journal-api");
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("pgbak.lock");
    let create = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap()
    };
    let (mut journal, repair) = open(create());
    assert!(matches!(repair, Some(Repair::Rebuilt { .. })));
    journal
        .append(&[Movement::Deposited(500), Movement::Withdrew(200)], NOW)
        .unwrap();
    assert!(journal.append(&[Movement::Withdrew(1000)], NOW).is_err());
    drop(journal);

    let file = create();
    let inspection = inspect::<Balance, _>(&file).unwrap();
    assert_eq!(inspection.state.map(|state| state.cents), Some(300));
    let decoded = decode_records::<Balance, _>(&file).unwrap();
    let events: Vec<&Movement> = decoded
        .records
        .iter()
        .filter_map(|entry| match &entry.record {
            Record::Event(event) => Some(event),
            Record::Checkpoint(_) => None,
        })
        .collect();
    assert_eq!(
        events,
        [
            &Movement::JournalRepaired { at: NOW },
            &Movement::Deposited(500),
            &Movement::Withdrew(200)
        ]
    );
    let (journal, repair) = open(file);
    assert_eq!(repair, None);
    assert_eq!(journal.state().cents, 300);
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn crash_images_and_arbitrary_bytes_are_usable_from_outside_the_crate() {
    let (mut journal, _) = open(MemoryStorage::new());
    journal.append(&[Movement::Deposited(1)], NOW).unwrap();
    journal.storage_mut().start_recording();
    journal.append(&[Movement::Deposited(2)], NOW).unwrap();
    assert!(matches!(
        journal.compact_now().unwrap(),
        CompactionOutcome::Done { .. }
    ));
    for image in journal.storage().all_crash_images() {
        let (reopened, repair) = open(MemoryStorage::with_contents(image.bytes));
        assert!(
            !matches!(repair, Some(Repair::Rebuilt { .. })),
            "{}",
            image.description
        );
        assert!(
            [1, 3].contains(&reopened.state().cents),
            "{}",
            image.description
        );
    }
    // What a fuzz target does with its input.
    for bytes in [vec![], vec![0u8; 5000], b"PGBAKJNL".repeat(600)] {
        let (reopened, _) = open(MemoryStorage::with_contents(bytes));
        assert_eq!(reopened.state().repairs, 1);
    }
}
