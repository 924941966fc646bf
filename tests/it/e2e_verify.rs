//! End-to-end test of `pgbak verify` (S-8.2): a real backup on PostgreSQL 15 and 18, then
//! corruptions one at a time, each on a fresh copy of the backup directory, and every one must
//! be reported naming the right file (and the member, for a member removed from the tar).
//!
//! The corruptions are drawn from a seed printed at the start (`PGBAK_VERIFY_SEED=N` replays a
//! run): a bit flip at a random offset of `base.tzst` or of a random `.zst`, a truncation, a
//! deleted segment in the middle of the chain, a segment replaced by another cluster's segment
//! of the same name, a segment renamed to another segment's name, and a member removed from the
//! tar (decompressed, rebuilt without it with the `tar` crate, recompressed). Every kind is
//! drawn at least once per version. The other cluster's segments are made with a fresh
//! `initdb` (its own system identifier) and `pg_resetwal -l NAME`, which writes an empty
//! segment of that name with a valid long page header: only the system identifier tells it apart.
//!
//! On PostgreSQL 18, whose `pg_verifybackup` checks a tar-format backup (`base.tar` and
//! `backup_manifest` in one directory, `-n`: no WAL parsing), each corrupted base is also given
//! to it (decompressed as far as it goes, as `zstd -d` would: the test's PostgreSQL 18 build
//! has no zstd support; the manifest from the tar, or the clean one when the tar's is lost),
//! and the test shows pgbak reports at least everything it reports.
//!
//! Flips pgbak cannot see, by design: those that leave the decoded content identical. zstd's
//! checksum covers the content, not the compressed bytes, and the compressed format has some
//! redundancy: the entropy tables in a compressed block (Huffman weights, FSE probabilities)
//! describe symbols the block never uses, and changing those leaves every decoded byte the
//! same (found by flipping every bit of a small .zst: a handful of bits at two or three
//! offsets). The frame header bits libzstd ignores are checked by `src/verify/zstd_frames.rs`.
//! A restore reads exactly the same bytes from such a file, so it is still the backup; catching
//! it would need a stored hash of the compressed file. When a flip is not reported, the test
//! decompresses both copies: identical content is counted apart and printed, anything else
//! fails the test. The detection count is over the corruptions that change content.

use crate::harness::{self, Cluster, PgVersion};
use crate::util::{PGBAK_BINARY, Scratch};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = "[pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n";
/// Corruptions per version: 2 × 120 = 240.
const CORRUPTIONS_PER_VERSION: usize = 120;

mod corruptions {
    #[test]
    fn pg15() {
        super::corruptions_are_all_reported(crate::harness::PgVersion::V15);
    }

    #[test]
    fn pg18() {
        super::corruptions_are_all_reported(crate::harness::PgVersion::V18);
    }
}

/// SplitMix64: small, fast, and the same sequence for a seed on every machine.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn seed() -> u64 {
    match std::env::var("PGBAK_VERIFY_SEED") {
        Ok(text) => text.parse().expect("PGBAK_VERIFY_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    BitFlip,
    Truncation,
    DeletedSegment,
    ForeignSegment,
    RenamedSegment,
    MemberRemoved,
}

const KINDS: [Kind; 6] = [
    Kind::BitFlip,
    Kind::Truncation,
    Kind::DeletedSegment,
    Kind::ForeignSegment,
    Kind::RenamedSegment,
    Kind::MemberRemoved,
];

/// What was done, and what the report must name.
struct Corruption {
    description: String,
    /// The file the report must name (relative to the copy).
    file: PathBuf,
    /// For a removed member: its name, which the problem's `at` must hold.
    member: Option<String>,
    /// Whether `base.tzst` was changed (then pg_verifybackup is asked too, on 18).
    base_changed: bool,
}

/// The backup directory to corrupt: its segment names (chain order) and the tar's members.
struct Backup {
    directory: PathBuf,
    segments: Vec<String>,
    zst_files: Vec<String>,
    /// Regular-file members of base.tzst.
    members: Vec<String>,
}

fn corruptions_are_all_reported(version: PgVersion) {
    let seed = seed();
    println!(
        "e2e_verify {}: seed {seed} (replay with PGBAK_VERIFY_SEED={seed})",
        version.major()
    );
    let mut random = Random(seed ^ u64::from(version.major()));
    let cluster = source(version);
    let backup = describe(&current(&cluster));
    assert!(
        backup.segments.len() >= 3,
        "a middle segment needs three: {:?}",
        backup.segments
    );
    let foreign = foreign_segments(version, &backup.segments);

    // The clean copy passes (and, on 18, pg_verifybackup agrees).
    let scratch = Scratch::new(&format!("verify-{}", version.major()));
    let clean = copy_of(&backup.directory, &scratch.join("clean"));
    let report = verify(&clean);
    assert_eq!(report["ok"], true, "the clean backup must pass: {report:#}");
    assert!(report["directories"][0]["members"].as_u64().unwrap() > 100);
    // The same backup through $PGBAK: current by default, by its TIMESTAMP, and --all.
    let name = backup.directory.file_name().unwrap().to_str().unwrap();
    for args in [
        vec!["verify"],
        vec!["verify", name],
        vec!["verify", "--all"],
    ] {
        let output = cluster.pgbak(&args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "pgbak {args:?}: {stdout}");
        assert!(stdout.contains(": ok: "), "{stdout}");
        assert!(stdout.contains(name), "{stdout}");
    }
    let pg_verifybackup = (version == PgVersion::V18).then(|| {
        let clean_manifest = manifest_of(&clean.join("base.tzst")).expect("clean manifest");
        assert_eq!(
            run_pg_verifybackup(version, &clean.join("base.tzst"), &clean_manifest),
            None,
            "pg_verifybackup must pass the clean base"
        );
        clean_manifest
    });

    let mut detected = 0;
    let mut harmless = Vec::new();
    let mut missed = Vec::new();
    let mut by_kind = std::collections::BTreeMap::<Kind, (usize, usize)>::new();
    let (mut pg_verifybackup_found, mut pg_verifybackup_asked) = (0, 0);
    for round in 0..CORRUPTIONS_PER_VERSION {
        // Every kind at least once, then at random.
        let kind = match KINDS.get(round) {
            Some(kind) => *kind,
            None => *random.pick(&KINDS),
        };
        let copy = copy_of(&backup.directory, &scratch.join(format!("c{round}")));
        let corruption = corrupt(kind, &copy, &backup, &foreign, &mut random);
        let report = verify(&copy);
        let problems = report["directories"][0]["problems"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let expected_file = copy.join(&corruption.file);
        let named = problems.iter().any(|problem| {
            Path::new(problem["file"].as_str().unwrap_or_default()) == expected_file
                && corruption.member.as_ref().is_none_or(|member| {
                    problem["at"].as_str() == Some(&format!("member {member}"))
                })
        });
        let entry = by_kind.entry(kind).or_default();
        entry.1 += 1;
        if named && report["ok"] == false {
            detected += 1;
            entry.0 += 1;
        } else if kind == Kind::BitFlip && same_content(&backup.directory, &copy, &corruption.file)
        {
            harmless.push(corruption.description.clone());
        } else {
            missed.push(format!(
                "{}: {} (report: {})",
                round,
                corruption.description,
                serde_json::to_string(&problems).unwrap()
            ));
        }
        if let (Some(clean_manifest), true) = (&pg_verifybackup, corruption.base_changed) {
            pg_verifybackup_asked += 1;
            let manifest = manifest_of(&copy.join("base.tzst")).unwrap_or(clean_manifest.clone());
            if let Some(output) = run_pg_verifybackup(version, &copy.join("base.tzst"), &manifest) {
                pg_verifybackup_found += 1;
                assert!(
                    named,
                    "pg_verifybackup found what pgbak did not: {}: {output}",
                    corruption.description
                );
            }
        }
        let _ = fs::remove_dir_all(&copy);
    }
    let total = CORRUPTIONS_PER_VERSION - harmless.len();
    println!(
        "e2e_verify {}: detected {detected} of {total} (seed {seed}); by kind (detected, \
         injected): {by_kind:?}",
        version.major()
    );
    if !harmless.is_empty() {
        println!(
            "e2e_verify {}: {} flip(s) left the decoded content identical (not counted): {harmless:?}",
            version.major(),
            harmless.len()
        );
    }
    if pg_verifybackup.is_some() {
        println!(
            "e2e_verify 18: pg_verifybackup -n reported {pg_verifybackup_found} of \
             {pg_verifybackup_asked} corrupted bases; pgbak reported each of those too"
        );
    }
    assert!(
        missed.is_empty(),
        "seed {seed}: {} corruption(s) not reported:\n{}",
        missed.len(),
        missed.join("\n")
    );
    assert_eq!(detected, total);
}

/// A cluster on `version` whose current directory holds its base backup and four segments
/// after it.
fn source(version: PgVersion) -> Cluster {
    let mut cluster = Cluster::new_on(version, &format!("verify-{}", version.major()), CONFIG, "");
    cluster.start();
    cluster
        .sql("create table t as select g as k, md5(g::text) as v from generate_series(1, 5000) g");
    for round in 0..4 {
        cluster.sql(&format!(
            "insert into t select g, 'round {round}' from generate_series(1, 100) g"
        ));
        cluster.switch_wal_and_wait_archived();
        let (code, stderr) = cluster.wait(120);
        assert_eq!(code, Some(0), "{stderr}");
    }
    cluster
}

fn current(cluster: &Cluster) -> PathBuf {
    let status = cluster.status();
    let name = status["current"].as_str().expect("a current directory");
    let directory = cluster.pgbak.join(name);
    assert!(directory.join("base.tzst").is_file());
    directory
}

fn describe(directory: &Path) -> Backup {
    let mut segments = Vec::new();
    let mut zst_files = Vec::new();
    for entry in fs::read_dir(directory.join("pg_wal")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let stem = name.strip_suffix(".zst").unwrap().to_owned();
        if stem.len() == 24 {
            segments.push(stem);
        }
        zst_files.push(name);
    }
    segments.sort();
    zst_files.sort();
    let mut members = Vec::new();
    let tar = decompress(&directory.join("base.tzst"));
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type() == tar::EntryType::Regular {
            members.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
    }
    Backup {
        directory: directory.to_owned(),
        segments,
        zst_files,
        members,
    }
}

fn decompress(path: &Path) -> Vec<u8> {
    zstd::decode_all(fs::File::open(path).unwrap()).unwrap()
}

fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Segments named like `names`, each from a fresh cluster of `version` (its own `initdb`, so
/// its own system identifier), compressed as pgbak stores them.
fn foreign_segments(version: PgVersion, names: &[String]) -> Vec<(String, Vec<u8>)> {
    let root = harness::root_for(&format!("verify-foreign-{}", version.major()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    let status = Command::new("chown")
        .args(["-R", "postgres:"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let data = root.join("data");
    harness::run_ok(
        harness::as_server_user(&version.tool("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--no-instructions", "--no-sync"]),
    );
    let mut segments = Vec::new();
    for name in names {
        // initdb's own first segment is one of them; the others pg_resetwal writes.
        if !data.join("pg_wal").join(name).is_file() {
            harness::run_ok(
                harness::as_server_user(&version.tool("pg_resetwal"))
                    .args(["-f", "-l", name, "-D"])
                    .arg(&data),
            );
        }
        let raw = fs::read(data.join("pg_wal").join(name)).unwrap_or_else(|error| {
            let listing: Vec<_> = fs::read_dir(data.join("pg_wal"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            panic!("pg_resetwal -l {name}: {error}; pg_wal holds {listing:?} (all: {names:?})")
        });
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        segments.push((name.clone(), compressor.compress(&raw).unwrap()));
    }
    let _ = fs::remove_dir_all(&root);
    segments
}

fn copy_of(directory: &Path, to: &Path) -> PathBuf {
    harness::run_ok(Command::new("cp").arg("-a").arg(directory).arg(to));
    to.to_owned()
}

/// `pgbak verify --from COPY --json`, without `PGBAK`; its report. Exit status 0 iff ok.
fn verify(copy: &Path) -> serde_json::Value {
    let output = Command::new(PGBAK_BINARY)
        .env_remove("PGBAK")
        .args(["verify", "--json", "--from"])
        .arg(copy)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report: {:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let ok = report["ok"] == true;
    assert_eq!(
        output.status.code(),
        Some(if ok { 0 } else { 1 }),
        "{report:#}"
    );
    report
}

fn corrupt(
    kind: Kind,
    copy: &Path,
    backup: &Backup,
    foreign: &[(String, Vec<u8>)],
    random: &mut Random,
) -> Corruption {
    let wal = |name: &str| PathBuf::from("pg_wal").join(name);
    let segment_file = |name: &str| wal(&format!("{name}.zst"));
    // Half of the flips and cuts go to base.tzst, the rest to any .zst.
    let any_file = |random: &mut Random| {
        if random.below(2) == 0 {
            PathBuf::from("base.tzst")
        } else {
            wal(random.pick(&backup.zst_files).as_str())
        }
    };
    match kind {
        Kind::BitFlip => {
            let file = any_file(random);
            let path = copy.join(&file);
            let mut bytes = fs::read(&path).unwrap();
            let offset = random.below(bytes.len() as u64) as usize;
            let bit = random.below(8);
            bytes[offset] ^= 1 << bit;
            fs::write(&path, &bytes).unwrap();
            Corruption {
                description: format!("bit {bit} flipped at offset {offset} of {}", file.display()),
                base_changed: file == Path::new("base.tzst"),
                file,
                member: None,
            }
        }
        Kind::Truncation => {
            let file = any_file(random);
            let path = copy.join(&file);
            let length = fs::metadata(&path).unwrap().len();
            let cut = random.below(length);
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(cut)
                .unwrap();
            Corruption {
                description: format!("{} cut from {length} to {cut} bytes", file.display()),
                base_changed: file == Path::new("base.tzst"),
                file,
                member: None,
            }
        }
        Kind::DeletedSegment => {
            let middle = &backup.segments[1..backup.segments.len() - 1];
            let name = random.pick(middle);
            let file = segment_file(name);
            fs::remove_file(copy.join(&file)).unwrap();
            Corruption {
                description: format!("{} deleted", file.display()),
                file,
                member: None,
                base_changed: false,
            }
        }
        Kind::ForeignSegment => {
            let (name, bytes) = random.pick(foreign);
            let file = segment_file(name);
            fs::write(copy.join(&file), bytes).unwrap();
            Corruption {
                description: format!("{} replaced by another cluster's", file.display()),
                file,
                member: None,
                base_changed: false,
            }
        }
        Kind::RenamedSegment => {
            let from = random.pick(&backup.segments).clone();
            let others: Vec<&String> = backup.segments.iter().filter(|s| **s != from).collect();
            let to = (*random.pick(&others)).clone();
            let file = segment_file(&to);
            fs::rename(copy.join(segment_file(&from)), copy.join(&file)).unwrap();
            Corruption {
                description: format!("{from} renamed to {to}"),
                file,
                member: None,
                base_changed: false,
            }
        }
        Kind::MemberRemoved => {
            let member = random.pick(&backup.members).clone();
            let path = copy.join("base.tzst");
            let tar = decompress(&path);
            let mut archive = tar::Archive::new(&tar[..]);
            let mut builder = tar::Builder::new(Vec::new());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                if entry.path_bytes().as_ref() == member.as_bytes() {
                    continue;
                }
                let mut header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                let name = entry.path_bytes().into_owned();
                if name.len() > 100 {
                    builder
                        .append_data(&mut header, String::from_utf8(name).unwrap(), &data[..])
                        .unwrap();
                } else {
                    builder.append(&header, &data[..]).unwrap();
                }
            }
            fs::write(&path, compress(&builder.into_inner().unwrap())).unwrap();
            Corruption {
                description: format!("member {member} removed from base.tzst"),
                file: PathBuf::from("base.tzst"),
                member: Some(member),
                base_changed: true,
            }
        }
    }
}

/// Whether `file` decompresses to the same bytes in both directories.
fn same_content(original: &Path, copy: &Path, file: &Path) -> bool {
    let decoded = |path: &Path| {
        fs::File::open(path)
            .ok()
            .and_then(|f| zstd::decode_all(f).ok())
    };
    match (decoded(&original.join(file)), decoded(&copy.join(file))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The `backup_manifest` member of a base archive, if the archive can be read that far.
fn manifest_of(base_tzst: &Path) -> Option<Vec<u8>> {
    let file = fs::File::open(base_tzst).ok()?;
    let decoder = zstd::stream::read::Decoder::new(file).ok()?;
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path_bytes().as_ref() == b"backup_manifest" {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).ok()?;
            return Some(bytes);
        }
    }
    None
}

/// Whatever of `path` decompresses before the stream ends or breaks.
fn decompress_partial(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut decoder) = zstd::stream::read::Decoder::new(fs::File::open(path).unwrap()) else {
        return out;
    };
    let mut buffer = vec![0u8; 1 << 16];
    while let Ok(read) = decoder.read(&mut buffer) {
        if read == 0 {
            break;
        }
        out.extend_from_slice(&buffer[..read]);
    }
    out
}

/// PostgreSQL 18's `pg_verifybackup -n` on a tar-format directory made of `base_tzst`
/// (decompressed to `base.tar`) and `manifest`; `None` when it passes, else its output.
fn run_pg_verifybackup(version: PgVersion, base_tzst: &Path, manifest: &[u8]) -> Option<String> {
    let directory = crate::util::unique_temp_path("pg-verifybackup");
    fs::create_dir_all(&directory).unwrap();
    // Its build has no zstd: the tar it gets is what `zstd -d` writes before an error.
    fs::write(directory.join("base.tar"), decompress_partial(base_tzst)).unwrap();
    fs::write(directory.join("backup_manifest"), manifest).unwrap();
    let output = Command::new(version.tool("pg_verifybackup"))
        .arg("-n")
        .arg(&directory)
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&directory);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (!output.status.success()).then_some(text)
}

#[test]
fn a_damaged_copy_reports_in_human_form_too_and_the_source_errors_are_one_line() {
    let scratch = Scratch::new("verify-cli");
    let output = Command::new(PGBAK_BINARY)
        .env_remove("PGBAK")
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("pgbak: "), "{stderr}");
    let output = Command::new(PGBAK_BINARY)
        .env_remove("PGBAK")
        .args(["verify", "--from"])
        .arg(scratch.join("nothing"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}
