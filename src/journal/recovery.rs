//! Reading a journal back: replay, the classification of the first unusable record as a torn tail
//! or damage (the recovery mode described in `journal/mod.rs`, S-3.3), the read-only
//! [`inspect`] and the record listing [`decode_records`] behind `pgbak status --journal`.
//!
//! Owns: the decision "torn tail or damage". Nothing here writes; the writer acts on the result.
//!
//! Invariants:
//! - A failure is a torn tail only if it is not the log's first record (which holds the
//!   checkpoint every later record builds on) and no frame with a valid checksum and a sequence
//!   number at or after the expected one exists anywhere from the failure to the end of the file.
//!   Such a frame would be an acknowledged fact that cutting would lose, so its presence makes
//!   the failure damage. Stale frames of an interrupted compaction have lower sequence numbers
//!   (they were written before the checkpoint that now starts the log), so they never count.
//! - The scan for such frames checks every byte offset, cheap checks first (length fits, sequence
//!   number plausible), the checksum only for candidates, so it costs about one pass over the
//!   tail for anything but deliberately crafted bytes (which cost time, never a panic).
//! - A rejected transition is always damage, wherever it is: it was checksummed, so it is what
//!   some writer recorded, and the state cannot be reconstructed without it.
//! - Counts and sequence numbers are of records (frames): one checkpoint, or the events of one
//!   append.

use crate::journal::format::{
    self, ActiveHeader, CommitSlot, FRAME_HEADER_BYTES, FrameView, HEADER_BYTES, Payload,
};
use crate::journal::storage::Storage;
use crate::journal::{
    IoAction, JournalError, MAX_DAMAGED_COPY_BYTES, MAX_JOURNAL_FILE_BYTES, RebuildReason, Repair,
    Replay,
};
use serde::Serialize;

/// Where the writer stands in the file: everything it needs to append, compact and refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub journal_id: u64,
    /// Index of the active commit slot (see `format::SLOT_OFFSETS`).
    pub active_slot: usize,
    pub slot: CommitSlot,
    /// Size of the checkpoint frame at `slot.log_start`.
    pub first_frame_bytes: u64,
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// End of the last valid frame: where the next append goes.
    pub end_offset: u64,
}

/// A torn tail found by replay: cut at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TornTail {
    pub offset: u64,
    pub discarded_bytes: u64,
    pub detail: String,
}

/// What reading the whole file found.
#[derive(Debug)]
pub(super) enum Loaded<S> {
    Usable {
        position: Position,
        state: S,
        records_replayed: u64,
        file_bytes: u64,
        torn_tail: Option<TornTail>,
    },
    NeedsRebuild {
        reason: RebuildReason,
        file_bytes: u64,
        /// The identity field of the damaged header (valid or not), so the new identity can
        /// differ from it.
        previous_journal_id: Option<u64>,
        /// The file's first bytes, at most [`MAX_DAMAGED_COPY_BYTES`], for forensics.
        damaged_bytes: Vec<u8>,
    },
}

/// Why replay stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    Torn {
        offset: u64,
        detail: String,
    },
    Damaged {
        offset: u64,
        expected_seq: u64,
        detail: String,
    },
    Rejected {
        seq: u64,
        offset: u64,
        detail: String,
    },
}

/// The result of replaying frames.
#[derive(Debug)]
pub(super) struct LogReplay {
    pub end_offset: u64,
    pub next_seq: u64,
    pub records: u64,
    /// Size of the first frame replayed, if any.
    pub first_frame_bytes: Option<u64>,
    pub stop: Option<Stop>,
}

/// Reads exactly `length` bytes at `offset`.
pub(super) fn read_exact_at<F: Storage>(
    storage: &F,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, JournalError> {
    let action = IoAction::Read {
        offset,
        bytes: length,
    };
    let length = usize::try_from(length).map_err(|_| JournalError::Io {
        action,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "length beyond memory"),
    })?;
    let mut buffer = vec![0u8; length];
    let mut filled = 0;
    while filled < length {
        match storage.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => {
                return Err(JournalError::Io {
                    action,
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the file ended after {filled} bytes"),
                    ),
                });
            }
            Ok(count) => filled += count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(JournalError::Io { action, source }),
        }
    }
    Ok(buffer)
}

/// Reads the file's header: its first `min(file_bytes, HEADER_BYTES)` bytes.
pub(super) fn read_header<F: Storage>(
    storage: &F,
    file_bytes: u64,
) -> Result<Vec<u8>, JournalError> {
    read_exact_at(storage, 0, file_bytes.min(HEADER_BYTES))
}

/// Reads and replays the whole file. `Err` only for I/O errors: every problem with the bytes is
/// a [`Loaded::NeedsRebuild`] or a torn tail.
pub(super) fn load<S: Replay, F: Storage>(storage: &F) -> Result<Loaded<S>, JournalError> {
    let file_bytes = storage.len().map_err(JournalError::io(IoAction::Length))?;
    if file_bytes == 0 {
        return Ok(Loaded::NeedsRebuild {
            reason: RebuildReason::Missing,
            file_bytes,
            previous_journal_id: None,
            damaged_bytes: Vec::new(),
        });
    }
    if file_bytes > MAX_JOURNAL_FILE_BYTES {
        let copy = read_exact_at(storage, 0, file_bytes.min(MAX_DAMAGED_COPY_BYTES))?;
        return Ok(needs_rebuild(
            RebuildReason::TooLarge {
                file_bytes,
                limit_bytes: MAX_JOURNAL_FILE_BYTES,
            },
            file_bytes,
            copy,
        ));
    }
    let bytes = read_exact_at(storage, 0, file_bytes)?;
    let header_end = file_bytes.min(HEADER_BYTES) as usize;
    let header = match format::parse_header(&bytes[..header_end]) {
        Ok(header) => header,
        Err(reason) => return Ok(needs_rebuild(reason, file_bytes, bytes)),
    };
    let mut state = S::initial();
    let replay = replay_log(
        &bytes,
        0,
        header.journal_id,
        header.slot.log_start,
        header.slot.first_seq,
        &mut state,
        true,
    );
    let torn_tail = match replay.stop.clone() {
        None => None,
        Some(Stop::Torn { offset, detail }) => Some(TornTail {
            offset,
            discarded_bytes: file_bytes - offset,
            detail,
        }),
        Some(Stop::Damaged {
            offset,
            expected_seq,
            detail,
        }) => {
            let reason = RebuildReason::Damaged {
                offset,
                expected_seq,
                detail,
            };
            return Ok(needs_rebuild(reason, file_bytes, bytes));
        }
        Some(Stop::Rejected {
            seq,
            offset,
            detail,
        }) => {
            let reason = RebuildReason::RejectedTransition {
                seq,
                offset,
                detail,
            };
            return Ok(needs_rebuild(reason, file_bytes, bytes));
        }
    };
    // A usable log always has its first frame (else replay reports damage).
    let first_frame_bytes = replay.first_frame_bytes.unwrap_or(0);
    Ok(Loaded::Usable {
        position: position_after(&header, first_frame_bytes, &replay),
        state,
        records_replayed: replay.records,
        file_bytes,
        torn_tail,
    })
}

fn position_after(header: &ActiveHeader, first_frame_bytes: u64, replay: &LogReplay) -> Position {
    Position {
        journal_id: header.journal_id,
        active_slot: header.active_slot,
        slot: header.slot,
        first_frame_bytes,
        next_seq: replay.next_seq,
        end_offset: replay.end_offset,
    }
}

fn needs_rebuild<S>(reason: RebuildReason, file_bytes: u64, mut bytes: Vec<u8>) -> Loaded<S> {
    // The identity field is read even from a damaged prefix: a process still holding the old
    // journal compares identities, so the new one must differ from whatever it saw.
    let previous_journal_id = format::raw_journal_id(&bytes);
    bytes.truncate(MAX_DAMAGED_COPY_BYTES as usize);
    Loaded::NeedsRebuild {
        reason,
        file_bytes,
        previous_journal_id,
        damaged_bytes: bytes,
    }
}

/// The frame and payload at `offset`, or why not (any reason: checksum, sequence, decoding).
fn read_record<'a, S, E>(
    bytes: &'a [u8],
    base_offset: u64,
    offset: u64,
    journal_id: u64,
    expected_seq: u64,
) -> Result<(FrameView<'a>, Payload<S, E>), String>
where
    S: serde::de::DeserializeOwned,
    E: serde::de::DeserializeOwned,
{
    let index = (offset - base_offset) as usize;
    let frame = format::parse_frame(&bytes[index..], journal_id).map_err(|p| p.to_string())?;
    if frame.seq != expected_seq {
        return Err(format!(
            "the frame has sequence number {} where {expected_seq} was expected",
            frame.seq
        ));
    }
    let payload = format::decode_payload::<S, E>(frame.payload)?;
    Ok((frame, payload))
}

/// Replays frames of `bytes` (the file's bytes from `base_offset` to its end) from
/// `start_offset`, expecting `expected_seq` first. `log_starts_here`: the first frame must be the
/// log's checkpoint. Stops at the first unusable record and classifies it.
pub(super) fn replay_log<S: Replay>(
    bytes: &[u8],
    base_offset: u64,
    journal_id: u64,
    start_offset: u64,
    expected_seq: u64,
    state: &mut S,
    log_starts_here: bool,
) -> LogReplay {
    let file_end = base_offset + bytes.len() as u64;
    let mut replay = LogReplay {
        end_offset: start_offset,
        next_seq: expected_seq,
        records: 0,
        first_frame_bytes: None,
        stop: None,
    };
    if start_offset < base_offset || start_offset > file_end {
        replay.stop = Some(Stop::Damaged {
            offset: start_offset,
            expected_seq,
            detail: format!(
                "the log starts at offset {start_offset}, beyond the end of the file ({file_end})"
            ),
        });
        return replay;
    }
    while replay.end_offset < file_end {
        let offset = replay.end_offset;
        let seq = replay.next_seq;
        let is_log_start = log_starts_here && replay.records == 0;
        let fail = |detail: String| {
            classify_failure(
                bytes,
                base_offset,
                offset,
                seq,
                journal_id,
                is_log_start,
                detail,
            )
        };
        let (frame, record) =
            match read_record::<S, S::Event>(bytes, base_offset, offset, journal_id, seq) {
                Ok(found) => found,
                Err(detail) => {
                    replay.stop = Some(fail(detail));
                    return replay;
                }
            };
        match record {
            Payload::Checkpoint(checkpoint) => *state = checkpoint,
            Payload::Events(_) if is_log_start => {
                replay.stop = Some(fail("the log does not begin with a checkpoint".to_string()));
                return replay;
            }
            Payload::Events(events) => {
                for (index, event) in events.iter().enumerate() {
                    if let Err(rejection) = state.apply(event) {
                        let detail = if events.len() == 1 {
                            rejection.to_string()
                        } else {
                            format!("event {index} of {}: {rejection}", events.len())
                        };
                        replay.stop = Some(Stop::Rejected {
                            seq,
                            offset,
                            detail,
                        });
                        return replay;
                    }
                }
            }
        }
        if replay.records == 0 {
            replay.first_frame_bytes = Some(frame.total_bytes());
        }
        replay.records += 1;
        replay.next_seq = seq.saturating_add(1);
        replay.end_offset = offset + frame.total_bytes();
    }
    if log_starts_here && replay.records == 0 {
        // The log must hold at least its checkpoint: a header pointing at nothing is damage
        // (S-3.3), never an empty state.
        replay.stop = Some(Stop::Damaged {
            offset: start_offset,
            expected_seq,
            detail: "the log is empty: its first record, the checkpoint, is missing".to_string(),
        });
    }
    replay
}

/// Torn tail or damage, for the first unusable record at `offset` (see the module invariants).
fn classify_failure(
    bytes: &[u8],
    base_offset: u64,
    offset: u64,
    expected_seq: u64,
    journal_id: u64,
    is_log_start: bool,
    detail: String,
) -> Stop {
    if is_log_start {
        return Stop::Damaged {
            offset,
            expected_seq,
            detail: format!("{detail}; it is the log's first record, which holds its checkpoint"),
        };
    }
    match later_valid_frame(bytes, base_offset, offset, expected_seq, journal_id) {
        Some((found_offset, found_seq)) => Stop::Damaged {
            offset,
            expected_seq,
            detail: format!(
                "{detail}; valid record {found_seq} follows at offset {found_offset}, so this is \
                 not a torn write"
            ),
        },
        None => Stop::Torn { offset, detail },
    }
}

/// The first frame at or after `from` whose checksum is valid and whose sequence number is at
/// least `expected_seq`, as (offset, seq).
fn later_valid_frame(
    bytes: &[u8],
    base_offset: u64,
    from: u64,
    expected_seq: u64,
    journal_id: u64,
) -> Option<(u64, u64)> {
    let start = (from - base_offset) as usize;
    for index in start..bytes.len() {
        let candidate = &bytes[index..];
        if (candidate.len() as u64) < FRAME_HEADER_BYTES {
            return None;
        }
        // Frames are contiguous and at least a header long, so the record `k` frames after the
        // expected one starts at least `k * FRAME_HEADER_BYTES` bytes after `from`.
        let distance = (index - start) as u64;
        let highest_plausible = expected_seq.saturating_add(distance / FRAME_HEADER_BYTES);
        let Some(seq) = format::plausible_frame_seq(candidate, expected_seq..=highest_plausible)
        else {
            continue;
        };
        if format::parse_frame(candidate, journal_id).is_ok() {
            return Some((base_offset + index as u64, seq));
        }
    }
    None
}

/// What a read-only look at the journal finds: what a writer would replay and repair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection<S> {
    /// The replayed state; `None` when a writer would rebuild (damage, missing file).
    pub state: Option<S>,
    /// The repair a writer would make when it opens the journal.
    pub pending_repair: Option<Repair>,
    pub records_replayed: u64,
    /// Sequence number of the next record, when the journal is usable.
    pub next_seq: Option<u64>,
    pub journal_id: Option<u64>,
    pub generation: Option<u64>,
    pub log_start: Option<u64>,
    pub file_bytes: u64,
}

/// Replays the journal without writing anything: for readers holding the shared lock, and for
/// `status`. Torn tails and damage are reported in `pending_repair`, never repaired.
pub fn inspect<S: Replay, F: Storage>(storage: &F) -> Result<Inspection<S>, JournalError> {
    Ok(match load::<S, F>(storage)? {
        Loaded::Usable {
            position,
            state,
            records_replayed,
            file_bytes,
            torn_tail,
        } => Inspection {
            state: Some(state),
            pending_repair: torn_tail.map(|tail| Repair::TailCut {
                offset: tail.offset,
                discarded_bytes: tail.discarded_bytes,
            }),
            records_replayed,
            next_seq: Some(position.next_seq),
            journal_id: Some(position.journal_id),
            generation: Some(position.slot.generation),
            log_start: Some(position.slot.log_start),
            file_bytes,
        },
        Loaded::NeedsRebuild {
            reason, file_bytes, ..
        } => Inspection {
            state: None,
            pending_repair: Some(Repair::Rebuilt { reason }),
            records_replayed: 0,
            next_seq: None,
            journal_id: None,
            generation: None,
            log_start: None,
            file_bytes,
        },
    })
}

/// Whether decoding stopped at a torn tail or at damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopKind {
    TornTail,
    Damage,
}

/// Where and why [`decode_records`] stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodeStop {
    pub offset: u64,
    pub expected_seq: u64,
    pub kind: StopKind,
    pub detail: String,
}

/// One entry of [`decode_records`]: the checkpoint of a record, or one event of a record (the
/// events of one append share their record's `seq` and `offset`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Record<S, E> {
    Checkpoint(S),
    Event(E),
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedRecord<S, E> {
    /// Sequence number of the record (frame) it is in.
    pub seq: u64,
    /// File offset of that frame.
    pub offset: u64,
    /// Size of that frame.
    pub frame_bytes: u64,
    /// Position of the event inside its record (0 for a checkpoint).
    pub index_in_record: u32,
    pub record: Record<S, E>,
}

/// The journal as stored, for `pgbak status --journal`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecodedJournal<S, E> {
    pub journal_id: u64,
    pub generation: u64,
    pub log_start: u64,
    pub first_seq: u64,
    pub file_bytes: u64,
    /// Oldest first, newest last; one entry per checkpoint and per event.
    pub records: Vec<DecodedRecord<S, E>>,
    /// `None` when every byte up to the end of the file decoded.
    pub stopped: Option<DecodeStop>,
}

/// Lists the records of the log, oldest first, without applying them (so rejected transitions
/// are not detected here; [`inspect`] does that). A header that cannot be read is
/// [`JournalError::Unreadable`].
pub fn decode_records<S: Replay, F: Storage>(
    storage: &F,
) -> Result<DecodedJournal<S, S::Event>, JournalError> {
    let file_bytes = storage.len().map_err(JournalError::io(IoAction::Length))?;
    if file_bytes == 0 {
        return Err(JournalError::Unreadable {
            reason: RebuildReason::Missing,
        });
    }
    if file_bytes > MAX_JOURNAL_FILE_BYTES {
        let reason = RebuildReason::TooLarge {
            file_bytes,
            limit_bytes: MAX_JOURNAL_FILE_BYTES,
        };
        return Err(JournalError::Unreadable { reason });
    }
    let bytes = read_exact_at(storage, 0, file_bytes)?;
    let header_end = file_bytes.min(HEADER_BYTES) as usize;
    let header = format::parse_header(&bytes[..header_end])
        .map_err(|reason| JournalError::Unreadable { reason })?;
    let mut decoded = DecodedJournal {
        journal_id: header.journal_id,
        generation: header.slot.generation,
        log_start: header.slot.log_start,
        first_seq: header.slot.first_seq,
        file_bytes,
        records: Vec::new(),
        stopped: None,
    };
    if header.slot.log_start > file_bytes {
        decoded.stopped = Some(DecodeStop {
            offset: header.slot.log_start,
            expected_seq: header.slot.first_seq,
            kind: StopKind::Damage,
            detail: format!("the log starts beyond the end of the file ({file_bytes})"),
        });
        return Ok(decoded);
    }
    let mut offset = header.slot.log_start;
    let mut seq = header.slot.first_seq;
    if offset == file_bytes {
        decoded.stopped = Some(DecodeStop {
            offset,
            expected_seq: seq,
            kind: StopKind::Damage,
            detail: "the log is empty: its first record, the checkpoint, is missing".to_string(),
        });
    }
    while offset < file_bytes {
        let is_log_start = decoded.records.is_empty();
        let failure = match read_record::<S, S::Event>(&bytes, 0, offset, header.journal_id, seq) {
            Ok((_, Payload::Events(_))) if is_log_start => {
                Some("the log does not begin with a checkpoint".to_string())
            }
            Ok((frame, payload)) => {
                let frame_bytes = frame.total_bytes();
                let entry = |index_in_record: usize, record| DecodedRecord {
                    seq,
                    offset,
                    frame_bytes,
                    index_in_record: u32::try_from(index_in_record).unwrap_or(u32::MAX),
                    record,
                };
                match payload {
                    Payload::Checkpoint(state) => {
                        decoded.records.push(entry(0, Record::Checkpoint(state)));
                    }
                    Payload::Events(events) => decoded.records.extend(
                        events
                            .into_iter()
                            .enumerate()
                            .map(|(index, event)| entry(index, Record::Event(event))),
                    ),
                }
                offset += frame_bytes;
                seq = seq.saturating_add(1);
                None
            }
            Err(detail) => Some(detail),
        };
        if let Some(detail) = failure {
            let stop = classify_failure(
                &bytes,
                0,
                offset,
                seq,
                header.journal_id,
                is_log_start,
                detail,
            );
            decoded.stopped = Some(match stop {
                Stop::Torn { offset, detail } => DecodeStop {
                    offset,
                    expected_seq: seq,
                    kind: StopKind::TornTail,
                    detail,
                },
                Stop::Damaged {
                    offset,
                    expected_seq,
                    detail,
                }
                | Stop::Rejected {
                    seq: expected_seq,
                    offset,
                    detail,
                } => DecodeStop {
                    offset,
                    expected_seq,
                    kind: StopKind::Damage,
                    detail,
                },
            });
            break;
        }
    }
    Ok(decoded)
}
