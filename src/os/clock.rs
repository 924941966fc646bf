//! The clock: the wall clock read in one place ([`now`]), and the sync's [`SessionClock`]
//! (S-6.5), so every fact's time comes from here.
//!
//! Invariant: within one sync, time never steps (wall clock at start plus monotonic time).

use crate::timestamp::UnixMillis;
use std::time::Instant;

/// The clock, read in one place so every fact's time comes from here.
pub fn now() -> UnixMillis {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// The sync's one clock (S-6.5): the wall clock read once when the sync starts, plus the
/// monotonic time elapsed since. Every fact the sync records and every `now` the machine
/// decides with come from here, so within a sync `now` never steps: a wall clock set back a
/// day neither makes a backoff last a day, nor does one set forward kill a running script at
/// once for a timeout it never reached. NTP's gradual slewing still reaches it (the monotonic
/// clock is slewed too); only steps are ignored until the next sync reads the wall clock again.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    wall_at_start: UnixMillis,
    started: Instant,
}

impl SessionClock {
    /// Reads the wall clock ([`now`]) once.
    pub fn start() -> SessionClock {
        SessionClock {
            wall_at_start: now(),
            started: Instant::now(),
        }
    }

    /// The wall time at start plus the monotonic time since: never steps, never goes back.
    pub fn now(&self) -> UnixMillis {
        let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_at_start.plus_millis(elapsed_ms)
    }
}
