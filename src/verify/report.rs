//! What `pgbak verify` found (S-8.2): [`Problem`] (one per damage, named precisely) and
//! [`VerifyReport`] (per directory, with the bytes read), rendered for a human or as JSON.
//!
//! Owns: the problem codes, the report's JSON schema (`pgbak.verify`, version 1) and the human
//! rendering. Pure: the checks build problems, this only orders and prints them.
//!
//! Invariants: every problem names the file it is about (for a missing file: the path where it
//! should be), where in it (a tar member, a byte offset of the compressed file, a WAL
//! location), what was expected and what was found; problems are printed in a stable order
//! (file, then where), so two runs over the same damage print the same report.

use serde::Serialize;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One thing that is wrong with a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A stable, machine-readable name of the check that failed (see the README).
    pub code: &'static str,
    /// The file the problem is in, or where a missing file should be.
    pub file: PathBuf,
    /// Where in the file: `member global/pg_control`, `offset 4096`, …; `None`: the whole file.
    pub at: Option<String>,
    pub expected: String,
    pub found: String,
}

impl Problem {
    pub fn new(
        code: &'static str,
        file: &Path,
        at: Option<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Problem {
        Problem {
            code,
            file: file.to_owned(),
            at,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// What was read of one backup directory, and what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectoryReport {
    pub directory: PathBuf,
    /// Files read (`base.tzst` and every `pg_wal/*.zst`).
    pub files: u64,
    /// Bytes read from disk.
    pub compressed_bytes: u64,
    /// Bytes those decompressed to (every byte of which was checked against a checksum).
    pub uncompressed_bytes: u64,
    /// Members of `base.tzst` checked against its `backup_manifest`.
    pub members: u64,
    /// WAL segments from the base backup's start to the newest one, on the timelines followed.
    pub chain_segments: u64,
    pub problems: Vec<Problem>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub schema: &'static str,
    pub version: u32,
    pub ok: bool,
    pub seconds: f64,
    pub directories: Vec<DirectoryReport>,
}

/// The JSON schema's name and version.
pub const SCHEMA: &str = "pgbak.verify";
pub const SCHEMA_VERSION: u32 = 1;

impl VerifyReport {
    pub fn new(mut directories: Vec<DirectoryReport>, seconds: f64) -> VerifyReport {
        for directory in &mut directories {
            directory
                .problems
                .sort_by(|a, b| (&a.file, &a.at, a.code).cmp(&(&b.file, &b.at, b.code)));
            directory.problems.dedup();
        }
        VerifyReport {
            schema: SCHEMA,
            version: SCHEMA_VERSION,
            ok: directories.iter().all(|d| d.problems.is_empty()),
            seconds,
            directories,
        }
    }

    pub fn problem_count(&self) -> usize {
        self.directories.iter().map(|d| d.problems.len()).sum()
    }

    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }

    /// One line per problem (`file[: at]: expected …, found …`), then one summary line per
    /// directory with its size and speed.
    pub fn write_human(&self, out: &mut dyn Write) -> io::Result<()> {
        for directory in &self.directories {
            for problem in &directory.problems {
                let at = problem
                    .at
                    .as_deref()
                    .map_or_else(String::new, |at| format!(": {at}"));
                writeln!(
                    out,
                    "{}{at}: {}: expected {}, found {}",
                    problem.file.display(),
                    problem.code,
                    problem.expected,
                    problem.found
                )?;
            }
        }
        for directory in &self.directories {
            let verdict = match directory.problems.len() {
                0 => "ok".to_owned(),
                count => format!("{count} problem(s)"),
            };
            writeln!(
                out,
                "{}: {verdict}: {} file(s), {} member(s), {} WAL segment(s) in the chain, \
                 {:.1} MB read, {:.1} MB checked",
                directory.directory.display(),
                directory.files,
                directory.members,
                directory.chain_segments,
                directory.compressed_bytes as f64 / 1e6,
                directory.uncompressed_bytes as f64 / 1e6,
            )?;
        }
        let compressed: u64 = self.directories.iter().map(|d| d.compressed_bytes).sum();
        let uncompressed: u64 = self.directories.iter().map(|d| d.uncompressed_bytes).sum();
        let seconds = self.seconds.max(0.001);
        writeln!(
            out,
            "{} in {:.1} s ({:.0} MB/s read, {:.0} MB/s checked)",
            if self.ok {
                "verified".to_owned()
            } else {
                format!("{} problem(s)", self.problem_count())
            },
            self.seconds,
            compressed as f64 / seconds / 1e6,
            uncompressed as f64 / seconds / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_sorted_deduplicated_and_printed_one_per_line() {
        let missing = Problem::new(
            "missing_segment",
            Path::new("/b/pg_wal/000000010000000000000003.zst"),
            None,
            "the segment (the chain runs from 000000010000000000000002)",
            "nothing",
        );
        let member = Problem::new(
            "member_checksum",
            Path::new("/b/base.tzst"),
            Some("member base/1/1259".into()),
            "CRC32C 01020304",
            "CRC32C 05060708",
        );
        let directory = DirectoryReport {
            directory: PathBuf::from("/b"),
            problems: vec![missing.clone(), member.clone(), missing.clone()],
            ..DirectoryReport::default()
        };
        let report = VerifyReport::new(vec![directory], 1.0);
        assert!(!report.ok);
        assert_eq!(report.directories[0].problems, vec![member, missing]);
        let mut human = Vec::new();
        report.write_human(&mut human).unwrap();
        let human = String::from_utf8(human).unwrap();
        assert!(
            human.starts_with(
                "/b/base.tzst: member base/1/1259: member_checksum: expected CRC32C 01020304, \
                 found CRC32C 05060708\n"
            ),
            "{human}"
        );
        let mut json = Vec::new();
        report.write_json(&mut json).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["schema"], "pgbak.verify");
        assert_eq!(json["ok"], false);
        assert_eq!(
            json["directories"][0]["problems"][1]["code"],
            "missing_segment"
        );
    }
}
