//! The sync lock (S-3.5): the OFD byte range of `$PGBAK/pgbak.lock` that only one sync holds;
//! taking it without waiting, or waiting for it while the stop signals can interrupt.

use crate::home::environment::PgbakHome;
use crate::os::lock::{LockError, LockFile, LockGuard, LockKind, LockRange, Wait};
use crate::os::signals::StopSignals;

/// Takes the sync lock (S-3.5) through its own open file description (two locks through one
/// description would not conflict), if no other process holds it.
pub fn try_take_sync_lock(home: &PgbakHome) -> Result<Option<LockGuard>, LockError> {
    let lock_file = LockFile::open(&home.lock_file_path())?;
    // The guard keeps the description open; the `LockFile` handle itself may go.
    lock_file.try_lock(LockRange::Sync, LockKind::Exclusive)
}

/// Blocks until the sync lock is free and takes it (S-6.1: `sync` waits for a running sync).
/// `Ok(None)` when one of the [`StopSignals`] arrived while waiting.
pub fn wait_for_sync_lock(
    home: &PgbakHome,
    signals: &StopSignals,
) -> Result<Option<LockGuard>, LockError> {
    let lock_file = LockFile::open(&home.lock_file_path())?;
    loop {
        if signals.received().is_some() {
            return Ok(None);
        }
        match lock_file.lock(LockRange::Sync, LockKind::Exclusive, Wait::Forever) {
            Ok(guard) => return Ok(Some(guard)),
            // Some other signal (none is expected) interrupted the wait: wait on.
            Err(LockError::Interrupted { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;

    fn home(scratch: &ScratchDirectory) -> PgbakHome {
        scratch.home()
    }

    #[test]
    fn the_sync_lock_helpers_see_each_other() {
        let scratch = ScratchDirectory::new("sync-lock");
        let home = home(&scratch);
        let observer = LockFile::open(&home.lock_file_path()).unwrap();
        assert!(!observer.is_locked_by_other(LockRange::Sync).unwrap());
        let held = try_take_sync_lock(&home).unwrap().expect("free");
        assert!(observer.is_locked_by_other(LockRange::Sync).unwrap());
        assert!(try_take_sync_lock(&home).unwrap().is_none());
        drop(held);
        assert!(!observer.is_locked_by_other(LockRange::Sync).unwrap());
        assert!(try_take_sync_lock(&home).unwrap().is_some());
    }
}
