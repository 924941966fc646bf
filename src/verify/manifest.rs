//! The `backup_manifest` that `pg_basebackup` puts into its tar stream (S-8.2), parsed and its
//! own checksum checked: [`Manifest::parse`]. Pure: bytes in, a manifest or the problem out.
//!
//! Format (PostgreSQL's `src/backend/backup/backup_manifest.c`, read by `pg_verifybackup`'s
//! `src/common/parse_manifest.c`): one JSON object, `PostgreSQL-Backup-Manifest-Version` 1
//! (PostgreSQL 13 to 17) or 2 (18, which adds `System-Identifier`), `Files` (each with `Path`,
//! or `Encoded-Path` in hex when the name is not valid UTF-8, `Size`, and unless checksums are
//! off `Checksum-Algorithm` and `Checksum` in hex), `WAL-Ranges` (`Timeline`, `Start-LSN`,
//! `End-LSN`), and last `Manifest-Checksum`: the SHA-256, in hex, of every byte up to and
//! including the newline before the line that holds it (the manifest's second-to-last newline).
//!
//! The file checksums ([`Checksum`]): `CRC32C` is the 32-bit result in the server's byte order
//! (little-endian here, see `pg_checksum_final`), hex-encoded, so `crc32c(x).to_le_bytes()`;
//! `SHA224`/`SHA256`/`SHA384`/`SHA512` are the digests.

use crate::backup_copy::Lsn;
use serde::Deserialize;
use sha2::Digest;

/// The largest manifest read into memory: PostgreSQL's manifest has one line of about 150
/// bytes per file; 1 GiB is millions of files more than a cluster pgbak backs up holds.
pub const MANIFEST_BYTES_MAX: u64 = 1 << 30;

/// A checksum algorithm a manifest can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Algorithm {
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "CRC32C" => Algorithm::Crc32c,
            "SHA224" => Algorithm::Sha224,
            "SHA256" => Algorithm::Sha256,
            "SHA384" => Algorithm::Sha384,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Sha224 => "SHA224",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha384 => "SHA384",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

/// A running checksum of one member's content.
pub enum Checksum {
    Crc32c(u32),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Checksum {
    pub fn new(algorithm: Algorithm) -> Checksum {
        match algorithm {
            Algorithm::Crc32c => Checksum::Crc32c(0),
            Algorithm::Sha224 => Checksum::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Checksum::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Checksum::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Checksum::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Checksum::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            Checksum::Sha224(hash) => hash.update(bytes),
            Checksum::Sha256(hash) => hash.update(bytes),
            Checksum::Sha384(hash) => hash.update(bytes),
            Checksum::Sha512(hash) => hash.update(bytes),
        }
    }

    /// Lower-case hex, as the manifest writes it.
    pub fn finish_hex(self) -> String {
        match self {
            Checksum::Crc32c(crc) => hex(&crc.to_le_bytes()),
            Checksum::Sha224(hash) => hex(&hash.finalize()),
            Checksum::Sha256(hash) => hex(&hash.finalize()),
            Checksum::Sha384(hash) => hex(&hash.finalize()),
            Checksum::Sha512(hash) => hex(&hash.finalize()),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// The member's path in the tar, as bytes (an `Encoded-Path` decoded).
    pub path: Vec<u8>,
    pub size: u64,
    /// `None` with `--manifest-checksums=none`.
    pub checksum: Option<(Algorithm, String)>,
}

/// One `WAL-Ranges` entry: the WAL recovery needs to make this backup consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalRange {
    pub timeline: u32,
    pub start: Lsn,
    pub end: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: u32,
    pub system_identifier: Option<u64>,
    pub files: Vec<ManifestFile>,
    pub wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    #[serde(rename = "System-Identifier")]
    system_identifier: Option<u64>,
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<RawRange>,
    #[serde(rename = "Manifest-Checksum")]
    checksum: String,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

/// What is wrong with a manifest: what was expected, what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    pub expected: String,
    pub found: String,
}

fn problem(expected: impl Into<String>, found: impl Into<String>) -> ManifestProblem {
    ManifestProblem {
        expected: expected.into(),
        found: found.into(),
    }
}

impl Manifest {
    /// Checks the manifest's own checksum, then parses it (see the module header).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestProblem> {
        let newlines: Vec<usize> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let [.., penultimate, _] = newlines[..] else {
            return Err(problem(
                "a backup manifest (several lines)",
                format!("{} newline(s)", newlines.len()),
            ));
        };
        let computed = hex(&sha2::Sha256::digest(&bytes[..=penultimate]));
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|error| problem("a backup manifest in JSON", error.to_string()))?;
        if raw.checksum.to_ascii_lowercase() != computed {
            return Err(problem(
                format!("Manifest-Checksum {computed} (SHA-256 of the manifest)"),
                raw.checksum,
            ));
        }
        if !(1..=2).contains(&raw.version) {
            return Err(problem(
                "PostgreSQL-Backup-Manifest-Version 1 or 2",
                raw.version.to_string(),
            ));
        }
        let mut files = Vec::with_capacity(raw.files.len());
        for file in raw.files {
            let path = match (file.path, file.encoded_path) {
                (Some(path), None) => path.into_bytes(),
                (None, Some(encoded)) => unhex(&encoded)
                    .ok_or_else(|| problem("an Encoded-Path in hex", encoded.clone()))?,
                _ => {
                    return Err(problem(
                        "a Path or an Encoded-Path for every file",
                        "both or neither",
                    ));
                }
            };
            let checksum = match (file.algorithm.as_deref(), file.checksum) {
                (None | Some("NONE"), _) => None,
                (Some(name), Some(value)) => {
                    let algorithm = Algorithm::parse(name)
                        .ok_or_else(|| problem("CRC32C, SHA224, SHA256, SHA384 or SHA512", name))?;
                    Some((algorithm, value.to_ascii_lowercase()))
                }
                (Some(name), None) => {
                    return Err(problem(format!("a {name} checksum"), "none"));
                }
            };
            files.push(ManifestFile {
                path,
                size: file.size,
                checksum,
            });
        }
        let mut wal_ranges = Vec::new();
        for range in raw.wal_ranges {
            let lsn =
                |text: &str| Lsn::parse(text).ok_or_else(|| problem("a WAL location X/Y", text));
            wal_ranges.push(WalRange {
                timeline: range.timeline,
                start: lsn(&range.start)?,
                end: lsn(&range.end)?,
            });
        }
        Ok(Manifest {
            version: raw.version,
            system_identifier: raw.system_identifier,
            files,
            wal_ranges,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest as PostgreSQL writes it, with a correct checksum, for `files`
    /// (path, content).
    pub(crate) fn manifest_text(files: &[(&str, &[u8])]) -> String {
        let mut text = String::from(
            "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7,\n\"Files\": [\n",
        );
        let lines: Vec<String> = files
            .iter()
            .map(|(path, content)| {
                format!(
                    "{{ \"Path\": \"{path}\", \"Size\": {}, \"Last-Modified\": \"2026-12-01 00:00:00 GMT\", \
                     \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                    content.len(),
                    hex(&crc32c::crc32c(content).to_le_bytes())
                )
            })
            .collect();
        text.push_str(&lines.join(",\n"));
        text.push_str(" ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let checksum = hex(&sha2::Sha256::digest(text.as_bytes()));
        text.push_str(&format!("\"Manifest-Checksum\": \"{checksum}\"}}\n"));
        text
    }

    #[test]
    fn a_manifest_parses_and_its_checksum_holds() {
        let text = manifest_text(&[("PG_VERSION", b"18\n"), ("global/pg_control", &[1; 16])]);
        let manifest = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(manifest.version, 2);
        assert_eq!(manifest.system_identifier, Some(7));
        assert_eq!(manifest.files[0].path, b"PG_VERSION");
        assert_eq!(manifest.files[0].size, 3);
        assert_eq!(manifest.wal_ranges[0].start, Lsn(0x2000028));
        // One changed byte anywhere before the checksum line breaks it.
        let damaged = text.replacen("\"Size\": 3", "\"Size\": 4", 1);
        let problem = Manifest::parse(damaged.as_bytes()).unwrap_err();
        assert!(
            problem.expected.starts_with("Manifest-Checksum"),
            "{problem:?}"
        );
    }

    #[test]
    fn crc32c_is_written_in_the_servers_byte_order() {
        // CRC-32C of "123456789" is 0xE3069283 (the check value); PostgreSQL on a
        // little-endian machine prints its bytes in memory order.
        let mut checksum = Checksum::new(Algorithm::Crc32c);
        checksum.update(b"1234");
        checksum.update(b"56789");
        assert_eq!(checksum.finish_hex(), "839206e3");
        let mut sha = Checksum::new(Algorithm::Sha256);
        sha.update(b"abc");
        assert!(sha.finish_hex().starts_with("ba7816bf"));
    }
}
