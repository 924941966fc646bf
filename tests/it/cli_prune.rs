//! `pgbak prune` through the binary (S-8.3): it refuses without a number to keep, `--dry-run`
//! names what would go and the space freed and changes nothing, a directory whose last state
//! the backup script has not shipped is never pruned, and a real prune deletes exactly what
//! the dry run named. Needs `--features failpoints` (for the helpers it shares with the crash
//! tests).

#![cfg(feature = "failpoints")]

use std::path::Path;

use crate::crash_sync::{archive, journal, world};
use crate::util::{pgbak_failing_at as pgbak, stderr_of, stdout_of};

fn current(home: &Path) -> String {
    let status: serde_json::Value =
        serde_json::from_slice(&pgbak(home, None, &["status", "--json"]).stdout).unwrap();
    status["current"].as_str().unwrap().to_owned()
}

#[test]
fn prune_refuses_without_a_number_to_keep() {
    let (_scratch, home, _) = world("prune-refuses");
    for args in [
        &["prune"][..],
        &["prune", "--keep", "0"],
        &["prune", "--dry-run"],
    ] {
        let refused = pgbak(&home, None, args);
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
        let stderr = stderr_of(&refused);
        assert!(stderr.starts_with("pgbak: prune: "), "{stderr}");
        assert!(stderr.contains("\nhint: "), "{stderr}");
    }
}

#[test]
fn dry_run_names_what_would_go_and_a_prune_deletes_exactly_that() {
    let (scratch, home, _) = world("prune-dry-run");
    assert!(pgbak(&home, None, &["sync"]).status.success());
    let oldest = current(&home);
    archive(&home, &scratch.0, 2);
    assert!(pgbak(&home, None, &["sync", "--base"]).status.success());
    let middle = current(&home);
    archive(&home, &scratch.0, 3);
    assert!(pgbak(&home, None, &["sync", "--base"]).status.success());
    let newest = current(&home);

    // Keeping 3 (or the config's default, off) deletes nothing.
    let none = pgbak(&home, None, &["prune", "--dry-run", "--keep", "3"]);
    assert!(none.status.success(), "{}", stderr_of(&none));
    assert!(
        stdout_of(&none).starts_with("would delete nothing"),
        "{}",
        stdout_of(&none)
    );

    let records_before = journal(&home);
    let dry = pgbak(&home, None, &["prune", "--dry-run", "--keep", "1"]);
    assert!(dry.status.success(), "{}", stderr_of(&dry));
    let out = stdout_of(&dry);
    let named: Vec<&str> = out
        .lines()
        .filter_map(|line| line.strip_prefix("would delete "))
        .collect();
    assert_eq!(
        named,
        [
            home.join(&oldest).display().to_string(),
            home.join(&middle).display().to_string()
        ],
        "{out}"
    );
    assert!(
        out.contains("would free ") && out.contains(" free after)"),
        "{out}"
    );
    // Nothing changed.
    assert_eq!(journal(&home), records_before);
    assert!(home.join(&oldest).is_dir() && home.join(&middle).is_dir());

    // The config's keep_bases is the default for --keep; status shows what would go next.
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!("{config}[retention]\nkeep_bases = 2\n"),
    )
    .unwrap();
    let status = stdout_of(&pgbak(&home, None, &["status"]));
    assert!(
        status.contains("retention    keep 2 base backup(s)"),
        "{status}"
    );
    assert!(
        status.contains(&format!("would delete next: {oldest} (")),
        "{status}"
    );

    let pruned = pgbak(&home, None, &["prune"]);
    assert!(pruned.status.success(), "{}", stderr_of(&pruned));
    assert_eq!(stdout_of(&pruned).trim(), format!("pruned {oldest}"));
    assert!(!home.join(&oldest).exists());
    assert!(home.join(&middle).join("base.tzst").is_file());
    assert!(home.join(&newest).join("base.tzst").is_file());
}

#[test]
fn a_directory_the_script_has_not_shipped_whole_is_never_pruned() {
    let (scratch, home, _) = world("prune-unshipped");
    assert!(pgbak(&home, None, &["sync"]).status.success());
    let oldest = current(&home);
    archive(&home, &scratch.0, 2);
    // From now on the script fails for the oldest directory: its second segment is never
    // shipped. A base backup makes a newer directory current; then the sync, which retries
    // the old one forever, is stopped.
    crate::util::executable(
        &home.join("scripts/backup"),
        &format!("[ \"$1\" = \"{oldest}\" ] && exit 1\nexit 0\n"),
    );
    let mut sync = crate::util::pgbak_command(&home)
        .args(["sync", "--base"])
        .env_remove("PGBAK_FAILPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status: serde_json::Value =
            serde_json::from_slice(&pgbak(&home, None, &["status", "--json"]).stdout).unwrap();
        // (The script ships oldest first, one run at a time, S-5.2: while the old directory
        // fails, the new one waits; the machine's tests cover a newer one shipped meanwhile.)
        if status["current"].as_str() != Some(oldest.as_str())
            && status["script"]["consecutive_failures"].as_u64() > Some(0)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sync.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    sync.wait().unwrap();
    assert_ne!(current(&home), oldest);

    let dry = pgbak(&home, None, &["prune", "--dry-run", "--keep", "1"]);
    assert!(dry.status.success(), "{}", stderr_of(&dry));
    assert!(
        stdout_of(&dry).starts_with("would delete nothing"),
        "{}",
        stdout_of(&dry)
    );
    assert!(home.join(&oldest).join("base.tzst").is_file());
}
