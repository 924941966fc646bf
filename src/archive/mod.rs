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
//!    ([`archive_targets`]). If no directory is open, record `DirectoryOpened` right there
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
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zstd::zstd_safe::CParameter;

use crate::config::Config;
use crate::hint::OperatorHint;
use crate::home::environment::PgbakHome;
use crate::home::journal_file::{self, JOURNAL_LOCK_WAIT, OpenedJournal};
use crate::home::tree_scan::WAL_DIRECTORY_NAME;
use crate::journal::JournalError;
use crate::machine::{DirectoryPhase, Event, archive_targets};
use crate::os::durable::{self, PRIVATE_FILE_MODE, UnnamedFile};
use crate::os::lock::{LockKind, LockRange, Wait};
use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_header::{LONG_PAGE_HEADER_BYTES, LongPageHeader};
use crate::wal_name::{WalFileKind, WalFileName};

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

/// Why `pgbak wal` did not archive the file. Every message starts with `wal` and the path or
/// name it is about; the hint says what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "wal {}: not a file PostgreSQL archives (a WAL segment of 24 hex digits, \
         SEGMENT.partial, TIMELINE.history or SEGMENT.OFFSET.backup)",
        .path.display()
    )]
    RefusedName { path: PathBuf },

    #[error("wal {}: no such file", .path.display())]
    Missing { path: PathBuf },

    #[error("wal {}: is {what}, not a regular file", .path.display())]
    NotARegularFile { path: PathBuf, what: &'static str },

    #[error("wal {}: cannot be read", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("wal {}: is {size_bytes} bytes, but {expected}", .path.display())]
    WrongSize {
        path: PathBuf,
        size_bytes: u64,
        expected: &'static str,
    },

    #[error("wal {}: changed while it was read ({detail})", .path.display())]
    ChangedWhileRead { path: PathBuf, detail: String },

    #[error("wal {name}: cannot set up zstd compression")]
    Compression {
        name: String,
        #[source]
        source: io::Error,
    },

    #[error("wal {name}: $PGBAK {} is full ({reason}), the file is not archived", .pgbak.display())]
    StorageFull {
        name: String,
        pgbak: PathBuf,
        reason: &'static str,
        #[source]
        source: anyhow::Error,
    },

    #[error("wal {name}: {action}")]
    Storage {
        name: String,
        action: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "wal {name}: {} already exists and {detail}; it was left unchanged, and {rejected}",
        .archived.display()
    )]
    Conflict {
        name: String,
        archived: PathBuf,
        rejected: RejectedCopy,
        detail: String,
    },

    #[error("wal {name}")]
    Journal {
        name: String,
        #[source]
        source: anyhow::Error,
    },

    #[error(
        "wal {name}: the journal says {} should receive WAL, but {} missing on disk",
        list_directories(.missing),
        if .missing.len() == 1 { "it is" } else { "they are" }
    )]
    NoDirectoryOnDisk {
        name: String,
        missing: Vec<DirectoryName>,
    },

    #[error(
        "wal {name}: segment of another cluster: its system identifier is {found}, the backups \
         in {} are of cluster {recorded}",
        .pgbak.display()
    )]
    OtherCluster {
        name: String,
        found: u64,
        recorded: u64,
        pgbak: PathBuf,
    },

    #[error(
        "wal {name}: the open backup directories changed on each of {attempts} attempts; the \
         file is stored in {} but not recorded",
        list_directories(.linked)
    )]
    TargetsUnsettled {
        name: String,
        attempts: usize,
        linked: Vec<DirectoryName>,
    },
}

/// What became of the rejected bytes of a conflict (S-2.4, S-2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectedCopy {
    /// Kept as this file: by this call, or by an earlier one with the same content.
    Kept(PathBuf),
    /// Not kept: the copies in `conflicts/` (`used_bytes`) and this one would pass the cap.
    NotKept {
        conflicts: PathBuf,
        used_bytes: u64,
        max_bytes: u64,
    },
}

impl std::fmt::Display for RejectedCopy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectedCopy::Kept(path) => {
                write!(
                    formatter,
                    "the rejected file was kept as {}",
                    path.display()
                )
            }
            RejectedCopy::NotKept {
                conflicts,
                used_bytes,
                max_bytes,
            } => write!(
                formatter,
                "the rejected file was not kept because {} reached its cap \
                 (wal.conflicts_max_bytes = {max_bytes}, {used_bytes} bytes kept)",
                conflicts.display()
            ),
        }
    }
}

fn list_directories(names: &[DirectoryName]) -> String {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    if names.is_empty() {
        "no directory".to_string()
    } else {
        names.join(", ")
    }
}

impl OperatorHint for ArchiveError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ArchiveError::RefusedName { .. } | ArchiveError::NotARegularFile { .. } => {
                "set archive_command = 'pgbak wal %p': PostgreSQL replaces %p with the path of \
                 the WAL file to archive"
                    .to_string()
            }
            ArchiveError::Missing { .. } => {
                "PostgreSQL runs archive_command in its data directory with %p relative to it: \
                 check archive_command = 'pgbak wal %p'"
                    .to_string()
            }
            ArchiveError::Unreadable { .. } => {
                "run pgbak as the PostgreSQL OS user (the one that runs archive_command), which \
                 can read pg_wal"
                    .to_string()
            }
            ArchiveError::WrongSize { .. } => {
                "PostgreSQL archives only complete WAL files: check that archive_command is \
                 'pgbak wal %p' and that nothing else writes to pg_wal"
                    .to_string()
            }
            ArchiveError::ChangedWhileRead { .. } => {
                "PostgreSQL archives only finished WAL files: look for another program writing \
                 to pg_wal; PostgreSQL retries archive_command"
                    .to_string()
            }
            ArchiveError::Compression { .. } => {
                "check wal.compression_level and wal.compression_threads in $PGBAK/config.toml"
                    .to_string()
            }
            ArchiveError::StorageFull { pgbak, .. } => format!(
                "free space on the file system that holds {} (or raise the quota): PostgreSQL \
                 keeps the WAL in pg_wal and retries archive_command, so nothing is lost, but \
                 pg_wal grows until then",
                pgbak.display()
            ),
            ArchiveError::Storage { .. } => {
                "check the file system that holds $PGBAK: is it read-only or failing (see \
                 dmesg)? PostgreSQL retries archive_command"
                    .to_string()
            }
            ArchiveError::Conflict { rejected, .. } => {
                let mut hint = "pgbak never overwrites an archived file: find out why two \
                                versions exist (two servers archiving into one $PGBAK, or a \
                                restored server reusing a timeline) and compare them with zstd \
                                -d -c; PostgreSQL retries until the call succeeds"
                    .to_string();
                if let RejectedCopy::NotKept { .. } = rejected {
                    hint.push_str(
                        "; to keep copies again, remove old ones from $PGBAK/conflicts or \
                         raise wal.conflicts_max_bytes",
                    );
                }
                hint
            }
            // The journal's own error, further down the chain, carries the hint.
            ArchiveError::Journal { .. } => return None,
            ArchiveError::NoDirectoryOnDisk { .. } => {
                "a backup directory was removed by hand: see pgbak status; pgbak sync --base \
                 starts a new one"
                    .to_string()
            }
            ArchiveError::OtherCluster { .. } => {
                "two servers must not archive into one $PGBAK: point this server's PGBAK \
                 elsewhere; if it is this database's new cluster on purpose (pg_upgrade, a new \
                 initdb), run `pgbak new-series` once to start a new backup series"
                    .to_string()
            }
            ArchiveError::TargetsUnsettled { .. } => {
                "PostgreSQL retries archive_command; if this repeats, see pgbak status".to_string()
            }
        })
    }
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

/// A checked input file, open. Its bytes are read once, a window at a time, while compressing;
/// nothing else reads them (see [`compress`]).
#[derive(Debug)]
struct WalInput {
    name: WalFileName,
    path: PathBuf,
    file: File,
    size: u64,
    stamp: FileStamp,
}

/// What identifies one version of the input: a file rewritten, replaced, grown or shrunk while
/// it was read has another stamp afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// One window of the input, its page-cache pages mapped read-only (no copy, and no page faults
/// after `MAP_POPULATE`: a fresh 16 MiB heap buffer cost 4096 faults and a copy, about a third
/// of a call's time). Unmapped on drop, so the pages leave the resident set window by window.
///
/// A file truncated by someone else while mapped raises SIGBUS on access; `pgbak wal` turns
/// that into exit 1 with a message (`guard_against_truncation`), never death by a signal (S-2.5).
#[derive(Debug)]
enum Window {
    Mapped {
        address: std::ptr::NonNull<std::ffi::c_void>,
        length: usize,
    },
    Empty,
}

impl std::ops::Deref for Window {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: the mapping is PROT_READ, `length` bytes long, and lives until drop.
            Window::Mapped { address, length } => unsafe {
                std::slice::from_raw_parts(address.as_ptr().cast::<u8>(), *length)
            },
            Window::Empty => &[],
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Window::Mapped { address, length } = self {
            // SAFETY: unmaps exactly the mapping made in `map_window`, once.
            let _ = unsafe { nix::sys::mman::munmap(*address, *length) };
        }
    }
}

/// Maps `length` bytes of `file` from `offset`, which is a multiple of
/// [`COMPRESS_WINDOW_BYTES`] and so of the page size.
fn map_window(file: &File, offset: u64, length: usize) -> io::Result<Window> {
    let Some(length) = std::num::NonZeroUsize::new(length) else {
        return Ok(Window::Empty);
    };
    let offset = nix::libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
    use nix::sys::mman::{MapFlags, ProtFlags};
    // SAFETY: a private read-only mapping of a regular file we opened; its bytes are only read
    // through `Window`, which keeps the mapping alive.
    let address = unsafe {
        nix::sys::mman::mmap(
            None,
            length,
            ProtFlags::PROT_READ,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
            file,
            offset,
        )
    }
    .map_err(io::Error::from)?;
    Ok(Window::Mapped {
        address,
        length: length.get(),
    })
}

/// S-2.5: if the WAL file is truncated under us while mapped, the access raises SIGBUS. Exit 1
/// with one line instead (PostgreSQL retries), never death by a signal. Only async-signal-safe
/// calls in the handler: write(2) and _exit(2).
pub fn guard_against_truncation() {
    extern "C" fn on_sigbus(_: nix::libc::c_int) {
        const MESSAGE: &[u8] = b"pgbak: wal: the WAL file shrank while it was being read \
            (truncated by another process?); nothing was archived\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe.
        unsafe {
            nix::libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            nix::libc::_exit(1);
        }
    }
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_sigbus),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only calls async-signal-safe functions.
    let _ = unsafe { sigaction(Signal::SIGBUS, &action) };
}

impl WalInput {
    fn name(&self) -> String {
        self.name.to_string()
    }
}

/// The sizes S-2.1 accepts for `kind`, as the end of a message, or `None` if `size` is one.
fn size_problem(kind: WalFileKind, size: u64) -> Option<&'static str> {
    match kind {
        WalFileKind::Segment | WalFileKind::Partial => {
            let accepted = size.is_power_of_two()
                && (WAL_SEGMENT_SIZE_MIN_BYTES..=WAL_SEGMENT_SIZE_MAX_BYTES).contains(&size);
            (!accepted).then_some(
                "a WAL segment is a power of two between 1 MiB and 1 GiB (16 MiB unless initdb \
                 --wal-segsize changed it)",
            )
        }
        // PostgreSQL never writes an empty history or backup history file; an empty one is
        // a truncated copy, and archiving it would hide the real one.
        WalFileKind::History | WalFileKind::BackupHistory => (!(1..=HISTORY_FILE_SIZE_MAX_BYTES)
            .contains(&size))
        .then_some("a history or backup history file holds 1 byte to 16 MiB"),
    }
}

fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}

/// Step 1 and 2 of the module header.
fn read_input(path: &Path) -> Result<WalInput, ArchiveError> {
    let refused = || ArchiveError::RefusedName {
        path: path.to_path_buf(),
    };
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(WalFileName::parse)
        .ok_or_else(refused)?;
    let unreadable = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            ArchiveError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ArchiveError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    // Classify before opening: opening a FIFO for reading would block until a writer comes.
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    check_regular_and_size(path, &name, &metadata)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Should the path turn into a FIFO between the check and the open, this still never
        // blocks; on a regular file O_NONBLOCK has no effect.
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(unreadable)?;
    let opened = file.metadata().map_err(unreadable)?;
    check_regular_and_size(path, &name, &opened)?;
    Ok(WalInput {
        name,
        path: path.to_path_buf(),
        file,
        size: opened.len(),
        stamp: FileStamp::of(&opened),
    })
}

impl WalInput {
    /// After the read: the same file, size and modification times as when it was opened, so
    /// the windows compressed are one version of it.
    fn check_unchanged(&self) -> Result<(), ArchiveError> {
        let after = self
            .file
            .metadata()
            .map_err(|source| ArchiveError::Unreadable {
                path: self.path.clone(),
                source,
            })?;
        let after = FileStamp::of(&after);
        if after == self.stamp {
            return Ok(());
        }
        let detail = if after.size != self.stamp.size {
            format!(
                "its size went from {} to {} bytes",
                self.stamp.size, after.size
            )
        } else {
            "it was modified".to_string()
        };
        Err(ArchiveError::ChangedWhileRead {
            path: self.path.clone(),
            detail,
        })
    }
}

fn check_regular_and_size(
    path: &Path,
    name: &WalFileName,
    metadata: &std::fs::Metadata,
) -> Result<(), ArchiveError> {
    if !metadata.file_type().is_file() {
        return Err(ArchiveError::NotARegularFile {
            path: path.to_path_buf(),
            what: describe_file_type(metadata.file_type()),
        });
    }
    if let Some(expected) = size_problem(name.kind(), metadata.len()) {
        return Err(ArchiveError::WrongSize {
            path: path.to_path_buf(),
            size_bytes: metadata.len(),
            expected,
        });
    }
    Ok(())
}

/// The input, compressed, in an unnamed file in `$PGBAK`, fsynced on the first link.
struct Compressed {
    file: UnnamedFile,
    bytes: u64,
}

fn is_storage_full(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn storage_full_reason(kind: io::ErrorKind) -> &'static str {
    if kind == io::ErrorKind::QuotaExceeded {
        "Disk quota exceeded"
    } else {
        "No space left on device"
    }
}

/// An I/O failure while storing: disk full (S-8.5) gets its own message and hint.
fn storage_error(
    home: &PgbakHome,
    input: &WalInput,
    action: impl Into<String>,
    source: io::Error,
) -> ArchiveError {
    if is_storage_full(source.kind()) {
        ArchiveError::StorageFull {
            name: input.name(),
            pgbak: home.path.clone(),
            reason: storage_full_reason(source.kind()),
            // Where it ran out: the rest of the line after the summary.
            source: anyhow::Error::new(source).context(action.into()),
        }
    } else {
        ArchiveError::Storage {
            name: input.name(),
            action: action.into(),
            source,
        }
    }
}

/// A journal failure; a full disk anywhere in its chain is reported as such (S-8.5).
fn journal_error(home: &PgbakHome, input: &WalInput, source: anyhow::Error) -> ArchiveError {
    let full = source
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .map(io::Error::kind)
        .find(|kind| is_storage_full(*kind));
    match full {
        Some(kind) => ArchiveError::StorageFull {
            name: input.name(),
            pgbak: home.path.clone(),
            reason: storage_full_reason(kind),
            source,
        },
        None => ArchiveError::Journal {
            name: input.name(),
            source,
        },
    }
}

/// Step 3: the input, a window of [`COMPRESS_WINDOW_BYTES`] at a time, each window one zstd
/// frame with its content size and checksum (S-2.2), into an unnamed file.
fn compress(
    home: &PgbakHome,
    config: &Config,
    input: &WalInput,
) -> Result<Compressed, ArchiveError> {
    let mut file = UnnamedFile::create_in(&home.path, PRIVATE_FILE_MODE).map_err(|source| {
        storage_error(home, input, "cannot create the compressed file", source)
    })?;
    let setup = |source: io::Error| ArchiveError::Compression {
        name: input.name(),
        source,
    };
    let write_error = |source: io::Error| {
        storage_error(
            home,
            input,
            format!(
                "cannot write the compressed file in {}",
                home.path.display()
            ),
            source,
        )
    };
    // One blocking ZSTD_compress2 per window, not the streaming encoder: in multithreaded mode
    // a streaming `compressStream2(e_continue)` returns at once when every worker is busy, so a
    // write loop spins on the main thread and takes a core from the workers (measured: 69 ms
    // instead of 43 ms per 16 MiB segment on 2 cores); compress2 waits for its jobs on a
    // condition variable. A 16 MiB segment is one window, so one frame, as before windows.
    let mut compressor =
        zstd::bulk::Compressor::new(config.wal.compression_level).map_err(setup)?;
    for parameter in [
        CParameter::ChecksumFlag(true),
        CParameter::ContentSizeFlag(true),
        CParameter::NbWorkers(config.wal.compression_threads),
    ] {
        compressor.set_parameter(parameter).map_err(setup)?;
    }
    // compressBound of one window: never too small, and only the pages actually written become
    // resident. Reused for every window, so it is the only output buffer.
    let mut frame = Vec::new();
    let mut offset = 0u64;
    loop {
        let length = usize::try_from((input.size - offset).min(COMPRESS_WINDOW_BYTES as u64))
            .unwrap_or(COMPRESS_WINDOW_BYTES);
        let window =
            map_window(&input.file, offset, length).map_err(|source| ArchiveError::Unreadable {
                path: input.path.clone(),
                source,
            })?;
        frame.clear();
        frame.reserve(zstd::zstd_safe::compress_bound(length));
        compressor
            .compress_to_buffer(&window[..], &mut frame)
            .map_err(setup)?;
        // Unmapped before the next window is mapped: at most one window is resident.
        drop(window);
        file.write_all(&frame).map_err(write_error)?;
        offset += length as u64;
        if offset >= input.size {
            break;
        }
    }
    input.check_unchanged()?;
    file.flush()
        .map_err(|source| storage_error(home, input, "cannot write the compressed file", source))?;
    let bytes = file
        .file()
        .metadata()
        .map_err(|source| storage_error(home, input, "cannot stat the compressed file", source))?
        .len();
    Ok(Compressed { file, bytes })
}

/// How a target directory holds `NAME.zst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Linked by this call.
    Linked,
    /// An identical copy was there already, now made durable.
    AlreadyPresent { compressed_bytes: u64 },
}

/// What one lock hold decided.
enum Decision {
    /// `DirectoryOpened` was recorded for this directory: create it.
    Opened(DirectoryName),
    /// These open directories (with their phase) do not hold the file yet.
    Link(Vec<(DirectoryName, DirectoryPhase)>),
    /// `WalArchived` was recorded.
    Recorded,
    /// Nothing holds the file and no open directory is left to put it in.
    NoDirectory(Vec<DirectoryName>),
    /// `DirectoryLost` was recorded for these: the next hold chooses targets again (S-4.8).
    Lost,
    /// The input is of another cluster than the recorded one (S-2.9).
    OtherCluster { recorded: u64 },
}

/// Why a lock hold ended without a decision.
enum HoldError {
    /// The refresh found the journal damaged: reopen it (which rebuilds it) and go on.
    Reopen,
    Failed(anyhow::Error),
    /// Creating a directory under the lock failed.
    Storage(ArchiveError),
}

/// Steps 4 and 5 of the module header.
struct Store<'a, 'h> {
    home: &'a PgbakHome,
    input: &'a WalInput,
    /// From the input's long page header, when it has one pgbak recognizes (S-2.9).
    system_identifier: Option<u64>,
    compressed: &'a mut UnnamedFile,
    compressed_bytes: u64,
    now: UnixMillis,
    stored: BTreeMap<DirectoryName, Stored>,
    /// Targets whose `TIMESTAMP/` was gone: removed by the sync after a failed base backup.
    vanished: BTreeSet<DirectoryName>,
    opened_directory: Option<DirectoryName>,
    /// `wal.conflicts_max_bytes` (S-2.10).
    conflicts_max_bytes: u64,
    before_link: BeforeLinkHook<'h>,
}

impl Store<'_, '_> {
    fn run(&mut self) -> Result<ArchiveOutcome, ArchiveError> {
        crate::failpoint::fail_point("wal-after-compress");
        let mut journal = journal_file::open_journal(self.home, self.now)
            .map_err(|error| journal_error(self.home, self.input, error))?;
        let mut reopened = false;
        for _ in 0..TARGET_ATTEMPTS_MAX {
            let decision = match self.decide(&mut journal) {
                Ok(decision) => decision,
                Err(HoldError::Reopen) if !reopened => {
                    reopened = true;
                    journal = journal_file::open_journal(self.home, self.now)
                        .map_err(|error| journal_error(self.home, self.input, error))?;
                    continue;
                }
                Err(HoldError::Reopen) => {
                    return Err(journal_error(
                        self.home,
                        self.input,
                        anyhow::anyhow!(
                            "journal {}: damaged again right after it was rebuilt",
                            self.home.lock_file_path().display()
                        ),
                    ));
                }
                Err(HoldError::Failed(error)) => {
                    return Err(journal_error(self.home, self.input, error));
                }
                Err(HoldError::Storage(error)) => return Err(error),
            };
            match decision {
                Decision::Opened(directory) => {
                    self.opened_directory = Some(directory);
                    if !self.create_wal_directory(directory)? {
                        // Failed and removed by a sync already: the next hold decides anew.
                        self.vanished.insert(directory);
                    }
                }
                Decision::Link(targets) => {
                    if let Some(hook) = self.before_link.as_mut() {
                        hook();
                    }
                    self.link_into_targets(&targets)?;
                    crate::failpoint::fail_point("wal-after-link");
                }
                Decision::Recorded => {
                    crate::failpoint::fail_point("wal-after-journal");
                    return Ok(self.outcome());
                }
                Decision::NoDirectory(missing) => {
                    return Err(ArchiveError::NoDirectoryOnDisk {
                        name: self.input.name(),
                        missing,
                    });
                }
                Decision::Lost => {}
                Decision::OtherCluster { recorded } => {
                    return Err(ArchiveError::OtherCluster {
                        name: self.input.name(),
                        found: self.system_identifier.unwrap_or_default(),
                        recorded,
                        pgbak: self.home.path.clone(),
                    });
                }
            }
        }
        Err(ArchiveError::TargetsUnsettled {
            name: self.input.name(),
            attempts: TARGET_ATTEMPTS_MAX,
            linked: self.stored.keys().copied().collect(),
        })
    }

    fn outcome(&self) -> ArchiveOutcome {
        ArchiveOutcome {
            file: self.input.name.clone(),
            stored_in: self.stored.keys().copied().collect(),
            compressed_bytes: self.recorded_bytes(),
            source_bytes: self.input.size,
            already_present: self.all_already_present(),
            opened_directory: self.opened_directory,
        }
    }

    /// Every target had an identical copy. A mix (a crash between two links) counts as new:
    /// the record comes after all links, so the journal has not counted the file anywhere.
    fn all_already_present(&self) -> bool {
        !self.stored.is_empty()
            && self
                .stored
                .values()
                .all(|stored| matches!(stored, Stored::AlreadyPresent { .. }))
    }

    fn recorded_bytes(&self) -> u64 {
        self.stored
            .values()
            .find_map(|stored| match stored {
                Stored::AlreadyPresent { compressed_bytes } => Some(*compressed_bytes),
                Stored::Linked => None,
            })
            .filter(|_| self.all_already_present())
            .unwrap_or(self.compressed_bytes)
    }

    /// One hold of the journal lock: refresh, look at the targets, append if the decision is
    /// an append. Never compresses, links or creates directories (S-2.6: milliseconds).
    fn decide(&self, opened: &mut OpenedJournal) -> Result<Decision, HoldError> {
        let lock_path = opened.lock_file.path().to_path_buf();
        let in_journal = |error: JournalError| {
            anyhow::Error::new(error).context(format!("journal {}", lock_path.display()))
        };
        let _guard = opened
            .lock_file
            .lock(
                LockRange::Journal,
                LockKind::Exclusive,
                Wait::UpTo(JOURNAL_LOCK_WAIT),
            )
            .map_err(|error| HoldError::Failed(anyhow::Error::new(error)))?;
        match opened.journal.refresh(self.now) {
            Ok(_) => {}
            Err(JournalError::NeedsRebuild { .. }) => return Err(HoldError::Reopen),
            Err(error) => return Err(HoldError::Failed(in_journal(error))),
        }
        let state = opened.journal.state();
        if let (Some(found), Some(recorded)) = (self.system_identifier, state.system_identifier)
            && found != recorded
        {
            return Ok(Decision::OtherCluster { recorded });
        }
        // An open directory whose `TIMESTAMP/` vanished was removed by hand (S-4.8): forget it,
        // so that the next hold opens a new one instead of failing every call from now on.
        // Not while the sync works in it: that run fails on its own and records its outcome.
        let lost: Vec<Event> = self
            .vanished
            .iter()
            .filter(|name| {
                state.directories.get(name).is_some_and(|d| {
                    d.phase == DirectoryPhase::Current
                        && state
                            .script
                            .running
                            .is_none_or(|run| run.directory != **name)
                })
            })
            .map(|name| Event::DirectoryLost {
                directory: *name,
                at: self.now,
            })
            .collect();
        if !lost.is_empty() {
            opened
                .journal
                .append(&lost, self.now)
                .map_err(|error| HoldError::Failed(in_journal(error)))?;
            return Ok(Decision::Lost);
        }
        let targets = archive_targets(state, self.now);
        if let Some(directory) = targets.open_directory {
            // Recorded before the mkdir (intent, S-3.2), in the same lock hold that saw no
            // open directory: concurrent first calls open exactly one.
            let event = Event::DirectoryOpened {
                directory,
                at: self.now,
            };
            opened
                .journal
                .append(&[event], self.now)
                .map_err(|error| HoldError::Failed(in_journal(error)))?;
            self.create_pending_directory(directory)
                .map_err(HoldError::Storage)?;
            return Ok(Decision::Opened(directory));
        }
        let missing: Vec<(DirectoryName, DirectoryPhase)> = targets
            .directories
            .iter()
            .filter(|name| !self.stored.contains_key(name) && !self.vanished.contains(name))
            .filter_map(|name| state.directories.get(name).map(|d| (*name, d.phase)))
            .collect();
        if !missing.is_empty() {
            // A pending directory may be recorded but not created yet (the sync, or another
            // `wal`, records DirectoryOpened before its mkdir). Its `TIMESTAMP/` is created
            // here, in the hold that saw it pending: a sync records a failed base backup under
            // this lock before it removes the directory, so what is created here is either
            // removed by that sync afterwards or was never failed. Created after the lock is
            // released, it could come back after the removal, an orphan the journal does not
            // know. Rare (once per directory at most), so the mkdir's fsync is paid here.
            for (directory, phase) in &missing {
                if *phase == DirectoryPhase::Pending {
                    self.create_pending_directory(*directory)
                        .map_err(HoldError::Storage)?;
                }
            }
            return Ok(Decision::Link(missing));
        }
        if self.stored.is_empty() {
            return Ok(Decision::NoDirectory(targets.directories));
        }
        crate::failpoint::fail_point("wal-before-journal");
        // S-6.6: the record is the ack; never into a journal that `$PGBAK` no longer holds.
        opened
            .lock_file
            .check_still_same()
            .map_err(|error| HoldError::Failed(anyhow::Error::new(error)))?;
        let mut events = Vec::new();
        if let Some(system_identifier) = self.system_identifier
            && state.system_identifier.is_none()
        {
            // The first segment with a readable header names the cluster, in the same append
            // as its own record (S-2.9).
            events.push(Event::SystemIdentifierRecorded {
                system_identifier,
                at: self.now,
            });
        }
        events.extend(self.archived_events());
        opened
            .journal
            .append(&events, self.now)
            .map_err(|error| HoldError::Failed(in_journal(error)))?;
        Ok(Decision::Recorded)
    }

    /// The `WalArchived` facts of this call. Directories that closed meanwhile (sealed,
    /// failed) stay in the record: the file is in them, and the machine counts it only where
    /// that still matters. Where an identical copy was found and where the file was linked
    /// now are two facts, so that a retry that finds the file in the current directory and
    /// links it into a new pending one counts it once in each, not twice in the current one.
    fn archived_events(&self) -> Vec<Event> {
        let (present, linked): (Vec<_>, Vec<_>) = self
            .stored
            .iter()
            .partition(|(_, stored)| matches!(stored, Stored::AlreadyPresent { .. }));
        let mut events = Vec::new();
        for (group, already_present) in [(present, true), (linked, false)] {
            if group.is_empty() {
                continue;
            }
            let compressed_bytes = group
                .iter()
                .find_map(|(_, stored)| match stored {
                    Stored::AlreadyPresent { compressed_bytes } => Some(*compressed_bytes),
                    Stored::Linked => None,
                })
                .unwrap_or(self.compressed_bytes);
            events.push(Event::WalArchived {
                file: self.input.name.clone(),
                compressed_bytes,
                directories: group.iter().map(|(name, _)| **name).collect(),
                already_present,
                at: self.now,
            });
        }
        events
    }

    fn wal_directory(&self, directory: DirectoryName) -> PathBuf {
        self.home.directory_path(directory).join(WAL_DIRECTORY_NAME)
    }

    /// `TIMESTAMP/` of a directory the journal says is pending, 0700, its entry fsynced
    /// (idempotent). Called only under the journal lock (see [`Store::decide`]).
    fn create_pending_directory(&self, directory: DirectoryName) -> Result<(), ArchiveError> {
        let path = self.home.directory_path(directory);
        durable::create_private_directory(&path).map_err(|source| {
            storage_error(
                self.home,
                self.input,
                format!("cannot create {}", path.display()),
                source,
            )
        })?;
        Ok(())
    }

    /// `TIMESTAMP/pg_wal/`, 0700, its entry fsynced (idempotent); `false` if `TIMESTAMP/` is
    /// gone. Never creates `TIMESTAMP/` itself: a directory that vanished stays gone.
    fn create_wal_directory(&self, directory: DirectoryName) -> Result<bool, ArchiveError> {
        let path = self.wal_directory(directory);
        match durable::create_private_directory(&path) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(storage_error(
                self.home,
                self.input,
                format!("cannot create {}", path.display()),
                source,
            )),
        }
    }

    fn link_into_targets(
        &mut self,
        targets: &[(DirectoryName, DirectoryPhase)],
    ) -> Result<(), ArchiveError> {
        // First look for existing copies everywhere, so a conflict is found before the new
        // bytes went into any directory.
        let mut to_link = Vec::new();
        for &(directory, _phase) in targets {
            let target = self.wal_directory(directory).join(self.compressed_name());
            match std::fs::symlink_metadata(&target) {
                Ok(_) => {
                    let stored = self.accept_existing(&target)?;
                    self.stored.insert(directory, stored);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    to_link.push(directory);
                }
                Err(source) => {
                    return Err(storage_error(
                        self.home,
                        self.input,
                        format!("cannot look at {}", target.display()),
                        source,
                    ));
                }
            }
        }
        for directory in to_link {
            if let Some(stored) = self.link_into(directory)? {
                self.stored.insert(directory, stored);
            } else {
                self.vanished.insert(directory);
            }
        }
        Ok(())
    }

    fn compressed_name(&self) -> String {
        self.input.name.compressed_name()
    }

    /// Links the file into one target; `None` if the directory is gone.
    fn link_into(&mut self, directory: DirectoryName) -> Result<Option<Stored>, ArchiveError> {
        if !self.create_wal_directory(directory)? {
            return Ok(None);
        }
        let wal_directory = self.wal_directory(directory);
        let name = self.compressed_name();
        match link_or_copy(self.compressed, &wal_directory, &name) {
            Ok(()) => Ok(Some(Stored::Linked)),
            // The directory was removed between mkdir and link.
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            // Another process stored the same name meanwhile (S-2.4).
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                self.accept_existing(&wal_directory.join(&name)).map(Some)
            }
            Err(source) => Err(storage_error(
                self.home,
                self.input,
                format!("cannot store {}", wal_directory.join(&name).display()),
                source,
            )),
        }
    }

    /// S-2.4: an identical existing copy is made durable and accepted; anything else is a
    /// conflict, and the rejected bytes are kept in `conflicts/`.
    fn accept_existing(&mut self, archived: &Path) -> Result<Stored, ArchiveError> {
        let looking = |source: io::Error| {
            storage_error(
                self.home,
                self.input,
                format!("cannot compare with {}", archived.display()),
                source,
            )
        };
        let comparison =
            compare_stored(archived, self.compressed.file(), self.input.size).map_err(looking)?;
        match comparison {
            Comparison::Identical { compressed_bytes } => {
                make_existing_durable(archived).map_err(looking)?;
                Ok(Stored::AlreadyPresent { compressed_bytes })
            }
            Comparison::Different(detail) => {
                let rejected = self.keep_conflict()?;
                Err(ArchiveError::Conflict {
                    name: self.input.name(),
                    archived: archived.to_path_buf(),
                    rejected,
                    detail,
                })
            }
        }
    }

    /// S-2.10: the rejected bytes, once per distinct content, as
    /// `$PGBAK/conflicts/NAME.TIMESTAMP.zst` (0600, durable), while the copies there stay within
    /// `wal.conflicts_max_bytes`. PostgreSQL retries a failing call forever, so a copy made
    /// per call would fill the disk: a copy of `NAME` with the same content (compared as in
    /// S-2.4) is reused. Concurrent calls can each keep a copy before seeing the other's, so
    /// the cap can be passed by what those few calls hold, never by retries.
    fn keep_conflict(&mut self) -> Result<RejectedCopy, ArchiveError> {
        let conflicts = self.home.conflicts_path();
        let keep_error = |path: &Path, source: io::Error| {
            storage_error(
                self.home,
                self.input,
                format!("cannot keep the rejected file in {}", path.display()),
                source,
            )
        };
        durable::create_private_directory(&conflicts)
            .map_err(|source| keep_error(&conflicts, source))?;
        let prefix = format!("{}.", self.input.name);
        let mut used_bytes = 0u64;
        let mut same_name = Vec::new();
        let entries =
            std::fs::read_dir(&conflicts).map_err(|source| keep_error(&conflicts, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| keep_error(&conflicts, source))?;
            let metadata = entry
                .metadata()
                .map_err(|source| keep_error(&entry.path(), source))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|name| name.ends_with(".zst")) else {
                continue;
            };
            if !metadata.is_file() {
                continue;
            }
            used_bytes = used_bytes.saturating_add(metadata.len());
            if name.starts_with(&prefix) {
                same_name.push(entry.path());
            }
        }
        same_name.sort();
        for path in same_name {
            let comparison = compare_stored(&path, self.compressed.file(), self.input.size)
                .map_err(|source| keep_error(&path, source))?;
            if let Comparison::Identical { .. } = comparison {
                return Ok(RejectedCopy::Kept(path));
            }
        }
        let timestamp = self.now.to_timestamp_string();
        if used_bytes.saturating_add(self.compressed_bytes) > self.conflicts_max_bytes {
            // Best effort: the refusal itself is the error PostgreSQL logs; the note is what
            // `status` shows afterwards.
            let _ = write_not_kept_note(&conflicts, &format!("{} at {timestamp}", self.input.name));
            return Ok(RejectedCopy::NotKept {
                conflicts,
                used_bytes,
                max_bytes: self.conflicts_max_bytes,
            });
        }
        for attempt in 1..=CONFLICT_NAME_ATTEMPTS_MAX {
            let name = if attempt == 1 {
                format!("{}.{timestamp}.zst", self.input.name)
            } else {
                format!("{}.{timestamp}.{attempt}.zst", self.input.name)
            };
            let path = conflicts.join(&name);
            match link_or_copy(self.compressed, &conflicts, &name) {
                Ok(()) => {
                    // There was room for this copy: the cap no longer refuses.
                    let _ = std::fs::remove_file(conflicts.join(CONFLICTS_NOT_KEPT_NOTE));
                    return Ok(RejectedCopy::Kept(path));
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                    // Taken meanwhile, by a concurrent call with this content or another.
                    let comparison = compare_stored(&path, self.compressed.file(), self.input.size)
                        .map_err(|source| keep_error(&path, source))?;
                    if let Comparison::Identical { .. } = comparison {
                        return Ok(RejectedCopy::Kept(path));
                    }
                }
                Err(source) => return Err(keep_error(&path, source)),
            }
        }
        Err(storage_error(
            self.home,
            self.input,
            format!(
                "cannot keep the rejected file in {}: {CONFLICT_NAME_ATTEMPTS_MAX} names for \
                 this second are taken",
                conflicts.display()
            ),
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }
}

/// Replaces the note of S-2.10 (see [`CONFLICTS_NOT_KEPT_NOTE`]). Advisory, like a log line:
/// not fsynced, and a torn note only garbles what `status` prints.
fn write_not_kept_note(conflicts: &Path, line: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut note = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(conflicts.join(CONFLICTS_NOT_KEPT_NOTE))?;
    if !note.metadata()?.is_file() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    note.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    note.write_all(format!("{line}\n").as_bytes())
}

/// Hard-links the unnamed file as `directory/name`; should `directory` be on another file
/// system (an operator's symlink), writes a durable copy there instead.
fn link_or_copy(file: &mut UnnamedFile, directory: &Path, name: &str) -> io::Result<()> {
    match file.link_into(directory, name) {
        Err(error) if error.kind() == io::ErrorKind::CrossesDevices => {
            let mut copy = UnnamedFile::create_in(directory, PRIVATE_FILE_MODE)?;
            let mut reader = file.file();
            reader.rewind()?;
            io::copy(&mut reader, &mut copy)?;
            copy.persist_as(name)
        }
        other => other,
    }
}

/// Whether a stored `NAME.zst` holds exactly the input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Comparison {
    Identical {
        compressed_bytes: u64,
    },
    /// How it differs, as the end of "… already exists and …".
    Different(String),
}

/// Opens a stored file (`NAME.zst`, a copy in `conflicts/`) for reading, or says what else it
/// is. The type is checked before the open, so a FIFO or a device is never opened, and the open
/// is non-blocking all the same, so a FIFO swapped in between cannot hang `wal`.
fn open_stored(path: &Path) -> io::Result<Result<File, &'static str>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Ok(Err(describe_file_type(metadata.file_type())));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() {
        return Ok(Err(describe_file_type(opened.file_type())));
    }
    Ok(Ok(file))
}

/// Reads a file from a position of its own with `pread`, so the unnamed file's offset (which
/// `link_or_copy` rewinds) is never shared.
struct PositionedReader<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

/// Reads until `buffer` is full or the stream ends; the count read.
fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Whether two files hold the same bytes (compared as stored, not decompressed).
fn same_bytes(left: &File, right: &File) -> io::Result<bool> {
    let mut left = PositionedReader {
        file: left,
        offset: 0,
    };
    let mut right = PositionedReader {
        file: right,
        offset: 0,
    };
    let mut left_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    let mut right_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    loop {
        let left_read = fill(&mut left, &mut left_buffer)?;
        let right_read = fill(&mut right, &mut right_buffer)?;
        if left_buffer[..left_read] != right_buffer[..right_read] {
            return Ok(false);
        }
        if left_read == 0 {
            return Ok(true);
        }
    }
}

/// Compares the stored file at `path` with `ours`, the compressed input this call wrote
/// (`source_bytes` long decompressed): the bytes compared are the bytes stored, from the one
/// read of the input. Byte-identical files are identical; otherwise both are decompressed, every
/// frame (S-2.2), piece by piece, never whole. Decoding errors of the stored file (a damaged
/// file, a bad checksum, not zstd at all) and a file that is not a regular file are a
/// difference; failing to open or read it is an `Err`.
fn compare_stored(path: &Path, ours: &File, source_bytes: u64) -> io::Result<Comparison> {
    let existing = match open_stored(path)? {
        Ok(file) => file,
        Err(what) => {
            return Ok(Comparison::Different(format!(
                "is {what}, not a regular file"
            )));
        }
    };
    let compressed_bytes = existing.metadata()?.len();
    if compressed_bytes == ours.metadata()?.len() && same_bytes(&existing, ours)? {
        return Ok(Comparison::Identical { compressed_bytes });
    }
    let stored_reader = PositionedReader {
        file: &existing,
        offset: 0,
    };
    let mut theirs = match zstd::stream::read::Decoder::new(stored_reader) {
        Ok(decoder) => decoder,
        Err(error) => return Ok(Comparison::Different(format!("cannot be decoded: {error}"))),
    };
    let mut mine = zstd::stream::read::Decoder::new(PositionedReader {
        file: ours,
        offset: 0,
    })?;
    let mut their_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    let mut my_buffer = vec![0u8; COMPARE_CHUNK_BYTES];
    let mut offset = 0u64;
    loop {
        let mine_read = fill(&mut mine, &mut my_buffer)?;
        let theirs_read = match fill(&mut theirs, &mut their_buffer) {
            Ok(read) => read,
            Err(error) if error.raw_os_error().is_some() => return Err(error),
            Err(error) => {
                return Ok(Comparison::Different(format!(
                    "cannot be decompressed ({error}) after {offset} bytes"
                )));
            }
        };
        let common = mine_read.min(theirs_read);
        if my_buffer[..common] != their_buffer[..common] {
            return Ok(Comparison::Different("holds different content".to_string()));
        }
        if theirs_read > mine_read {
            return Ok(Comparison::Different(format!(
                "holds more than the {source_bytes} bytes of the new file"
            )));
        }
        if theirs_read < mine_read {
            return Ok(Comparison::Different(format!(
                "holds {} bytes, the new file {source_bytes}",
                offset + theirs_read as u64
            )));
        }
        if mine_read == 0 {
            return Ok(Comparison::Identical { compressed_bytes });
        }
        offset += common as u64;
    }
}

/// S-2.4: the existing copy may come from a call that crashed before its fsyncs.
fn make_existing_durable(path: &Path) -> io::Result<()> {
    match open_stored(path)? {
        Ok(file) => file.sync_all()?,
        Err(what) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: is {what}, not a regular file", path.display()),
            ));
        }
    }
    let wal_directory = path.parent().unwrap_or(Path::new("."));
    durable::fsync_directory(wal_directory)?;
    if let Some(directory) = wal_directory.parent() {
        durable::fsync_directory(directory)?;
    }
    Ok(())
}

/// The zstd frame magic number (RFC 8878, 3.1.1), and the skippable frames' (3.1.2).
const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
const SKIPPABLE_FRAME_MAGIC: u32 = 0x184D_2A50;
const SKIPPABLE_FRAME_MAGIC_MASK: u32 = 0xFFFF_FFF0;
/// Block headers [`stored_content_bytes`] reads before it gives up: a 1 GiB segment at level 1
/// has about 8,200 blocks of at most 128 KiB each, and a hostile file must not make it loop.
const BLOCK_HEADERS_MAX: usize = 1 << 20;

/// The decompressed size of a stored `.zst`: the sum of the content sizes of all its frames
/// (S-2.2: one or more, one after the other), found by walking the frame and block headers
/// (RFC 8878, 3.1.1) without decompressing anything. `None` when it is not a regular file, a
/// frame does not record its content size, or the structure is damaged or truncated.
pub fn stored_content_bytes(path: &Path) -> io::Result<Option<u64>> {
    let Ok(file) = open_stored(path)? else {
        return Ok(None);
    };
    let length = file.metadata()?.len();
    let read_exact = |offset: u64, buffer: &mut [u8]| -> io::Result<bool> {
        match file.read_exact_at(buffer, offset) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(error) => Err(error),
        }
    };
    let mut offset = 0u64;
    let mut total = 0u64;
    let mut block_headers = 0usize;
    while offset < length {
        let mut magic = [0u8; 4];
        if !read_exact(offset, &mut magic)? {
            return Ok(None);
        }
        let magic = u32::from_le_bytes(magic);
        if magic & SKIPPABLE_FRAME_MAGIC_MASK == SKIPPABLE_FRAME_MAGIC {
            let mut size = [0u8; 4];
            if !read_exact(offset + 4, &mut size)? {
                return Ok(None);
            }
            offset += 8 + u64::from(u32::from_le_bytes(size));
            continue;
        }
        if magic != ZSTD_FRAME_MAGIC {
            return Ok(None);
        }
        // A frame header is at most 18 bytes; a shorter file is fine if the frame is short.
        let mut header = [0u8; 18];
        let available = usize::try_from((length - offset).min(18)).unwrap_or(18);
        if !read_exact(offset, &mut header[..available])? {
            return Ok(None);
        }
        let Ok(Some(content_bytes)) = zstd::zstd_safe::get_frame_content_size(&header[..available])
        else {
            return Ok(None);
        };
        let descriptor = header[4];
        let single_segment = descriptor & 0x20 != 0;
        let has_checksum = descriptor & 0x04 != 0;
        let dictionary_id_bytes = [0u64, 1, 2, 4][usize::from(descriptor & 0b11)];
        let content_size_bytes = match descriptor >> 6 {
            0 => u64::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        offset += 5 + u64::from(!single_segment) + dictionary_id_bytes + content_size_bytes;
        loop {
            block_headers += 1;
            if block_headers > BLOCK_HEADERS_MAX {
                return Ok(None);
            }
            let mut block = [0u8; 3];
            if !read_exact(offset, &mut block)? {
                return Ok(None);
            }
            let block = u32::from(block[0]) | u32::from(block[1]) << 8 | u32::from(block[2]) << 16;
            let size = u64::from(block >> 3);
            offset += 3 + match (block >> 1) & 0b11 {
                0 | 2 => size, // raw, compressed
                1 => 1,        // RLE: one byte repeated
                _ => return Ok(None),
            };
            if block & 1 != 0 {
                break;
            }
        }
        if has_checksum {
            offset += 4;
        }
        let Some(sum) = total.checked_add(content_bytes) else {
            return Ok(None);
        };
        total = sum;
    }
    // Past the end: the last frame is cut short.
    Ok((offset == length && length > 0).then_some(total))
}

/// The name of the note `wal` leaves in `conflicts/` when the cap kept it from keeping a copy
/// (S-2.10): one line, the refused file and when. `status` reports it; the next copy kept
/// removes it, and so may the operator.
pub const CONFLICTS_NOT_KEPT_NOTE: &str = "not-kept";
/// The most of the note `status` reads.
const NOT_KEPT_NOTE_BYTES_MAX: u64 = 1024;

/// What `$PGBAK/conflicts/` holds (S-2.10), for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConflictsUsage {
    /// Kept copies (`*.zst`).
    pub files: u64,
    pub bytes: u64,
    /// The note's line when the cap refused a copy since the last copy kept.
    pub not_kept: Option<String>,
}

/// Counts the kept copies in `conflicts/` (a missing directory holds none).
pub fn conflicts_usage(home: &PgbakHome) -> io::Result<ConflictsUsage> {
    let directory = home.conflicts_path();
    let mut usage = ConflictsUsage::default();
    let entries = match std::fs::read_dir(&directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(usage),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let metadata = entry.metadata()?;
        let name = entry.file_name();
        if !metadata.is_file() {
            continue;
        }
        if name.to_str().is_some_and(|name| name.ends_with(".zst")) {
            usage.files += 1;
            usage.bytes = usage.bytes.saturating_add(metadata.len());
        } else if name == CONFLICTS_NOT_KEPT_NOTE {
            let Ok(Ok(file)) = open_stored(&entry.path()) else {
                continue;
            };
            let mut note = String::new();
            let _ = file.take(NOT_KEPT_NOTE_BYTES_MAX).read_to_string(&mut note);
            usage.not_kept = Some(note.trim().to_string());
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::journal_file::inspect_journal;
    use crate::os::lock::LockFile;
    use crate::test_support::ScratchDirectory;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    const NOW: UnixMillis = UnixMillis(1_795_478_400_000);

    fn home_in(scratch: &ScratchDirectory) -> PgbakHome {
        scratch.home()
    }

    fn segment_bytes(size: usize, seed: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(size);
        let mut counter = seed;
        while bytes.len() < size {
            counter = counter.wrapping_add(1);
            bytes.extend_from_slice(b"pgbak wal record ");
            bytes.extend_from_slice(&counter.to_le_bytes());
        }
        bytes.truncate(size);
        bytes
    }

    fn single_threaded() -> Config {
        let mut config = Config::default();
        config.wal.compression_threads = 0;
        config
    }

    #[test]
    fn size_rules_follow_s_2_1() {
        let segment = WalFileKind::Segment;
        assert!(size_problem(segment, 16 << 20).is_none());
        assert!(size_problem(segment, 1 << 20).is_none());
        assert!(size_problem(segment, 1 << 30).is_none());
        assert!(size_problem(segment, 512 << 10).is_some());
        assert!(size_problem(segment, 2 << 30).is_some());
        assert!(size_problem(segment, 3 << 20).is_some());
        assert!(size_problem(segment, 0).is_some());
        assert!(size_problem(WalFileKind::Partial, 3 << 20).is_some());
        assert!(size_problem(WalFileKind::History, 41).is_none());
        assert!(size_problem(WalFileKind::History, 0).is_some());
        assert!(size_problem(WalFileKind::BackupHistory, (16 << 20) + 1).is_some());
    }

    #[test]
    fn a_segment_is_stored_once_per_open_directory_and_decompresses_to_the_input() {
        let scratch = ScratchDirectory::new("wal-archive-basic");
        let home = home_in(&scratch);
        let source_directory = ScratchDirectory::new("wal-archive-basic-src");
        let source = source_directory.0.join("000000010000000000000001");
        let bytes = segment_bytes(1 << 20, 1);
        fs::write(&source, &bytes).unwrap();

        let outcome = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
        let directory = DirectoryName::from_millis(NOW);
        assert_eq!(outcome.opened_directory, Some(directory));
        assert_eq!(outcome.stored_in, vec![directory]);
        assert!(!outcome.already_present);
        let stored = home
            .directory_path(directory)
            .join("pg_wal/000000010000000000000001.zst");
        assert_eq!(
            fs::metadata(&stored).unwrap().len(),
            outcome.compressed_bytes
        );
        assert_eq!(
            zstd::decode_all(File::open(&stored).unwrap()).unwrap(),
            bytes
        );

        let lock_file = LockFile::open(&home.lock_file_path()).unwrap();
        let state = inspect_journal(&lock_file).unwrap().state.unwrap();
        assert_eq!(state.directories[&directory].wal_files, 1);
        assert_eq!(state.wal.archived_count, 1);

        // A retry (PostgreSQL after a crash) is accepted and recorded as already present.
        let again = archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(5)).unwrap();
        assert!(again.already_present);
        assert_eq!(again.opened_directory, None);
        assert_eq!(again.compressed_bytes, outcome.compressed_bytes);
        let state = inspect_journal(&lock_file).unwrap().state.unwrap();
        assert_eq!(state.directories[&directory].wal_files, 1);
        assert_eq!(state.wal.archived_count, 2);
    }

    #[test]
    fn the_frame_has_the_content_size_and_a_checksum() {
        let scratch = ScratchDirectory::new("wal-archive-frame");
        let home = home_in(&scratch);
        let source = scratch.0.join("00000002.history");
        let bytes = b"1\t0/3000000\tno recovery target specified\n".to_vec();
        fs::write(&source, &bytes).unwrap();
        for threads in [0, 2] {
            let mut config = Config::default();
            config.wal.compression_threads = threads;
            let input = read_input(&source).unwrap();
            let compressed = compress(&home, &config, &input).unwrap();
            let mut frame = Vec::new();
            let mut reader = compressed.file.file();
            reader.rewind().unwrap();
            reader.read_to_end(&mut frame).unwrap();
            assert_eq!(frame.len() as u64, compressed.bytes);
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&frame).ok(),
                Some(Some(bytes.len() as u64)),
                "threads {threads}"
            );
            // Frame header descriptor, bit 2: content checksum flag (RFC 8878, 3.1.1.1.1).
            assert_ne!(frame[4] & 0b100, 0, "threads {threads}");
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), bytes);
        }
    }

    #[test]
    fn a_damaged_existing_copy_is_a_conflict() {
        let scratch = ScratchDirectory::new("wal-archive-damaged");
        let home = home_in(&scratch);
        let source = scratch.0.join("00000003.history");
        fs::write(&source, b"2\t0/4000000\tbefore 2026\n").unwrap();
        let first = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
        let stored = home
            .directory_path(first.stored_in[0])
            .join("pg_wal/00000003.history.zst");
        let mut damaged = fs::read(&stored).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff; // the checksum
        fs::remove_file(&stored).unwrap();
        fs::write(&stored, &damaged).unwrap();

        let error =
            archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(1000)).unwrap_err();
        assert!(matches!(error, ArchiveError::Conflict { .. }), "{error}");
        assert_eq!(fs::read(&stored).unwrap(), damaged);
        let kept = home.conflicts_path().join(format!(
            "00000003.history.{}.zst",
            NOW.plus_millis(1000).to_timestamp_string()
        ));
        assert!(kept.is_file(), "{error}");
    }

    #[test]
    fn a_current_directory_removed_by_hand_is_lost_and_a_new_one_opens() {
        // S-4.8: the journal says a current directory exists, but an operator removed it.
        // Archiving must go on (PostgreSQL's pg_wal would fill otherwise): the directory is
        // recorded as lost, never recreated, and the file goes to a new directory.
        let scratch = ScratchDirectory::new("wal-archive-vanished");
        let home = home_in(&scratch);
        let source = scratch.0.join("000000010000000000000001");
        fs::write(&source, segment_bytes(1 << 20, 3)).unwrap();
        let first = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
        let directory = first.stored_in[0];
        finish_base_backup(&home, directory);
        fs::remove_dir_all(home.directory_path(directory)).unwrap();
        let next = scratch.0.join("000000010000000000000002");
        fs::write(&next, segment_bytes(1 << 20, 4)).unwrap();
        let outcome = archive_wal(&home, &single_threaded(), &next, NOW.plus_millis(1)).unwrap();
        assert!(!home.directory_path(directory).exists());
        let opened = outcome.opened_directory.expect("a new directory");
        assert!(opened > directory);
        assert_eq!(outcome.stored_in, vec![opened]);
        let state = journal_file::open_journal(&home, NOW)
            .unwrap()
            .journal
            .state()
            .clone();
        assert_eq!(state.lost_directories.len(), 1);
        assert_eq!(state.lost_directories[0].directory, directory);
        assert_eq!(state.directories[&opened].phase, DirectoryPhase::Pending);
    }

    /// A segment whose first page is a long page header of cluster `system_identifier`.
    fn segment_of_cluster(size: usize, seed: u64, system_identifier: u64) -> Vec<u8> {
        let mut bytes = segment_bytes(size, seed);
        bytes[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        bytes[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        bytes[24..32].copy_from_slice(&system_identifier.to_le_bytes());
        bytes[32..36].copy_from_slice(&(size as u32).to_le_bytes());
        bytes[36..40].copy_from_slice(&8192u32.to_le_bytes());
        bytes
    }

    #[test]
    fn a_segment_of_another_cluster_is_refused_until_a_new_series_starts() {
        // S-2.9: a cloned VM or a copied config points a second server at this $PGBAK.
        let scratch = ScratchDirectory::new("wal-archive-cluster");
        let home = home_in(&scratch);
        let ours = 7_300_000_000_000_000_001;
        let theirs = 7_400_000_000_000_000_002;
        let first = scratch.0.join("000000010000000000000001");
        fs::write(&first, segment_of_cluster(1 << 20, 1, ours)).unwrap();
        let stored = archive_wal(&home, &single_threaded(), &first, NOW).unwrap();
        let directory = stored.stored_in[0];
        let state = || {
            journal_file::open_journal(&home, NOW)
                .unwrap()
                .journal
                .state()
                .clone()
        };
        assert_eq!(state().system_identifier, Some(ours));

        let foreign = scratch.0.join("000000010000000000000002");
        fs::write(&foreign, segment_of_cluster(1 << 20, 2, theirs)).unwrap();
        let error =
            archive_wal(&home, &single_threaded(), &foreign, NOW.plus_millis(1)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&ours.to_string()) && message.contains(&theirs.to_string()),
            "{message}"
        );
        assert!(error.hint().unwrap().contains("pgbak new-series"));
        let name = "000000010000000000000002.zst";
        assert!(
            !home
                .directory_path(directory)
                .join("pg_wal")
                .join(name)
                .exists()
        );

        // Starting a new series on purpose: the same file is accepted, into a new directory.
        let mut opened = journal_file::open_journal(&home, NOW).unwrap();
        let at = NOW.plus_millis(2_000);
        opened
            .append(&[Event::NewSeriesStarted { at }], at)
            .unwrap();
        let outcome = archive_wal(&home, &single_threaded(), &foreign, at).unwrap();
        assert_ne!(outcome.stored_in, vec![directory]);
        assert_eq!(state().system_identifier, Some(theirs));
    }

    /// Makes the first directory current (as a finished base backup does), so the next
    /// directory opened is a second, pending one.
    fn finish_base_backup(home: &PgbakHome, directory: DirectoryName) {
        let mut opened = journal_file::open_journal(home, NOW).unwrap();
        opened
            .append(
                &[
                    Event::SyncStarted {
                        pid: 1,
                        force_script: false,
                        force_base: false,
                        at: NOW,
                    },
                    Event::BaseBackupStarted { directory, at: NOW },
                    Event::BaseBackupFinished {
                        directory,
                        base_bytes: 10,
                        at: NOW,
                    },
                ],
                NOW,
            )
            .unwrap();
    }

    fn open_pending(home: &PgbakHome, directory: DirectoryName) {
        let mut opened = journal_file::open_journal(home, NOW).unwrap();
        opened
            .append(&[Event::DirectoryOpened { directory, at: NOW }], NOW)
            .unwrap();
    }

    #[test]
    fn a_retry_found_in_current_and_linked_into_a_new_pending_directory_counts_once_in_each() {
        // PostgreSQL re-sends a segment already in the current directory just after a sync
        // opened a pending one: the current directory must not count it a second time (its
        // WAL total decides when the next base backup is due, S-4.2).
        let scratch = ScratchDirectory::new("wal-archive-count");
        let home = home_in(&scratch);
        let first = scratch.0.join("000000010000000000000001");
        fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
        let current = archive_wal(&home, &single_threaded(), &first, NOW)
            .unwrap()
            .stored_in[0];
        finish_base_backup(&home, current);
        let state = || {
            journal_file::open_journal(&home, NOW)
                .unwrap()
                .journal
                .state()
                .clone()
        };
        let before = state().directories[&current].clone();
        let pending = DirectoryName(current.0 + 60);
        open_pending(&home, pending);

        let outcome = archive_wal(&home, &single_threaded(), &first, NOW.plus_millis(1)).unwrap();
        assert_eq!(outcome.stored_in, vec![current, pending]);
        let after = state();
        assert_eq!(after.directories[&current].wal_files, before.wal_files);
        assert_eq!(after.directories[&current].wal_bytes, before.wal_bytes);
        assert_eq!(after.directories[&pending].wal_files, 1);
    }

    #[test]
    fn a_pending_directory_recorded_but_not_created_yet_gets_a_hard_link_too() {
        let scratch = ScratchDirectory::new("wal-archive-pending");
        let home = home_in(&scratch);
        let first = scratch.0.join("000000010000000000000001");
        fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
        let current = archive_wal(&home, &single_threaded(), &first, NOW)
            .unwrap()
            .stored_in[0];
        finish_base_backup(&home, current);
        // The sync records DirectoryOpened before its mkdir (S-3.2): `wal` may come between.
        let pending = DirectoryName(current.0 + 60);
        open_pending(&home, pending);
        assert!(!home.directory_path(pending).exists());

        let second = scratch.0.join("000000010000000000000002");
        fs::write(&second, segment_bytes(1 << 20, 2)).unwrap();
        let outcome = archive_wal(&home, &single_threaded(), &second, NOW.plus_millis(1)).unwrap();
        assert_eq!(outcome.stored_in, vec![current, pending]);
        let inode = |directory: DirectoryName| {
            fs::metadata(
                home.directory_path(directory)
                    .join("pg_wal/000000010000000000000002.zst"),
            )
            .unwrap()
            .ino()
        };
        assert_eq!(inode(current), inode(pending), "compressed once (S-2.7)");
        for path in [
            home.directory_path(pending),
            home.directory_path(pending).join("pg_wal"),
        ] {
            assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o700);
        }
    }

    #[test]
    fn a_copy_present_in_one_target_only_is_completed_and_counted_as_new() {
        // A crash between the two links of an earlier call: the retry finds the file in the
        // current directory, adds it to the pending one, and records it as new, since the
        // journal record (which comes after every link) was never written.
        let scratch = ScratchDirectory::new("wal-archive-mixed");
        let home = home_in(&scratch);
        let first = scratch.0.join("000000010000000000000001");
        fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
        let current = archive_wal(&home, &single_threaded(), &first, NOW)
            .unwrap()
            .stored_in[0];
        finish_base_backup(&home, current);
        let third = scratch.0.join("000000010000000000000003");
        fs::write(&third, segment_bytes(1 << 20, 3)).unwrap();
        archive_wal(&home, &single_threaded(), &third, NOW).unwrap();
        let pending = DirectoryName(current.0 + 60);
        open_pending(&home, pending);

        let retry = archive_wal(&home, &single_threaded(), &third, NOW.plus_millis(1)).unwrap();
        assert_eq!(retry.stored_in, vec![current, pending]);
        assert!(!retry.already_present);
        let stored = home
            .directory_path(pending)
            .join("pg_wal/000000010000000000000003.zst");
        assert_eq!(
            zstd::decode_all(File::open(stored).unwrap()).unwrap(),
            segment_bytes(1 << 20, 3)
        );
    }

    #[test]
    fn a_full_disk_anywhere_in_a_journal_error_is_reported_as_full() {
        let scratch = ScratchDirectory::new("wal-archive-full-journal");
        let home = home_in(&scratch);
        let input = WalInput {
            name: WalFileName::parse("000000010000000000000001").unwrap(),
            path: PathBuf::from("/dev/null"),
            file: File::open("/dev/null").unwrap(),
            size: 0,
            stamp: FileStamp::default(),
        };
        let full = anyhow::Error::new(io::Error::from(io::ErrorKind::StorageFull))
            .context("journal /x/pgbak.lock");
        let error = journal_error(&home, &input, full);
        assert!(
            matches!(
                error,
                ArchiveError::StorageFull {
                    reason: "No space left on device",
                    ..
                }
            ),
            "{error}"
        );
        let quota = anyhow::Error::new(io::Error::from(io::ErrorKind::QuotaExceeded));
        let error = journal_error(&home, &input, quota);
        assert!(
            error.to_string().contains("(Disk quota exceeded)"),
            "{error}"
        );
        let other = anyhow::anyhow!("journal /x/pgbak.lock: something else");
        let error = journal_error(&home, &input, other);
        assert!(matches!(error, ArchiveError::Journal { .. }), "{error}");
        assert!(
            error.hint().is_none(),
            "the journal's own error has the hint"
        );
    }

    #[test]
    fn a_target_on_another_file_system_gets_a_durable_copy() {
        // An operator may symlink a directory elsewhere: linkat fails with EXDEV.
        let shm = Path::new("/dev/shm");
        let scratch = ScratchDirectory::new("wal-archive-exdev");
        if !shm.is_dir()
            || fs::metadata(shm).unwrap().dev() == fs::metadata(&scratch.0).unwrap().dev()
        {
            return; // No second file system here: nothing to check.
        }
        let elsewhere = ScratchDirectory::under(shm, "wal-archive-exdev");
        let mut file = UnnamedFile::create_in(&scratch.0, PRIVATE_FILE_MODE).unwrap();
        file.write_all(b"compressed bytes").unwrap();
        link_or_copy(&mut file, &elsewhere.0, "x.zst").unwrap();
        let copy = elsewhere.0.join("x.zst");
        assert_eq!(fs::read(&copy).unwrap(), b"compressed bytes");
        assert_eq!(fs::metadata(&copy).unwrap().mode() & 0o7777, 0o600);
        let error = link_or_copy(&mut file, &elsewhere.0, "x.zst").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn two_different_rejections_in_one_second_are_both_kept() {
        let scratch = ScratchDirectory::new("wal-archive-two-conflicts");
        let home = home_in(&scratch);
        let source = scratch.0.join("00000002.history");
        fs::write(&source, b"1\t0/3000000\toriginal\n").unwrap();
        archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
        let mut kept = Vec::new();
        for content in ["1\t0/3000000\tfirst\n", "1\t0/3000000\tsecond\n"] {
            fs::write(&source, content).unwrap();
            for _retry in 0..2 {
                match archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(1)) {
                    Err(ArchiveError::Conflict {
                        rejected: RejectedCopy::Kept(path),
                        ..
                    }) => kept.push(path),
                    other => panic!("{other:?}"),
                }
            }
        }
        let timestamp = NOW.to_timestamp_string();
        let first = home
            .conflicts_path()
            .join(format!("00000002.history.{timestamp}.zst"));
        let second = home
            .conflicts_path()
            .join(format!("00000002.history.{timestamp}.2.zst"));
        // The same rejected bytes retried are kept once; different ones get their own name.
        assert_eq!(kept, vec![first.clone(), first, second.clone(), second]);
        assert_eq!(fs::read_dir(home.conflicts_path()).unwrap().count(), 2);
    }

    #[test]
    fn a_conflict_retried_in_later_seconds_is_kept_once() {
        // PostgreSQL retries a failing archive_command forever (every second, then every
        // minute): the same rejected bytes must not gain a copy per retry (S-2.10).
        let scratch = ScratchDirectory::new("wal-archive-conflict-retries");
        let home = home_in(&scratch);
        let source = scratch.0.join("000000010000000000000001");
        fs::write(&source, segment_bytes(1 << 20, 1)).unwrap();
        archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
        fs::write(&source, segment_bytes(1 << 20, 2)).unwrap();
        for retry in 1..=4 {
            let error = archive_wal(
                &home,
                &single_threaded(),
                &source,
                NOW.plus_millis(retry * 61_000),
            )
            .unwrap_err();
            assert!(matches!(error, ArchiveError::Conflict { .. }), "{error}");
        }
        let kept: Vec<_> = fs::read_dir(home.conflicts_path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
    }

    #[test]
    fn a_pending_directory_failed_and_removed_after_the_target_choice_is_not_resurrected() {
        // The sync records a failed base backup and removes its pending directory between
        // this call's choice of targets (under the journal lock) and its links: the directory
        // must stay gone, or an orphan the journal does not know is left behind.
        let scratch = ScratchDirectory::new("wal-archive-resurrect");
        let home = home_in(&scratch);
        let first = scratch.0.join("000000010000000000000001");
        fs::write(&first, segment_bytes(1 << 20, 1)).unwrap();
        let current = archive_wal(&home, &single_threaded(), &first, NOW)
            .unwrap()
            .stored_in[0];
        finish_base_backup(&home, current);
        let pending = DirectoryName(current.0 + 60);
        open_pending(&home, pending);

        let mut fired = false;
        let mut sync_fails_the_base_backup = || {
            if std::mem::replace(&mut fired, true) {
                return;
            }
            let mut opened = journal_file::open_journal(&home, NOW).unwrap();
            let failed = [
                Event::BaseBackupStarted {
                    directory: pending,
                    at: NOW,
                },
                Event::BaseBackupFailed {
                    directory: pending,
                    output: "pg_basebackup: error: connection refused".into(),
                    at: NOW,
                },
            ];
            opened.append(&failed, NOW).unwrap();
            crate::sync::base_backup::remove_failed_directory(&home, pending).unwrap();
            let removed = Event::DirectoryRemoved {
                directory: pending,
                at: NOW,
            };
            opened.append(&[removed], NOW).unwrap();
        };
        let second = scratch.0.join("000000010000000000000002");
        fs::write(&second, segment_bytes(1 << 20, 2)).unwrap();
        let outcome = archive_wal_hooked(
            &home,
            &single_threaded(),
            &second,
            NOW.plus_millis(1),
            Some(&mut sync_fails_the_base_backup),
        )
        .unwrap();
        assert!(fired);
        assert_eq!(outcome.stored_in, vec![current]);
        assert!(
            !home.directory_path(pending).exists(),
            "a removed pending directory came back"
        );
    }

    #[test]
    fn a_segment_larger_than_a_window_is_several_frames_each_with_its_size_and_checksum() {
        let scratch = ScratchDirectory::new("wal-archive-windows");
        let home = home_in(&scratch);
        let source = scratch.0.join("000000010000000000000002");
        let bytes = segment_bytes(2 * COMPRESS_WINDOW_BYTES, 9);
        fs::write(&source, &bytes).unwrap();
        let outcome = archive_wal(&home, &single_threaded(), &source, NOW).unwrap();
        let stored = home
            .directory_path(outcome.stored_in[0])
            .join("pg_wal/000000010000000000000002.zst");
        let file = fs::read(&stored).unwrap();
        // The first frame holds exactly one window; the decoder concatenates both (S-2.2).
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&file).ok(),
            Some(Some(COMPRESS_WINDOW_BYTES as u64))
        );
        let first_frame = zstd::zstd_safe::find_frame_compressed_size(&file).unwrap();
        assert!(first_frame < file.len());
        for frame in [&file[..first_frame], &file[first_frame..]] {
            assert_ne!(frame[4] & 0b100, 0, "checksum flag");
        }
        assert_eq!(zstd::decode_all(&file[..]).unwrap(), bytes);
        assert_eq!(
            stored_content_bytes(&stored).unwrap(),
            Some(bytes.len() as u64)
        );
        // A frame cut short is no size at all.
        let cut = scratch.0.join("cut.zst");
        fs::write(&cut, &file[..file.len() - 1]).unwrap();
        assert_eq!(stored_content_bytes(&cut).unwrap(), None);
        // And the retry compares all of it.
        let again = archive_wal(&home, &single_threaded(), &source, NOW.plus_millis(1)).unwrap();
        assert!(again.already_present);
    }

    #[test]
    fn a_file_changed_while_it_was_read_is_refused() {
        let scratch = ScratchDirectory::new("wal-archive-changed");
        let home = home_in(&scratch);
        let source = scratch.0.join("000000010000000000000003");
        fs::write(&source, segment_bytes(1 << 20, 3)).unwrap();
        let input = read_input(&source).unwrap();
        // Another writer appends after the open (PostgreSQL never does; a stray program may).
        let mut writer = fs::OpenOptions::new().append(true).open(&source).unwrap();
        writer.write_all(b"more").unwrap();
        let error = compress(&home, &single_threaded(), &input).err().unwrap();
        assert!(
            matches!(error, ArchiveError::ChangedWhileRead { .. }),
            "{error}"
        );
    }
}
