//! `pgbak wal PATH` through the real binary (S-2.1 – S-2.8, S-1.3, S-8.5): every accepted kind of
//! name stored and restorable with the stock `zstd` CLI, every refused input refused in two
//! lines with nothing left behind, duplicates identical and different, the first file opening a
//! pending directory, private modes under umask 0, eight concurrent calls, a full `$PGBAK` on a
//! small tmpfs, the peak RSS of one call, and the detached background sync.
//!
//! Tests that must not start a sync write `[sync] autostart = false` into `config.toml`.

use pgbak::home::environment::PgbakHome;
use pgbak::home::journal_file;
use pgbak::journal::Record;
use pgbak::machine::Event;
use pgbak::os::clock;
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::{Scratch, assert_success, has_ended, pgbak_command, stderr_of};

/// The size PostgreSQL uses unless `initdb --wal-segsize` says otherwise.
const SEGMENT_BYTES: usize = 16 << 20;

/// A fresh private directory under /tmp, removed on drop.
fn new_scratch(label: &str) -> Scratch {
    Scratch::private(&format!("cli-wal-{label}"))
}

/// What these tests need of their scratch directory.
trait WalScratch {
    fn pgbak(&self) -> PathBuf;
    fn source_directory(&self) -> PathBuf;
}

impl WalScratch for Scratch {
    /// `$PGBAK` inside the scratch directory, with `[sync] autostart = false`.
    fn pgbak(&self) -> PathBuf {
        let pgbak = self.0.join("pgbak");
        fs::create_dir(&pgbak).unwrap();
        fs::set_permissions(&pgbak, fs::Permissions::from_mode(0o700)).unwrap();
        write_no_autostart_config(&pgbak);
        pgbak
    }

    /// A directory for input files, like PostgreSQL's `pg_wal`.
    fn source_directory(&self) -> PathBuf {
        let source = self.0.join("pg_wal");
        fs::create_dir_all(&source).unwrap();
        source
    }
}

fn write_no_autostart_config(pgbak: &Path) {
    fs::write(pgbak.join("config.toml"), "[sync]\nautostart = false\n").unwrap();
}

fn wal(pgbak: &Path, source: &Path) -> Output {
    pgbak_command(pgbak)
        .arg("wal")
        .arg(source)
        .output()
        .unwrap()
}

/// Runs `pgbak wal PATH` for every path at once and requires each to succeed.
fn archive_concurrently(pgbak: &Path, paths: &[PathBuf]) {
    let children: Vec<_> = paths
        .iter()
        .map(|path| {
            pgbak_command(pgbak)
                .arg("wal")
                .arg(path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        assert_success(&child.wait_with_output().unwrap());
    }
}

/// S-2.5 and the CLI's error format: exit 1, one `pgbak: wal …` line and one `hint:` line.
fn assert_refused(output: &Output) -> String {
    let stderr = stderr_of(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "stderr: {stderr}");
    assert!(lines[0].starts_with("pgbak: wal "), "stderr: {stderr}");
    assert!(lines[1].starts_with("hint: "), "stderr: {stderr}");
    stderr
}

/// WAL-like bytes: 62-byte records of a counter, four pseudo-random bytes and fixed text, so
/// they compress about as well as real WAL (roughly 10:1) and differ per `seed`.
fn segment_bytes(seed: u64, size: usize) -> Vec<u8> {
    const TEXT: &[u8] = b"INSERT heap rel 1663/5/16384 blk 42 off 7 xid 778 ";
    let mut bytes = Vec::with_capacity(size);
    let mut random = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut counter = seed << 32;
    while bytes.len() < size {
        counter += 1;
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        bytes.extend_from_slice(&counter.to_le_bytes());
        bytes.extend_from_slice(&random.to_le_bytes()[..4]);
        bytes.extend_from_slice(TEXT);
    }
    bytes.truncate(size);
    bytes
}

fn segment_name(number: u64) -> String {
    format!("0000000100000000{number:08X}")
}

fn write_source(directory: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = directory.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// Every backup directory in `$PGBAK` (names of 16 characters ending in `Z`).
fn backup_directories(pgbak: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(pgbak)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.len() == 16 && name.ends_with('Z') && path.is_dir()
        })
        .collect();
    found.sort();
    found
}

fn the_backup_directory(pgbak: &Path) -> PathBuf {
    let directories = backup_directories(pgbak);
    assert_eq!(directories.len(), 1, "{directories:?}");
    directories[0].clone()
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            paths.insert(path.strip_prefix(root).unwrap().display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path);
            }
        }
    }
    paths
}

fn names_in(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `zstd -t FILE` succeeds and `zstd -d -c FILE` prints exactly `expected` (S-2.2).
fn assert_zstd_cli_restores(stored: &Path, expected: &[u8]) {
    let test = Command::new("zstd")
        .arg("-q")
        .arg("-t")
        .arg(stored)
        .output()
        .expect("the zstd CLI is installed (apt-get install zstd)");
    assert!(
        test.status.success(),
        "zstd -t {}: {test:?}",
        stored.display()
    );
    let decompressed = Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg("-c")
        .arg(stored)
        .output()
        .unwrap();
    assert!(
        decompressed.status.success(),
        "zstd -d {}",
        stored.display()
    );
    assert!(
        decompressed.stdout == expected,
        "zstd -d -c {} differs from the input ({} bytes, expected {})",
        stored.display(),
        decompressed.stdout.len(),
        expected.len()
    );
}

/// The journal's events, oldest first.
fn journal_events(pgbak: &Path) -> Vec<Event> {
    let home = PgbakHome {
        path: pgbak.to_path_buf(),
        owner_uid: fs::metadata(pgbak).unwrap().uid(),
    };
    let opened = journal_file::open_journal(&home, clock::now()).unwrap();
    let decoded = journal_file::decode_journal(&opened).unwrap();
    decoded
        .records
        .into_iter()
        .filter_map(|decoded| match decoded.record {
            Record::Event(event) => Some(event),
            Record::Checkpoint(_) => None,
        })
        .collect()
}

fn wal_archived(events: &[Event]) -> Vec<(String, bool, usize)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::WalArchived {
                file,
                already_present,
                directories,
                ..
            } => Some((file.to_string(), *already_present, directories.len())),
            _ => None,
        })
        .collect()
}

fn directories_opened(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|event| matches!(event, Event::DirectoryOpened { .. }))
        .count()
}

#[test]
fn every_accepted_kind_of_name_is_stored_privately_and_restorable_with_the_zstd_cli() {
    let scratch = new_scratch("kinds");
    let pgbak = scratch.pgbak();
    let data_directory = scratch.0.clone();
    let source = scratch.source_directory();
    let inputs: Vec<(String, Vec<u8>)> = vec![
        (segment_name(3), segment_bytes(3, SEGMENT_BYTES)),
        (
            format!("{}.partial", segment_name(4)),
            segment_bytes(4, SEGMENT_BYTES),
        ),
        (
            "00000002.history".to_string(),
            b"1\t0/4000000\tno recovery target specified\n".to_vec(),
        ),
        (
            format!("{}.00000028.backup", segment_name(3)),
            b"START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\n\
              STOP WAL LOCATION: 0/3000100 (file 000000010000000000000003)\n\
              LABEL: pgbak\n"
                .to_vec(),
        ),
    ];
    for (name, bytes) in &inputs {
        write_source(&source, name, bytes);
        // As PostgreSQL calls it: in the data directory, %p relative to it, and here with
        // umask 0, so the modes below come from pgbak, not from the umask (S-1.3).
        let mut command = pgbak_command(&pgbak);
        command
            .current_dir(&data_directory)
            .arg("wal")
            .arg(format!("pg_wal/{name}"));
        // SAFETY: umask(2) is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                Ok(())
            });
        }
        let output = command.output().unwrap();
        assert_success(&output);
        assert!(output.stdout.is_empty() && output.stderr.is_empty());
    }
    let directory = the_backup_directory(&pgbak);
    let wal_directory = directory.join("pg_wal");
    for (name, bytes) in &inputs {
        let stored = wal_directory.join(format!("{name}.zst"));
        assert_zstd_cli_restores(&stored, bytes);
        assert_eq!(mode_of(&stored), 0o600, "{}", stored.display());
    }
    let (segment_name, segment) = &inputs[0];
    let compressed = fs::metadata(wal_directory.join(format!("{segment_name}.zst")))
        .unwrap()
        .len();
    eprintln!(
        "16 MiB segment: {compressed} bytes compressed, ratio {:.1}:1",
        segment.len() as f64 / compressed as f64
    );
    assert_eq!(mode_of(&directory), 0o700);
    assert_eq!(mode_of(&wal_directory), 0o700);
    // Only the stored files: no temporary file under any name.
    let mut expected: Vec<String> = inputs.iter().map(|(n, _)| format!("{n}.zst")).collect();
    expected.sort();
    assert_eq!(names_in(&wal_directory), expected);
}

#[test]
fn the_first_file_opens_a_pending_directory_and_later_files_go_into_it() {
    let scratch = new_scratch("first");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    for number in 1..=2 {
        let path = write_source(
            &source,
            &segment_name(number),
            &segment_bytes(number, 1 << 20),
        );
        assert_success(&wal(&pgbak, &path));
    }
    let events = journal_events(&pgbak);
    assert_eq!(directories_opened(&events), 1, "{events:?}");
    let opened_at = events
        .iter()
        .position(|event| matches!(event, Event::DirectoryOpened { .. }))
        .unwrap();
    let first_archived = events
        .iter()
        .position(|event| matches!(event, Event::WalArchived { .. }))
        .unwrap();
    assert!(opened_at < first_archived, "{events:?}");
    assert_eq!(
        wal_archived(&events),
        vec![(segment_name(1), false, 1), (segment_name(2), false, 1)]
    );

    let status = pgbak_command(&pgbak)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_success(&status);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let directories = json["directories"].as_array().unwrap();
    assert_eq!(directories.len(), 1, "{json}");
    assert_eq!(directories[0]["state"], "pending", "{json}");
    assert_eq!(directories[0]["wal_files"], 2, "{json}");
    assert_eq!(json["wal"]["last_archived"], segment_name(2).as_str());
}

#[test]
fn refused_inputs_exit_1_with_a_message_and_a_hint_and_leave_nothing_behind() {
    let scratch = new_scratch("refused");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let before = tree(&pgbak);

    let bad_names = [
        "notawal",
        "00000001000000000000000a", // lower-case hex: PostgreSQL never writes it
        "0000000100000000000000033",
        "000000010000000000000003.zst",
        "000000010000000000000003.ready",
        "00000002.history.tmp",
        "RECOVERYHISTORY",
    ];
    let mut cases: Vec<(PathBuf, &str)> = Vec::new();
    for name in bad_names {
        cases.push((
            write_source(&source, name, &segment_bytes(9, 1 << 20)),
            "not a file PostgreSQL archives",
        ));
    }
    cases.push((source.join(segment_name(10)), "no such file"));
    let dangling = source.join(segment_name(11));
    std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
    cases.push((dangling, "no such file"));
    let directory = source.join(segment_name(12));
    fs::create_dir(&directory).unwrap();
    cases.push((directory, "is a directory, not a regular file"));
    let fifo = source.join(segment_name(13));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    cases.push((fifo, "is a FIFO, not a regular file"));
    let socket_path = source.join(segment_name(14));
    let _socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    cases.push((socket_path, "is a socket, not a regular file"));
    cases.push((
        write_source(&source, &segment_name(15), &segment_bytes(15, 3 << 20)),
        "is 3145728 bytes, but a WAL segment is a power of two between 1 MiB and 1 GiB",
    ));
    cases.push((
        write_source(&source, &segment_name(16), &segment_bytes(16, 512 << 10)),
        "is 524288 bytes, but a WAL segment",
    ));
    cases.push((
        write_source(
            &source,
            &format!("{}.partial", segment_name(17)),
            &segment_bytes(17, 1000),
        ),
        "is 1000 bytes, but a WAL segment",
    ));
    cases.push((
        write_source(&source, &segment_name(18), b""),
        "is 0 bytes, but a WAL segment",
    ));
    cases.push((
        write_source(&source, "00000003.history", b""),
        "is 0 bytes, but a history or backup history file holds 1 byte to 16 MiB",
    ));
    // A path through a regular file: open fails (ENOTDIR) even for root.
    let through_file = source.join("notawal").join(segment_name(19));
    cases.push((through_file, "cannot be read"));

    for (path, expected) in &cases {
        let output = wal(&pgbak, path);
        let stderr = assert_refused(&output);
        let first_line = stderr.lines().next().unwrap();
        assert!(
            first_line.starts_with(&format!("pgbak: wal {}: ", path.display())),
            "{stderr}"
        );
        assert!(first_line.contains(expected), "{expected:?} in {stderr}");
        // Nothing in $PGBAK: the input is checked before anything is created, so not even
        // the journal.
        assert_eq!(tree(&pgbak), before, "after {}", path.display());
    }
}

#[test]
fn a_file_pgbak_cannot_read_is_refused() {
    // S-2.1 "unreadable": as root, permissions do not stop reading, so run pgbak as another
    // user (nobody) owning $PGBAK; as any other user, a mode 000 file does it.
    let scratch = new_scratch("unreadable");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let path = write_source(&source, &segment_name(1), &segment_bytes(1, 1 << 20));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = pgbak_command(&pgbak);
    command.arg("wal").arg(&path);
    if nix::unistd::geteuid().is_root() {
        const NOBODY: u32 = 65534;
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(&source, fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(&pgbak, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
        nix::unistd::chown(
            &pgbak.join("config.toml"),
            Some(NOBODY.into()),
            Some(NOBODY.into()),
        )
        .unwrap();
        command.uid(NOBODY).gid(NOBODY);
    }
    let before = tree(&pgbak);
    let stderr = assert_refused(&command.output().unwrap());
    assert!(
        stderr.starts_with(&format!("pgbak: wal {}: cannot be read: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr.contains("hint: run pgbak as the PostgreSQL OS user"),
        "{stderr}"
    );
    assert_eq!(tree(&pgbak), before);
}

#[test]
fn an_identical_duplicate_is_accepted_and_recorded_as_already_present() {
    let scratch = new_scratch("identical");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let path = write_source(&source, &segment_name(5), &segment_bytes(5, SEGMENT_BYTES));
    assert_success(&wal(&pgbak, &path));
    let stored = the_backup_directory(&pgbak).join(format!("pg_wal/{}.zst", segment_name(5)));
    let first = fs::metadata(&stored).unwrap();

    // PostgreSQL retries after a crash between our ack and its own bookkeeping.
    let again = wal(&pgbak, &path);
    assert_success(&again);
    assert!(again.stderr.is_empty(), "{}", stderr_of(&again));
    let second = fs::metadata(&stored).unwrap();
    assert_eq!(
        (first.ino(), first.len(), first.mtime(), first.mtime_nsec()),
        (
            second.ino(),
            second.len(),
            second.mtime(),
            second.mtime_nsec()
        ),
        "the archived file is never replaced or rewritten"
    );
    assert_eq!(
        wal_archived(&journal_events(&pgbak)),
        vec![(segment_name(5), false, 1), (segment_name(5), true, 1)]
    );
    assert!(!pgbak.join("conflicts").exists());
}

#[test]
fn a_different_duplicate_is_refused_kept_in_conflicts_and_the_original_left_untouched() {
    let scratch = new_scratch("conflict");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    for (name, original, rejected) in [
        (
            segment_name(6),
            segment_bytes(6, SEGMENT_BYTES),
            segment_bytes(66, SEGMENT_BYTES),
        ),
        (
            "00000002.history".to_string(),
            b"1\t0/4000000\tno recovery target specified\n".to_vec(),
            b"1\t0/5000000\tno recovery target specified\n".to_vec(),
        ),
    ] {
        let path = write_source(&source, &name, &original);
        assert_success(&wal(&pgbak, &path));
        let stored = the_backup_directory(&pgbak).join(format!("pg_wal/{name}.zst"));
        let stored_bytes = fs::read(&stored).unwrap();

        write_source(&source, &name, &rejected);
        let output = wal(&pgbak, &path);
        let stderr = assert_refused(&output);
        assert!(stderr.contains(&stored.display().to_string()), "{stderr}");
        assert!(
            stderr.contains("already exists and holds different content"),
            "{stderr}"
        );
        assert_eq!(
            fs::read(&stored).unwrap(),
            stored_bytes,
            "never overwritten (S-2.4)"
        );
        assert_zstd_cli_restores(&stored, &original);

        let conflicts = pgbak.join("conflicts");
        let kept: Vec<String> = names_in(&conflicts)
            .into_iter()
            .filter(|kept| kept.starts_with(&format!("{name}.")))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        let kept_path = conflicts.join(&kept[0]);
        assert!(
            stderr.contains(&kept_path.display().to_string()),
            "{stderr}"
        );
        // NAME.TIMESTAMP.zst, TIMESTAMP as in S-1.2.
        let timestamp = kept[0]
            .strip_prefix(&format!("{name}."))
            .and_then(|rest| rest.strip_suffix(".zst"))
            .unwrap();
        assert!(
            pgbak::timestamp::DirectoryName::parse(timestamp).is_some(),
            "{kept:?}"
        );
        assert_zstd_cli_restores(&kept_path, &rejected);
        assert_eq!(mode_of(&kept_path), 0o600);
        assert_eq!(mode_of(&conflicts), 0o700);
    }
    // The refused calls recorded nothing.
    let archived = wal_archived(&journal_events(&pgbak));
    assert_eq!(archived.len(), 2, "{archived:?}");
}

#[test]
fn eight_concurrent_calls_on_distinct_segments_all_succeed_into_one_directory() {
    const CALLS: u64 = 8;
    let scratch = new_scratch("concurrent");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let paths: Vec<PathBuf> = (1..=CALLS)
        .map(|number| {
            write_source(
                &source,
                &segment_name(number),
                &segment_bytes(number, SEGMENT_BYTES),
            )
        })
        .collect();
    archive_concurrently(&pgbak, &paths);
    let events = journal_events(&pgbak);
    assert_eq!(directories_opened(&events), 1, "{events:?}");
    let archived = wal_archived(&events);
    assert_eq!(archived.len(), CALLS as usize, "{archived:?}");
    let names: BTreeSet<String> = archived.iter().map(|(name, _, _)| name.clone()).collect();
    let expected: BTreeSet<String> = (1..=CALLS).map(segment_name).collect();
    assert_eq!(names, expected);
    assert!(
        archived
            .iter()
            .all(|(_, present, count)| !present && *count == 1)
    );
    let wal_directory = the_backup_directory(&pgbak).join("pg_wal");
    let stored: Vec<String> = (1..=CALLS)
        .map(|number| format!("{}.zst", segment_name(number)))
        .collect();
    assert_eq!(names_in(&wal_directory), stored);
    for number in [1, CALLS] {
        let path = wal_directory.join(format!("{}.zst", segment_name(number)));
        assert_zstd_cli_restores(&path, &segment_bytes(number, SEGMENT_BYTES));
    }
}

#[test]
fn directories_opened_while_wal_calls_run_receive_every_file_recorded_after_them() {
    // S-2.7 under races: a sync opens pending directories (DirectoryOpened, then mkdir a
    // little later) while `wal` calls run. Journal order is lock order, so every WalArchived
    // recorded after a DirectoryOpened must name that directory, and hold the file there.
    const CALLS: u64 = 24;
    const PARALLEL: usize = 8;
    const OPENED_MAX: u64 = 6;
    let scratch = new_scratch("race");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let size = 1 << 20;
    let first = write_source(&source, &segment_name(1), &segment_bytes(1, size));
    assert_success(&wal(&pgbak, &first));
    let home = PgbakHome {
        path: pgbak.clone(),
        owner_uid: fs::metadata(&pgbak).unwrap().uid(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let opener = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut journal = journal_file::open_journal(&home, clock::now()).unwrap();
            // Far from the first directory's name, so they never collide; `wal` itself never
            // opens one here, since one is always open.
            let base = clock::now().seconds() + 1000;
            let mut opened = 0;
            while !stop.load(Ordering::SeqCst) && opened < OPENED_MAX {
                let directory = pgbak::timestamp::DirectoryName(base + opened);
                let at = clock::now();
                journal
                    .append(&[Event::DirectoryOpened { directory, at }], at)
                    .unwrap();
                // The sync's mkdir comes after its intent; a `wal` may get there first.
                std::thread::sleep(std::time::Duration::from_millis(15));
                pgbak::os::durable::create_private_directory(&home.directory_path(directory))
                    .unwrap();
                opened += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
        })
    };
    let paths: Vec<PathBuf> = (2..=CALLS + 1)
        .map(|number| write_source(&source, &segment_name(number), &segment_bytes(number, size)))
        .collect();
    for wave in paths.chunks(PARALLEL) {
        archive_concurrently(&pgbak, wave);
    }
    stop.store(true, Ordering::SeqCst);
    opener.join().unwrap();

    let mut open = BTreeSet::new();
    let mut archived = 0;
    for event in journal_events(&pgbak) {
        match event {
            Event::DirectoryOpened { directory, .. } => {
                open.insert(directory);
            }
            Event::WalArchived {
                file, directories, ..
            } => {
                archived += 1;
                let named: BTreeSet<_> = directories.iter().copied().collect();
                assert!(
                    named.is_superset(&open),
                    "{file} recorded in {named:?}, but {open:?} were open"
                );
                for directory in directories {
                    let stored = pgbak
                        .join(directory.to_string())
                        .join("pg_wal")
                        .join(format!("{file}.zst"));
                    assert!(stored.is_file(), "{}", stored.display());
                }
            }
            _ => {}
        }
    }
    assert_eq!(archived, CALLS + 1);
    eprintln!(
        "{} directories were opened during the calls",
        open.len() - 1
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn mount(path: &Path, size: &str) -> Option<TmpfsMount> {
        fs::create_dir(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(path)
            .output();
        match output {
            Ok(output) if output.status.success() => Some(TmpfsMount(path.to_path_buf())),
            Ok(output) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {}",
                    stderr_of(&output).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("skipped: cannot run mount: {error}");
                None
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_full_pgbak_fails_loudly_leaves_no_partial_file_and_the_retry_succeeds_once_freed() {
    let scratch = new_scratch("full");
    let pgbak = scratch.0.join("pgbak");
    let Some(_mount) = TmpfsMount::mount(&pgbak, "5m") else {
        return;
    };
    write_no_autostart_config(&pgbak);
    let source = scratch.source_directory();
    let first = write_source(&source, &segment_name(1), &segment_bytes(1, SEGMENT_BYTES));
    assert_success(&wal(&pgbak, &first));
    let wal_directory = the_backup_directory(&pgbak).join("pg_wal");

    // Fill the file system with ballast until it is full.
    let ballast_path = pgbak.join("ballast");
    let mut ballast = fs::File::create(&ballast_path).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    loop {
        match ballast.write_all(&chunk) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
            Err(error) => panic!("filling the tmpfs: {error}"),
        }
    }
    drop(ballast);
    let before = tree(&pgbak);

    let second_bytes = segment_bytes(2, SEGMENT_BYTES);
    let second = write_source(&source, &segment_name(2), &second_bytes);
    let output = wal(&pgbak, &second);
    let stderr = assert_refused(&output);
    assert!(
        stderr.starts_with(&format!(
            "pgbak: wal {}: $PGBAK {} is full (No space left on device)",
            segment_name(2),
            pgbak.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: free space on the file system"),
        "{stderr}"
    );
    assert!(
        stderr.contains("PostgreSQL keeps the WAL in pg_wal"),
        "{stderr}"
    );
    // No partial file, under any name, anywhere.
    assert_eq!(
        names_in(&wal_directory),
        vec![format!("{}.zst", segment_name(1))]
    );
    assert_eq!(tree(&pgbak), before);

    // The operator frees space; PostgreSQL's next retry of the same call succeeds.
    fs::remove_file(&ballast_path).unwrap();
    assert_success(&wal(&pgbak, &second));
    assert_zstd_cli_restores(
        &wal_directory.join(format!("{}.zst", segment_name(2))),
        &second_bytes,
    );
    assert_eq!(
        wal_archived(&journal_events(&pgbak)),
        vec![(segment_name(1), false, 1), (segment_name(2), false, 1)]
    );
}

#[test]
fn one_call_on_a_16_mib_segment_stays_under_64_mib_of_resident_memory() {
    const LIMIT_KIB: u64 = 64 << 10;
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        eprintln!("skipped: /usr/bin/time is missing (Debian package `time`)");
        return;
    }
    let scratch = new_scratch("rss");
    let pgbak = scratch.pgbak();
    // The default configuration: level 1, two zstd worker threads.
    fs::write(pgbak.join("config.toml"), "[sync]\nautostart = false\n").unwrap();
    let source = scratch.source_directory();
    let path = write_source(&source, &segment_name(1), &segment_bytes(1, SEGMENT_BYTES));
    let output = Command::new(time)
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_pgbak"))
        .arg("wal")
        .arg(&path)
        .env("PGBAK", &pgbak)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let peak_kib: u64 = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {stderr}"));
    eprintln!("peak RSS of one wal call on a 16 MiB segment: {peak_kib} KiB");
    assert!(peak_kib <= LIMIT_KIB, "{peak_kib} KiB > {LIMIT_KIB} KiB");
}

/// The session id (field 6 of /proc/PID/stat) of a process.
fn session_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(3)?.parse().ok()
}

/// Processes running `pgbak sync --background` with `PGBAK` = `pgbak`.
fn background_syncs(pgbak: &Path) -> Vec<u32> {
    let wanted_environment = format!("PGBAK={}", pgbak.display());
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(command_line) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let arguments: Vec<&[u8]> = command_line.split(|b| *b == 0).collect();
        if arguments.len() < 3 || arguments[1] != b"sync" || arguments[2] != b"--background" {
            continue;
        }
        let Ok(environment) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environment
            .split(|b| *b == 0)
            .any(|variable| variable == wanted_environment.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

#[test]
fn autostart_starts_one_detached_sync_that_holds_none_of_the_callers_pipes() {
    // `sync --background` (hidden from --help) belongs to the sync command; without it there
    // is nothing to watch.
    let help = Command::new(env!("CARGO_BIN_EXE_pgbak"))
        .args(["sync", "--background", "--help"])
        .output()
        .unwrap();
    if !help.status.success() {
        eprintln!("skipped: this build has no `pgbak sync --background` yet");
        return;
    }
    let scratch = new_scratch("autostart");
    let pgbak = scratch.pgbak();
    fs::write(pgbak.join("config.toml"), "[sync]\nautostart = true\n").unwrap();
    fs::create_dir(pgbak.join("scripts")).unwrap();
    std::os::unix::fs::symlink("/bin/true", pgbak.join("scripts/backup")).unwrap();
    let source = scratch.source_directory();
    let path = write_source(&source, &segment_name(1), &segment_bytes(1, 1 << 20));

    // Besides stdout and stderr, the archiver may leave other pipes open to its children:
    // hand `wal` (and only `wal`) one as descriptor INHERITED.
    const INHERITED: i32 = 100;
    let (pipe_read, pipe_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).unwrap();
    let write_descriptor = std::os::fd::AsRawFd::as_raw_fd(&pipe_write);
    let mut command = pgbak_command(&pgbak);
    command.arg("wal").arg(&path);
    // SAFETY: dup2(2) is async-signal-safe and allocates nothing; the copy has no
    // close-on-exec flag, so `wal` inherits it, as from a careless parent.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::dup2(write_descriptor, INHERITED) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // `output()` returns only when every holder of the stdout and stderr pipes has closed
    // them: a sync that inherited them would keep this call waiting (S-2.8).
    let output = command.output().unwrap();
    drop(pipe_write);
    assert_success(&output);
    assert!(output.stderr.is_empty(), "{}", stderr_of(&output));
    // The child is exec'd before `spawn` returns in `wal`, so it is visible now, unless it
    // already ended. Whatever happens below, what this test started is stopped by pid.
    let syncs = StopOnDrop(background_syncs(&pgbak));
    eprintln!("background syncs running after the call: {:?}", syncs.0);

    // No sync holds the pipe: none of its descriptors is this pipe (exact, whatever other
    // test threads do meanwhile).
    let pipe_inode = nix::sys::stat::fstat(&pipe_read).unwrap().st_ino;
    let pipe_link = format!("pipe:[{pipe_inode}]");
    for &pid in &syncs.0 {
        for entry in fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
        {
            let target = entry.map(|e| fs::read_link(e.path()));
            assert!(
                !matches!(&target, Ok(Ok(t)) if t == Path::new(&pipe_link)),
                "the background sync {pid} holds a pipe of the caller open"
            );
        }
    }
    // And `wal` has exited, so the read end reaches EOF. Not at once, necessarily: another
    // test thread that forked meanwhile holds a (close-on-exec) copy until its child execs.
    let mut buffer = [0u8; 1];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut read = nix::unistd::read(&pipe_read, &mut buffer);
    while read == Err(nix::errno::Errno::EAGAIN) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        read = nix::unistd::read(&pipe_read, &mut buffer);
    }
    assert_eq!(
        read,
        Ok(0),
        "a process started by the call holds a pipe of the caller open"
    );
    // It leads its own session and has /dev/null as stdio.
    let our_session = session_of(std::process::id()).unwrap();
    for &pid in &syncs.0 {
        if let Some(session) = session_of(pid) {
            assert_eq!(session, pid, "the sync leads its own session");
            assert_ne!(session, our_session);
        }
        for descriptor in 0..=2 {
            if let Ok(target) = fs::read_link(format!("/proc/{pid}/fd/{descriptor}")) {
                assert_eq!(target, Path::new("/dev/null"), "fd {descriptor} of {pid}");
            }
        }
    }
    // It did run: its start is in the journal (a bounded wait for a process, not a timing
    // assertion).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let started = || {
        journal_events(&pgbak)
            .iter()
            .any(|event| matches!(event, Event::SyncStarted { .. }))
    };
    while !started() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(started(), "no SyncStarted in the journal: {:?}", syncs.0);
}

/// Background syncs a test started: SIGTERM on drop (it retries the base backup forever, as
/// there is no PostgreSQL here), then a bounded wait until they are gone.
struct StopOnDrop(Vec<u32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for &pid in &self.0 {
            while !has_ended(pid as i32) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Runs `pgbak wal PATH` but gives up after `limit`: a call that blocks is killed and reported.
fn wal_within(pgbak: &Path, source: &Path, limit: std::time::Duration) -> Output {
    let mut child = pgbak_command(pgbak)
        .arg("wal")
        .arg(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pgbak wal {} still runs after {limit:?}", source.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_fifo_under_the_archived_name_is_refused_at_once_and_left_alone() {
    let scratch = new_scratch("fifo-target");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let path = write_source(&source, &segment_name(7), &segment_bytes(7, SEGMENT_BYTES));
    assert_success(&wal(&pgbak, &path));
    let stored = the_backup_directory(&pgbak).join(format!("pg_wal/{}.zst", segment_name(7)));
    fs::remove_file(&stored).unwrap();
    let made = Command::new("mkfifo").arg(&stored).status().unwrap();
    assert!(made.success());

    // Opening a FIFO for reading blocks until a writer comes: the comparison must not.
    let output = wal_within(&pgbak, &path, std::time::Duration::from_secs(20));
    let stderr = assert_refused(&output);
    assert!(stderr.contains("FIFO"), "{stderr}");
    assert!(fs::symlink_metadata(&stored).unwrap().file_type().is_fifo());
}

/// `pgbak wal` on a fresh `$PGBAK` under `/usr/bin/time -v`: its peak resident set in KiB, or
/// `None` when GNU time is missing.
fn peak_rss_of_one_call_kib(label: &str, segment_bytes_count: usize) -> Option<u64> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        eprintln!("skipped: /usr/bin/time is missing (Debian package `time`)");
        return None;
    }
    let scratch = new_scratch(label);
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let bytes = segment_bytes(1, segment_bytes_count);
    let path = write_source(&source, &segment_name(1), &bytes);
    drop(bytes);
    let output = Command::new(time)
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_pgbak"))
        .arg("wal")
        .arg(&path)
        .env("PGBAK", &pgbak)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    let peak_kib = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in: {stderr}"));
    Some(peak_kib)
}

#[test]
fn one_call_on_a_256_mib_segment_stays_under_64_mib_of_resident_memory() {
    // Memory is bounded whatever the segment size (up to 1 GiB, S-2.1): the input is read and
    // compressed a window at a time, never held whole.
    const LIMIT_KIB: u64 = 64 << 10;
    if let Some(peak_kib) = peak_rss_of_one_call_kib("rss-256", 256 << 20) {
        eprintln!("peak RSS of one wal call on a 256 MiB segment: {peak_kib} KiB");
        assert!(peak_kib <= LIMIT_KIB, "{peak_kib} KiB > {LIMIT_KIB} KiB");
    }
}

/// `zstd -q -c` of `bytes` through the CLI: one frame.
fn zstd_cli_frame(bytes: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-q", "-c", "-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd CLI is installed (apt-get install zstd)");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success());
    output.stdout
}

#[test]
fn a_stored_file_of_several_zstd_frames_is_compared_whole() {
    // S-2.2: a stored file may hold several frames one after the other; the duplicate
    // comparison reads all of them.
    let scratch = new_scratch("multi-frame");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let bytes = segment_bytes(8, SEGMENT_BYTES);
    let path = write_source(&source, &segment_name(8), &bytes);
    assert_success(&wal(&pgbak, &path));
    let stored = the_backup_directory(&pgbak).join(format!("pg_wal/{}.zst", segment_name(8)));
    let half = SEGMENT_BYTES / 2;
    let replace_with_frames = |frames: &[&[u8]]| {
        let mut file = Vec::new();
        for frame in frames {
            file.extend_from_slice(&zstd_cli_frame(frame));
        }
        fs::remove_file(&stored).unwrap();
        fs::write(&stored, &file).unwrap();
    };

    replace_with_frames(&[&bytes[..half], &bytes[half..]]);
    assert_zstd_cli_restores(&stored, &bytes);
    let again = wal(&pgbak, &path);
    assert_success(&again);
    let archived = wal_archived(&journal_events(&pgbak));
    assert_eq!(archived.last(), Some(&(segment_name(8), true, 1)));

    let mut other = bytes.clone();
    other[half + 12345] ^= 1;
    replace_with_frames(&[&bytes[..half], &other[half..]]);
    let stderr = assert_refused(&wal(&pgbak, &path));
    assert!(
        stderr.contains("already exists and holds different content"),
        "{stderr}"
    );
    // A first frame alone is not the whole file.
    replace_with_frames(&[&bytes[..half]]);
    let stderr = assert_refused(&wal(&pgbak, &path));
    assert!(stderr.contains("already exists and holds"), "{stderr}");
}

fn status_json(pgbak: &Path) -> serde_json::Value {
    let status = pgbak_command(pgbak)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_success(&status);
    serde_json::from_slice(&status.stdout).unwrap()
}

#[test]
fn rejected_copies_are_kept_once_each_up_to_the_cap_and_status_reports_them() {
    let scratch = new_scratch("conflict-cap");
    let pgbak = scratch.pgbak();
    let set_cap = |max_bytes: u64| {
        fs::write(
            pgbak.join("config.toml"),
            format!("[sync]\nautostart = false\n\n[wal]\nconflicts_max_bytes = {max_bytes}\n"),
        )
        .unwrap();
    };
    set_cap(1000);
    let source = scratch.source_directory();
    let name = "00000002.history";
    let path = write_source(
        &source,
        name,
        b"1\t0/4000000\tno recovery target specified\n",
    );
    assert_success(&wal(&pgbak, &path));
    let conflicts = pgbak.join("conflicts");

    write_source(&source, name, b"1\t0/5000000\tfirst rejected content\n");
    for _retry in 0..3 {
        let stderr = assert_refused(&wal(&pgbak, &path));
        assert!(stderr.contains("was kept as"), "{stderr}");
    }
    assert_eq!(names_in(&conflicts).len(), 1, "{:?}", names_in(&conflicts));
    // Room for that one copy, not for a second one of the same size (S-2.10).
    let kept_bytes = fs::metadata(conflicts.join(&names_in(&conflicts)[0]))
        .unwrap()
        .len();
    set_cap(kept_bytes + kept_bytes / 2);

    write_source(&source, name, b"1\t0/6000000\tsecond rejected content\n");
    let stderr = assert_refused(&wal(&pgbak, &path));
    assert!(
        stderr.contains("was not kept") && stderr.contains("wal.conflicts_max_bytes"),
        "{stderr}"
    );
    let kept: Vec<String> = names_in(&conflicts)
        .into_iter()
        .filter(|kept| kept.ends_with(".zst"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // The archived file is untouched (S-2.4).
    let stored = the_backup_directory(&pgbak).join(format!("pg_wal/{name}.zst"));
    assert_zstd_cli_restores(&stored, b"1\t0/4000000\tno recovery target specified\n");

    let json = status_json(&pgbak);
    let report = &json["conflicts"];
    assert_eq!(report["files"], 1, "{json}");
    assert_eq!(report["max_bytes"], kept_bytes + kept_bytes / 2, "{json}");
    assert_eq!(report["cap_reached"], true, "{json}");
    let problems = json["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|problem| problem["code"] == "wal_conflicts"),
        "{json}"
    );
}

/// A segment whose first page carries a long page header of cluster `system_identifier`.
fn segment_of_cluster(seed: u64, system_identifier: u64) -> Vec<u8> {
    let size = 1 << 20;
    let mut bytes = segment_bytes(seed, size);
    pgbak::wal_header::LongPageHeader {
        timeline: 1,
        page_address: 0,
        system_identifier,
        segment_size_bytes: size as u32,
    }
    .write_to(&mut bytes);
    bytes
}

/// S-2.9: a second cluster archiving into the same `$PGBAK` is refused with both identifiers
/// and nothing stored; `pgbak new-series` starts a new series on purpose, after which the new
/// cluster's segments are accepted into a new directory.
#[test]
fn a_segment_of_another_cluster_is_refused_until_pgbak_new_series() {
    let scratch = new_scratch("cluster");
    let pgbak = scratch.pgbak();
    let source = scratch.source_directory();
    let ours: u64 = 7_311_111_111_111_111_111;
    let theirs: u64 = 7_322_222_222_222_222_222;
    let first = write_source(&source, &segment_name(1), &segment_of_cluster(1, ours));
    assert_success(&wal(&pgbak, &first));
    let directory = the_backup_directory(&pgbak);

    let foreign = write_source(&source, &segment_name(2), &segment_of_cluster(2, theirs));
    let stderr = assert_refused(&wal(&pgbak, &foreign));
    assert!(
        stderr.contains(&ours.to_string()) && stderr.contains(&theirs.to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("pgbak new-series"), "{stderr}");
    let stored = directory
        .join("pg_wal")
        .join(format!("{}.zst", segment_name(2)));
    assert!(!stored.exists());

    let output = pgbak_command(&pgbak).arg("new-series").output().unwrap();
    assert_success(&output);
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(said.contains(&format!("forgot cluster {ours}")), "{said}");
    assert_success(&wal(&pgbak, &foreign));
    assert!(!stored.exists(), "the new series goes to a new directory");
    assert_eq!(backup_directories(&pgbak).len(), 2);
    let status = pgbak_command(&pgbak)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["system_identifier"], theirs.to_string(), "{status}");
}
