//! The stop signals of a sync (S-6.1): SIGTERM, SIGINT and SIGHUP ask it to stop cleanly.
//!
//! Invariants: the signal handler only stores the signal number in an atomic (async-signal
//! safe); it is installed without `SA_RESTART`, so a blocking wait for the sync lock
//! (`F_OFD_SETLKW`) returns `EINTR` and the caller can stop instead of blocking on; the
//! previous dispositions are restored on drop.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal that asked the sync to stop, or 0. Written only by the handler.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record_stop_signal(signal: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

/// The signals that stop a sync cleanly (S-6.1): `systemctl stop`/`kill` (SIGTERM), Ctrl-C
/// (SIGINT), and a closed terminal (SIGHUP; left at its default it would kill pgbak without a
/// record and leave the script, in its own process group, running on).
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// While alive, SIGTERM, SIGINT and SIGHUP set a flag instead of killing the process; the
/// previous dispositions come back when it is dropped.
#[derive(Debug)]
pub struct StopSignals {
    previous: Vec<(Signal, SigAction)>,
}

impl StopSignals {
    /// Installs the handler. Without `SA_RESTART`, so a blocking lock wait is interrupted.
    pub fn install() -> io::Result<StopSignals> {
        STOP_SIGNAL.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(record_stop_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        for signal in STOP_SIGNALS {
            // SAFETY: the handler only performs an atomic store, which is async-signal-safe,
            // and it stays valid for the life of the process (a plain `extern "C" fn`).
            let old =
                unsafe { nix::sys::signal::sigaction(signal, &action) }.map_err(io::Error::from)?;
            previous.push((signal, old));
        }
        Ok(StopSignals { previous })
    }

    /// The stop signal received since [`StopSignals::install`], if any.
    pub fn received(&self) -> Option<Signal> {
        match STOP_SIGNAL.load(Ordering::SeqCst) {
            0 => None,
            number => Signal::try_from(number).ok(),
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        for (signal, old) in self.previous.drain(..).rev() {
            // SAFETY: restores a disposition that was in effect before `install`.
            let _ = unsafe { nix::sys::signal::sigaction(signal, &old) };
        }
    }
}
