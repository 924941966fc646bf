//! The transition table: the vocabulary `apply` checks every fact against, and what
//! `state-diagrams/machine.md` draws.
//!
//! Owns: [`Component`] (the parts of the state the diagram draws), [`Kinds`] (the kind of each
//! component in a state: the diagram's nodes), [`Edge`] and the table [`EDGES`] (every
//! transition the machine accepts), and [`edges_taken`] (which edges one fact took, from the
//! kinds before and after it).
//!
//! Invariant: pure data and pure functions; `transition::apply` rejects any fact that would
//! take an edge not in [`EDGES`], and `tests::diagram_matches_table` compares [`EDGES`] with the
//! diagram.

use super::event::{Event, EventKind};
use super::state::{DirectoryPhase, JournalHealth, State};
use crate::timestamp::DirectoryName;
use std::collections::BTreeMap;
use std::fmt;

/// The parts of the state the diagram draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Directory,
    BaseBackup,
    Script,
    Sync,
    Journal,
    PruneScript,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Directory,
        Component::BaseBackup,
        Component::Script,
        Component::Sync,
        Component::Journal,
        Component::PruneScript,
    ];

    /// The heading of this component's diagram in `state-diagrams/machine.md`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Directory => "directory",
            Component::BaseBackup => "base backup",
            Component::Script => "script",
            Component::Sync => "sync",
            Component::Journal => "journal",
            Component::PruneScript => "prune script",
        }
    }

    /// The events that always concern this component (even when its kind stays the same).
    fn vocabulary(self, kind: EventKind) -> bool {
        use EventKind as E;
        match self {
            Component::Directory => false, // directories are touched by name, see `touched`
            Component::BaseBackup => {
                matches!(
                    kind,
                    E::BaseBackupStarted
                        | E::BaseBackupFinished
                        | E::BaseBackupFailed
                        | E::BaseBackupServerUnreachable
                )
            }
            Component::Script => {
                matches!(
                    kind,
                    E::ScriptStarted | E::ScriptSucceeded | E::ScriptFailed
                )
            }
            Component::Sync => matches!(kind, E::SyncStarted | E::SyncStopped | E::SyncAbandoned),
            Component::Journal => matches!(kind, E::JournalRebuilt | E::JournalTailCut),
            Component::PruneScript => {
                matches!(kind, E::PruneScriptSucceeded | E::PruneScriptFailed)
            }
        }
    }
}

/// One edge of the diagram: in component `component`, `event` moves kind `from` to kind `to`.
/// `[*]` is the diagram's start/end pseudo-state (a directory that does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    pub component: Component,
    pub from: &'static str,
    pub event: EventKind,
    pub to: &'static str,
}

const fn edge(
    component: Component,
    from: &'static str,
    event: EventKind,
    to: &'static str,
) -> Edge {
    Edge {
        component,
        from,
        event,
        to,
    }
}

/// The pseudo-state of a directory that does not exist (Mermaid's `[*]`).
pub const ABSENT: &str = "[*]";

use Component as C;
use EventKind as E;

/// Every transition the machine accepts. Self-loops are listed too: an event that names a
/// directory but leaves its phase alone is still a transition the code must allow.
pub const EDGES: &[Edge] = &[
    edge(C::Directory, ABSENT, E::DirectoryOpened, "Pending"),
    edge(C::Directory, "Pending", E::WalArchived, "Pending"),
    edge(C::Directory, "Current", E::WalArchived, "Current"),
    edge(C::Directory, "Sealed", E::WalArchived, "Sealed"),
    edge(C::Directory, "Failed", E::WalArchived, "Failed"),
    edge(C::Directory, "Pending", E::BaseBackupStarted, "Pending"),
    edge(C::Directory, "Pending", E::BaseBackupFinished, "Current"),
    edge(C::Directory, "Current", E::BaseBackupFinished, "Sealed"),
    edge(C::Directory, "Pending", E::BaseBackupFailed, "Failed"),
    edge(
        C::Directory,
        "Pending",
        E::BaseBackupServerUnreachable,
        "Failed",
    ),
    edge(C::Directory, "Current", E::DirectoryLost, ABSENT),
    edge(C::Directory, "Current", E::NewSeriesStarted, "Sealed"),
    edge(C::Directory, "Pending", E::NewSeriesStarted, "Failed"),
    edge(C::Directory, "Pending", E::SyncAbandoned, "Failed"),
    edge(C::Directory, "Failed", E::DirectoryRemoved, ABSENT),
    edge(C::Directory, "Current", E::CurrentLinkSwitched, "Current"),
    edge(C::Directory, "Current", E::ScriptStarted, "Current"),
    edge(C::Directory, "Sealed", E::ScriptStarted, "Sealed"),
    edge(C::Directory, "Current", E::ScriptSucceeded, "Current"),
    edge(C::Directory, "Sealed", E::ScriptSucceeded, "Sealed"),
    edge(C::Directory, "Current", E::ScriptFailed, "Current"),
    edge(C::Directory, "Sealed", E::ScriptFailed, "Sealed"),
    edge(C::Directory, "Sealed", E::PruneStarted, "Pruning"),
    edge(
        C::Directory,
        "Pruning",
        E::DirectoryMovedAside,
        "MovedAside",
    ),
    edge(C::Directory, "MovedAside", E::DirectoryPruned, ABSENT),
    edge(C::BaseBackup, "Idle", E::BaseBackupStarted, "Running"),
    edge(C::BaseBackup, "BackingOff", E::BaseBackupStarted, "Running"),
    edge(C::BaseBackup, "Running", E::BaseBackupFinished, "Idle"),
    edge(C::BaseBackup, "Running", E::BaseBackupFailed, "BackingOff"),
    edge(
        C::BaseBackup,
        "Running",
        E::BaseBackupServerUnreachable,
        "BackingOff",
    ),
    edge(C::BaseBackup, "Running", E::SyncAbandoned, "BackingOff"),
    edge(C::Script, "Idle", E::ScriptStarted, "Running"),
    edge(C::Script, "BackingOff", E::ScriptStarted, "Running"),
    edge(C::Script, "Running", E::ScriptSucceeded, "Idle"),
    edge(C::Script, "Running", E::ScriptFailed, "BackingOff"),
    edge(C::Script, "Running", E::SyncAbandoned, "BackingOff"),
    edge(C::Sync, "Stopped", E::SyncStarted, "Running"),
    edge(C::Sync, "Running", E::SyncStopped, "Stopped"),
    edge(C::Sync, "Running", E::SyncAbandoned, "Stopped"),
    edge(C::Journal, "Intact", E::JournalTailCut, "TailCut"),
    edge(C::Journal, "TailCut", E::JournalTailCut, "TailCut"),
    edge(C::Journal, "Rebuilt", E::JournalTailCut, "TailCut"),
    edge(C::Journal, "Intact", E::JournalRebuilt, "Rebuilt"),
    edge(C::Journal, "TailCut", E::JournalRebuilt, "Rebuilt"),
    edge(C::Journal, "Rebuilt", E::JournalRebuilt, "Rebuilt"),
    edge(C::PruneScript, "Idle", E::PruneScriptSucceeded, "Idle"),
    edge(
        C::PruneScript,
        "BackingOff",
        E::PruneScriptSucceeded,
        "Idle",
    ),
    edge(C::PruneScript, "Idle", E::PruneScriptFailed, "BackingOff"),
    edge(
        C::PruneScript,
        "BackingOff",
        E::PruneScriptFailed,
        "BackingOff",
    ),
];

/// The kind of every component: what the diagram's nodes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kinds {
    pub directories: BTreeMap<DirectoryName, &'static str>,
    pub base_backup: &'static str,
    pub script: &'static str,
    pub sync: &'static str,
    pub journal: &'static str,
    pub prune_script: &'static str,
}

impl Kinds {
    pub fn of(state: &State) -> Kinds {
        let backoff_kind = |running: bool, failures: u32| match (running, failures) {
            (true, _) => "Running",
            (false, 0) => "Idle",
            (false, _) => "BackingOff",
        };
        Kinds {
            directories: state
                .directories
                .iter()
                .map(|(name, d)| (*name, phase_name(d.phase)))
                .collect(),
            base_backup: backoff_kind(
                state.base_backup.running.is_some(),
                state.base_backup.consecutive_failures,
            ),
            script: backoff_kind(
                state.script.running.is_some(),
                state.script.consecutive_failures,
            ),
            sync: if state.sync.is_some() {
                "Running"
            } else {
                "Stopped"
            },
            journal: match state.journal {
                JournalHealth::Intact => "Intact",
                JournalHealth::TailCut { .. } => "TailCut",
                JournalHealth::Rebuilt { .. } => "Rebuilt",
            },
            prune_script: backoff_kind(false, state.retention.prune_script_failures),
        }
    }

    fn directory(&self, name: &DirectoryName) -> &'static str {
        self.directories.get(name).copied().unwrap_or(ABSENT)
    }

    fn singleton(&self, component: Component) -> &'static str {
        match component {
            Component::BaseBackup => self.base_backup,
            Component::Script => self.script,
            Component::Sync => self.sync,
            Component::Journal => self.journal,
            Component::PruneScript => self.prune_script,
            Component::Directory => ABSENT,
        }
    }
}

pub fn phase_name(phase: DirectoryPhase) -> &'static str {
    match phase {
        DirectoryPhase::Pending => "Pending",
        DirectoryPhase::Current => "Current",
        DirectoryPhase::Sealed => "Sealed",
        DirectoryPhase::Failed => "Failed",
        DirectoryPhase::Pruning => "Pruning",
        DirectoryPhase::MovedAside => "MovedAside",
    }
}

/// The edges an event took, from the kinds before and after it: every directory it names or
/// whose phase changed, and every other component it concerns or changed.
pub fn edges_taken(before: &Kinds, after: &Kinds, event: &Event) -> Vec<Edge> {
    let kind = event.kind();
    let mut names: Vec<DirectoryName> = named_directories(event)
        .into_iter()
        .filter(|name| {
            // A WAL file linked into a directory removed meanwhile, or being pruned (S-8.3),
            // names nothing we track: the rule leaves such a directory alone.
            kind != EventKind::WalArchived
                || before
                    .directories
                    .get(name)
                    .is_some_and(|phase| !matches!(*phase, "Pruning" | "MovedAside"))
        })
        .collect();
    for name in before.directories.keys().chain(after.directories.keys()) {
        if before.directory(name) != after.directory(name) {
            names.push(*name);
        }
    }
    names.sort();
    names.dedup();
    let mut edges: Vec<Edge> = names
        .iter()
        .map(|name| {
            edge(
                C::Directory,
                before.directory(name),
                kind,
                after.directory(name),
            )
        })
        .collect();
    for component in [
        C::BaseBackup,
        C::Script,
        C::Sync,
        C::Journal,
        C::PruneScript,
    ] {
        let (from, to) = (before.singleton(component), after.singleton(component));
        if component.vocabulary(kind) || from != to {
            edges.push(edge(component, from, kind, to));
        }
    }
    edges
}

fn named_directories(event: &Event) -> Vec<DirectoryName> {
    match event {
        Event::WalArchived { directories, .. } => directories.clone(),
        Event::DirectoryOpened { directory, .. }
        | Event::BaseBackupStarted { directory, .. }
        | Event::BaseBackupFinished { directory, .. }
        | Event::BaseBackupFailed { directory, .. }
        | Event::BaseBackupServerUnreachable { directory, .. }
        | Event::DirectoryLost { directory, .. }
        | Event::DirectoryRemoved { directory, .. }
        | Event::CurrentLinkSwitched { directory, .. }
        | Event::ScriptStarted { directory, .. }
        | Event::ScriptSucceeded { directory, .. }
        | Event::ScriptFailed { directory, .. }
        | Event::PruneStarted { directory, .. }
        | Event::DirectoryMovedAside { directory, .. }
        | Event::DirectoryPruned { directory, .. } => vec![*directory],
        Event::SyncStarted { .. }
        | Event::SyncStopped { .. }
        | Event::SyncAbandoned { .. }
        | Event::JournalRebuilt { .. }
        | Event::JournalTailCut { .. }
        | Event::SystemIdentifierRecorded { .. }
        | Event::NewSeriesStarted { .. }
        | Event::CurrentLinkObserved { .. }
        // The directory a prune script runs for is gone from the directories already.
        | Event::PruneScriptSucceeded { .. }
        | Event::PruneScriptFailed { .. } => Vec::new(),
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} --> {} : {}",
            self.component.name(),
            self.from,
            self.to,
            self.event.name()
        )
    }
}
