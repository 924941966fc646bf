//! [`ConfigError`]: what is wrong with `config.toml`, naming the file, the dotted key and,
//! when known, the line, with a `hint:` giving the allowed values.

use super::did_you_mean::unknown_key_hint;
use super::keys::key_doc;
use crate::hint::OperatorHint;
use std::io;
use std::path::PathBuf;

/// Why the configuration file cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: cannot be read", .path.display())]
    Unreadable { path: PathBuf, source: io::Error },

    /// A FIFO, device, socket or directory where the file should be (S-7.1).
    #[error("config {}: is {kind}, not a regular file", .path.display())]
    NotARegularFile { path: PathBuf, kind: &'static str },

    /// Larger than [`CONFIG_MAX_BYTES`](super::CONFIG_MAX_BYTES) (S-7.1); none of it was parsed.
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

pub(super) fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

pub(super) fn in_parentheses(line: Option<usize>) -> String {
    line.map(|line| format!(" (line {line})"))
        .unwrap_or_default()
}

pub(super) fn allowed_for(key: &str) -> &'static str {
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
