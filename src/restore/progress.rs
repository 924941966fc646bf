//! The progress line of `pgbak restore`: bytes extracted, WAL files done of total, MB/s.
//!
//! Owns: [`Progress`], counters the extraction and the WAL pool bump, and the drawing.
//!
//! Invariants: only when stderr is a terminal (and the caller asked for it) is anything
//! drawn, as one line rewritten with `\r` and cleared at the end; otherwise nothing at all, so
//! logs and `--json` output stay clean. Counting is lock-free (relaxed atomics: the numbers
//! are for a human, a moment late is fine), so the hot paths never wait on the drawing.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the line is redrawn.
pub(crate) const REDRAW_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    started: Instant,
    pub(crate) base_bytes: AtomicU64,
    pub(crate) wal_files_done: AtomicU64,
    pub(crate) wal_bytes: AtomicU64,
    wal_files_total: u64,
    finished: AtomicBool,
}

impl Progress {
    /// Counters for a restore of `wal_files_total` WAL files; drawn only if `wanted` and
    /// stderr is a terminal.
    pub(crate) fn new(wanted: bool, wal_files_total: u64) -> Progress {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            base_bytes: AtomicU64::new(0),
            wal_files_done: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_files_total,
            finished: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Redraws every [`REDRAW_INTERVAL`] until [`Progress::finish`]; run on a thread of its own.
    pub(crate) fn draw_until_finished(&self) {
        if !self.enabled {
            return;
        }
        while !self.finished.load(Ordering::Relaxed) {
            self.draw();
            std::thread::sleep(REDRAW_INTERVAL);
        }
        // Clear the line so the next message starts on a clean one.
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }

    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    fn draw(&self) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K{}", self.line());
    }

    /// The text of the line (without `\r`).
    pub(crate) fn line(&self) -> String {
        let base = self.base_bytes.load(Ordering::Relaxed);
        let wal = self.wal_bytes.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let megabytes_per_second = (base + wal) as f64 / seconds / 1e6;
        format!(
            "pgbak restore: {:.1} MB extracted, WAL {}/{}, {:.0} MB/s",
            base as f64 / 1e6,
            self.wal_files_done.load(Ordering::Relaxed),
            self.wal_files_total,
            megabytes_per_second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_bytes_wal_files_and_speed() {
        let progress = Progress::new(false, 12);
        progress.base_bytes.store(2_500_000, Ordering::Relaxed);
        progress.wal_files_done.store(3, Ordering::Relaxed);
        let line = progress.line();
        assert!(
            line.starts_with("pgbak restore: 2.5 MB extracted, WAL 3/12, "),
            "{line}"
        );
        assert!(line.ends_with(" MB/s"), "{line}");
        // Not wanted: nothing is drawn, and drawing returns at once.
        assert!(!progress.is_enabled());
        progress.draw_until_finished();
    }
}
