//! End-to-end tests of `pgbak restore` (S-8.1) and of `pgbak restore-wal` as the restored
//! server's `restore_command` (S-8.1.1), against real PostgreSQL 15 and 18 servers: every
//! scenario is one function of the version, run once per version (`SCENARIO::pg15`,
//! `SCENARIO::pg18`).
//!
//! Each source is a small cluster archiving into its own `$PGBAK` (first base backup taken by
//! the sync its first archived segment starts). Restores run as the server's OS user, like an
//! operator restoring for PostgreSQL; restored directories are started with [`Server`] on their
//! own port, archiving off unless the scenario archives on purpose. Rows of table `t` carry a
//! tag per step, so a point-in-time restore shows exactly which steps it kept.

use crate::harness::{self, Cluster, PgVersion, Server};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `--checkpoint=fast`: pg_basebackup's default spread checkpoint takes minutes on an idle
/// server; what is tested is the same.
const CONFIG: &str = "[pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n";

/// The tags of `t`, in insertion order.
const TAGS: &str = "select coalesce(string_agg(tag, ',' order by i), '') from t";

/// Everything a full restore must bring back exactly: the tags and a checksum of `bulk`.
const EXACT: &str = "select (select coalesce(string_agg(tag, ',' order by i), '') from t) \
    || '|' || (select count(*) || ',' || sum(hashtext(k::text || v)) from bulk)";

/// Runs `scenario` as two tests, `NAME::pg15` and `NAME::pg18`.
macro_rules! on_both_versions {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use crate::harness::PgVersion;

            #[test]
            fn pg15() {
                super::$scenario(PgVersion::V15);
            }

            #[test]
            fn pg18() {
                super::$scenario(PgVersion::V18);
            }
        }
    )*};
}

on_both_versions!(
    full_restore_from_current,
    replay_runs_the_recipes_last_steps_and_reports_where_it_ended,
    full_restore_from_an_older_directory,
    full_restore_from_an_offsite_copy_without_pgbak,
    point_in_time_to_time_name_lsn_and_immediate,
    drop_table_undone_by_a_restore_to_just_before_it,
    a_target_between_two_bases_picks_the_older_directory_and_says_why,
    a_promoted_restore_archives_timeline_2_and_a_later_restore_follows_it,
    a_missing_segment_in_the_middle_is_refused_before_anything_is_written,
    a_damaged_segment_is_refused_when_decompressed_up_front,
    damage_found_during_recovery_aborts_instead_of_promoting,
    crafted_base_archives_write_nothing_outside_dest,
    dest_not_empty_or_too_small_is_refused_clearly,
    a_standby_follows_segments_archived_after_it_started,
);

/// A started cluster on `version` with table `t` (tag `base`) and 2,000 rows in `bulk`, whose
/// first base backup is complete (`current` has `base.tzst`).
fn source(version: PgVersion, name: &str) -> Cluster {
    let label = format!("rs-{name}-{}", version.major());
    let mut cluster = Cluster::new_on(version, &label, CONFIG, "");
    cluster.start();
    cluster.sql("create table t(i serial primary key, tag text not null)");
    cluster.sql(
        "create table bulk as select g as k, md5(g::text) as v from generate_series(1, 2000) g",
    );
    insert(&cluster, "base");
    archive_everything(&cluster);
    assert!(
        current(&cluster).join("base.tzst").is_file(),
        "{}",
        cluster.status()
    );
    cluster
}

fn insert(cluster: &Cluster, tag: &str) {
    cluster.sql(&format!("insert into t(tag) values ('{tag}')"));
}

/// Switches WAL, waits until PostgreSQL archived the segment and the sync is done (`wait`).
fn archive_everything(cluster: &Cluster) -> String {
    let segment = cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    segment
}

/// The directory `current` points at.
fn current(cluster: &Cluster) -> PathBuf {
    let status = cluster.status();
    let name = status["current"]
        .as_str()
        .unwrap_or_else(|| panic!("no current directory: {status}"));
    cluster.pgbak.join(name)
}

/// `pgbak restore DEST ARGS` as the server user with the cluster's `PGBAK`.
fn restore(cluster: &Cluster, dest: &Path, args: &[&str]) -> Output {
    let mut all = vec!["restore", dest.to_str().unwrap()];
    all.extend_from_slice(args);
    cluster.pgbak(&all)
}

/// [`restore`], which must succeed; its stderr.
fn restore_ok(cluster: &Cluster, dest: &Path, args: &[&str]) -> String {
    let output = restore(cluster, dest, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "pgbak restore {} {args:?}: {:?}\n{stderr}{}",
        dest.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// [`restore`], which must fail with exit status 1; its stderr.
fn restore_refused(cluster: &Cluster, dest: &Path, args: &[&str]) -> String {
    let output = restore(cluster, dest, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "pgbak restore {} {args:?} must be refused with status 1: {stderr}",
        dest.display()
    );
    assert!(
        stderr.lines().any(|line| line.starts_with("pgbak: ")),
        "no `pgbak: <subject>: <problem>` line: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Starts a server on the restored `dest` and waits until it runs as a primary.
fn start_primary(version: PgVersion, dest: &Path) -> Server {
    let mut server = Server::on(version, dest);
    server.start();
    server.wait_until_primary(120);
    server
}

/// The `backup_label` inside `dir/base.tzst`: which base backup a restore started from.
fn backup_label_of(dir: &Path) -> String {
    let output = harness::run_ok(
        Command::new("tar")
            .args(["--zstd", "-xOf"])
            .arg(dir.join("base.tzst"))
            .arg("backup_label"),
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A time between two commits, from the server's clock: the next whole second (explicit
/// `+00`), after sleeping on the server until it has passed. Whole seconds keep the value
/// plain for any parser; commits before the call are before it, commits after are after it.
fn time_between(cluster: &Cluster) -> String {
    let second = cluster.sql(
        "select to_char(date_trunc('second', clock_timestamp() at time zone 'UTC') \
         + interval '1 second', 'YYYY-MM-DD HH24:MI:SS')",
    );
    let time = format!("{second}+00");
    cluster.sql(&format!(
        "select pg_sleep_until('{time}'::timestamptz + interval '20 milliseconds')"
    ));
    time
}

/// Whether `dest` looks like a complete data directory (what a half-restored one must not).
fn looks_complete(dest: &Path) -> bool {
    dest.join("PG_VERSION").exists() && dest.join("pg_wal").is_dir()
}

/// Every stored copy of `name.zst` in the `$PGBAK` directories, one path per file (hard links
/// in several directories are one file; the `current` link is not a directory of its own), so
/// that damaging each path once damages every copy exactly once.
fn archived_copies(cluster: &Cluster, name: &str) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::BTreeSet::new();
    let mut copies: Vec<PathBuf> = fs::read_dir(&cluster.pgbak)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path().join("pg_wal").join(format!("{name}.zst")))
        .filter(|path| {
            fs::metadata(path).is_ok_and(|meta| meta.is_file() && seen.insert(meta.ino()))
        })
        .collect();
    copies.sort();
    assert!(!copies.is_empty(), "{name}.zst is not archived");
    copies
}

/// Flips one bit in the middle of `path`, in place.
fn flip_a_bit(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(path, bytes).unwrap();
}

/// S-8.1: a full restore (no target) of `$PGBAK/current` is the seed's recipe in one command:
/// WAL into `pg_wal`, no signal file; started, it equals the source.
fn full_restore_from_current(version: PgVersion) {
    let cluster = source(version, "current");
    insert(&cluster, "after-base");
    cluster.sql("insert into bulk select g, 'late' from generate_series(2001, 2500) g");
    archive_everything(&cluster);
    let expected = cluster.sql(EXACT);

    let dest = cluster.root.join("restored");
    restore_ok(&cluster, &dest, &[]);
    assert!(!dest.join("recovery.signal").exists());
    assert!(!dest.join("standby.signal").exists());
    assert_eq!(
        fs::read_to_string(dest.join("backup_label")).unwrap(),
        backup_label_of(&current(&cluster))
    );
    let server = start_primary(version, &dest);
    assert_eq!(server.sql(EXACT), expected);
    assert_eq!(
        fs::read_to_string(dest.join("PG_VERSION")).unwrap().trim(),
        version.major().to_string()
    );
}

/// S-8.1.8: `--replay` runs `postgres --single -F` over the prepared directory and syncs once;
/// `--json` says where replay ended; the directory then starts as a primary with no recovery
/// left to do and equals the source.
fn replay_runs_the_recipes_last_steps_and_reports_where_it_ended(version: PgVersion) {
    let cluster = source(version, "replay");
    insert(&cluster, "after-base");
    archive_everything(&cluster);
    let expected = cluster.sql(EXACT);

    let dest = cluster.root.join("replayed");
    let mut args = vec!["--replay", "--json", "--pg-bin"];
    let bin = version.bin();
    args.push(&bin);
    let output = restore(&cluster, &dest, &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["mode"], "crash_recovery", "{summary}");
    assert_eq!(
        summary["replay"]["control"]["state"], "shut down",
        "{summary}"
    );
    let checkpoint = summary["replay"]["control"]["checkpoint_lsn"]
        .as_str()
        .unwrap_or_default();
    assert!(checkpoint.contains('/'), "{summary}");
    assert!(
        summary["timings_ms"]["replay"].as_u64().is_some(),
        "{summary}"
    );
    let server = start_primary(version, &dest);
    assert_eq!(server.sql(EXACT), expected);
}

/// S-8.1 (`--from TIMESTAMP`): the base of an older (sealed) directory, then its WAL and the
/// WAL that continues in the newer directory (S-4.1): the source's final state.
fn full_restore_from_an_older_directory(version: PgVersion) {
    let cluster = source(version, "older");
    let older = current(&cluster);
    insert(&cluster, "before-second-base");
    let output = cluster.pgbak(&["sync", "--base"]);
    assert!(output.status.success(), "{output:?}");
    insert(&cluster, "after-second-base");
    archive_everything(&cluster);
    assert_ne!(current(&cluster), older);
    let expected = cluster.sql(EXACT);

    let dest = cluster.root.join("restored");
    let name = older.file_name().unwrap().to_str().unwrap();
    restore_ok(&cluster, &dest, &["--from", name]);
    assert_eq!(
        fs::read_to_string(dest.join("backup_label")).unwrap(),
        backup_label_of(&older),
        "the base must come from {name}"
    );
    let server = start_primary(version, &dest);
    assert_eq!(server.sql(EXACT), expected);
}

/// S-8.1 (`--from PATH`, `PGBAK` unset): an offsite copy of one directory (`cp -a`
/// elsewhere) restores on its own.
fn full_restore_from_an_offsite_copy_without_pgbak(version: PgVersion) {
    let cluster = source(version, "offsite");
    insert(&cluster, "after-base");
    archive_everything(&cluster);
    let expected = cluster.sql(EXACT);
    let offsite = cluster.root.join("offsite");
    harness::run_ok(harness::as_server_user("mkdir").arg(&offsite));
    let copy = offsite.join(current(&cluster).file_name().unwrap());
    harness::run_ok(
        harness::as_server_user("cp")
            .arg("-a")
            .arg(current(&cluster))
            .arg(&copy),
    );

    let dest = cluster.root.join("restored");
    let output = harness::as_server_user("env")
        .args(["-u", "PGBAK"])
        .arg(&cluster.binary)
        .arg("restore")
        .arg(&dest)
        .arg("--from")
        .arg(&copy)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let server = start_primary(version, &dest);
    assert_eq!(server.sql(EXACT), expected);
}

/// S-8.1 point in time: `--target-name` (a `pg_create_restore_point`), `--target-lsn` (as
/// `pg_current_wal_lsn()` prints it), `--target-time` (explicit `+00`, between
/// two commits) and `--target-immediate` each stop exactly there and promote; the settings are
/// a `recovery.signal` and a `restore_command` of `pgbak restore-wal` (S-8.1.1).
fn point_in_time_to_time_name_lsn_and_immediate(version: PgVersion) {
    let cluster = source(version, "pitr");
    insert(&cluster, "r1");
    cluster.sql("select pg_create_restore_point('after_r1')");
    insert(&cluster, "r2");
    let lsn = cluster.sql("select pg_current_wal_lsn()");
    insert(&cluster, "r3");
    let time = time_between(&cluster);
    insert(&cluster, "r4");
    archive_everything(&cluster);
    assert_eq!(cluster.sql(TAGS), "base,r1,r2,r3,r4");

    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("name", vec!["--target-name", "after_r1"], "base,r1"),
        ("lsn", vec!["--target-lsn", &lsn], "base,r1,r2"),
        ("time", vec!["--target-time", &time], "base,r1,r2,r3"),
        ("immediate", vec!["--target-immediate"], "base"),
    ];
    for (kind, target, expected) in cases {
        let dest = cluster.root.join(format!("restored-{kind}"));
        let mut args = target.clone();
        args.extend(["--target-action", "promote"]);
        restore_ok(&cluster, &dest, &args);
        assert!(dest.join("recovery.signal").exists(), "{kind}");
        let auto_conf = fs::read_to_string(dest.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto_conf.contains("restore_command") && auto_conf.contains("restore-wal"),
            "{kind}: {auto_conf}"
        );
        let server = start_primary(version, &dest);
        assert_eq!(server.sql(TAGS), expected, "{kind}: {target:?}");
    }
}

/// S-8.1: the operator's undo of a `DROP TABLE`: restore to a time just before it.
fn drop_table_undone_by_a_restore_to_just_before_it(version: PgVersion) {
    let cluster = source(version, "drop");
    cluster.sql("create table precious as select g as n from generate_series(1, 300) g");
    let before_drop = time_between(&cluster);
    cluster.sql("drop table precious");
    insert(&cluster, "after-drop");
    archive_everything(&cluster);

    let dest = cluster.root.join("restored");
    restore_ok(
        &cluster,
        &dest,
        &["--target-time", &before_drop, "--target-action", "promote"],
    );
    let server = start_primary(version, &dest);
    assert_eq!(
        server.sql("select count(*) || ',' || sum(n) from precious"),
        "300,45150"
    );
    assert_eq!(server.sql(TAGS), "base");
}

/// S-8.1 "with a target and no `--from`, pgbak picks the directory and says why": two base
/// backups, a time between them: the older directory (the newest whose base backup ended
/// before the target), named on stderr with the reason.
fn a_target_between_two_bases_picks_the_older_directory_and_says_why(version: PgVersion) {
    let cluster = source(version, "choose");
    let older = current(&cluster);
    insert(&cluster, "a1");
    let time = time_between(&cluster);
    insert(&cluster, "a2");
    let output = cluster.pgbak(&["sync", "--base"]);
    assert!(output.status.success(), "{output:?}");
    insert(&cluster, "b1");
    archive_everything(&cluster);
    let newer = current(&cluster);
    assert_ne!(newer, older);

    let dest = cluster.root.join("restored");
    let stderr = restore_ok(
        &cluster,
        &dest,
        &["--target-time", &time, "--target-action", "promote"],
    );
    let older_name = older.file_name().unwrap().to_str().unwrap();
    let newer_name = newer.file_name().unwrap().to_str().unwrap();
    let choice = stderr
        .lines()
        .find(|line| line.contains(older_name))
        .unwrap_or_else(|| panic!("stderr does not name {older_name}: {stderr}"));
    assert!(
        choice.contains("before") && choice.contains("target"),
        "the choice without its reason: {stderr}"
    );
    assert!(!choice.contains(newer_name), "{stderr}");
    assert_eq!(
        fs::read_to_string(dest.join("backup_label")).unwrap(),
        backup_label_of(&older)
    );
    let server = start_primary(version, &dest);
    assert_eq!(server.sql(TAGS), "base,a1");
}

/// Switches WAL on `server` and waits until its archiver has archived the segment.
fn switch_and_wait_archived(server: &Server) -> String {
    let segment = server.sql("select pg_walfile_name(pg_switch_wal())");
    server.wait_until(300, &format!("{segment} archived"), |server| {
        harness::archived_by_server(&server.data.join("pg_wal"), &segment)
    });
    segment
}

/// S-8.1, S-4.7: a point-in-time restore promoted (`--target-action promote`) runs on
/// timeline 2 and, its `archive_command` being `pgbak wal %p`, archives into the same
/// `$PGBAK` (the source is gone). A later full restore (no target) from the first directory
/// follows timeline 2 to its end: what timeline 1 wrote after the switch point is not there.
/// (The seed's recipe cannot do this: crash recovery replays only the timeline of the base's
/// checkpoint, so it would bring back timeline 1's `x2` — a chain that spans timelines needs
/// archive recovery with `recovery_target_timeline = 'latest'`, S-4.7.)
fn a_promoted_restore_archives_timeline_2_and_a_later_restore_follows_it(version: PgVersion) {
    let mut cluster = source(version, "timelines");
    let first = current(&cluster);
    insert(&cluster, "x1");
    let time = time_between(&cluster);
    insert(&cluster, "x2-timeline-1-only");
    archive_everything(&cluster);
    cluster.stop();

    let promoted_dest = cluster.root.join("promoted");
    restore_ok(
        &cluster,
        &promoted_dest,
        &["--target-time", &time, "--target-action", "promote"],
    );
    let mut promoted = Server::on(version, &promoted_dest).archiving_like(&cluster);
    promoted.start();
    promoted.wait_until_primary(120);
    assert_eq!(promoted.sql(TAGS), "base,x1");
    let timeline = promoted.sql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)");
    assert_eq!(timeline, "00000002");
    promoted.sql("insert into t(tag) values ('y1-timeline-2')");
    let segment = switch_and_wait_archived(&promoted);
    assert!(segment.starts_with("00000002"), "{segment}");
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    archived_copies(&cluster, &segment);
    let history_archived = fs::read_dir(&cluster.pgbak)
        .unwrap()
        .flatten()
        .any(|dir| dir.path().join("pg_wal/00000002.history.zst").is_file());
    assert!(history_archived, "00000002.history not archived");
    let expected = promoted.sql(EXACT);
    promoted.stop();

    let later = cluster.root.join("later");
    let name = first.file_name().unwrap().to_str().unwrap();
    restore_ok(&cluster, &later, &["--from", name]);
    let server = start_primary(version, &later);
    assert_eq!(server.sql(EXACT), expected);
    assert_eq!(server.sql(TAGS), "base,x1,y1-timeline-2");
}

/// Tags `m1`..`m4`, each in its own archived segment after the base backup; the segments.
fn four_segments_after_the_base(cluster: &Cluster) -> Vec<String> {
    let mut segments = Vec::new();
    for k in 1..=4 {
        insert(cluster, &format!("m{k}"));
        segments.push(cluster.switch_wal_and_wait_archived());
    }
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    segments
}

/// S-8.1 "the WAL chain checked whole before anything is written": a segment deleted from the
/// middle of the chain: exit 1, the missing segment named, DEST not created.
fn a_missing_segment_in_the_middle_is_refused_before_anything_is_written(version: PgVersion) {
    let cluster = source(version, "gap");
    let segments = four_segments_after_the_base(&cluster);
    // A target past the gap: recovery would need the missing segment to reach it.
    let lsn = cluster.sql("select pg_current_wal_lsn()");
    archive_everything(&cluster);
    let missing = &segments[1];
    for copy in archived_copies(&cluster, missing) {
        fs::remove_file(copy).unwrap();
    }

    for (kind, args) in [("full", vec![]), ("lsn", vec!["--target-lsn", &lsn])] {
        let dest = cluster.root.join(format!("restored-{kind}"));
        let stderr = restore_refused(&cluster, &dest, &args);
        assert!(stderr.contains(missing.as_str()), "{kind}: {stderr}");
        assert!(!dest.exists(), "{kind}: {} was created", dest.display());
    }
}

/// S-8.1, S-8.1.1: one flipped bit in a middle `.zst`: a full restore (WAL decompressed up
/// front, each stream checked whole) fails with status 1 naming the segment, and leaves no
/// directory that looks complete.
fn a_damaged_segment_is_refused_when_decompressed_up_front(version: PgVersion) {
    let cluster = source(version, "damaged");
    let segments = four_segments_after_the_base(&cluster);
    let damaged = &segments[1];
    for copy in archived_copies(&cluster, damaged) {
        flip_a_bit(&copy);
    }

    let dest = cluster.root.join("restored");
    let stderr = restore_refused(&cluster, &dest, &[]);
    assert!(stderr.contains(damaged.as_str()), "{stderr}");
    assert!(
        !looks_complete(&dest),
        "a failed restore left {} looking complete",
        dest.display()
    );
}

/// S-8.1.1: damage found only during recovery (the file damaged after `pgbak restore`
/// prepared the directory with a target): `restore-wal` exits above 125, PostgreSQL aborts
/// recovery instead of promoting: the log shows the restore_command failure, the server is
/// not running as a primary, and no new timeline was chosen.
fn damage_found_during_recovery_aborts_instead_of_promoting(version: PgVersion) {
    let cluster = source(version, "late-damage");
    let segments = four_segments_after_the_base(&cluster);
    cluster.sql("select pg_create_restore_point('end')");
    archive_everything(&cluster);
    let damaged = &segments[1];

    let dest = cluster.root.join("restored");
    restore_ok(
        &cluster,
        &dest,
        &["--target-name", "end", "--target-action", "promote"],
    );
    for copy in archived_copies(&cluster, damaged) {
        flip_a_bit(&copy);
    }
    let mut server = Server::on(version, &dest);
    // Started or not (hot standby may accept connections before the damaged segment is
    // requested), the server must end without promoting.
    let _ = server.try_start();
    server.wait_until_stopped(120);
    let log = server.server_log();
    assert!(
        log.contains(&format!(
            "could not restore file \"{damaged}\" from archive"
        )),
        "{log}"
    );
    assert!(!log.contains("selected new timeline ID"), "{log}");
    assert!(!log.contains("archive recovery complete"), "{log}");
    assert_eq!(server.control_timeline(), 1);
    assert!(!server.is_running());
}

/// One 512-byte ustar header (GNU tar and the `tar` crate read it), with its checksum.
fn tar_header(name: &str, kind: u8, size: usize, link: &str) -> [u8; 512] {
    let mut header = [0u8; 512];
    assert!(name.len() <= 100 && link.len() <= 100);
    header[..name.len()].copy_from_slice(name.as_bytes());
    let mode: &[u8] = if kind == b'5' {
        b"0000700\0"
    } else {
        b"0000600\0"
    };
    header[100..108].copy_from_slice(mode);
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[136..148].copy_from_slice(b"14000000000\0");
    header[148..156].copy_from_slice(b"        ");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    header
}

/// A regular file entry: header and content padded to 512 bytes.
fn tar_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut entry = tar_header(name, b'0', content.len(), "").to_vec();
    entry.extend_from_slice(content);
    entry.resize(entry.len().div_ceil(512) * 512, 0);
    entry
}

/// S-8.1 "safe extraction (nothing outside DEST)": copies of a real backup directory whose
/// `base.tzst` starts with a `../` entry, an absolute path, or a symlink escaping DEST and a
/// file written through it: each refused (status 1, the entry named), nothing written
/// outside DEST.
fn crafted_base_archives_write_nothing_outside_dest(version: PgVersion) {
    let cluster = source(version, "crafted");
    let real =
        zstd::decode_all(fs::File::open(current(&cluster).join("base.tzst")).unwrap()).unwrap();
    let outside = cluster.root.join("outside");
    harness::run_ok(harness::as_server_user("mkdir").arg(&outside));
    let absolute = cluster.root.join("escaped-absolute");
    let cases: [(&str, Vec<u8>, &str, PathBuf); 3] = [
        (
            "dotdot",
            tar_file("../escaped-dotdot", b"x"),
            "../escaped-dotdot",
            cluster.root.join("escaped-dotdot"),
        ),
        (
            "absolute",
            tar_file(absolute.to_str().unwrap(), b"x"),
            "escaped-absolute",
            absolute.clone(),
        ),
        (
            "symlink",
            [
                tar_header("escape_link", b'2', 0, outside.to_str().unwrap()).to_vec(),
                tar_file("escape_link/owned", b"x"),
            ]
            .concat(),
            "escape_link",
            outside.join("owned"),
        ),
    ];
    for (kind, evil, entry, escaped) in cases {
        let copy = cluster.root.join(format!("crafted-{kind}"));
        harness::run_ok(
            harness::as_server_user("cp")
                .arg("-a")
                .arg(current(&cluster))
                .arg(&copy),
        );
        let crafted = [evil, real.clone()].concat();
        let base = copy.join("base.tzst");
        fs::write(&base, zstd::encode_all(&crafted[..], 3).unwrap()).unwrap();
        harness::run_ok(Command::new("chown").arg("postgres:").arg(&base));
        // The fixture is what it claims: stock GNU tar reads it, the crafted entry first.
        let listing = harness::run_ok(Command::new("tar").args(["--zstd", "-tvf"]).arg(&base));
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        assert!(
            listing
                .lines()
                .next()
                .is_some_and(|line| line.contains(entry))
                && listing.contains("PG_VERSION"),
            "{kind}: {listing}"
        );

        let dest = cluster.root.join(format!("restored-{kind}"));
        let stderr = restore_refused(&cluster, &dest, &["--from", copy.to_str().unwrap()]);
        assert!(stderr.contains(entry), "{kind}: {stderr}");
        assert!(
            !escaped.exists() && fs::symlink_metadata(&escaped).is_err(),
            "{kind}: {} was written outside DEST",
            escaped.display()
        );
        assert!(!looks_complete(&dest), "{kind}");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

/// Unmounts a test's tmpfs when dropped (also when the test panics).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// S-8.1: DEST must be absent or empty: a DEST with a file in it is refused with one clear
/// line naming it, untouched. DEST on a filesystem too small (a 4 MiB tmpfs): a clear error,
/// no panic, and no half-restored directory left looking complete.
fn dest_not_empty_or_too_small_is_refused_clearly(version: PgVersion) {
    let cluster = source(version, "dest");

    let occupied = cluster.root.join("occupied");
    harness::run_ok(harness::as_server_user("mkdir").arg(&occupied));
    fs::write(occupied.join("keep-me"), "mine").unwrap();
    let stderr = restore_refused(&cluster, &occupied, &[]);
    assert!(stderr.contains(occupied.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
    let left: Vec<_> = fs::read_dir(&occupied).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        fs::read_to_string(occupied.join("keep-me")).unwrap(),
        "mine"
    );

    let small = cluster.root.join("small");
    fs::create_dir(&small).unwrap();
    let uid = harness::run_ok(Command::new("id").args(["-u", "postgres"]));
    let gid = harness::run_ok(Command::new("id").args(["-g", "postgres"]));
    let options = format!(
        "size=4m,mode=0755,uid={},gid={}",
        String::from_utf8_lossy(&uid.stdout).trim(),
        String::from_utf8_lossy(&gid.stdout).trim()
    );
    harness::run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "pgbak-test"])
            .arg(&small),
    );
    let _unmount = Unmount(small.clone());
    let dest = small.join("data");
    let stderr = restore_refused(&cluster, &dest, &[]);
    assert!(
        stderr.to_lowercase().contains("space"),
        "the error must say what ran out: {stderr}"
    );
    assert!(
        !looks_complete(&dest),
        "a failed restore left {} looking complete",
        dest.display()
    );
}

/// S-8.1 `--standby`: `standby.signal` and a `restore_command` of `pgbak restore-wal`; the
/// standby keeps asking for new segments (status 1 at the end of the archive is "not yet"),
/// so what the source archives after it started is replayed.
fn a_standby_follows_segments_archived_after_it_started(version: PgVersion) {
    let cluster = source(version, "standby");
    let dest = cluster.root.join("standby");
    restore_ok(&cluster, &dest, &["--standby"]);
    assert!(dest.join("standby.signal").exists());
    assert!(!dest.join("recovery.signal").exists());
    let mut standby = Server::on(version, &dest);
    standby.start();
    standby.wait_until(120, "the standby consistent", |server| {
        server.try_sql(TAGS).as_deref() == Ok("base")
    });

    insert(&cluster, "late");
    cluster.sql("insert into bulk select g, 'late' from generate_series(2001, 2100) g");
    archive_everything(&cluster);
    let expected = cluster.sql(EXACT);
    standby.wait_until(120, "the standby replayed the new segment", |server| {
        server.try_sql(EXACT).as_deref() == Ok(expected.as_str())
    });
    assert!(standby.in_recovery());
}
