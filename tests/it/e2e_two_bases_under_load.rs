//! End-to-end against a real PostgreSQL 15: under a pgbench
//! TPC-B load, a second base backup forced mid-load with `pgbak sync --base` (S-4.2, S-4.3)
//! leaves two restorable directories — the first sealed, the second current (S-4.1) — and
//! `wait` exits 0 once everything archived has been shipped (S-6.3). Each directory, and the
//! offsite copy the backup script made of each (S-5.1, S-5.2), is restored alone with exactly
//! the seed's recipe:
//!
//! - the current directory restores to exactly the final source (row counts and checksums of
//!   every pgbench table, and a table written after the last base backup);
//! - the sealed directory holds WAL only up to when it was sealed (S-2.7: WAL goes into open
//!   directories only), so it restores to an earlier, consistent point: pgbench's TPC-B
//!   invariants hold, a marker committed and archived before the second base backup is there,
//!   the history lies between the marker's count and the final count, and the table written
//!   after the second base backup is absent.

use crate::harness::{self, Cluster};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The exact state of the source: every pgbench table's count and a checksum over its
/// contents, the marker, and the table written after the last base backup.
const EXACT: &str = "select \
    (select count(*) || ',' || sum(hashtext(aid::text || ':' || abalance::text)) \
       from pgbench_accounts) \
    || '|' || (select count(*) || ',' || sum(bbalance) || ',' \
       || sum(hashtext(bid::text || ':' || bbalance::text)) from pgbench_branches) \
    || '|' || (select count(*) || ',' || sum(tbalance) || ',' \
       || sum(hashtext(tid::text || ':' || tbalance::text)) from pgbench_tellers) \
    || '|' || (select count(*) || ',' || coalesce(sum(delta), 0) || ',' \
       || coalesce(sum(hashtext(tid || ':' || bid || ':' || aid || ':' || delta || ':' \
       || mtime)), 0) from pgbench_history) \
    || '|' || (select string_agg(id || ',' || history_count, ';') from marker) \
    || '|' || (select count(*) || ',' || sum(j) from after_base)";

/// What an earlier, consistent point must show: `accounts count:sum(abalance):sum(bbalance):
/// sum(tbalance):sum(delta):history count:marker's history count:after_base absent`.
const EARLIER: &str = "select \
    (select count(*) from pgbench_accounts) \
    || ':' || (select sum(abalance) from pgbench_accounts) \
    || ':' || (select sum(bbalance) from pgbench_branches) \
    || ':' || (select sum(tbalance) from pgbench_tellers) \
    || ':' || (select coalesce(sum(delta), 0) from pgbench_history) \
    || ':' || (select count(*) from pgbench_history) \
    || ':' || coalesce((select history_count::text from marker where id = 1), 'none') \
    || ':' || (to_regclass('after_base') is null)";

/// Sets the flag when dropped: stops the background load also when the test panics (a scoped
/// thread is joined before the panic propagates, so it must be able to finish).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Restores `backup` into `cluster.root/NAME` with the seed's recipe (the source server must be
/// stopped: the restored one uses its port) and runs `query` on it.
fn restore(cluster: &Cluster, backup: &Path, name: &str, query: &str) -> String {
    let target = cluster.root.join(name);
    harness::restore_and_query(backup, &target, &cluster.socket, cluster.port, query)
}

fn history_count(cluster: &Cluster) -> u64 {
    cluster
        .sql("select count(*) from pgbench_history")
        .parse()
        .unwrap()
}

/// Polls (100 ms) until pgbench_history has more than `than` rows; panics after `seconds`.
fn wait_for_history_above(cluster: &Cluster, than: u64, seconds: u32) -> u64 {
    for _ in 0..seconds * 10 {
        let count = history_count(cluster);
        if count > than {
            return count;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("pgbench_history did not pass {than} rows within {seconds} s");
}

/// The `kind` column of `pgbak status --journal` for every record.
fn journal_kinds(cluster: &Cluster) -> Vec<String> {
    let output = cluster.pgbak(&["status", "--journal"]);
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// The sealed directory's restore, parsed and checked against what must hold at any earlier
/// consistent point after the marker; returns its history count. `at_seal_or_later`: the
/// history count seen after `sync --base` returned, so after the first directory was sealed.
fn check_earlier_point(
    restored: &str,
    at_seal_or_later: u64,
    final_history: u64,
    what: &str,
) -> u64 {
    let fields: Vec<&str> = restored.split(':').collect();
    assert_eq!(fields.len(), 8, "{what}: {restored}");
    // pgbench -i -s 5: 500,000 accounts, never inserted into or deleted from by TPC-B.
    assert_eq!(fields[0], "500000", "{what}: {restored}");
    // TPC-B: every transaction adds the same delta to one account, teller and branch and
    // inserts it into the history, in one transaction: the four sums are equal at any
    // consistent point.
    assert_eq!(
        fields[1], fields[2],
        "{what}: accounts vs branches: {restored}"
    );
    assert_eq!(
        fields[1], fields[3],
        "{what}: accounts vs tellers: {restored}"
    );
    assert_eq!(
        fields[1], fields[4],
        "{what}: accounts vs history: {restored}"
    );
    let history: u64 = fields[5].parse().unwrap();
    let marker: u64 = fields[6]
        .parse()
        .unwrap_or_else(|_| panic!("{what}: the archived marker is missing: {restored}"));
    assert!(
        marker <= history,
        "{what}: history {history} below the marker's {marker}: {restored}"
    );
    // The sealed directory received no WAL after it was sealed: every transaction in it had
    // committed before `sync --base` returned. The load went on after that (the test made
    // sure), so strictly fewer than the final count.
    assert!(
        history <= at_seal_or_later && at_seal_or_later < final_history,
        "{what}: history {history}, seen after the seal {at_seal_or_later}, final \
         {final_history}: {restored}"
    );
    assert_eq!(
        fields[7], "true",
        "{what}: the table written after the second base backup is there: {restored}"
    );
    history
}

#[test]
fn second_base_backup_under_load_then_restore_each_directory_locally_and_offsite() {
    // `--checkpoint=fast`: a spread checkpoint makes each base backup take ~50 s. The WAL
    // ratio is raised so that pgbench's WAL makes no base backup due (S-4.2): exactly the two
    // this test asks for are taken.
    let config = "[base]\nmax_wal_ratio = 1000.0\n\n\
                  [pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n";
    let label = "twobases";
    let offsite = harness::root_for(label).join("offsite");
    let script = format!(
        "set -e\nmkdir -p {0}/pg-$1 && cp -r ./. {0}/pg-$1/\n",
        offsite.display()
    );
    let mut cluster = Cluster::new(label, config, &script);
    assert!(offsite.starts_with(&cluster.root));

    cluster.start();
    cluster.pgbench(&["-i", "-s", "5", "-q"]);
    cluster.sql("create table marker(id int primary key, history_count bigint not null)");
    // The first base backup (the seed's "restart postgres and call pg_switch_wal()").
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let first = cluster.status()["current"]
        .as_str()
        .expect("a current directory after the first base backup")
        .to_owned();

    // The load: pgbench runs of 5 s, one after another, until the test has seen transactions
    // commit after the second base backup finished — so "mid-load" holds however slow the
    // machine is. `-n`: no vacuum, and above all no truncation of pgbench_history, which
    // pgbench otherwise does at the start of each run and which would break the invariants.
    let stop = AtomicBool::new(false);
    let (marker_count, after_second_base, sync_base_stderr) = std::thread::scope(|scope| {
        let _stop_on_panic = StopOnDrop(&stop);
        let load = scope.spawn(|| {
            let mut runs = 0u32;
            while !stop.load(Ordering::SeqCst) {
                cluster.pgbench(&["-n", "-c", "2", "-j", "2", "-T", "5"]);
                runs += 1;
            }
            runs
        });

        // A marker committed under load, recording the history count it saw, then archived.
        wait_for_history_above(&cluster, 0, 120);
        cluster.sql("insert into marker select 1, count(*) from pgbench_history");
        let marker_count: u64 = cluster
            .sql("select history_count from marker where id = 1")
            .parse()
            .unwrap();
        cluster.switch_wal_and_wait_archived();

        // `sync --base` in the foreground, as a separate process: it waits for the background
        // sync that `pgbak wal` keeps starting (S-6.1), then takes the base backup while WAL
        // keeps arriving into both directories (S-2.7), and returns when everything is done.
        let output = cluster.pgbak(&["sync", "--base"]);
        let sync_base_stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "sync --base: {:?}: {sync_base_stderr}",
            output.status
        );
        let after_second_base = history_count(&cluster);
        // Transactions committed after the second base backup became current.
        wait_for_history_above(&cluster, after_second_base + 200, 300);

        stop.store(true, Ordering::SeqCst);
        let runs = load.join().expect("the pgbench load failed");
        assert!(runs >= 1);
        (marker_count, after_second_base, sync_base_stderr)
    });
    println!("sync --base stderr:\n{sync_base_stderr}");
    assert!(marker_count > 0, "the marker was taken under load");
    assert!(after_second_base >= marker_count);

    // Written after the last base backup, then archived and shipped.
    cluster.sql("create table after_base as select g as j from generate_series(1, 5000) g");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");

    // Two directories: the first sealed, the second current; both complete and shipped.
    let status = cluster.status();
    let directories = status["directories"].as_array().unwrap();
    assert_eq!(directories.len(), 2, "{status}");
    assert_eq!(directories[0]["name"], first.as_str(), "{status}");
    assert_eq!(directories[0]["state"], "sealed", "{status}");
    assert_eq!(directories[1]["state"], "current", "{status}");
    let second = directories[1]["name"].as_str().unwrap().to_owned();
    assert!(second > first, "{status}");
    assert_eq!(status["current"], second.as_str(), "{status}");
    assert_eq!(status["current_link"], second.as_str(), "{status}");
    assert_eq!(status["everything_shipped"], true, "{status}");
    assert_eq!(status["base_backup"]["consecutive_failures"], 0, "{status}");
    for directory in directories {
        assert!(directory["base_bytes"].as_u64().unwrap() > 0, "{status}");
        assert_eq!(directory["unshipped_changes"], 0, "{status}");
        assert_eq!(directory["wal_gaps"], serde_json::json!([]), "{status}");
        assert!(directory["shipped_through"].is_string(), "{status}");
    }
    // The sealed directory stopped receiving WAL when it was sealed; while the second base
    // backup ran, WAL went into both (so the second's first segment is not after the first's
    // last), and the second received everything since.
    let first_last = directories[0]["last_wal"].as_str().unwrap();
    let second_first = directories[1]["first_wal"].as_str().unwrap();
    let second_last = directories[1]["last_wal"].as_str().unwrap();
    assert!(second_first <= first_last, "{status}");
    assert!(first_last < second_last, "{status}");
    let kinds = journal_kinds(&cluster);
    let count = |kind: &str| kinds.iter().filter(|k| k.as_str() == kind).count();
    assert_eq!(count("BaseBackupFinished"), 2, "{kinds:?}");
    assert_eq!(count("BaseBackupFailed"), 0, "{kinds:?}");
    assert_eq!(count("SyncAbandoned"), 0, "{kinds:?}");

    let expected = cluster.sql(EXACT);
    let final_history = history_count(&cluster);
    assert!(final_history > after_second_base + 200);
    let source_earlier = cluster.sql(EARLIER);
    println!("source: {expected}\nsource invariants: {source_earlier}");
    cluster.stop();

    // Scenario b: each local directory alone.
    let local_second = restore(
        &cluster,
        &cluster.pgbak.join(&second),
        "restore-second",
        EXACT,
    );
    assert_eq!(local_second, expected, "restore from the current {second}");
    let local_first = restore(
        &cluster,
        &cluster.pgbak.join(&first),
        "restore-first",
        EARLIER,
    );
    let restored_history = check_earlier_point(
        &local_first,
        after_second_base,
        final_history,
        &format!("sealed {first}"),
    );
    println!(
        "sealed {first} restores to {restored_history} transactions (marker {marker_count}, \
         {after_second_base} when the second base backup was done, final {final_history})"
    );

    // Scenario c: the offsite copies the script made, each alone: the same results.
    let offsite_second = restore(
        &cluster,
        &offsite.join(format!("pg-{second}")),
        "restore-offsite-second",
        EXACT,
    );
    assert_eq!(offsite_second, expected, "restore from offsite pg-{second}");
    let offsite_first = restore(
        &cluster,
        &offsite.join(format!("pg-{first}")),
        "restore-offsite-first",
        EARLIER,
    );
    assert_eq!(
        offsite_first, local_first,
        "restore from offsite pg-{first} vs the local {first}"
    );
    check_earlier_point(
        &offsite_first,
        after_second_base,
        final_history,
        &format!("offsite pg-{first}"),
    );
}
