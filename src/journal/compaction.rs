//! Keeping the journal small (S-3.4) and (re)initializing it in place (S-3.3), both crash-safe at
//! every step: each step is one write (or one truncation) followed by an fsync, and the file is
//! valid, with the same state, whichever steps a crash lets through.
//!
//! # Compaction
//!
//! Due after an append when the log beyond its first checkpoint exceeds
//! `compaction_threshold_bytes`, or whenever the log does not start at 4096 (a compaction was
//! interrupted after step 2). With `C` the end of the log, `K` the checkpoint's sequence number
//! and `k` its frame size, and the inactive slot being the one that is not in force:
//!
//! 0. check that `4096 + k <= C`: the copy of step 3 must not overlap the live log. If not,
//!    nothing is written and compaction is retried after the next append, when the log is longer.
//! 1. append `Checkpoint(state)` (seq `K`) at `C`; fsync.
//! 2. inactive slot := (generation + 1, log_start = C, first_seq = K); fsync.
//! 3. copy the checkpoint frame to offset 4096; fsync.
//! 4. the other slot := (generation + 2, log_start = 4096, first_seq = K); fsync.
//! 5. truncate the file to `4096 + k`; fsync.
//!
//! A crash (anything an unsynced write may leave, torn or not):
//! - during 1: the old slot is in force; the partial checkpoint is a torn tail (cut on open).
//! - during 2: a torn slot fails its checksum, so the old slot stays in force; the log holds a
//!   complete checkpoint in the middle, which replays to the same state.
//! - during 3: slot 2 is in force, log from `C`; the bytes being overwritten below `C` are dead.
//! - during 4: as during 2, with slot 2 in force.
//! - during 5, or after 4: slot 4 is in force; the checkpoint copy at 4096 is followed by stale
//!   bytes of the old log, whose frames all have sequence numbers ≤ `K` (the checkpoint was the
//!   newest record). Recovery classifies them as a torn tail and cuts them — never as damage.
//!
//! Compaction does not change the state: a checkpoint replays to the state it was taken of.
//!
//! # Size bound
//!
//! With `T` the threshold, `B` the largest append frame (one `append` is one frame) and `K` the
//! largest checkpoint frame, the file never exceeds [`file_bytes_bound`] `= 4096 + T + B + 2K`:
//! at rest it is `4096 + k` plus at most `T` of events, the append that crosses the threshold
//! adds at most `B`, and compaction adds one more checkpoint before truncating. (When the copy does not
//! fit, the file is below `4096 + K` and grows by at most `B` before it does.) Two exceptions:
//! a crash mid-compaction can leave up to one more checkpoint frame and one repair record until
//! the next writer's open finishes the compaction; and a state whose checkpoint exceeds
//! `MAX_RECORD_BYTES` cannot be checkpointed at all (reported as
//! [`CompactionSkipped::CheckpointTooLarge`]; a pgbak state is kilobytes).
//!
//! # In-place initialization (creation and rebuild)
//!
//! The file is never deleted or renamed (S-3.5). With a new `journal_id`:
//!
//! 1. overwrite the 4096-byte header with zeros; fsync. From here until step 3 is durable, every
//!    open sees a blank header (or a header damaged the same way as before) and rebuilds again.
//! 2. write `Checkpoint(rebuilt state)` (seq 1) and the repair record (seq 2) at 4096, truncate
//!    right after them; fsync.
//! 3. write the header: prefix, slot 0 = (generation 1, log_start 4096, first_seq 1), slot 1
//!    zeros; fsync.
//!
//! A torn step-3 write leaves a prefix with a bad checksum, a blank prefix, or no valid slot:
//! all rebuild again. Frames are salted with the new `journal_id`, so nothing of the old file can
//! pass as part of the new journal.

use crate::journal::format::{self, CommitSlot, HEADER_BYTES, PayloadRef, SLOT_OFFSETS};
use crate::journal::recovery::Position;
use crate::journal::storage::Storage;
use crate::journal::writer::{Journal, JournalOptions, encode_frame};
use crate::journal::{IoAction, JournalError, Repair, Replay};
use crate::timestamp::UnixMillis;

/// What a compaction attempt did.
#[derive(Debug)]
pub enum CompactionOutcome {
    /// The log is below the threshold and starts at 4096.
    NotDue,
    /// The log is now one checkpoint at 4096.
    Done {
        generation: u64,
        checkpoint_seq: u64,
        file_bytes: u64,
    },
    /// Nothing was written; retried after the next append.
    Skipped(CompactionSkipped),
    /// A write failed part-way. The file is valid whatever step failed (see the module docs);
    /// the journal reloads it on its next call.
    Failed(JournalError),
}

/// Why a due compaction wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactionSkipped {
    /// The state encodes to more than `MAX_RECORD_BYTES`.
    CheckpointTooLarge {
        payload_bytes: u64,
        limit_bytes: u64,
    },
    /// The checkpoint frame does not fit between the header and the end of the log.
    CheckpointDoesNotFit {
        checkpoint_frame_bytes: u64,
        space_bytes: u64,
    },
}

/// The largest the file grows outside the exceptions in the module docs: `4096 + threshold +
/// largest append + 2 × largest checkpoint frame`.
pub fn file_bytes_bound(
    threshold_bytes: u64,
    largest_append_bytes: u64,
    largest_checkpoint_frame_bytes: u64,
) -> u64 {
    HEADER_BYTES + threshold_bytes + largest_append_bytes + 2 * largest_checkpoint_frame_bytes
}

impl<S: Replay, F: Storage> Journal<S, F> {
    /// Whether a compaction is due (see the module docs).
    pub fn compaction_due(&self) -> bool {
        let position = &self.position;
        let beyond_checkpoint = position.end_offset
            - position.slot.log_start
            - position
                .first_frame_bytes
                .min(position.end_offset - position.slot.log_start);
        position.slot.log_start != HEADER_BYTES
            || beyond_checkpoint > self.options.compaction_threshold_bytes
    }

    pub(super) fn compact_if_due(&mut self) -> CompactionOutcome {
        if !self.compaction_due() {
            return CompactionOutcome::NotDue;
        }
        self.compact_now().unwrap_or_else(|error| {
            self.needs_reload = true;
            CompactionOutcome::Failed(error)
        })
    }

    /// Compacts now, due or not (the five steps of the module docs).
    pub fn compact_now(&mut self) -> Result<CompactionOutcome, JournalError> {
        let start = self.position;
        let checkpoint_offset = start.end_offset;
        let seq = start.next_seq;
        let frame =
            match encode_frame::<S>(start.journal_id, seq, PayloadRef::Checkpoint(&self.state)) {
                Ok(frame) => frame,
                Err(JournalError::RecordTooLarge {
                    payload_bytes,
                    limit_bytes,
                    ..
                }) => {
                    return Ok(CompactionOutcome::Skipped(
                        CompactionSkipped::CheckpointTooLarge {
                            payload_bytes,
                            limit_bytes,
                        },
                    ));
                }
                Err(error) => return Err(error),
            };
        let frame_bytes = frame.len() as u64;
        if HEADER_BYTES + frame_bytes > checkpoint_offset {
            return Ok(CompactionOutcome::Skipped(
                CompactionSkipped::CheckpointDoesNotFit {
                    checkpoint_frame_bytes: frame_bytes,
                    space_bytes: checkpoint_offset - HEADER_BYTES,
                },
            ));
        }

        // Step 1: the checkpoint becomes the newest record.
        self.write_synced(&frame, checkpoint_offset)?;
        self.position.next_seq = seq.saturating_add(1);
        self.position.end_offset = checkpoint_offset + frame_bytes;

        // Step 2: the log now starts at that checkpoint.
        let moved_slot_index = 1 - start.active_slot;
        let moved = CommitSlot {
            generation: start.slot.generation + 1,
            log_start: checkpoint_offset,
            first_seq: seq,
            journal_id: start.journal_id,
        };
        self.write_synced(&format::encode_slot(&moved), SLOT_OFFSETS[moved_slot_index])?;
        self.position.active_slot = moved_slot_index;
        self.position.slot = moved;
        self.position.first_frame_bytes = frame_bytes;

        // Step 3: a copy of the checkpoint right after the header, below the live log.
        self.write_synced(&frame, HEADER_BYTES)?;

        // Step 4: the log now starts at the copy.
        let home_slot_index = start.active_slot;
        let home = CommitSlot {
            generation: moved.generation + 1,
            log_start: HEADER_BYTES,
            ..moved
        };
        self.write_synced(&format::encode_slot(&home), SLOT_OFFSETS[home_slot_index])?;
        self.position.active_slot = home_slot_index;
        self.position.slot = home;

        // Step 5: drop the old log.
        let file_bytes = HEADER_BYTES + frame_bytes;
        self.set_len_synced(file_bytes)?;
        self.position.end_offset = file_bytes;

        Ok(CompactionOutcome::Done {
            generation: home.generation,
            checkpoint_seq: seq,
            file_bytes,
        })
    }

    /// Writes a new journal over whatever `storage` holds (the three steps of the module docs):
    /// `Checkpoint(rebuilt)` then the repair record, under identity `journal_id`.
    pub(super) fn initialize_in_place(
        storage: F,
        options: JournalOptions,
        journal_id: u64,
        rebuilt: S,
        repair: &Repair,
        now: UnixMillis,
    ) -> Result<Self, JournalError> {
        let event = S::repair_event(repair, now);
        let mut state = rebuilt.clone();
        state
            .apply(&event)
            .map_err(|rejection| JournalError::RepairEventRejected {
                detail: rejection.to_string(),
            })?;
        let first_seq = 1;
        let checkpoint =
            encode_frame::<S>(journal_id, first_seq, PayloadRef::Checkpoint(&rebuilt))?;
        let mut frames = checkpoint.clone();
        let repair_record = PayloadRef::Events(std::slice::from_ref(&event));
        frames.extend(encode_frame::<S>(journal_id, first_seq + 1, repair_record)?);
        let slot = CommitSlot {
            generation: 1,
            log_start: HEADER_BYTES,
            first_seq,
            journal_id,
        };
        let position = Position {
            journal_id,
            active_slot: 0,
            slot,
            first_frame_bytes: checkpoint.len() as u64,
            next_seq: first_seq + 2,
            end_offset: HEADER_BYTES + frames.len() as u64,
        };
        let mut journal = Journal {
            storage,
            options,
            position,
            state,
            needs_reload: true,
        };

        // Step 1: blank header, so no crash from here on can leave a half-new journal in force.
        journal.write_synced(&vec![0u8; HEADER_BYTES as usize], 0)?;
        // Step 2: the new log, and nothing after it.
        journal
            .storage
            .write_at(&frames, HEADER_BYTES)
            .map_err(JournalError::io(IoAction::Write {
                offset: HEADER_BYTES,
                bytes: frames.len() as u64,
            }))?;
        journal.set_len_synced(position.end_offset)?;
        // Step 3: the header that puts it in force.
        journal.write_synced(&format::encode_header(journal_id, [Some(slot), None]), 0)?;
        journal.needs_reload = false;
        Ok(journal)
    }
}
