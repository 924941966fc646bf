//! The optional configuration file `$PGBAK/config.toml` (S-7).
//!
//! Owns: [`Config`] and its sections, their defaults and limits. The files: `parse` (reading
//! and parsing, S-7.1), `validate` (ranges, pure), `keys` (the key table and
//! [`documented_keys`], the list the README is checked against), `did_you_mean` (the hint for
//! an unknown key) and `error` ([`ConfigError`]).
//!
//! Invariants kept:
//! - An absent file means every default; a present file may set any subset of keys.
//! - A [`Config`] returned by [`load`] or [`parse`] has every value inside its documented range
//!   (`min <= max` for each backoff included), so users of it need no further checks.
//! - Unknown keys are errors, never ignored: a typo such as `max_agee` must not silently keep
//!   the default (S-7). Every error names the file, the dotted key and, when known, the line.
//! - Reading the file never blocks and never reads more than [`CONFIG_MAX_BYTES`] (S-7.1): a
//!   FIFO, a device or a huge file in its place is an error naming what it is, promptly.
//! - `keys::KEYS` is the single list of keys, defaults, meanings and ranges; a test checks it
//!   against the structs, so the README (checked against [`documented_keys`]) cannot drift.

use serde::{Deserialize, Serialize};

mod did_you_mean;
mod error;
mod keys;
mod parse;
mod validate;

pub use error::ConfigError;
pub use keys::documented_keys;
pub use parse::{load, parse};

/// The most pgbak reads of `config.toml` (S-7.1). Every key with a comment fits in a few KiB;
/// a MiB leaves room for any commentary while keeping `/dev/zero` or a runaway file from
/// taking the memory of the process PostgreSQL is waiting on.
pub const CONFIG_MAX_BYTES: u64 = 1 << 20;

/// zstd's normal levels; 20..=22 ("ultra") need hundreds of MiB per worker and are left out.
pub const COMPRESSION_LEVEL_MIN: i32 = 1;
pub const COMPRESSION_LEVEL_MAX: i32 = 19;
/// A limit on worker threads, far above any useful value, so a typo cannot spawn thousands.
pub const COMPRESSION_THREADS_MAX: u32 = 64;
/// `wal.conflicts_max_bytes` by default: room for hundreds of compressed 16 MiB segments,
/// and a bound on what PostgreSQL retrying a refused file forever can take (S-2.10).
pub const CONFLICTS_MAX_BYTES_DEFAULT: u64 = 1 << 30;
/// The largest `wal.conflicts_max_bytes` accepted (1 TiB): beyond that it bounds nothing.
pub const CONFLICTS_MAX_BYTES_LIMIT: u64 = 1 << 40;
/// One hour: a base backup more often than that is certainly a mistake.
pub const BASE_MAX_AGE_HOURS_MIN: u64 = 1;
/// Ten years: effectively "never by age" for an operator who relies on the WAL ratio only.
pub const BASE_MAX_AGE_HOURS_MAX: u64 = 87_600;
/// Retry delays are whole seconds from 1 s (never a busy loop) to one day.
pub const RETRY_DELAY_SECONDS_MIN: u64 = 1;
pub const RETRY_DELAY_SECONDS_MAX: u64 = 86_400;
/// One week: a backup script still running after that is hung, whatever it ships.
pub const SCRIPT_TIMEOUT_SECONDS_MAX: u64 = 604_800;

/// Options pgbak itself passes to pg_basebackup (S-4.3: `-D - -F tar -X none`); setting them
/// again through `extra_args` would break the streamed tarball.
const RESERVED_PG_BASEBACKUP_OPTIONS: &[&str] =
    &["-D", "--pgdata", "-F", "--format", "-X", "--wal-method"];

/// The whole configuration. `Default` is the documented default of every key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub wal: WalConfig,
    pub base: BaseConfig,
    pub pg_basebackup: PgBasebackupConfig,
    pub script: ScriptConfig,
    pub sync: SyncConfig,
    pub retention: RetentionConfig,
}

/// `[wal]`: compressing archived WAL segments (S-2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// zstd level, [`COMPRESSION_LEVEL_MIN`]..=[`COMPRESSION_LEVEL_MAX`].
    pub compression_level: i32,
    /// zstd worker threads for one segment; 0 = compress on the calling thread.
    pub compression_threads: u32,
    /// S-2.10: the most bytes of rejected copies `$PGBAK/conflicts/` may hold; 0 keeps none.
    pub conflicts_max_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        // Level 1 on the calling thread. Measured on 2 cores (README, "Benchmark"): zstd's
        // worker threads copy the segment into fresh job buffers, and for one 16 MiB segment in
        // a short-lived process those page faults and thread starts cost more than the second
        // core gains.
        WalConfig {
            compression_level: 1,
            compression_threads: 0,
            conflicts_max_bytes: CONFLICTS_MAX_BYTES_DEFAULT,
        }
    }
}

/// `[base]`: when and how base backups are taken (S-4.2, S-4.3, S-4.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaseConfig {
    pub compression_level: i32,
    /// 0 = one worker per CPU, resolved where the encoder is built (kept 0 here so the
    /// config means the same on every machine).
    pub compression_threads: u32,
    /// S-4.2: a base backup is due when the current one is older than this.
    pub max_age_hours: u64,
    /// S-4.2: due when the current directory's compressed WAL exceeds this × its compressed
    /// base, which bounds restore time.
    pub max_wal_ratio: f64,
    /// S-4.5: backoff after a failed base backup.
    pub retry_delay_min_seconds: u64,
    pub retry_delay_max_seconds: u64,
}

impl Default for BaseConfig {
    fn default() -> Self {
        BaseConfig {
            compression_level: 3,
            compression_threads: 0,
            max_age_hours: 168,
            max_wal_ratio: 1.0,
            retry_delay_min_seconds: 60,
            retry_delay_max_seconds: 3600,
        }
    }
}

/// `[pg_basebackup]`: how to run it (S-4.3, S-4.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgBasebackupConfig {
    /// The program; a bare name is looked up in `PATH`.
    pub path: String,
    /// "" = not passed, so libpq's environment (`PGHOST` …) decides (S-4.4).
    pub host: String,
    /// 0 = not passed.
    pub port: u16,
    /// "" = not passed.
    pub user: String,
    /// Appended to the command line.
    pub extra_args: Vec<String>,
}

impl Default for PgBasebackupConfig {
    fn default() -> Self {
        PgBasebackupConfig {
            path: "pg_basebackup".into(),
            host: String::new(),
            port: 0,
            user: String::new(),
            extra_args: Vec::new(),
        }
    }
}

/// `[script]`: running `$PGBAK/scripts/backup` (S-5.3, S-5.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptConfig {
    /// 0 = no timeout.
    pub timeout_seconds: u64,
    pub retry_delay_min_seconds: u64,
    pub retry_delay_max_seconds: u64,
}

impl Default for ScriptConfig {
    fn default() -> Self {
        ScriptConfig {
            timeout_seconds: 0,
            retry_delay_min_seconds: 1,
            retry_delay_max_seconds: 300,
        }
    }
}

/// `[sync]`: the background sync process (S-2.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// `pgbak wal` starts a background sync after its ack.
    pub autostart: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig { autostart: true }
    }
}

/// `[retention]`: deleting old backup directories (S-8.3). Opt-in: the default keeps all.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep this many base backups; 0 = never delete (the seed's behaviour).
    pub keep_bases: u32,
}

/// The most base backups `retention.keep_bases` may name: far beyond any real need, so that a
/// typo (an extra digit) is caught rather than read as "never delete".
pub const KEEP_BASES_MAX: u32 = 100_000;

const MILLISECONDS_PER_SECOND: u64 = 1000;
const MILLISECONDS_PER_HOUR: u64 = 3_600_000;

impl Config {
    /// The numbers the pure machine decides with (S-4.2, S-4.5, S-5.3, S-5.4), in its units.
    pub fn machine_policy(&self) -> crate::machine::Policy {
        let seconds = |seconds: u64| seconds.saturating_mul(MILLISECONDS_PER_SECOND);
        crate::machine::Policy {
            base_max_age_ms: self
                .base
                .max_age_hours
                .saturating_mul(MILLISECONDS_PER_HOUR),
            base_max_wal_ratio: self.base.max_wal_ratio,
            base_retry: crate::machine::Backoff {
                min_ms: seconds(self.base.retry_delay_min_seconds),
                max_ms: seconds(self.base.retry_delay_max_seconds),
            },
            script_retry: crate::machine::Backoff {
                min_ms: seconds(self.script.retry_delay_min_seconds),
                max_ms: seconds(self.script.retry_delay_max_seconds),
            },
            // S-5.4: 0 in the file means "no timeout".
            script_timeout_ms: match self.script.timeout_seconds {
                0 => None,
                timeout_seconds => Some(seconds(timeout_seconds)),
            },
            keep_bases: self.retention.keep_bases,
        }
    }
}

#[cfg(test)]
mod tests;
