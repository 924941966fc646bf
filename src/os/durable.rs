//! Durable, private file and directory creation (S-2.3, S-1.3).
//!
//! Owns: [`fsync_directory`], [`create_private_directory`], [`write_file_durably`] and the
//! streaming [`UnnamedFile`]. Everything pgbak stores in `$PGBAK` is created through here.
//!
//! Invariants kept:
//! - A file appears under its final name only complete and durable, or not at all (S-2.3). The
//!   bytes go to an unnamed `O_TMPFILE` inode, are fsynced, and only then does `linkat` give the
//!   inode a name; the directory is fsynced after so the name itself survives a crash. A crash
//!   before the link leaves nothing behind: an unnamed inode is freed when its last descriptor
//!   closes. There is deliberately no fallback to a named temporary file: that would leave
//!   debris after a crash and break the "never a partial file under any name" guarantee.
//! - An existing name is never replaced: `linkat` fails with `EEXIST`, reported as
//!   [`io::ErrorKind::AlreadyExists`] so callers can compare contents (S-2.4).
//! - Modes are set with `fchmod`/`chmod` after creation, so the result is 0600/0700 (or what the
//!   caller asks) whatever the umask (S-1.3).
//! - Every descriptor opened here is `O_CLOEXEC` (S-3.5: children inherit nothing).
//!
//! Errors are `io::Error`s whose kind is the underlying one (so `AlreadyExists`, `StorageFull`
//! for S-8.5, … can be matched) and whose message names the path and the operation.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::Mode;

/// Where `linkat` finds an unnamed file's inode without `CAP_DAC_READ_SEARCH` (which the
/// `AT_EMPTY_PATH` form needs); see open(2), "O_TMPFILE".
const PROC_SELF_FD: &str = "/proc/self/fd";

/// The mode of a private directory (S-1.3).
pub const PRIVATE_DIRECTORY_MODE: u32 = 0o700;
/// The mode of a private data file (S-1.3).
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Makes the directory's entries (names created, renamed or removed in it) durable.
pub fn fsync_directory(path: &Path) -> io::Result<()> {
    let directory = open_directory(path)?;
    nix::unistd::fsync(&directory).map_err(|errno| annotate(errno, "fsync", path))
}

/// What [`create_private_directory`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryCreation {
    Created,
    /// The directory was already there; its mode was left as the operator set it.
    AlreadyPresent,
}

/// `mkdir` with mode 0700 whatever the umask (S-1.3), then fsync the parent so the new entry
/// is durable. An existing directory (or symlink to one) is accepted and left unchanged, and
/// its parent is fsynced all the same: a crash between another process's `mkdir` and its
/// fsync leaves an entry that exists now but may not survive the next crash, and "already
/// there" must mean "durably there". Anything else under the name is an `AlreadyExists` error.
pub fn create_private_directory(path: &Path) -> io::Result<DirectoryCreation> {
    match std::fs::DirBuilder::new()
        .mode(PRIVATE_DIRECTORY_MODE)
        .create(path)
    {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let metadata =
                std::fs::metadata(path).map_err(|source| annotate_io(source, "stat", path))?;
            if metadata.is_dir() {
                fsync_directory(&parent_of(path))?;
                return Ok(DirectoryCreation::AlreadyPresent);
            }
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                PathError {
                    path: path.to_path_buf(),
                    operation: "mkdir",
                    detail: "exists but is not a directory".into(),
                },
            ));
        }
        Err(source) => return Err(annotate_io(source, "mkdir", path)),
    }
    // mkdir's mode is masked by the umask; chmod is not.
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(PRIVATE_DIRECTORY_MODE),
    )
    .map_err(|source| annotate_io(source, "chmod", path))?;
    fsync_directory(&parent_of(path))?;
    Ok(DirectoryCreation::Created)
}

/// What to do when the name [`write_file_durably`] is asked to create already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Return an [`io::ErrorKind::AlreadyExists`] error; the existing file is untouched.
    Fail,
    /// Leave the existing file as it is and report [`WriteOutcome::KeptExisting`].
    Keep,
}

/// What [`write_file_durably`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    KeptExisting,
}

/// Creates `directory/name` with exactly `bytes` and `mode`, durably and atomically (see the
/// module header). `name` must be a single path component.
pub fn write_file_durably(
    directory: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    existing: Existing,
) -> io::Result<WriteOutcome> {
    let mut file = UnnamedFile::create_in(directory, mode)?;
    file.write_all(bytes)?;
    match file.persist_as(name) {
        Ok(()) => Ok(WriteOutcome::Created),
        Err(error)
            if error.kind() == io::ErrorKind::AlreadyExists && existing == Existing::Keep =>
        {
            // The existing file may itself come from a run that crashed before its directory
            // fsync; making the entry durable now costs one fsync and closes that window.
            fsync_directory(directory)?;
            Ok(WriteOutcome::KeptExisting)
        }
        Err(error) => Err(error),
    }
}

/// A file being written that has no name yet (`O_TMPFILE`): dropped before
/// [`UnnamedFile::persist_as`] or [`UnnamedFile::link_into`], it vanishes without a trace.
///
/// Writes go straight to the descriptor; wrap it in a `BufWriter` (or let zstd's encoder
/// buffer) when writing small pieces.
#[derive(Debug)]
pub struct UnnamedFile {
    file: File,
    directory: OwnedFd,
    directory_path: PathBuf,
    /// True when every byte written so far has been fsynced, so linking into several
    /// directories (S-2.7) fsyncs the data once.
    synced: bool,
}

impl UnnamedFile {
    /// Opens an unnamed file in `directory` with the given mode (set with `fchmod`, so the
    /// umask does not apply). Fails with [`io::ErrorKind::Unsupported`] on a file system or
    /// kernel without `O_TMPFILE` (Linux >= 3.11; ext4, xfs, btrfs, tmpfs have it).
    pub fn create_in(directory: &Path, mode: u32) -> io::Result<UnnamedFile> {
        let directory_descriptor = open_directory(directory)?;
        let permissions = Mode::from_bits_truncate(mode);
        let descriptor = nix::fcntl::open(
            directory,
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            permissions,
        )
        .map_err(|errno| match errno {
            // EOPNOTSUPP: the file system has no O_TMPFILE. EISDIR: the kernel predates it and
            // read the flag as O_DIRECTORY (open(2) documents both).
            Errno::EOPNOTSUPP | Errno::EISDIR => io::Error::new(
                io::ErrorKind::Unsupported,
                PathError {
                    path: directory.to_path_buf(),
                    operation: "open O_TMPFILE",
                    detail: format!(
                        "{errno}: this file system or kernel does not support O_TMPFILE, which \
                         pgbak needs to never leave a partial file behind (S-2.3); put PGBAK on \
                         ext4, xfs, btrfs or tmpfs with Linux 3.11 or later"
                    ),
                },
            ),
            other => annotate(other, "open O_TMPFILE", directory),
        })?;
        nix::sys::stat::fchmod(&descriptor, permissions)
            .map_err(|errno| annotate(errno, "fchmod", directory))?;
        Ok(UnnamedFile {
            file: File::from(descriptor),
            directory: directory_descriptor,
            directory_path: directory.to_path_buf(),
            synced: true,
        })
    }

    /// The open file, e.g. to read back what was written (it is opened read-write).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The directory the file was created in and is linked into by [`UnnamedFile::persist_as`].
    pub fn directory_path(&self) -> &Path {
        &self.directory_path
    }

    /// Gives the file the name `name` in the directory it was created in, durably: fsync the
    /// file, link it, fsync the directory. `AlreadyExists` if the name is taken (never
    /// replaced).
    pub fn persist_as(mut self, name: &str) -> io::Result<()> {
        self.sync_once()?;
        self.link_at(self.directory.as_fd(), &self.directory_path, name)
    }

    /// Links the file as `directory/name` as well (another open backup directory, S-2.7, or
    /// `conflicts/`, S-2.4), durably. The directory must be on the same file system. The file
    /// stays open, so it can be linked again.
    pub fn link_into(&mut self, directory: &Path, name: &str) -> io::Result<()> {
        self.sync_once()?;
        let directory_descriptor = open_directory(directory)?;
        self.link_at(directory_descriptor.as_fd(), directory, name)
    }

    fn sync_once(&mut self) -> io::Result<()> {
        if !self.synced {
            self.file
                .sync_all()
                .map_err(|source| annotate_io(source, "fsync new file in", &self.directory_path))?;
            self.synced = true;
        }
        Ok(())
    }

    fn link_at(
        &self,
        directory: BorrowedFd<'_>,
        directory_path: &Path,
        name: &str,
    ) -> io::Result<()> {
        let method = if Path::new(PROC_SELF_FD).is_dir() {
            LinkMethod::ProcSelfFd
        } else {
            // Without /proc (a chroot, an odd container) only the AT_EMPTY_PATH form is left;
            // it needs CAP_DAC_READ_SEARCH and fails with ENOENT otherwise.
            LinkMethod::EmptyPath
        };
        self.link_at_with(method, directory, directory_path, name)
    }

    fn link_at_with(
        &self,
        method: LinkMethod,
        directory: BorrowedFd<'_>,
        directory_path: &Path,
        name: &str,
    ) -> io::Result<()> {
        check_single_component(name, directory_path)?;
        let target = directory_path.join(name);
        let linked = match method {
            LinkMethod::ProcSelfFd => {
                let proc_path = format!("{PROC_SELF_FD}/{}", self.file.as_raw_fd());
                nix::unistd::linkat(
                    AT_FDCWD,
                    proc_path.as_str(),
                    directory,
                    name,
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
            }
            LinkMethod::EmptyPath => nix::unistd::linkat(
                self.file.as_fd(),
                "",
                directory,
                name,
                AtFlags::AT_EMPTY_PATH,
            ),
        };
        linked.map_err(|errno| annotate(errno, "link", &target))?;
        let synced_directory = nix::unistd::fsync(directory);
        synced_directory.map_err(|errno| annotate(errno, "fsync", directory_path))
    }
}

/// How `linkat` names the unnamed inode (open(2), "O_TMPFILE").
#[derive(Debug, Clone, Copy)]
enum LinkMethod {
    /// `linkat(AT_FDCWD, "/proc/self/fd/N", dir, name, AT_SYMLINK_FOLLOW)`: works for any user.
    ProcSelfFd,
    /// `linkat(fd, "", dir, name, AT_EMPTY_PATH)`: needs CAP_DAC_READ_SEARCH.
    EmptyPath,
}

impl Write for UnnamedFile {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        self.synced = false;
        self.file.write(buffer)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// An I/O error with the path and operation it is about, for messages like
/// `/srv/pgbak/20261124T154307Z/pg_wal/X.zst: link: File exists (os error 17)`.
#[derive(Debug)]
struct PathError {
    path: PathBuf,
    operation: &'static str,
    detail: String,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path.display(),
            self.operation,
            self.detail
        )
    }
}

impl std::error::Error for PathError {}

fn annotate(errno: Errno, operation: &'static str, path: &Path) -> io::Error {
    annotate_io(io::Error::from(errno), operation, path)
}

/// Keeps the error's kind (callers match `AlreadyExists`, `StorageFull`) and adds the path.
fn annotate_io(source: io::Error, operation: &'static str, path: &Path) -> io::Error {
    io::Error::new(
        source.kind(),
        PathError {
            path: path.to_path_buf(),
            operation,
            detail: source.to_string(),
        },
    )
}

fn open_directory(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| annotate(errno, "open directory", path))
}

/// The directory holding `path`'s entry ("." for a bare relative name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        Some(_) => PathBuf::from("."),
        None => PathBuf::from("/"),
    }
}

/// A name with a slash would link somewhere other than the directory the caller fsyncs.
fn check_single_component(name: &str, directory: &Path) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            PathError {
                path: directory.to_path_buf(),
                operation: "link",
                detail: format!("{name:?} is not a single file name"),
            },
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;

    use crate::test_support::ScratchDirectory;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn written_bytes_round_trip_under_the_final_name_only() {
        let scratch = ScratchDirectory::new("round-trip");
        let outcome =
            write_file_durably(&scratch.0, "a.zst", b"hello wal", 0o600, Existing::Fail).unwrap();
        assert_eq!(outcome, WriteOutcome::Created);
        assert_eq!(fs::read(scratch.0.join("a.zst")).unwrap(), b"hello wal");
        assert_eq!(scratch.entries(), ["a.zst"]);
    }

    /// Set in the child process of [`modes_are_exact_whatever_the_umask`]: `UMASK:DIRECTORY`.
    const UMASK_CHILD_VARIABLE: &str = "PGBAK_TEST_UMASK_CHILD";

    #[test]
    fn modes_are_exact_whatever_the_umask() {
        // The umask is process-wide: changing it here would race with every other test in this
        // binary. So each umask gets a child process, this test binary running only
        // `umask_child_process` below.
        let scratch = ScratchDirectory::new("modes");
        let program = std::env::current_exe().unwrap();
        for mask in ["000", "777"] {
            let status = std::process::Command::new(&program)
                .args(["--exact", "os::durable::tests::umask_child_process"])
                .args(["--test-threads=1", "--quiet"])
                .env(
                    UMASK_CHILD_VARIABLE,
                    format!("{mask}:{}", scratch.0.display()),
                )
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "umask {mask}: child test failed");
            let directory = scratch.0.join(mask);
            assert_eq!(mode_of(&directory), 0o700, "umask {mask}");
            assert_eq!(mode_of(&directory.join("private")), 0o600, "umask {mask}");
            assert_eq!(mode_of(&directory.join("script")), 0o700, "umask {mask}");
            assert_eq!(mode_of(&directory.join("lock")), 0o600, "umask {mask}");
        }
    }

    /// Does nothing unless started by [`modes_are_exact_whatever_the_umask`].
    #[test]
    fn umask_child_process() {
        let Ok(specification) = std::env::var(UMASK_CHILD_VARIABLE) else {
            return;
        };
        let (mask, parent) = specification.split_once(':').unwrap();
        nix::sys::stat::umask(Mode::from_bits_truncate(
            u32::from_str_radix(mask, 8).unwrap(),
        ));
        let directory = Path::new(parent).join(mask);
        create_private_directory(&directory).unwrap();
        write_file_durably(&directory, "private", b"x", 0o600, Existing::Fail).unwrap();
        write_file_durably(&directory, "script", b"x", 0o700, Existing::Fail).unwrap();
        crate::os::lock::LockFile::open(&directory.join("lock")).unwrap();
    }

    #[test]
    fn an_existing_name_is_reported_as_already_exists_and_left_untouched() {
        let scratch = ScratchDirectory::new("eexist");
        write_file_durably(&scratch.0, "x.zst", b"original", 0o600, Existing::Fail).unwrap();
        let error = write_file_durably(&scratch.0, "x.zst", b"different", 0o600, Existing::Fail)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(error.to_string().contains("x.zst: link: "), "{error}");
        assert_eq!(fs::read(scratch.0.join("x.zst")).unwrap(), b"original");

        let kept =
            write_file_durably(&scratch.0, "x.zst", b"different", 0o600, Existing::Keep).unwrap();
        assert_eq!(kept, WriteOutcome::KeptExisting);
        assert_eq!(fs::read(scratch.0.join("x.zst")).unwrap(), b"original");
        assert_eq!(scratch.entries(), ["x.zst"]);
    }

    #[test]
    fn a_dangling_symlink_counts_as_an_existing_name() {
        let scratch = ScratchDirectory::new("dangling");
        std::os::unix::fs::symlink("nowhere", scratch.0.join("backup")).unwrap();
        let error =
            write_file_durably(&scratch.0, "backup", b"x", 0o700, Existing::Fail).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            fs::symlink_metadata(scratch.0.join("backup"))
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn a_writer_dropped_before_persist_leaves_no_file_behind() {
        let scratch = ScratchDirectory::new("dropped");
        {
            let mut file = UnnamedFile::create_in(&scratch.0, 0o600).unwrap();
            file.write_all(&[7u8; 100_000]).unwrap();
            assert_eq!(scratch.entries(), Vec::<String>::new());
        }
        assert_eq!(scratch.entries(), Vec::<String>::new());
    }

    #[test]
    fn a_streamed_file_can_be_read_back_and_linked_into_several_directories() {
        let scratch = ScratchDirectory::new("stream");
        let second = scratch.0.join("second");
        create_private_directory(&second).unwrap();
        let mut file = UnnamedFile::create_in(&scratch.0, 0o600).unwrap();
        for chunk in 0u8..10 {
            file.write_all(&[chunk; 4096]).unwrap();
        }
        let mut read_back = Vec::new();
        let mut reader = file.file();
        reader.rewind().unwrap();
        reader.read_to_end(&mut read_back).unwrap();
        assert_eq!(read_back.len(), 40_960);

        file.link_into(&second, "segment.zst").unwrap();
        file.persist_as("segment.zst").unwrap();
        let first_inode = fs::metadata(scratch.0.join("segment.zst")).unwrap().ino();
        let second_inode = fs::metadata(second.join("segment.zst")).unwrap().ino();
        assert_eq!(
            first_inode, second_inode,
            "hard links: compressed once (S-2.7)"
        );
        assert_eq!(fs::read(second.join("segment.zst")).unwrap(), read_back);
    }

    #[test]
    fn the_empty_path_fallback_links_too_when_privileged() {
        if !nix::unistd::geteuid().is_root() {
            return; // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH.
        }
        let scratch = ScratchDirectory::new("empty-path");
        let mut file = UnnamedFile::create_in(&scratch.0, 0o600).unwrap();
        file.write_all(b"no /proc needed").unwrap();
        file.sync_once().unwrap();
        file.link_at_with(
            LinkMethod::EmptyPath,
            file.directory.as_fd(),
            &scratch.0,
            "linked",
        )
        .unwrap();
        assert_eq!(
            fs::read(scratch.0.join("linked")).unwrap(),
            b"no /proc needed"
        );
    }

    #[test]
    fn names_that_are_not_one_component_are_refused() {
        let scratch = ScratchDirectory::new("names");
        for name in ["", ".", "..", "a/b", "/etc/passwd"] {
            let error =
                write_file_durably(&scratch.0, name, b"x", 0o600, Existing::Fail).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        assert_eq!(scratch.entries(), Vec::<String>::new());
    }

    #[test]
    fn works_on_tmpfs() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return; // No tmpfs mounted here: nothing to check.
        }
        let scratch = ScratchDirectory::under(shm, "tmpfs");
        write_file_durably(
            &scratch.0,
            "on-tmpfs",
            b"tmpfs bytes",
            0o600,
            Existing::Fail,
        )
        .unwrap();
        assert_eq!(
            fs::read(scratch.0.join("on-tmpfs")).unwrap(),
            b"tmpfs bytes"
        );
        assert_eq!(mode_of(&scratch.0.join("on-tmpfs")), 0o600);
    }

    #[test]
    fn creating_a_directory_twice_reports_already_present_and_a_file_is_an_error() {
        let scratch = ScratchDirectory::new("mkdir");
        let path = scratch.0.join("d");
        assert_eq!(
            create_private_directory(&path).unwrap(),
            DirectoryCreation::Created
        );
        assert_eq!(
            create_private_directory(&path).unwrap(),
            DirectoryCreation::AlreadyPresent
        );
        fs::write(scratch.0.join("f"), b"").unwrap();
        let error = create_private_directory(&scratch.0.join("f")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            error.to_string().contains("exists but is not a directory"),
            "{error}"
        );
    }

    #[test]
    fn errors_name_the_path() {
        let missing = Path::new("/nonexistent-pgbak-test-directory");
        let error = fsync_directory(missing).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent-pgbak-test-directory: "),
            "{error}"
        );
        let error = UnnamedFile::create_in(missing, 0o600).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn descriptors_are_close_on_exec() {
        let scratch = ScratchDirectory::new("cloexec");
        let file = UnnamedFile::create_in(&scratch.0, 0o600).unwrap();
        for descriptor in [file.file.as_fd(), file.directory.as_fd()] {
            let flags = nix::fcntl::fcntl(descriptor, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            let flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
            assert!(flags.contains(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
    }
}
