//! Where the journal's bytes live: the [`Storage`] trait, its implementation for a real file, and
//! [`MemoryStorage`], which separates *written* from *durable* bytes for crash tests: a crash
//! test must know what a crash keeps, not only what was written (S-3.3, S-3.4).
//!
//! Owns: positional reads and writes, fsync, and the crash model used by every crash test:
//! a crash after `n` operations leaves everything up to the last completed `sync` durable, plus
//! any subset of the operations issued after it, each applied wholly, not at all, or torn
//! (only a prefix or only a suffix of a write reaches the disk).
//!
//! Invariants: [`MemoryStorage`] is deterministic (the same operations give the same crash images
//! in the same order), and holes read as zeros, as in a sparse file.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Positional I/O on the journal file. The journal only ever calls these; it never seeks.
pub trait Storage {
    /// Current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file has no bytes (a missing journal, S-3.3).
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every earlier write and length change durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

impl Storage for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, data, offset)
    }

    /// `fdatasync(2)`: it flushes the data and the metadata needed to read it back, which
    /// includes the file size, so a truncation or extension is durable once it returns.
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// A shared reference to a file is enough for positional I/O, so a caller can keep owning the
/// `File` that holds its OFD lock and lend it to the journal.
impl Storage for &File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(*self, buf, offset)
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(*self, data, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Lending any storage (e.g. a `MemoryStorage` a test keeps inspecting).
impl<T: Storage + ?Sized> Storage for &mut T {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(data, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
}

/// One operation issued to a [`MemoryStorage`], in the order issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len: u64 },
    Sync,
}

/// The durable content of the storage after a simulated crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashImage {
    /// The crash happened after this many operations of the log had been issued.
    pub after_ops: usize,
    /// Which unsynced operations reached the disk, and how: for test failure messages.
    pub description: String,
    pub bytes: Vec<u8>,
}

/// Byte counts at which a simulated torn write stops (prefix) or starts (suffix), besides half
/// and all-but-one byte: the first byte, a frame header, and the 512-byte sector boundary at
/// which real disks tear.
const TEAR_POINTS_BYTES: [usize; 6] = [1, 8, 16, 511, 512, 513];

/// With at most this many unsynced operations every subset of them is a crash image; with more,
/// only each one alone and all of them together (the journal never leaves more than two).
const MAX_UNSYNCED_OPS_FOR_ALL_SUBSETS: usize = 4;

/// An in-memory file that records every operation so tests can produce crash images, and can be
/// told to fail operations to test error paths. Public (not test-only) so fuzz targets use it.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    bytes: Vec<u8>,
    /// Content at the start of the op log; `None` while not recording.
    durable_base: Option<Vec<u8>>,
    ops: Vec<StorageOp>,
    /// Write, set_len and sync calls since creation (recorded or not), for failure injection.
    ops_issued: usize,
    failing_ops: Option<Range<usize>>,
}

impl MemoryStorage {
    /// An empty file, recording.
    pub fn new() -> Self {
        Self::with_contents(Vec::new())
    }

    /// A file whose `bytes` are already durable, recording.
    pub fn with_contents(bytes: Vec<u8>) -> Self {
        MemoryStorage {
            durable_base: Some(bytes.clone()),
            bytes,
            ops: Vec::new(),
            ops_issued: 0,
            failing_ops: None,
        }
    }

    /// A file that keeps no op log: for long tests where crash images are not needed.
    pub fn unrecorded(bytes: Vec<u8>) -> Self {
        MemoryStorage {
            durable_base: None,
            ..Self::with_contents(bytes)
        }
    }

    /// The bytes as written (what a reader sees now, durable or not).
    pub fn contents(&self) -> &[u8] {
        &self.bytes
    }

    /// Replaces the content and treats it as durable; clears the op log.
    pub fn set_contents(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes;
        self.start_recording();
    }

    /// Treats the current content as durable and starts a fresh op log.
    pub fn start_recording(&mut self) {
        self.durable_base = Some(self.bytes.clone());
        self.ops.clear();
    }

    /// Recorded operations since the last `start_recording` (empty when not recording).
    pub fn ops(&self) -> &[StorageOp] {
        &self.ops
    }

    /// Every write, set_len and sync issued since creation, recorded or not.
    pub fn ops_issued(&self) -> usize {
        self.ops_issued
    }

    /// Makes the operations with these indexes (counted by [`Self::ops_issued`]) fail with an
    /// I/O error and no effect; `None` stops failing.
    pub fn fail_ops(&mut self, op_indexes: Option<Range<usize>>) {
        self.failing_ops = op_indexes;
    }

    fn issue(&mut self, op: StorageOp) -> io::Result<()> {
        let index = self.ops_issued;
        self.ops_issued += 1;
        if self
            .failing_ops
            .as_ref()
            .is_some_and(|failing| failing.contains(&index))
        {
            return Err(io::Error::other(format!(
                "injected failure of operation {index}"
            )));
        }
        apply_op(&mut self.bytes, &op);
        if self.durable_base.is_some() {
            self.ops.push(op);
        }
        Ok(())
    }

    /// Every crash image for a crash after each prefix of the op log (0 ..= all operations).
    pub fn all_crash_images(&self) -> Vec<CrashImage> {
        (0..=self.ops.len())
            .flat_map(|after_ops| self.crash_images(after_ops))
            .collect()
    }

    /// The possible durable contents after a crash once `after_ops` recorded operations were
    /// issued: the content at the last sync among them, plus subsets of the unsynced ones, each
    /// whole or torn. Empty when not recording or `after_ops` is out of range.
    pub fn crash_images(&self, after_ops: usize) -> Vec<CrashImage> {
        let Some(base) = &self.durable_base else {
            return Vec::new();
        };
        if after_ops > self.ops.len() {
            return Vec::new();
        }
        let issued = &self.ops[..after_ops];
        let synced_count = issued
            .iter()
            .rposition(|op| *op == StorageOp::Sync)
            .map_or(0, |at| at + 1);
        let mut durable = base.clone();
        for op in &issued[..synced_count] {
            apply_op(&mut durable, op);
        }
        let unsynced: Vec<(usize, &StorageOp)> =
            issued.iter().enumerate().skip(synced_count).collect();
        let mut images = vec![CrashImage {
            after_ops,
            description: format!(
                "after {after_ops} ops: none of {} unsynced ops",
                unsynced.len()
            ),
            bytes: durable.clone(),
        }];
        let image = |description: String, bytes: Vec<u8>| CrashImage {
            after_ops,
            description,
            bytes,
        };

        // Whole operations: every subset when few, else each alone and all together.
        let subsets: Vec<Vec<usize>> = if unsynced.len() <= MAX_UNSYNCED_OPS_FOR_ALL_SUBSETS {
            (1..(1usize << unsynced.len()))
                .map(|mask| {
                    (0..unsynced.len())
                        .filter(|i| mask & (1 << i) != 0)
                        .collect()
                })
                .collect()
        } else {
            let mut subsets: Vec<Vec<usize>> = (0..unsynced.len()).map(|i| vec![i]).collect();
            subsets.push((0..unsynced.len()).collect());
            subsets
        };
        for subset in subsets {
            let mut bytes = durable.clone();
            for &i in &subset {
                apply_op(&mut bytes, unsynced[i].1);
            }
            let applied: Vec<String> = subset.iter().map(|&i| unsynced[i].0.to_string()).collect();
            images.push(image(
                format!(
                    "after {after_ops} ops: unsynced ops [{}] applied",
                    applied.join(",")
                ),
                bytes,
            ));
        }

        // Torn writes: each unsynced write torn alone, and the last one torn after all the others
        // (the usual crash in the middle of a write).
        for (position, &(op_index, op)) in unsynced.iter().enumerate() {
            let StorageOp::Write { offset, data } = op else {
                continue;
            };
            for (prefix_or_suffix, part_offset, part) in torn_parts(*offset, data) {
                let mut alone = durable.clone();
                apply_op(
                    &mut alone,
                    &StorageOp::Write {
                        offset: part_offset,
                        data: part.to_vec(),
                    },
                );
                images.push(image(
                    format!(
                        "after {after_ops} ops: op {op_index} torn ({prefix_or_suffix} {} of {} \
                         bytes), nothing else",
                        part.len(),
                        data.len()
                    ),
                    alone,
                ));
                if position + 1 == unsynced.len() && position > 0 {
                    let mut with_others = durable.clone();
                    for (_, earlier) in &unsynced[..position] {
                        apply_op(&mut with_others, earlier);
                    }
                    apply_op(
                        &mut with_others,
                        &StorageOp::Write {
                            offset: part_offset,
                            data: part.to_vec(),
                        },
                    );
                    images.push(image(
                        format!(
                            "after {after_ops} ops: earlier unsynced ops applied, op {op_index} \
                             torn ({prefix_or_suffix} {} of {} bytes)",
                            part.len(),
                            data.len()
                        ),
                        with_others,
                    ));
                }
            }
        }
        images
    }
}

/// The torn versions of a write of `data` at `offset`: ("prefix" | "suffix", where, bytes).
fn torn_parts(offset: u64, data: &[u8]) -> Vec<(&'static str, u64, &[u8])> {
    let length = data.len();
    let mut cuts: Vec<usize> = TEAR_POINTS_BYTES
        .iter()
        .copied()
        .chain([length / 2, length.saturating_sub(1)])
        .filter(|&cut| cut > 0 && cut < length)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parts = Vec::new();
    for cut in cuts {
        parts.push(("prefix", offset, &data[..cut]));
        parts.push(("suffix", offset + cut as u64, &data[cut..]));
    }
    parts
}

fn apply_op(bytes: &mut Vec<u8>, op: &StorageOp) {
    match op {
        StorageOp::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        StorageOp::SetLen { len } => bytes.resize(*len as usize, 0),
        StorageOp::Sync => {}
    }
}

fn offset_in_memory(offset: u64) -> io::Result<usize> {
    usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset beyond memory"))
}

impl Storage for MemoryStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = offset_in_memory(offset)?.min(self.bytes.len());
        let count = buf.len().min(self.bytes.len() - start);
        buf[..count].copy_from_slice(&self.bytes[start..start + count]);
        Ok(count)
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        offset_in_memory(offset.saturating_add(data.len() as u64))?;
        self.issue(StorageOp::Write {
            offset,
            data: data.to_vec(),
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.issue(StorageOp::Sync)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        offset_in_memory(len)?;
        self.issue(StorageOp::SetLen { len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_operations_may_or_may_not_survive_a_crash() {
        let mut storage = MemoryStorage::with_contents(b"base".to_vec());
        storage.write_at(b"AB", 4).unwrap();
        storage.sync().unwrap();
        storage.write_at(b"CD", 6).unwrap();
        storage.set_len(7).unwrap();
        assert_eq!(storage.contents(), b"baseABC");

        let after_sync = storage.crash_images(2);
        assert_eq!(after_sync.len(), 1);
        assert_eq!(after_sync[0].bytes, b"baseAB");

        let images: Vec<Vec<u8>> = storage
            .crash_images(4)
            .into_iter()
            .map(|image| image.bytes)
            .collect();
        for expected in [&b"baseAB"[..], b"baseABCD", b"baseAB\0", b"baseABC"] {
            assert!(
                images.iter().any(|image| image == expected),
                "{expected:?} in {images:?}"
            );
        }
        // Torn halves of the 2-byte write: only "C" or only "D" at its place.
        assert!(images.iter().any(|image| image == b"baseABC"));
        assert!(images.iter().any(|image| image == b"baseAB\0D"));
        // Nothing the crash model cannot produce.
        assert!(images.iter().all(|image| image.starts_with(b"base")));
    }

    #[test]
    fn crash_images_are_deterministic() {
        let mut storage = MemoryStorage::new();
        for round in 0..5u8 {
            storage
                .write_at(&[round; 700], u64::from(round) * 100)
                .unwrap();
            if round % 2 == 1 {
                storage.sync().unwrap();
            }
        }
        assert_eq!(storage.all_crash_images(), storage.all_crash_images());
    }

    #[test]
    fn injected_failures_have_no_effect() {
        let mut storage = MemoryStorage::with_contents(vec![1, 2, 3]);
        storage.fail_ops(Some(1..usize::MAX));
        storage.write_at(&[9], 0).unwrap();
        assert!(storage.write_at(&[8], 1).is_err());
        assert!(storage.sync().is_err());
        assert_eq!(storage.contents(), &[9, 2, 3]);
        storage.fail_ops(None);
        storage.sync().unwrap();
        assert_eq!(storage.ops_issued(), 4);
    }

    #[test]
    fn reads_past_the_end_return_what_exists() {
        let storage = MemoryStorage::with_contents(vec![1, 2, 3]);
        let mut buf = [0u8; 8];
        assert_eq!(storage.read_at(&mut buf, 1).unwrap(), 2);
        assert_eq!(&buf[..2], &[2, 3]);
        assert_eq!(storage.read_at(&mut buf, 10).unwrap(), 0);
    }
}
