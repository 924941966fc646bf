//! The range checks of every value ([`validate`]): pure, run on the parsed document.
//!
//! Invariant: a [`Config`] that passed has every value in its documented range, `min <= max`
//! for each backoff included, so users of it need no further checks.

use super::BASE_MAX_AGE_HOURS_MAX;
use super::BASE_MAX_AGE_HOURS_MIN;
use super::COMPRESSION_LEVEL_MAX;
use super::COMPRESSION_LEVEL_MIN;
use super::COMPRESSION_THREADS_MAX;
use super::CONFLICTS_MAX_BYTES_LIMIT;
use super::Config;
use super::ConfigError;
use super::KEEP_BASES_MAX;
use super::RESERVED_PG_BASEBACKUP_OPTIONS;
use super::RETRY_DELAY_SECONDS_MAX;
use super::RETRY_DELAY_SECONDS_MIN;
use super::SCRIPT_TIMEOUT_SECONDS_MAX;
use super::parse::Entry;
use std::collections::BTreeMap;
use std::path::Path;

/// The range checks of every key (see [`KEYS`] for the allowed values).
pub(super) fn validate(
    config: &Config,
    entries: &BTreeMap<String, Entry>,
    path: &Path,
) -> Result<(), ConfigError> {
    let level = |level: i32| (COMPRESSION_LEVEL_MIN..=COMPRESSION_LEVEL_MAX).contains(&level);
    let threads = |threads: u32| threads <= COMPRESSION_THREADS_MAX;
    let retry =
        |seconds: u64| (RETRY_DELAY_SECONDS_MIN..=RETRY_DELAY_SECONDS_MAX).contains(&seconds);
    let reserved_argument = config.pg_basebackup.extra_args.iter().find(|argument| {
        RESERVED_PG_BASEBACKUP_OPTIONS.iter().any(|option| {
            // `-D`, `-Ddir`, `--pgdata`, `--pgdata=dir`; a long option is matched whole so
            // that e.g. `--format-foo` (no such option) is left to pg_basebackup to refuse.
            if option.starts_with("--") {
                argument.as_str() == *option || argument.starts_with(&format!("{option}="))
            } else {
                argument.starts_with(option)
            }
        })
    });
    let checks: [(&str, bool, String); 16] = [
        (
            "wal.compression_level",
            level(config.wal.compression_level),
            config.wal.compression_level.to_string(),
        ),
        (
            "wal.compression_threads",
            threads(config.wal.compression_threads),
            config.wal.compression_threads.to_string(),
        ),
        (
            "wal.conflicts_max_bytes",
            config.wal.conflicts_max_bytes <= CONFLICTS_MAX_BYTES_LIMIT,
            config.wal.conflicts_max_bytes.to_string(),
        ),
        (
            "base.compression_level",
            level(config.base.compression_level),
            config.base.compression_level.to_string(),
        ),
        (
            "base.compression_threads",
            threads(config.base.compression_threads),
            config.base.compression_threads.to_string(),
        ),
        (
            "base.max_age_hours",
            (BASE_MAX_AGE_HOURS_MIN..=BASE_MAX_AGE_HOURS_MAX).contains(&config.base.max_age_hours),
            config.base.max_age_hours.to_string(),
        ),
        (
            "base.max_wal_ratio",
            config.base.max_wal_ratio.is_finite() && config.base.max_wal_ratio > 0.0,
            config.base.max_wal_ratio.to_string(),
        ),
        (
            "base.retry_delay_min_seconds",
            retry(config.base.retry_delay_min_seconds),
            config.base.retry_delay_min_seconds.to_string(),
        ),
        (
            "base.retry_delay_max_seconds",
            retry(config.base.retry_delay_max_seconds),
            config.base.retry_delay_max_seconds.to_string(),
        ),
        (
            "pg_basebackup.path",
            !config.pg_basebackup.path.trim().is_empty(),
            format!("{:?}", config.pg_basebackup.path),
        ),
        (
            "pg_basebackup.extra_args",
            reserved_argument.is_none(),
            format!("{:?}", config.pg_basebackup.extra_args),
        ),
        (
            "script.timeout_seconds",
            config.script.timeout_seconds <= SCRIPT_TIMEOUT_SECONDS_MAX,
            config.script.timeout_seconds.to_string(),
        ),
        (
            "script.retry_delay_min_seconds",
            retry(config.script.retry_delay_min_seconds),
            config.script.retry_delay_min_seconds.to_string(),
        ),
        (
            "script.retry_delay_max_seconds",
            retry(config.script.retry_delay_max_seconds),
            config.script.retry_delay_max_seconds.to_string(),
        ),
        // Booleans, strings and the port are fully checked by their types.
        ("sync.autostart", true, String::new()),
        (
            "retention.keep_bases",
            config.retention.keep_bases <= KEEP_BASES_MAX,
            config.retention.keep_bases.to_string(),
        ),
    ];
    for (key, ok, formatted) in checks {
        if ok {
            continue;
        }
        let entry = entries.get(key);
        let reason = match (key, reserved_argument) {
            ("pg_basebackup.extra_args", Some(argument)) => {
                format!("{argument:?} is set by pgbak itself")
            }
            _ => "out of range".to_string(),
        };
        return Err(ConfigError::InvalidValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            value: entry.map_or(formatted, |entry| entry.value_text.clone()),
            line: entry.map(|entry| entry.line),
            reason,
        });
    }
    for (section, min_seconds, max_seconds) in [
        (
            "base",
            config.base.retry_delay_min_seconds,
            config.base.retry_delay_max_seconds,
        ),
        (
            "script",
            config.script.retry_delay_min_seconds,
            config.script.retry_delay_max_seconds,
        ),
    ] {
        if min_seconds > max_seconds {
            return Err(ConfigError::RetryDelaysReversed {
                path: path.to_path_buf(),
                section,
                min_seconds,
                max_seconds,
            });
        }
    }
    Ok(())
}
