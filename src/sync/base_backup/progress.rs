//! How far a running base backup has got, for `pgbak status` (S-6.4: a running base backup is
//! shown with its start and the bytes read and written so far).
//!
//! Owns: `$PGBAK/base-backup.progress` ([`PROGRESS_FILE_NAME`]), [`ProgressFile`] (the sync's
//! writing end) and [`read_progress`] (status's reading end).
//!
//! Why a file: the count lives in the sync process (`base.tzst` is an unnamed `O_TMPFILE` until
//! it is complete, so nobody else can even stat it), and `status` is another process that must
//! not take the sync lock or write anything. Why not the journal: a record per megabyte would
//! grow it for nothing durable.
//!
//! Invariants kept:
//! - Advisory only: never fsynced, never read by anything that decides. A stale file (the sync
//!   was killed) is harmless: status shows a count only when the file names the directory the
//!   journal says is being backed up, and the next run truncates it.
//! - One fixed-width line, `TIMESTAMP READ WRITTEN\n` (bytes of `pg_basebackup`'s tar read, and
//!   of compressed output written), rewritten in place with one `pwrite` at offset 0: a reader
//!   sees the old line or the new one, never a shorter mixture.
//! - The sync removes the file when the run ends (dropping the [`ProgressFile`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::home::environment::PgbakHome;
use crate::home::names::PROGRESS_FILE_NAME;
use crate::os::durable::PRIVATE_FILE_MODE;
use crate::os::regular_file::{NON_BLOCKING_OPEN_FLAGS, Symlinks, read_capped, require_regular};
use crate::timestamp::DirectoryName;

/// The most `status` reads of the file: the line is under 64 bytes.
const PROGRESS_FILE_MAX_BYTES: u64 = 4096;

/// How often the count is rewritten at most: status is read by people and polls.
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// Width of a byte count: enough for any `u64`, so every line has the same length.
const BYTES_WIDTH: usize = 20;

/// How far a run has got, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub directory: DirectoryName,
    /// Uncompressed tar bytes read from `pg_basebackup`.
    pub bytes_read: u64,
    /// Compressed bytes written into the (still unnamed) `base.tzst`. The multithreaded encoder
    /// emits output in jobs of several MiB, so this lags behind on a slow server.
    pub bytes_written: u64,
}

/// The sync's handle on the progress file of one base backup run.
pub struct ProgressFile {
    path: PathBuf,
    file: File,
    directory: DirectoryName,
    last_written: Option<Instant>,
}

impl ProgressFile {
    /// Creates (or truncates a stale) progress file for `directory`, with a count of 0.
    pub fn create(home: &PgbakHome, directory: DirectoryName) -> io::Result<ProgressFile> {
        let path = home.path.join(PROGRESS_FILE_NAME);
        // Non-blocking and no symlinks (S-7.1): a FIFO left here must not stop the base
        // backup (a blocking open for writing waits for a reader forever), and a symlink
        // must not make the sync truncate a file elsewhere.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(PRIVATE_FILE_MODE)
            .custom_flags(NON_BLOCKING_OPEN_FLAGS | nix::libc::O_NOFOLLOW)
            .open(&path)?;
        // Truncate only once it is known to be a regular file: ftruncate on anything else
        // fails or means something else.
        require_regular(&file)?;
        file.set_len(0)?;
        let mut progress = ProgressFile {
            path,
            file,
            directory,
            last_written: None,
        };
        progress.write_now(0, 0)?;
        Ok(progress)
    }

    /// Records the counts unless the last update was under [`UPDATE_INTERVAL`] ago.
    pub fn update(&mut self, bytes_read: u64, bytes_written: u64) -> io::Result<()> {
        if self
            .last_written
            .is_some_and(|at| at.elapsed() < UPDATE_INTERVAL)
        {
            return Ok(());
        }
        self.write_now(bytes_read, bytes_written)
    }

    fn write_now(&mut self, bytes_read: u64, bytes_written: u64) -> io::Result<()> {
        let line = format!(
            "{} {bytes_read:>BYTES_WIDTH$} {bytes_written:>BYTES_WIDTH$}\n",
            self.directory
        );
        self.file.write_all_at(line.as_bytes(), 0)?;
        self.last_written = Some(Instant::now());
        Ok(())
    }
}

impl Drop for ProgressFile {
    fn drop(&mut self) {
        // Best effort: a leftover file is ignored by status (see the module invariants).
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What `$PGBAK/base-backup.progress` says, if it exists and reads well. Never an error:
/// progress is a nicety, and any doubt reads as "unknown".
///
/// The read is capped and never blocks (S-7.1): `status` must answer even when something else
/// (a FIFO, `/dev/zero`, a symlink) stands where the sync writes this file.
pub fn read_progress(home: &PgbakHome) -> Option<Progress> {
    let bytes = read_capped(
        &home.path.join(PROGRESS_FILE_NAME),
        PROGRESS_FILE_MAX_BYTES,
        Symlinks::Refuse,
    )
    .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let progress = Progress {
        directory: DirectoryName::parse(fields.next()?)?,
        bytes_read: fields.next()?.parse().ok()?,
        bytes_written: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    fn directory() -> DirectoryName {
        DirectoryName::parse("20261125T101500Z").unwrap()
    }

    fn progress(bytes_read: u64, bytes_written: u64) -> Option<Progress> {
        Some(Progress {
            directory: directory(),
            bytes_read,
            bytes_written,
        })
    }

    #[test]
    fn the_count_is_readable_while_the_run_lasts_and_gone_after() {
        let scratch = ScratchDirectory::new("progress");
        let home = scratch.home();
        let mut progress_file = ProgressFile::create(&home, directory()).unwrap();
        assert_eq!(read_progress(&home), progress(0, 0));
        // The first update after creation is throttled; a forced write shows the new counts.
        progress_file.update(70, 7).unwrap();
        assert_eq!(read_progress(&home), progress(0, 0));
        progress_file.write_now(987_654_321, 123_456_789).unwrap();
        assert_eq!(read_progress(&home), progress(987_654_321, 123_456_789));
        progress_file.write_now(u64::MAX, 0).unwrap();
        assert_eq!(read_progress(&home), progress(u64::MAX, 0));
        drop(progress_file);
        assert_eq!(read_progress(&home), None);
        assert!(!home.path.join(PROGRESS_FILE_NAME).exists());
    }

    #[test]
    fn a_stale_file_from_a_killed_run_is_truncated_by_the_next() {
        let scratch = ScratchDirectory::new("progress-stale");
        let home = scratch.home();
        std::fs::write(
            home.path.join(PROGRESS_FILE_NAME),
            "20200101T000000Z 99999999999999999999 99999999999999999999\n",
        )
        .unwrap();
        let _progress_file = ProgressFile::create(&home, directory()).unwrap();
        assert_eq!(read_progress(&home), progress(0, 0));
    }

    #[test]
    fn a_fifo_or_dev_zero_in_its_place_reads_as_unknown_at_once_and_blocks_no_writer() {
        let scratch = ScratchDirectory::new("progress-fifo");
        let home = scratch.home();
        let path = home.path.join(PROGRESS_FILE_NAME);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let reader_home = home.clone();
        std::thread::spawn(move || {
            let read = read_progress(&reader_home);
            let created = ProgressFile::create(&reader_home, directory()).map(drop);
            let _ = sender.send((read, created.is_err()));
        });
        let (read, create_failed) = receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("reading or creating the progress file blocked on a FIFO");
        assert_eq!(read, None);
        assert!(create_failed);

        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert_eq!(read_progress(&home), None);
        assert!(ProgressFile::create(&home, directory()).is_err());
    }

    #[test]
    fn garbage_reads_as_unknown() {
        let scratch = ScratchDirectory::new("progress-garbage");
        let home = scratch.home();
        for garbage in [
            "",
            "\n",
            "20261125T101500Z",
            "nonsense 12\n",
            "20261125T101500Z x\n",
        ] {
            std::fs::write(home.path.join(PROGRESS_FILE_NAME), garbage).unwrap();
            assert_eq!(read_progress(&home), None, "{garbage:?}");
        }
    }
}
