//! End-to-end against a real PostgreSQL 15 (S-8.3): with `retention.keep_bases = 2`, pgbench
//! runs through four base backups (`pgbak sync --base` three times under load); the syncs prune
//! as they go, so exactly the two newest directories remain, oldest deleted first, each prune
//! recorded, nothing left moved aside, and `scripts/prune` told each pruned name. Every kept
//! directory still restores with `pgbak restore DEST --from NAME`: the current one to exactly
//! the final source, the sealed one to a consistent earlier point (pgbench's TPC-B invariants
//! hold) that includes the marker committed before its successor's base backup.

use crate::harness::{self, Cluster, PgVersion, Server};
use std::sync::atomic::{AtomicBool, Ordering};

const EXACT: &str = "select \
    (select count(*) || ',' || sum(abalance) from pgbench_accounts) \
    || '|' || (select count(*) || ',' || coalesce(sum(delta), 0) from pgbench_history) \
    || '|' || (select string_agg(id || ',' || history_count, ';' order by id) from marker)";

/// TPC-B: at any consistent point the four sums agree; then the markers present.
const INVARIANT: &str = "select \
    (select sum(abalance) from pgbench_accounts) \
    || ':' || (select sum(bbalance) from pgbench_branches) \
    || ':' || (select sum(tbalance) from pgbench_tellers) \
    || ':' || (select coalesce(sum(delta), 0) from pgbench_history) \
    || '|' || (select string_agg(id::text, ',' order by id) from marker)";

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn current(cluster: &Cluster) -> String {
    let status = cluster.status();
    status["current"]
        .as_str()
        .unwrap_or_else(|| panic!("no current directory: {status}"))
        .to_owned()
}

/// `pgbak restore DEST --from NAME`, then the restored server started and `query` run on it.
fn restore_and_query(cluster: &Cluster, name: &str, query: &str) -> String {
    let dest = cluster.root.join(format!("restored-{name}"));
    let output = cluster.pgbak(&["restore", dest.to_str().unwrap(), "--from", name]);
    assert!(
        output.status.success(),
        "pgbak restore --from {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut server = Server::on(PgVersion::V15, &dest);
    server.start();
    server.sql(query)
}

#[test]
fn retention_keeps_two_bases_under_load_and_every_kept_directory_restores() {
    let config = "[base]\nmax_wal_ratio = 1000.0\n\n\
                  [pg_basebackup]\nextra_args = [\"--checkpoint=fast\"]\n\n\
                  [retention]\nkeep_bases = 2\n";
    let label = "retention";
    let pruned_log = harness::root_for(label).join("pruned.log");
    let mut cluster = Cluster::new(label, config, "");
    crate::util::executable(
        &cluster.pgbak.join("scripts/prune"),
        &format!(
            "[ \"$(pwd)\" = \"$PGBAK\" ] || exit 3\necho \"$1\" >> {}\n",
            pruned_log.display()
        ),
    );
    assert!(pruned_log.starts_with(&cluster.root));
    harness::run_ok(
        std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&cluster.root),
    );

    cluster.start();
    cluster.pgbench(&["-i", "-s", "2", "-q"]);
    cluster.sql("create table marker(id int primary key, history_count bigint not null)");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");
    let mut bases = vec![current(&cluster)];

    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let _stop_on_panic = StopOnDrop(&stop);
        let load = scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                cluster.pgbench(&["-n", "-c", "2", "-j", "2", "-T", "3"]);
            }
        });
        for round in 1..=3 {
            cluster.sql(&format!(
                "insert into marker select {round}, count(*) from pgbench_history"
            ));
            cluster.switch_wal_and_wait_archived();
            let based = cluster.pgbak(&["sync", "--base"]);
            assert!(
                based.status.success(),
                "sync --base {round}: {}",
                String::from_utf8_lossy(&based.stderr)
            );
            bases.push(current(&cluster));
        }
        stop.store(true, Ordering::SeqCst);
        load.join().unwrap();
    });
    cluster.sql("insert into marker select 4, count(*) from pgbench_history");
    cluster.switch_wal_and_wait_archived();
    let (code, stderr) = cluster.wait(120);
    assert_eq!(code, Some(0), "{stderr}");

    let status = cluster.status();
    let kept: Vec<String> = status["directories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, bases[2..], "{status}");
    assert_eq!(status["retention"]["pruned_count"], 2, "{status}");
    assert!(
        status["retention"]["would_delete"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for (name, gone) in bases[..2]
        .iter()
        .map(|n| (n, !cluster.pgbak.join(n).exists()))
    {
        assert!(gone, "{name} was not deleted");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&cluster.pgbak)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".pruning-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let told = std::fs::read_to_string(&pruned_log).unwrap();
    assert_eq!(told.lines().collect::<Vec<_>>(), [&bases[0], &bases[1]]);

    let source = cluster.sql(EXACT);
    cluster.stop();
    assert_eq!(restore_and_query(&cluster, &bases[3], EXACT), source);
    let sealed = restore_and_query(&cluster, &bases[2], INVARIANT);
    let (sums, markers) = sealed.split_once('|').unwrap();
    let sums: Vec<&str> = sums.split(':').collect();
    assert!(sums.windows(2).all(|pair| pair[0] == pair[1]), "{sealed}");
    // The sealed directory's WAL reaches at least the marker archived before its successor's
    // base backup (round 3).
    assert!(markers.starts_with("1,2,3"), "{sealed}");
}
