//! The journal inside `$PGBAK/pgbak.lock`: every fact the machine folds, framed, checksummed and
//! fsynced before pgbak acts on it (S-3.1, S-3.2), recovered after a crash (S-3.3) and kept small
//! by crash-safe compaction (S-3.4).
//!
//! Owns: the [`Replay`] contract between the journal and the state it replays, the public types
//! ([`Journal`], [`Repair`], [`RebuildReason`], [`JournalError`], [`OpenError`]), and through its
//! submodules the byte format ([`format`](mod@format)), the storage abstraction ([`storage`]),
//! recovery ([`recovery`]), the writer ([`writer`]) and compaction ([`compaction`]).
//! (`pgbak` holds `impl Replay` for the machine's state.)
//!
//! The journal is generic over the state it replays, so it is tested here with a toy state and
//! used by pgbak with the machine's state. It never locks: the caller holds the OFD lock of S-3.5
//! (exclusive for [`Journal`], shared is enough for [`inspect`] and [`decode_records`]). It never
//! reads the clock or draws random numbers either: `now` and the seed of a new journal identity
//! are parameters.
//!
//! # Recovery mode: "cut a torn tail, rebuild on anything else"
//!
//! Like redb's and fjall's named recovery modes, there is exactly one, and it is this:
//!
//! - Records are replayed from the start of the log. The first record that cannot be used (short,
//!   bad checksum, wrong sequence number, undecodable, or a log that does not begin with a
//!   checkpoint) ends the replay.
//! - If it is not the log's first record and no valid record with its sequence number or a later
//!   one exists anywhere after it, the failure is a **torn tail**: the last append before a
//!   crash was incomplete, nothing acknowledged is lost. A writer cuts the tail off and records
//!   [`Repair::TailCut`]. The stale bytes an interrupted compaction leaves behind (older records,
//!   lower sequence numbers) are a torn tail by the same rule, never damage.
//! - Anything else is **damage**, and is never guessed around: a valid record follows the failure
//!   (cutting there would silently drop acknowledged facts), the header or both commit slots are
//!   invalid, the magic is wrong, the format version unknown, the file missing or empty, or the
//!   machine rejects a recorded transition. The state is then rebuilt from the directory tree (the
//!   files are the ground truth, S-3.3) through a caller-provided function, and the file is
//!   reinitialized **in place** (other processes hold OFD locks on it, so it is never deleted or
//!   renamed) with a new journal identity, a checkpoint of the rebuilt state and a
//!   [`Repair::Rebuilt`] record, so `status` can say what happened.
//!
//! Invariants kept by the whole module:
//! - An append is acknowledged (returns `Ok`) only after its bytes are fsynced, and it is one
//!   record in one frame, so a crash can never leave half of it (see `format`).
//! - Replay after a crash at any instant yields the state after every acknowledged append, plus
//!   at most the one in flight: never less, never half an append, never a guessed state.
//! - The log always begins with a checkpoint whose sequence number is the commit slot's
//!   `first_seq`, so a log whose first record is lost is damage, never an empty state.
//! - No input bytes make any function here panic.

pub mod compaction;
pub mod format;
pub mod pgbak;
pub mod recovery;
pub mod storage;
pub mod writer;

#[cfg(test)]
mod tests;

use crate::hint::OperatorHint;
use crate::timestamp::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

pub use compaction::{CompactionOutcome, CompactionSkipped, file_bytes_bound};
pub use format::{
    FORMAT_VERSION, FRAME_HEADER_BYTES, HEADER_BYTES, MAGIC, MAX_RECORD_BYTES, Payload, PayloadRef,
};
pub use recovery::{
    DecodeStop, DecodedJournal, DecodedRecord, Inspection, Record, StopKind, decode_records,
    inspect,
};
pub use storage::{CrashImage, MemoryStorage, Storage, StorageOp};
pub use writer::{
    AppendReport, Journal, JournalOptions, OpenReport, RebuildRequest, RefreshReport,
};

/// Default size of the log beyond the latest checkpoint that triggers a compaction (S-3.4).
/// One MiB holds tens of thousands of WAL-archived facts and replays in milliseconds.
pub const COMPACTION_THRESHOLD_BYTES: u64 = 1024 * 1024;

/// Largest compaction threshold a caller may configure: it bounds [`MAX_JOURNAL_FILE_BYTES`].
pub const MAX_COMPACTION_THRESHOLD_BYTES: u64 = 64 * 1024 * 1024;

/// No valid journal is ever larger than this (the bound of [`file_bytes_bound`] with every limit
/// at its maximum, with room to spare). A larger file is rebuilt without reading all of it.
pub const MAX_JOURNAL_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// At most this many bytes of a damaged journal are handed to the caller for forensics.
pub const MAX_DAMAGED_COPY_BYTES: u64 = 64 * 1024 * 1024;

// The bound of `file_bytes_bound` with every limit at its maximum (the largest append and the
// largest checkpoint are each one frame), plus the transient extra checkpoint and repair record
// of a crash mid-compaction, fits.
const _: () = assert!(
    HEADER_BYTES
        + MAX_COMPACTION_THRESHOLD_BYTES
        + 5 * (MAX_RECORD_BYTES as u64 + FRAME_HEADER_BYTES)
        <= MAX_JOURNAL_FILE_BYTES
);

/// The contract between the journal and the state it replays (for pgbak: the machine's state).
///
/// `apply` must be deterministic: the journal replays the same events after a crash and must reach
/// the same state (S-3.2). A checkpoint must decode to a state equal (`==`) to the one encoded.
pub trait Replay: Clone + PartialEq + fmt::Debug + Serialize + serde::de::DeserializeOwned {
    /// One recorded fact.
    type Event: Clone + PartialEq + fmt::Debug + Serialize + serde::de::DeserializeOwned;
    /// Why `apply` refused an event.
    type Rejection: fmt::Display;

    /// The state of a journal with no records: what replay starts from before the first
    /// checkpoint replaces it.
    fn initial() -> Self;

    /// Folds one recorded fact into the state; `Err` if the machine rejects the transition.
    /// On `Err` the state may be left modified: the journal only ever applies to a copy it
    /// throws away on rejection.
    fn apply(&mut self, event: &Self::Event) -> Result<(), Self::Rejection>;

    /// The fact recorded after a repair, so the history and `status` show it (S-3.3). `apply`
    /// must accept it in every state: a rejected repair event fails the open.
    fn repair_event(repair: &Repair, at: UnixMillis) -> Self::Event;
}

/// What recovery did to the journal file.
///
/// Encoded inside the machine's repair events, so it is part of the journal format: new variants
/// are appended, never reordered or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Repair {
    /// A torn last append was cut off at `offset`; `discarded_bytes` bytes held no valid record.
    TailCut { offset: u64, discarded_bytes: u64 },
    /// The journal could not be trusted; the state was rebuilt from the directory tree.
    Rebuilt { reason: RebuildReason },
}

impl Repair {
    /// Whether this repair means something was wrong beyond a crash mid-write. A torn tail and a
    /// missing file (first run, or an empty `$PGBAK`) are not damage.
    pub fn is_damage(&self) -> bool {
        match self {
            Repair::TailCut { .. } => false,
            Repair::Rebuilt { reason } => reason.is_damage(),
        }
    }
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::TailCut {
                offset,
                discarded_bytes,
            } => write!(
                f,
                "cut off a torn record at offset {offset} ({discarded_bytes} bytes): the last \
                 write before a crash was incomplete"
            ),
            Repair::Rebuilt { reason } => {
                write!(
                    f,
                    "rebuilt the state from the backup directories because {reason}"
                )
            }
        }
    }
}

/// Why the journal was rebuilt. Each reads as one clear line after "because".
///
/// Part of the journal format (inside repair events): new variants are appended, never reordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RebuildReason {
    /// The file did not exist or had no bytes: a first run, or somebody deleted it.
    Missing,
    /// The first bytes of the header are all zeros: the journal's creation or an earlier rebuild
    /// was interrupted by a crash (both blank the header first), or the file was overwritten.
    BlankHeader,
    /// The file does not start with [`MAGIC`].
    BadMagic,
    /// The header names a format version this pgbak cannot read.
    UnknownVersion { found: u32 },
    /// The header or both commit slots are invalid.
    BadHeader { detail: String },
    /// The file is larger than any journal pgbak writes.
    TooLarge { file_bytes: u64, limit_bytes: u64 },
    /// The record with sequence number `expected_seq` at `offset` cannot be used, and it is not
    /// a torn tail (a valid record follows it, or it is the log's first record).
    Damaged {
        offset: u64,
        expected_seq: u64,
        detail: String,
    },
    /// The machine rejects the transition recorded by record `seq` at `offset`.
    RejectedTransition {
        seq: u64,
        offset: u64,
        detail: String,
    },
}

impl RebuildReason {
    /// Whether this is damage worth an operator's attention. A missing or empty file is the
    /// normal state of a fresh `$PGBAK`.
    pub fn is_damage(&self) -> bool {
        !matches!(self, RebuildReason::Missing)
    }
}

impl fmt::Display for RebuildReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebuildReason::Missing => write!(f, "the journal file was missing or empty"),
            RebuildReason::BlankHeader => write!(
                f,
                "the journal header is blank: its creation or an earlier rebuild was interrupted \
                 by a crash, or the file was overwritten"
            ),
            RebuildReason::BadMagic => write!(
                f,
                "the file does not start with the journal magic \"PGBAKJNL\": it is not a pgbak \
                 journal or its header was overwritten"
            ),
            RebuildReason::UnknownVersion { found } => write!(
                f,
                "the journal has format version {found}, which this pgbak cannot read (it reads \
                 version {FORMAT_VERSION})"
            ),
            RebuildReason::BadHeader { detail } => {
                write!(f, "the journal header is invalid: {detail}")
            }
            RebuildReason::TooLarge {
                file_bytes,
                limit_bytes,
            } => write!(
                f,
                "the journal file is {file_bytes} bytes, larger than any journal pgbak writes \
                 ({limit_bytes} bytes)"
            ),
            RebuildReason::Damaged {
                offset,
                expected_seq,
                detail,
            } => {
                write!(
                    f,
                    "record {expected_seq} at offset {offset} is damaged: {detail}"
                )
            }
            RebuildReason::RejectedTransition {
                seq,
                offset,
                detail,
            } => write!(
                f,
                "record {seq} at offset {offset} records a transition the state machine rejects: \
                 {detail}"
            ),
        }
    }
}

/// Which storage call failed, with the offset and size it was about: an error names what it is
/// about, so the operator can find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    Length,
    Read { offset: u64, bytes: u64 },
    Write { offset: u64, bytes: u64 },
    SetLength { bytes: u64 },
    Sync,
}

impl fmt::Display for IoAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoAction::Length => write!(f, "reading the file length"),
            IoAction::Read { offset, bytes } => {
                write!(f, "reading {bytes} bytes at offset {offset}")
            }
            IoAction::Write { offset, bytes } => {
                write!(f, "writing {bytes} bytes at offset {offset}")
            }
            IoAction::SetLength { bytes } => write!(f, "setting the file length to {bytes} bytes"),
            IoAction::Sync => write!(f, "fsync"),
        }
    }
}

/// The journal layer's errors. Display is subject-first without the subject: callers prefix it
/// with `journal $PGBAK/pgbak.lock: ` (the journal does not know the path of its storage).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{action} failed")]
    Io {
        action: IoAction,
        #[source]
        source: io::Error,
    },
    #[error(
        "event {index} of the batch was rejected by the state machine, nothing was written: \
         {detail}"
    )]
    EventRejected { index: usize, detail: String },
    #[error("the repair record was rejected by the state machine: {detail}")]
    RepairEventRejected { detail: String },
    #[error(
        "record {seq} encodes to {payload_bytes} bytes, more than the limit of {limit_bytes} \
         (one append is one record)"
    )]
    RecordTooLarge {
        seq: u64,
        payload_bytes: u64,
        limit_bytes: u64,
    },
    #[error("record {seq} could not be encoded: {detail}")]
    Encode { seq: u64, detail: String },
    #[error("the journal must be rebuilt: {reason}")]
    NeedsRebuild { reason: RebuildReason },
    #[error("the journal cannot be read: {reason}")]
    Unreadable { reason: RebuildReason },
    #[error("invalid journal options: {detail}")]
    InvalidOptions { detail: String },
}

impl JournalError {
    pub(crate) fn io(action: IoAction) -> impl FnOnce(io::Error) -> JournalError {
        move |source| JournalError::Io { action, source }
    }
}

impl OperatorHint for JournalError {
    fn hint(&self) -> Option<String> {
        match self {
            JournalError::Io { .. } => Some(
                "check the file system that holds $PGBAK: is it full, read-only or failing \
                 (see dmesg)?"
                    .to_string(),
            ),
            JournalError::NeedsRebuild { .. } => Some(
                "run the command again: it rebuilds the journal from the backup directories"
                    .to_string(),
            ),
            JournalError::Unreadable { .. } => Some(
                "any pgbak command that writes (e.g. `pgbak sync`) rebuilds the journal from the \
                 backup directories"
                    .to_string(),
            ),
            JournalError::EventRejected { .. }
            | JournalError::RepairEventRejected { .. }
            | JournalError::RecordTooLarge { .. }
            | JournalError::Encode { .. } => Some(
                "this is a bug in pgbak: please report it with the output of \
                 `pgbak status --journal`"
                    .to_string(),
            ),
            JournalError::InvalidOptions { .. } => {
                Some("check the journal settings in $PGBAK/config.toml".to_string())
            }
        }
    }
}

/// Why [`Journal::open`] failed: the journal itself, or the caller's rebuild function.
#[derive(Debug, thiserror::Error)]
pub enum OpenError<E> {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the journal needed a rebuild because {reason}, and the rebuild failed")]
    RebuildFailed {
        reason: RebuildReason,
        #[source]
        source: E,
    },
}

impl<E> OperatorHint for OpenError<E> {
    fn hint(&self) -> Option<String> {
        match self {
            OpenError::Journal(error) => error.hint(),
            OpenError::RebuildFailed { .. } => None,
        }
    }
}
