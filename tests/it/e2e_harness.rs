//! The end-to-end harness itself against a real PostgreSQL 15: its waits must rest on what
//! PostgreSQL records exactly, not on what merely happens to be true most of the time.
//!
//! `Cluster::switch_wal_and_wait_archived` once compared the switched segment's name with
//! `pg_stat_archiver.last_archived_wal`. That column names the file archived *last*, which may
//! be the backup history file of an earlier segment (`…03.00157EE0.backup` sorts before `…04`):
//! `pg_backup_stop` switches WAL first and writes the history file after, so the archiver can
//! take the switched segment in one directory scan and the history file in the next. The test
//! below builds exactly that order with an `archive_command` that holds chosen files, instead of
//! waiting for the race, and the helper must still see its segment archived.

use crate::harness::{self, Cluster};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::Duration;

/// Polls `ready` every 50 ms; panics after `seconds`.
fn poll(seconds: u32, what: &str, ready: impl Fn() -> bool) {
    for _ in 0..seconds * 20 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {seconds} s");
}

/// A psql session kept open (a non-exclusive base backup lives as long as its session);
/// each step ends by touching a marker file so the test knows psql got that far.
struct Session {
    psql: Child,
    markers: std::path::PathBuf,
}

impl Session {
    fn open(cluster: &Cluster) -> Session {
        let psql = harness::as_server_user(&format!("{}/psql", harness::BIN))
            .arg("-h")
            .arg(&cluster.socket)
            .args([
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "-q",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Session {
            psql,
            markers: cluster.root.join("out"),
        }
    }

    /// Runs `statement` in the session and waits until it finished.
    fn run(&mut self, statement: &str, marker: &str) {
        let marker_path = self.markers.join(marker);
        let stdin = self.psql.stdin.as_mut().unwrap();
        writeln!(stdin, "{statement}\n\\! touch {}", marker_path.display()).unwrap();
        stdin.flush().unwrap();
        poll(30, statement, || marker_path.exists());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.psql.stdin.take());
        let _ = self.psql.wait();
    }
}

#[test]
fn a_backup_history_file_of_an_earlier_segment_archived_last_does_not_hide_the_switched_segment() {
    let mut cluster = Cluster::new("harness", "", "");
    // The archive_command: records that it was called for a file, holds it while
    // `hold/NAME` exists, then copies it (pgbak is not needed to test the harness's wait).
    let hold = cluster.root.join("hold");
    let seen = cluster.root.join("seen");
    let archive = cluster.root.join("archive");
    for directory in [&hold, &seen, &archive] {
        fs::create_dir_all(directory).unwrap();
    }
    let wrapper = cluster.root.join("bin/archive");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntouch {seen}/\"$2\"\nwhile [ -e {hold}/\"$2\" ]; do sleep 0.05; done\n\
             exec cp \"$1\" {archive}/\"$2\"\n",
            seen = seen.display(),
            hold = hold.display(),
            archive = archive.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(cluster.data.join("postgresql.conf"))
        .unwrap();
    writeln!(conf, "archive_command = '{} %p %f'", wrapper.display()).unwrap();
    drop(conf);
    harness::run_ok(
        std::process::Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(&cluster.root),
    );
    cluster.start();
    let archived = |name: &str| archive.join(name).is_file();

    // A base backup starts in segment J; J is switched and archived.
    let mut session = Session::open(&cluster);
    session.run("select pg_backup_start('harness', true);", "started");
    let j = cluster.sql("select pg_walfile_name(pg_switch_wal())");
    poll(30, "J archived", || archived(&j));
    // WAL in segment K (so that switching it is not a no-op); K and K+1 are held.
    cluster.sql("create table t as select g from generate_series(1, 1000) g");
    let k = cluster.sql("select pg_walfile_name(pg_current_wal_lsn())");
    let k_next = cluster.sql("select pg_walfile_name(pg_current_wal_lsn() + 16777216)");
    assert!(j < k && k < k_next, "{j} {k} {k_next}");
    fs::write(hold.join(&k), "").unwrap();
    fs::write(hold.join(&k_next), "").unwrap();

    // The helper switches K and waits; the archiver holds K.
    let waiting = {
        let cluster = &cluster;
        std::thread::scope(|scope| {
            let helper = scope.spawn(move || cluster.switch_wal_and_wait_archived_within(20));
            poll(30, "the archiver is on K", || seen.join(&k).exists());
            // The backup ends: its end record goes into K+1, which is switched (and held),
            // then J's history file is written and marked ready.
            session.run("select * from pg_backup_stop(false);", "stopped");
            let history = fs::read_dir(cluster.data.join("pg_wal"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .find(|name| name.starts_with(&j) && name.ends_with(".backup"))
                .expect("the backup history file");
            // K is archived; the next directory scan finds J's history file before K+1 (held):
            // J's history file is what PostgreSQL archived last.
            fs::remove_file(hold.join(&k)).unwrap();
            poll(30, "J's history file archived", || archived(&history));
            poll(30, "the archiver is on K+1", || seen.join(&k_next).exists());
            let last = cluster.sql("select last_archived_wal from pg_stat_archiver");
            assert_eq!(last, history, "pg_stat_archiver.last_archived_wal");
            assert!(last < k, "{last} sorts after {k}");
            let waiting = helper.join();
            fs::remove_file(hold.join(&k_next)).unwrap();
            waiting
        })
    };
    match waiting {
        Ok(segment) => assert_eq!(segment, k),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
