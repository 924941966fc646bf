//! Step 1 of the archive path (S-2.1): check the input and hold it open for the one read.
//!
//! Owns: [`WalInput`] and the rules for what `wal` accepts: the name parses as a WAL file
//! name, the path is a regular file (opened non-blocking, so a FIFO never hangs the archiver),
//! and its size fits its kind. Also the mapped [`Window`]s that compression reads, and the
//! [`FileStamp`] compared before and after that read.
//!
//! Invariant: nothing is created in `$PGBAK` before the input passed, so a refused call
//! leaves no trace.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ArchiveError;
use super::HISTORY_FILE_SIZE_MAX_BYTES;
use super::WAL_SEGMENT_SIZE_MAX_BYTES;
use super::WAL_SEGMENT_SIZE_MIN_BYTES;
use crate::wal_name::{WalFileKind, WalFileName};

/// A checked input file, open. Its bytes are read once, a window at a time, while compressing;
/// nothing else reads them (see [`compress`]).
#[derive(Debug)]
pub(super) struct WalInput {
    pub(super) name: WalFileName,
    pub(super) path: PathBuf,
    pub(super) file: File,
    pub(super) size: u64,
    pub(super) stamp: FileStamp,
}

/// What identifies one version of the input: a file rewritten, replaced, grown or shrunk while
/// it was read has another stamp afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct FileStamp {
    pub(super) device: u64,
    pub(super) inode: u64,
    pub(super) size: u64,
    pub(super) modified: (i64, i64),
    pub(super) changed: (i64, i64),
}

impl FileStamp {
    pub(super) fn of(metadata: &std::fs::Metadata) -> FileStamp {
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
pub(super) enum Window {
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
pub(super) fn map_window(file: &File, offset: u64, length: usize) -> io::Result<Window> {
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
    pub(super) fn name(&self) -> String {
        self.name.to_string()
    }
}

/// The sizes S-2.1 accepts for `kind`, as the end of a message, or `None` if `size` is one.
pub(super) fn size_problem(kind: WalFileKind, size: u64) -> Option<&'static str> {
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

/// What a file is when it is not a regular file, for messages (`…: a FIFO, not a regular
/// file`). Also used by `backup_copy`, which reports links it will not follow.
pub(crate) fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
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
pub(super) fn read_input(path: &Path) -> Result<WalInput, ArchiveError> {
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
    pub(super) fn check_unchanged(&self) -> Result<(), ArchiveError> {
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

pub(super) fn check_regular_and_size(
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
