//! Fuzz target: arbitrary bytes as `$PGBAK/pgbak.lock`.
//!
//! Whatever the bytes, reading them never panics: the read-only inspection, the record listing
//! of `status --journal`, and the writable open all return (a rebuild is fine). After the
//! writable open, the file is a valid journal: opening it again repairs nothing, and the state
//! it holds satisfies the machine's invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgbak::journal::{Journal, JournalOptions, MemoryStorage};
use pgbak::machine::State;
use pgbak::timestamp::UnixMillis;
use std::convert::Infallible;

const NOW: UnixMillis = UnixMillis(1_795_478_400_000);

fuzz_target!(|data: &[u8]| {
    let storage = MemoryStorage::unrecorded(data.to_vec());
    let _ = Journal::<State, MemoryStorage>::inspect(&storage);
    let _ = Journal::<State, MemoryStorage>::decode_records(&storage);

    let options = JournalOptions { compaction_threshold_bytes: 4096 };
    let opened = Journal::<State, MemoryStorage>::open(storage, &options, NOW, 7, |_| {
        Ok::<State, Infallible>(State::default())
    });
    let (journal, _report) = match opened {
        Ok(opened) => opened,
        Err(error) => panic!("open failed on memory storage: {error}"),
    };
    if let Err(broken) = journal.state().check_invariants() {
        panic!("recovered a state that breaks the invariants: {broken}");
    }
    let state = journal.state().clone();
    let bytes = journal.into_storage().contents().to_vec();
    let (again, report) = Journal::<State, MemoryStorage>::open(
        MemoryStorage::unrecorded(bytes),
        &options,
        NOW,
        8,
        |_| -> Result<State, Infallible> { panic!("a journal pgbak wrote needed a rebuild") },
    )
    .unwrap_or_else(|error| panic!("reopen failed: {error}"));
    assert!(report.repair.is_none(), "a journal pgbak wrote needed repair: {:?}", report.repair);
    assert_eq!(again.state(), &state);
});
