//! The `fcntl` OFD byte-range locks on `$PGBAK/pgbak.lock` (S-3.5).
//!
//! Owns: [`LockFile`] (one open file description of the lock file), the two lock ranges, the
//! guards that release them, and [`LockError`].
//!
//! Layout of the locks. Both ranges are one byte long, at fixed offsets:
//!
//! | offset | constant               | held by                                                  |
//! |--------|------------------------|----------------------------------------------------------|
//! | 0      | [`JOURNAL_LOCK_OFFSET`] | exclusive: a journal append; shared: a journal reader   |
//! | 1      | [`SYNC_LOCK_OFFSET`]    | exclusive: the running sync process, for its lifetime   |
//!
//! The journal's own bytes live in the same file, from offset 0 on. That is fine: `fcntl` locks
//! are advisory and only ever conflict with other locks, never with `read`/`write`, and a lock
//! may cover bytes beyond the end of the file (the file may even be empty).
//!
//! Why OFD locks (`F_OFD_SETLK`), not classic POSIX locks or `flock` (seed, S-3.5):
//! - POSIX (`F_SETLK`) locks belong to the *process* and are all dropped when the process closes
//!   *any* descriptor on the file — e.g. the journal opening and closing its own descriptor would
//!   silently release the sync lock.
//! - OFD locks belong to the open file description: they survive closing other descriptors,
//!   are released when the last descriptor of that description closes (so a crashed process
//!   never leaves a stale lock: the file never needs deleting, seed), and, unlike POSIX
//!   locks, two descriptions opened by the *same* process conflict with each other. A thread that
//!   needs to exclude other threads opens its own [`LockFile`].
//!
//! Invariants kept:
//! - The descriptor is `O_CLOEXEC`, so the backup script and `pg_basebackup` never inherit a
//!   lock (S-3.5); a test checks the flag and that a child sees no such descriptor.
//! - A [`LockFile`] hands out at most one guard per range at a time. Two locks on the same
//!   description do not conflict (the second silently converts the first), and dropping either
//!   guard would release both; refusing the second ([`LockError::AlreadyHeld`]) keeps "holding a
//!   guard" equal to "holding the lock".
//! - Every wait is bounded unless the caller asks for [`Wait::Forever`].
//! - A [`LockFile`] remembers the directory it was opened in (an `O_PATH` descriptor), so
//!   [`LockFile::check_still_same`] can tell whether `$PGBAK` and `pgbak.lock` are still the
//!   directory and file this process holds (S-6.6): a lock on a file that was replaced, deleted
//!   or unmounted under it excludes nobody, and a journal there records into the void.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;

use crate::hint::OperatorHint;
use crate::os::durable::PRIVATE_FILE_MODE;

/// Offset of the journal lock byte (see the module header).
pub const JOURNAL_LOCK_OFFSET: u64 = 0;
/// Offset of the sync lock byte (see the module header).
pub const SYNC_LOCK_OFFSET: u64 = 1;
/// Length of every lock range, in bytes.
pub const LOCK_RANGE_LENGTH: u64 = 1;

/// First sleep between two attempts of a bounded wait. Journal appends hold the lock for one
/// write + fsync, typically well under a millisecond to a few milliseconds.
pub const POLL_SLEEP_MIN: Duration = Duration::from_micros(100);
/// Longest sleep between two attempts, so a released lock is noticed within 10 ms.
pub const POLL_SLEEP_MAX: Duration = Duration::from_millis(10);

/// One of the two lock ranges of S-3.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockRange {
    /// Byte [`JOURNAL_LOCK_OFFSET`]: journal appends (exclusive) and reads (shared).
    Journal,
    /// Byte [`SYNC_LOCK_OFFSET`]: held exclusively by the running sync process.
    Sync,
}

impl LockRange {
    pub const fn offset(self) -> u64 {
        match self {
            LockRange::Journal => JOURNAL_LOCK_OFFSET,
            LockRange::Sync => SYNC_LOCK_OFFSET,
        }
    }

    const fn index(self) -> usize {
        match self {
            LockRange::Journal => 0,
            LockRange::Sync => 1,
        }
    }
}

impl std::fmt::Display for LockRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockRange::Journal => write!(f, "journal lock (byte {JOURNAL_LOCK_OFFSET})"),
            LockRange::Sync => write!(f, "sync lock (byte {SYNC_LOCK_OFFSET})"),
        }
    }
}

/// Shared (`F_RDLCK`) or exclusive (`F_WRLCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl LockKind {
    fn fcntl_type(self) -> libc::c_short {
        // F_RDLCK and F_WRLCK are 0 and 1; the conversion cannot truncate.
        match self {
            LockKind::Shared => libc::F_RDLCK as libc::c_short,
            LockKind::Exclusive => libc::F_WRLCK as libc::c_short,
        }
    }
}

/// How long [`LockFile::lock`] may wait for a conflicting lock to go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Do not wait: a conflicting lock is [`LockError::Busy`].
    No,
    /// Poll with growing sleeps ([`POLL_SLEEP_MIN`] to [`POLL_SLEEP_MAX`]) until the deadline.
    UpTo(Duration),
    /// Block in `F_OFD_SETLKW` until the lock is free (for `pgbak wait` / `sync` waiting on the
    /// sync lock). A signal that interrupts the wait is [`LockError::Interrupted`], so a caller
    /// that handles SIGTERM can stop instead of blocking on.
    Forever,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock file {}: cannot be opened", .path.display())]
    Open { path: PathBuf, source: io::Error },

    #[error(
        "lock file {}: the {range} is held by another pgbak process (waited {:.3} s)",
        .path.display(),
        .waited.as_secs_f64()
    )]
    Busy {
        path: PathBuf,
        range: LockRange,
        waited: Duration,
    },

    #[error(
        "lock file {}: the {range} is already held through this descriptor (a bug in pgbak)",
        .path.display()
    )]
    AlreadyHeld { path: PathBuf, range: LockRange },

    #[error("lock file {}: waiting for the {range} was interrupted by a signal", .path.display())]
    Interrupted { path: PathBuf, range: LockRange },

    /// S-6.6: the path no longer leads to what this process opened (moved, replaced, deleted,
    /// unmounted). Continuing would let a second sync run next to this one, or record into a
    /// journal nobody reads.
    #[error(
        "{} is no longer the {what} this process opened ({change})",
        .path.display()
    )]
    NotTheSame {
        path: PathBuf,
        what: &'static str,
        change: String,
    },

    #[error("lock file {}: {operation} on the {range} failed: {errno}", .path.display())]
    System {
        path: PathBuf,
        range: LockRange,
        operation: &'static str,
        errno: Errno,
    },
}

impl OperatorHint for LockError {
    fn hint(&self) -> Option<String> {
        match self {
            LockError::Open { path, .. } => Some(format!(
                "check that {} is a regular file owned by the user running pgbak",
                path.display()
            )),
            LockError::Busy {
                path,
                range: LockRange::Journal,
                ..
            } => Some(format!(
                "another pgbak process holds it; it usually takes milliseconds. If this repeats, \
                 look for a stuck process with: fuser -v {}",
                path.display()
            )),
            LockError::Busy {
                path,
                range: LockRange::Sync,
                ..
            } => Some(format!(
                "a pgbak sync is running; wait for it with pgbak wait, or see it with: fuser -v {}",
                path.display()
            )),
            LockError::AlreadyHeld { .. } => {
                Some("please report this bug; running the command again is safe".into())
            }
            LockError::Interrupted { .. } => None,
            LockError::NotTheSame { .. } => Some(
                "PGBAK or its pgbak.lock was moved, replaced, deleted or unmounted while pgbak \
                 ran (pgbak never does that itself); put it back where PGBAK points (remount \
                 it): PostgreSQL retries the archiving, and pgbak sync resumes the rest"
                    .into(),
            ),
            LockError::System {
                errno: Errno::EINVAL,
                ..
            } => Some(
                "OFD locks (F_OFD_SETLK) need Linux 3.15 or later and a local file system".into(),
            ),
            LockError::System {
                errno: Errno::ENOLCK,
                ..
            } => Some(
                "the file system does not support locks (NFS without lockd?); put PGBAK on a \
                 local file system"
                    .into(),
            ),
            LockError::System { .. } => None,
        }
    }
}

/// What the descriptor and the per-range "a guard exists" flags share with the guards.
#[derive(Debug)]
struct Shared {
    file: File,
    path: PathBuf,
    /// The directory the file was opened in (`O_PATH`): held, so its identity cannot be
    /// reused by a new directory while this process compares against it.
    directory: OwnedFd,
    directory_path: PathBuf,
    held: [AtomicBool; 2],
}

/// Device and inode: what "the same file" means (S-6.6).
fn identity(metadata: &nix::sys::stat::FileStat) -> (u64, u64) {
    (metadata.st_dev, metadata.st_ino)
}

impl Shared {
    /// S-6.6: compares the held directory and file (`fstat`) with what their paths lead to
    /// now (`stat`). Only a mismatch or a missing path is an error; a `stat` that fails for
    /// another reason (EACCES, EIO) is reported the same way, since the path cannot be
    /// trusted either.
    fn check_still_same(&self) -> Result<(), LockError> {
        let compare = |held: Result<nix::sys::stat::FileStat, Errno>,
                       path: &Path,
                       what: &'static str|
         -> Result<(), LockError> {
            let not_the_same = |change: String| LockError::NotTheSame {
                path: path.to_path_buf(),
                what,
                change,
            };
            let held = held.map_err(|errno| not_the_same(format!("fstat failed: {errno}")))?;
            match nix::sys::stat::stat(path) {
                Ok(now) if identity(&now) == identity(&held) => Ok(()),
                Ok(now) => Err(not_the_same(format!(
                    "device {} inode {} then, device {} inode {} now",
                    held.st_dev, held.st_ino, now.st_dev, now.st_ino
                ))),
                Err(Errno::ENOENT) => Err(not_the_same("it is gone".into())),
                Err(errno) => Err(not_the_same(format!("stat failed: {errno}"))),
            }
        };
        compare(
            nix::sys::stat::fstat(self.directory.as_fd()),
            &self.directory_path,
            "directory",
        )?;
        compare(
            nix::sys::stat::fstat(self.file.as_fd()),
            &self.path,
            "lock file",
        )
    }
}

/// One open file description of `$PGBAK/pgbak.lock`. Cheap to keep open for a process's
/// lifetime; guards keep it alive, so a guard may outlive the `LockFile` it came from.
#[derive(Debug)]
pub struct LockFile {
    shared: Arc<Shared>,
}

impl LockFile {
    /// Opens the lock file read-write with `O_CLOEXEC`, creating it empty if missing (mode
    /// exactly 0600, its directory fsynced). Never truncates: the journal lives in it.
    pub fn open(path: &Path) -> Result<LockFile, LockError> {
        let open_error = |source: io::Error| LockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let directory_path = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Opened before the file, so a directory swapped in between is caught by the first
        // check rather than taken for the original.
        let directory = nix::fcntl::open(
            &directory_path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| open_error(io::Error::from(errno)))?;
        let options = |create_new: bool| {
            let mut options = std::fs::OpenOptions::new();
            // std opens every file with O_CLOEXEC; saying it again documents S-3.5 where it
            // matters and survives any change of std's default.
            options
                .read(true)
                .write(true)
                .create_new(create_new)
                .mode(PRIVATE_FILE_MODE)
                .custom_flags(libc::O_CLOEXEC);
            options
        };
        let file = match options(true).open(path) {
            Ok(created) => {
                // The umask may have narrowed the mode (S-1.3 wants exactly 0600), and the
                // new name must survive a crash like every file pgbak creates.
                created
                    .set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                    .map_err(open_error)?;
                crate::os::durable::fsync_directory(&directory_path).map_err(open_error)?;
                created
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                options(false).open(path).map_err(open_error)?
            }
            Err(error) => return Err(open_error(error)),
        };
        Ok(LockFile {
            shared: Arc::new(Shared {
                file,
                path: path.to_path_buf(),
                directory,
                directory_path,
                held: [AtomicBool::new(false), AtomicBool::new(false)],
            }),
        })
    }

    /// The open file, for reading and writing the journal through this same description.
    pub fn file(&self) -> &File {
        &self.shared.file
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// S-6.6: whether the lock file's directory (`$PGBAK`) and the lock file itself are still
    /// what their paths lead to (device and inode). [`LockError::NotTheSame`] if not: the
    /// caller must stop instead of acting (a sync) or acknowledging (`wal`).
    pub fn check_still_same(&self) -> Result<(), LockError> {
        self.shared.check_still_same()
    }

    /// Takes `range` as `kind`, waiting as `wait` says. A conflicting lock still there at the
    /// deadline is [`LockError::Busy`].
    pub fn lock(
        &self,
        range: LockRange,
        kind: LockKind,
        wait: Wait,
    ) -> Result<LockGuard, LockError> {
        let started = Instant::now();
        match wait {
            Wait::No => self
                .try_lock(range, kind)?
                .ok_or_else(|| self.busy(range, started)),
            Wait::UpTo(limit) => {
                // A limit too large to add to the clock (Duration::MAX) means no deadline.
                let deadline = started.checked_add(limit);
                let mut sleep = POLL_SLEEP_MIN;
                loop {
                    if let Some(guard) = self.try_lock(range, kind)? {
                        return Ok(guard);
                    }
                    let now = Instant::now();
                    let remaining = match deadline {
                        Some(deadline) if now >= deadline => {
                            return Err(self.busy(range, started));
                        }
                        Some(deadline) => deadline - now,
                        None => sleep,
                    };
                    std::thread::sleep(sleep.min(remaining));
                    sleep = (sleep * 2).min(POLL_SLEEP_MAX);
                }
            }
            Wait::Forever => {
                self.claim(range)?;
                let request = flock_request(kind.fcntl_type(), range);
                match fcntl(self.shared.file.as_fd(), FcntlArg::F_OFD_SETLKW(&request)) {
                    Ok(_) => Ok(LockGuard {
                        shared: Arc::clone(&self.shared),
                        range,
                        kind,
                    }),
                    Err(errno) => {
                        self.release_claim(range);
                        Err(match errno {
                            Errno::EINTR => LockError::Interrupted {
                                path: self.shared.path.clone(),
                                range,
                            },
                            other => self.system_error(range, "F_OFD_SETLKW", other),
                        })
                    }
                }
            }
        }
    }

    /// Takes `range` as `kind` if nobody else holds a conflicting lock; `Ok(None)` if someone
    /// does.
    pub fn try_lock(
        &self,
        range: LockRange,
        kind: LockKind,
    ) -> Result<Option<LockGuard>, LockError> {
        self.claim(range)?;
        let request = flock_request(kind.fcntl_type(), range);
        match fcntl(self.shared.file.as_fd(), FcntlArg::F_OFD_SETLK(&request)) {
            Ok(_) => Ok(Some(LockGuard {
                shared: Arc::clone(&self.shared),
                range,
                kind,
            })),
            Err(errno) => {
                self.release_claim(range);
                match errno {
                    // fcntl(2): "If a conflicting lock is held by another process, this call
                    // returns -1 and sets errno to EACCES or EAGAIN."
                    Errno::EAGAIN | Errno::EACCES => Ok(None),
                    other => Err(self.system_error(range, "F_OFD_SETLK", other)),
                }
            }
        }
    }

    /// Whether another open file description (this process or another) holds any lock on
    /// `range`, e.g. "is a sync running?". Only a snapshot: the answer may be stale at once, so
    /// decisions that must be exclusive take the lock instead.
    pub fn is_locked_by_other(&self, range: LockRange) -> Result<bool, LockError> {
        // Asking about an exclusive lock reports a conflict with shared and exclusive holders
        // alike; our own description's locks never count as conflicts.
        let mut probe = flock_request(LockKind::Exclusive.fcntl_type(), range);
        fcntl(self.shared.file.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe))
            .map_err(|errno| self.system_error(range, "F_OFD_GETLK", errno))?;
        Ok(i32::from(probe.l_type) != libc::F_UNLCK)
    }

    fn claim(&self, range: LockRange) -> Result<(), LockError> {
        let flag = &self.shared.held[range.index()];
        if flag
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(LockError::AlreadyHeld {
                path: self.shared.path.clone(),
                range,
            });
        }
        Ok(())
    }

    fn release_claim(&self, range: LockRange) {
        self.shared.held[range.index()].store(false, Ordering::Release);
    }

    fn busy(&self, range: LockRange, started: Instant) -> LockError {
        LockError::Busy {
            path: self.shared.path.clone(),
            range,
            waited: started.elapsed(),
        }
    }

    fn system_error(&self, range: LockRange, operation: &'static str, errno: Errno) -> LockError {
        LockError::System {
            path: self.shared.path.clone(),
            range,
            operation,
            errno,
        }
    }
}

/// A held lock range; dropping it releases the range.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    shared: Arc<Shared>,
    range: LockRange,
    kind: LockKind,
}

impl LockGuard {
    pub fn range(&self) -> LockRange {
        self.range
    }

    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// [`LockFile::check_still_same`] for the file this guard locks.
    pub fn check_still_same(&self) -> Result<(), LockError> {
        self.shared.check_still_same()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let request = flock_request(libc::F_UNLCK as libc::c_short, self.range);
        // Unlocking a range we hold cannot conflict; it could only fail on a bad descriptor,
        // which the Arc rules out. Should it fail anyway, the lock is still released when the
        // description closes, so there is nothing better to do in a destructor.
        let _ = fcntl(self.shared.file.as_fd(), FcntlArg::F_OFD_SETLK(&request));
        self.shared.held[self.range.index()].store(false, Ordering::Release);
    }
}

/// The `struct flock` for one range. `l_pid` must be 0 for OFD requests (fcntl(2)).
fn flock_request(lock_type: libc::c_short, range: LockRange) -> libc::flock {
    // Offsets 0 and 1 and length 1 fit every off_t.
    libc::flock {
        l_type: lock_type,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: range.offset() as libc::off_t,
        l_len: LOCK_RANGE_LENGTH as libc::off_t,
        l_pid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A fresh directory under /tmp with a lock file path in it, removed when dropped.
    struct ScratchLockFile {
        directory: PathBuf,
        path: PathBuf,
    }

    impl ScratchLockFile {
        fn new(label: &str) -> ScratchLockFile {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let directory = std::env::temp_dir()
                .join(format!("pgbak-lock-{label}-{}-{nanos}", std::process::id()));
            std::fs::create_dir(&directory).unwrap();
            let path = directory.join("pgbak.lock");
            ScratchLockFile { directory, path }
        }
    }

    impl Drop for ScratchLockFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }

    #[test]
    fn two_opens_in_one_process_conflict_because_ofd_locks_belong_to_the_description() {
        let scratch = ScratchLockFile::new("ofd");
        let first = LockFile::open(&scratch.path).unwrap();
        let second = LockFile::open(&scratch.path).unwrap();

        let held = first
            .lock(LockRange::Journal, LockKind::Exclusive, Wait::No)
            .unwrap();
        assert!(
            second
                .try_lock(LockRange::Journal, LockKind::Exclusive)
                .unwrap()
                .is_none()
        );
        assert!(
            second
                .try_lock(LockRange::Journal, LockKind::Shared)
                .unwrap()
                .is_none()
        );
        assert!(second.is_locked_by_other(LockRange::Journal).unwrap());
        assert!(
            !first.is_locked_by_other(LockRange::Journal).unwrap(),
            "own locks do not count"
        );
        // The other range is independent.
        let sync = second
            .try_lock(LockRange::Sync, LockKind::Exclusive)
            .unwrap();
        assert!(sync.is_some());

        drop(held);
        assert!(!second.is_locked_by_other(LockRange::Journal).unwrap());
        let after = second
            .try_lock(LockRange::Journal, LockKind::Exclusive)
            .unwrap();
        assert!(after.is_some(), "released by dropping the guard");
    }

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let scratch = ScratchLockFile::new("shared");
        let (a, b, c) = (
            LockFile::open(&scratch.path).unwrap(),
            LockFile::open(&scratch.path).unwrap(),
            LockFile::open(&scratch.path).unwrap(),
        );
        let reader_a = a.try_lock(LockRange::Journal, LockKind::Shared).unwrap();
        let reader_b = b.try_lock(LockRange::Journal, LockKind::Shared).unwrap();
        assert!(reader_a.is_some() && reader_b.is_some());
        assert!(
            c.try_lock(LockRange::Journal, LockKind::Exclusive)
                .unwrap()
                .is_none()
        );
        drop((reader_a, reader_b));
        assert!(
            c.try_lock(LockRange::Journal, LockKind::Exclusive)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn closing_another_descriptor_on_the_file_keeps_the_lock() {
        // The reason for OFD locks over POSIX locks: the journal may open and close its own
        // descriptor without releasing the sync lock.
        let scratch = ScratchLockFile::new("close");
        let holder = LockFile::open(&scratch.path).unwrap();
        let _sync = holder
            .lock(LockRange::Sync, LockKind::Exclusive, Wait::No)
            .unwrap();
        drop(std::fs::File::open(&scratch.path).unwrap());
        let observer = LockFile::open(&scratch.path).unwrap();
        assert!(observer.is_locked_by_other(LockRange::Sync).unwrap());
    }

    #[test]
    fn a_bounded_wait_gives_up_with_busy_after_the_deadline() {
        let scratch = ScratchLockFile::new("busy");
        let holder = LockFile::open(&scratch.path).unwrap();
        let waiter = LockFile::open(&scratch.path).unwrap();
        let _held = holder
            .lock(LockRange::Journal, LockKind::Exclusive, Wait::No)
            .unwrap();
        let limit = Duration::from_millis(50);
        let started = Instant::now();
        let error = waiter
            .lock(LockRange::Journal, LockKind::Exclusive, Wait::UpTo(limit))
            .unwrap_err();
        assert!(started.elapsed() >= limit);
        match &error {
            LockError::Busy {
                range: LockRange::Journal,
                waited,
                ..
            } => {
                assert!(*waited >= limit)
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .contains("journal lock (byte 0) is held by another pgbak")
        );
        assert!(error.hint().unwrap().contains("usually takes milliseconds"));
        let immediate = waiter.lock(LockRange::Journal, LockKind::Shared, Wait::No);
        assert!(matches!(immediate, Err(LockError::Busy { .. })));
    }

    #[test]
    fn a_bounded_wait_succeeds_once_the_holder_lets_go() {
        let scratch = ScratchLockFile::new("handover");
        let holder = LockFile::open(&scratch.path).unwrap();
        let held = holder
            .lock(LockRange::Journal, LockKind::Exclusive, Wait::No)
            .unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        let waiter = LockFile::open(&scratch.path).unwrap();
        let guard = waiter
            .lock(
                LockRange::Journal,
                LockKind::Exclusive,
                Wait::UpTo(Duration::from_secs(10)),
            )
            .unwrap();
        assert_eq!(
            (guard.range(), guard.kind()),
            (LockRange::Journal, LockKind::Exclusive)
        );
        releaser.join().unwrap();
    }

    #[test]
    fn a_blocking_wait_returns_when_the_sync_lock_is_released() {
        let scratch = ScratchLockFile::new("forever");
        let sync = LockFile::open(&scratch.path).unwrap();
        let held = sync
            .lock(LockRange::Sync, LockKind::Exclusive, Wait::No)
            .unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        let waiter = LockFile::open(&scratch.path).unwrap();
        let started = Instant::now();
        let guard = waiter
            .lock(LockRange::Sync, LockKind::Shared, Wait::Forever)
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(20));
        drop(guard);
        releaser.join().unwrap();
    }

    #[test]
    fn an_unrepresentable_deadline_means_no_deadline_not_a_panic() {
        let scratch = ScratchLockFile::new("huge");
        let lock_file = LockFile::open(&scratch.path).unwrap();
        let guard = lock_file.lock(
            LockRange::Journal,
            LockKind::Exclusive,
            Wait::UpTo(Duration::MAX),
        );
        assert!(guard.is_ok());
    }

    #[test]
    fn a_second_guard_on_the_same_descriptor_is_refused() {
        let scratch = ScratchLockFile::new("twice");
        let lock_file = LockFile::open(&scratch.path).unwrap();
        let first = lock_file
            .try_lock(LockRange::Journal, LockKind::Shared)
            .unwrap();
        assert!(first.is_some());
        let second = lock_file.try_lock(LockRange::Journal, LockKind::Exclusive);
        assert!(matches!(second, Err(LockError::AlreadyHeld { .. })));
        drop(first);
        assert!(
            lock_file
                .try_lock(LockRange::Journal, LockKind::Exclusive)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_guard_outlives_its_lock_file_and_still_holds_the_lock() {
        let scratch = ScratchLockFile::new("outlive");
        let guard = LockFile::open(&scratch.path)
            .unwrap()
            .lock(LockRange::Sync, LockKind::Exclusive, Wait::No)
            .unwrap();
        let observer = LockFile::open(&scratch.path).unwrap();
        assert!(observer.is_locked_by_other(LockRange::Sync).unwrap());
        drop(guard);
        assert!(!observer.is_locked_by_other(LockRange::Sync).unwrap());
    }

    #[test]
    fn the_lock_file_is_private_close_on_exec_and_not_inherited_by_children() {
        let scratch = ScratchLockFile::new("cloexec");
        let lock_file = LockFile::open(&scratch.path).unwrap();
        let _guard = lock_file
            .lock(LockRange::Sync, LockKind::Exclusive, Wait::No)
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(&scratch.path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600);

        let flags = fcntl(lock_file.file().as_fd(), FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );

        // A control descriptor opened without O_CLOEXEC shows that the listing below would
        // catch a leak.
        let control = nix::fcntl::open(
            &scratch.directory.join("control"),
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CREAT,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        // The child lists its descriptors with their targets; the lock file must not be one.
        let output = std::process::Command::new("ls")
            .arg("-l")
            .arg("/proc/self/fd/")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success());
        assert!(
            listing.contains("control"),
            "the control descriptor is inherited: {listing}"
        );
        drop(control);
        assert!(
            !listing.contains("pgbak.lock"),
            "descriptor {} leaked: {listing}",
            lock_file.file().as_raw_fd()
        );
    }

    #[test]
    fn a_replaced_lock_file_or_a_moved_directory_is_noticed_by_its_holder() {
        let scratch = ScratchLockFile::new("same");
        let lock_file = LockFile::open(&scratch.path).unwrap();
        let guard = lock_file
            .lock(LockRange::Sync, LockKind::Exclusive, Wait::No)
            .unwrap();
        lock_file.check_still_same().unwrap();
        guard.check_still_same().unwrap();

        // A copy renamed over the file: same path, another inode.
        let copy = scratch.directory.join("copy");
        std::fs::copy(&scratch.path, &copy).unwrap();
        std::fs::rename(&copy, &scratch.path).unwrap();
        let error = guard.check_still_same().unwrap_err();
        assert!(
            matches!(
                error,
                LockError::NotTheSame {
                    what: "lock file",
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("is no longer the lock file this process opened")
        );
        assert!(
            error
                .hint()
                .unwrap()
                .contains("moved, replaced, deleted or unmounted")
        );

        // The directory moved away: its path is gone.
        let moved = LockFile::open(&scratch.path).unwrap();
        moved.check_still_same().unwrap();
        let away = scratch.directory.with_extension("away");
        std::fs::rename(&scratch.directory, &away).unwrap();
        let error = moved.check_still_same().unwrap_err();
        std::fs::rename(&away, &scratch.directory).unwrap();
        assert!(
            matches!(
                error,
                LockError::NotTheSame {
                    what: "directory",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("it is gone"), "{error}");
        // Back in place, it is the same directory and file again.
        moved.check_still_same().unwrap();
    }

    #[test]
    fn opening_never_truncates_the_journal_bytes() {
        let scratch = ScratchLockFile::new("truncate");
        std::fs::write(&scratch.path, b"journal bytes").unwrap();
        let lock_file = LockFile::open(&scratch.path).unwrap();
        let _guard = lock_file
            .lock(LockRange::Journal, LockKind::Exclusive, Wait::No)
            .unwrap();
        assert_eq!(std::fs::read(&scratch.path).unwrap(), b"journal bytes");
    }

    #[test]
    fn an_unopenable_path_is_an_open_error_with_the_path() {
        let error = LockFile::open(Path::new("/nonexistent-pgbak-dir/pgbak.lock")).unwrap_err();
        assert!(matches!(error, LockError::Open { .. }));
        let chain = crate::error::one_line(&error);
        assert_eq!(
            chain,
            "lock file /nonexistent-pgbak-dir/pgbak.lock: cannot be opened: No such file or \
             directory (os error 2)"
        );
    }
}
