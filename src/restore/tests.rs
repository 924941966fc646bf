//! [`materialize`] end to end on crafted backups: what a good one writes, and that every
//! failure (damaged base, damaged WAL, unsafe member, no data directory, disk full) leaves no
//! half-restored DEST behind.

use super::*;
use crate::restore::wal_file::tests::{SEGMENT_SIZE, archived, segment_bytes};
use crate::test_support::ScratchDirectory;
use std::fs;
use std::io::Write;

/// A tar like `pg_basebackup -Ft -X none` writes: `PG_VERSION`, `global/pg_control`, the empty
/// `pg_wal/`, and `extra` (name, bytes) files under `base/1/`.
fn base_tar(extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut directory = |name: &str| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o700);
        header.set_size(0);
        builder.append_data(&mut header, name, &[][..]).unwrap();
    };
    directory("global");
    directory("pg_wal");
    directory("base");
    directory("base/1");
    let mut file = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o600);
        header.set_size(bytes.len() as u64);
        builder.append_data(&mut header, name, bytes).unwrap();
    };
    file("PG_VERSION", b"15\n");
    for (name, bytes) in extra {
        file(&format!("base/1/{name}"), bytes);
    }
    file("global/pg_control", &[3; 8192]);
    builder.into_inner().unwrap()
}

/// `tar` compressed with checksums (as the zstd CLI writes), in frames of 64 KiB.
fn compressed(tar: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in tar.chunks(64 * 1024) {
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(frame).unwrap();
        out.extend(encoder.finish().unwrap());
    }
    out
}

/// Bytes that do not compress (so a damaged spot lands in the middle of real data).
fn noise(length: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct Backup {
    scratch: ScratchDirectory,
    base: PathBuf,
    wal: Vec<(WalFileName, PathBuf)>,
}

fn backup(label: &str, tzst: &[u8], segments: u64) -> Backup {
    let scratch = ScratchDirectory::new(label);
    let directory = scratch.0.join("20261202T140300Z");
    fs::create_dir_all(directory.join("pg_wal")).unwrap();
    let base = directory.join("base.tzst");
    fs::write(&base, tzst).unwrap();
    let wal = (2..2 + segments)
        .map(|segment| {
            let name = format!("0000000100000000000000{segment:02X}");
            let source = archived(
                &directory.join("pg_wal"),
                &name,
                &segment_bytes(&name, None),
            );
            (WalFileName::parse(&name).unwrap(), source)
        })
        .collect();
    Backup { scratch, base, wal }
}

fn request<'a>(backup: &'a Backup, dest: &'a Path) -> Materialize<'a> {
    Materialize {
        dest,
        base_tzst: &backup.base,
        wal: backup.wal.clone(),
        segment_size: SEGMENT_SIZE,
        recovery: None,
        jobs: 2,
        sync: true,
        progress: false,
    }
}

#[test]
fn a_plain_restore_writes_the_base_and_the_wal_and_no_signal_file() {
    let backup = backup(
        "materialize-plain",
        &compressed(&base_tar(&[("1259", noise(300_000))])),
        4,
    );
    let dest = backup.scratch.0.join("restored");
    let report = materialize(request(&backup, &dest)).unwrap();
    assert_eq!(report.base.files, 3);
    assert_eq!(report.base.bytes, 3 + 300_000 + 8192);
    assert_eq!(
        report.wal,
        WalPoolReport {
            files: 4,
            bytes: 4 * SEGMENT_SIZE
        }
    );
    assert_eq!(report.sync, Some(SyncMethod::Syncfs));
    assert_eq!(report.signal_file, None);
    assert_eq!(fs::read(dest.join("base/1/1259")).unwrap(), noise(300_000));
    for (name, _) in &backup.wal {
        assert_eq!(
            fs::read(dest.join("pg_wal").join(name.as_str())).unwrap(),
            segment_bytes(name.as_str(), None)
        );
    }
    assert!(!dest.join("recovery.signal").exists());
    assert!(!dest.join(recovery_settings::AUTO_CONF).exists());
}

#[test]
fn a_restore_with_settings_writes_the_block_and_the_signal_file() {
    let backup = backup("materialize-settings", &compressed(&base_tar(&[])), 0);
    let dest = backup.scratch.0.join("restored");
    let settings = RecoverySettings {
        pgbak: "/usr/bin/pgbak".into(),
        source: backup.scratch.0.clone(),
        target: Some(RecoveryTarget::Immediate),
        target_action: None,
        target_timeline: None,
        standby: false,
        primary_conninfo: None,
    };
    let report = materialize(Materialize {
        recovery: Some(settings),
        ..request(&backup, &dest)
    })
    .unwrap();
    assert_eq!(report.signal_file, Some("recovery.signal"));
    assert!(dest.join("recovery.signal").is_file());
    let conf = fs::read_to_string(dest.join(recovery_settings::AUTO_CONF)).unwrap();
    assert!(conf.contains("recovery_target = 'immediate'\n"), "{conf}");
}

fn assert_gone(dest: &Path) {
    assert!(!dest.exists(), "{} was left behind", dest.display());
}

#[test]
fn a_base_damaged_mid_stream_leaves_no_dest() {
    let tzst = compressed(&base_tar(&[("1259", noise(400_000))]));
    let mut flipped = tzst.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (label, bytes) in [
        ("flipped", flipped),
        ("truncated", tzst[..tzst.len() / 2].to_vec()),
    ] {
        let backup = backup(&format!("materialize-damaged-base-{label}"), &bytes, 3);
        let dest = backup.scratch.0.join("restored");
        let error = materialize(request(&backup, &dest)).unwrap_err();
        assert!(
            matches!(
                error,
                RestoreError::BaseDamaged { .. } | RestoreError::MemberTruncated { .. }
            ),
            "{label}: {error:?}"
        );
        assert_gone(&dest);
        // Given an empty directory: it stays, empty.
        fs::create_dir(&dest).unwrap();
        materialize(request(&backup, &dest)).unwrap_err();
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "{label}");
    }
}

#[test]
fn a_damaged_wal_file_fails_the_restore_and_leaves_no_dest() {
    let mut backup = backup("materialize-damaged-wal", &compressed(&base_tar(&[])), 3);
    let (name, source) = backup.wal[1].clone();
    let short = archived(
        source.parent().unwrap(),
        name.as_str(),
        &segment_bytes(name.as_str(), None)[..5000],
    );
    backup.wal[1].1 = short;
    let dest = backup.scratch.0.join("restored");
    let error = materialize(request(&backup, &dest)).unwrap_err();
    assert!(
        matches!(&error, RestoreError::Wal(wal) if wal.is_damaged()),
        "{error:?}"
    );
    assert_gone(&dest);
}

#[test]
fn an_unsafe_member_fails_the_restore_with_nothing_outside_dest() {
    let mut tar = base_tar(&[]);
    // Overwrite the end-of-archive blocks with one more member named `../escaped`.
    tar.truncate(tar.len() - 1024);
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..10].copy_from_slice(b"../escaped");
    header.set_mode(0o600);
    header.set_size(0);
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    tar.resize(tar.len() + 1024, 0);
    let backup = backup("materialize-unsafe", &compressed(&tar), 2);
    let dest = backup.scratch.0.join("restored");
    let error = materialize(request(&backup, &dest)).unwrap_err();
    assert!(
        matches!(error, RestoreError::UnsafeMember { .. }),
        "{error:?}"
    );
    assert_gone(&dest);
    assert!(!backup.scratch.0.join("escaped").exists());
    assert_eq!(
        crate::error::one_line(&error),
        format!(
            "{}: member \"../escaped\": its path has a `..` component, which could leave the destination",
            backup.base.display()
        )
    );
}

#[test]
fn a_tar_without_a_data_directory_is_not_a_restore() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(3);
    header.set_mode(0o600);
    builder
        .append_data(&mut header, "README", &b"hi\n"[..])
        .unwrap();
    let backup = backup(
        "materialize-not-data",
        &compressed(&builder.into_inner().unwrap()),
        0,
    );
    let dest = backup.scratch.0.join("restored");
    let error = materialize(request(&backup, &dest)).unwrap_err();
    assert!(
        matches!(error, RestoreError::NotADataDirectory { .. }),
        "{error:?}"
    );
    assert_gone(&dest);
}

#[test]
fn a_full_disk_is_one_clear_error_naming_dest_and_leaves_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let backup = backup(
        "materialize-enospc",
        &compressed(&base_tar(&[("1259", noise(3 << 20))])),
        2,
    );
    let mount_point = backup.scratch.0.join("small");
    fs::create_dir(&mount_point).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .status();
    if !mounted.is_ok_and(|status| status.success()) {
        eprintln!("skipped: mount -t tmpfs failed (no privilege in this container)");
        return;
    }
    let dest = mount_point.join("restored");
    let error = materialize(request(&backup, &dest)).unwrap_err();
    let leftover = dest.exists();
    let _ = std::process::Command::new("umount")
        .arg(&mount_point)
        .status();
    match &error {
        RestoreError::DiskFull {
            dest: named,
            pending_wal_bytes,
            ..
        } => {
            assert_eq!(named, &dest);
            assert!(*pending_wal_bytes <= 2 * SEGMENT_SIZE);
        }
        other => panic!("{other:?}"),
    }
    let line = crate::error::one_line(&error);
    assert!(
        line.starts_with(&format!("destination {}: no space left", dest.display())),
        "{line}"
    );
    use crate::hint::OperatorHint;
    assert!(error.hint().unwrap().starts_with("free space"));
    assert!(!leftover, "the failed restore left {}", dest.display());
}
