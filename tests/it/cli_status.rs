//! `pgbak status` and the environment checks, through the real binary (S-1.1, S-1.4, S-3.3,
//! S-6.4): an empty `$PGBAK`, a journal with a torn tail, a garbage `pgbak.lock`, a missing
//! journal next to backup directories, every refused environment, and `--json` / `--journal`.

use pgbak::home::environment::PgbakHome;
use pgbak::home::journal_file;
use pgbak::machine::{Event, archive_targets};
use pgbak::timestamp::{DirectoryName, UnixMillis};
use pgbak::wal_name::WalFileName;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::process::Output;

use crate::util::{Scratch, pgbak, stderr_of, stdout_of};

fn text(output: &Output) -> (String, String) {
    (stdout_of(output), stderr_of(output))
}

fn home(path: &Path) -> PgbakHome {
    PgbakHome {
        path: path.to_owned(),
        owner_uid: fs::metadata(path).unwrap().uid(),
    }
}

/// Archives `count` segments the way `pgbak wal` will: the file on disk in every target
/// directory, then the journal record. Returns the directory the first file opened.
fn archive_segments(dir: &Path, count: u64) -> DirectoryName {
    let home = home(dir);
    let mut opened = journal_file::open_journal(&home, UnixMillis(1_795_478_400_000)).unwrap();
    let mut first = None;
    for number in 1..=count {
        let at = UnixMillis(1_795_478_400_000 + number * 1000);
        let name = WalFileName::parse(&format!("0000000100000000{number:08X}")).unwrap();
        let targets = archive_targets(opened.journal.state(), at);
        let mut events = Vec::new();
        if let Some(directory) = targets.open_directory {
            events.push(Event::DirectoryOpened { directory, at });
        }
        for directory in &targets.directories {
            let wal = home.directory_path(*directory).join("pg_wal");
            fs::create_dir_all(&wal).unwrap();
            fs::write(wal.join(name.compressed_name()), b"compressed").unwrap();
        }
        first.get_or_insert(targets.directories[0]);
        events.push(Event::WalArchived {
            file: name,
            compressed_bytes: 10,
            directories: targets.directories,
            already_present: false,
            at,
        });
        opened.append(&events, at).unwrap();
    }
    first.unwrap()
}

#[test]
fn status_of_an_unused_pgbak_says_so_and_creates_nothing() {
    let dir = Scratch::private("cli-empty");
    let output = pgbak(Some(&dir.0), &["status"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("is unused: no journal, nothing archived"),
        "{stdout}"
    );
    assert!(stdout.contains("missing_script"), "{stdout}");
    assert!(stdout.contains("nothing archived yet"), "{stdout}");
    assert_eq!(
        fs::read_dir(&dir.0).unwrap().count(),
        0,
        "status wrote into an unused $PGBAK"
    );

    let output = pgbak(Some(&dir.0), &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["schema"], "pgbak.status");
    assert_eq!(json["schema_version"], 1);
    assert!(json["journal"].is_null());
    assert_eq!(json["everything_shipped"], true);
}

#[test]
fn status_reports_directories_and_records() {
    let dir = Scratch::private("cli-records");
    let first = archive_segments(&dir.0, 3);
    let output = pgbak(Some(&dir.0), &["status"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("{first}  pending")), "{stdout}");
    assert!(stdout.contains("3 WAL files"), "{stdout}");
    assert!(
        stdout.contains("000000010000000000000001 … 000000010000000000000003"),
        "{stdout}"
    );
    assert!(stdout.contains("intact"), "{stdout}");

    let output = pgbak(Some(&dir.0), &["status", "--journal"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let kinds: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    // Newest last: the first record of a fresh journal is its checkpoint, then the facts.
    assert_eq!(
        kinds,
        [
            "Checkpoint",
            "JournalRebuilt",
            "DirectoryOpened",
            "WalArchived",
            "WalArchived",
            "WalArchived"
        ],
        "{stdout}"
    );
}

#[test]
fn status_cuts_a_torn_tail_and_says_what_was_damaged() {
    let dir = Scratch::private("cli-torn");
    archive_segments(&dir.0, 3);
    let lock = dir.0.join("pgbak.lock");
    let length = fs::metadata(&lock).unwrap().len();
    // A crash in the middle of the last append: the frame runs past the end of the file.
    let file = fs::OpenOptions::new().write(true).open(&lock).unwrap();
    file.set_len(length - 7).unwrap();
    drop(file);

    let output = pgbak(Some(&dir.0), &["status"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("TAIL CUT (just now"), "{stdout}");
    assert!(
        stdout.contains("cut off a torn record at offset"),
        "{stdout}"
    );
    assert!(stdout.contains("no complete record was lost"), "{stdout}");
    // The last complete state: two segments (the torn third record is gone).
    assert!(stdout.contains("2 WAL files"), "{stdout}");
    assert!(stdout.contains("journal_tail_cut"), "{stdout}");

    // The repair was recorded; the next status still says what happened, but not "just now".
    let output = pgbak(Some(&dir.0), &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["journal"]["health"], "tail_cut");
    assert_eq!(json["journal"]["repaired_now"], false);
    assert_eq!(json["wal"]["archived_count"], 2);
}

#[test]
fn status_rebuilds_a_garbage_journal_from_the_tree() {
    let dir = Scratch::private("cli-garbage");
    let first = archive_segments(&dir.0, 4);
    let lock = dir.0.join("pgbak.lock");
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(&lock, &garbage).unwrap();

    let output = pgbak(Some(&dir.0), &["status"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("REBUILT (just now"), "{stdout}");
    assert!(
        stdout.contains("does not start with the journal magic"),
        "{stdout}"
    );
    assert!(stdout.contains("journal_rebuilt"), "{stdout}");
    // The tree is the truth: the directory without base.tzst never finished its base backup.
    assert!(stdout.contains(&format!("{first}  failed")), "{stdout}");
    assert!(stdout.contains("4 WAL files"), "{stdout}");
    // The damaged bytes were kept for inspection, privately.
    let copies: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("pgbak.lock.damaged-"))
        .collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(fs::read(&copies[0]).unwrap(), garbage);
    assert_eq!(
        fs::metadata(&copies[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        stdout.contains("the damaged journal was kept as"),
        "{stdout}"
    );

    // The rebuilt journal is clean: a second status repairs nothing.
    let output = pgbak(Some(&dir.0), &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["journal"]["health"], "rebuilt");
    assert_eq!(json["journal"]["repaired_now"], false);
}

#[test]
fn status_rebuilds_a_missing_journal_when_directories_exist() {
    let dir = Scratch::private("cli-missing");
    archive_segments(&dir.0, 2);
    fs::remove_file(dir.0.join("pgbak.lock")).unwrap();
    let output = pgbak(Some(&dir.0), &["status", "--json"]);
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["journal"]["health"], "rebuilt");
    assert!(
        json["journal"]["repair"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{json}"
    );
    assert_eq!(json["directories"][0]["wal_files"], 2);
}

fn assert_refused(output: &Output, message: &str, hint: &str) {
    let (stdout, stderr) = text(output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one error line and one hint: {stderr}");
    assert!(
        lines[0].starts_with("pgbak: ") && lines[0].contains(message),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("hint: ") && lines[1].contains(hint),
        "{stderr}"
    );
}

#[test]
fn every_command_refuses_a_bad_environment_with_one_line_and_a_hint() {
    let dir = Scratch::private("cli-env");
    assert_refused(&pgbak(None, &["status"]), "PGBAK is not set", "PGBAK");
    assert_refused(
        &pgbak(Some(Path::new("relative/dir")), &["status"]),
        "not an absolute path",
        "",
    );
    let missing = dir.0.join("nope");
    assert_refused(
        &pgbak(Some(&missing), &["status"]),
        "does not exist",
        "pgbak init",
    );
    let file = dir.0.join("file");
    fs::write(&file, b"").unwrap();
    assert_refused(&pgbak(Some(&file), &["status"]), "not a directory", "");

    // Owned by another user (S-1.4): the message names both users.
    if nix::unistd::geteuid().is_root() {
        let other = dir.0.join("owned-by-postgres");
        fs::create_dir(&other).unwrap();
        let postgres = nix::unistd::User::from_name("postgres").unwrap();
        if let Some(postgres) = postgres {
            nix::unistd::chown(&other, Some(postgres.uid), Some(postgres.gid)).unwrap();
            let output = pgbak(Some(&other), &["status"]);
            assert_refused(&output, "owned by", "runuser -u postgres");
            assert!(text(&output).1.contains("root"), "{}", text(&output).1);
        }
    }
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let output = pgbak(None, &["no-such-command"]);
    assert_eq!(output.status.code(), Some(1));
    let output = pgbak(None, &["--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output).0.contains("status"));
}

/// Runs `pgbak ARGS` with its stdout a pipe whose reading end is already closed: every write
/// to stdout fails with EPIPE at once, deterministically (what `pgbak status | head -1` does
/// once `head` has its line and exits).
fn pgbak_into_closed_pipe(pgbak_dir: &Path, args: &[&str]) -> Output {
    let (reading_end, writing_end) = nix::unistd::pipe().unwrap();
    drop(reading_end);
    Command::new(env!("CARGO_BIN_EXE_pgbak"))
        .args(args)
        .env("PGBAK", pgbak_dir)
        .stdout(std::process::Stdio::from(writing_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn status_into_a_closed_pipe_exits_0_without_a_message() {
    // `pgbak status | head -1`: a reader that went away is not an error of pgbak's, and a
    // script piping the report must not see a failure (or a death by SIGPIPE) for it.
    let dir = Scratch::new("closed-pipe");
    archive_segments(&dir.0, 2);
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["status", "--journal"][..],
    ] {
        let output = pgbak_into_closed_pipe(&dir.0, args);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
    // And through a real shell pipeline, reading one line.
    let script = format!(
        "{} status | head -1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_pgbak")
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .env("PGBAK", &dir.0)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert_eq!(stdout.trim(), "0", "{stderr}");
}
