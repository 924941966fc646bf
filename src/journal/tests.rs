//! Tests of the whole journal with a toy [`Replay`] state: round trips, torn tails at every byte,
//! damage, crash images of appends, compactions and rebuilds, failure injection, size bounds and
//! two writers on one real file. Randomized tests are proptests, which print the seed of a
//! failure and persist it for replay.

use super::format::{self, HEADER_BYTES, SLOT_OFFSETS};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::time::Instant;

const NOW: UnixMillis = UnixMillis(1_795_534_987_000);
const SEED: u64 = 0x5EED_0000_0000_0001;

/// A state with a counter, a map and a list of repairs; `Removed` of an absent key and counter
/// overflow are rejected, so rejected transitions can be exercised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Toy {
    counter: u64,
    entries: BTreeMap<u32, u64>,
    padding: BTreeMap<u32, Vec<u8>>,
    repairs: Vec<Repair>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ToyEvent {
    Added(u64),
    Put {
        key: u32,
        value: u64,
    },
    Removed {
        key: u32,
    },
    /// Grows the state by `bytes` with a few bytes of event: checkpoints outgrow the log.
    Padded {
        key: u32,
        bytes: u16,
    },
    /// A long event that changes only the counter: long frames, small state.
    Noted(Vec<u8>),
    Repaired {
        repair: Repair,
        at: UnixMillis,
    },
}

impl Replay for Toy {
    type Event = ToyEvent;
    type Rejection = String;

    fn initial() -> Self {
        Toy::default()
    }

    fn apply(&mut self, event: &ToyEvent) -> Result<(), String> {
        match event {
            ToyEvent::Added(amount) => {
                self.counter = self
                    .counter
                    .checked_add(*amount)
                    .ok_or("counter overflow")?;
            }
            ToyEvent::Put { key, value } => {
                self.entries.insert(*key, *value);
            }
            ToyEvent::Removed { key } => {
                self.entries
                    .remove(key)
                    .ok_or(format!("key {key} is not present"))?;
            }
            ToyEvent::Padded { key, bytes } => {
                self.padding.insert(*key, vec![0xAB; usize::from(*bytes)]);
            }
            ToyEvent::Noted(_) => self.counter = self.counter.wrapping_add(1),
            ToyEvent::Repaired { repair, .. } => self.repairs.push(repair.clone()),
        }
        Ok(())
    }

    fn repair_event(repair: &Repair, at: UnixMillis) -> ToyEvent {
        ToyEvent::Repaired {
            repair: repair.clone(),
            at,
        }
    }
}

type ToyJournal<F = MemoryStorage> = Journal<Toy, F>;

/// What the tree scan of the toy world returns: recognizable in assertions.
fn rebuilt_toy() -> Toy {
    Toy {
        counter: 777_777,
        ..Toy::default()
    }
}

fn with_repair(state: &Toy, repair: Repair) -> Toy {
    let mut state = state.clone();
    state.repairs.push(repair);
    state
}

fn big_threshold() -> JournalOptions {
    JournalOptions {
        compaction_threshold_bytes: MAX_COMPACTION_THRESHOLD_BYTES,
    }
}

struct Opened<F: Storage = MemoryStorage> {
    journal: ToyJournal<F>,
    report: OpenReport,
    rebuilds: Vec<RebuildReason>,
    damaged_bytes_seen: Option<Vec<u8>>,
}

fn open_storage<F: Storage>(storage: F, options: &JournalOptions, rebuilt: Toy) -> Opened<F> {
    let mut rebuilds = Vec::new();
    let mut damaged_bytes_seen = None;
    let (journal, report) = ToyJournal::open(storage, options, NOW, SEED, |request| {
        rebuilds.push(request.reason.clone());
        damaged_bytes_seen = request.damaged_bytes.map(<[u8]>::to_vec);
        Ok::<Toy, Infallible>(rebuilt)
    })
    .expect("open succeeds");
    Opened {
        journal,
        report,
        rebuilds,
        damaged_bytes_seen,
    }
}

fn open_bytes(bytes: Vec<u8>, options: &JournalOptions) -> Opened {
    open_storage(MemoryStorage::with_contents(bytes), options, rebuilt_toy())
}

/// A fresh journal (created from a missing file with the initial state).
fn fresh(options: &JournalOptions) -> ToyJournal {
    open_storage(MemoryStorage::new(), options, Toy::initial()).journal
}

/// The state after the creation of a fresh journal.
fn fresh_state() -> Toy {
    with_repair(
        &Toy::initial(),
        Repair::Rebuilt {
            reason: RebuildReason::Missing,
        },
    )
}

/// A journal with `events` appended one per append, plus the file offsets where each appended
/// record starts and the state after each.
struct Built {
    bytes: Vec<u8>,
    record_starts: Vec<u64>,
    states_after: Vec<Toy>,
}

fn build(events: &[ToyEvent]) -> Built {
    let mut journal = fresh(&big_threshold());
    let mut record_starts = Vec::new();
    let mut states_after = Vec::new();
    for event in events {
        record_starts.push(journal.file_bytes());
        journal
            .append(std::slice::from_ref(event), NOW)
            .expect("append");
        states_after.push(journal.state().clone());
    }
    Built {
        bytes: journal.storage().contents().to_vec(),
        record_starts,
        states_after,
    }
}

fn sample_events() -> Vec<ToyEvent> {
    vec![
        ToyEvent::Added(5),
        ToyEvent::Put { key: 1, value: 10 },
        ToyEvent::Put {
            key: 2,
            value: u64::MAX,
        },
        ToyEvent::Added(1 << 40),
        ToyEvent::Removed { key: 1 },
        // A frame longer than a 512-byte sector, so tears land inside and across sectors.
        ToyEvent::Noted(vec![0x5A; 700]),
        ToyEvent::Put { key: 3, value: 33 },
        ToyEvent::Added(7),
    ]
}

fn any_event() -> impl Strategy<Value = ToyEvent> {
    prop_oneof![
        4 => (0..1000u64).prop_map(ToyEvent::Added),
        4 => (0..16u32, any::<u64>()).prop_map(|(key, value)| ToyEvent::Put { key, value }),
        2 => (0..16u32).prop_map(|key| ToyEvent::Removed { key }),
        1 => (0..8u32, 0..300u16).prop_map(|(key, bytes)| ToyEvent::Padded { key, bytes }),
        1 => proptest::collection::vec(any::<u8>(), 0..600).prop_map(ToyEvent::Noted),
    ]
}

/// A deterministic byte stream (xorshift64*) for garbage fills.
fn garbage(length: usize, mut seed: u64) -> Vec<u8> {
    (0..length)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn decoded(bytes: &[u8]) -> DecodedJournal<Toy, ToyEvent> {
    decode_records::<Toy, _>(&MemoryStorage::with_contents(bytes.to_vec())).expect("decodes")
}

/// Opening again must be clean: no repair, no rebuild, same state, nothing written.
fn assert_reopens_cleanly(bytes: &[u8], expected: &Toy, context: &str) {
    let again = open_bytes(bytes.to_vec(), &JournalOptions::default());
    assert_eq!(again.report.repair, None, "{context}: second open repaired");
    assert!(again.rebuilds.is_empty(), "{context}: second open rebuilt");
    assert_eq!(
        again.journal.state(),
        expected,
        "{context}: second open state"
    );
    assert!(
        again.journal.storage().ops().is_empty(),
        "{context}: second open wrote {:?}",
        again.journal.storage().ops().len()
    );
}

// ---------------------------------------------------------------------------------------------
// Creation, round trips, appends

#[test]
fn a_missing_file_is_created_through_the_rebuild_function_and_not_called_damage() {
    let opened = open_storage(
        MemoryStorage::new(),
        &JournalOptions::default(),
        Toy::initial(),
    );
    assert_eq!(opened.rebuilds, vec![RebuildReason::Missing]);
    let repair = opened.report.repair.clone().unwrap();
    assert_eq!(
        repair,
        Repair::Rebuilt {
            reason: RebuildReason::Missing
        }
    );
    assert!(!repair.is_damage());
    assert_eq!(opened.report.file_bytes_before, 0);
    assert_eq!(opened.report.damaged_bytes, None);
    assert_eq!(opened.damaged_bytes_seen, None);
    assert_eq!(opened.journal.state(), &fresh_state());
    assert_eq!(opened.journal.next_seq(), 3);
    let bytes = opened.journal.storage().contents().to_vec();
    let records = decoded(&bytes);
    assert_eq!(records.stopped, None);
    assert_eq!(records.first_seq, 1);
    let kinds: Vec<_> = records
        .records
        .iter()
        .map(|r| (r.seq, r.offset, r.record.clone()))
        .collect();
    assert_eq!(
        kinds[0],
        (1, HEADER_BYTES, Record::Checkpoint(Toy::initial()))
    );
    assert_eq!(
        kinds[1].2,
        Record::Event(ToyEvent::Repaired {
            repair: Repair::Rebuilt {
                reason: RebuildReason::Missing
            },
            at: NOW
        })
    );
    assert_reopens_cleanly(&bytes, &fresh_state(), "fresh");
}

#[test]
fn appended_events_replay_to_the_same_state_and_decode_in_order() {
    let built = build(&sample_events());
    let opened = open_bytes(built.bytes.clone(), &big_threshold());
    assert_eq!(opened.report.repair, None);
    assert_eq!(opened.journal.state(), built.states_after.last().unwrap());
    let records = decoded(&built.bytes);
    let events: Vec<ToyEvent> = records
        .records
        .iter()
        .skip(2)
        .map(|record| match &record.record {
            Record::Event(event) => event.clone(),
            Record::Checkpoint(_) => panic!("unexpected checkpoint"),
        })
        .collect();
    assert_eq!(events, sample_events());
    let offsets: Vec<u64> = records.records.iter().skip(2).map(|r| r.offset).collect();
    assert_eq!(offsets, built.record_starts);
    for pair in records.records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].offset, pair[0].offset + pair[0].frame_bytes);
    }
}

#[test]
fn a_rejected_event_writes_nothing_and_leaves_the_state_alone() {
    let mut journal = fresh(&big_threshold());
    journal
        .append(&[ToyEvent::Put { key: 1, value: 1 }], NOW)
        .unwrap();
    let before = journal.state().clone();
    journal.storage_mut().start_recording();
    let batch = [
        ToyEvent::Added(1),
        ToyEvent::Removed { key: 1 },
        ToyEvent::Removed { key: 1 },
    ];
    match journal.append(&batch, NOW) {
        Err(JournalError::EventRejected { index: 2, detail }) => {
            assert!(detail.contains("key 1"), "{detail}");
        }
        other => panic!("expected a rejection of event 2, got {other:?}"),
    }
    assert_eq!(journal.state(), &before);
    assert!(journal.storage().ops().is_empty());
    journal.append(&[ToyEvent::Added(1)], NOW).unwrap();
    assert_eq!(journal.state().counter, 1);
}

#[test]
fn empty_appends_write_nothing() {
    let mut journal = fresh(&big_threshold());
    journal.storage_mut().start_recording();
    let report = journal.append(&[], NOW).unwrap();
    assert_eq!(report.events_appended, 0);
    assert!(journal.storage().ops().is_empty());
}

#[test]
fn oversized_options_are_refused() {
    let options = JournalOptions {
        compaction_threshold_bytes: MAX_COMPACTION_THRESHOLD_BYTES + 1,
    };
    let result = ToyJournal::open(MemoryStorage::new(), &options, NOW, SEED, |_| {
        Ok::<Toy, Infallible>(Toy::initial())
    });
    assert!(matches!(
        result,
        Err(OpenError::Journal(JournalError::InvalidOptions { .. }))
    ));
}

/// Proptest settings for the journal: regressions are kept next to the test file.
pub(super) fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(64))]

    /// Random batches through the real append, without compaction: reopen gives the same state,
    /// and the decoded records are exactly the accepted events, in order.
    #[test]
    fn whole_journals_round_trip(
        batches in proptest::collection::vec(proptest::collection::vec(any_event(), 0..6), 0..25),
    ) {
        let mut journal = fresh(&big_threshold());
        let mut model = fresh_state();
        let mut accepted = Vec::new();
        for batch in &batches {
            let mut next = model.clone();
            let valid = batch.iter().all(|event| next.apply(event).is_ok());
            let bytes_before = journal.storage().contents().to_vec();
            let result = journal.append(batch, NOW);
            prop_assert_eq!(result.is_ok(), valid, "{:?}", result.err());
            if valid {
                model = next;
                accepted.extend(batch.iter().cloned());
            } else {
                prop_assert_eq!(journal.storage().contents(), &bytes_before[..]);
            }
            prop_assert_eq!(journal.state(), &model);
        }
        let bytes = journal.storage().contents().to_vec();
        let reopened = open_bytes(bytes.clone(), &big_threshold());
        prop_assert_eq!(reopened.report.repair, None);
        prop_assert_eq!(reopened.journal.state(), &model);
        prop_assert_eq!(reopened.journal.next_seq(), journal.next_seq());
        let records = decoded(&bytes);
        prop_assert_eq!(records.stopped, None);
        let events: Vec<ToyEvent> = records.records.iter().skip(2).filter_map(|r| match &r.record {
            Record::Event(event) => Some(event.clone()),
            Record::Checkpoint(_) => None,
        }).collect();
        prop_assert_eq!(events, accepted);
        prop_assert_eq!(records.records.last().map(|r| r.seq + 1), Some(journal.next_seq()));
    }

    /// The same with a tiny threshold, so compactions happen all the time: the state survives
    /// every compaction and the file stays within the documented bound.
    #[test]
    fn whole_journals_round_trip_through_compactions(
        batches in proptest::collection::vec(proptest::collection::vec(any_event(), 1..6), 1..40),
        threshold in 0..600u64,
    ) {
        let options = JournalOptions { compaction_threshold_bytes: threshold };
        let mut journal = fresh(&options);
        let mut model = fresh_state();
        let mut largest_append = 0u64;
        let mut largest_checkpoint = checkpoint_frame_bytes(&model);
        for batch in &batches {
            let mut next = model.clone();
            if !batch.iter().all(|event| next.apply(event).is_ok()) {
                continue;
            }
            largest_append = largest_append.max(frames_bytes(batch));
            largest_checkpoint = largest_checkpoint.max(checkpoint_frame_bytes(&next));
            let report = journal.append(batch, NOW).unwrap();
            prop_assert!(!matches!(report.compaction, CompactionOutcome::Failed(_)));
            model = next;
            prop_assert_eq!(journal.state(), &model);
            prop_assert_eq!(journal.storage().contents().len() as u64, journal.file_bytes());
            let bound = file_bytes_bound(threshold, largest_append, largest_checkpoint);
            prop_assert!(journal.file_bytes() <= bound,
                "file {} > bound", journal.file_bytes());
        }
        assert_reopens_cleanly(journal.storage().contents(), &model, "after compactions");
    }
}

/// Size of the frame of a checkpoint of `state`.
fn checkpoint_frame_bytes(state: &Toy) -> u64 {
    writer::encode_frame::<Toy>(1, 1, PayloadRef::Checkpoint(state))
        .unwrap()
        .len() as u64
}

/// Size of the frame of one append of `events`.
fn frames_bytes(events: &[ToyEvent]) -> u64 {
    writer::encode_frame::<Toy>(1, 1, PayloadRef::Events(events))
        .unwrap()
        .len() as u64
}

// ---------------------------------------------------------------------------------------------
// Torn tails

#[derive(Debug, Clone, Copy)]
enum TailDamage {
    Truncated,
    Zeroed,
    Garbage,
}

/// For every byte offset inside the last three records, and for the three ways a crash can
/// leave a tail (short file, zeros, garbage): open gives the state after the last complete
/// record plus a recorded TailCut, the file is cut there, and reopening is clean.
#[test]
fn a_torn_tail_at_every_byte_offset_is_cut_and_recorded() {
    let built = build(&sample_events());
    let end = built.bytes.len() as u64;
    let count = built.record_starts.len();
    let first_cut = built.record_starts[count - 3];
    let mut checked = 0;
    for cut in first_cut..end {
        // The record the cut falls in, and the state before it.
        let record = built
            .record_starts
            .iter()
            .rposition(|&start| start <= cut)
            .unwrap();
        let record_start = built.record_starts[record];
        let state_before = &built.states_after[record - 1];
        for damage in [
            TailDamage::Truncated,
            TailDamage::Zeroed,
            TailDamage::Garbage,
        ] {
            let mut bytes = built.bytes.clone();
            match damage {
                TailDamage::Truncated => bytes.truncate(cut as usize),
                TailDamage::Zeroed => bytes[cut as usize..].fill(0),
                TailDamage::Garbage => {
                    let noise = garbage(bytes.len() - cut as usize, cut + 1);
                    bytes[cut as usize..].copy_from_slice(&noise);
                }
            }
            let context = format!("cut at {cut} ({damage:?})");
            let opened = open_bytes(bytes.clone(), &big_threshold());
            assert!(
                opened.rebuilds.is_empty(),
                "{context}: rebuilt {:?}",
                opened.rebuilds
            );
            if cut == record_start && matches!(damage, TailDamage::Truncated) {
                // A cut exactly at a record boundary is a shorter, valid journal.
                assert_eq!(opened.report.repair, None, "{context}");
                assert_eq!(opened.journal.state(), state_before, "{context}");
                continue;
            }
            let repair = Repair::TailCut {
                offset: record_start,
                discarded_bytes: bytes.len() as u64 - record_start,
            };
            assert_eq!(opened.report.repair, Some(repair.clone()), "{context}");
            let expected = with_repair(state_before, repair);
            assert_eq!(opened.journal.state(), &expected, "{context}");
            let repaired = opened.journal.storage().contents();
            assert_eq!(
                &repaired[..record_start as usize],
                &built.bytes[..record_start as usize]
            );
            assert_eq!(
                repaired.len() as u64,
                record_start
                    + frames_bytes(&[expected
                        .repairs
                        .last()
                        .map(|r| Toy::repair_event(r, NOW))
                        .unwrap()])
            );
            assert_reopens_cleanly(repaired, &expected, &context);
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn inspect_reports_a_torn_tail_without_writing() {
    let built = build(&sample_events());
    let cut = built.bytes.len() - 3;
    let storage = MemoryStorage::with_contents(built.bytes[..cut].to_vec());
    let inspection = inspect::<Toy, _>(&storage).unwrap();
    let last_start = *built.record_starts.last().unwrap();
    assert_eq!(
        inspection.pending_repair,
        Some(Repair::TailCut {
            offset: last_start,
            discarded_bytes: cut as u64 - last_start
        })
    );
    assert_eq!(
        inspection.state.as_ref(),
        Some(&built.states_after[built.states_after.len() - 2])
    );
    assert!(storage.ops().is_empty());
    let records = decode_records::<Toy, _>(&storage).unwrap();
    let stop = records.stopped.unwrap();
    assert_eq!((stop.offset, stop.kind), (last_start, StopKind::TornTail));
}

// ---------------------------------------------------------------------------------------------
// Damage

/// Opens damaged bytes and checks the rebuild: called once with `expected_reason`, recorded,
/// the forensic copy handed over, the new journal clean on reopen.
fn assert_rebuilt(bytes: Vec<u8>, expected_reason: &RebuildReason, context: &str) {
    let opened = open_bytes(bytes.clone(), &big_threshold());
    assert_eq!(opened.rebuilds, vec![expected_reason.clone()], "{context}");
    let repair = Repair::Rebuilt {
        reason: expected_reason.clone(),
    };
    assert_eq!(opened.report.repair.as_ref(), Some(&repair), "{context}");
    let expected = with_repair(&rebuilt_toy(), repair.clone());
    assert_eq!(opened.journal.state(), &expected, "{context}");
    let copy = (!bytes.is_empty()).then_some(bytes.clone());
    assert_eq!(opened.report.damaged_bytes, copy, "{context}");
    assert_eq!(opened.damaged_bytes_seen, copy, "{context}");
    assert_eq!(
        opened.report.file_bytes_before,
        bytes.len() as u64,
        "{context}"
    );
    let repaired = opened.journal.storage().contents().to_vec();
    let records = decoded(&repaired);
    assert_eq!(records.records.len(), 2, "{context}");
    assert_eq!(
        records.records[0].record,
        Record::Checkpoint(rebuilt_toy()),
        "{context}"
    );
    assert_eq!(
        records.records[1].record,
        Record::Event(Toy::repair_event(&repair, NOW)),
        "{context}"
    );
    if let Some(previous) = bytes
        .get(..HEADER_BYTES as usize)
        .and_then(|h| format::parse_prefix(h).ok())
    {
        assert_ne!(records.journal_id, previous, "{context}: identity reused");
    }
    assert_reopens_cleanly(&repaired, &expected, context);
}

#[test]
fn a_flipped_byte_anywhere_in_an_earlier_record_is_damage_and_rebuilds() {
    let built = build(&sample_events());
    let record = 2; // third appended record: more follow it.
    let start = built.record_starts[record];
    let end = built.record_starts[record + 1];
    let seq = decoded(&built.bytes)
        .records
        .iter()
        .find(|r| r.offset == start)
        .unwrap()
        .seq;
    for offset in start..end {
        let mut bytes = built.bytes.clone();
        bytes[offset as usize] ^= 0x20;
        let opened = open_bytes(bytes.clone(), &big_threshold());
        let context = format!("flip at {offset}");
        match &opened.rebuilds[..] {
            [
                RebuildReason::Damaged {
                    offset: at,
                    expected_seq,
                    detail,
                },
            ] => {
                assert_eq!((*at, *expected_seq), (start, seq), "{context}: {detail}");
                assert!(detail.contains("follows"), "{context}: {detail}");
            }
            other => panic!("{context}: expected Damaged, got {other:?}"),
        }
        let reason = opened.rebuilds[0].clone();
        assert_rebuilt(bytes, &reason, &context);
    }
}

#[test]
fn damage_to_the_first_checkpoint_rebuilds_even_without_later_records() {
    let mut journal = fresh(&big_threshold());
    journal.compact_now().unwrap();
    let mut bytes = journal.storage().contents().to_vec();
    bytes[HEADER_BYTES as usize + 20] ^= 1;
    let reason = open_bytes(bytes.clone(), &big_threshold())
        .rebuilds
        .pop()
        .unwrap();
    assert!(
        matches!(
            reason,
            RebuildReason::Damaged {
                offset: HEADER_BYTES,
                ..
            }
        ),
        "{reason:?}"
    );
    assert_rebuilt(bytes, &reason, "first checkpoint");
}

#[test]
fn header_damage_rebuilds_with_a_specific_reason() {
    let built = build(&sample_events());
    let mut bad_magic = built.bytes.clone();
    bad_magic[0] = b'X';
    assert_rebuilt(bad_magic, &RebuildReason::BadMagic, "magic");

    let mut future = built.bytes.clone();
    future[8] = 2;
    assert_rebuilt(
        future,
        &RebuildReason::UnknownVersion { found: 2 },
        "version 2",
    );

    let mut blank = built.bytes.clone();
    blank[..HEADER_BYTES as usize].fill(0);
    assert_rebuilt(blank, &RebuildReason::BlankHeader, "blank header");

    let mut both_slots = built.bytes.clone();
    for slot in SLOT_OFFSETS {
        both_slots[slot as usize + 9] ^= 0xFF;
    }
    let reason = open_bytes(both_slots.clone(), &big_threshold())
        .rebuilds
        .pop()
        .unwrap();
    assert!(
        matches!(&reason, RebuildReason::BadHeader { detail } if detail.contains("commit slot")),
        "{reason:?}"
    );
    assert_rebuilt(both_slots, &reason, "both slots");

    let mut prefix_checksum = built.bytes.clone();
    prefix_checksum[30] ^= 1;
    let reason = open_bytes(prefix_checksum.clone(), &big_threshold())
        .rebuilds
        .pop()
        .unwrap();
    assert!(
        matches!(&reason, RebuildReason::BadHeader { detail } if detail.contains("checksum")),
        "{reason:?}"
    );
    assert_rebuilt(prefix_checksum, &reason, "prefix checksum");

    let short = built.bytes[..100].to_vec();
    let reason = open_bytes(short.clone(), &big_threshold())
        .rebuilds
        .pop()
        .unwrap();
    assert!(
        matches!(reason, RebuildReason::BadHeader { .. }),
        "{reason:?}"
    );
    assert_rebuilt(short, &reason, "short header");
}

#[test]
fn bytes_outside_the_checksummed_fields_of_the_header_do_not_matter() {
    let built = build(&sample_events());
    let final_state = built.states_after.last().unwrap();
    for offset in [64usize, 300, 511, 600, 1100, 4095] {
        let mut bytes = built.bytes.clone();
        bytes[offset] ^= 0xFF;
        let opened = open_bytes(bytes, &big_threshold());
        assert_eq!(opened.report.repair, None, "offset {offset}");
        assert_eq!(opened.journal.state(), final_state, "offset {offset}");
    }
}

#[test]
fn garbage_files_are_rebuilt_as_not_a_journal() {
    for (length, seed) in [(1usize, 1u64), (7, 2), (1000, 3), (4096, 4), (50_000, 5)] {
        let mut bytes = garbage(length, seed);
        bytes[0] = b'#';
        assert_rebuilt(
            bytes,
            &RebuildReason::BadMagic,
            &format!("{length} bytes of garbage"),
        );
    }
}

#[test]
fn a_zero_length_file_counts_as_missing() {
    assert_rebuilt(Vec::new(), &RebuildReason::Missing, "empty");
}

#[test]
fn a_rejected_transition_is_damage_even_as_the_last_record() {
    let built = build(&sample_events());
    let records = decoded(&built.bytes);
    let next_seq = records.records.last().unwrap().seq + 1;
    let mut bytes = built.bytes.clone();
    let offset = bytes.len() as u64;
    let bad = writer::encode_frame::<Toy>(
        records.journal_id,
        next_seq,
        PayloadRef::Events(&[ToyEvent::Removed { key: 99 }]),
    )
    .unwrap();
    bytes.extend_from_slice(&bad);
    let reason = RebuildReason::RejectedTransition {
        seq: next_seq,
        offset,
        detail: "key 99 is not present".to_string(),
    };
    assert_rebuilt(bytes.clone(), &reason, "rejected last record");

    let inspection = inspect::<Toy, _>(&MemoryStorage::with_contents(bytes)).unwrap();
    assert_eq!(inspection.state, None);
    assert_eq!(inspection.pending_repair, Some(Repair::Rebuilt { reason }));
}

#[test]
fn an_empty_log_is_damage_not_an_empty_state() {
    let built = build(&sample_events());
    let bytes = built.bytes[..HEADER_BYTES as usize].to_vec();
    let reason = RebuildReason::Damaged {
        offset: HEADER_BYTES,
        expected_seq: 1,
        detail: "the log is empty: its first record, the checkpoint, is missing".to_string(),
    };
    assert_rebuilt(bytes.clone(), &reason, "empty log");
    let stop = decode_records::<Toy, _>(&MemoryStorage::with_contents(bytes))
        .unwrap()
        .stopped
        .unwrap();
    assert_eq!((stop.offset, stop.kind), (HEADER_BYTES, StopKind::Damage));
}

#[test]
fn a_log_that_does_not_begin_with_a_checkpoint_is_damage() {
    let journal_id = 42;
    let slot = format::CommitSlot {
        generation: 1,
        log_start: HEADER_BYTES,
        first_seq: 1,
        journal_id,
    };
    let mut bytes = format::encode_header(journal_id, [Some(slot), None]);
    bytes.extend(
        writer::encode_frame::<Toy>(journal_id, 1, PayloadRef::Events(&[ToyEvent::Added(1)]))
            .unwrap(),
    );
    let reason = open_bytes(bytes.clone(), &big_threshold())
        .rebuilds
        .pop()
        .unwrap();
    assert!(
        matches!(&reason, RebuildReason::Damaged { detail, .. } if detail.contains("checkpoint")),
        "{reason:?}"
    );
    assert_rebuilt(bytes, &reason, "no checkpoint");
}

#[test]
fn a_damaged_newest_slot_after_compaction_is_damage_not_an_older_state() {
    let mut journal = fresh(&big_threshold());
    for round in 0..20 {
        journal.append(&[ToyEvent::Added(round)], NOW).unwrap();
    }
    journal.compact_now().unwrap();
    let mut bytes = journal.storage().contents().to_vec();
    let newest = SLOT_OFFSETS[journal.position.active_slot] as usize;
    bytes[newest] ^= 1;
    // The older slot points at the log of before the compaction, beyond the end of the file.
    let reason = open_bytes(bytes.clone(), &big_threshold())
        .rebuilds
        .pop()
        .unwrap();
    assert!(
        matches!(&reason, RebuildReason::Damaged { detail, .. } if detail.contains("beyond the")),
        "{reason:?}"
    );
    assert_rebuilt(bytes, &reason, "newest slot");
}

/// Storage that claims to be larger than any journal; reads return zeros.
struct HugeFile;

impl Storage for HugeFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(MAX_JOURNAL_FILE_BYTES + 1)
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> std::io::Result<usize> {
        buf.fill(0);
        Ok(buf.len())
    }
    fn write_at(&mut self, _data: &[u8], _offset: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    fn set_len(&mut self, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_file_larger_than_any_journal_is_rebuilt_with_a_bounded_copy() {
    let opened = open_storage(HugeFile, &big_threshold(), rebuilt_toy());
    assert_eq!(
        opened.rebuilds,
        vec![RebuildReason::TooLarge {
            file_bytes: MAX_JOURNAL_FILE_BYTES + 1,
            limit_bytes: MAX_JOURNAL_FILE_BYTES
        }]
    );
    assert_eq!(
        opened.report.damaged_bytes.map(|copy| copy.len() as u64),
        Some(MAX_DAMAGED_COPY_BYTES)
    );
}

#[test]
fn a_failed_rebuild_writes_nothing() {
    let mut bytes = build(&sample_events()).bytes;
    bytes[0] = 0;
    let storage = MemoryStorage::with_contents(bytes.clone());
    let result = ToyJournal::open(storage, &big_threshold(), NOW, SEED, |_| {
        Err::<Toy, _>(std::io::Error::other("tree scan failed"))
    });
    match result {
        Err(OpenError::RebuildFailed {
            reason: RebuildReason::BadMagic,
            source,
        }) => {
            assert_eq!(source.to_string(), "tree scan failed");
        }
        other => panic!("expected RebuildFailed, got {other:?}"),
    }
}

#[test]
fn journal_identities_are_never_zero_or_reused() {
    assert_eq!(writer::choose_journal_id(0, None), 1);
    assert_eq!(writer::choose_journal_id(5, Some(5)), 6);
    assert_eq!(writer::choose_journal_id(u64::MAX, Some(u64::MAX)), 1);
    assert_eq!(writer::choose_journal_id(5, Some(4)), 5);
}

#[test]
fn messages_read_as_one_line() {
    let reasons = [
        RebuildReason::Missing,
        RebuildReason::BlankHeader,
        RebuildReason::BadMagic,
        RebuildReason::UnknownVersion { found: 9 },
        RebuildReason::BadHeader {
            detail: "neither commit slot is valid".into(),
        },
        RebuildReason::TooLarge {
            file_bytes: 1,
            limit_bytes: 2,
        },
        RebuildReason::Damaged {
            offset: 4200,
            expected_seq: 7,
            detail: "checksum mismatch".into(),
        },
        RebuildReason::RejectedTransition {
            seq: 7,
            offset: 4200,
            detail: "no".into(),
        },
    ];
    for reason in reasons {
        let line = Repair::Rebuilt { reason }.to_string();
        assert!(
            !line.contains('\n') && line.starts_with("rebuilt the state"),
            "{line}"
        );
    }
    let cut = Repair::TailCut {
        offset: 5000,
        discarded_bytes: 12,
    }
    .to_string();
    assert!(
        cut.contains("offset 5000") && cut.contains("12 bytes"),
        "{cut}"
    );
}

// ---------------------------------------------------------------------------------------------
// Crash images

/// Checks every crash image of the operations recorded in `storage`: reopening never rebuilds
/// (unless `rebuild_allowed`), and gives `before` (only while the first `durable_after_ops`
/// operations are not all issued) or `after`, each possibly plus a recorded TailCut. Every
/// reopened image then reopens cleanly. Returns how many images were checked.
fn check_crash_images(
    storage: &MemoryStorage,
    options: &JournalOptions,
    before: &Toy,
    after: &Toy,
    durable_after_ops: usize,
) -> usize {
    let images = storage.all_crash_images();
    for image in &images {
        let opened = open_bytes(image.bytes.clone(), options);
        let context = &image.description;
        assert!(
            opened.rebuilds.is_empty(),
            "{context}: rebuilt {:?}",
            opened.rebuilds
        );
        let mut state = opened.journal.state().clone();
        match &opened.report.repair {
            None => {}
            Some(Repair::TailCut { .. }) => {
                assert!(
                    matches!(state.repairs.pop(), Some(Repair::TailCut { .. })),
                    "{context}"
                );
            }
            Some(other) => panic!("{context}: unexpected repair {other:?}"),
        }
        if image.after_ops >= durable_after_ops {
            assert_eq!(&state, after, "{context}: an acknowledged append was lost");
        } else {
            assert!(
                &state == before || &state == after,
                "{context}: state {state:?}"
            );
        }
        let reopened_state = opened.journal.state().clone();
        assert_reopens_cleanly(
            opened.journal.storage().contents(),
            &reopened_state,
            context,
        );
    }
    images.len()
}

#[test]
fn a_crash_during_an_append_gives_the_state_before_or_after_it() {
    let started = Instant::now();
    let mut journal = fresh(&big_threshold());
    journal.append(&sample_events()[..3], NOW).unwrap();
    let before = journal.state().clone();
    journal.storage_mut().start_recording();
    journal.append(&sample_events()[3..], NOW).unwrap();
    let after = journal.state().clone();
    assert_eq!(journal.storage().ops().len(), 2, "one write, one fsync");
    let checked = check_crash_images(journal.storage(), &big_threshold(), &before, &after, 2);
    eprintln!("append: {checked} crash images in {:?}", started.elapsed());
}

/// Builds a journal right below a small threshold, then records the append that crosses it and
/// the compaction that follows.
fn journal_with_recorded_compaction(options: &JournalOptions) -> (ToyJournal, Toy, Toy) {
    let mut journal = fresh(options);
    let mut key = 0;
    while !journal.compaction_due() {
        let event = ToyEvent::Put {
            key,
            value: u64::from(key) * 1000,
        };
        let mut probe = journal.state().clone();
        probe.apply(&event).unwrap();
        // Stop right before the append that makes a compaction due.
        let beyond = journal.log_bytes() + frames_bytes(std::slice::from_ref(&event))
            - journal.position.first_frame_bytes;
        if beyond > options.compaction_threshold_bytes {
            break;
        }
        journal.append(&[event], NOW).unwrap();
        key += 1;
    }
    let before = journal.state().clone();
    journal.storage_mut().start_recording();
    let report = journal
        .append(
            &[ToyEvent::Added(1), ToyEvent::Put { key: 1, value: 2 }],
            NOW,
        )
        .unwrap();
    assert!(
        matches!(report.compaction, CompactionOutcome::Done { .. }),
        "{:?}",
        report.compaction
    );
    let after = journal.state().clone();
    (journal, before, after)
}

#[test]
fn a_crash_at_every_step_of_compaction_never_loses_or_invents_state() {
    let started = Instant::now();
    let options = JournalOptions {
        compaction_threshold_bytes: 600,
    };
    let (journal, before, after) = journal_with_recorded_compaction(&options);
    let ops = journal.storage().ops();
    // Append (write, fsync), then five compaction steps of one write or truncation and an fsync.
    assert_eq!(ops.len(), 2 + 5 * 2, "{ops:?}");
    assert_eq!(journal.log_start(), HEADER_BYTES);
    assert_eq!(
        journal.file_bytes(),
        HEADER_BYTES + checkpoint_frame_bytes(&after)
    );
    let checked = check_crash_images(journal.storage(), &options, &before, &after, 2);
    eprintln!(
        "compaction: {checked} crash images in {:?}",
        started.elapsed()
    );
}

/// A crash right after step 2 leaves the log starting at the checkpoint it appended; the next
/// writer's open finishes the job, and a crash during that is as safe.
#[test]
fn an_interrupted_compaction_is_finished_by_the_next_open_crash_safely() {
    let options = JournalOptions {
        compaction_threshold_bytes: 600,
    };
    let (journal, _, after) = journal_with_recorded_compaction(&options);
    let after_step_2 = journal
        .storage()
        .crash_images(2 + 2 * 2)
        .into_iter()
        .next()
        .unwrap();
    let inspection =
        inspect::<Toy, _>(&MemoryStorage::with_contents(after_step_2.bytes.clone())).unwrap();
    assert_ne!(inspection.log_start, Some(HEADER_BYTES));
    assert_eq!(inspection.state.as_ref(), Some(&after));

    let mut storage = MemoryStorage::with_contents(after_step_2.bytes);
    storage.start_recording();
    let opened = open_storage(storage, &options, rebuilt_toy());
    assert!(
        matches!(opened.report.compaction, CompactionOutcome::Done { .. }),
        "{:?}",
        opened.report.compaction
    );
    assert_eq!(opened.journal.log_start(), HEADER_BYTES);
    assert_eq!(opened.journal.state(), &after);
    check_crash_images(opened.journal.storage(), &options, &after, &after, 0);
}

#[test]
fn stale_bytes_after_a_compaction_are_a_torn_tail_not_damage() {
    let options = JournalOptions {
        compaction_threshold_bytes: 600,
    };
    let (journal, _, after) = journal_with_recorded_compaction(&options);
    // After step 4, before the truncation of step 5.
    let image = journal
        .storage()
        .crash_images(2 + 4 * 2)
        .into_iter()
        .next()
        .unwrap();
    let opened = open_bytes(image.bytes.clone(), &options);
    assert!(opened.rebuilds.is_empty());
    let checkpoint_end = HEADER_BYTES + checkpoint_frame_bytes(&after);
    match opened.report.repair {
        Some(Repair::TailCut {
            offset,
            discarded_bytes,
        }) => {
            assert_eq!(offset, checkpoint_end);
            assert_eq!(discarded_bytes, image.bytes.len() as u64 - checkpoint_end);
        }
        other => panic!("expected a tail cut, got {other:?}"),
    }
    assert_eq!(
        opened.journal.state(),
        &with_repair(&after, opened.report.repair.clone().unwrap())
    );
}

#[test]
fn a_crash_while_cutting_a_torn_tail_is_safe() {
    let built = build(&sample_events());
    let cut = built.bytes.len() - 5;
    let before = built.states_after[built.states_after.len() - 2].clone();
    let mut storage = MemoryStorage::with_contents(built.bytes[..cut].to_vec());
    storage.start_recording();
    let opened = open_storage(storage, &big_threshold(), rebuilt_toy());
    assert!(matches!(opened.report.repair, Some(Repair::TailCut { .. })));
    // Before the fsync: the torn tail again, or the repair record; both are `before` + TailCut
    // once reopened (a TailCut of the torn bytes after a durable repair record adds a second).
    for image in opened.journal.storage().all_crash_images() {
        let reopened = open_bytes(image.bytes.clone(), &big_threshold());
        assert!(reopened.rebuilds.is_empty(), "{}", image.description);
        let mut state = reopened.journal.state().clone();
        while matches!(state.repairs.last(), Some(Repair::TailCut { .. })) {
            state.repairs.pop();
        }
        assert_eq!(state, before, "{}", image.description);
        assert!(reopened.journal.state().repairs.len() <= before.repairs.len() + 2);
    }
}

/// A crash at any moment of a rebuild (or of the creation of a missing file) means the next
/// open rebuilds again, or finds the completed new journal; never anything in between.
#[test]
fn a_crash_during_a_rebuild_rebuilds_again_or_finds_the_new_journal() {
    let started = Instant::now();
    let built = build(&sample_events());
    let mut damaged = built.bytes.clone();
    damaged[built.record_starts[1] as usize + 17] ^= 4;
    let mut checked = 0;
    for (initial, rebuilt) in [(damaged, rebuilt_toy()), (Vec::new(), Toy::initial())] {
        let mut storage = MemoryStorage::with_contents(initial);
        storage.start_recording();
        let opened = open_storage(storage, &big_threshold(), rebuilt.clone());
        let reason = opened.rebuilds[0].clone();
        let complete = with_repair(&rebuilt, Repair::Rebuilt { reason });
        assert_eq!(opened.journal.state(), &complete);
        assert_eq!(
            opened.journal.storage().ops().len(),
            7,
            "three steps, one fsync each"
        );
        for image in opened.journal.storage().all_crash_images() {
            let reopened = open_storage(
                MemoryStorage::with_contents(image.bytes.clone()),
                &big_threshold(),
                rebuilt.clone(),
            );
            let context = &image.description;
            if reopened.rebuilds.is_empty() {
                assert_eq!(reopened.report.repair, None, "{context}");
                assert_eq!(reopened.journal.state(), &complete, "{context}");
            } else {
                let reason = reopened.rebuilds[0].clone();
                assert_eq!(
                    reopened.journal.state(),
                    &with_repair(&rebuilt, Repair::Rebuilt { reason }),
                    "{context}"
                );
            }
            let state = reopened.journal.state().clone();
            assert_reopens_cleanly(reopened.journal.storage().contents(), &state, context);
            checked += 1;
        }
    }
    eprintln!("rebuild: {checked} crash images in {:?}", started.elapsed());
}

proptest! {
    #![proptest_config(proptest_config(64))]

    /// Random histories of appends with a tiny threshold (so compactions interleave), crashed
    /// at every operation with every crash image: reopening gives the state of the last
    /// acknowledged append, or of the one in flight, and never rebuilds.
    #[test]
    fn a_crash_anywhere_in_a_history_keeps_every_acknowledged_append(
        batches in proptest::collection::vec(proptest::collection::vec(any_event(), 1..4), 1..20),
        threshold in 0..300u64,
    ) {
        let options = JournalOptions { compaction_threshold_bytes: threshold };
        let mut journal = fresh(&options);
        journal.storage_mut().start_recording();
        // (operations issued when the append was acknowledged, state after it)
        let mut acknowledged = vec![(0usize, journal.state().clone())];
        for batch in &batches {
            let mut next = journal.state().clone();
            if !batch.iter().all(|event| next.apply(event).is_ok()) {
                continue;
            }
            let start = journal.storage().ops().len();
            journal.append(batch, NOW).unwrap();
            // The append's own write and fsync come first; a compaction may follow.
            acknowledged.push((start + 2, journal.state().clone()));
        }
        let images = journal.storage().all_crash_images();
        for image in images {
            let opened = open_bytes(image.bytes.clone(), &options);
            prop_assert!(opened.rebuilds.is_empty(), "{}: rebuilt", image.description);
            let mut state = opened.journal.state().clone();
            if matches!(opened.report.repair, Some(Repair::TailCut { .. })) {
                state.repairs.pop();
            }
            let last = acknowledged.iter().rposition(|(ops, _)| *ops <= image.after_ops).unwrap();
            let in_flight = acknowledged.get(last + 1).map(|(_, state)| state);
            prop_assert!(
                state == acknowledged[last].1 || Some(&state) == in_flight,
                "{}: state {:?}",
                image.description,
                state
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Failure injection

#[test]
fn a_failed_append_is_not_recorded_and_the_journal_recovers() {
    let mut journal = fresh(&big_threshold());
    journal.append(&[ToyEvent::Added(1)], NOW).unwrap();
    let before = journal.state().clone();
    // Fail only the write, then only the fsync, of the next append: the write is undone.
    for failing_op in [0, 1] {
        let first = journal.storage().ops_issued();
        journal
            .storage_mut()
            .fail_ops(Some(first + failing_op..first + failing_op + 1));
        let result = journal.append(&[ToyEvent::Added(100)], NOW);
        assert!(matches!(result, Err(JournalError::Io { .. })), "{result:?}");
        journal.storage_mut().fail_ops(None);
        assert_eq!(journal.state(), &before);
        let reopened = open_bytes(journal.storage().contents().to_vec(), &big_threshold());
        assert_eq!(reopened.journal.state(), &before, "failing op {failing_op}");
    }
    let report = journal.append(&[ToyEvent::Added(2)], NOW).unwrap();
    assert!(report.refresh.reloaded);
    assert_eq!(journal.state().counter, 3);
    assert_reopens_cleanly(
        journal.storage().contents(),
        journal.state(),
        "after failures",
    );

    // When the fsync and everything after it fails, the bytes may stay (as after fsyncgate):
    // the file then says before or after, and the journal reloads whichever it is.
    let before = journal.state().clone();
    let first = journal.storage().ops_issued();
    journal.storage_mut().fail_ops(Some(first + 1..usize::MAX));
    assert!(journal.append(&[ToyEvent::Added(100)], NOW).is_err());
    journal.storage_mut().fail_ops(None);
    let on_disk = open_bytes(journal.storage().contents().to_vec(), &big_threshold())
        .journal
        .state()
        .clone();
    assert!(
        on_disk == before || on_disk.counter == before.counter + 100,
        "{on_disk:?}"
    );
    journal.refresh(NOW).unwrap();
    assert_eq!(journal.state(), &on_disk);
}

#[test]
fn a_compaction_failing_at_any_step_keeps_the_append_and_a_valid_file() {
    let options = JournalOptions {
        compaction_threshold_bytes: 600,
    };
    let (reference, _, after) = journal_with_recorded_compaction(&options);
    let compaction_ops = reference.storage().ops().len() - 2;
    for failing in 0..compaction_ops {
        // Rebuild the same journal, then fail one compaction operation.
        let base = reference
            .storage()
            .crash_images(0)
            .into_iter()
            .next()
            .unwrap()
            .bytes;
        let mut journal = open_bytes(base, &options).journal;
        let first = journal.storage().ops_issued();
        journal
            .storage_mut()
            .fail_ops(Some(first + 2 + failing..usize::MAX));
        let report = journal
            .append(
                &[ToyEvent::Added(1), ToyEvent::Put { key: 1, value: 2 }],
                NOW,
            )
            .unwrap();
        assert!(
            matches!(report.compaction, CompactionOutcome::Failed(_)),
            "op {failing}: {:?}",
            report.compaction
        );
        assert_eq!(journal.state(), &after);
        journal.storage_mut().fail_ops(None);
        let reopened = open_bytes(journal.storage().contents().to_vec(), &options);
        assert!(reopened.rebuilds.is_empty(), "op {failing}");
        let mut state = reopened.journal.state().clone();
        if matches!(reopened.report.repair, Some(Repair::TailCut { .. })) {
            state.repairs.pop();
        }
        assert_eq!(state, after, "op {failing}");
        // The failed journal reloads and carries on.
        journal.append(&[ToyEvent::Added(1)], NOW).unwrap();
        assert_eq!(journal.state().counter, after.counter + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Any damage at all: never a panic, never a state that is not a prefix or a rebuild

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn any_corruption_gives_a_prefix_state_or_a_rebuild(
        events in proptest::collection::vec(any_event(), 1..20),
        compact_after in proptest::option::of(0..20usize),
        mutation in 0..4u8,
        position in any::<proptest::sample::Index>(),
        length in 1..64usize,
        noise_seed in any::<u64>(),
    ) {
        let mut journal = fresh(&big_threshold());
        // A cut right after the first checkpoint leaves a valid journal without the record of
        // its creation: the initial state is a prefix state too.
        let mut prefix_states = vec![Toy::initial(), journal.state().clone()];
        for (index, event) in events.iter().enumerate() {
            if journal.append(std::slice::from_ref(event), NOW).is_ok() {
                prefix_states.push(journal.state().clone());
            }
            if compact_after == Some(index) {
                journal.compact_now().unwrap();
            }
        }
        let original = journal.storage().contents().to_vec();
        let mut bytes = original.clone();
        let at = position.index(bytes.len());
        let end = (at + length).min(bytes.len());
        match mutation {
            0 => bytes.truncate(at),
            1 => bytes[at] ^= 1 << (noise_seed % 8),
            2 => bytes[at..end].copy_from_slice(&garbage(end - at, noise_seed)),
            _ => bytes[at..end].fill(0),
        }
        let opened = open_bytes(bytes.clone(), &big_threshold());
        let mut state = opened.journal.state().clone();
        match &opened.report.repair {
            None => prop_assert!(prefix_states.contains(&state), "state {:?}", state),
            Some(Repair::TailCut { offset, .. }) => {
                let boundaries: Vec<u64> =
                    decoded(&original).records.iter().map(|r| r.offset + r.frame_bytes).collect();
                prop_assert!(boundaries.contains(offset), "cut at {} not at a record end", offset);
                state.repairs.pop();
                prop_assert!(prefix_states.contains(&state), "state {:?}", state);
            }
            Some(Repair::Rebuilt { reason }) => {
                prop_assert_eq!(&opened.rebuilds, &vec![reason.clone()]);
                let repair = Repair::Rebuilt { reason: reason.clone() };
                let rebuilt = with_repair(&rebuilt_toy(), repair);
                prop_assert_eq!(&state, &rebuilt);
            }
        }
        let final_state = opened.journal.state().clone();
        assert_reopens_cleanly(opened.journal.storage().contents(), &final_state, "corrupted");
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_always_give_a_usable_journal(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..9000),
        valid_header in any::<bool>(),
    ) {
        if valid_header && bytes.len() >= HEADER_BYTES as usize {
            let slot = format::CommitSlot {
                generation: 1,
                log_start: HEADER_BYTES,
                first_seq: 1,
                journal_id: 3,
            };
            let header = format::encode_header(3, [Some(slot), None]);
            bytes[..HEADER_BYTES as usize].copy_from_slice(&header);
        }
        let storage = MemoryStorage::with_contents(bytes.clone());
        let _ = inspect::<Toy, _>(&storage);
        let _ = decode_records::<Toy, _>(&storage);
        let opened = open_bytes(bytes, &big_threshold());
        let state = opened.journal.state().clone();
        assert_reopens_cleanly(opened.journal.storage().contents(), &state, "arbitrary bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// Size bound and speed

/// Appends `batches` and checks the documented size bound after every append.
fn append_checking_bound(
    journal: &mut ToyJournal,
    batches: impl Iterator<Item = Vec<ToyEvent>>,
) -> u64 {
    let threshold = journal.options().compaction_threshold_bytes;
    let mut largest_append = 0;
    let mut largest_checkpoint = checkpoint_frame_bytes(journal.state());
    let mut compactions = 0;
    for batch in batches {
        largest_append = largest_append.max(frames_bytes(&batch));
        let report = journal.append(&batch, NOW).unwrap();
        largest_checkpoint = largest_checkpoint.max(checkpoint_frame_bytes(journal.state()));
        match report.compaction {
            CompactionOutcome::Done { .. } => compactions += 1,
            CompactionOutcome::NotDue
            | CompactionOutcome::Skipped(CompactionSkipped::CheckpointDoesNotFit { .. }) => {}
            other => panic!("compaction {other:?}"),
        }
        let bound = file_bytes_bound(threshold, largest_append, largest_checkpoint);
        assert!(
            journal.file_bytes() <= bound,
            "file {} > bound {bound}",
            journal.file_bytes()
        );
        assert_eq!(
            journal.storage().contents().len() as u64,
            journal.file_bytes()
        );
    }
    compactions
}

fn small_event(index: u64) -> ToyEvent {
    if index % 3 == 0 {
        ToyEvent::Put {
            key: (index % 64) as u32,
            value: index,
        }
    } else {
        ToyEvent::Added(1)
    }
}

#[test]
fn a_million_events_stay_within_the_size_bound_and_reopen_fast() {
    let started = Instant::now();
    let mut journal = open_storage(
        MemoryStorage::unrecorded(Vec::new()),
        &JournalOptions::default(),
        Toy::initial(),
    )
    .journal;
    let batches = (0..1000u64).map(|batch| {
        (0..1000u64)
            .map(|i| small_event(batch * 1000 + i))
            .collect()
    });
    let compactions = append_checking_bound(&mut journal, batches);
    assert!(compactions >= 2, "only {compactions} compactions");
    let appended = started.elapsed();
    let bytes = journal.storage().contents().to_vec();
    let reopen_started = Instant::now();
    let reopened = open_bytes(bytes.clone(), &JournalOptions::default());
    let reopen = reopen_started.elapsed();
    assert_eq!(reopened.report.repair, None);
    assert_eq!(reopened.journal.state(), journal.state());
    assert_eq!(journal.state().counter, 1_000_000 - 333_334);
    eprintln!(
        "1,000,000 events in 1000 appends: {appended:?}, {compactions} compactions, file {} bytes, \
         reopen {reopen:?} ({} records)",
        bytes.len(),
        reopened.report.records_replayed
    );
}

#[test]
fn single_event_appends_stay_within_the_size_bound() {
    let started = Instant::now();
    let options = JournalOptions {
        compaction_threshold_bytes: 64 * 1024,
    };
    let mut journal = open_storage(
        MemoryStorage::unrecorded(Vec::new()),
        &options,
        Toy::initial(),
    )
    .journal;
    let compactions =
        append_checking_bound(&mut journal, (0..30_000u64).map(|i| vec![small_event(i)]));
    assert!(compactions >= 5, "only {compactions} compactions");
    assert_reopens_cleanly(
        journal.storage().contents(),
        journal.state(),
        "single events",
    );
    eprintln!(
        "30,000 single-event appends: {:?}, {compactions} compactions",
        started.elapsed()
    );
}

#[test]
fn a_checkpoint_that_outgrows_the_log_waits_until_it_fits() {
    let options = JournalOptions {
        compaction_threshold_bytes: 0,
    };
    let mut journal = fresh(&options);
    let report = journal
        .append(
            &[ToyEvent::Padded {
                key: 1,
                bytes: 3000,
            }],
            NOW,
        )
        .unwrap();
    assert!(
        matches!(
            report.compaction,
            CompactionOutcome::Skipped(CompactionSkipped::CheckpointDoesNotFit { .. })
        ),
        "{:?}",
        report.compaction
    );
    let compactions = append_checking_bound(
        &mut journal,
        (0..400u64).map(|i| vec![ToyEvent::Put { key: 5, value: i }]),
    );
    assert!(compactions >= 1);
    assert_reopens_cleanly(journal.storage().contents(), journal.state(), "padded");
}

// ---------------------------------------------------------------------------------------------
// Two writers on one real file

/// A directory under /tmp removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("pgbak-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_file(path: &std::path::Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

#[test]
fn refresh_follows_appends_compactions_torn_tails_and_rebuilds_by_another_writer() {
    let directory = TempDir::new("refresh");
    let path = directory.0.join("pgbak.lock");
    let options = big_threshold();
    let mut a = open_storage(open_file(&path), &options, Toy::initial()).journal;
    assert_eq!(a.state(), &fresh_state());
    let b_opened = open_storage(open_file(&path), &options, Toy::initial());
    assert_eq!(b_opened.report.repair, None);
    let mut b = b_opened.journal;

    // B appends; A catches up without a reload.
    b.append(&sample_events(), NOW).unwrap();
    let report = a.refresh(NOW).unwrap();
    assert_eq!((report.records_replayed, report.reloaded), (1, false));
    assert_eq!(a.state(), b.state());
    let unchanged = a.refresh(NOW).unwrap();
    assert_eq!((unchanged.records_replayed, unchanged.reloaded), (0, false));

    // B compacts (once the log is longer than the checkpoint); A reloads.
    for amount in 0..20 {
        b.append(&[ToyEvent::Added(amount)], NOW).unwrap();
    }
    eprintln!(
        "DEBUG b file {} log_start {} gen {}",
        b.file_bytes(),
        b.log_start(),
        b.generation()
    );
    let compaction = b.compact_now().unwrap();
    assert!(
        matches!(compaction, CompactionOutcome::Done { .. }),
        "{compaction:?}"
    );
    let report = a.refresh(NOW).unwrap();
    assert!(report.reloaded && !report.journal_replaced);
    assert_eq!(a.state(), b.state());
    assert_eq!(a.generation(), b.generation());

    // A appends (refreshing first); B follows.
    a.append(&[ToyEvent::Added(1)], NOW).unwrap();
    b.refresh(NOW).unwrap();
    assert_eq!(a.state(), b.state());

    // A process crashed mid-append: half a frame at the end. A cuts it and records the cut.
    let torn = writer::encode_frame::<Toy>(
        a.journal_id(),
        a.next_seq(),
        PayloadRef::Events(&[ToyEvent::Added(9)]),
    )
    .unwrap();
    let end = std::fs::metadata(&path).unwrap().len();
    std::os::unix::fs::FileExt::write_all_at(&open_file(&path), &torn[..torn.len() / 2], end)
        .unwrap();
    let report = a.refresh(NOW).unwrap();
    assert!(
        matches!(report.repair, Some(Repair::TailCut { offset, .. }) if offset == end),
        "{report:?}"
    );
    b.refresh(NOW).unwrap();
    assert_eq!(a.state(), b.state());

    // Damage under both: refresh says rebuild; a third process rebuilds; A sees it was replaced.
    // (The cheap refresh re-reads the header and new bytes only: damage to old records is
    // found by the next full replay, e.g. the next process's open.)
    std::os::unix::fs::FileExt::write_all_at(&open_file(&path), b"X", 0).unwrap();
    let refused = a.append(&[ToyEvent::Added(1)], NOW);
    assert!(
        matches!(
            refused,
            Err(JournalError::NeedsRebuild {
                reason: RebuildReason::BadMagic
            })
        ),
        "{refused:?}"
    );
    assert!(matches!(
        b.refresh(NOW),
        Err(JournalError::NeedsRebuild {
            reason: RebuildReason::BadMagic
        })
    ));
    let c = open_storage(open_file(&path), &options, rebuilt_toy());
    assert_eq!(c.rebuilds.len(), 1);
    let report = a.refresh(NOW).unwrap();
    assert!(report.reloaded && report.journal_replaced, "{report:?}");
    assert_eq!(a.state(), c.journal.state());
    a.append(&[ToyEvent::Added(1)], NOW).unwrap();
    b.refresh(NOW).unwrap();
    assert_eq!(a.state(), b.state());
    drop(c);

    // A journal on a real file reopens to the same state.
    let reopened = open_storage(open_file(&path), &options, rebuilt_toy());
    assert_eq!(reopened.report.repair, None);
    assert_eq!(reopened.journal.state(), a.state());
}

#[test]
fn a_missing_real_file_is_created_and_synced() {
    let directory = TempDir::new("missing");
    let path = directory.0.join("pgbak.lock");
    let opened = open_storage(open_file(&path), &JournalOptions::default(), Toy::initial());
    assert_eq!(
        opened.report.repair,
        Some(Repair::Rebuilt {
            reason: RebuildReason::Missing
        })
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        opened.journal.file_bytes()
    );
    let borrowed = open_file(&path);
    let inspection = inspect::<Toy, _>(&&borrowed).unwrap();
    assert_eq!(inspection.state, Some(fresh_state()));
    assert_eq!(inspection.pending_repair, None);
}
