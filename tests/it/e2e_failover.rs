//! End-to-end against a real PostgreSQL 15: a failover into the same `$PGBAK` (S-4.7).
//!
//! A primary archives with pgbak and has its first base backup; a streaming standby built with
//! `pg_basebackup -R` shares its `archive_command` and `$PGBAK`. Rows written on the primary
//! are archived and replayed on the standby; the primary stops, the standby is promoted
//! (timeline 2) and more rows are written and archived. The first WAL file of timeline 2 makes
//! a base backup due at once; until it finishes, `status` says the current directory spans
//! timelines and must be restored by archive recovery (`recovery_target_timeline =
//! 'latest'`) — and that restore brings back every row. The new base backup is held back at
//! first (the configured `pg_basebackup` is a gate that fails until the test opens it); once it
//! has finished, the new current directory restores with the seed's recipe, every row again.

use crate::harness::{self, Cluster};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const ROWS_PER_SERVER: u32 = 200;

/// Polls every 100 ms until `ready` returns a value; panics with `context()` after `seconds`.
fn poll<T>(
    seconds: u32,
    what: &str,
    mut ready: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    for _ in 0..seconds * 10 {
        if let Some(value) = ready() {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {seconds} s; {}", context());
}

fn rows(cluster: &Cluster) -> u32 {
    cluster.sql("select count(*) from t").parse().unwrap()
}

fn insert_rows(cluster: &Cluster, first: u32) {
    cluster.sql(&format!(
        "insert into t select g, md5(g::text) from generate_series({first}, {}) g",
        first + ROWS_PER_SERVER - 1
    ));
}

fn human_status(cluster: &Cluster) -> String {
    let output = cluster.pgbak(&["status"]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn has_problem(status: &serde_json::Value, code: &str) -> bool {
    status["problems"]
        .as_array()
        .is_some_and(|problems| problems.iter().any(|problem| problem["code"] == code))
}

/// The `base backup  due now (REASON)` line of the human status, if there is one.
fn due_line(human: &str) -> Option<&str> {
    human
        .lines()
        .find(|line| line.starts_with("base backup") && line.contains("due now"))
}

#[test]
fn after_a_failover_the_spanning_directory_restores_by_archive_recovery_and_the_new_base_by_the_recipe()
 {
    let started = std::time::Instant::now();
    // Base backups go through a gate the test opens and closes: `pg_basebackup` while
    // `out/base-backups-allowed` exists, exit 1 otherwise. Retries come quickly (1 to 2 s),
    // and the WAL ratio never makes a base backup due (only the timeline may).
    let mut primary = Cluster::new("failover", "", "");
    let allowed = primary.root.join("out/base-backups-allowed");
    let gate = primary.root.join("bin/pg_basebackup-gate");
    fs::write(
        &gate,
        format!(
            "#!/bin/sh\n[ -e {} ] || {{ echo 'base backups held by the test' >&2; exit 1; }}\n\
             exec {}/pg_basebackup \"$@\"\n",
            allowed.display(),
            harness::BIN
        ),
    )
    .unwrap();
    fs::set_permissions(&gate, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        primary.pgbak.join("config.toml"),
        format!(
            "[base]\nmax_wal_ratio = 1000.0\nretry_delay_min_seconds = 1\n\
             retry_delay_max_seconds = 2\n\n\
             [pg_basebackup]\npath = \"{}\"\nextra_args = [\"--checkpoint=fast\"]\n",
            gate.display()
        ),
    )
    .unwrap();
    fs::write(&allowed, "").unwrap();

    // --- The primary and its first base backup. ---
    primary.start();
    primary.sql("create table t(i int primary key, filler text)");
    primary.switch_wal_and_wait_archived();
    let (code, stderr) = primary.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let first = primary.status()["current"]
        .as_str()
        .expect("a current directory after the first base backup")
        .to_owned();

    // --- A standby of it; rows written on the primary are archived and replayed there. ---
    let mut standby = Cluster::standby_of(&primary, "failover-standby");
    standby.start();
    assert_eq!(standby.sql("select pg_is_in_recovery()"), "t");
    insert_rows(&primary, 1);
    primary.switch_wal_and_wait_archived();
    let (code, stderr) = primary.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    poll(
        60,
        "the standby replays the primary's rows",
        || (rows(&standby) == ROWS_PER_SERVER).then_some(()),
        || format!("{} rows on the standby", rows(&standby)),
    );

    // --- Failover: the primary stops, the standby is promoted and writes. ---
    fs::remove_file(&allowed).unwrap();
    primary.stop();
    // No sync started by the primary's archiving (with its PGHOST) may remain.
    let (code, stderr) = primary.wait(60);
    assert_eq!(code, Some(0), "{stderr}");
    standby.promote();
    assert_eq!(standby.sql("select pg_is_in_recovery()"), "f");
    let timeline = standby.sql("select timeline_id from pg_control_checkpoint()");
    insert_rows(&standby, ROWS_PER_SERVER + 1);
    assert_eq!(rows(&standby), 2 * ROWS_PER_SERVER);
    let switched = standby.switch_wal_and_wait_archived();
    assert!(
        switched.starts_with("00000002"),
        "{switched} (checkpoint timeline {timeline})"
    );

    // --- A base backup is due at once because of the new timeline (its attempts fail at the
    // gate); until one finishes, status says the current directory spans timelines. ---
    let (status, human) = poll(
        30,
        "status reports the new timeline",
        || {
            let status = standby.status();
            let human = human_status(&standby);
            let due = status["base_backup"]["due"].as_str().unwrap_or_default();
            (due.contains("timeline")
                && has_problem(&status, "spans_timelines")
                && human.contains("spans timelines")
                && human.contains("recovery_target_timeline = 'latest'")
                && due_line(&human).is_some_and(|line| line.contains("timeline")))
            .then_some((status, human))
        },
        || {
            format!(
                "status --json: {}\nstatus:\n{}",
                standby.status(),
                human_status(&standby)
            )
        },
    );
    eprintln!("while the current directory spans timelines:\n{human}");
    assert_eq!(status["current"], first.as_str(), "{status}");
    // The sync tried it at once: its attempts reached the gate.
    poll(
        30,
        "a base backup attempt reaches the gate",
        || {
            let status = standby.status();
            (status["base_backup"]["consecutive_failures"].as_u64() >= Some(1)
                && status["base_backup"]["last_failure"]["output"]
                    .as_str()
                    .is_some_and(|output| output.contains("base backups held by the test")))
            .then_some(())
        },
        || format!("status --json: {}", standby.status()),
    );

    // (a) The spanning directory, restored by archive recovery: every row.
    let spanning = primary.pgbak.join(&first);
    let restored = harness::restore_by_archive_recovery_and_query(
        &spanning,
        &primary.root.join("restore-spanning"),
        &primary.socket,
        harness::next_port(),
        "select count(*) from t",
    );
    assert_eq!(
        restored,
        (2 * ROWS_PER_SERVER).to_string(),
        "archive recovery of {first}"
    );

    // --- The gate opens: the due base backup is taken from the promoted server. ---
    fs::write(&allowed, "").unwrap();
    // `sync` waits for a running sync first (whose next retry now succeeds), then runs one
    // itself: a sync that had ended takes the due base backup here.
    let output = standby.pgbak(&["sync"]);
    assert!(output.status.success(), "pgbak sync: {output:?}");
    let (code, stderr) = standby.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let status = standby.status();
    let second = status["current"].as_str().unwrap_or_default().to_owned();
    assert!(
        !second.is_empty() && second != first,
        "a new current directory after the base backup: {status}"
    );
    assert!(!has_problem(&status, "spans_timelines"), "{status}");
    // The old directory keeps its note for whoever restores it, but it is no longer a problem.
    let human = human_status(&standby);
    let problems = human.split("\nproblems").nth(1).unwrap_or_default();
    assert!(!problems.contains("spans timelines"), "{human}");
    assert_eq!(status["everything_shipped"], true, "{status}");

    // (b) The new current directory, restored with the seed's recipe: every row.
    standby.stop();
    let restored = harness::restore_and_query(
        &primary.pgbak.join(&second),
        &primary.root.join("restore-new-base"),
        &primary.socket,
        harness::next_port(),
        "select count(*) from t",
    );
    assert_eq!(
        restored,
        (2 * ROWS_PER_SERVER).to_string(),
        "seed recipe restore of {second}"
    );
    eprintln!("failover scenario: {:?}", started.elapsed());
}
