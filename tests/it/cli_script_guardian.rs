//! The backup script's group leader, `pgbak __script-guardian PROGRAM ARGS…`
//! (src/sync/script_guardian.rs, S-5.4), through the real binary: it mirrors the script's
//! exit status and fatal signal, reports a program it cannot start with exit 126, and on
//! SIGTERM stops its whole process group, children started without `exec` included.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{PGBAK_BINARY, Scratch, has_ended as is_gone};

/// Only so a bug cannot hang the test run; never a statement about speed.
const GENEROUS: Duration = Duration::from_secs(60);

fn guardian(args: &[&str]) -> Command {
    let mut command = Command::new(PGBAK_BINARY);
    command
        .arg("__script-guardian")
        .args(args)
        .stdin(Stdio::null())
        .env_remove("PGBAK");
    command
}

#[test]
fn the_scripts_exit_status_and_fatal_signal_are_mirrored() {
    let exited = guardian(&["/bin/sh", "-c", "exit 7"]).output().unwrap();
    assert_eq!(exited.status.code(), Some(7), "{exited:?}");
    let succeeded = guardian(&["/bin/sh", "-c", "echo shipped"])
        .output()
        .unwrap();
    assert!(succeeded.status.success());
    assert_eq!(String::from_utf8_lossy(&succeeded.stdout), "shipped\n");
    let killed = guardian(&["/bin/sh", "-c", "kill -KILL $$"])
        .output()
        .unwrap();
    assert_eq!(
        killed.status.signal(),
        Some(nix::libc::SIGKILL),
        "{killed:?}"
    );
    let terminated = guardian(&["/bin/sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(
        terminated.status.signal(),
        Some(nix::libc::SIGTERM),
        "{terminated:?}"
    );
}

#[test]
fn a_program_that_cannot_start_is_one_line_and_exit_126() {
    let output = guardian(&["/nonexistent/pgbak-backup-script"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(126), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(
            "pgbak: backup script /nonexistent/pgbak-backup-script could not be started: "
        ) && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn sigterm_stops_the_whole_group_including_children_started_without_exec() {
    let scratch = Scratch::new("guardian");
    let pid_file = scratch.join("sleeper.pid");
    // A naive script: a background child, no trap, waits.
    let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let mut command = guardian(&["/bin/sh", "-c", &script]);
    // As the sync starts it: leader of its own group.
    command.process_group(0);
    let mut leader = command.spawn().unwrap();
    let deadline = Instant::now() + GENEROUS;
    let sleeper: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the script never started its child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // What PR_SET_PDEATHSIG delivers when the sync dies: SIGTERM to the leader only.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = leader.wait().unwrap();
    // The shell died of the SIGTERM the guardian passed to the group; so does the guardian.
    assert_eq!(status.signal(), Some(nix::libc::SIGTERM), "{status:?}");
    while !is_gone(sleeper) {
        if Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(sleeper),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("the script's child {sleeper} outlived the stopped group");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
