//! The archive path of `pgbak wal PATH` (S-2.1 – S-2.7): check the file, compress it once,
//! store it in every open backup directory, record it in the journal.
//!
//! Owns: [`archive_wal`], its [`ArchiveOutcome`] and [`ArchiveError`], and the rules for what
//! `wal` accepts (names, sizes, file types) and how it treats a name that is already stored.
//!
//! The steps, in order, and why:
//! 1. Check the input (S-2.1): the name parses as a [`WalFileName`]; the path is a regular file
//!    (a FIFO is opened non-blocking, so a wrong path never hangs the archiver); a segment or
//!    `.partial` is a power of two between 1 MiB and 1 GiB, a history or backup history file
//!    holds 1 byte to [`HISTORY_FILE_SIZE_MAX_BYTES`]. Nothing is created in `$PGBAK` before
//!    the input passed, so a refused call leaves no trace.
//! 2. and 3. Read it once and compress it (S-2.2) with the zstd library into an unnamed
//!    `O_TMPFILE` in `$PGBAK`, a window of [`COMPRESS_WINDOW_BYTES`] at a time (mapped,
//!    compressed, unmapped): one standard frame per window, each with the content size and the
//!    checksum flag, written one after the other; level and worker threads from `[wal]` in
//!    the config. A 16 MiB segment (the normal case) is one window and one frame; a 1 GiB one
//!    (the limit) is 64, in the same memory. The file's identity, size and times are compared
//!    before and after the read, so the frames are one version of it, and that one read is
//!    the only one: a duplicate is compared with the compressed file this call wrote, never
//!    with a second read of the input that could see different content. All of this happens
//!    before the journal is even opened, so the journal lock is never held while compressing
//!    (S-2.6).
//! 4. Choose the targets under the journal lock: refresh the journal, ask the machine
//!    ([`archive_targets`](crate::machine::archive_targets)). If no directory is open, record `DirectoryOpened` right there
//!    (intent before `mkdir`, S-3.2), under the same lock hold, so concurrent `wal` calls open
//!    exactly one directory. Then, without the lock, create `TIMESTAMP/pg_wal/` as needed and
//!    hard-link the file as `NAME.zst` into every target (S-2.7: compressed once), each link
//!    followed by a directory fsync (S-2.3).
//! 5. Record `WalArchived` under the journal lock, but only after checking, in that same lock
//!    hold, that the refreshed state names no open directory this call has not linked into (a
//!    sync may have opened a pending directory meanwhile); if it does, link there too and try
//!    again (at most [`TARGET_ATTEMPTS_MAX`] lock holds in all). Only after that append
//!    (fsynced) does `archive_wal` return `Ok`: the ack point of S-2.3.
//!
//! The files, in the order the data flows: `input` (step 1), `compress` (2, 3), `store`
//! (4, 5), with `existing` (a copy already stored, S-2.4) and `conflicts` (S-2.10) beside
//! it; `error` holds [`ArchiveError`]; `frames` reads a stored file's size back for `status`.
//!
//! Invariants kept:
//! - An archived file is never overwritten or replaced (S-2.4): links fail with `EEXIST`, and
//!   an existing `NAME.zst` is compared, every frame decompressed, with the compressed input.
//!   Identical: made durable and recorded with `already_present`. Different (or undecodable,
//!   or not a regular file: its type is checked first and it is opened non-blocking, so a FIFO
//!   never hangs the archiver): the call fails, and the rejected compressed bytes are kept as
//!   `$PGBAK/conflicts/NAME.TIMESTAMP.zst`, once per distinct content (PostgreSQL retries
//!   forever), while `conflicts/` stays within `wal.conflicts_max_bytes` (S-2.10).
//! - A crash at any moment leaves no partial file under any name: the bytes live in an unnamed
//!   inode until they are complete and fsynced (see `durable`). A full `$PGBAK` (S-8.5) is the
//!   same: the unnamed inode vanishes with the process, and the error says the disk is full.
//! - A directory pgbak did not open is never created here, except a pending one the journal
//!   says is open (the sync records `DirectoryOpened` before its `mkdir`), and its `TIMESTAMP/`
//!   only under the journal lock, in the hold that saw it pending: the sync records a failed
//!   base backup under that lock before removing the directory, so a removal always comes
//!   after such a `mkdir`. Outside the lock only `TIMESTAMP/pg_wal/` is created, which fails
//!   once `TIMESTAMP/` is gone: a directory that vanished (a failed directory the sync removed)
//!   is dropped from the targets, never resurrected.
//! - Every file is 0600 and every directory 0700 whatever the umask (S-1.3), as `durable`
//!   creates them; every descriptor is `O_CLOEXEC`.
//! - Bounded: the input by [`WAL_SEGMENT_SIZE_MAX_BYTES`], the retries by
//!   [`TARGET_ATTEMPTS_MAX`], `conflicts/` by `wal.conflicts_max_bytes`, and memory, whatever
//!   the segment size, by one window of input, one frame of output and zstd's context (a
//!   duplicate is compared in [`COMPARE_CHUNK_BYTES`] pieces, never decompressed whole).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::config::Config;
use crate::home::environment::PgbakHome;
use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_header::{LONG_PAGE_HEADER_BYTES, LongPageHeader};
use crate::wal_name::{WalFileKind, WalFileName};

mod compress;
mod conflicts;
mod error;
mod existing;
mod frames;
mod input;
mod store;

use compress::compress;
pub use conflicts::{ConflictsUsage, conflicts_usage};
pub use error::{ArchiveError, RejectedCopy, StorageFullCause};
pub(crate) use frames::frame_header_bytes;
pub use frames::stored_content_bytes;
pub(crate) use input::describe_file_type;
pub use input::guard_against_truncation;
use input::read_input;
use store::Store;

/// The smallest WAL segment PostgreSQL can be built or `initdb`ed with (`--wal-segsize=1`).
pub const WAL_SEGMENT_SIZE_MIN_BYTES: u64 = 1 << 20;
/// The largest (`--wal-segsize=1024`).
pub const WAL_SEGMENT_SIZE_MAX_BYTES: u64 = 1 << 30;
/// A timeline history file grows by one line per timeline switch and a backup history file is
/// a few hundred bytes; 16 MiB is far beyond either, and keeps a wrong path from being read
/// whole.
pub const HISTORY_FILE_SIZE_MAX_BYTES: u64 = 16 << 20;
/// Lock holds one call may take to settle its targets. A normal call needs two (choose, then
/// record; three for the very first file, which opens a directory), and each directory a sync
/// opens or removes meanwhile costs one more. More than a few in a row means something is
/// wrong; the call fails without an ack and PostgreSQL retries it.
pub const TARGET_ATTEMPTS_MAX: usize = 8;
/// Piece size for comparing a stored file with the input without decompressing it whole.
pub const COMPARE_CHUNK_BYTES: usize = 128 * 1024;
/// The input is mapped and compressed this much at a time, each window one zstd frame (S-2.2),
/// so a call's memory does not grow with the segment: one window of input plus one frame of
/// output (at most the window's compressBound) plus zstd's context. 16 MiB is PostgreSQL's
/// default segment size, so such a segment is still one frame and one `ZSTD_compress2` call.
pub const COMPRESS_WINDOW_BYTES: usize = 16 << 20;
/// `conflicts/NAME.TIMESTAMP.zst` is taken by different bytes in the same second: try
/// `NAME.TIMESTAMP.2.zst` … up to this suffix.
pub const CONFLICT_NAME_ATTEMPTS_MAX: u32 = 9;

/// What [`archive_wal`] did. Returned only after the ack point (S-2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOutcome {
    pub file: WalFileName,
    /// The directories that hold `NAME.zst` now and that the journal record names.
    pub stored_in: Vec<DirectoryName>,
    /// The stored file's size (the existing copy's, when it was already present).
    pub compressed_bytes: u64,
    /// The input's size.
    pub source_bytes: u64,
    /// Every target held an identical copy already (S-2.4: a retry after a crash).
    pub already_present: bool,
    /// The directory this call opened (first run, S-2.7), if any.
    pub opened_directory: Option<DirectoryName>,
}

/// Archives `source` (the `%p` of `archive_command`) into `home`: see the module header for
/// the steps. `Ok` only after the file and its journal record are durable (S-2.3).
pub fn archive_wal(
    home: &PgbakHome,
    config: &Config,
    source: &Path,
    now: UnixMillis,
) -> Result<ArchiveOutcome, ArchiveError> {
    archive_wal_hooked(home, config, source, now, None)
}

/// A step run between a choice of targets and its links: `None` in pgbak itself; tests use it
/// to let a sync act in exactly that window.
type BeforeLinkHook<'a> = Option<&'a mut dyn FnMut()>;

fn archive_wal_hooked(
    home: &PgbakHome,
    config: &Config,
    source: &Path,
    now: UnixMillis,
    before_link: BeforeLinkHook<'_>,
) -> Result<ArchiveOutcome, ArchiveError> {
    let input = read_input(source)?;
    // Read before anything is stored, so that a segment of another cluster is refused before
    // it reaches any directory (S-2.9).
    let system_identifier = match input.name.kind() {
        WalFileKind::Segment | WalFileKind::Partial => {
            use std::os::unix::fs::FileExt;
            let mut header = [0u8; LONG_PAGE_HEADER_BYTES];
            // A header that cannot be read is no header: the compression below reads the same
            // file and reports any real read error.
            input
                .file
                .read_exact_at(&mut header, 0)
                .ok()
                .and_then(|()| LongPageHeader::parse(&header, input.size))
                .map(|header| header.system_identifier)
        }
        WalFileKind::History | WalFileKind::BackupHistory => None,
    };
    let mut compressed = compress(home, config, &input)?;
    let mut store = Store {
        home,
        input: &input,
        system_identifier,
        compressed: &mut compressed.file,
        compressed_bytes: compressed.bytes,
        now,
        stored: BTreeMap::new(),
        vanished: BTreeSet::new(),
        opened_directory: None,
        conflicts_max_bytes: config.wal.conflicts_max_bytes,
        before_link,
    };
    store.run()
}

#[cfg(test)]
mod tests;
