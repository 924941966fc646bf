//! The machine's policy: the configurable numbers `next_actions` decides with.
//!
//! Owns: [`Policy`] and [`Backoff`]. Built by the effects layer from `config.toml` (S-7); the
//! machine never reads the file. Invariant: `Backoff::delay_ms` is monotonic in the failure
//! count and always within `[min_ms, max_ms]`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// S-4.2: a base backup is due when the current one is older than this.
    pub base_max_age_ms: u64,
    /// S-4.2: due when the current directory's compressed WAL exceeds this × its base.
    pub base_max_wal_ratio: f64,
    /// S-4.5.
    pub base_retry: Backoff,
    /// S-5.3.
    pub script_retry: Backoff,
    /// S-5.4: `None` means the script may run forever.
    pub script_timeout_ms: Option<u64>,
    /// S-8.3: keep this many base backups, prune older ones once shipped; 0 = never prune.
    pub keep_bases: u32,
}

/// Exponential backoff: `min_ms` after the first failure, doubling, capped at `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The wait after `consecutive_failures` failures (0 failures: no wait).
    pub fn delay_ms(self, consecutive_failures: u32) -> u64 {
        if consecutive_failures == 0 {
            return 0;
        }
        let doublings = (consecutive_failures - 1).min(63);
        self.min_ms
            .saturating_mul(1u64 << doublings)
            .clamp(self.min_ms, self.max_ms.max(self.min_ms))
    }
}

impl Default for Policy {
    /// The defaults documented in the README (S-4.2, S-4.5, S-5.3).
    fn default() -> Self {
        Policy {
            base_max_age_ms: 7 * 24 * 3600 * 1000,
            base_max_wal_ratio: 1.0,
            base_retry: Backoff {
                min_ms: 60_000,
                max_ms: 3_600_000,
            },
            script_retry: Backoff {
                min_ms: 1_000,
                max_ms: 300_000,
            },
            script_timeout_ms: None,
            keep_bases: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_backoff_goes_from_one_second_to_five_minutes() {
        let backoff = Policy::default().script_retry;
        let delays: Vec<u64> = (0..12).map(|n| backoff.delay_ms(n)).collect();
        assert_eq!(
            delays,
            [
                0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
        assert_eq!(backoff.delay_ms(u32::MAX), 300_000);
    }
}
