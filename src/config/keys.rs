//! The table of every config key: its default, meaning and range ([`KEYS`]), and
//! [`documented_keys`], the list the README is checked against.
//!
//! Invariant: the single list of keys; a test checks it against the structs in `config`.

use std::sync::OnceLock;

/// One documented key: the single source for the README, the error messages and the hints.
pub(super) struct KeyDoc {
    pub(super) key: &'static str,
    pub(super) default: &'static str,
    pub(super) meaning: &'static str,
    pub(super) allowed: &'static str,
}

/// Every key, in file order. A test checks this list against the structs above.
pub(super) const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "wal.compression_level",
        default: "1",
        meaning: "zstd level for WAL segments (S-2.2)",
        allowed: "an integer from 1 to 19",
    },
    KeyDoc {
        key: "wal.compression_threads",
        default: "0",
        meaning: "zstd worker threads for one WAL segment; 0 = single-threaded",
        allowed: "an integer from 0 to 64",
    },
    KeyDoc {
        key: "wal.conflicts_max_bytes",
        default: "1073741824",
        meaning: "the most bytes of rejected copies kept in $PGBAK/conflicts; past it a \
                  conflicting file is still refused, without a copy (S-2.10)",
        allowed: "an integer from 0 (keep no copy) to 1099511627776",
    },
    KeyDoc {
        key: "base.compression_level",
        default: "3",
        meaning: "zstd level for base.tzst (S-4.3)",
        allowed: "an integer from 1 to 19",
    },
    KeyDoc {
        key: "base.compression_threads",
        default: "0",
        meaning: "zstd worker threads for base.tzst; 0 = one per CPU",
        allowed: "an integer from 0 to 64",
    },
    KeyDoc {
        key: "base.max_age_hours",
        default: "168",
        meaning: "a base backup is due when the current one is older than this (S-4.2)",
        allowed: "an integer from 1 to 87600",
    },
    KeyDoc {
        key: "base.max_wal_ratio",
        default: "1.0",
        meaning: "a base backup is due when compressed WAL exceeds this times the compressed \
                  base (S-4.2)",
        allowed: "a finite number greater than 0",
    },
    KeyDoc {
        key: "base.retry_delay_min_seconds",
        default: "60",
        meaning: "first wait after a failed base backup, doubling per failure (S-4.5)",
        allowed: "an integer from 1 to 86400, at most base.retry_delay_max_seconds",
    },
    KeyDoc {
        key: "base.retry_delay_max_seconds",
        default: "3600",
        meaning: "longest wait between base backup attempts (S-4.5)",
        allowed: "an integer from 1 to 86400, at least base.retry_delay_min_seconds",
    },
    KeyDoc {
        key: "pg_basebackup.path",
        default: "\"pg_basebackup\"",
        meaning: "the pg_basebackup program; a bare name is looked up in PATH",
        allowed: "a non-empty program name or path",
    },
    KeyDoc {
        key: "pg_basebackup.host",
        default: "\"\"",
        meaning: "passed as --host; \"\" = not passed, libpq's PGHOST decides (S-4.4)",
        allowed: "a string",
    },
    KeyDoc {
        key: "pg_basebackup.port",
        default: "0",
        meaning: "passed as --port; 0 = not passed, libpq's PGPORT decides (S-4.4)",
        allowed: "an integer from 0 to 65535",
    },
    KeyDoc {
        key: "pg_basebackup.user",
        default: "\"\"",
        meaning: "passed as --username; \"\" = not passed, libpq's PGUSER decides (S-4.4)",
        allowed: "a string",
    },
    KeyDoc {
        key: "pg_basebackup.extra_args",
        default: "[]",
        meaning: "extra arguments appended to the pg_basebackup command line",
        allowed: "an array of strings without -D/--pgdata, -F/--format, -X/--wal-method (pgbak \
                  sets those, S-4.3)",
    },
    KeyDoc {
        key: "script.timeout_seconds",
        default: "0",
        meaning: "kill a backup script run after this long, counted as a failure; 0 = no \
                  timeout (S-5.4)",
        allowed: "an integer from 0 to 604800",
    },
    KeyDoc {
        key: "script.retry_delay_min_seconds",
        default: "1",
        meaning: "first wait after a failed backup script run, doubling per failure (S-5.3)",
        allowed: "an integer from 1 to 86400, at most script.retry_delay_max_seconds",
    },
    KeyDoc {
        key: "script.retry_delay_max_seconds",
        default: "300",
        meaning: "longest wait between backup script attempts (S-5.3)",
        allowed: "an integer from 1 to 86400, at least script.retry_delay_min_seconds",
    },
    KeyDoc {
        key: "sync.autostart",
        default: "true",
        meaning: "pgbak wal starts a background sync when none is running (S-2.8)",
        allowed: "true or false",
    },
    KeyDoc {
        key: "retention.keep_bases",
        default: "0",
        meaning: "keep this many base backups and delete older directories once the backup \
                  script shipped them (pgbak prune); 0 = never delete (S-8.3)",
        allowed: "an integer from 0 to 100000",
    },
];

/// The sections, in file order.
pub(super) const SECTIONS: &[&str] = &[
    "wal",
    "base",
    "pg_basebackup",
    "script",
    "sync",
    "retention",
];

/// Every key as `(dotted key, default as TOML text, one-line meaning)`, in file order: what the
/// README documents (S-7).
pub fn documented_keys() -> &'static [(&'static str, &'static str, &'static str)] {
    static DOCUMENTED: OnceLock<Vec<(&'static str, &'static str, &'static str)>> = OnceLock::new();
    DOCUMENTED.get_or_init(|| {
        KEYS.iter()
            .map(|doc| (doc.key, doc.default, doc.meaning))
            .collect()
    })
}

pub(super) fn key_doc(key: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|doc| doc.key == key)
}
