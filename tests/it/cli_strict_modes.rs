//! Strict modes (S-1.5) through the real binary: `$PGBAK`, `config.toml`, `scripts/` and
//! `scripts/backup` must belong to the owner of `$PGBAK` and be writable by nobody else, or
//! `wal`, `sync`, `force-sync` and `wait` refuse to run with one line naming the path, its owner
//! and its mode, and a `chmod`/`chown` hint. `status` reports the same as a problem
//! (`insecure_permissions`) instead of failing, and `init` repairs the mode of `$PGBAK`.
//!
//! The tests run as root in CI (the seed's `chown` cases need it) and as any user elsewhere:
//! `$PGBAK` always belongs to the user running the test, and the messages are built from that.

use crate::util::{Pgbak, write_private};
use std::fs;
use std::os::unix::fs::PermissionsExt;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// How pgbak names the user running the test: `user root (uid 0)`.
fn me() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid).ok().flatten() {
        Some(user) => format!("user {} (uid {uid})", user.name),
        None => format!("uid {uid}"),
    }
}

fn my_name() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
}

/// The consequence every refusal ends with.
const REFUSAL: &str =
    "pgbak refuses to archive or sync until only the owner of PGBAK can change it";

/// Writes a (never executed) backup script, mode 0700.
fn write_script(pgbak: &Pgbak) {
    let script = pgbak.join("scripts/backup");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_world_writable_pgbak_is_refused_by_wal_and_sync_with_one_line_and_a_hint() {
    let pgbak = Pgbak::new("strict-0777");
    write_script(&pgbak);
    pgbak.chmod("", 0o777);
    let expected = format!(
        "pgbak: {}: writable by group and others (mode 0777, owner {}); {REFUSAL}\n\
         hint: chmod 0700 {} (pgbak init does it)\n",
        pgbak.0.display(),
        me(),
        pgbak.0.display()
    );
    // `wal` refuses before it looks at its argument: PostgreSQL keeps the WAL and retries,
    // and its log shows why.
    for args in [
        &["wal", "pg_wal/000000010000000000000001"][..],
        &["sync"],
        &["force-sync"],
        &["wait", "1"],
    ] {
        let output = pgbak.run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", output.stderr);
        assert_eq!(output.stderr, expected, "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    assert!(
        !pgbak.join("pgbak.lock").exists(),
        "a refused command wrote into $PGBAK"
    );
}

#[test]
fn a_sticky_world_writable_pgbak_is_refused_too() {
    // The sticky bit keeps others from removing pgbak's files, but not from creating the
    // config.toml that is not there yet.
    let pgbak = Pgbak::new("strict-1777");
    pgbak.chmod("", 0o1777);
    let output = pgbak.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output
            .stderr
            .contains("writable by group and others (mode 1777, "),
        "{}",
        output.stderr
    );
}

#[test]
fn a_group_writable_config_is_refused_naming_it() {
    let pgbak = Pgbak::new("strict-config");
    write_script(&pgbak);
    let config = pgbak.join("config.toml");
    write_private(&config, "[pg_basebackup]\npath = \"/bin/false\"\n");
    pgbak.chmod("config.toml", 0o664);
    let output = pgbak.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        output.stderr,
        format!(
            "pgbak: {}: writable by group (mode 0664, owner {}); {REFUSAL}\n\
             hint: chmod go-w {}\n",
            config.display(),
            me(),
            config.display()
        )
    );
}

#[test]
fn an_others_writable_backup_script_is_refused() {
    let pgbak = Pgbak::new("strict-script-mode");
    write_script(&pgbak);
    pgbak.chmod("scripts/backup", 0o702);
    let output = pgbak.run(&["force-sync"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stderr.starts_with(&format!(
            "pgbak: {}: writable by others (mode 0702, ",
            pgbak.join("scripts/backup").display()
        )),
        "{}",
        output.stderr
    );
}

#[test]
fn scripts_owned_by_another_user_is_refused_naming_both_users() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let pgbak = Pgbak::new("strict-chown");
    write_script(&pgbak);
    let scripts = pgbak.join("scripts");
    std::os::unix::fs::chown(&scripts, Some(nobody.uid.as_raw()), None).unwrap();
    let output = pgbak.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        output.stderr,
        format!(
            "pgbak: {}: owned by user nobody (uid {}), not by {}, the owner of PGBAK \
             (mode 0700); {REFUSAL}\n\
             hint: as root: chown -R {} {}\n",
            scripts.display(),
            nobody.uid,
            me(),
            my_name(),
            scripts.display()
        )
    );
}

#[test]
fn a_backup_script_symlinked_to_bin_true_is_accepted() {
    // The seed: "If no remote backups are desired, it can simply be a symlink to /bin/true."
    // The link belongs to the owner of PGBAK; /bin/true belongs to root and only root can
    // write it. Link modes mean nothing on Linux (always 0777).
    let pgbak = Pgbak::new("strict-bin-true");
    pgbak.link_script_to_bin_true();
    pgbak.fake_pg_basebackup();
    // A whole sync: the first base backup, then the script (which is /bin/true) for it.
    let output = pgbak.run(&["force-sync"]);
    assert!(output.status.success(), "{}", output.stderr);
    let output = pgbak.run(&["status", "--json"]);
    assert!(output.status.success(), "{}", output.stderr);
    let json: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let codes: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert!(!codes.contains(&"insecure_permissions"), "{codes:?}");
}

#[test]
fn a_backup_script_symlinked_to_a_file_others_can_write_is_refused() {
    let pgbak = Pgbak::new("strict-link-target");
    let target = pgbak.join("elsewhere.sh");
    fs::write(&target, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).unwrap();
    let link = pgbak.join("scripts/backup");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = pgbak.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        output.stderr,
        format!(
            "pgbak: {}: its target {} is writable by group and others (mode 0777, owner {}); \
             {REFUSAL}\n\
             hint: chmod go-w {}\n",
            link.display(),
            target.display(),
            me(),
            target.display()
        )
    );
}

#[test]
fn a_backup_script_symlinked_to_a_file_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let pgbak = Pgbak::new("strict-link-owner");
    let target = pgbak.join("theirs.sh");
    fs::write(&target, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&target, Some(nobody.uid.as_raw()), None).unwrap();
    let link = pgbak.join("scripts/backup");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let output = pgbak.run(&["sync"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stderr.starts_with(&format!(
            "pgbak: {}: its target {} is owned by user nobody (uid {}), neither {}, the owner \
             of PGBAK, nor root (mode 0755); ",
            link.display(),
            target.display(),
            nobody.uid,
            me()
        )),
        "{}",
        output.stderr
    );
}

#[test]
fn a_dangling_backup_script_link_is_not_a_permission_problem() {
    // A missing script is S-5.3's business (retried, reported by status), not S-1.5's.
    let pgbak = Pgbak::new("strict-dangling");
    std::os::unix::fs::symlink("/nonexistent/pgbak-script", pgbak.join("scripts/backup")).unwrap();
    // `wait` is refused like `sync` by an insecure PGBAK, and otherwise returns at once here.
    let output = pgbak.run(&["wait", "1"]);
    assert!(output.status.success(), "{}", output.stderr);
}

#[test]
fn init_sets_0700_on_an_existing_world_writable_pgbak_and_says_so() {
    let pgbak = Pgbak::new("strict-init");
    pgbak.chmod("", 0o777);
    let output = pgbak.run(&["init"]);
    assert!(output.status.success(), "{}", output.stderr);
    let stdout = &output.stdout;
    assert!(
        stdout.contains(&format!(
            "  mode set to 0700 {} (it was 0777: others could write it)\n",
            pgbak.0.display()
        )),
        "{stdout}"
    );
    let mode = fs::metadata(&pgbak.0).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    // And now the other commands accept it.
    let output = pgbak.run(&["status"]);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        !output.stdout.contains("insecure_permissions"),
        "{}",
        output.stdout
    );
}

#[test]
fn init_warns_about_what_it_does_not_repair() {
    let pgbak = Pgbak::new("strict-init-warn");
    let config = pgbak.join("config.toml");
    write_private(&config, "");
    pgbak.chmod("config.toml", 0o666);
    let output = pgbak.run(&["init"]);
    assert!(output.status.success(), "{}", output.stderr);
    let stdout = &output.stdout;
    assert!(
        stdout.contains(&format!(
            "\nWarning: {}: writable by group and others (mode 0666, owner {}); {REFUSAL}\n\
             To repair: chmod go-w {}\n",
            config.display(),
            me(),
            config.display()
        )),
        "{stdout}"
    );
}

#[test]
fn status_reports_insecure_permissions_instead_of_failing() {
    let pgbak = Pgbak::new("strict-status");
    write_script(&pgbak);
    pgbak.chmod("", 0o770);
    pgbak.chmod("scripts", 0o757);

    let output = pgbak.run(&["status", "--json"]);
    assert!(output.status.success(), "{}", output.stderr);
    let json: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    let insecure: Vec<String> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["code"] == "insecure_permissions")
        .map(|p| p["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        insecure,
        [
            format!(
                "{}: writable by group (mode 0770, owner {}); {REFUSAL}; to repair: chmod 0700 \
                 {} (pgbak init does it)",
                pgbak.0.display(),
                me(),
                pgbak.0.display()
            ),
            format!(
                "{}: writable by others (mode 0757, owner {}); {REFUSAL}; to repair: chmod go-w \
                 {}",
                pgbak.join("scripts").display(),
                me(),
                pgbak.join("scripts").display()
            ),
        ]
    );

    let output = pgbak.run(&["status"]);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stdout.contains("insecure_permissions"),
        "{}",
        output.stdout
    );
}

#[test]
fn status_still_refuses_a_pgbak_of_another_user() {
    // S-1.4 is not relaxed for status: only S-1.5 turns into a reported problem.
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let pgbak = Pgbak::new("strict-status-owner");
    std::os::unix::fs::chown(&pgbak.0, Some(nobody.uid.as_raw()), None).unwrap();
    let output = pgbak.run(&["status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stderr.contains("is owned by user nobody"),
        "{}",
        output.stderr
    );
}
