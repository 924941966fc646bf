//! Crafted tarballs against [`super::extract_tar`]: what a base backup holds is written as the
//! tar says, and every member that could write outside DEST is refused with nothing written
//! outside it. Headers are written raw where `tar::Builder` itself refuses the path.

use super::*;
use crate::test_support::ScratchDirectory;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// One tar member, written raw: `name` and `link` go straight into the header fields.
struct Member<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    mode: u32,
    data: &'a [u8],
}

fn member<'a>(name: &'a str, kind: tar::EntryType) -> Member<'a> {
    Member {
        name,
        kind,
        link: "",
        mode: if kind == tar::EntryType::Directory {
            0o700
        } else {
            0o600
        },
        data: b"",
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Member<'a> {
    Member {
        data,
        ..member(name, tar::EntryType::Regular)
    }
}

fn symlink<'a>(name: &'a str, link: &'a str) -> Member<'a> {
    Member {
        link,
        ..member(name, tar::EntryType::Symlink)
    }
}

fn tarball(members: &[Member<'_>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for member in members {
        // A sparse member needs GNU's header; tar refuses one in a ustar header.
        let mut header = if member.kind == tar::EntryType::GNUSparse {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        {
            let raw = header.as_old_mut();
            raw.name[..member.name.len()].copy_from_slice(member.name.as_bytes());
            raw.linkname[..member.link.len()].copy_from_slice(member.link.as_bytes());
        }
        header.set_entry_type(member.kind);
        if let Some(gnu) = header.as_gnu_mut() {
            gnu.set_real_size(member.data.len() as u64);
        }
        header.set_mode(member.mode);
        header.set_size(member.data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(member.data);
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    }
    bytes.resize(bytes.len() + 1024, 0);
    bytes
}

struct Setup {
    scratch: ScratchDirectory,
    dest: PathBuf,
}

fn setup(label: &str) -> Setup {
    let scratch = ScratchDirectory::new(label);
    let dest = scratch.0.join("dest");
    fs::create_dir(&dest).unwrap();
    Setup { scratch, dest }
}

fn extract(setup: &Setup, bytes: &[u8]) -> Result<ExtractReport, RestoreError> {
    let progress = Progress::new(false, 0);
    let base = Path::new("base.tzst");
    let damaged = |source| RestoreError::BaseDamaged {
        base: base.to_owned(),
        source,
    };
    extract_tar(
        io::Cursor::new(bytes),
        base,
        &setup.dest,
        &progress,
        &damaged,
    )
}

/// Every path under the scratch directory but outside DEST: none may appear.
fn outside_dest(setup: &Setup) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![setup.scratch.0.clone()];
    while let Some(directory) = stack.pop() {
        for entry in fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            if path == setup.dest {
                continue;
            }
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

fn assert_refused(result: Result<ExtractReport, RestoreError>, member: &str, problem: &str) {
    match result {
        Err(RestoreError::UnsafeMember {
            member: refused,
            problem: said,
            ..
        }) => {
            assert_eq!(refused, member);
            assert!(said.contains(problem), "{said:?} should say {problem:?}");
        }
        other => panic!("{member}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_base_backup_is_written_as_the_tar_says() {
    let setup = setup("extract-base");
    fs::create_dir(setup.dest.join("pg_wal")).unwrap();
    let report = extract(
        &setup,
        &tarball(&[
            member("./", tar::EntryType::Directory),
            file("PG_VERSION", b"15\n"),
            Member {
                mode: 0o750,
                ..member("global/", tar::EntryType::Directory)
            },
            file("global/pg_control", &[7; 8192]),
            // pg_basebackup -X none: an empty pg_wal/ entry, already made by pgbak.
            member("pg_wal/", tar::EntryType::Directory),
            member("pg_wal/archive_status/", tar::EntryType::Directory),
            // No directory entry for base/1: created 0700 on the way.
            Member {
                mode: 0o4755,
                ..file("base/1/1259", b"relation")
            },
            member("pg_tblspc/", tar::EntryType::Directory),
            symlink("pg_tblspc/16384", "../base/1"),
        ]),
    )
    .unwrap();
    assert_eq!(
        report,
        ExtractReport {
            bytes: 3 + 8192 + 8,
            files: 3,
            directories: 5,
            symlinks: 1
        }
    );
    let mode = |path: &str| fs::symlink_metadata(setup.dest.join(path)).unwrap().mode() & 0o7777;
    assert_eq!(fs::read(setup.dest.join("PG_VERSION")).unwrap(), b"15\n");
    assert_eq!(mode("PG_VERSION"), 0o600);
    assert_eq!(mode("global"), 0o750);
    assert_eq!(mode("base/1"), 0o700);
    assert_eq!(mode("base/1/1259"), 0o755, "set-id bits are dropped");
    assert!(setup.dest.join("pg_wal/archive_status").is_dir());
    assert_eq!(
        fs::read_link(setup.dest.join("pg_tblspc/16384")).unwrap(),
        Path::new("../base/1")
    );
    assert!(outside_dest(&setup).is_empty());
}

#[test]
fn a_dot_dot_path_is_refused() {
    let setup = setup("extract-dotdot");
    let result = extract(&setup, &tarball(&[file("../x", b"evil")]));
    assert_refused(result, "../x", "`..`");
    let result = extract(&setup, &tarball(&[file("global/../../x", b"evil")]));
    assert_refused(result, "global/../../x", "`..`");
    assert!(outside_dest(&setup).is_empty());
}

#[test]
fn an_absolute_path_is_refused() {
    let setup = setup("extract-absolute");
    let target = setup.scratch.0.join("x");
    let name = target.to_str().unwrap().to_owned();
    let result = extract(&setup, &tarball(&[file(&name, b"evil")]));
    assert_refused(result, &name, "absolute");
    let result = extract(&setup, &tarball(&[file("/etc/pgbak-test-evil", b"evil")]));
    assert_refused(result, "/etc/pgbak-test-evil", "absolute");
    assert!(!Path::new("/etc/pgbak-test-evil").exists());
    assert!(outside_dest(&setup).is_empty());
}

#[test]
fn a_symlink_leaving_dest_is_refused() {
    let setup = setup("extract-symlink-out");
    for (name, target, problem) in [
        ("root", "/", "outside the destination"),
        ("up", "..", "leaves the destination"),
        ("pg_tblspc/1", "../../outside", "leaves the destination"),
        ("empty", "", "without a target"),
    ] {
        let result = extract(&setup, &tarball(&[symlink(name, target)]));
        assert_refused(result, name, problem);
    }
    assert!(outside_dest(&setup).is_empty());
}

#[test]
fn a_file_through_an_extracted_symlink_is_refused() {
    let setup = setup("extract-through-symlink");
    let result = extract(
        &setup,
        &tarball(&[
            member("inside/", tar::EntryType::Directory),
            symlink("link", "inside"),
            file("link/x", b"through"),
        ]),
    );
    assert_refused(result, "link/x", "a symlink extracted before");
    assert!(!setup.dest.join("inside/x").exists());
    assert!(outside_dest(&setup).is_empty());
}

#[test]
fn symlinks_chained_to_leave_dest_are_refused_in_either_order() {
    // `b -> a/..` is inside while `a` is a directory; with `a -> .` it would be DEST's parent.
    let setup = setup("extract-chained-symlinks");
    let result = extract(&setup, &tarball(&[symlink("b", "a/.."), symlink("a", ".")]));
    assert_refused(result, "a", "an earlier symlink's target goes through");
    let setup = self::setup("extract-chained-symlinks-2");
    let result = extract(&setup, &tarball(&[symlink("a", "."), symlink("b", "a/..")]));
    assert_refused(result, "b", "through the symlink a");
    assert!(outside_dest(&setup).is_empty());
}

#[test]
fn a_write_never_follows_a_symlink_even_one_not_extracted_by_us() {
    // A symlink pgbak did not make (DEST is pgbak's, but defence in depth): the O_NOFOLLOW
    // walk refuses it rather than writing through it.
    let setup = setup("extract-nofollow");
    let outside = setup.scratch.0.join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, setup.dest.join("global")).unwrap();
    let result = extract(&setup, &tarball(&[file("global/pg_control", b"x")]));
    assert_refused(result, "global/pg_control", "is a symlink");
    let result = extract(&setup, &tarball(&[file("global", b"x")]));
    assert_refused(result, "global", "already extracted");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn hard_links_devices_and_fifos_are_refused() {
    let setup = setup("extract-special");
    fs::write(setup.scratch.0.join("secret"), b"x").unwrap();
    let cases = [
        (
            Member {
                link: "PG_VERSION",
                ..member("hard", tar::EntryType::Link)
            },
            "hard link",
        ),
        (member("fifo", tar::EntryType::Fifo), "a FIFO"),
        (member("char", tar::EntryType::Char), "character device"),
        (member("block", tar::EntryType::Block), "block device"),
        (member("sparse", tar::EntryType::GNUSparse), "sparse"),
    ];
    for (refused, problem) in cases {
        let name = refused.name;
        let result = extract(&setup, &tarball(&[file("PG_VERSION", b"15\n"), refused]));
        assert_refused(result, name, problem);
        assert!(!setup.dest.join(name).exists(), "{name}");
        fs::remove_file(setup.dest.join("PG_VERSION")).unwrap();
    }
    assert_eq!(outside_dest(&setup), vec![setup.scratch.0.join("secret")]);
}

#[test]
fn a_member_twice_is_refused() {
    let setup = setup("extract-twice");
    let result = extract(&setup, &tarball(&[file("a", b"1"), file("a", b"2")]));
    assert_refused(result, "a", "appears twice");
    assert_eq!(fs::read(setup.dest.join("a")).unwrap(), b"1");
}

#[test]
fn a_truncated_member_is_an_error_not_a_short_file() {
    let setup = setup("extract-truncated");
    let bytes = tarball(&[file("global/pg_control", &[1; 4000])]);
    let result = extract(&setup, &bytes[..512 + 1000]);
    match result {
        Err(RestoreError::MemberTruncated {
            expected, found, ..
        }) => assert_eq!((expected, found), (4000, 1000)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_tzst_is_read_through_zstd_to_its_end() {
    let setup = setup("extract-tzst");
    let bytes = tarball(&[file("PG_VERSION", b"15\n")]);
    // Two frames, as a multi-threaded zstd writes them.
    let mut compressed = zstd::encode_all(&bytes[..1024], 3).unwrap();
    compressed.extend(zstd::encode_all(&bytes[1024..], 3).unwrap());
    let base = setup.scratch.0.join("base.tzst");
    fs::write(&base, &compressed).unwrap();
    let progress = Progress::new(false, 0);
    let report = extract_tzst(&base, &setup.dest, &progress).unwrap();
    assert_eq!(report.files, 1);
    assert_eq!(progress.base_bytes.load(Ordering::Relaxed), 3);
    // Garbage after the tar's end is found: the stream is read to its end.
    fs::remove_file(setup.dest.join("PG_VERSION")).unwrap();
    compressed.extend_from_slice(b"garbage");
    fs::write(&base, &compressed).unwrap();
    assert!(matches!(
        extract_tzst(&base, &setup.dest, &progress),
        Err(RestoreError::BaseDamaged { .. })
    ));
}
