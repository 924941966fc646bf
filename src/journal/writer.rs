//! The writable journal: [`Journal::open`] (replay and repair), [`Journal::refresh`] (catch up
//! with other processes) and [`Journal::append`] (S-3.2: a fact is durable before `Ok`).
//!
//! Owns: the in-memory view of the file (state, next sequence number, end of the log, active
//! commit slot) and keeping it equal to what replaying the file would give.
//!
//! Invariants:
//! - The caller holds the journal's exclusive OFD lock (S-3.5) for every call on a [`Journal`]:
//!   the journal itself never locks, and it assumes no other process writes meanwhile.
//! - `state`, `next_seq` and `end_offset` change only after the bytes that justify them are
//!   fsynced. After any write error the journal marks itself for a full reload, so the next call
//!   re-reads the file instead of trusting a view that may no longer match it.
//! - An append is all or nothing in memory: every event is applied to a copy first; one rejection
//!   means nothing is written. On disk it is one frame, one `write` and one fsync, and recovery
//!   makes a crash in between look like before or after the append (a torn tail is cut).
//! - The file is never deleted or renamed (other processes hold OFD locks on it, S-3.5): repairs
//!   and rebuilds happen in place.

use crate::journal::compaction::CompactionOutcome;
use crate::journal::format::{self, FRAME_HEADER_BYTES, MAX_RECORD_BYTES, PayloadRef};
use crate::journal::recovery::{self, Loaded, Position, TornTail};
use crate::journal::storage::Storage;
use crate::journal::{
    COMPACTION_THRESHOLD_BYTES, DecodedJournal, Inspection, IoAction, JournalError,
    MAX_COMPACTION_THRESHOLD_BYTES, MAX_JOURNAL_FILE_BYTES, OpenError, RebuildReason, Repair,
    Replay,
};
use crate::timestamp::UnixMillis;

/// Tunables of a journal (S-7 may expose them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// Compact once the log beyond its first checkpoint exceeds this many bytes (S-3.4).
    pub compaction_threshold_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            compaction_threshold_bytes: COMPACTION_THRESHOLD_BYTES,
        }
    }
}

impl JournalOptions {
    pub fn validate(&self) -> Result<(), JournalError> {
        if self.compaction_threshold_bytes > MAX_COMPACTION_THRESHOLD_BYTES {
            return Err(JournalError::InvalidOptions {
                detail: format!(
                    "compaction_threshold_bytes is {}, more than the limit of {}",
                    self.compaction_threshold_bytes, MAX_COMPACTION_THRESHOLD_BYTES
                ),
            });
        }
        Ok(())
    }
}

/// What the caller's rebuild function is told: why, and the damaged bytes, which it may keep for
/// forensics (it runs before the file is overwritten, so a copy written now survives a crash
/// during the rebuild).
#[derive(Debug, Clone, Copy)]
pub struct RebuildRequest<'a> {
    pub reason: &'a RebuildReason,
    /// Size of the file before the rebuild; 0 when it was missing or empty.
    pub file_bytes: u64,
    /// The file's first bytes (at most `MAX_DAMAGED_COPY_BYTES`); `None` when there were none.
    pub damaged_bytes: Option<&'a [u8]>,
}

/// What [`Journal::open`] found and did.
#[derive(Debug)]
pub struct OpenReport {
    /// The repair made, if any (also recorded in the journal through `Replay::repair_event`).
    pub repair: Option<Repair>,
    /// Records replayed from the file (0 after a rebuild).
    pub records_replayed: u64,
    /// Size of the file before the open; 0 means it was missing or empty (a fresh `$PGBAK`).
    pub file_bytes_before: u64,
    /// Log bytes after the open.
    pub log_bytes: u64,
    /// The damaged file's first bytes when it was rebuilt (the same bytes the rebuild function
    /// was shown), for the caller to keep for forensics.
    pub damaged_bytes: Option<Vec<u8>>,
    pub compaction: CompactionOutcome,
}

/// What [`Journal::refresh`] found and did.
#[derive(Debug)]
pub struct RefreshReport {
    /// Records folded in: new records appended by other processes, or, after a reload, every
    /// record of the log.
    pub records_replayed: u64,
    /// The file was replayed from scratch (another process compacted or rebuilt it, or an
    /// earlier error left this view in doubt).
    pub reloaded: bool,
    /// Another process rebuilt the journal since this one last looked (its identity changed):
    /// the state was replaced, not extended; a long-running process must start over from it.
    pub journal_replaced: bool,
    /// A torn tail left by a process that crashed mid-append, cut and recorded.
    pub repair: Option<Repair>,
    pub compaction: CompactionOutcome,
}

impl RefreshReport {
    fn unchanged() -> Self {
        RefreshReport {
            records_replayed: 0,
            reloaded: false,
            journal_replaced: false,
            repair: None,
            compaction: CompactionOutcome::NotDue,
        }
    }
}

/// What [`Journal::append`] did.
#[derive(Debug)]
pub struct AppendReport {
    /// Sequence number of the record holding the events (an append is one record), or of the
    /// next record when there were no events.
    pub seq: u64,
    pub events_appended: u64,
    /// The refresh that preceded the append.
    pub refresh: RefreshReport,
    /// The compaction that followed it. `Failed` does not undo the append: it is durable.
    pub compaction: CompactionOutcome,
}

/// The writable journal over some [`Storage`] (a `File` in pgbak, a [`MemoryStorage`] in tests).
///
/// [`MemoryStorage`]: crate::journal::MemoryStorage
#[derive(Debug)]
pub struct Journal<S: Replay, F: Storage> {
    pub(super) storage: F,
    pub(super) options: JournalOptions,
    pub(super) position: Position,
    pub(super) state: S,
    pub(super) needs_reload: bool,
}

/// A journal identity from the caller's seed (clock ⊕ pid in pgbak): never zero (zero marks a
/// blank header) and never the damaged journal's own, so a process holding the old journal sees
/// that it was replaced.
pub(super) fn choose_journal_id(seed: u64, previous: Option<u64>) -> u64 {
    let nonzero = |id: u64| if id == 0 { 1 } else { id };
    let id = nonzero(seed);
    if Some(id) == previous {
        nonzero(id.wrapping_add(1))
    } else {
        id
    }
}

impl<S: Replay, F: Storage> Journal<S, F> {
    /// Opens the journal for writing: replays it, cuts a torn tail, or rebuilds it through
    /// `rebuild` (missing file, damage; see the recovery mode in `journal/mod.rs`), then finishes
    /// an interrupted compaction or compacts if due. Every repair is recorded with
    /// `S::repair_event(_, now)`. `journal_id_seed` becomes the identity of a new journal.
    pub fn open<E>(
        storage: F,
        options: &JournalOptions,
        now: UnixMillis,
        journal_id_seed: u64,
        rebuild: impl FnOnce(&RebuildRequest<'_>) -> Result<S, E>,
    ) -> Result<(Self, OpenReport), OpenError<E>> {
        options.validate()?;
        match recovery::load::<S, F>(&storage)? {
            Loaded::Usable {
                position,
                state,
                records_replayed,
                file_bytes,
                torn_tail,
            } => {
                let mut journal = Journal {
                    storage,
                    options: options.clone(),
                    position,
                    state,
                    needs_reload: false,
                };
                let repair = match torn_tail {
                    Some(tail) => Some(journal.cut_torn_tail(&tail, now)?),
                    None => None,
                };
                let compaction = journal.compact_if_due();
                let report = OpenReport {
                    repair,
                    records_replayed,
                    file_bytes_before: file_bytes,
                    log_bytes: journal.log_bytes(),
                    damaged_bytes: None,
                    compaction,
                };
                Ok((journal, report))
            }
            Loaded::NeedsRebuild {
                reason,
                file_bytes,
                previous_journal_id,
                damaged_bytes,
            } => {
                let damaged_bytes = (!damaged_bytes.is_empty()).then_some(damaged_bytes);
                let request = RebuildRequest {
                    reason: &reason,
                    file_bytes,
                    damaged_bytes: damaged_bytes.as_deref(),
                };
                let rebuilt = match rebuild(&request) {
                    Ok(rebuilt) => rebuilt,
                    Err(source) => return Err(OpenError::RebuildFailed { reason, source }),
                };
                let repair = Repair::Rebuilt { reason };
                let journal_id = choose_journal_id(journal_id_seed, previous_journal_id);
                let journal = Journal::initialize_in_place(
                    storage,
                    options.clone(),
                    journal_id,
                    rebuilt,
                    &repair,
                    now,
                )?;
                let report = OpenReport {
                    repair: Some(repair),
                    records_replayed: 0,
                    file_bytes_before: file_bytes,
                    log_bytes: journal.log_bytes(),
                    damaged_bytes,
                    compaction: CompactionOutcome::NotDue,
                };
                Ok((journal, report))
            }
        }
    }

    /// Read-only replay: see [`recovery::inspect`].
    pub fn inspect(storage: &F) -> Result<Inspection<S>, JournalError> {
        recovery::inspect::<S, F>(storage)
    }

    /// The records as stored: see [`recovery::decode_records`].
    pub fn decode_records(storage: &F) -> Result<DecodedJournal<S, S::Event>, JournalError> {
        recovery::decode_records::<S, F>(storage)
    }

    /// Catches up with what other processes did since this view was taken: folds in records they
    /// appended (cheap: one header read and the new bytes), or replays from scratch if the
    /// header changed (a compaction, or a rebuild: `journal_replaced`). Cuts a torn tail a
    /// crashed process left behind. Damage is `Err(NeedsRebuild)`: reopen with
    /// [`Journal::open`] to rebuild.
    pub fn refresh(&mut self, now: UnixMillis) -> Result<RefreshReport, JournalError> {
        if !self.needs_reload {
            if let Some(report) = self.catch_up()? {
                return Ok(report);
            }
        }
        self.reload(now)
    }

    /// The fast path of `refresh`: `None` if the header changed or anything looks off (a torn
    /// tail included), so the caller replays from scratch, which decides with the whole log in
    /// view.
    fn catch_up(&mut self) -> Result<Option<RefreshReport>, JournalError> {
        let file_bytes = self
            .storage
            .len()
            .map_err(JournalError::io(IoAction::Length))?;
        let end_offset = self.position.end_offset;
        if file_bytes < end_offset || file_bytes > MAX_JOURNAL_FILE_BYTES {
            return Ok(None);
        }
        let header = recovery::read_header(&self.storage, file_bytes)?;
        let unchanged = format::parse_header(&header).is_ok_and(|header| {
            header.journal_id == self.position.journal_id
                && header.active_slot == self.position.active_slot
                && header.slot == self.position.slot
        });
        if !unchanged {
            return Ok(None);
        }
        if file_bytes == end_offset {
            return Ok(Some(RefreshReport::unchanged()));
        }
        let tail = recovery::read_exact_at(&self.storage, end_offset, file_bytes - end_offset)?;
        let mut state = self.state.clone();
        let replay = recovery::replay_log(
            &tail,
            end_offset,
            self.position.journal_id,
            end_offset,
            self.position.next_seq,
            &mut state,
            false,
        );
        if replay.stop.is_some() {
            // A torn tail or damage: only a replay from the start of the log decides what to
            // cut, so that nothing is ever cut on the strength of this incremental view.
            return Ok(None);
        }
        self.state = state;
        self.position.next_seq = replay.next_seq;
        self.position.end_offset = replay.end_offset;
        let compaction = self.compact_if_due();
        Ok(Some(RefreshReport {
            records_replayed: replay.records,
            reloaded: false,
            journal_replaced: false,
            repair: None,
            compaction,
        }))
    }

    fn reload(&mut self, now: UnixMillis) -> Result<RefreshReport, JournalError> {
        match recovery::load::<S, F>(&self.storage)? {
            Loaded::Usable {
                position,
                state,
                records_replayed,
                torn_tail,
                ..
            } => {
                let journal_replaced = position.journal_id != self.position.journal_id;
                self.position = position;
                self.state = state;
                self.needs_reload = false;
                let repair = match torn_tail {
                    Some(tail) => Some(self.cut_torn_tail(&tail, now)?),
                    None => None,
                };
                let compaction = self.compact_if_due();
                Ok(RefreshReport {
                    records_replayed,
                    reloaded: true,
                    journal_replaced,
                    repair,
                    compaction,
                })
            }
            Loaded::NeedsRebuild { reason, .. } => {
                self.needs_reload = true;
                Err(JournalError::NeedsRebuild { reason })
            }
        }
    }

    /// Refreshes, then records `events` durably: all are applied to a copy of the state first
    /// (any rejection is `Err` and nothing is written), then written as one record (one frame,
    /// see `format`) with one write and one fsync. `Ok` means every event is durable (S-3.2).
    /// Compacts afterwards if due; a failed compaction is reported in the result, not as `Err`,
    /// because the events are durable. `now` stamps the repair record if the refresh has to cut
    /// a torn tail left by a crashed process.
    pub fn append(
        &mut self,
        events: &[S::Event],
        now: UnixMillis,
    ) -> Result<AppendReport, JournalError> {
        let refresh = self.refresh(now)?;
        let first_seq = self.position.next_seq;
        if events.is_empty() {
            return Ok(AppendReport {
                seq: first_seq,
                events_appended: 0,
                refresh,
                compaction: CompactionOutcome::NotDue,
            });
        }
        let mut next_state = self.state.clone();
        for (index, event) in events.iter().enumerate() {
            next_state
                .apply(event)
                .map_err(|rejection| JournalError::EventRejected {
                    index,
                    detail: rejection.to_string(),
                })?;
        }
        let frames = self.encode_frame(first_seq, PayloadRef::Events(events))?;
        self.write_log(&frames, false)?;
        self.state = next_state;
        self.position.next_seq = first_seq.saturating_add(1);
        self.position.end_offset += frames.len() as u64;
        let compaction = self.compact_if_due();
        Ok(AppendReport {
            seq: first_seq,
            events_appended: events.len() as u64,
            refresh,
            compaction,
        })
    }

    /// Cuts a torn tail found by replay and records the cut, with a single fsync: the repair
    /// record overwrites the torn bytes and the file is truncated right after it. A crash before
    /// the fsync leaves a torn tail again (the same one, or torn bytes after a valid repair
    /// record), which the next writer cuts.
    fn cut_torn_tail(&mut self, tail: &TornTail, now: UnixMillis) -> Result<Repair, JournalError> {
        debug_assert_eq!(tail.offset, self.position.end_offset);
        let repair = Repair::TailCut {
            offset: tail.offset,
            discarded_bytes: tail.discarded_bytes,
        };
        let event = S::repair_event(&repair, now);
        let mut next_state = self.state.clone();
        next_state
            .apply(&event)
            .map_err(|rejection| JournalError::RepairEventRejected {
                detail: rejection.to_string(),
            })?;
        let seq = self.position.next_seq;
        let frames = self.encode_frame(seq, PayloadRef::Events(std::slice::from_ref(&event)))?;
        self.write_log(&frames, true)?;
        self.state = next_state;
        self.position.next_seq = seq.saturating_add(1);
        self.position.end_offset += frames.len() as u64;
        Ok(repair)
    }

    /// The frame of `payload` as this journal's record number `seq`.
    pub(super) fn encode_frame(
        &self,
        seq: u64,
        payload: PayloadRef<'_, S, S::Event>,
    ) -> Result<Vec<u8>, JournalError> {
        encode_frame::<S>(self.position.journal_id, seq, payload)
    }

    /// Writes `frames` (one frame) at the end of the log and fsyncs (truncating right after it
    /// first if `truncate_after`). On failure, tries to cut the file back to where the log
    /// ended, so a caller told "not recorded" is not contradicted by a later replay, and marks
    /// the view for a full reload either way.
    fn write_log(&mut self, frames: &[u8], truncate_after: bool) -> Result<(), JournalError> {
        let offset = self.position.end_offset;
        let new_end = offset + frames.len() as u64;
        let result = (|| {
            self.storage
                .write_at(frames, offset)
                .map_err(JournalError::io(IoAction::Write {
                    offset,
                    bytes: frames.len() as u64,
                }))?;
            if truncate_after {
                self.storage
                    .set_len(new_end)
                    .map_err(JournalError::io(IoAction::SetLength { bytes: new_end }))?;
            }
            self.storage
                .sync()
                .map_err(JournalError::io(IoAction::Sync))
        })();
        if result.is_err() {
            self.needs_reload = true;
            // Best effort: the write error is what the caller needs to see.
            if self.storage.set_len(offset).is_ok() {
                let _ = self.storage.sync();
            }
        }
        result
    }

    /// Writes `data` at `offset` and fsyncs; marks the view for reload on failure.
    pub(super) fn write_synced(&mut self, data: &[u8], offset: u64) -> Result<(), JournalError> {
        let result = self
            .storage
            .write_at(data, offset)
            .map_err(JournalError::io(IoAction::Write {
                offset,
                bytes: data.len() as u64,
            }))
            .and_then(|()| {
                self.storage
                    .sync()
                    .map_err(JournalError::io(IoAction::Sync))
            });
        if result.is_err() {
            self.needs_reload = true;
        }
        result
    }

    /// Sets the file length and fsyncs; marks the view for reload on failure.
    pub(super) fn set_len_synced(&mut self, bytes: u64) -> Result<(), JournalError> {
        let result = self
            .storage
            .set_len(bytes)
            .map_err(JournalError::io(IoAction::SetLength { bytes }))
            .and_then(|()| {
                self.storage
                    .sync()
                    .map_err(JournalError::io(IoAction::Sync))
            });
        if result.is_err() {
            self.needs_reload = true;
        }
        result
    }

    /// The replayed state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.position.next_seq
    }

    /// Bytes of the log, from its first checkpoint to its end.
    pub fn log_bytes(&self) -> u64 {
        self.position.end_offset - self.position.slot.log_start
    }

    /// Bytes of the file as this view knows it (header included).
    pub fn file_bytes(&self) -> u64 {
        self.position.end_offset
    }

    /// Identity of this incarnation of the journal (changes with every rebuild).
    pub fn journal_id(&self) -> u64 {
        self.position.journal_id
    }

    /// Generation of the active commit slot (grows by two with every compaction).
    pub fn generation(&self) -> u64 {
        self.position.slot.generation
    }

    /// File offset where the log starts (4096 except right after an interrupted compaction).
    pub fn log_start(&self) -> u64 {
        self.position.slot.log_start
    }

    pub fn options(&self) -> &JournalOptions {
        &self.options
    }

    pub fn storage(&self) -> &F {
        &self.storage
    }

    /// For tests that damage the file under a live journal.
    pub fn storage_mut(&mut self) -> &mut F {
        &mut self.storage
    }

    pub fn into_storage(self) -> F {
        self.storage
    }
}

/// The frame of one record (`payload`) of journal `journal_id` with sequence number `seq`.
pub(super) fn encode_frame<S: Replay>(
    journal_id: u64,
    seq: u64,
    payload: PayloadRef<'_, S, S::Event>,
) -> Result<Vec<u8>, JournalError> {
    let payload = format::encode_payload(&payload).map_err(|error| JournalError::Encode {
        seq,
        detail: error.to_string(),
    })?;
    let payload_bytes = payload.len() as u64;
    let mut frame = Vec::with_capacity(payload.len() + FRAME_HEADER_BYTES as usize);
    format::encode_frame(journal_id, seq, &payload, &mut frame).map_err(|_| {
        JournalError::RecordTooLarge {
            seq,
            payload_bytes,
            limit_bytes: u64::from(MAX_RECORD_BYTES),
        }
    })?;
    Ok(frame)
}
