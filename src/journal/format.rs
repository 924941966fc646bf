//! The journal's on-disk format, byte by byte (S-3.1). Everything that encodes or parses bytes of
//! `$PGBAK/pgbak.lock` lives here; nothing here does I/O.
//!
//! All integers are little-endian and fixed width. CRC-32C is the Castagnoli polynomial (the
//! `crc32c` crate; SSE4.2 / ARMv8 instructions where available).
//!
//! # File layout
//!
//! ```text
//! offset 0            HEADER_BYTES = 4096                       log_start ≥ 4096        EOF
//! | header: prefix, two commit slots, zeros | (dead bytes, only transiently) | frames ...  |
//! ```
//!
//! ## Header prefix, bytes 0..64
//!
//! | offset | size | field                                                               |
//! |-------:|-----:|---------------------------------------------------------------------|
//! |      0 |    8 | magic `b"PGBAKJNL"`                                                  |
//! |      8 |    4 | format version, `1`                                                 |
//! |     12 |    4 | header size in bytes, `4096`                                        |
//! |     16 |    8 | `journal_id`: identity of this incarnation of the journal, never 0   |
//! |     24 |   36 | reserved, written as zeros, ignored on read                        |
//! |     60 |    4 | CRC-32C of bytes 0..60                                              |
//!
//! Bytes 0..12 (magic and version) keep their meaning in every future version, so an older pgbak
//! can always tell "unknown version" from "damaged". The prefix is written only when the journal
//! is created or rebuilt; `journal_id` changes every time, which tells a process holding the
//! journal open that it was replaced (see `Journal::refresh`).
//!
//! Bytes 64..512 are zero.
//!
//! ## Commit slots, 64 bytes each, at offsets 512 and 1024
//!
//! | offset | size | field                                                               |
//! |-------:|-----:|---------------------------------------------------------------------|
//! |      0 |    8 | `generation`, 1 ..= 2^62                                            |
//! |      8 |    8 | `log_start`: file offset of the first frame, ≥ 4096                  |
//! |     16 |    8 | `first_seq`: sequence number of the frame at `log_start`, 1 ..= 2^62 |
//! |     24 |    8 | `journal_id`, equal to the prefix's (binds the slot to this header)  |
//! |     32 |   28 | reserved, written as zeros, ignored on read                        |
//! |     60 |    4 | CRC-32C of slot bytes 0..60                                         |
//!
//! A slot is valid if its checksum matches and its values are sane (as above). The valid slot with
//! the higher generation is the *active* one. Compaction writes only the inactive slot, so a torn
//! slot write leaves the other one in force. The slots sit in different 512-byte sectors so that a
//! torn write of one cannot damage the other. Bytes 1088..4096 are zero.
//!
//! ## Frames, from `log_start` to the end of the file
//!
//! | offset | size          | field                                                        |
//! |-------:|--------------:|--------------------------------------------------------------|
//! |      0 |             4 | `payload_len`, 1 ..= `MAX_RECORD_BYTES` (16 MiB)             |
//! |      4 |             8 | `seq`: sequence number of the record                         |
//! |     12 |             4 | CRC-32C of `journal_id (8, not stored) ‖ bytes 0..12 ‖ payload` |
//! |     16 | `payload_len` | payload: postcard encoding of a [`Payload`]                  |
//!
//! The checksum is seeded with the header's `journal_id` (as SQLite's WAL salts its frames), so
//! frames left over from an earlier incarnation of the journal can never pass as current ones.
//! Sequence numbers are consecutive from the active slot's `first_seq`. The first frame at
//! `log_start` is always a [`Payload::Checkpoint`] with `seq == first_seq`.
//!
//! **One frame per write.** Every write to a live log is exactly one frame: one append (however
//! many events) is one `Payload::Events`, a checkpoint is one `Payload::Checkpoint`. A write is not
//! atomic — the disk may persist its end before its beginning — and if an append were several
//! frames, a crash could leave its later frames valid behind a torn first one, which recovery
//! could not tell from damage before acknowledged records. As one checksummed unit it is either
//! all there or a torn tail.
//!
//! ## Payload: `Payload<S, E>`
//!
//! postcard 1.x: a varint variant index (`0` = `Checkpoint(S)`, `1` = `Events(Vec<E>)`) followed
//! by the postcard encoding of the value (for `Events`: a varint count, then each event). The
//! payload must be consumed exactly: trailing bytes are an error. New variants are appended,
//! never reordered or removed; the same rule holds for the state and event types inside, which
//! are part of this format.

use crate::journal::RebuildReason;
use serde::{Deserialize, Serialize};
use std::fmt;

/// First eight bytes of every journal.
pub const MAGIC: [u8; 8] = *b"PGBAKJNL";
/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header; the log never starts before it.
pub const HEADER_BYTES: u64 = 4096;
/// Size of the header prefix (magic, version, size, journal_id, reserved, checksum).
pub const PREFIX_BYTES: usize = 64;
/// Size of one commit slot.
pub const SLOT_BYTES: usize = 64;
/// File offsets of the two commit slots: separate 512-byte sectors.
pub const SLOT_OFFSETS: [u64; 2] = [512, 1024];
/// Size of a frame's fixed part (`payload_len`, `seq`, checksum).
pub const FRAME_HEADER_BYTES: u64 = 16;
/// Largest payload of one frame. A pgbak state is kilobytes; this only bounds damage: a corrupt
/// length field can never make a reader allocate or scan gigabytes.
pub const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

/// Largest sequence number a slot may hold. No journal gets near it (2^62 records), and with it
/// no arithmetic on values read from the file can overflow.
pub const MAX_SEQUENCE_NUMBER: u64 = 1 << 62;
/// Largest generation a slot may hold (two per compaction; same reasoning).
pub const MAX_GENERATION: u64 = 1 << 62;

/// Offset of the checksum inside the prefix and inside a slot: the last four of 64 bytes.
const CHECKSUM_OFFSET: usize = 60;

/// What a record (frame) holds on disk. The first record of the log is always a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload<S, E> {
    /// The whole state: replaces whatever replay had built so far.
    Checkpoint(S),
    /// The facts of one append, folded into the state in order with `Replay::apply`.
    Events(Vec<E>),
}

/// The borrowed twin of [`Payload`], for encoding without copying the state or the events. Same
/// variants in the same order, so it encodes byte for byte like `Payload<S, E>` (tested).
#[derive(Debug, Clone, Copy, Serialize)]
pub enum PayloadRef<'a, S, E> {
    Checkpoint(&'a S),
    Events(&'a [E]),
}

/// One commit slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitSlot {
    pub generation: u64,
    pub log_start: u64,
    pub first_seq: u64,
    pub journal_id: u64,
}

/// The parsed header: identity plus the active commit slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveHeader {
    pub journal_id: u64,
    /// Index into [`SLOT_OFFSETS`] of the winning slot.
    pub active_slot: usize,
    pub slot: CommitSlot,
}

/// Why a frame could not be read at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameProblem {
    /// Fewer than [`FRAME_HEADER_BYTES`] bytes remain.
    IncompleteHeader { available_bytes: u64 },
    /// `payload_len` is zero or above [`MAX_RECORD_BYTES`].
    BadLength { payload_bytes: u64 },
    /// The payload runs past the end of the file.
    PastEnd {
        payload_bytes: u64,
        available_bytes: u64,
    },
    /// The stored checksum does not match the frame.
    Checksum { stored: u32, computed: u32 },
}

impl fmt::Display for FrameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameProblem::IncompleteHeader { available_bytes } => write!(
                f,
                "only {available_bytes} bytes remain, fewer than a frame header \
                 ({FRAME_HEADER_BYTES})"
            ),
            FrameProblem::BadLength { payload_bytes } => write!(
                f,
                "payload length {payload_bytes} is outside 1 ..= {MAX_RECORD_BYTES}"
            ),
            FrameProblem::PastEnd {
                payload_bytes,
                available_bytes,
            } => write!(
                f,
                "the {payload_bytes}-byte payload runs past the end of the file ({available_bytes} \
                 bytes remain)"
            ),
            FrameProblem::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

/// A frame that passed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameView<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

impl FrameView<'_> {
    /// Bytes the frame occupies in the file.
    pub fn total_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES + self.payload.len() as u64
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The 64-byte header prefix for `journal_id`.
pub fn encode_prefix(journal_id: u64) -> [u8; PREFIX_BYTES] {
    let mut prefix = [0u8; PREFIX_BYTES];
    prefix[0..8].copy_from_slice(&MAGIC);
    prefix[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    prefix[12..16].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
    prefix[16..24].copy_from_slice(&journal_id.to_le_bytes());
    let checksum = crc32c::crc32c(&prefix[..CHECKSUM_OFFSET]);
    prefix[CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    prefix
}

/// The `journal_id` of a header prefix, checked in the order that makes the reason most useful:
/// blank, magic, version (bytes 0..12 are stable across versions), checksum, header size.
/// `header` is the file's first `min(file_bytes, HEADER_BYTES)` bytes.
pub fn parse_prefix(header: &[u8]) -> Result<u64, RebuildReason> {
    let visible = &header[..header.len().min(PREFIX_BYTES)];
    if visible.iter().all(|&byte| byte == 0) {
        return Err(RebuildReason::BlankHeader);
    }
    if visible.len() < MAGIC.len() || visible[..MAGIC.len()] != MAGIC {
        return Err(RebuildReason::BadMagic);
    }
    if (header.len() as u64) < HEADER_BYTES {
        return Err(RebuildReason::BadHeader {
            detail: format!(
                "the file ends at byte {}, inside the {HEADER_BYTES}-byte header",
                header.len()
            ),
        });
    }
    let version = read_u32(header, 8);
    if version == 0 {
        // Zero is never a version: these bytes were not written (a torn header write).
        return Err(RebuildReason::BadHeader {
            detail: "the format version field is zero: the header was not completely written"
                .to_string(),
        });
    }
    if version != FORMAT_VERSION {
        return Err(RebuildReason::UnknownVersion { found: version });
    }
    let stored = read_u32(header, CHECKSUM_OFFSET);
    let computed = crc32c::crc32c(&header[..CHECKSUM_OFFSET]);
    if stored != computed {
        return Err(RebuildReason::BadHeader {
            detail: format!(
                "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        });
    }
    let header_bytes = read_u32(header, 12);
    if u64::from(header_bytes) != HEADER_BYTES {
        return Err(RebuildReason::BadHeader {
            detail: format!("header size field is {header_bytes}, expected {HEADER_BYTES}"),
        });
    }
    let journal_id = read_u64(header, 16);
    if journal_id == 0 {
        return Err(RebuildReason::BadHeader {
            detail: "journal_id is zero".to_string(),
        });
    }
    Ok(journal_id)
}

/// The `journal_id` field of a header prefix, valid or not (`None` if the file is too short).
pub fn raw_journal_id(header: &[u8]) -> Option<u64> {
    (header.len() >= 24).then(|| read_u64(header, 16))
}

/// The 64 bytes of one commit slot.
pub fn encode_slot(slot: &CommitSlot) -> [u8; SLOT_BYTES] {
    let mut bytes = [0u8; SLOT_BYTES];
    bytes[0..8].copy_from_slice(&slot.generation.to_le_bytes());
    bytes[8..16].copy_from_slice(&slot.log_start.to_le_bytes());
    bytes[16..24].copy_from_slice(&slot.first_seq.to_le_bytes());
    bytes[24..32].copy_from_slice(&slot.journal_id.to_le_bytes());
    let checksum = crc32c::crc32c(&bytes[..CHECKSUM_OFFSET]);
    bytes[CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

/// A commit slot if it is valid for `journal_id`, or why not.
pub fn parse_slot(bytes: &[u8], journal_id: u64) -> Result<CommitSlot, String> {
    if bytes.len() != SLOT_BYTES {
        return Err(format!(
            "slot is {} bytes, expected {SLOT_BYTES}",
            bytes.len()
        ));
    }
    let stored = read_u32(bytes, CHECKSUM_OFFSET);
    let computed = crc32c::crc32c(&bytes[..CHECKSUM_OFFSET]);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let slot = CommitSlot {
        generation: read_u64(bytes, 0),
        log_start: read_u64(bytes, 8),
        first_seq: read_u64(bytes, 16),
        journal_id: read_u64(bytes, 24),
    };
    if slot.journal_id != journal_id {
        return Err(format!(
            "belongs to journal {:#018x}, not {journal_id:#018x}",
            slot.journal_id
        ));
    }
    let sane = (1..=MAX_GENERATION).contains(&slot.generation)
        && (1..=MAX_SEQUENCE_NUMBER).contains(&slot.first_seq)
        && slot.log_start >= HEADER_BYTES;
    if !sane {
        return Err(format!(
            "insane values (generation {}, log_start {}, first_seq {})",
            slot.generation, slot.log_start, slot.first_seq
        ));
    }
    Ok(slot)
}

/// A whole 4096-byte header: prefix, the given slots (`None` leaves a slot zeroed, i.e.
/// invalid), zeros elsewhere.
pub fn encode_header(journal_id: u64, slots: [Option<CommitSlot>; 2]) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_BYTES as usize];
    header[..PREFIX_BYTES].copy_from_slice(&encode_prefix(journal_id));
    for (index, slot) in slots.iter().enumerate() {
        if let Some(slot) = slot {
            let at = SLOT_OFFSETS[index] as usize;
            header[at..at + SLOT_BYTES].copy_from_slice(&encode_slot(slot));
        }
    }
    header
}

/// The prefix and the winning slot of `header` (the file's first `min(file_bytes, 4096)` bytes).
pub fn parse_header(header: &[u8]) -> Result<ActiveHeader, RebuildReason> {
    let journal_id = parse_prefix(header)?;
    let mut best: Option<ActiveHeader> = None;
    let mut problems = Vec::new();
    for (index, &offset) in SLOT_OFFSETS.iter().enumerate() {
        let at = offset as usize;
        match parse_slot(&header[at..at + SLOT_BYTES], journal_id) {
            Ok(slot) => {
                if best.is_none_or(|current| slot.generation > current.slot.generation) {
                    best = Some(ActiveHeader {
                        journal_id,
                        active_slot: index,
                        slot,
                    });
                }
            }
            Err(problem) => problems.push(format!("slot at {offset}: {problem}")),
        }
    }
    best.ok_or_else(|| RebuildReason::BadHeader {
        detail: format!("neither commit slot is valid ({})", problems.join("; ")),
    })
}

/// The checksum of a frame: `journal_id ‖ payload_len ‖ seq ‖ payload`.
fn frame_checksum(journal_id: u64, length_and_seq: &[u8], payload: &[u8]) -> u32 {
    let seeded = crc32c::crc32c(&journal_id.to_le_bytes());
    let with_header = crc32c::crc32c_append(seeded, length_and_seq);
    crc32c::crc32c_append(with_header, payload)
}

/// Appends the frame of `payload` to `out`. The caller checks the payload size against
/// [`MAX_RECORD_BYTES`] first; a bigger payload is a bug, reported as `Err` with its size.
pub fn encode_frame(
    journal_id: u64,
    seq: u64,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), u64> {
    let payload_bytes = payload.len() as u64;
    if payload.is_empty() || payload_bytes > u64::from(MAX_RECORD_BYTES) {
        return Err(payload_bytes);
    }
    let mut length_and_seq = [0u8; 12];
    length_and_seq[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    length_and_seq[4..12].copy_from_slice(&seq.to_le_bytes());
    let checksum = frame_checksum(journal_id, &length_and_seq, payload);
    out.extend_from_slice(&length_and_seq);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The frame at the start of `bytes` (which run to the end of the file), if it is complete and
/// its checksum matches. Sequence numbers are the caller's business.
pub fn parse_frame(bytes: &[u8], journal_id: u64) -> Result<FrameView<'_>, FrameProblem> {
    let available_bytes = bytes.len() as u64;
    if available_bytes < FRAME_HEADER_BYTES {
        return Err(FrameProblem::IncompleteHeader { available_bytes });
    }
    let payload_bytes = u64::from(read_u32(bytes, 0));
    if payload_bytes == 0 || payload_bytes > u64::from(MAX_RECORD_BYTES) {
        return Err(FrameProblem::BadLength { payload_bytes });
    }
    if payload_bytes > available_bytes - FRAME_HEADER_BYTES {
        return Err(FrameProblem::PastEnd {
            payload_bytes,
            available_bytes: available_bytes - FRAME_HEADER_BYTES,
        });
    }
    let seq = read_u64(bytes, 4);
    let header_end = FRAME_HEADER_BYTES as usize;
    let payload = &bytes[header_end..header_end + payload_bytes as usize];
    let stored = read_u32(bytes, 12);
    let computed = frame_checksum(journal_id, &bytes[..12], payload);
    if stored != computed {
        return Err(FrameProblem::Checksum { stored, computed });
    }
    Ok(FrameView { seq, payload })
}

/// Cheap pre-check used when scanning damaged bytes: the frame header at the start of `bytes`
/// has a plausible length that fits, and a sequence number in `seq_range`. Only candidates that
/// pass are checksummed.
pub fn plausible_frame_seq(bytes: &[u8], seq_range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    if (bytes.len() as u64) < FRAME_HEADER_BYTES {
        return None;
    }
    let payload_bytes = u64::from(read_u32(bytes, 0));
    let seq = read_u64(bytes, 4);
    let fits = payload_bytes != 0
        && payload_bytes <= u64::from(MAX_RECORD_BYTES)
        && payload_bytes <= bytes.len() as u64 - FRAME_HEADER_BYTES;
    (fits && seq_range.contains(&seq)).then_some(seq)
}

/// postcard encoding of a payload (see [`PayloadRef`]).
pub fn encode_payload<S: Serialize, E: Serialize>(
    payload: &PayloadRef<'_, S, E>,
) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(payload)
}

/// Decodes a payload; all of its bytes must be consumed.
pub fn decode_payload<S, E>(payload: &[u8]) -> Result<Payload<S, E>, String>
where
    S: serde::de::DeserializeOwned,
    E: serde::de::DeserializeOwned,
{
    match postcard::take_from_bytes::<Payload<S, E>>(payload) {
        Ok((record, [])) => Ok(record),
        Ok((_, rest)) => Err(format!(
            "the payload decodes but {} trailing bytes remain",
            rest.len()
        )),
        Err(error) => Err(format!("the payload does not decode: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn any_slot() -> impl Strategy<Value = CommitSlot> {
        (
            1..=MAX_GENERATION,
            HEADER_BYTES..u64::MAX,
            1..=MAX_SEQUENCE_NUMBER,
            1..u64::MAX,
        )
            .prop_map(
                |(generation, log_start, first_seq, journal_id)| CommitSlot {
                    generation,
                    log_start,
                    first_seq,
                    journal_id,
                },
            )
    }

    #[test]
    fn prefix_layout_is_as_documented() {
        let prefix = encode_prefix(0x0102_0304_0506_0708);
        assert_eq!(&prefix[0..8], b"PGBAKJNL");
        assert_eq!(&prefix[8..12], &[1, 0, 0, 0]);
        assert_eq!(&prefix[12..16], &[0x00, 0x10, 0, 0]);
        assert_eq!(&prefix[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert!(prefix[24..60].iter().all(|&b| b == 0));
        assert_eq!(
            &prefix[60..64],
            &crc32c::crc32c(&prefix[..60]).to_le_bytes()
        );
    }

    #[test]
    fn frame_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_frame(7, 0x1122, b"abc", &mut out).unwrap();
        assert_eq!(out.len(), 16 + 3);
        assert_eq!(&out[0..4], &[3, 0, 0, 0]);
        assert_eq!(&out[4..12], &[0x22, 0x11, 0, 0, 0, 0, 0, 0]);
        let mut covered = 7u64.to_le_bytes().to_vec();
        covered.extend_from_slice(&out[0..12]);
        covered.extend_from_slice(b"abc");
        assert_eq!(&out[12..16], &crc32c::crc32c(&covered).to_le_bytes());
        assert_eq!(&out[16..], b"abc");
    }

    #[test]
    fn payload_variant_indexes_are_stable() {
        // The format's compatibility rule: Checkpoint is variant 0, Events is variant 1.
        let checkpoint = encode_payload::<u8, u8>(&PayloadRef::Checkpoint(&5)).unwrap();
        let events = encode_payload::<u8, u8>(&PayloadRef::Events(&[5, 6])).unwrap();
        assert_eq!(checkpoint, vec![0, 5]);
        assert_eq!(events, vec![1, 2, 5, 6]);
    }

    #[test]
    fn frames_from_another_journal_do_not_pass() {
        let mut out = Vec::new();
        encode_frame(1, 1, b"payload", &mut out).unwrap();
        assert!(matches!(
            parse_frame(&out, 2),
            Err(FrameProblem::Checksum { .. })
        ));
    }

    #[test]
    fn header_reasons_are_specific() {
        assert_eq!(parse_header(&[0u8; 100]), Err(RebuildReason::BlankHeader));
        assert_eq!(parse_header(b"PGBAKJN"), Err(RebuildReason::BadMagic));
        assert_eq!(
            parse_header(b"NOTAJOURNAL...."),
            Err(RebuildReason::BadMagic)
        );
        assert!(matches!(
            parse_header(b"PGBAKJNL"),
            Err(RebuildReason::BadHeader { .. })
        ));
        let mut header = encode_header(9, [None, None]);
        assert!(matches!(
            parse_header(&header),
            Err(RebuildReason::BadHeader { .. })
        ));
        header[8] = 2;
        assert_eq!(
            parse_header(&header),
            Err(RebuildReason::UnknownVersion { found: 2 })
        );
    }

    #[test]
    fn slot_with_the_higher_generation_wins_and_a_damaged_one_is_skipped() {
        let older = CommitSlot {
            generation: 4,
            log_start: 4096,
            first_seq: 10,
            journal_id: 9,
        };
        let newer = CommitSlot {
            generation: 5,
            log_start: 9000,
            first_seq: 20,
            journal_id: 9,
        };
        let mut header = encode_header(9, [Some(older), Some(newer)]);
        assert_eq!(parse_header(&header).unwrap().slot, newer);
        header[1024 + 3] ^= 0x40;
        assert_eq!(parse_header(&header).unwrap().slot, older);
        let foreign = CommitSlot {
            journal_id: 8,
            ..newer
        };
        let header = encode_header(9, [Some(older), Some(foreign)]);
        assert_eq!(parse_header(&header).unwrap().slot, older);
    }

    #[test]
    fn slot_values_that_could_overflow_are_refused() {
        let sane = CommitSlot {
            generation: 4,
            log_start: 4096,
            first_seq: 10,
            journal_id: 9,
        };
        assert_eq!(parse_slot(&encode_slot(&sane), 9), Ok(sane));
        for insane in [
            CommitSlot {
                first_seq: u64::MAX,
                ..sane
            },
            CommitSlot {
                first_seq: MAX_SEQUENCE_NUMBER + 1,
                ..sane
            },
            CommitSlot {
                generation: u64::MAX,
                ..sane
            },
            CommitSlot {
                generation: 0,
                ..sane
            },
            CommitSlot {
                first_seq: 0,
                ..sane
            },
            CommitSlot {
                log_start: 4095,
                ..sane
            },
        ] {
            assert!(parse_slot(&encode_slot(&insane), 9).is_err(), "{insane:?}");
        }
    }

    proptest! {
        #![proptest_config(crate::journal::tests::proptest_config(256))]

        #[test]
        fn headers_round_trip(
            journal_id in 1..u64::MAX,
            a in proptest::option::of(any_slot()),
            b in any_slot(),
        ) {
            let a = a.map(|slot| CommitSlot { journal_id, ..slot });
            let b = CommitSlot { journal_id, ..b };
            let header = encode_header(journal_id, [a, Some(b)]);
            prop_assert_eq!(header.len() as u64, HEADER_BYTES);
            let parsed = parse_header(&header).unwrap();
            prop_assert_eq!(parsed.journal_id, journal_id);
            let expected = match a {
                Some(a) if a.generation > b.generation => (0, a),
                _ => (1, b),
            };
            prop_assert_eq!((parsed.active_slot, parsed.slot), expected);
        }

        #[test]
        fn slots_round_trip(slot in any_slot()) {
            prop_assert_eq!(parse_slot(&encode_slot(&slot), slot.journal_id), Ok(slot));
        }

        #[test]
        fn every_bit_flip_in_a_slot_is_detected(slot in any_slot(), bit in 0..(SLOT_BYTES * 8)) {
            let mut bytes = encode_slot(&slot);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(parse_slot(&bytes, slot.journal_id) != Ok(slot));
        }

        #[test]
        fn every_bit_flip_in_the_prefix_is_detected(
            journal_id in 1..u64::MAX,
            bit in 0..(PREFIX_BYTES * 8),
        ) {
            let mut header = encode_header(journal_id, [None, None]);
            header[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(parse_prefix(&header) != Ok(journal_id));
        }

        #[test]
        fn frames_round_trip(
            journal_id in any::<u64>(),
            seq in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 1..600),
            trailing in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut bytes = Vec::new();
            encode_frame(journal_id, seq, &payload, &mut bytes).unwrap();
            let frame_bytes = bytes.len() as u64;
            bytes.extend_from_slice(&trailing);
            let frame = parse_frame(&bytes, journal_id).unwrap();
            prop_assert_eq!(frame.seq, seq);
            prop_assert_eq!(frame.payload, &payload[..]);
            prop_assert_eq!(frame.total_bytes(), frame_bytes);
            prop_assert_eq!(plausible_frame_seq(&bytes, seq..=seq), Some(seq));
        }

        #[test]
        fn every_bit_flip_in_a_frame_is_detected(
            journal_id in any::<u64>(),
            seq in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 1..100),
            bit in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            encode_frame(journal_id, seq, &payload, &mut bytes).unwrap();
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            match parse_frame(&bytes, journal_id) {
                Err(_) => {}
                Ok(frame) => prop_assert!(frame.seq != seq || frame.payload != &payload[..]),
            }
        }

        #[test]
        fn every_truncation_of_a_frame_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..100),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            encode_frame(3, 4, &payload, &mut bytes).unwrap();
            let cut = cut.index(bytes.len());
            prop_assert!(parse_frame(&bytes[..cut], 3).is_err());
        }

        #[test]
        fn payloads_round_trip_and_borrowed_payloads_encode_identically(
            checkpoint in proptest::collection::btree_map(any::<u32>(), any::<String>(), 0..20),
            events in proptest::collection::vec(
                proptest::option::of(any::<(u64, i32, String)>()),
                0..10,
            ),
        ) {
            type State = BTreeMap<u32, String>;
            type Event = Option<(u64, i32, String)>;
            let payload =
                encode_payload::<State, Event>(&PayloadRef::Checkpoint(&checkpoint)).unwrap();
            let owned = Payload::<State, Event>::Checkpoint(checkpoint);
            prop_assert_eq!(&postcard::to_stdvec(&owned).unwrap(), &payload);
            prop_assert_eq!(decode_payload::<State, Event>(&payload), Ok(owned));
            let payload = encode_payload::<State, Event>(&PayloadRef::Events(&events)).unwrap();
            let owned = Payload::<State, Event>::Events(events);
            prop_assert_eq!(&postcard::to_stdvec(&owned).unwrap(), &payload);
            prop_assert_eq!(decode_payload::<State, Event>(&payload), Ok(owned));
        }

        #[test]
        fn trailing_bytes_after_a_payload_are_refused(value in any::<u32>(), extra in 1..10usize) {
            let mut payload = encode_payload::<u32, u32>(&PayloadRef::Checkpoint(&value)).unwrap();
            payload.extend(std::iter::repeat_n(0u8, extra));
            prop_assert!(decode_payload::<u32, u32>(&payload).is_err());
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
            journal_id in any::<u64>(),
        ) {
            let _ = parse_header(&bytes[..bytes.len().min(HEADER_BYTES as usize)]);
            let _ = parse_frame(&bytes, journal_id);
            let _ = plausible_frame_seq(&bytes, 0..=u64::MAX);
            let _ = decode_payload::<BTreeMap<u32, String>, Vec<(u64, String)>>(&bytes);
        }
    }
}
