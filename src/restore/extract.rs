//! Safe extraction of `base.tzst` into DEST (S-8.1): one stream, zstd decoder → tar reader →
//! the files, with no temporary copy of anything.
//!
//! Owns: [`extract_tzst`], [`extract_tar`] and the checks every member passes before a byte
//! of it is written.
//!
//! Invariants:
//! - Nothing is ever written outside DEST. Each member is checked first, and refused (the
//!   whole restore fails, naming the member) when it is: an absolute path, a path with a
//!   `..` component, a hard link (PostgreSQL never writes one), a character or block device,
//!   a FIFO, a sparse or unknown entry, a symlink whose target (resolved from the symlink's
//!   own directory, inside DEST) leaves DEST or passes through another symlink, or a member
//!   whose parent path goes through a symlink extracted before. PostgreSQL writes symlinks
//!   only for tablespaces, under `pg_tblspc/`, and `pg_basebackup` to stdout (what `pgbak
//!   sync` runs) refuses a cluster with tablespaces, so a base backup of pgbak's has none.
//! - Independently of those checks, nothing written here follows a symlink: every directory
//!   on the way to a member is opened with `openat(O_NOFOLLOW | O_DIRECTORY)` from DEST's
//!   descriptor, and every file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`. So even a
//!   symlink that got past the checks could not redirect a write. `tar`'s own `unpack_in` is
//!   not used: only its header parsing (ustar, GNU long names, pax) is.
//! - A member is never written twice: `O_EXCL` refuses a name that is already there.
//! - Modes come from the tar (permission bits only: set-id and sticky bits are dropped);
//!   directories keep at least 0700 for their owner so the rest of the tree can be written.
//!   Owner: the running user. Modification times are not restored: PostgreSQL reads none.
//! - The zstd stream is read to its very end after the tar's end-of-archive blocks, so the
//!   checksum of its last frame is checked too; a member shorter than its header says is an
//!   error (a truncated archive never becomes a shorter file).
//! - Fast: the zstd decoder runs on its own thread a few 1 MiB chunks ahead of the tar reader
//!   and the writes (as `tar` piped from `zstd` does with two processes); 1 MiB buffers
//!   throughout; no per-file fsync (the caller syncs the file system once at the end).

use crate::restore::error::RestoreError;
use crate::restore::progress::Progress;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

/// Bytes read from `base.tzst` at a time (compressed side).
pub(crate) const READ_BUFFER_BYTES: usize = 1 << 20;
/// Bytes moved from the tar stream into a file at a time (decompressed side).
pub(crate) const COPY_BUFFER_BYTES: usize = 1 << 20;
/// Mode of a directory the tar does not list but a member needs (PostgreSQL's own).
const IMPLICIT_DIRECTORY_MODE: u32 = 0o700;

/// What an extraction wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ExtractReport {
    /// Bytes of file content written.
    pub bytes: u64,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
}

/// Extracts `base_tzst` (a zstd-compressed tar, frames of any number) into `dest`, which the
/// caller has taken (see `dest.rs`) and may already hold `pg_wal/`.
pub(crate) fn extract_tzst(
    base_tzst: &Path,
    dest: &Path,
    progress: &Progress,
) -> Result<ExtractReport, RestoreError> {
    let file = File::open(base_tzst).map_err(RestoreError::io("opening", base_tzst))?;
    let source_failed = Arc::new(AtomicBool::new(false));
    let source = TaggedSource {
        file,
        failed: Arc::clone(&source_failed),
    };
    let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        source,
    ))
    .map_err(RestoreError::io("starting to decompress", base_tzst))?;
    let stream_error = |source: io::Error| {
        if source_failed.load(Ordering::Relaxed) {
            RestoreError::Io {
                path: base_tzst.to_owned(),
                operation: "reading",
                source,
            }
        } else {
            RestoreError::BaseDamaged {
                base: base_tzst.to_owned(),
                source,
            }
        }
    };
    // Decompression on its own thread, a few chunks ahead of the writes (what `tar` piped
    // from `zstd` gets from two processes): the extraction costs the slower of the two, not
    // their sum.
    std::thread::scope(|scope| {
        let stream = ReadAhead::spawn(scope, decoder);
        extract_tar(stream, base_tzst, dest, progress, &stream_error)
    })
}

/// Chunks read ahead of the consumer.
const READ_AHEAD_CHUNKS: usize = 4;

/// A reader whose source is read on another thread, [`READ_AHEAD_CHUNKS`] chunks of
/// [`COPY_BUFFER_BYTES`] ahead. Errors arrive in order, after the bytes read before them; when
/// the reader is dropped the thread stops at its next chunk.
struct ReadAhead {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    empties: mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    ended: bool,
}

impl ReadAhead {
    fn spawn<'scope, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        mut source: R,
    ) -> ReadAhead {
        let (chunk_sender, chunks) = mpsc::sync_channel(READ_AHEAD_CHUNKS);
        let (empties, empty_receiver) = mpsc::sync_channel::<Vec<u8>>(READ_AHEAD_CHUNKS + 1);
        scope.spawn(move || {
            loop {
                let mut chunk = empty_receiver
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(COPY_BUFFER_BYTES));
                chunk.resize(COPY_BUFFER_BYTES, 0);
                let mut filled = 0;
                let outcome = loop {
                    match source.read(&mut chunk[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(read) => {
                            filled += read;
                            if filled == chunk.len() {
                                break Ok(());
                            }
                        }
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(error) => break Err(error),
                    }
                };
                chunk.truncate(filled);
                let last = filled == 0 || outcome.is_err();
                if filled > 0 && chunk_sender.send(Ok(chunk)).is_err() {
                    return; // the reader is gone
                }
                if let Err(error) = outcome {
                    let _ = chunk_sender.send(Err(error));
                    return;
                }
                if last {
                    return; // end of stream: the closed channel says so
                }
            }
        });
        ReadAhead {
            chunks,
            empties,
            current: Vec::new(),
            position: 0,
            ended: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    let _ = self.empties.try_send(used);
                    self.position = 0;
                }
                Ok(Err(error)) => {
                    self.ended = true;
                    return Err(error);
                }
                Err(mpsc::RecvError) => {
                    self.ended = true;
                    return Ok(0);
                }
            }
        }
        let count = buffer.len().min(self.current.len() - self.position);
        buffer[..count].copy_from_slice(&self.current[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

/// The compressed file, remembering whether reading it failed: an error coming out of the
/// decoder is then an I/O error (the copy may be fine), else the stream itself is damaged.
struct TaggedSource {
    file: File,
    failed: Arc<AtomicBool>,
}

impl Read for TaggedSource {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.file
            .read(buffer)
            .inspect_err(|_| self.failed.store(true, Ordering::Relaxed))
    }
}

/// Extracts a tar stream into `dest`; `base` names it in messages, `stream_error` classifies
/// an error reading the stream.
pub(crate) fn extract_tar<R: Read>(
    stream: R,
    base: &Path,
    dest: &Path,
    progress: &Progress,
    stream_error: &dyn Fn(io::Error) -> RestoreError,
) -> Result<ExtractReport, RestoreError> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        dest,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| RestoreError::io("opening", dest)(errno.into()))?;
    let mut extractor = Extractor {
        base,
        dest,
        root,
        symlinks: BTreeSet::new(),
        traversed: BTreeSet::new(),
        parent_cache: None,
        buffer: vec![0; COPY_BUFFER_BYTES],
        report: ExtractReport::default(),
    };
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        extractor.member(&mut entry, progress, stream_error)?;
    }
    // After the end-of-archive blocks: the rest of the zstd stream (padding), read to its end
    // so that a damaged last frame or trailing garbage is found (the frame checksum).
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(stream_error)?;
    Ok(extractor.report)
}

struct Extractor<'a> {
    base: &'a Path,
    dest: &'a Path,
    /// DEST, opened once: every path below is resolved from here, component by component.
    root: OwnedFd,
    /// Symlinks extracted so far (paths relative to DEST).
    symlinks: BTreeSet<PathBuf>,
    /// Every path some extracted symlink's target passes through or names: a symlink created
    /// there later would change where that earlier symlink leads.
    traversed: BTreeSet<PathBuf>,
    /// The directory of the last member, open: tar lists a directory's files together, so
    /// most members reuse it instead of walking from DEST again.
    parent_cache: Option<(PathBuf, OwnedFd)>,
    buffer: Vec<u8>,
    report: ExtractReport,
}

impl Extractor<'_> {
    fn member<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        progress: &Progress,
        stream_error: &dyn Fn(io::Error) -> RestoreError,
    ) -> Result<(), RestoreError> {
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let base = self.base;
        let refuse = |problem: String| RestoreError::UnsafeMember {
            base: base.to_owned(),
            member: shown.clone(),
            problem,
        };
        let path = entry
            .path()
            .map_err(|error| refuse(format!("unreadable path: {error}")))?
            .into_owned();
        let components = relative_components(&path).map_err(|problem| refuse(problem.into()))?;
        let kind = entry.header().entry_type();
        let mode = entry
            .header()
            .mode()
            .map_err(|error| refuse(format!("unreadable mode: {error}")))?
            & 0o777;
        use tar::EntryType;
        match kind {
            EntryType::XGlobalHeader => return Ok(()),
            EntryType::Link => {
                return Err(refuse("a hard link (PostgreSQL never writes one)".into()));
            }
            EntryType::Char => return Err(refuse("a character device".into())),
            EntryType::Block => return Err(refuse("a block device".into())),
            EntryType::Fifo => return Err(refuse("a FIFO".into())),
            EntryType::GNUSparse => {
                return Err(refuse(
                    "a sparse file (pg_basebackup never writes one)".into(),
                ));
            }
            EntryType::Directory
            | EntryType::Regular
            | EntryType::Continuous
            | EntryType::Symlink => {}
            other => {
                return Err(refuse(format!(
                    "an entry of unknown type {:?}",
                    char::from(other.as_byte())
                )));
            }
        }
        let Some((name, parent)) = components.split_last() else {
            // `./`: DEST itself, which exists already with the mode PostgreSQL wants.
            return if kind == EntryType::Directory {
                Ok(())
            } else {
                Err(refuse("an empty path".into()))
            };
        };
        let relative: PathBuf = components.iter().collect();
        for depth in 1..components.len() {
            let ancestor: PathBuf = components[..depth].iter().collect();
            if self.symlinks.contains(&ancestor) {
                return Err(refuse(format!(
                    "its path goes through {}, a symlink extracted before",
                    ancestor.display()
                )));
            }
        }
        let parent_fd = self.open_parent(parent).map_err(|failure| match failure {
            Walk::Refused(problem) => refuse(problem),
            Walk::Io(error) => {
                RestoreError::io("opening the directory of", self.dest.join(&relative))(error)
            }
        })?;
        let result = match kind {
            EntryType::Directory => self.directory(&parent_fd, name, &relative, mode, &refuse),
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|error| refuse(format!("unreadable symlink target: {error}")))?
                    .ok_or_else(|| refuse("a symlink without a target".into()))?
                    .into_owned();
                self.check_symlink(&components, &target).map_err(refuse)?;
                match nix::unistd::symlinkat(&target, &parent_fd, name.as_os_str()) {
                    Ok(()) => {
                        self.report.symlinks += 1;
                        Ok(())
                    }
                    Err(Errno::EEXIST) => Err(refuse(ALREADY_THERE.into())),
                    Err(errno) => Err(RestoreError::io(
                        "creating the symlink",
                        self.dest.join(&relative),
                    )(errno.into())),
                }
            }
            _ => self.file(
                &parent_fd,
                name,
                &relative,
                mode,
                entry,
                progress,
                stream_error,
                &refuse,
            ),
        };
        self.parent_cache = Some((parent.iter().collect(), parent_fd));
        result
    }

    /// The directory `parent` (relative to DEST), walked one component at a time without
    /// following symlinks; a missing directory is created (0700), as tar does.
    fn open_parent(&mut self, parent: &[OsString]) -> Result<OwnedFd, Walk> {
        let wanted: PathBuf = parent.iter().collect();
        if let Some((cached, fd)) = self.parent_cache.take() {
            if cached == wanted {
                return Ok(fd);
            }
        }
        let mut current = self.root.try_clone().map_err(Walk::Io)?;
        for (depth, component) in parent.iter().enumerate() {
            let shown = || {
                parent[..=depth]
                    .iter()
                    .collect::<PathBuf>()
                    .display()
                    .to_string()
            };
            current = match open_directory(&current, component) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(
                        &current,
                        component.as_os_str(),
                        Mode::from_bits_truncate(IMPLICIT_DIRECTORY_MODE),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(Walk::Io(errno.into())),
                    }
                    self.report.directories += 1;
                    open_directory(&current, component).map_err(|errno| Walk::Io(errno.into()))?
                }
                // O_NOFOLLOW | O_DIRECTORY on a symlink: ELOOP or ENOTDIR, by kernel version.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let what = match fstatat(
                        &current,
                        component.as_os_str(),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                    ) {
                        Ok(stat)
                            if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
                                == SFlag::S_IFLNK =>
                        {
                            "a symlink"
                        }
                        _ => "not a directory",
                    };
                    return Err(Walk::Refused(format!("its parent {} is {what}", shown())));
                }
                Err(errno) => return Err(Walk::Io(errno.into())),
            };
        }
        Ok(current)
    }

    fn directory(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        relative: &Path,
        mode: u32,
        refuse: &dyn Fn(String) -> RestoreError,
    ) -> Result<(), RestoreError> {
        let io_error = |operation| RestoreError::io(operation, self.dest.join(relative));
        match mkdirat(
            parent,
            name,
            Mode::from_bits_truncate(IMPLICIT_DIRECTORY_MODE),
        ) {
            Ok(()) => self.report.directories += 1,
            // Already there: made for an earlier member, or `pg_wal/`, which pgbak creates
            // before extracting so the WAL can be written meanwhile. Fine if a directory.
            Err(Errno::EEXIST) => {
                let stat = fstatat(parent, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|errno| io_error("looking at")(errno.into()))?;
                if !is_directory(&stat) {
                    return Err(refuse(ALREADY_THERE.into()));
                }
            }
            Err(errno) => return Err(io_error("creating the directory")(errno.into())),
        }
        let directory =
            open_directory(parent, name).map_err(|errno| io_error("opening")(errno.into()))?;
        // The owner keeps rwx: a 0500 directory in the tar must not stop its own files.
        fchmod(&directory, Mode::from_bits_truncate(mode | 0o700))
            .map_err(|errno| io_error("setting the mode of")(errno.into()))
    }

    #[allow(clippy::too_many_arguments)]
    fn file<R: Read>(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        relative: &Path,
        mode: u32,
        entry: &mut tar::Entry<'_, R>,
        progress: &Progress,
        stream_error: &dyn Fn(io::Error) -> RestoreError,
        refuse: &dyn Fn(String) -> RestoreError,
    ) -> Result<(), RestoreError> {
        let path = self.dest.join(relative);
        let fd = match openat(
            parent,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => return Err(refuse(ALREADY_THERE.into())),
            Err(errno) => return Err(RestoreError::io("creating", path)(errno.into())),
        };
        let mut file = File::from(fd);
        let expected = entry.size();
        let mut written = 0u64;
        loop {
            let read = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(stream_error(error)),
            };
            file.write_all(&self.buffer[..read])
                .map_err(RestoreError::io("writing", &path))?;
            written += read as u64;
            progress
                .base_bytes
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        if written != expected {
            return Err(RestoreError::MemberTruncated {
                base: self.base.to_owned(),
                member: relative.display().to_string(),
                expected,
                found: written,
            });
        }
        fchmod(&file, Mode::from_bits_truncate(mode))
            .map_err(|errno| RestoreError::io("setting the mode of", &path)(errno.into()))?;
        self.report.files += 1;
        self.report.bytes += written;
        Ok(())
    }

    /// Whether a symlink at `components` pointing at `target` stays inside DEST; remembers it.
    fn check_symlink(&mut self, components: &[OsString], target: &Path) -> Result<(), String> {
        let shown = target.display();
        if target.as_os_str().is_empty() {
            return Err("a symlink with an empty target".into());
        }
        if target.has_root() {
            return Err(format!(
                "a symlink to {shown}, outside the destination (pgbak restores no tablespaces)"
            ));
        }
        let own: PathBuf = components.iter().collect();
        if self.traversed.contains(&own) {
            return Err(format!(
                "a symlink to {shown} at a path an earlier symlink's target goes through"
            ));
        }
        let mut resolved: Vec<&OsStr> = components[..components.len() - 1]
            .iter()
            .map(OsString::as_os_str)
            .collect();
        let mut visited = Vec::new();
        for component in target.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    if resolved.pop().is_none() {
                        return Err(format!(
                            "a symlink to {shown}, which leaves the destination"
                        ));
                    }
                }
                Component::Normal(part) => {
                    resolved.push(part);
                    let here: PathBuf = resolved.iter().collect();
                    if here == own || self.symlinks.contains(&here) {
                        return Err(format!(
                            "a symlink to {shown}, through the symlink {}",
                            here.display()
                        ));
                    }
                    visited.push(here);
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!("a symlink to {shown}, outside the destination"));
                }
            }
        }
        self.traversed.extend(visited);
        self.symlinks.insert(own);
        Ok(())
    }
}

const ALREADY_THERE: &str =
    "already extracted (the name appears twice in the archive, or is a WAL file pgbak writes)";

enum Walk {
    Refused(String),
    Io(io::Error),
}

fn open_directory(parent: &impl AsFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn is_directory(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// A member's path as components below DEST: `.` dropped; absolute or `..` refused.
fn relative_components(path: &Path) -> Result<Vec<OsString>, &'static str> {
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => components.push(part.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("its path has a `..` component, which could leave the destination");
            }
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    Ok(components)
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
