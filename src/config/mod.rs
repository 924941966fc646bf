//! The optional configuration file `$PGBAK/config.toml` (S-7).
//!
//! Owns: [`Config`] and its sections, their defaults, the allowed range of every key,
//! [`documented_keys`] (the list the README is checked against), and [`ConfigError`].
//!
//! Invariants kept:
//! - An absent file means every default; a present file may set any subset of keys.
//! - A [`Config`] returned by [`load`] or [`parse`] has every value inside its documented range
//!   (`min <= max` for each backoff included), so users of it need no further checks.
//! - Unknown keys are errors, never ignored: a typo such as `max_agee` must not silently keep
//!   the default (S-7). Every error names the file, the dotted key and, when known, the line.
//! - Reading the file never blocks and never reads more than [`CONFIG_MAX_BYTES`] (S-7.1): a
//!   FIFO, a device or a huge file in its place is an error naming what it is, promptly.
//! - [`KEYS`] is the single list of keys, defaults, meanings and ranges; a test checks it
//!   against the structs, so the README (checked against [`documented_keys`]) cannot drift.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::hint::OperatorHint;
use crate::os::regular_file::{ReadCappedError, Symlinks, read_capped};

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

/// One documented key: the single source for the README, the error messages and the hints.
struct KeyDoc {
    key: &'static str,
    default: &'static str,
    meaning: &'static str,
    allowed: &'static str,
}

/// Every key, in file order. A test checks this list against the structs above.
const KEYS: &[KeyDoc] = &[
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
];

/// The sections, in file order.
const SECTIONS: &[&str] = &["wal", "base", "pg_basebackup", "script", "sync"];

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

fn key_doc(key: &str) -> Option<&'static KeyDoc> {
    KEYS.iter().find(|doc| doc.key == key)
}

/// Why the configuration file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: cannot be read", .path.display())]
    Unreadable { path: PathBuf, source: io::Error },

    /// A FIFO, device, socket or directory where the file should be (S-7.1).
    #[error("config {}: is {kind}, not a regular file", .path.display())]
    NotARegularFile { path: PathBuf, kind: &'static str },

    /// Larger than [`CONFIG_MAX_BYTES`] (S-7.1); none of it was parsed.
    #[error(
        "config {}: is larger than {limit_bytes} bytes ({} MiB), the most pgbak reads from it",
        .path.display(),
        .limit_bytes >> 20
    )]
    TooLarge { path: PathBuf, limit_bytes: u64 },

    #[error("config {}: TOML syntax error{}: {message}", .path.display(), at_line(*.line))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },

    #[error("config {}: unknown key \"{key}\"{}", .path.display(), in_parentheses(*.line))]
    UnknownKey {
        path: PathBuf,
        key: String,
        line: Option<usize>,
    },

    #[error(
        "config {}: {key} = {value}{} is not allowed ({reason}); allowed: {}",
        .path.display(),
        in_parentheses(*.line),
        allowed_for(key)
    )]
    InvalidValue {
        path: PathBuf,
        key: String,
        /// The value as written in the file.
        value: String,
        line: Option<usize>,
        reason: String,
    },

    #[error(
        "config {}: {section}.retry_delay_min_seconds = {min_seconds} is greater than \
         {section}.retry_delay_max_seconds = {max_seconds}",
        .path.display()
    )]
    RetryDelaysReversed {
        path: PathBuf,
        section: &'static str,
        min_seconds: u64,
        max_seconds: u64,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

fn in_parentheses(line: Option<usize>) -> String {
    line.map(|line| format!(" (line {line})"))
        .unwrap_or_default()
}

fn allowed_for(key: &str) -> &'static str {
    key_doc(key).map_or("see the README", |doc| doc.allowed)
}

impl OperatorHint for ConfigError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            ConfigError::Unreadable { path, .. } => format!(
                "make {} readable by the user running pgbak, or remove it to use the defaults",
                path.display()
            ),
            ConfigError::NotARegularFile { path, .. } => format!(
                "make {} a regular file (a symlink to one is fine), or remove it to use the \
                 defaults",
                path.display()
            ),
            ConfigError::TooLarge { .. } => "a config.toml needs only a few lines (every key is \
                                             in the README): replace it, or remove it to use \
                                             the defaults"
                .into(),
            ConfigError::Syntax { .. } => "fix the TOML syntax; every key is optional, so an \
                                           empty or absent file means all defaults"
                .into(),
            ConfigError::UnknownKey { key, .. } => unknown_key_hint(key),
            ConfigError::InvalidValue { key, .. } => match key_doc(key) {
                Some(doc) => format!(
                    "set {key} to {}, or remove it for the default {}",
                    doc.allowed, doc.default
                ),
                None => "check the value's type against the README".into(),
            },
            ConfigError::RetryDelaysReversed { section, .. } => format!(
                "raise {section}.retry_delay_max_seconds or lower {section}.retry_delay_min_seconds"
            ),
        })
    }
}

/// `did you mean …?` plus the keys that would be accepted there.
fn unknown_key_hint(key: &str) -> String {
    let suggestion = closest_key(key).map(|known| format!("did you mean \"{known}\"? "));
    let known = match key.split_once('.') {
        Some((section, _)) if SECTIONS.contains(&section) => {
            format!(
                "known keys in [{section}]: {}",
                section_key_names(section).join(", ")
            )
        }
        _ => {
            let names: Vec<&str> = KEYS.iter().map(|doc| doc.key).collect();
            format!("known keys: {}", names.join(", "))
        }
    };
    format!("{}{known}", suggestion.unwrap_or_default())
}

/// The key names of one section, without the section: `compression_level`, ….
fn section_key_names(section: &str) -> Vec<&'static str> {
    KEYS.iter()
        .filter_map(|doc| doc.key.strip_prefix(section)?.strip_prefix('.'))
        .collect()
}

/// What a misspelt key probably meant, if anything is near enough to be a typo: a key of the
/// same section, a section (`[wall]`), or, for a bare name that is some key's last part
/// (`autostart` outside `[sync]`), that key.
fn closest_key(unknown: &str) -> Option<String> {
    match unknown.split_once('.') {
        Some((section, name)) if SECTIONS.contains(&section) => {
            nearest(name, section_key_names(section)).map(|name| format!("{section}.{name}"))
        }
        Some(_) => nearest(unknown, KEYS.iter().map(|doc| doc.key)).map(str::to_string),
        None => KEYS
            .iter()
            .find(|doc| doc.key.rsplit('.').next() == Some(unknown))
            .map(|doc| doc.key.to_string())
            .or_else(|| nearest(unknown, SECTIONS.iter().copied()).map(str::to_string)),
    }
}

/// The candidate nearest to `written`, if it is a plausible typo of it: a small edit distance,
/// or `written` is the candidate cut short or with a stray last letter (`max_agee`).
fn nearest<'a>(written: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = written.chars().count();
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(written, candidate), candidate))
        .filter(|(distance, candidate)| {
            let common_prefix = written
                .chars()
                .zip(candidate.chars())
                .take_while(|(a, b)| a == b)
                .count();
            *distance <= (length / 3).max(2) || (common_prefix >= 4 && common_prefix + 1 >= length)
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars (keys are short; quadratic is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Reads and checks `path`. A missing file (ENOENT) is every default; any other read failure
/// is an error, so a file pgbak cannot read is never mistaken for "no configuration".
///
/// The read is [`read_capped`] (S-7.1): a FIFO, a device or a file over [`CONFIG_MAX_BYTES`]
/// is an error at once. A symlink is followed: pointing `config.toml` at a file kept elsewhere
/// (by configuration management, say) is a reasonable setup, and strict modes (S-1.5) check
/// who can write the target before any command that runs programs reads it.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let unreadable = |source: io::Error| ConfigError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match read_capped(path, CONFIG_MAX_BYTES, Symlinks::Follow) {
        Ok(bytes) => bytes,
        Err(ReadCappedError::Open(error)) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(Config::default());
        }
        Err(ReadCappedError::Open(source) | ReadCappedError::Read(source)) => {
            return Err(unreadable(source));
        }
        Err(ReadCappedError::NotARegularFile { kind }) => {
            return Err(ConfigError::NotARegularFile {
                path: path.to_path_buf(),
                kind,
            });
        }
        Err(ReadCappedError::TooLarge { limit_bytes }) => {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                limit_bytes,
            });
        }
    };
    let text = String::from_utf8(bytes).map_err(|error| {
        unreadable(io::Error::new(
            io::ErrorKind::InvalidData,
            error.utf8_error(),
        ))
    })?;
    parse(&text, path)
}

/// Parses and checks the text of a configuration file; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let document = toml::de::DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        path: path.to_path_buf(),
        line: error.span().map(|span| line_of(text, span.start)),
        message: error.message().trim().to_string(),
    })?;
    let entries = collect_entries(document.get_ref(), text);

    // Unknown keys first, earliest in the file first: deny_unknown_fields would report one
    // without its section, and we want the dotted key and the line.
    if let Some(unknown) = entries
        .values()
        .filter(|entry| !entry.known)
        .min_by_key(|entry| entry.key_span.start)
    {
        return Err(ConfigError::UnknownKey {
            path: path.to_path_buf(),
            key: unknown.key.clone(),
            line: Some(unknown.line),
        });
    }

    let config: Config = toml::from_str(text).map_err(|error| {
        let entry = error.span().and_then(|span| entry_at(&entries, span));
        ConfigError::InvalidValue {
            path: path.to_path_buf(),
            key: entry.map_or_else(|| "(unknown key)".into(), |entry| entry.key.clone()),
            value: entry.map_or_else(String::new, |entry| entry.value_text.clone()),
            line: entry.map(|entry| entry.line),
            reason: error.message().trim().to_string(),
        }
    })?;
    validate(&config, &entries, path)?;
    Ok(config)
}

/// One key found in the file, with where it is and how its value was written.
struct Entry {
    key: String,
    known: bool,
    /// 1-based line of the key.
    line: usize,
    key_span: Range<usize>,
    value_span: Range<usize>,
    value_text: String,
}

/// Every key of the file by dotted name: the sections, the keys inside known sections, and any
/// unknown top-level key (whose contents are not looked at: the key itself is the error).
fn collect_entries(document: &toml::de::DeTable<'_>, text: &str) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut add = |key: String, known: bool, key_span: Range<usize>, value_span: Range<usize>| {
        let value_text = text
            .get(value_span.clone())
            .unwrap_or("")
            .trim()
            .to_string();
        let line = line_of(text, key_span.start);
        let entry = Entry {
            key: key.clone(),
            known,
            line,
            key_span,
            value_span,
            value_text,
        };
        entries.insert(key, entry);
    };
    for (section_key, section_value) in document.iter() {
        let section: &str = section_key.get_ref();
        let is_section = SECTIONS.contains(&section);
        add(
            section.to_string(),
            is_section,
            section_key.span(),
            section_value.span(),
        );
        if !is_section {
            continue;
        }
        if let Some(table) = section_value.get_ref().as_table() {
            for (key, value) in table.iter() {
                let dotted = format!("{section}.{}", key.get_ref());
                let known = key_doc(&dotted).is_some();
                add(dotted, known, key.span(), value.span());
            }
        }
    }
    entries
}

/// The innermost key whose value (or name) covers the error's position.
fn entry_at(entries: &BTreeMap<String, Entry>, span: Range<usize>) -> Option<&Entry> {
    entries
        .values()
        .filter(|entry| {
            let covers = |range: &Range<usize>| {
                range.start <= span.start && span.start < range.end.max(range.start + 1)
            };
            covers(&entry.value_span) || covers(&entry.key_span)
        })
        .max_by_key(|entry| entry.key.matches('.').count())
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// The range checks of every key (see [`KEYS`] for the allowed values).
fn validate(
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
    let checks: [(&str, bool, String); 15] = [
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PATH: &str = "/srv/pgbak/config.toml";

    fn parse_error(text: &str) -> ConfigError {
        match parse(text, Path::new(PATH)) {
            Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
            Err(error) => error,
        }
    }

    /// A file that sets every documented key to its documented default, built from the list.
    fn file_with_every_default() -> String {
        let mut text = String::new();
        let mut section_written = "";
        for (key, default, meaning) in documented_keys() {
            let (section, name) = key.split_once('.').unwrap();
            if section != section_written {
                text.push_str(&format!("\n[{section}]\n"));
                section_written = section;
            }
            text.push_str(&format!("{name} = {default} # {meaning}\n"));
        }
        text
    }

    #[test]
    fn documented_keys_match_the_structs_and_their_defaults() {
        let serialized = toml::Table::try_from(Config::default()).unwrap();
        let mut from_structs = BTreeMap::new();
        for (section, table) in &serialized {
            for (name, value) in table.as_table().unwrap() {
                from_structs.insert(format!("{section}.{name}"), value.to_string());
            }
        }
        let documented: BTreeMap<String, String> = documented_keys()
            .iter()
            .map(|(key, default, _)| (key.to_string(), default.to_string()))
            .collect();
        assert_eq!(from_structs, documented);
        let sections: Vec<&str> = serialized.keys().map(String::as_str).collect();
        let mut expected_sections = SECTIONS.to_vec();
        expected_sections.sort_unstable();
        let mut sections_sorted = sections.clone();
        sections_sorted.sort_unstable();
        assert_eq!(sections_sorted, expected_sections);
        for doc in KEYS {
            assert!(
                !doc.meaning.is_empty() && !doc.allowed.is_empty(),
                "{}",
                doc.key
            );
            assert!(
                !doc.meaning.contains("  "),
                "{}: stray line continuation",
                doc.key
            );
        }
    }

    #[test]
    fn a_file_with_every_documented_default_is_the_default_config() {
        let text = file_with_every_default();
        assert_eq!(parse(&text, Path::new(PATH)).unwrap(), Config::default());
    }

    #[test]
    fn an_absent_or_empty_file_means_every_default() {
        let directory = std::env::temp_dir().join(format!(
            "pgbak-config-absent-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir(&directory).unwrap();
        let loaded = load(&directory.join("config.toml"));
        let unreadable = load(&directory);
        std::fs::remove_dir_all(&directory).unwrap();
        assert_eq!(loaded.unwrap(), Config::default());
        assert_eq!(parse("", Path::new(PATH)).unwrap(), Config::default());
        assert_eq!(
            parse("# only a comment\n", Path::new(PATH)).unwrap(),
            Config::default()
        );
        // A directory where the file should be is not "absent": it is refused (S-7.1).
        assert!(matches!(
            unreadable,
            Err(ConfigError::NotARegularFile {
                kind: "a directory",
                ..
            })
        ));
    }

    #[test]
    fn a_partial_file_overrides_only_what_it_sets() {
        let text = "[base]\nmax_age_hours = 24\nmax_wal_ratio = 0.5\n\n[pg_basebackup]\n\
                    host = \"/run/postgresql\"\nport = 5433\nextra_args = [\"--checkpoint=fast\"]\n\
                    [sync]\nautostart = false\n";
        let config = parse(text, Path::new(PATH)).unwrap();
        let mut expected = Config::default();
        expected.base.max_age_hours = 24;
        expected.base.max_wal_ratio = 0.5;
        expected.pg_basebackup.host = "/run/postgresql".into();
        expected.pg_basebackup.port = 5433;
        expected.pg_basebackup.extra_args = vec!["--checkpoint=fast".into()];
        expected.sync.autostart = false;
        assert_eq!(config, expected);
    }

    #[test]
    fn an_unknown_key_names_the_dotted_key_the_file_and_the_line() {
        let error = parse_error("[base]\ncompression_level = 3\n\nmax_agee = 24\n");
        assert_eq!(
            error.to_string(),
            "config /srv/pgbak/config.toml: unknown key \"base.max_agee\" (line 4)"
        );
        let hint = error.hint().unwrap();
        assert!(
            hint.starts_with("did you mean \"base.max_age_hours\"? "),
            "{hint}"
        );
        assert!(
            hint.contains("known keys in [base]: compression_level, "),
            "{hint}"
        );
    }

    #[test]
    fn unknown_keys_in_every_spelling_are_found() {
        for (text, key, line) in [
            ("base.max_agee = 1\n", "base.max_agee", 1),
            ("base = { max_agee = 1 }\n", "base.max_agee", 1),
            ("[wall]\ncompression_level = 1\n", "wall", 1),
            ("\n\nautostart = false\n", "autostart", 3),
            ("[base.nested]\nx = 1\n", "base.nested", 1),
            (
                "[sync]\nautostart = true\n[script]\ntimeout = 5\n[wal]\nlevel = 1\n",
                "script.timeout",
                4,
            ),
        ] {
            match parse_error(text) {
                ConfigError::UnknownKey {
                    key: found,
                    line: Some(found_line),
                    ..
                } => {
                    assert_eq!((found.as_str(), found_line), (key, line), "{text:?}");
                }
                other => panic!("{text:?}: expected UnknownKey, got {other:?}"),
            }
        }
        let hint = parse_error("autostart = false\n").hint().unwrap();
        assert!(
            hint.starts_with("did you mean \"sync.autostart\"?"),
            "{hint}"
        );
        let hint = parse_error("[wall]\n").hint().unwrap();
        assert!(
            hint.starts_with("did you mean \"wal\"? known keys: "),
            "{hint}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_and_the_line() {
        let error = parse_error("[wal]\ncompression_level = 1\ncompression_threads =\n");
        match &error {
            ConfigError::Syntax { line, .. } => assert_eq!(*line, Some(3)),
            other => panic!("expected Syntax, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .starts_with("config /srv/pgbak/config.toml: TOML syntax error at line 3: "),
            "{error}"
        );
    }

    #[test]
    fn a_value_out_of_range_names_key_value_range_and_line() {
        let error = parse_error("[wal]\n[base]\nmax_wal_ratio = -1.5\n");
        assert_eq!(
            error.to_string(),
            "config /srv/pgbak/config.toml: base.max_wal_ratio = -1.5 (line 3) is not allowed \
             (out of range); allowed: a finite number greater than 0"
        );
        assert_eq!(
            error.hint().unwrap(),
            "set base.max_wal_ratio to a finite number greater than 0, or remove it for the \
             default 1.0"
        );
        for (text, key) in [
            ("[wal]\ncompression_level = 0\n", "wal.compression_level"),
            ("[wal]\ncompression_level = 20\n", "wal.compression_level"),
            (
                "[base]\ncompression_threads = 65\n",
                "base.compression_threads",
            ),
            ("[base]\nmax_age_hours = 0\n", "base.max_age_hours"),
            ("[base]\nmax_wal_ratio = nan\n", "base.max_wal_ratio"),
            ("[base]\nmax_wal_ratio = inf\n", "base.max_wal_ratio"),
            ("[base]\nmax_wal_ratio = 0.0\n", "base.max_wal_ratio"),
            (
                "[base]\nretry_delay_min_seconds = 0\n",
                "base.retry_delay_min_seconds",
            ),
            (
                "[script]\nretry_delay_max_seconds = 86401\n",
                "script.retry_delay_max_seconds",
            ),
            (
                "[script]\ntimeout_seconds = 604801\n",
                "script.timeout_seconds",
            ),
            ("[pg_basebackup]\npath = \"\"\n", "pg_basebackup.path"),
            (
                "[pg_basebackup]\nextra_args = [\"-Fp\"]\n",
                "pg_basebackup.extra_args",
            ),
            (
                "[pg_basebackup]\nextra_args = [\"--wal-method=fetch\"]\n",
                "pg_basebackup.extra_args",
            ),
        ] {
            match parse_error(text) {
                ConfigError::InvalidValue {
                    key: found,
                    line: Some(2),
                    ..
                } => {
                    assert_eq!(found, key, "{text:?}")
                }
                other => panic!("{text:?}: expected InvalidValue on line 2, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key_and_the_value_as_written() {
        let error = parse_error("[wal]\ncompression_level = \"fast\"\n");
        match &error {
            ConfigError::InvalidValue {
                key, value, line, ..
            } => {
                assert_eq!(
                    (key.as_str(), value.as_str(), *line),
                    ("wal.compression_level", "\"fast\"", Some(2))
                );
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
        assert!(
            error
                .to_string()
                .contains("allowed: an integer from 1 to 19"),
            "{error}"
        );
        for (text, key) in [
            (
                "[wal]\ncompression_threads = -1\n",
                "wal.compression_threads",
            ),
            ("[pg_basebackup]\nport = 70000\n", "pg_basebackup.port"),
            (
                "[pg_basebackup]\nextra_args = \"--progress\"\n",
                "pg_basebackup.extra_args",
            ),
            ("[sync]\nautostart = \"yes\"\n", "sync.autostart"),
            ("base = 3\n", "base"),
        ] {
            match parse_error(text) {
                ConfigError::InvalidValue { key: found, .. } => assert_eq!(found, key, "{text:?}"),
                other => panic!("{text:?}: expected InvalidValue, got {other:?}"),
            }
        }
    }

    #[test]
    fn reversed_retry_delays_are_refused() {
        let error = parse_error("[base]\nretry_delay_min_seconds = 7200\n");
        assert_eq!(
            error.to_string(),
            "config /srv/pgbak/config.toml: base.retry_delay_min_seconds = 7200 is greater than \
             base.retry_delay_max_seconds = 3600"
        );
        let error =
            parse_error("[script]\nretry_delay_min_seconds = 10\nretry_delay_max_seconds = 5\n");
        assert!(matches!(
            error,
            ConfigError::RetryDelaysReversed {
                section: "script",
                ..
            }
        ));
    }

    #[test]
    fn messages_and_hints_are_single_lines_without_the_program_prefix() {
        for text in [
            "[base]\nmax_agee = 1\n",
            "[wal\n",
            "[base]\nmax_wal_ratio = -1.0\n",
            "[wal]\ncompression_level = \"x\"\n",
            "[base]\nretry_delay_min_seconds = 7200\n",
        ] {
            let error = parse_error(text);
            let message = error.to_string();
            assert!(
                !message.contains('\n') && !message.starts_with("pgbak"),
                "{message:?}"
            );
            assert!(!error.hint().unwrap().contains('\n'), "{text:?}");
        }
    }

    #[test]
    fn a_fifo_or_an_oversized_file_is_refused_with_a_one_line_message_and_hint() {
        let scratch = crate::test_support::ScratchDirectory::new("config-special");
        let fifo = scratch.0.join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer ever comes: a blocking open would never return (S-7.1).
        let error = load(&fifo).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("config {}: is a FIFO, not a regular file", fifo.display())
        );
        let oversized = scratch.0.join("big.toml");
        let comment = format!("#{}\n", "x".repeat(1023));
        std::fs::write(&oversized, comment.repeat(1025)).unwrap();
        let error = load(&oversized).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "config {}: is larger than 1048576 bytes (1 MiB), the most pgbak reads from it",
                oversized.display()
            )
        );
        for error in [load(&fifo).unwrap_err(), error] {
            assert!(!error.hint().unwrap().contains('\n'));
        }
        let not_utf8 = scratch.0.join("latin1.toml");
        std::fs::write(&not_utf8, b"# caf\xe9\n").unwrap();
        assert!(matches!(
            load(&not_utf8),
            Err(ConfigError::Unreadable { .. })
        ));
    }

    #[test]
    fn the_default_config_gives_the_machines_default_policy() {
        assert_eq!(
            Config::default().machine_policy(),
            crate::machine::Policy::default()
        );
        let mut config = Config::default();
        config.script.timeout_seconds = 90;
        config.base.max_age_hours = 24;
        let policy = config.machine_policy();
        assert_eq!(policy.script_timeout_ms, Some(90_000));
        assert_eq!(policy.base_max_age_ms, 86_400_000);
    }

    prop_compose! {
        fn valid_config()(
            wal_level in 1..=19i32,
            wal_threads in 0..=64u32,
            conflicts_max_bytes in 0..=(1u64 << 40),
            base_level in 1..=19i32,
            base_threads in 0..=64u32,
            max_age_hours in 1..=87_600u64,
            max_wal_ratio in 0.001..1000.0f64,
            base_retry in (1..=86_400u64, 1..=86_400u64),
            host in "[a-z0-9./-]{0,20}",
            port in any::<u16>(),
            extra_args in proptest::collection::vec("--[a-z]{1,10}(=[a-z0-9]{1,5})?", 0..4),
            timeout_seconds in 0..=604_800u64,
            script_retry in (1..=86_400u64, 1..=86_400u64),
            autostart in any::<bool>(),
        ) -> Config {
            let ordered = |(a, b): (u64, u64)| (a.min(b), a.max(b));
            let (base_min, base_max) = ordered(base_retry);
            let (script_min, script_max) = ordered(script_retry);
            Config {
                wal: WalConfig {
                    compression_level: wal_level,
                    compression_threads: wal_threads,
                    conflicts_max_bytes,
                },
                base: BaseConfig {
                    compression_level: base_level,
                    compression_threads: base_threads,
                    max_age_hours,
                    max_wal_ratio,
                    retry_delay_min_seconds: base_min,
                    retry_delay_max_seconds: base_max,
                },
                pg_basebackup: PgBasebackupConfig {
                    path: "/usr/lib/postgresql/17/bin/pg_basebackup".into(),
                    host,
                    port,
                    user: "postgres".into(),
                    extra_args,
                },
                script: ScriptConfig {
                    timeout_seconds,
                    retry_delay_min_seconds: script_min,
                    retry_delay_max_seconds: script_max,
                },
                sync: SyncConfig { autostart },
            }
        }
    }

    proptest! {
        #[test]
        fn every_valid_config_round_trips_through_toml(config in valid_config()) {
            let text = toml::to_string(&config).unwrap();
            prop_assert_eq!(parse(&text, Path::new(PATH)).unwrap(), config);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text, Path::new(PATH));
        }
    }
}
