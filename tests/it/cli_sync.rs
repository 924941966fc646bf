//! `pgbak sync`, `force-sync` and `wait` through the real binary (S-4.5, S-5, S-6), without
//! PostgreSQL: `pg_basebackup` is a shell script that writes a small tar to stdout (the config
//! points `pg_basebackup.path` at it), and WAL is archived through the library exactly as
//! `pgbak wal` records it (the file in every target directory, then the journal record), so no
//! background sync starts behind a test's back.
//!
//! The backup scripts log every run to `$TEST_OUT/runs` as `EPOCH PWD $1 $2 $PGBAK`; the tests
//! check what the scripts saw and what the journal recorded. Nothing asserts how long anything
//! took, except lower bounds the machine guarantees (the backoff between retries); every wait
//! has a generous limit only so a bug cannot hang the test run.

use pgbak::home::environment::PgbakHome;
use pgbak::home::journal_file;
use pgbak::journal::Record;
use pgbak::machine::{Event, SyncStopReason, archive_targets};
use pgbak::os::clock;
use pgbak::sync::lock;
use pgbak::timestamp::DirectoryName;
use pgbak::wal_name::WalFileName;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{executable, has_ended as process_is_dead, unique_temp_path};

/// Only so a bug cannot hang the test run; never a statement about speed.
const GENEROUS: Duration = Duration::from_secs(180);

/// A scratch world: `$PGBAK`, a fake PostgreSQL data directory for the fake `pg_basebackup`,
/// and `out/` where scripts leave what they saw. Removed on drop, after killing any process
/// whose pid a script left in `out/*.pid`.
struct Fixture {
    root: PathBuf,
    pgbak: PathBuf,
    out: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        Fixture::with_config(name, "")
    }

    /// `extra_config` is appended to `config.toml` (after the `[pg_basebackup]` section).
    fn with_config(name: &str, extra_config: &str) -> Fixture {
        let root = unique_temp_path(&format!("sync-{name}"));
        let _ = fs::remove_dir_all(&root);
        let private = |path: &Path| {
            fs::DirBuilder::new().mode(0o700).create(path).unwrap();
        };
        private(&root);
        let pgbak = root.join("pgbak");
        let out = root.join("out");
        let data = root.join("data");
        private(&pgbak);
        private(&pgbak.join("scripts"));
        private(&out);
        private(&data);
        fs::write(data.join("PG_VERSION"), "17\n").unwrap();
        let fixture = Fixture { root, pgbak, out };
        // Succeeds unless $TEST_OUT/basebackup-failures says how many calls fail first; a
        // failure prints $TEST_OUT/basebackup-error, else a server that refuses the backup.
        let program = fixture.executable(
            &fixture.root.join("fake_pg_basebackup.sh"),
            "n=$(cat \"$TEST_OUT/basebackups\" 2>/dev/null || echo 0); n=$((n+1))\n\
             echo $n > \"$TEST_OUT/basebackups\"\n\
             if [ $n -le \"$(cat \"$TEST_OUT/basebackup-failures\" 2>/dev/null || echo 0)\" ]; then\n\
             cat \"$TEST_OUT/basebackup-error\" >&2 2>/dev/null || echo 'pg_basebackup: error: \
             could not initiate base backup: ERROR:  number of requested standby connections \
             exceeds max_wal_senders (currently 0)' >&2\n\
             exit 1\nfi\n\
             exec tar -C \"$TEST_OUT/../data\" -cf - .\n",
        );
        fs::write(
            fixture.pgbak.join("config.toml"),
            format!(
                "[pg_basebackup]\npath = \"{}\"\n{extra_config}",
                program.display()
            ),
        )
        .unwrap();
        fixture
    }

    fn home(&self) -> PgbakHome {
        PgbakHome {
            path: self.pgbak.clone(),
            owner_uid: fs::metadata(&self.pgbak).unwrap().uid(),
        }
    }

    fn executable(&self, path: &Path, body: &str) -> PathBuf {
        executable(path, body);
        path.to_path_buf()
    }

    /// Writes `$PGBAK/scripts/backup`: it logs its run, then runs `body`.
    fn script(&self, body: &str) {
        self.executable(
            &self.pgbak.join("scripts/backup"),
            &format!(
                "echo \"$(date +%s.%N) $PWD $1 $2 $PGBAK\" >> \"$TEST_OUT/runs\"\n\
                 n=$(cat \"$TEST_OUT/count\" 2>/dev/null || echo 0); n=$((n+1))\n\
                 echo $n > \"$TEST_OUT/count\"\n{body}"
            ),
        );
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgbak"));
        command
            .args(args)
            .env("PGBAK", &self.pgbak)
            .env("TEST_OUT", &self.out)
            .stdin(Stdio::null());
        command
    }

    /// [`Fixture::command`] with the wall clock shifted by libfaketime as `out/clock` says
    /// (`+0` at first; write `-86400` to step it back a day while pgbak runs). The monotonic
    /// clock is left alone, as a real clock step leaves it.
    fn command_with_faked_clock(&self, args: &[&str]) -> Command {
        let clock = self.out.join("clock");
        if !clock.exists() {
            fs::write(&clock, "+0\n").unwrap();
        }
        let mut command = self.command(args);
        command
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        command
    }

    /// Steps the faked wall clock of [`Fixture::command_with_faked_clock`] to `offset` (libfaketime
    /// syntax: `-86400` is a day back), atomically so pgbak never reads half a file.
    fn step_clock(&self, offset: &str) {
        let next = self.out.join("clock.next");
        fs::write(&next, format!("{offset}\n")).unwrap();
        fs::rename(&next, self.out.join("clock")).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `pgbak wait TIMEOUT`, which must exit with `code`; its stderr.
    fn wait_exits(&self, timeout: &str, code: i32) -> String {
        let wait = self.run(&["wait", timeout]);
        let stderr = text(&wait.stderr);
        assert_eq!(exit_code(&wait), Some(code), "{stderr}");
        stderr
    }

    /// Starts pgbak with stdout and stderr in `out/LABEL.stdout`/`.stderr` (files, not pipes:
    /// a long-running sync must never block on a pipe nobody reads).
    fn spawn(&self, label: &str, args: &[&str]) -> Child {
        let stdout = fs::File::create(self.out.join(format!("{label}.stdout"))).unwrap();
        let stderr = fs::File::create(self.out.join(format!("{label}.stderr"))).unwrap();
        self.command(args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    fn stderr_of(&self, label: &str) -> String {
        fs::read_to_string(self.out.join(format!("{label}.stderr"))).unwrap_or_default()
    }

    fn sync_log(&self) -> String {
        fs::read_to_string(self.pgbak.join("sync.log")).unwrap_or_default()
    }

    /// Waits for a spawned pgbak to exit.
    fn wait_exit(&self, child: &mut Child, label: &str) -> ExitStatus {
        self.wait_exit_within(child, label, GENEROUS)
    }

    /// Waits for a spawned pgbak to exit; kills it and fails the test after `limit`.
    fn wait_exit_within(&self, child: &mut Child, label: &str, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{label} did not exit\nstderr:\n{}\nsync.log:\n{}",
                    self.stderr_of(label),
                    self.sync_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + GENEROUS;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "never happened: {what}\nsync.log:\n{}",
                self.sync_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Archives the next segment the way `pgbak wal` does: into every target directory, then
    /// the journal record (and `DirectoryOpened` first when no directory is open). Returns the
    /// directories it went into.
    fn archive(&self) -> Vec<DirectoryName> {
        let home = self.home();
        let at = clock::now();
        let mut opened = journal_file::open_journal(&home, at).unwrap();
        let state = opened.journal.state();
        let number = state.wal.archived_count + 1;
        let file = WalFileName::parse(&format!("0000000100000000{number:08X}")).unwrap();
        let targets = archive_targets(state, at);
        let mut events = Vec::new();
        if let Some(directory) = targets.open_directory {
            events.push(Event::DirectoryOpened { directory, at });
        }
        for directory in &targets.directories {
            let wal = home.directory_path(*directory).join("pg_wal");
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&wal)
                .unwrap();
            fs::write(wal.join(file.compressed_name()), b"not really zstd").unwrap();
        }
        events.push(Event::WalArchived {
            file,
            compressed_bytes: 15,
            directories: targets.directories.clone(),
            already_present: false,
            at,
        });
        opened.append(&events, at).unwrap();
        targets.directories
    }

    /// Every fact in the journal, oldest first (after the last checkpoint).
    fn events(&self) -> Vec<Event> {
        let opened = journal_file::open_journal(&self.home(), clock::now()).unwrap();
        journal_file::decode_journal(&opened)
            .unwrap()
            .records
            .into_iter()
            .filter_map(|record| match record.record {
                Record::Event(event) => Some(event),
                Record::Checkpoint(_) => None,
            })
            .collect()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.kind().name()).collect()
    }

    /// What the backup script saw, one entry per run.
    fn runs(&self) -> Vec<ScriptRun> {
        fs::read_to_string(self.out.join("runs"))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 5, "{line}");
                ScriptRun {
                    started: fields[0].parse().unwrap(),
                    pwd: PathBuf::from(fields[1]),
                    directory: fields[2].to_owned(),
                    current_timestamp: fields[3].to_owned(),
                    pgbak: PathBuf::from(fields[4]),
                }
            })
            .collect()
    }

    fn status_json(&self) -> serde_json::Value {
        let output = self.run(&["status", "--json"]);
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Archives a segment, installs [`BLOCK_UNTIL_ALLOWED`] as the script and starts a
    /// foreground sync; returns once the script runs: the sync, the script's pid and the pid of
    /// the `sleep` it started without `exec`.
    fn sync_with_a_blocked_script(&self) -> (Child, i32, i32) {
        self.script(BLOCK_UNTIL_ALLOWED);
        self.archive();
        let sync = self.spawn("sync", &["sync"]);
        self.wait_until("the script started its sleeper", || {
            self.pid_file("sleeper.pid").is_some()
        });
        let script = self.pid_file("script.pid").unwrap();
        let sleeper = self.pid_file("sleeper.pid").unwrap();
        (sync, script, sleeper)
    }

    fn pid_file(&self, name: &str) -> Option<i32> {
        fs::read_to_string(self.out.join(name))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Scripts that were cut short may have left sleepers behind.
        if let Ok(entries) = fs::read_dir(&self.out) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".pid")
                    && let Ok(text) = fs::read_to_string(entry.path())
                    && let Ok(pid) = text.trim().parse::<i32>()
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[derive(Debug)]
struct ScriptRun {
    started: f64,
    pwd: PathBuf,
    directory: String,
    current_timestamp: String,
    pgbak: PathBuf,
}

fn exit_code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// libfaketime from Debian's `faketime` package (`.ci/prerequisites`); the MT build, since the
/// sync has threads.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How soon a sync must notice that `$PGBAK` changed under it: it looks every round (a quarter
/// second); this only keeps a bug from hanging the test for [`GENEROUS`].
const NOTICES_WITHIN: Duration = Duration::from_secs(30);

/// A script that, until `out/allow` exists, starts a sleeper in its process group (pids in
/// `out/`) and waits for `allow`; then succeeds.
const BLOCK_UNTIL_ALLOWED: &str = "if [ ! -e \"$TEST_OUT/allow\" ]; then\n\
     echo $$ > \"$TEST_OUT/script.pid\"\n\
     sleep 300 &\n\
     echo $! > \"$TEST_OUT/sleeper.pid\"\n\
     while [ ! -e \"$TEST_OUT/allow\" ]; do sleep 0.1; done\n\
     kill $!\nfi\nexit 0\n";

#[test]
fn a_failing_script_is_retried_with_growing_backoff_and_gets_the_seed_arguments() {
    let fixture = Fixture::new("backoff");
    fixture.script("if [ $n -le 3 ]; then echo \"attempt $n failed\" >&2; exit 1; fi\nexit 0\n");
    let directory = fixture.archive()[0];

    let output = fixture.run(&["sync"]);
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stderr),
        fixture.sync_log()
    );

    // S-5.1: cwd, arguments and environment of every run.
    let runs = fixture.runs();
    assert_eq!(runs.len(), 4, "{runs:?}");
    for run in &runs {
        assert_eq!(run.pwd, fixture.pgbak.join(directory.to_string()));
        assert_eq!(run.directory, directory.to_string());
        let current = DirectoryName::parse(&run.current_timestamp)
            .unwrap_or_else(|| panic!("not a TIMESTAMP: {}", run.current_timestamp));
        assert!(current >= directory);
        assert_eq!(run.pgbak, fixture.pgbak);
        // Seed: "The timestamps will be the same if no new WAL files have appeared."
        assert_eq!(run.current_timestamp, runs[0].current_timestamp);
    }
    // S-5.3: 1 s, 2 s, 4 s between attempts (lower bounds only).
    for (index, minimum) in [1.0, 2.0, 4.0].into_iter().enumerate() {
        let gap = runs[index + 1].started - runs[index].started;
        assert!(
            gap >= 0.9 * minimum,
            "retry {} came {gap:.3} s after the previous run, before its {minimum} s backoff",
            index + 1
        );
    }

    let events = fixture.events();
    let failures: Vec<&String> = events
        .iter()
        .filter_map(|event| match event {
            Event::ScriptFailed { output, .. } => Some(output),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 3);
    for (number, output) in failures.iter().enumerate() {
        assert_eq!(
            output.as_str(),
            format!(
                "attempt {} failed\nbackup script exited with status 1",
                number + 1
            )
        );
    }
    let kinds = fixture.kinds();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    // S-4.3 then S-5.2: the base backup made the directory current before the script ran.
    assert!(position("BaseBackupFinished") < position("ScriptStarted"));
    assert!(position("CurrentLinkSwitched") < position("ScriptStarted"));
    assert_eq!(kinds.last(), Some(&"SyncStopped"));
    assert!(matches!(
        events.last(),
        Some(Event::SyncStopped {
            reason: SyncStopReason::Finished,
            ..
        })
    ));
    assert_eq!(
        fs::read_link(fixture.pgbak.join("current")).unwrap(),
        PathBuf::from(directory.to_string())
    );
    assert!(
        fixture
            .pgbak
            .join(directory.to_string())
            .join("base.tzst")
            .is_file()
    );

    // The sync log: the script's output lines, tagged, and the facts; private.
    let log = fixture.sync_log();
    assert!(
        log.contains(&format!(" [script {directory}] attempt 1 failed\n")),
        "{log}"
    );
    assert!(
        log.contains(&format!(" ScriptSucceeded {directory}\n")),
        "{log}"
    );
    let mode = fs::metadata(fixture.pgbak.join("sync.log")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // S-6.3: everything shipped, no sync running.
    fixture.wait_exits("0", 0);
}

#[test]
fn wal_archived_during_a_run_makes_the_script_run_again_with_a_newer_current_timestamp() {
    let fixture = Fixture::new("rerun");
    fixture.script("if [ $n -eq 1 ]; then touch \"$TEST_OUT/first-run\"; sleep 3; fi\nexit 0\n");
    let directory = fixture.archive()[0];
    let mut sync = fixture.spawn("sync", &["sync"]);
    fixture.wait_until("the first run started", || {
        fixture.out.join("first-run").exists()
    });
    // A file that arrives in a later second than everything the first run covers.
    let first_current = DirectoryName::parse(&fixture.runs()[0].current_timestamp).unwrap();
    fixture.wait_until("the clock passed the first run's timestamp", || {
        DirectoryName::from_millis(clock::now()) > first_current
    });
    let targets = fixture.archive();
    assert_eq!(targets, vec![directory]);
    let status = fixture.wait_exit(&mut sync, "sync");
    assert!(status.success(), "{}", fixture.stderr_of("sync"));

    let runs = fixture.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1].directory, directory.to_string());
    let second_current = DirectoryName::parse(&runs[1].current_timestamp).unwrap();
    assert!(second_current > first_current, "{runs:?}");
    let versions: Vec<u64> = fixture
        .events()
        .iter()
        .filter_map(|event| match event {
            Event::ScriptStarted {
                through_version, ..
            } => Some(*through_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions.len(), 2);
    assert!(versions[1] > versions[0], "{versions:?}");
}

#[test]
fn a_missing_script_is_recorded_retried_and_reported_until_it_appears() {
    let fixture = Fixture::new("missing");
    fixture.archive();
    let mut sync = fixture.spawn("sync", &["sync"]);
    fixture.wait_until("two failed attempts", || {
        fixture.status_json()["script"]["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    });
    let status = fixture.status_json();
    assert_eq!(status["script"]["present"], false);
    assert!(
        status["script"]["last_failure"]["output"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{status:#}"
    );
    let codes: Vec<&str> = status["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"missing_script"), "{codes:?}");
    assert_eq!(status["sync"]["running"], true);

    // S-6.3: the sync retries forever, so `wait` times out (2).
    let stderr = fixture.wait_exits("2", 2);
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(sync.try_wait().unwrap().is_none(), "the sync gave up");

    fixture.script("exit 0\n");
    let exit = fixture.wait_exit(&mut sync, "sync");
    assert!(exit.success(), "{}", fixture.stderr_of("sync"));
    assert_eq!(fixture.runs().len(), 1);
    fixture.wait_exits("2", 0);
}

#[test]
fn sigterm_stops_the_script_group_records_the_interruption_and_the_next_sync_resumes() {
    let fixture = Fixture::new("sigterm");
    let (mut sync, script, sleeper) = fixture.sync_with_a_blocked_script();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sync.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = fixture.wait_exit(&mut sync, "sync");
    assert_eq!(status.code(), Some(1), "{}", fixture.stderr_of("sync"));
    assert!(
        fixture.stderr_of("sync").contains("interrupted by SIGTERM"),
        "{}",
        fixture.stderr_of("sync")
    );
    // S-5.4: the whole process group is gone, not only the script.
    fixture.wait_until("the script and its sleeper died", || {
        process_is_dead(script) && process_is_dead(sleeper)
    });

    let events = fixture.events();
    assert!(
        events.iter().any(|event| matches!(
            event,
            Event::ScriptFailed { output, .. } if output.ends_with("interrupted by SIGTERM")
        )),
        "{events:#?}"
    );
    assert!(matches!(
        events.last(),
        Some(Event::SyncStopped {
            reason: SyncStopReason::Interrupted,
            ..
        })
    ));
    let journal = text(&fixture.run(&["status", "--journal"]).stdout);
    assert!(
        journal.contains("SyncStopped") && journal.contains("Interrupted"),
        "{journal}"
    );
    // S-6.3: no sync runs and work is left: finished with failures (3).
    let stderr = fixture.wait_exits("60", 3);
    assert!(stderr.contains("interrupted"), "{stderr}");

    // The next sync resumes: the machine decides again, the script runs and succeeds.
    fs::write(fixture.out.join("allow"), "").unwrap();
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(fixture.runs().len(), 2);
    assert!(matches!(
        fixture.events().last(),
        Some(Event::SyncStopped {
            reason: SyncStopReason::Finished,
            ..
        })
    ));
    fixture.wait_exits("0", 0);
}

#[test]
fn a_killed_sync_is_recorded_as_abandoned_by_the_next_sync_which_resumes() {
    let fixture = Fixture::new("kill9");
    let (mut sync, script, sleeper) = fixture.sync_with_a_blocked_script();
    let dead_pid = sync.id();
    sync.kill().unwrap();
    let status = fixture.wait_exit(&mut sync, "sync");
    assert_eq!(status.code(), None, "killed by a signal");
    // The group's leader (pgbak's guardian) is told its supervisor died (PR_SET_PDEATHSIG) and
    // stops the whole group: the script and the `sleep` it started without `exec` (S-5.4).
    fixture.wait_until("the orphaned script and its child were stopped", || {
        process_is_dead(script) && process_is_dead(sleeper)
    });

    let status = fixture.status_json();
    assert_eq!(status["sync"]["died"], true, "{status:#}");
    let stderr = fixture.wait_exits("60", 3);
    assert!(stderr.contains("died"), "{stderr}");

    fs::write(fixture.out.join("allow"), "").unwrap();
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let events = fixture.events();
    let abandoned = events
        .iter()
        .position(|event| matches!(event, Event::SyncAbandoned { pid, .. } if *pid == dead_pid))
        .unwrap_or_else(|| panic!("no SyncAbandoned for {dead_pid}: {events:#?}"));
    assert!(matches!(events[abandoned + 1], Event::SyncStarted { .. }));
    assert!(
        events[abandoned..]
            .iter()
            .any(|event| matches!(event, Event::ScriptSucceeded { .. }))
    );
    assert_eq!(fixture.runs().len(), 2);
    fixture.wait_exits("0", 0);
}

#[test]
fn force_sync_runs_the_script_even_when_nothing_is_new() {
    let fixture = Fixture::new("force");
    fixture.script("exit 0\n");
    fixture.archive();
    assert!(fixture.run(&["sync"]).status.success());
    assert_eq!(fixture.runs().len(), 1);
    // Nothing new: `sync` does not run the script again.
    assert!(fixture.run(&["sync"]).status.success());
    assert_eq!(fixture.runs().len(), 1);
    let output = fixture.run(&["force-sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let runs = fixture.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].directory, runs[0].directory);
    assert_eq!(runs[1].current_timestamp, runs[0].current_timestamp);
    assert!(matches!(
        fixture
            .events()
            .iter()
            .rev()
            .find(|e| matches!(e, Event::SyncStarted { .. })),
        Some(Event::SyncStarted {
            force_script: true,
            ..
        })
    ));
}

#[test]
fn the_background_sync_defers_to_a_running_sync_and_otherwise_ships_everything_and_exits() {
    let fixture = Fixture::new("background");
    fixture.script("exit 0\n");
    fixture.archive();
    let held = lock::try_take_sync_lock(&fixture.home()).unwrap().unwrap();
    let output = fixture.run(&["sync", "--background"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!fixture.kinds().contains(&"SyncStarted"));
    assert_eq!(fixture.runs().len(), 0);
    drop(held);

    let output = fixture.run(&["sync", "--background"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
    assert_eq!(fixture.runs().len(), 1);
    assert!(matches!(
        fixture.events().last(),
        Some(Event::SyncStopped {
            reason: SyncStopReason::Finished,
            ..
        })
    ));
    assert!(fixture.sync_log().contains(" ScriptSucceeded "));
}

#[test]
fn a_foreground_sync_waits_for_the_running_sync_first() {
    let fixture = Fixture::new("waits");
    fixture.script("exit 0\n");
    fixture.archive();
    let held = lock::try_take_sync_lock(&fixture.home()).unwrap().unwrap();
    let mut sync = fixture.spawn("sync", &["sync"]);
    fixture.wait_until("the sync says it waits", || {
        fixture
            .stderr_of("sync")
            .contains("waiting for it to finish")
    });
    assert!(sync.try_wait().unwrap().is_none());
    assert!(!fixture.kinds().contains(&"SyncStarted"));
    drop(held);
    let status = fixture.wait_exit(&mut sync, "sync");
    assert!(status.success(), "{}", fixture.stderr_of("sync"));
    assert_eq!(fixture.runs().len(), 1);
}

#[test]
fn a_hung_script_is_killed_at_its_timeout_and_retried() {
    let fixture = Fixture::with_config("timeout", "[script]\ntimeout_seconds = 1\n");
    fixture.script(
        "if [ $n -eq 1 ]; then sleep 300 & echo $! > \"$TEST_OUT/sleeper.pid\"; wait; fi\nexit 0\n",
    );
    fixture.archive();
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let sleeper = fixture.pid_file("sleeper.pid").unwrap();
    fixture.wait_until("the hung run's sleeper died", || process_is_dead(sleeper));
    let events = fixture.events();
    assert!(
        events.iter().any(|event| matches!(
            event,
            Event::ScriptFailed { output, .. }
                if output.ends_with("timed out after 1 s (script.timeout_seconds): killed")
        )),
        "{events:#?}"
    );
    assert_eq!(fixture.runs().len(), 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ScriptSucceeded { .. }))
    );
}

#[test]
fn a_failed_base_backup_is_recorded_its_directory_removed_and_retried() {
    let fixture = Fixture::with_config(
        "basefail",
        "[base]\nretry_delay_min_seconds = 1\nretry_delay_max_seconds = 1\n",
    );
    fs::write(fixture.out.join("basebackup-failures"), "1\n").unwrap();
    fixture.script("exit 0\n");
    let first = fixture.archive()[0];
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let events = fixture.events();
    let failed = events
        .iter()
        .find_map(|event| match event {
            Event::BaseBackupFailed {
                directory, output, ..
            } => Some((*directory, output.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no BaseBackupFailed: {events:#?}"));
    assert_eq!(failed.0, first);
    assert!(failed.1.contains("max_wal_senders"), "{}", failed.1);
    assert!(events.iter().any(
        |event| matches!(event, Event::DirectoryRemoved { directory, .. } if *directory == first)
    ));
    assert!(!fixture.pgbak.join(first.to_string()).exists());
    let finished = events
        .iter()
        .find_map(|event| match event {
            Event::BaseBackupFinished { directory, .. } => Some(*directory),
            _ => None,
        })
        .unwrap();
    assert_ne!(finished, first);
    assert_eq!(
        fs::read_link(fixture.pgbak.join("current")).unwrap(),
        PathBuf::from(finished.to_string())
    );
    assert_eq!(fixture.runs()[0].directory, finished.to_string());
    assert!(
        fixture
            .sync_log()
            .contains("[pg_basebackup] pg_basebackup: error: could not initiate base backup"),
        "{}",
        fixture.sync_log()
    );
}

#[test]
fn sigint_during_a_base_backup_records_its_failure_and_the_next_sync_takes_a_new_one() {
    let fixture = Fixture::with_config(
        "sigint-base",
        "[base]\nretry_delay_min_seconds = 1\nretry_delay_max_seconds = 1\n",
    );
    // The first pg_basebackup hangs (with a sleeper in its group) until `out/allow` exists.
    fixture.executable(
        &fixture.root.join("fake_pg_basebackup.sh"),
        "if [ ! -e \"$TEST_OUT/allow\" ]; then\n\
         echo $$ > \"$TEST_OUT/basebackup.pid\"\n\
         echo 'pg_basebackup: waiting for checkpoint' >&2\n\
         sleep 300 &\necho $! > \"$TEST_OUT/basebackup-sleeper.pid\"\nwait\nfi\n\
         exec tar -C \"$TEST_OUT/../data\" -cf - .\n",
    );
    fixture.script("exit 0\n");
    let first = fixture.archive()[0];
    let mut sync = fixture.spawn("sync", &["sync"]);
    fixture.wait_until("pg_basebackup started its sleeper", || {
        fixture.pid_file("basebackup-sleeper.pid").is_some()
    });
    let program = fixture.pid_file("basebackup.pid").unwrap();
    let sleeper = fixture.pid_file("basebackup-sleeper.pid").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sync.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = fixture.wait_exit(&mut sync, "sync");
    assert_eq!(status.code(), Some(1), "{}", fixture.stderr_of("sync"));
    fixture.wait_until("pg_basebackup's process group died", || {
        process_is_dead(program) && process_is_dead(sleeper)
    });
    let events = fixture.events();
    assert!(
        events.iter().any(|event| matches!(
            event,
            Event::BaseBackupFailed { directory, output, .. }
                if *directory == first && output.ends_with("interrupted by SIGINT")
        )),
        "{events:#?}"
    );
    assert!(matches!(
        events.last(),
        Some(Event::SyncStopped {
            reason: SyncStopReason::Interrupted,
            ..
        })
    ));
    assert!(
        fixture
            .sync_log()
            .contains("[pg_basebackup] pg_basebackup: waiting for checkpoint"),
        "{}",
        fixture.sync_log()
    );

    // S-4.5: the next sync removes the failed directory and takes a new base backup.
    fs::write(fixture.out.join("allow"), "").unwrap();
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(!fixture.pgbak.join(first.to_string()).exists());
    let events = fixture.events();
    assert!(events.iter().any(
        |event| matches!(event, Event::DirectoryRemoved { directory, .. } if *directory == first)
    ));
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Event::BaseBackupFinished { .. }))
    );
    assert_eq!(fixture.runs().len(), 1);
}

#[test]
fn a_journal_rebuilt_under_a_running_sync_makes_it_start_over_from_the_rebuilt_state() {
    let fixture = Fixture::new("rebuilt");
    let (mut sync, script, sleeper) = fixture.sync_with_a_blocked_script();
    // Damage the journal's header: the next process that opens it (this `status`, or the sync
    // itself when it next looks) rebuilds it from the directory tree under a new identity.
    {
        use std::os::unix::fs::FileExt;
        let journal = fs::OpenOptions::new()
            .write(true)
            .open(fixture.pgbak.join("pgbak.lock"))
            .unwrap();
        journal.write_all_at(&[0xFF; 64], 0).unwrap();
    }
    let _ = fixture.run(&["status"]);
    let pid = sync.id();
    // The sync stops the run the rebuilt state knows nothing of, and starts over.
    fixture.wait_until("the sync started over in the rebuilt journal", || {
        let events = fixture.events();
        let rebuilt = events
            .iter()
            .position(|event| matches!(event, Event::JournalRebuilt { .. }));
        rebuilt.is_some_and(|rebuilt| {
            events[rebuilt..].iter().any(
                |event| matches!(event, Event::SyncStarted { pid: started, .. } if *started == pid),
            )
        })
    });
    fixture.wait_until("the first run was stopped", || {
        process_is_dead(script) && process_is_dead(sleeper)
    });
    fs::write(fixture.out.join("allow"), "").unwrap();
    let status = fixture.wait_exit(&mut sync, "sync");
    assert!(status.success(), "{}", fixture.stderr_of("sync"));
    // Upload state that could not be recovered counts as not shipped (S-3.3): it ran again.
    assert!(fixture.runs().len() >= 2);
    assert!(
        fixture.sync_log().contains("rebuilt"),
        "{}",
        fixture.sync_log()
    );
    fixture.wait_exits("0", 0);
}

/// S-6.4: `status` shows a running base backup with its start and the bytes written so far.
/// The count is published by the sync in `$PGBAK/base-backup.progress` and is gone afterwards.
#[test]
fn status_shows_the_bytes_a_running_base_backup_has_written_so_far() {
    let fixture = Fixture::new("base-progress");
    // 24 MiB that do not compress: the multithreaded encoder emits output well before the end.
    let mut noise = vec![0u8; 24 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for byte in &mut noise {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    fs::write(fixture.root.join("data/noise"), &noise).unwrap();
    // A complete tar stream, then pg_basebackup stays alive until `out/allow` exists.
    fixture.executable(
        &fixture.root.join("fake_pg_basebackup.sh"),
        "tar -C \"$TEST_OUT/../data\" -cf - .\n\
         while [ ! -e \"$TEST_OUT/allow\" ]; do sleep 0.05; done\n",
    );
    fixture.script("exit 0\n");
    let first = fixture.archive()[0];
    let mut sync = fixture.spawn("sync", &["sync"]);

    let mut report = serde_json::Value::Null;
    fixture.wait_until(
        "status shows bytes written by the running base backup",
        || {
            report = fixture.status_json();
            report["base_backup"]["running"]["bytes_written"]
                .as_u64()
                .is_some_and(|bytes| bytes > 0)
        },
    );
    let running = &report["base_backup"]["running"];
    assert_eq!(running["directory"], first.to_string(), "{report}");
    // The whole tar (24 MiB of noise and the headers) was read before pg_basebackup blocked,
    // but the published count may be up to a second old.
    fixture.wait_until("status shows the whole tar read", || {
        fixture.status_json()["base_backup"]["running"]["bytes_read"]
            .as_u64()
            .is_some_and(|bytes| bytes >= 24 << 20)
    });
    assert!(running["started_at"].is_string(), "{report}");
    let human = text(&fixture.run(&["status"]).stdout);
    assert!(
        human.contains(&format!("base backup  running into {first} since"))
            && human.contains(" read from pg_basebackup, ")
            && human.contains(" written"),
        "{human}"
    );
    assert!(fixture.pgbak.join("base-backup.progress").is_file());

    fs::write(fixture.out.join("allow"), "").unwrap();
    let status = fixture.wait_exit(&mut sync, "sync");
    assert!(status.success(), "{}", fixture.stderr_of("sync"));
    let report = fixture.status_json();
    assert!(report["base_backup"]["running"].is_null(), "{report}");
    assert!(!fixture.pgbak.join("base-backup.progress").exists());
    // The count status showed was real: no more than the finished base.tzst.
    let base = fs::metadata(fixture.pgbak.join(first.to_string()).join("base.tzst"))
        .unwrap()
        .len();
    assert!(running["bytes_written"].as_u64().unwrap() <= base);
}

/// S-6.6: a `pgbak.lock` replaced under a running sync (here by a copy renamed over it) makes
/// the sync stop: it can no longer exclude other syncs, which would lock the new file and run
/// the script next to its run.
#[test]
fn a_replaced_pgbak_lock_stops_the_running_sync_and_its_script_before_another_sync_starts() {
    let fixture = Fixture::new("lock-replaced");
    let (mut sync, script, sleeper) = fixture.sync_with_a_blocked_script();
    let lock = fixture.pgbak.join("pgbak.lock");
    let copy = fixture.pgbak.join("pgbak.lock.copy");
    fs::copy(&lock, &copy).unwrap();
    fs::rename(&copy, &lock).unwrap();

    let status = fixture.wait_exit_within(&mut sync, "sync", NOTICES_WITHIN);
    assert_eq!(status.code(), Some(1), "{}", fixture.stderr_of("sync"));
    assert!(process_is_dead(script) && process_is_dead(sleeper));
    let log = fixture.sync_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("] error: ") && line.contains("is no longer the"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&format!(
            "{}/pgbak.lock is no longer the lock file this process opened",
            fixture.pgbak.display()
        )),
        "{log}"
    );
    let stderr = fixture.stderr_of("sync");
    assert!(stderr.contains("hint: "), "{stderr}");

    // The next sync works on the new file alone: its run is the only one.
    fs::write(fixture.out.join("allow"), "").unwrap();
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(fixture.runs().len(), 2);
}

/// S-6.6: `$PGBAK` moved away (or deleted, or lazily unmounted) under a running sync: the sync
/// notices that its path leads nowhere, logs it in the sync log it holds, and exits non-zero
/// instead of shipping on from a directory nobody archives into.
#[test]
fn pgbak_moved_away_under_a_running_sync_makes_it_exit() {
    let fixture = Fixture::new("pgbak-moved");
    let (mut sync, script, sleeper) = fixture.sync_with_a_blocked_script();
    let moved = fixture.root.join("pgbak-moved-away");
    fs::rename(&fixture.pgbak, &moved).unwrap();
    let status = fixture.wait_exit_within(&mut sync, "sync", NOTICES_WITHIN);
    assert_eq!(status.code(), Some(1), "{}", fixture.stderr_of("sync"));
    assert!(process_is_dead(script) && process_is_dead(sleeper));
    let log = fs::read_to_string(moved.join("sync.log")).unwrap();
    assert!(
        log.lines().any(|line| line.contains(&format!(
            "error: {} is no longer the directory this process opened (it is gone)",
            fixture.pgbak.display()
        ))),
        "{log}"
    );
}

/// S-6.5: a wall clock stepped back a day while a failed script waits for its retry: the sync
/// measures the backoff on its own clock, so the retry comes after the backoff, not a day later.
#[test]
fn a_clock_stepped_back_a_day_during_a_backoff_does_not_delay_the_retry() {
    let fixture = Fixture::with_config(
        "clock-back",
        "[script]\nretry_delay_min_seconds = 3\nretry_delay_max_seconds = 3\n",
    );
    fixture.script("if [ $n -eq 1 ]; then echo first run fails >&2; exit 1; fi\nexit 0\n");
    fixture.archive();
    let mut sync = fixture
        .command_with_faked_clock(&["sync"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(fixture.out.join("sync.stderr")).unwrap())
        .spawn()
        .unwrap();
    fixture.wait_until("the first run failed", || {
        fixture.kinds().contains(&"ScriptFailed")
    });
    fixture.step_clock("-86400");
    let status = fixture.wait_exit_within(&mut sync, "sync", Duration::from_secs(60));
    assert!(status.success(), "{}", fixture.stderr_of("sync"));
    assert_eq!(fixture.runs().len(), 2);
}

/// S-6.5: a failure recorded before the wall clock stepped back a day lies in the future for
/// the next sync; its retry time is clamped to the backoff's maximum from that sync's start.
#[test]
fn a_failure_recorded_before_the_clock_stepped_back_is_retried_within_the_backoff_maximum() {
    let fixture = Fixture::with_config(
        "clock-back-between",
        "[script]\nretry_delay_min_seconds = 600\nretry_delay_max_seconds = 600\n",
    );
    fixture.script("if [ $n -eq 1 ]; then echo first run fails >&2; exit 1; fi\nexit 0\n");
    fixture.archive();
    let mut first = fixture.spawn("first", &["sync"]);
    fixture.wait_until("the first run failed", || {
        fixture.kinds().contains(&"ScriptFailed")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    fixture.wait_exit(&mut first, "first");
    // A shorter maximum now: the clamp uses the policy of the sync that decides.
    let config = fixture.pgbak.join("config.toml");
    let text_now = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text_now
            .replace(
                "retry_delay_max_seconds = 600",
                "retry_delay_max_seconds = 2",
            )
            .replace(
                "retry_delay_min_seconds = 600",
                "retry_delay_min_seconds = 2",
            ),
    )
    .unwrap();
    fixture.step_clock("-86400");
    let mut second = fixture
        .command_with_faked_clock(&["sync"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(fixture.out.join("second.stderr")).unwrap())
        .spawn()
        .unwrap();
    let status = fixture.wait_exit_within(&mut second, "second", Duration::from_secs(60));
    assert!(status.success(), "{}", fixture.stderr_of("second"));
    assert_eq!(fixture.runs().len(), 2);
}

/// S-6.5: a wall clock stepped forward a day while the script runs does not end its
/// `script.timeout_seconds` early: the timeout is measured on the sync's own clock.
#[test]
fn a_clock_stepped_forward_a_day_does_not_kill_a_running_script_for_its_timeout() {
    let fixture = Fixture::with_config("clock-forward", "[script]\ntimeout_seconds = 60\n");
    fixture.script(BLOCK_UNTIL_ALLOWED);
    fixture.archive();
    let mut sync = fixture
        .command_with_faked_clock(&["sync"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(fixture.out.join("sync.stderr")).unwrap())
        .spawn()
        .unwrap();
    fixture.wait_until("the script started its sleeper", || {
        fixture.pid_file("sleeper.pid").is_some()
    });
    let script = fixture.pid_file("script.pid").unwrap();
    fixture.step_clock("+86400");
    // Several rounds of the sync (a quarter second each) see the stepped clock.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!process_is_dead(script), "{}", fixture.sync_log());
    fs::write(fixture.out.join("allow"), "").unwrap();
    let status = fixture.wait_exit(&mut sync, "sync");
    assert!(status.success(), "{}", fixture.stderr_of("sync"));
    let events = fixture.events();
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::ScriptFailed { .. })),
        "{events:#?}"
    );
    assert_eq!(fixture.runs().len(), 1);
}

/// A foreground `force-sync` started with a descriptor its caller did not mark close-on-exec
/// (here a shell's `exec 251<file`) passes it to none of its children: the script, its
/// guardian and `pg_basebackup` see only stdin, stdout and stderr (and what they open).
#[test]
fn force_sync_passes_no_inherited_descriptor_to_the_script_or_pg_basebackup() {
    let fixture = Fixture::new("descriptors");
    let leaked = fixture.root.join("leaked-descriptor");
    fs::write(&leaked, "").unwrap();
    fixture.script(
        "ls -l /proc/$$/fd/ > \"$TEST_OUT/script-fds\"\n\
         ls -l /proc/$PPID/fd/ > \"$TEST_OUT/guardian-fds\"\nexit 0\n",
    );
    fixture.executable(
        &fixture.root.join("fake_pg_basebackup.sh"),
        "ls -l /proc/$$/fd/ > \"$TEST_OUT/pg_basebackup-fds\"\n\
         exec tar -C \"$TEST_OUT/../data\" -cf - .\n",
    );
    fixture.archive();
    // bash: dash's redirections take single-digit descriptors only.
    let output = Command::new("bash")
        .arg("-c")
        .arg("exec 251<\"$1\"; exec \"$2\" force-sync")
        .arg("bash")
        .arg(&leaked)
        .arg(env!("CARGO_BIN_EXE_pgbak"))
        .env("PGBAK", &fixture.pgbak)
        .env("TEST_OUT", &fixture.out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    for name in ["script-fds", "guardian-fds", "pg_basebackup-fds"] {
        let listing = fs::read_to_string(fixture.out.join(name)).unwrap();
        assert!(
            !listing.contains("leaked-descriptor") && !listing.contains(" 251 -> "),
            "{name}:\n{listing}"
        );
    }
}

/// Durability of directory entries: every directory the sync creates in `$PGBAK` or finds
/// there already (created by a `wal` that may have crashed before its fsync; here by the test,
/// without one), and every name it creates or renames into `$PGBAK` (`sync.log`, `current`),
/// is followed by an fsync of the directory that holds the entry before the next journal record
/// (the fact that relies on it) is made durable, or before the sync exits.
#[test]
fn every_entry_the_sync_makes_or_finds_in_pgbak_is_fsynced_before_the_next_journal_record() {
    let fixture = Fixture::new("fsync-entries");
    fixture.script("exit 0\n");
    // Made with plain mkdir and no fsync: what a crash right after `wal`'s mkdir leaves.
    fixture.archive();
    let trace = fixture.out.join("trace");
    let output = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=mkdir,mkdirat,open,openat,rename,renameat,renameat2,symlink,symlinkat,\
             fsync,fdatasync",
        ])
        .arg(env!("CARGO_BIN_EXE_pgbak"))
        .arg("sync")
        .env("PGBAK", &fixture.pgbak)
        .env("TEST_OUT", &fixture.out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let trace = fs::read_to_string(&trace).unwrap();
    let pgbak = fixture.pgbak.display().to_string();
    let journal_synced = format!("{pgbak}/pgbak.lock>");
    let mut missing = Vec::new();
    let lines: Vec<&str> = trace.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let Some(entry) = entry_made_in_pgbak(line, &pgbak) else {
            continue;
        };
        let parent = Path::new(&entry).parent().unwrap().display().to_string();
        let directory_synced = format!("<{parent}>)");
        let fsynced = lines[index + 1..]
            .iter()
            .filter(|later| later.contains(" fsync(") || later.contains(" fdatasync("))
            .take_while(|later| !later.contains(&journal_synced))
            .any(|later| later.contains(" fsync(") && later.contains(&directory_synced));
        if !fsynced {
            missing.push(line.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "no fsync of the directory before the next journal record after:\n{}\n\ntrace:\n{trace}",
        missing.join("\n")
    );
}

/// The path of the directory entry a traced system call makes (or, for `mkdir`, makes or finds)
/// under `pgbak`, if it is one: `mkdir` anywhere below it (made or found), and a file created
/// (an `O_CREAT` open that succeeded, not `O_TMPFILE`) or renamed into `pgbak` itself. The status-only progress file is left out: it
/// is removed when the base backup ends, and nothing relies on it after a crash.
fn entry_made_in_pgbak(line: &str, pgbak: &str) -> Option<String> {
    let first_path = || {
        let start = line.find('"')? + 1;
        let end = start + line[start..].find('"')?;
        Some(line[start..end].to_owned())
    };
    let last_path = || {
        let end = line.rfind('"')?;
        let start = line[..end].rfind('"')? + 1;
        Some(line[start..end].to_owned())
    };
    let is_mkdir = line.contains(" mkdir(") || line.contains(" mkdirat(");
    let is_create = (line.contains(" openat(") || line.contains(" open("))
        && line.contains("O_CREAT")
        && !line.contains("O_TMPFILE")
        && !line.contains(" = -1 ");
    let path = if is_mkdir || is_create {
        first_path()?
    } else if line.contains(" rename(") || line.contains(" renameat") || line.contains(" symlink") {
        last_path()?
    } else {
        return None;
    };
    let in_pgbak = Path::new(&path).parent() == Some(Path::new(pgbak));
    if path.ends_with("base-backup.progress") || path.contains("base-backup.progress.") {
        return None;
    }
    if (is_mkdir && path.starts_with(&format!("{pgbak}/"))) || in_pgbak {
        Some(path)
    } else {
        None
    }
}

/// S-6.6: with everything shipped and the server stopped, a base backup that cannot reach the
/// server ends the sync instead of retrying forever; `wait` (the seed's `ExecStopPost`) returns
/// 0 and names the overdue base backup; a foreground `sync` says it could not take it.
#[test]
fn a_base_backup_that_cannot_reach_the_server_ends_the_sync_and_wait_returns_0() {
    let fixture = Fixture::with_config(
        "unreachable",
        "[base]\nretry_delay_min_seconds = 1\nretry_delay_max_seconds = 1\n",
    );
    fixture.script("exit 0\n");
    fixture.archive();
    let first = fixture.run(&["sync"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // From now on the server is down.
    fs::write(fixture.out.join("basebackup-failures"), "1000\n").unwrap();
    fs::write(
        fixture.out.join("basebackup-error"),
        "pg_basebackup: error: connection to server on socket \"/run/postgresql/.s.PGSQL.5432\" \
         failed: No such file or directory\n\tIs the server running locally and accepting \
         connections?\n",
    )
    .unwrap();
    let mut sync = fixture.spawn("sync-base", &["sync", "--base"]);
    let status = fixture.wait_exit_within(&mut sync, "sync-base", Duration::from_secs(30));
    let stderr = fixture.stderr_of("sync-base");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the base backup cannot reach the server") && stderr.contains("hint: "),
        "{stderr}"
    );
    assert!(fixture.kinds().contains(&"BaseBackupServerUnreachable"));
    let wait = fixture.run(&["wait", "5"]);
    let stderr = text(&wait.stderr);
    assert_eq!(wait.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("a base backup is overdue") && stderr.contains("could not be reached"),
        "{stderr}"
    );
    // The next sync (as a `wal` starts it) retries once the backoff has passed, and a server
    // that is back makes it succeed.
    fs::write(fixture.out.join("basebackup-failures"), "0\n").unwrap();
    std::thread::sleep(Duration::from_millis(1_100));
    let again = fixture.run(&["sync"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        fixture
            .kinds()
            .iter()
            .filter(|kind| **kind == "BaseBackupFinished")
            .count(),
        2
    );
}

/// S-6.4: `status` shows `$PGBAK/current` as it is on disk, and a link pointed elsewhere by
/// hand is a problem that the next sync repairs.
#[test]
fn a_current_link_pointed_elsewhere_is_reported_and_pointed_back_by_the_next_sync() {
    let fixture = Fixture::new("link");
    fixture.script("exit 0\n");
    let first = fixture.archive()[0];
    let output = fixture.run(&["sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let link = fixture.pgbak.join("current");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new(&first.to_string()));

    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let status = fixture.status_json();
    assert_eq!(status["current_link"], "/etc", "{status}");
    let problems = status["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|problem| problem["code"] == "current_link_wrong"),
        "{status}"
    );

    let output = fixture.run(&["force-sync"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(fs::read_link(&link).unwrap(), Path::new(&first.to_string()));
    assert!(fixture.kinds().contains(&"CurrentLinkObserved"));
    let status = fixture.status_json();
    assert_eq!(status["current_link"], first.to_string(), "{status}");
    assert!(
        !status["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|problem| problem["code"] == "current_link_wrong"),
        "{status}"
    );
}
