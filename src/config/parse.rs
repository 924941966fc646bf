//! Reading `config.toml` ([`load`]: capped, non-blocking, S-7.1) and parsing it ([`parse`]),
//! keeping each key's line so errors can name it.
//!
//! Invariant: an absent file is every default; unknown keys are errors, never ignored (S-7).

use super::CONFIG_MAX_BYTES;
use super::Config;
use super::ConfigError;
use super::keys::SECTIONS;
use super::keys::key_doc;
use super::validate::validate;
use crate::os::regular_file::{ReadCappedError, Symlinks, read_capped};
use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::Path;

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
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) known: bool,
    /// 1-based line of the key.
    pub(super) line: usize,
    pub(super) key_span: Range<usize>,
    pub(super) value_span: Range<usize>,
    pub(super) value_text: String,
}

/// Every key of the file by dotted name: the sections, the keys inside known sections, and any
/// unknown top-level key (whose contents are not looked at: the key itself is the error).
pub(super) fn collect_entries(
    document: &toml::de::DeTable<'_>,
    text: &str,
) -> BTreeMap<String, Entry> {
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
pub(super) fn entry_at(entries: &BTreeMap<String, Entry>, span: Range<usize>) -> Option<&Entry> {
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
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}
