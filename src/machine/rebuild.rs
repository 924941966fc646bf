//! Rebuilding the state from the directory tree when the journal cannot be trusted (S-3.3).
//!
//! Owns: [`TreeScan`] (what the effects layer found on disk, as plain data) and
//! `State::rebuilt_from`, the pure rule that turns it into a state.
//!
//! The files are the ground truth. Rules, chosen so that nothing is ever claimed that the tree
//! does not prove:
//! - a directory with a complete `base.tzst` (only ever linked into place after fsync, S-4.3) is
//!   restorable: the newest such directory is `Current`, older ones `Sealed`;
//! - a directory without `base.tzst` is `Failed`: its base backup never finished, so it is not
//!   restorable, and every WAL file in it newer than the current base is also in the current
//!   directory (S-2.7). The next sync removes it;
//! - nothing counts as shipped: upload state that could not be recovered is "not uploaded", so
//!   the script runs again for every directory (scripts must be idempotent);
//! - no sync, base backup or script is running: a process that was running notices the rebuild
//!   (the journal's identity changed) and starts over from this state.

use super::state::{BaseInfo, Directory, DirectoryPhase, State, TimelineSpan, WalTotals};
use crate::timestamp::{DirectoryName, UnixMillis};
use crate::wal_name::WalFileName;

/// What the effects layer found under `$PGBAK`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreeScan {
    pub directories: Vec<ScannedDirectory>,
    /// The target of `$PGBAK/current`, if it is a symlink to a directory name.
    pub current_link: Option<DirectoryName>,
    /// Distinct WAL file names across all directories (a file linked into two directories
    /// counts once): what the archive count restarts from.
    pub distinct_wal_files: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedDirectory {
    pub name: DirectoryName,
    /// Size and modification time of `base.tzst`, if present.
    pub base: Option<(u64, UnixMillis)>,
    /// Lowest and highest timeline of its segments and history files (S-4.7).
    pub timelines: Option<(u32, u32)>,
    pub wal_files: u64,
    pub wal_bytes: u64,
    pub first_wal: Option<WalFileName>,
    pub last_wal: Option<WalFileName>,
    /// Modification time of the newest file (falls back to the directory name's time).
    pub newest_file_at: UnixMillis,
}

impl State {
    pub fn rebuilt_from(scan: &TreeScan) -> State {
        let newest_complete = scan
            .directories
            .iter()
            .filter(|d| d.base.is_some())
            .map(|d| d.name)
            .max();
        let mut state = State::default();
        for scanned in &scan.directories {
            let phase = match (scanned.base, newest_complete) {
                (Some(_), Some(newest)) if scanned.name == newest => DirectoryPhase::Current,
                (Some(_), _) => DirectoryPhase::Sealed,
                (None, _) => DirectoryPhase::Failed,
            };
            let base = scanned
                .base
                .map(|(bytes, finished_at)| BaseInfo { bytes, finished_at });
            state.directories.insert(
                scanned.name,
                Directory {
                    phase,
                    opened_at: scanned.name.as_millis(),
                    base,
                    wal_files: scanned.wal_files,
                    wal_bytes: scanned.wal_bytes,
                    first_wal: scanned.first_wal.clone(),
                    last_wal: scanned.last_wal.clone(),
                    newest_file_at: scanned.newest_file_at,
                    content_version: scanned.wal_files + u64::from(base.is_some()),
                    shipped: None,
                },
            );
            if let Some((lowest, highest)) = scanned.timelines {
                state
                    .timelines
                    .insert(scanned.name, TimelineSpan { lowest, highest });
            }
        }
        state.current_link = scan.current_link.filter(|name| {
            state
                .directories
                .get(name)
                .is_some_and(|d| d.phase == DirectoryPhase::Current)
        });
        let newest_wal = scan
            .directories
            .iter()
            .filter_map(|d| d.last_wal.clone())
            .max();
        state.wal = WalTotals {
            archived_count: scan.distinct_wal_files,
            last_archived_at: scan.directories.iter().map(|d| d.newest_file_at).max(),
            last_archived: newest_wal,
        };
        state
    }
}
