//! Opening the small files in `$PGBAK` that an operator can replace by anything (S-7.1):
//! `config.toml`, `base-backup.progress`, `sync.log`.
//!
//! Owns: [`read_capped`] (the whole of a small regular file, at most a given number of bytes),
//! [`require_regular`] (for files opened to be written) and [`NON_BLOCKING_OPEN_FLAGS`].
//!
//! Why: a path in `$PGBAK` may name a FIFO (an open for reading blocks until a writer comes,
//! forever), a device (`/dev/zero` reads without end, until memory runs out), a directory, or
//! a file of many GiB. None of them is ever what pgbak wants, and `pgbak wal` in particular
//! must return to PostgreSQL's archiver with an answer, never hang.
//!
//! Invariants kept:
//! - Opening never blocks: the open is `O_NONBLOCK` (a FIFO opens at once, a device's open does
//!   not wait for a carrier or a medium) and `O_NOCTTY` (a terminal never becomes ours).
//! - Nothing is read from anything but a regular file: the type comes from `fstat` on the open
//!   descriptor, so a file swapped between a look and the open is still caught.
//! - At most `limit_bytes + 1` bytes are ever read, and never more memory than that is
//!   reserved, whatever the file's size says or however it grows while being read.
//! - Every descriptor is `O_CLOEXEC` (S-3.5: children inherit nothing).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::libc;

/// Flags for every open of a file in `$PGBAK` that an operator could have replaced: see the
/// module header. On a regular file `O_NONBLOCK` changes nothing (Linux ignores it for reads
/// and writes of regular files), so it is left set.
pub const NON_BLOCKING_OPEN_FLAGS: i32 = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

/// Whether a final symlink is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// The operator may point the name elsewhere (`config.toml -> /etc/pgbak/config.toml`).
    Follow,
    /// A file only pgbak creates: a symlink there is never pgbak's (`O_NOFOLLOW`).
    Refuse,
}

/// Why [`read_capped`] returned no contents.
#[derive(Debug, thiserror::Error)]
pub enum ReadCappedError {
    /// The open failed: `NotFound` when there is no such file.
    #[error("cannot be opened")]
    Open(#[source] io::Error),
    /// A FIFO, device, socket, directory, or (with [`Symlinks::Refuse`]) a symlink.
    #[error("is {kind}, not a regular file")]
    NotARegularFile { kind: &'static str },
    /// More than the limit: not even the start is returned.
    #[error("is larger than {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    /// `fstat` or `read` failed.
    #[error("cannot be read")]
    Read(#[source] io::Error),
}

/// The whole of `path` if it is a regular file of at most `limit_bytes` bytes; see the module
/// header for what is guaranteed whatever `path` names.
pub fn read_capped(
    path: &Path,
    limit_bytes: u64,
    symlinks: Symlinks,
) -> Result<Vec<u8>, ReadCappedError> {
    let mut flags = NON_BLOCKING_OPEN_FLAGS;
    if symlinks == Symlinks::Refuse {
        flags |= libc::O_NOFOLLOW;
    }
    let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(file) => file,
        // O_NOFOLLOW on a symlink: ELOOP. Say what it is rather than "too many levels".
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ReadCappedError::NotARegularFile {
                kind: "a symbolic link",
            });
        }
        Err(error) => return Err(ReadCappedError::Open(error)),
    };
    let metadata = file.metadata().map_err(ReadCappedError::Read)?;
    if let Some(kind) = not_regular_kind(&metadata.file_type()) {
        return Err(ReadCappedError::NotARegularFile { kind });
    }
    if metadata.len() > limit_bytes {
        return Err(ReadCappedError::TooLarge { limit_bytes });
    }
    // The size is only a hint (the file may grow while it is read), so the read itself is
    // capped too: one byte past the limit tells "too large" from "exactly the limit".
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadCappedError::Read)?;
    if bytes.len() as u64 > limit_bytes {
        return Err(ReadCappedError::TooLarge { limit_bytes });
    }
    Ok(bytes)
}

/// An error unless `file` (just opened with [`NON_BLOCKING_OPEN_FLAGS`]) is a regular file: for
/// files pgbak writes, such as `sync.log`.
pub fn require_regular(file: &File) -> io::Result<()> {
    match not_regular_kind(&file.metadata()?.file_type()) {
        None => Ok(()),
        Some(kind) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        )),
    }
}

/// `None` for a regular file, else what it is, for messages ("is a FIFO, not a regular file").
fn not_regular_kind(file_type: &std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_symlink() {
        Some("a symbolic link")
    } else {
        Some("not a file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `read` on a thread and fails the test if it has not returned after a while: a
    /// regression must fail, not hang the suite.
    fn within_seconds<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(read());
        });
        receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("the read blocked")
    }

    #[test]
    fn a_small_regular_file_is_read_whole_and_the_limit_is_inclusive() {
        let scratch = ScratchDirectory::new("capped-small");
        let path = scratch.0.join("file");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(
            read_capped(&path, 10, Symlinks::Refuse).unwrap(),
            b"0123456789"
        );
        assert!(matches!(
            read_capped(&path, 9, Symlinks::Refuse),
            Err(ReadCappedError::TooLarge { limit_bytes: 9 })
        ));
    }

    #[test]
    fn a_missing_file_is_an_open_error_with_not_found() {
        let scratch = ScratchDirectory::new("capped-missing");
        match read_capped(&scratch.0.join("absent"), 10, Symlinks::Follow) {
            Err(ReadCappedError::Open(error)) => assert_eq!(error.kind(), io::ErrorKind::NotFound),
            other => panic!("expected Open(NotFound), got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_is_refused_at_once_not_waited_on() {
        let scratch = ScratchDirectory::new("capped-fifo");
        let path = scratch.0.join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let result = within_seconds(move || read_capped(&path, 10, Symlinks::Follow));
        assert!(
            matches!(
                result,
                Err(ReadCappedError::NotARegularFile { kind: "a FIFO" })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn dev_zero_is_refused_when_followed_and_a_symlink_when_not() {
        let scratch = ScratchDirectory::new("capped-zero");
        let link = scratch.0.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let followed = link.clone();
        let result = within_seconds(move || read_capped(&followed, 10, Symlinks::Follow));
        assert!(
            matches!(
                result,
                Err(ReadCappedError::NotARegularFile {
                    kind: "a character device"
                })
            ),
            "{result:?}"
        );
        assert!(matches!(
            read_capped(&link, 10, Symlinks::Refuse),
            Err(ReadCappedError::NotARegularFile {
                kind: "a symbolic link"
            })
        ));
    }

    #[test]
    fn a_huge_sparse_file_is_refused_without_being_read() {
        let scratch = ScratchDirectory::new("capped-huge");
        let path = scratch.0.join("huge");
        File::create(&path).unwrap().set_len(8 << 30).unwrap();
        assert!(matches!(
            read_capped(&path, 1 << 20, Symlinks::Follow),
            Err(ReadCappedError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_directory_is_refused() {
        let scratch = ScratchDirectory::new("capped-dir");
        assert!(matches!(
            read_capped(&scratch.0, 10, Symlinks::Follow),
            Err(ReadCappedError::NotARegularFile {
                kind: "a directory"
            })
        ));
    }

    #[test]
    fn require_regular_accepts_files_and_refuses_a_fifo() {
        let scratch = ScratchDirectory::new("capped-require");
        let file_path = scratch.0.join("file");
        let file = File::create(&file_path).unwrap();
        require_regular(&file).unwrap();
        let fifo = scratch.0.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(NON_BLOCKING_OPEN_FLAGS)
            .open(&fifo)
            .unwrap();
        let error = require_regular(&opened).unwrap_err();
        assert_eq!(error.to_string(), "it is a FIFO, not a regular file");
    }
}
