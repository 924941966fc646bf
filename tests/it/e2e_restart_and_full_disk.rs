//! End-to-end against a real PostgreSQL 15: what PostgreSQL's
//! archiver does around restarts and a full `$PGBAK` never duplicates, loses or tears a WAL file.
//!
//! e. The server crashes under pgbench load (crash recovery, the archiver restarts and re-sends
//!    what it had not marked done), and a segment that was already archived is sent a second
//!    time (its `.done` renamed back to `.ready`): `pgbak wal` accepts the identical duplicate
//!    with exit 0 and records it as `already_present` without counting it twice (S-2.4, S-2.5,
//!    S-2.3); every directory's `pg_wal/` holds each segment exactly once, byte-equal to the
//!    server's, with no gap and nothing in `conflicts/` (S-2.2, S-2.7); `wait` exits 0 (S-6.3)
//!    and a restore from `current` equals the source.
//! f. `$PGBAK` on a tmpfs that fills up (S-8.5): archiving fails loudly (PostgreSQL counts the
//!    failures and logs pgbak's one-line error with its `hint:`), PostgreSQL keeps the segments
//!    (`.ready`), nothing partial appears in `$PGBAK` (S-2.3: the tree is unchanged, every stored
//!    `.zst` passes `zstd -t`); once space is freed archiving catches up by itself, each retried
//!    segment is stored once as new (not as a duplicate of a leftover), `wait` exits 0 and a
//!    restore from `current` includes the rows written while the disk was full.

use crate::harness::{self, Cluster};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Both tests keep every segment in the server's `pg_wal` (so each stored file can be compared
/// with its source, and a segment can be re-sent after a clean restart) and never let the WAL
/// ratio trigger a second base backup (one directory: what is stored where stays simple).
const CONFIG: &str = "[pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n\n\
                      [base]\nmax_wal_ratio = 1000.0\n";

/// pgbench's TPC-B tables (count and a checksum over every account, history count and sum),
/// the TPC-B invariant (every committed transaction moved the same delta through all four
/// tables), and the test's own table: compared between the source and the restore.
const CHECKSUM: &str = "select (select count(*) || ',' || sum(hashtext(aid::text || ':' || abalance::text)) \
                        from pgbench_accounts) \
                        || '|' || (select count(*) || ',' || coalesce(sum(delta), 0) from pgbench_history) \
                        || '|' || ((select sum(abalance) from pgbench_accounts) \
                        = (select sum(bbalance) from pgbench_branches) \
                        and (select sum(bbalance) from pgbench_branches) \
                        = (select sum(tbalance) from pgbench_tellers) \
                        and (select sum(tbalance) from pgbench_tellers) \
                        = (select coalesce(sum(delta), 0) from pgbench_history))::text \
                        || '|' || (select count(*) || ',' || sum(hashtext(g::text || ':' || t)) from written)";

#[test]
fn a_crash_under_load_and_a_resent_segment_store_each_segment_once_and_restore_equals_source() {
    let mut cluster = Cluster::new("restart", CONFIG, "");
    keep_all_wal(&cluster);
    cluster.start();
    cluster.pgbench(&["-i", "-q", "-s", "3"]);
    cluster.sql("create table written(g int primary key, t text)");
    cluster.switch_wal_and_wait_archived();
    // The first base backup must be complete before the crash: a crash during it fails it
    // (correctly, S-4.5), which is not this scenario.
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(cluster.status()["current"].is_string());

    // --- The server crashes while pgbench writes and the archiver archives. ---
    let load = pgbench_in_background(&cluster, &["-c", "2", "-T", "60"]);
    // Committed transactions exist, and a segment filled under load was archived ...
    poll_until(60, "pgbench commits transactions", || {
        (count(&cluster, "pgbench_history") >= 300).then_some(())
    });
    cluster.switch_wal_and_wait_archived();
    poll_until(60, "pgbench commits more transactions", || {
        (count(&cluster, "pgbench_history") >= 600).then_some(())
    });
    // ... and one more is handed to the archiver right before the crash, so the crash is
    // likely to hit a `pgbak wal` call (SIGQUIT reaches the archiver's process group) and the
    // archiver re-sends that segment after the restart.
    let at_crash = cluster.sql("select pg_walfile_name(pg_switch_wal())");
    cluster.stop_immediate();
    let load = load.join().unwrap();
    assert!(
        !load.status.success(),
        "pgbench should have been cut off by the crash, but it finished: {}",
        String::from_utf8_lossy(&load.stdout)
    );
    eprintln!(
        "pgbench cut off by the crash: {}",
        String::from_utf8_lossy(&load.stderr)
            .lines()
            .find(|line| line.contains("aborted") || line.contains("server closed"))
            .unwrap_or_default()
    );
    // Crash recovery; the archiver restarts and archives what is still `.ready`.
    cluster.start();
    let committed = count(&cluster, "pgbench_history");
    assert!(committed >= 600, "{committed} transactions after recovery");
    eprintln!("{committed} pgbench transactions survived the crash; switched at it: {at_crash}");
    // (pg_stat_archiver was reset by the crash, and the segment may have been archived before
    // it: its `.done` file is what says it is archived.)
    cluster.wait_archived(&at_crash, 120);

    // Writes after the crash, into a new segment that is archived normally: X.
    cluster.sql("insert into written select g, md5(g::text) from generate_series(1, 20000) g");
    let resent = cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let current = cluster.status()["current"].as_str().unwrap().to_owned();
    let counted_before = directory_status(&cluster, &current)["wal_files"].clone();

    // --- Re-send X: PostgreSQL archives it again after a clean restart. ---
    let before_restart = archiver(&cluster);
    cluster.stop();
    let status_dir = cluster.data.join("pg_wal/archive_status");
    let done = status_dir.join(format!("{resent}.done"));
    let ready = status_dir.join(format!("{resent}.ready"));
    assert!(done.is_file(), "{} is missing", done.display());
    assert!(cluster.data.join("pg_wal").join(&resent).is_file());
    harness::run_ok(harness::as_server_user("mv").arg(&done).arg(&ready));
    let log_before = cluster.server_log().len();
    cluster.start();
    poll_until(120, "PostgreSQL archives the re-sent segment again", || {
        let now = archiver(&cluster);
        (now.archived > before_restart.archived && done.is_file() && !ready.exists()).then_some(now)
    });
    let after_resend = archiver(&cluster);
    // pgbak accepted it: exit 0 (a failure would count in pg_stat_archiver, which a clean
    // restart keeps), and it said nothing in the server log.
    assert_eq!(
        after_resend.failed, before_restart.failed,
        "pg_stat_archiver before the restart {before_restart:?}, after the re-send {after_resend:?}"
    );
    assert_eq!(after_resend.last_archived, resent);
    let log_since = cluster.server_log()[log_before..].to_owned();
    assert!(
        !log_since.contains("pgbak:") && !log_since.contains("archive command failed"),
        "{log_since}"
    );
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    // Recorded as a duplicate of the stored copy: the first record of X stored it, the second
    // found it already present (S-2.4) and did not count it again.
    // Both records name the one directory that holds it (journal ids are numbers).
    let records: Vec<(bool, Vec<u64>)> = wal_archived_records(&cluster)
        .into_iter()
        .filter(|record| record.file == resent)
        .map(|record| (record.already_present, record.directories))
        .collect();
    let directories = records.first().map(|record| record.1.clone());
    assert!(
        records.len() == 2
            && !records[0].0
            && records[1].0
            && directories.as_ref().is_some_and(|d| d.len() == 1)
            && records[1].1 == records[0].1,
        "WalArchived records of {resent} (already_present, directories): {records:?}"
    );
    assert_eq!(
        directory_status(&cluster, &current)["wal_files"],
        counted_before,
        "the duplicate must not be counted twice"
    );
    let duplicates: Vec<String> = wal_archived_records(&cluster)
        .into_iter()
        .filter(|record| record.already_present)
        .map(|record| record.file)
        .collect();
    eprintln!("WAL files PostgreSQL sent twice (already present): {duplicates:?}");

    // --- Writes after both restarts; then everything must be stored exactly once. ---
    cluster.sql("insert into written select g, md5(g::text) from generate_series(20001, 40000) g");
    let last = cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let status = cluster.status();
    assert_eq!(status["everything_shipped"], true, "{status}");
    assert_no_wal_gap(&status);
    let expected = cluster.sql(CHECKSUM);
    assert!(
        expected.contains("|true|"),
        "TPC-B invariant on the source: {expected}"
    );
    cluster.stop();
    let log = cluster.server_log();
    assert!(
        !log.lines().any(|line| line.starts_with("pgbak:")),
        "pgbak reported an error to the server: {log}"
    );

    let stored = assert_store_is_clean(&cluster);
    for (directory, names) in &stored {
        assert_segments_contiguous(directory, names);
        assert_equal_to_server_segments(&cluster, directory, names);
    }
    let current_names = &stored
        .iter()
        .find(|(directory, _)| *directory == current)
        .unwrap()
        .1;
    for segment in [&at_crash, &resent, &last] {
        assert!(
            current_names.contains(&format!("{segment}.zst")),
            "{segment} is not stored in {current}: {current_names:?}"
        );
    }

    let restored = harness::restore_and_query(
        &cluster.pgbak.join(&current),
        &cluster.root.join("restore"),
        &cluster.socket,
        cluster.port,
        CHECKSUM,
    );
    assert_eq!(restored, expected, "restore from {current}");
}

#[test]
fn a_full_pgbak_fails_archiving_loudly_keeps_the_wal_and_catches_up_once_space_is_freed() {
    // As in tests/it/cli_wal.rs, the disk-full case needs a real full file system: a tmpfs, which
    // only root can mount. CI runs as root; anywhere else this must not pass silently.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a tmpfs over $PGBAK and needs root (CI runs the tests as root)"
    );
    let mut full = OnTmpfs::mount(Cluster::new("fulldisk", CONFIG, ""), "48m");
    let pgbak = full.cluster.pgbak.clone();
    let (_, total) = free_and_total(&pgbak);
    assert!(
        total <= 48 << 20,
        "$PGBAK is not on the 48 MiB tmpfs: {total} bytes"
    );
    keep_all_wal(&full.cluster);
    full.cluster.start();
    let cluster = &full.cluster;

    // The first base backup, normally (a small database).
    cluster.sql("create table written(g int primary key, t text)");
    cluster.sql("insert into written select g, md5(g::text) from generate_series(1, 10000) g");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let current = cluster.status()["current"].as_str().unwrap().to_owned();
    let tree_before = tree(&pgbak);
    let stored_before = cluster.status()["wal"]["last_archived"].clone();

    // Fill the tmpfs (as root) and leave 128 KiB: far less than one compressed segment of the
    // random-looking text written below (a few MiB of WAL each, about half that compressed).
    let ballast_path = pgbak.join("ballast");
    let mut ballast = fs::File::create(&ballast_path).unwrap();
    let chunk = vec![0x5Au8; 64 << 10];
    loop {
        match ballast.write_all(&chunk) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
            Err(error) => panic!("filling the tmpfs: {error}"),
        }
    }
    let filled = ballast.metadata().unwrap().len();
    ballast.set_len(filled - (128 << 10)).unwrap();
    drop(ballast);
    let (free, _) = free_and_total(&pgbak);
    assert!(free < 512 << 10, "{free} bytes free after the ballast");

    // WAL while the disk is full: rows that compress poorly, three segment switches.
    let failed_before = archiver(cluster).failed;
    let mut switched = Vec::new();
    for round in 0..3 {
        let first = 10001 + round * 30000;
        cluster.sql(&format!(
            "insert into written select g, md5(g::text) || md5(random()::text) \
             from generate_series({first}, {}) g",
            first + 29999
        ));
        switched.push(cluster.sql("select pg_walfile_name(pg_switch_wal())"));
    }

    // Archiving fails loudly: PostgreSQL counts failures and logs pgbak's error and hint.
    // Three in a row: PostgreSQL then gives up its burst of retries and sleeps (up to 60 s), so
    // every later check sees what several failed calls left behind, and the catch-up below
    // comes from the archiver's own later retry.
    poll_until(120, "pg_stat_archiver counts three failures", || {
        (archiver(cluster).failed >= failed_before + 3).then_some(())
    });
    let expected_error = format!(
        "pgbak: wal {}: $PGBAK {} is full (No space left on device)",
        switched[0],
        pgbak.display()
    );
    let log = poll_until(30, "pgbak's error is in the server log", || {
        let log = cluster.server_log();
        log.contains(&expected_error).then_some(log)
    });
    let error_at = log.find(&expected_error).unwrap();
    let hint = log[error_at..].lines().nth(1).unwrap_or_default();
    eprintln!(
        "while full: {:?}; the server log has:\n{}\n{hint}",
        archiver(cluster),
        log[error_at..].lines().next().unwrap()
    );
    assert!(
        hint.starts_with("hint: free space on the file system"),
        "the line after pgbak's error: {hint:?}\n{log}"
    );
    // PostgreSQL keeps every segment it could not archive, marked `.ready`.
    for segment in &switched {
        assert!(cluster.data.join("pg_wal").join(segment).is_file());
        assert!(
            cluster
                .data
                .join(format!("pg_wal/archive_status/{segment}.ready"))
                .is_file(),
            "{segment}.ready"
        );
    }
    // Nothing partial in $PGBAK: not a path more than before (the failed calls' bytes lived in
    // unnamed files), every stored file is a complete zstd frame, and pgbak recorded nothing.
    let mut tree_now = tree(&pgbak);
    tree_now.remove("ballast");
    assert_eq!(
        tree_now, tree_before,
        "paths in $PGBAK changed while it was full"
    );
    assert_store_is_clean(cluster);
    let status = cluster.status();
    assert_eq!(status["wal"]["last_archived"], stored_before, "{status}");
    // S-8.5: status reports the full disk with its free space.
    assert!(
        status["disk"]["free_bytes"].as_u64().unwrap() < 512 << 10,
        "{status}"
    );
    assert!(
        status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|problem| problem["code"] == "low_disk_space"),
        "{status}"
    );

    // The operator frees space: PostgreSQL's own retries catch up, with no help.
    fs::remove_file(&ballast_path).unwrap();
    let last = switched.last().unwrap().clone();
    // PostgreSQL's archiver waits up to 60 s after three failures in a row. (Its
    // `last_archived_wal` is no measure: a backup history file archived last sorts before
    // later segments.)
    cluster.wait_archived(&last, 300);
    eprintln!("after the ballast was removed: {:?}", archiver(cluster));
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let status = cluster.status();
    assert_eq!(status["everything_shipped"], true, "{status}");
    assert_no_wal_gap(&status);
    // Each segment that failed is stored once, as a new file: a leftover of a failed attempt
    // would have made the retry a duplicate (or a conflict).
    let records = wal_archived_records(cluster);
    for segment in &switched {
        let of_segment: Vec<bool> = records
            .iter()
            .filter(|record| &record.file == segment)
            .map(|record| record.already_present)
            .collect();
        assert_eq!(of_segment, vec![false], "WalArchived records of {segment}");
    }
    let expected =
        cluster.sql("select count(*) || ',' || sum(hashtext(g::text || ':' || t)) from written");
    assert!(expected.starts_with("100000,"), "{expected}");
    full.cluster.stop();
    let cluster = &full.cluster;

    let stored = assert_store_is_clean(cluster);
    for (directory, names) in &stored {
        assert_segments_contiguous(directory, names);
        assert_equal_to_server_segments(cluster, directory, names);
    }
    let current_names = &stored
        .iter()
        .find(|(directory, _)| *directory == current)
        .unwrap()
        .1;
    for segment in &switched {
        assert!(current_names.contains(&format!("{segment}.zst")));
    }

    let restored = harness::restore_and_query(
        &cluster.pgbak.join(&current),
        &cluster.root.join("restore"),
        &cluster.socket,
        cluster.port,
        "select count(*) || ',' || sum(hashtext(g::text || ':' || t)) from written",
    );
    assert_eq!(restored, expected, "restore from {current}");
}

// --- Helpers private to this file. ---

/// A cluster whose `$PGBAK` is a tmpfs mounted over `cluster.pgbak`. Dropping it (also when the
/// test panics) stops the server, lets the sync finish and unmounts (lazily) *before* the
/// `Cluster`'s own drop, whose `remove_dir_all` could not remove a mount point.
struct OnTmpfs {
    cluster: Cluster,
    mount_point: PathBuf,
}

impl OnTmpfs {
    /// Copies `$PGBAK` (as `pgbak init` and the harness made it) aside, mounts the tmpfs over
    /// it, copies the contents back and gives them to the server user.
    fn mount(cluster: Cluster, size: &str) -> OnTmpfs {
        let mount_point = cluster.pgbak.clone();
        let aside = cluster.root.join("pgbak-as-initialized");
        harness::run_ok(Command::new("cp").arg("-a").arg(&mount_point).arg(&aside));
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(&mount_point)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cannot mount a tmpfs over {} (needs root or CAP_SYS_ADMIN): {}",
            mount_point.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let full = OnTmpfs {
            cluster,
            mount_point,
        };
        harness::run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(aside.join("."))
                .arg(&full.mount_point),
        );
        harness::run_ok(
            Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&full.mount_point),
        );
        full
    }
}

impl Drop for OnTmpfs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The cluster's own drop dumps too, but only after $PGBAK is unmounted.
            self.cluster.dump_diagnostics();
        }
        let _ = harness::as_server_user(&format!("{}/pg_ctl", harness::BIN))
            .arg("-D")
            .arg(&self.cluster.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
        let _ = self.cluster.pgbak_command(&["wait", "30"]).output();
        // A sync still running would keep the lazily unmounted tmpfs alive, and retry forever.
        self.cluster.kill_leftover_processes();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .output();
    }
}

/// Keeps every segment in the server's `pg_wal` (far more than these tests write).
fn keep_all_wal(cluster: &Cluster) {
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(cluster.data.join("postgresql.conf"))
        .unwrap();
    writeln!(conf, "wal_keep_size = '1GB'").unwrap();
}

/// `pgbench ARGS` in a thread, as the server user; its output whatever its exit status (the
/// harness's `pgbench` panics on failure, and this one is meant to be cut off by a crash).
fn pgbench_in_background(cluster: &Cluster, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let mut command = harness::as_server_user(&format!("{}/pgbench", harness::BIN));
    command
        .arg("-h")
        .arg(&cluster.socket)
        .args(["-p", &cluster.port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .stdin(Stdio::null());
    std::thread::spawn(move || command.output().unwrap())
}

/// Polls `ready` every 200 ms until it returns a value; panics after `seconds`.
fn poll_until<T>(seconds: u32, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    for _ in 0..seconds * 5 {
        if let Some(value) = ready() {
            return value;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within {seconds} s");
}

fn count(cluster: &Cluster, table: &str) -> u64 {
    cluster
        .sql(&format!("select count(*) from {table}"))
        .parse()
        .unwrap()
}

#[derive(Debug)]
struct Archiver {
    archived: u64,
    failed: u64,
    last_archived: String,
}

/// `pg_stat_archiver`. A crash resets it (PostgreSQL 15 discards statistics in crash
/// recovery); a clean restart keeps it.
fn archiver(cluster: &Cluster) -> Archiver {
    let row = cluster.sql(
        "select archived_count || ' ' || failed_count || ' ' || coalesce(last_archived_wal, '') \
         from pg_stat_archiver",
    );
    // (psql's output is trimmed: no third field while nothing was archived yet.)
    let mut fields = row.splitn(3, ' ');
    Archiver {
        archived: fields.next().unwrap().parse().unwrap(),
        failed: fields.next().unwrap().parse().unwrap(),
        last_archived: fields.next().unwrap_or_default().to_owned(),
    }
}

fn directory_status(cluster: &Cluster, name: &str) -> serde_json::Value {
    let status = cluster.status();
    status["directories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|directory| directory["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no directory {name} in {status}"))
}

struct WalArchivedRecord {
    file: String,
    already_present: bool,
    directories: Vec<u64>,
}

/// The `WalArchived` records of `pgbak status --journal` (`seq offset time kind {json}`).
fn wal_archived_records(cluster: &Cluster) -> Vec<WalArchivedRecord> {
    let output = cluster.pgbak(&["status", "--journal"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.splitn(5, ' ').collect();
            (fields.get(3) == Some(&"WalArchived")).then(|| {
                let json: serde_json::Value = serde_json::from_str(fields[4]).unwrap();
                let record = &json["WalArchived"];
                WalArchivedRecord {
                    file: record["file"].as_str().unwrap().to_owned(),
                    already_present: record["already_present"].as_bool().unwrap(),
                    directories: record["directories"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|id| id.as_u64().unwrap())
                        .collect(),
                }
            })
        })
        .collect()
}

fn assert_no_wal_gap(status: &serde_json::Value) {
    assert!(
        !status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|problem| problem["code"] == "wal_gap"),
        "{status}"
    );
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            paths.insert(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            }
        }
    }
    paths
}

fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// A name PostgreSQL archives, stored as `NAME.zst` (S-2.1, S-2.2): a segment, a `.partial`,
/// a `TLI.history` or a `SEGMENT.OFFSET.backup`.
fn is_stored_wal_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".zst") else {
        return false;
    };
    let parts: Vec<&str> = stem.split('.').collect();
    match parts.as_slice() {
        [segment] => is_hex(segment, 24),
        [segment, "partial"] => is_hex(segment, 24),
        [timeline, "history"] => is_hex(timeline, 8),
        [segment, offset, "backup"] => is_hex(segment, 24) && is_hex(offset, 8),
        _ => false,
    }
}

/// Every backup directory's `pg_wal/` holds only stored WAL names (no temporary, partial or
/// renamed file: one file per WAL name), every file is a complete zstd frame (`zstd -t`), and
/// `conflicts/` is empty. Returns (directory, sorted names) for each directory.
fn assert_store_is_clean(cluster: &Cluster) -> Vec<(String, Vec<String>)> {
    let conflicts: Vec<_> = fs::read_dir(cluster.pgbak.join("conflicts"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(conflicts.is_empty(), "conflicts/: {conflicts:?}");
    let mut directories: Vec<String> = fs::read_dir(&cluster.pgbak)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.len() == 16 && name.ends_with('Z') && name.as_bytes()[8] == b'T')
        .collect();
    directories.sort();
    assert!(!directories.is_empty());
    let mut stored = Vec::new();
    for directory in directories {
        let wal = cluster.pgbak.join(&directory).join("pg_wal");
        let mut names: Vec<String> = fs::read_dir(&wal)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let strays: Vec<&String> = names.iter().filter(|n| !is_stored_wal_name(n)).collect();
        assert!(
            strays.is_empty(),
            "stray files in {}: {strays:?}",
            wal.display()
        );
        assert!(!names.is_empty(), "{} is empty", wal.display());
        let test = harness::run_ok(
            Command::new("zstd")
                .args(["-t", "-q"])
                .args(names.iter().map(|name| wal.join(name))),
        );
        assert!(test.status.success());
        stored.push((directory, names));
    }
    stored
}

/// The stored segments of one directory follow each other with no hole (one timeline, 16 MiB
/// segments: 256 per log file): nothing lost between the first and the newest.
fn assert_segments_contiguous(directory: &str, names: &[String]) {
    let indexes: Vec<(u64, u64)> = names
        .iter()
        .filter_map(|name| name.strip_suffix(".zst"))
        .filter(|stem| is_hex(stem, 24))
        .map(|stem| {
            let timeline = u64::from_str_radix(&stem[0..8], 16).unwrap();
            let log = u64::from_str_radix(&stem[8..16], 16).unwrap();
            let segment = u64::from_str_radix(&stem[16..24], 16).unwrap();
            (timeline, log * 0x100 + segment)
        })
        .collect();
    assert!(!indexes.is_empty(), "no segment in {directory}");
    for pair in indexes.windows(2) {
        assert!(
            pair[1].0 == pair[0].0 && pair[1].1 == pair[0].1 + 1,
            "{directory}: a hole or a timeline change between {:?} and {:?}: {names:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Each stored segment decompresses (with the zstd CLI, as a restore does) to exactly the
/// server's segment, which `wal_keep_size` kept in `pg_wal`.
fn assert_equal_to_server_segments(cluster: &Cluster, directory: &str, names: &[String]) {
    for name in names {
        let Some(segment) = name.strip_suffix(".zst").filter(|stem| is_hex(stem, 24)) else {
            continue;
        };
        let source = fs::read(cluster.data.join("pg_wal").join(segment))
            .unwrap_or_else(|error| panic!("the server's {segment}: {error}"));
        let stored = harness::run_ok(
            Command::new("zstd")
                .args(["-d", "-c", "-q"])
                .arg(cluster.pgbak.join(directory).join("pg_wal").join(name)),
        )
        .stdout;
        assert!(
            stored == source,
            "{directory}/pg_wal/{name} differs from the server's {segment}"
        );
    }
}

fn free_and_total(path: &Path) -> (u64, u64) {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    let fragment = stat.fragment_size() as u64;
    (
        stat.blocks_available() as u64 * fragment,
        stat.blocks() as u64 * fragment,
    )
}
