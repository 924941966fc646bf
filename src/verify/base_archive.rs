//! `base.tzst` checked against the `backup_manifest` inside it (S-8.2): [`check_base`].
//!
//! Owns: the streaming read of the base archive (file → zstd decoder → tar reader → a checksum
//! per member; nothing is ever written to disk), and the comparison of what the tar holds with
//! what the manifest lists.
//!
//! What is checked:
//! - the zstd stream is whole (every frame's checksum; [`super::zstd_frames`] for the header
//!   bits no checksum covers), and the tar in it is complete: every member as long as its
//!   header says, the end-of-archive blocks present;
//! - the manifest's own checksum ([`super::manifest`]); every file it lists is a member with
//!   its size and checksum; every regular member is listed (directories and symbolic links are
//!   not files to the manifest; `backup_manifest` itself is not in it);
//! - `global/pg_control`'s system identifier (its first 8 bytes, `ControlFileData.system_identifier`,
//!   in the server's byte order) agrees with the manifest's `System-Identifier` (version 2, from
//!   PostgreSQL 18); the caller compares it with every WAL segment's header.
//!
//! The manifest comes last in the stream, so the algorithm is not known while members pass by:
//! the first pass computes CRC-32C (pg_basebackup's default, and cheap); only a manifest that
//! names another algorithm costs a second pass for it.
//!
//! Invariants: read-only; memory is the buffers, the member list and the manifest (bounded by
//! [`MANIFEST_BYTES_MAX`]); after a damaged stream nothing more of it is trusted, so only the
//! damage is reported.

use super::manifest::{Algorithm, Checksum, MANIFEST_BYTES_MAX, Manifest};
use super::report::Problem;
use super::zstd_frames::check_frame_headers;
use crate::backup_copy::catalog::open_regular;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes read from the file and moved through the checksums at a time.
const BUFFER_BYTES: usize = 1 << 20;
/// The member pg_basebackup adds to the tar stream.
const MANIFEST_MEMBER: &[u8] = b"backup_manifest";
const PG_CONTROL_MEMBER: &[u8] = b"global/pg_control";
/// A tar block; the archive ends with two zero blocks (POSIX ustar).
const TAR_BLOCK_BYTES: usize = 512;

/// What the base archive turned out to be.
#[derive(Debug, Clone, Default)]
pub struct BaseCheck {
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub members: u64,
    /// From `global/pg_control`.
    pub system_identifier: Option<u64>,
    pub manifest: Option<Manifest>,
    pub problems: Vec<Problem>,
}

/// One regular member as streamed.
#[derive(Debug, Clone)]
struct Member {
    size: u64,
    checksum: String,
}

/// Counts bytes and remembers whether the underlying read failed (so a decoder error can be
/// told apart from an I/O error) — on both sides of the decoder.
struct Counted<R> {
    inner: R,
    bytes: u64,
    failed: bool,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self
            .inner
            .read(buffer)
            .inspect_err(|_| self.failed = true)?;
        self.bytes += read as u64;
        Ok(read)
    }
}

/// What one pass over the stream saw.
#[derive(Default)]
struct Pass {
    members: BTreeMap<Vec<u8>, Member>,
    manifest: Option<Vec<u8>>,
    pg_control_head: Vec<u8>,
    member_count: u64,
    uncompressed_bytes: u64,
    problems: Vec<Problem>,
}

/// Checks `path` (a `base.tzst`) as the module header says; `progress` counts decompressed
/// bytes.
pub fn check_base(path: &Path, progress: &AtomicU64) -> BaseCheck {
    let mut check = BaseCheck::default();
    let unreadable = |what: String| Problem::new("unreadable", path, None, "a readable file", what);
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(error) => {
            check
                .problems
                .push(unreadable(crate::error::one_line(&error)));
            return check;
        }
    };
    let length = match file.metadata() {
        Ok(metadata) => metadata.len(),
        Err(error) => {
            check.problems.push(unreadable(error.to_string()));
            return check;
        }
    };
    check.compressed_bytes = length;
    match check_frame_headers(&file, path, length) {
        Ok(Some(problem)) => check.problems.push(problem),
        Ok(None) => {}
        Err(error) => check.problems.push(unreadable(error.to_string())),
    }
    let first = stream(file, path, progress, &|_| Some(Algorithm::Crc32c));
    check.uncompressed_bytes = first.uncompressed_bytes;
    check.members = first.member_count;
    if !first.problems.is_empty() {
        check.problems.extend(first.problems);
        return check;
    }
    if first.pg_control_head.len() >= 8 {
        check.system_identifier = Some(u64::from_le_bytes(
            first.pg_control_head[..8].try_into().expect("eight bytes"),
        ));
    }
    let member_at = |name: &[u8]| Some(format!("member {}", String::from_utf8_lossy(name)));
    let Some(manifest_bytes) = first.manifest else {
        check.problems.push(Problem::new(
            "no_manifest",
            path,
            member_at(MANIFEST_MEMBER),
            "the backup_manifest pg_basebackup puts into the tar",
            "no such member",
        ));
        return check;
    };
    let manifest = match Manifest::parse(&manifest_bytes) {
        Ok(manifest) => manifest,
        Err(problem) => {
            check.problems.push(Problem::new(
                "bad_manifest",
                path,
                member_at(MANIFEST_MEMBER),
                problem.expected,
                problem.found,
            ));
            return check;
        }
    };
    // Members whose algorithm is not CRC-32C need a second pass.
    let others: BTreeMap<Vec<u8>, Algorithm> = manifest
        .files
        .iter()
        .filter_map(|f| {
            let (algorithm, _) = f.checksum.as_ref()?;
            (*algorithm != Algorithm::Crc32c).then(|| (f.path.clone(), *algorithm))
        })
        .collect();
    let mut computed = first.members;
    if !others.is_empty() {
        let second = open_regular(path)
            .map(|file| stream(file, path, progress, &|name| others.get(name).copied()));
        match second {
            Ok(second) if second.problems.is_empty() => {
                for (name, member) in second.members {
                    computed.insert(name, member);
                }
            }
            Ok(second) => check.problems.extend(second.problems),
            Err(error) => check
                .problems
                .push(unreadable(crate::error::one_line(&error))),
        }
    }
    for file in &manifest.files {
        let at = member_at(&file.path);
        let Some(member) = computed.remove(&file.path) else {
            check.problems.push(Problem::new(
                "member_missing",
                path,
                at,
                "the member (backup_manifest lists it)",
                "no such member",
            ));
            continue;
        };
        if member.size != file.size {
            check.problems.push(Problem::new(
                "member_size",
                path,
                at.clone(),
                format!("{} bytes (backup_manifest)", file.size),
                format!("{} bytes", member.size),
            ));
        }
        if let Some((algorithm, expected)) = &file.checksum
            && *expected != member.checksum
        {
            check.problems.push(Problem::new(
                "member_checksum",
                path,
                at,
                format!("{} {expected} (backup_manifest)", algorithm.name()),
                format!("{} {}", algorithm.name(), member.checksum),
            ));
        }
    }
    for name in computed.keys() {
        check.problems.push(Problem::new(
            "member_unlisted",
            path,
            member_at(name),
            "only the files backup_manifest lists",
            "a file it does not list",
        ));
    }
    match (manifest.system_identifier, check.system_identifier) {
        (Some(expected), Some(found)) if expected != found => {
            check.problems.push(Problem::new(
                "system_identifier",
                path,
                member_at(PG_CONTROL_MEMBER),
                format!("system identifier {expected} (backup_manifest)"),
                format!("{found}"),
            ));
        }
        _ => {}
    }
    check.manifest = Some(manifest);
    check
}

/// One pass over the stream: each regular member's size and its checksum in the algorithm
/// `algorithm_of` names (`None`: only its size), the manifest's bytes, pg_control's head.
fn stream(
    file: File,
    path: &Path,
    progress: &AtomicU64,
    algorithm_of: &dyn Fn(&[u8]) -> Option<Algorithm>,
) -> Pass {
    let mut pass = Pass::default();
    let compressed = Counted {
        inner: file,
        bytes: 0,
        failed: false,
    };
    let decoder = match zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        BUFFER_BYTES,
        compressed,
    )) {
        Ok(decoder) => decoder,
        Err(error) => {
            pass.problems.push(Problem::new(
                "unreadable",
                path,
                None,
                "a zstd decoder",
                error.to_string(),
            ));
            return pass;
        }
    };
    let decompressed = Counted {
        inner: decoder,
        bytes: 0,
        failed: false,
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(BUFFER_BYTES, decompressed));
    let mut buffer = vec![0u8; BUFFER_BYTES];
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(error) => {
            let problem =
                Problem::new("tar_damaged", path, None, "a tar stream", error.to_string());
            pass.problems.push(problem);
            return pass;
        }
    };
    let mut failure = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                failure = Some(error);
                break;
            }
        };
        pass.member_count += 1;
        let name = entry.path_bytes().into_owned();
        let header_size = entry.size();
        use tar::EntryType;
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {}
            EntryType::Directory | EntryType::Symlink | EntryType::XGlobalHeader => continue,
            other => {
                pass.problems.push(Problem::new(
                    "member_type",
                    path,
                    Some(format!("member {}", String::from_utf8_lossy(&name))),
                    "a regular file, directory or symbolic link (what pg_basebackup writes)",
                    format!("{other:?}"),
                ));
                continue;
            }
        }
        let is_manifest = name == MANIFEST_MEMBER;
        let is_pg_control = name == PG_CONTROL_MEMBER;
        let mut checksum = algorithm_of(&name).map(Checksum::new);
        let mut manifest = Vec::new();
        let mut size = 0u64;
        loop {
            let read = match entry.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let chunk = &buffer[..read];
            size += read as u64;
            progress.fetch_add(read as u64, Ordering::Relaxed);
            if is_manifest {
                if size > MANIFEST_BYTES_MAX {
                    failure = Some(io::Error::other("backup_manifest larger than 1 GiB"));
                    break;
                }
                manifest.extend_from_slice(chunk);
            } else if let Some(checksum) = &mut checksum {
                checksum.update(chunk);
            }
            if is_pg_control && pass.pg_control_head.len() < 8 {
                let room = (8 - pass.pg_control_head.len()).min(chunk.len());
                pass.pg_control_head.extend_from_slice(&chunk[..room]);
            }
        }
        if failure.is_some() {
            break;
        }
        if size != header_size {
            pass.problems.push(Problem::new(
                "tar_damaged",
                path,
                Some(format!("member {}", String::from_utf8_lossy(&name))),
                format!("{header_size} bytes (its tar header)"),
                format!("{size} bytes before the stream ended"),
            ));
            return pass;
        }
        if is_manifest {
            pass.manifest = Some(manifest);
            continue;
        }
        let member = Member {
            size,
            checksum: checksum.map(Checksum::finish_hex).unwrap_or_default(),
        };
        if pass.members.insert(name.clone(), member).is_some() {
            pass.problems.push(Problem::new(
                "member_duplicate",
                path,
                Some(format!("member {}", String::from_utf8_lossy(&name))),
                "each member once",
                "a second member of that name",
            ));
        }
    }
    if let Some(error) = failure {
        pass.problems
            .push(stream_problem(&archive.into_inner(), path, error));
        return pass;
    }
    // The end: tar's reader took the first zero block; the rest must be zero blocks, at least
    // one, and the zstd stream must end cleanly (its last checksum).
    let mut rest = archive.into_inner();
    let mut zero_bytes = 0u64;
    let mut nonzero_at = None;
    loop {
        match rest.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                if nonzero_at.is_none()
                    && let Some(at) = buffer[..read].iter().position(|b| *b != 0)
                {
                    nonzero_at = Some(zero_bytes + at as u64);
                }
                zero_bytes += read as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                pass.problems.push(stream_problem(&rest, path, error));
                return pass;
            }
        }
    }
    pass.uncompressed_bytes = rest.get_ref().bytes;
    if nonzero_at.is_some() || zero_bytes < TAR_BLOCK_BYTES as u64 {
        pass.problems.push(Problem::new(
            "tar_damaged",
            path,
            Some(format!(
                "offset {} of the tar",
                pass.uncompressed_bytes - zero_bytes
            )),
            "the tar's end-of-archive blocks (two blocks of zeros)",
            match nonzero_at {
                Some(at) => format!("data at {at} bytes after the first zero block"),
                None => format!("{zero_bytes} bytes after the last member"),
            },
        ));
    }
    pass
}

type Stream = BufReader<Counted<zstd::stream::read::Decoder<'static, BufReader<Counted<File>>>>>;

/// An error out of the stream, told apart by where it came from: reading the file (I/O: the
/// copy may be fine), the zstd decoder (damage, at about this offset of the compressed file),
/// or else the tar reader (damage of the tar inside a whole zstd stream).
fn stream_problem(stream: &Stream, path: &Path, error: io::Error) -> Problem {
    let decompressed = stream.get_ref();
    let compressed = decompressed.inner.get_ref().get_ref();
    if compressed.failed {
        return Problem::new(
            "unreadable",
            path,
            None,
            "a readable file",
            error.to_string(),
        );
    }
    if decompressed.failed {
        return Problem::new(
            "zstd_damaged",
            path,
            Some(format!("offset {}", compressed.bytes)),
            "a whole zstd stream whose checksums hold",
            error.to_string(),
        );
    }
    Problem::new(
        "tar_damaged",
        path,
        Some(format!("offset {} of the tar", decompressed.bytes)),
        "a complete tar stream",
        error.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::ScratchDirectory;
    use crate::verify::manifest::tests::manifest_text;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn compress(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        io::Write::write_all(&mut encoder, bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn check_tar(tar: &[u8]) -> BaseCheck {
        let scratch = ScratchDirectory::new("verify-base");
        let path = scratch.0.join("base.tzst");
        std::fs::write(&path, compress(tar)).unwrap();
        check_base(&path, &AtomicU64::new(0))
    }

    fn codes(check: &BaseCheck) -> Vec<(&'static str, Option<String>)> {
        check
            .problems
            .iter()
            .map(|p| (p.code, p.at.clone()))
            .collect()
    }

    const CONTROL: &[u8] = &[7, 0, 0, 0, 0, 0, 0, 0, 9, 9];

    #[test]
    fn a_base_that_matches_its_manifest_passes_and_gives_the_system_identifier() {
        let files: &[(&str, &[u8])] = &[("PG_VERSION", b"18\n"), ("global/pg_control", CONTROL)];
        let manifest = manifest_text(files);
        let mut members = files.to_vec();
        members.push(("backup_manifest", manifest.as_bytes()));
        let check = check_tar(&tar_of(&members));
        assert_eq!(codes(&check), vec![]);
        assert_eq!(check.system_identifier, Some(7));
        assert_eq!(check.members, 3);
    }

    #[test]
    fn a_changed_missing_or_unlisted_member_is_named() {
        let files: &[(&str, &[u8])] = &[("PG_VERSION", b"18\n"), ("global/pg_control", CONTROL)];
        let manifest = manifest_text(files);
        let members: Vec<(&str, &[u8])> = vec![
            ("PG_VERSION", b"17\n"),
            ("extra", b"x"),
            ("backup_manifest", manifest.as_bytes()),
        ];
        let check = check_tar(&tar_of(&members));
        let mut found = codes(&check);
        found.sort();
        assert_eq!(
            found,
            vec![
                ("member_checksum", Some("member PG_VERSION".into())),
                ("member_missing", Some("member global/pg_control".into())),
                ("member_unlisted", Some("member extra".into())),
            ]
        );
    }

    #[test]
    fn no_manifest_and_a_tar_without_its_end_are_reported() {
        let tar = tar_of(&[("PG_VERSION", b"18\n")]);
        assert_eq!(codes(&check_tar(&tar))[0].0, "no_manifest");
        // Cut at the end of the member: no end-of-archive blocks.
        let cut = &tar[..1024];
        assert_eq!(codes(&check_tar(cut))[0].0, "tar_damaged");
    }
}
