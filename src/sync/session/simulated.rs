//! The real session loop ([`Session`]) in a simulated world: model-based tests that drive the
//! sync code itself, not a second hand-written driver, through seeded random walks.
//!
//! Owns: [`SimulatedWorld`] (a [`SessionWorld`] around the machine's
//! [`crate::machine::simulation::World`], which keeps the state, the clock, the recorded facts
//! and plays `pgbak wal`), [`run_walk`] and the property tests. Each time the session sleeps,
//! time passes by what it slept and the world takes the walk's next step: WAL is archived,
//! `pg_basebackup` or the script finishes (succeeds, fails, cannot reach the server), SIGTERM
//! arrives, someone points `current` elsewhere, or the sync is killed (`CrashSync`: from then on
//! nothing the process does reaches the world, and the session is dropped). A crash may also
//! hit at an append, before or after the facts are durable. When the walk is exhausted the
//! children succeed and syncs are started until everything is shipped (liveness).
//!
//! Checked throughout: the state's invariants after every append and step; every archived file
//! reached every open directory; whenever the session sleeps, the machine's plan has no action
//! left undone (its decisions are carried out) and the session holds a child exactly while the
//! state shows it running; a session that ends `Finished` leaves a finished plan; a session
//! only fails because it was killed; replaying the recorded facts gives the final state, and
//! replaying any prefix gives the state at that point; seeded walks of the real session reach
//! every edge of the machine's table; everything is eventually shipped (liveness).
//!
//! Replaying a failure: proptest prints the minimal failing `bytes` and stores its seed in
//! `proptest-regressions/sync/session/simulated.txt`, which later runs replay first; a seed can
//! also be forced with `PROPTEST_RNG_SEED=<n> cargo test --release --features failpoints --lib
//! sync::session::simulated`.

use super::world::{Freshness, SessionWorld};
use super::{Session, SyncEnded, SyncOptions};
use crate::home::environment::PgbakHome;
use crate::machine::simulation::{Step, World, simulation_policy};
use crate::machine::{Event, State, apply, next_actions};
use crate::sync::SessionError;
use crate::sync::log::SyncLog;
use crate::sync::script::ScriptOutcome;
use crate::timestamp::{DirectoryName, UnixMillis};
use nix::sys::signal::Signal;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A child of the simulated sync: which run it is.
#[derive(Debug)]
pub(crate) struct SimulatedRun(u64);

/// A running child and, once the walk ended it, its outcome.
#[derive(Debug)]
struct Child<T> {
    id: u64,
    outcome: Option<T>,
}

/// The world the simulated session acts on.
pub(crate) struct SimulatedWorld {
    pub(crate) world: World,
    walk: VecDeque<Step>,
    /// Where `$PGBAK/current` points on the simulated disk.
    link: Option<DirectoryName>,
    base_backup: Option<Child<Result<u64, String>>>,
    script: Option<Child<ScriptOutcome>>,
    next_run: u64,
    signal: Option<Signal>,
    /// The sync process was killed: nothing it does reaches the world any more.
    crashed: bool,
    /// Sleeps left before the session is declared stuck (a liveness failure).
    sleeps_left: usize,
    /// The state after each point the facts were recorded up to, with the history's length
    /// then: what replaying that prefix must give (the prefix-replay property).
    checkpoints: Vec<(usize, State)>,
}

/// More sleeps than any walk needs: the longest wait is a script backoff of 5 min, slept in
/// 250 ms polls, a few times over.
const SLEEP_BOUND: usize = 200_000;

fn crashed() -> SessionError {
    SessionError::Signals {
        source: io::Error::other("simulated: the sync process was killed"),
    }
}

impl SimulatedWorld {
    fn new(walk: Vec<Step>) -> SimulatedWorld {
        SimulatedWorld {
            world: World::new(simulation_policy()),
            walk: walk.into(),
            link: None,
            base_backup: None,
            script: None,
            next_run: 1,
            signal: None,
            crashed: false,
            sleeps_left: SLEEP_BOUND,
            checkpoints: vec![(0, State::default())],
        }
    }

    /// Remembers the state as it is now, if facts were recorded since the last checkpoint.
    fn checkpoint(&mut self) {
        let recorded = self.world.history.len();
        if self
            .checkpoints
            .last()
            .is_none_or(|(at, _)| *at != recorded)
        {
            self.checkpoints.push((recorded, self.world.state.clone()));
        }
    }

    /// A step of the world outside the sync (or with no sync running).
    fn perform_outside(&mut self, step: Step) {
        match step {
            Step::ArchiveWal
            | Step::ArchiveSameWalAgain
            | Step::ArchiveWalWithStaleTargets
            | Step::PromoteToNewTimeline
            | Step::LoseCurrentDirectory
            | Step::StartNewSeries
            | Step::AdvanceTime { .. } => {
                let previous = self.world.state.clone();
                let recorded = self
                    .world
                    .perform(step)
                    .unwrap_or_else(|e| panic!("{step:?} was rejected: {e}"));
                if let Err(broken) = self.world.check(&previous, recorded) {
                    panic!("after {step:?}: {broken}\n{:#?}", self.world.state);
                }
                self.checkpoint();
            }
            Step::MisdirectCurrentLink => self.link = None,
            Step::SetPruneScriptFailing { failing } => self.world.prune_script_failing = failing,
            Step::FinishBaseBackup {
                succeeded,
                server_unreachable,
            } => {
                if let Some(child) = self.base_backup.as_mut() {
                    child.outcome = Some(if succeeded {
                        Ok(10_000_000)
                    } else if server_unreachable {
                        Err(
                            "pg_basebackup: error: connection to server on socket failed: \
                             Is the server running locally?"
                                .into(),
                        )
                    } else {
                        Err("pg_basebackup: error: authentication failed".into())
                    });
                }
            }
            Step::FinishScript { succeeded } => {
                if let Some(child) = self.script.as_mut() {
                    child.outcome = Some(if succeeded {
                        ScriptOutcome::Succeeded
                    } else {
                        ScriptOutcome::Failed {
                            output: "rsync: error".into(),
                        }
                    });
                }
            }
            Step::CrashSync => self.crashed = true,
            Step::InterruptSync => self.signal = Some(Signal::SIGTERM),
            Step::StartSync { .. } | Step::DriveSync => {}
        }
    }

    /// The checks made whenever the session waits (see the module header).
    fn check_waiting(&self) {
        let state = &self.world.state;
        let plan = next_actions(state, self.world.now, &self.world.policy);
        assert!(
            plan.actions.is_empty(),
            "the session waits although the plan says {:?}\n{state:#?}",
            plan.actions
        );
        assert_eq!(
            state.base_backup.running.is_some(),
            self.base_backup.is_some(),
            "the session's base backup and the state disagree\n{state:#?}"
        );
        assert_eq!(
            state.script.running.is_some(),
            self.script.is_some(),
            "the session's script and the state disagree\n{state:#?}"
        );
    }

    fn start_child<T>(&mut self) -> (SimulatedRun, Child<T>) {
        let id = self.next_run;
        self.next_run += 1;
        (SimulatedRun(id), Child { id, outcome: None })
    }

    fn dead(&self) -> io::Result<()> {
        if self.crashed {
            Err(io::Error::other("simulated: killed"))
        } else {
            Ok(())
        }
    }
}

/// Takes the outcome of `child` if it is the run `run` and it ended.
fn poll<T>(slot: &mut Option<Child<T>>, run: &SimulatedRun) -> Option<T> {
    match slot {
        Some(child) if child.id == run.0 && child.outcome.is_some() => {
            slot.take().and_then(|child| child.outcome)
        }
        _ => None,
    }
}

/// Ends the run `run` (a stop), if it is the one in `slot`.
fn end<T>(slot: &mut Option<Child<T>>, run: &SimulatedRun) {
    if slot.as_ref().is_some_and(|child| child.id == run.0) {
        *slot = None;
    }
}

impl SessionWorld for SimulatedWorld {
    type Script = SimulatedRun;
    type BaseBackup = SimulatedRun;

    fn now(&self) -> UnixMillis {
        self.world.now
    }

    fn sleep(&mut self, duration: Duration) {
        if self.crashed {
            return;
        }
        self.check_waiting();
        self.sleeps_left = self
            .sleeps_left
            .checked_sub(1)
            .unwrap_or_else(|| panic!("the session never finished\n{:#?}", self.world.state));
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.world.now = self.world.now.plus_millis(millis);
        match self.walk.pop_front() {
            Some(step) => self.perform_outside(step),
            None => {
                // The walk is over: from here on every child succeeds.
                if let Some(child) = self.base_backup.as_mut() {
                    child.outcome.get_or_insert(Ok(10_000_000));
                }
                if let Some(child) = self.script.as_mut() {
                    child.outcome.get_or_insert(ScriptOutcome::Succeeded);
                }
                self.world.prune_script_failing = false;
            }
        }
    }

    fn stop_signal(&self) -> Option<Signal> {
        self.signal
    }

    fn check_still_same(&self) -> Result<(), SessionError> {
        if self.crashed { Err(crashed()) } else { Ok(()) }
    }

    fn state(&self) -> &State {
        &self.world.state
    }

    fn append(&mut self, events: &[Event], _at: UnixMillis) -> Result<(), SessionError> {
        if self.crashed {
            return Err(crashed());
        }
        // A kill may hit an append: before its facts are durable, or right after.
        let crash = self.walk.front() == Some(&Step::CrashSync);
        let durable = !crash || self.world.history.len() % 2 == 0;
        if crash {
            self.walk.pop_front();
        }
        if durable {
            let previous = self.world.state.clone();
            for event in events {
                if let Err(error) = self.world.record(event.clone()) {
                    panic!(
                        "the session recorded {event:?}, which the machine rejects: {error}\n{:#?}",
                        self.world.state
                    );
                }
                self.checkpoint();
            }
            if let Err(broken) = self.world.check(&previous, events.len()) {
                panic!("after {events:?}: {broken}\n{:#?}", self.world.state);
            }
        }
        if crash {
            self.crashed = true;
            return Err(crashed());
        }
        Ok(())
    }

    fn refresh(&mut self, _at: UnixMillis, _log: &SyncLog) -> Result<Freshness, SessionError> {
        if self.crashed {
            return Err(crashed());
        }
        Ok(Freshness::Extended)
    }

    fn read_current_link(&self) -> Option<DirectoryName> {
        self.link
    }

    fn point_current_link_at(&mut self, directory: DirectoryName) -> io::Result<()> {
        self.dead()?;
        self.link = Some(directory);
        Ok(())
    }

    fn remove_failed_directory(&mut self, directory: DirectoryName) -> io::Result<()> {
        self.dead()?;
        assert_ne!(self.link, Some(directory), "removing the current directory");
        Ok(())
    }

    fn move_directory_aside(&mut self, directory: DirectoryName) -> io::Result<()> {
        self.dead()?;
        assert_ne!(self.link, Some(directory), "pruning the current directory");
        Ok(())
    }

    fn remove_moved_aside(&mut self, _directory: DirectoryName) -> io::Result<()> {
        self.dead()
    }

    fn prune_script_exists(&self) -> bool {
        true
    }

    fn run_prune_script(
        &mut self,
        _directory: DirectoryName,
        _log: &Arc<SyncLog>,
    ) -> Result<(), String> {
        self.dead().map_err(|error| error.to_string())?;
        if self.world.prune_script_failing {
            Err("ssh: connect to host backup.example: Connection refused".into())
        } else {
            Ok(())
        }
    }

    fn prepare_base_directory(&mut self, _directory: DirectoryName) -> Result<(), String> {
        self.dead().map_err(|error| error.to_string())
    }

    fn start_base_backup(
        &mut self,
        _directory: DirectoryName,
        _log: &Arc<SyncLog>,
    ) -> Result<SimulatedRun, String> {
        self.dead().map_err(|error| error.to_string())?;
        assert!(self.base_backup.is_none(), "two base backups at once");
        let (run, child) = self.start_child();
        self.base_backup = Some(child);
        Ok(run)
    }

    fn poll_base_backup(&mut self, run: &mut SimulatedRun) -> Option<Result<u64, String>> {
        poll(&mut self.base_backup, run)
    }

    fn report_base_backup_progress(&mut self, _run: &mut SimulatedRun, _log: &SyncLog) {}

    fn stop_base_backup(&mut self, run: SimulatedRun, reason: &str) -> String {
        end(&mut self.base_backup, &run);
        reason.to_owned()
    }

    fn start_script(
        &mut self,
        _directory: DirectoryName,
        _current_timestamp: DirectoryName,
        _log: &Arc<SyncLog>,
    ) -> Result<SimulatedRun, String> {
        self.dead().map_err(|error| error.to_string())?;
        assert!(self.script.is_none(), "two scripts at once");
        let (run, child) = self.start_child();
        self.script = Some(child);
        Ok(run)
    }

    fn poll_script(&mut self, run: &mut SimulatedRun) -> Option<ScriptOutcome> {
        poll(&mut self.script, run)
    }

    fn terminate_script(&mut self, _run: &SimulatedRun) {}

    fn stop_script(&mut self, run: SimulatedRun, reason: &str) -> String {
        end(&mut self.script, &run);
        reason.to_owned()
    }
}

/// Runs one sync session of the real loop in `world` to its end (finished, interrupted, or
/// killed), then lets its children die with it.
fn run_session(world: SimulatedWorld, options: SyncOptions) -> SimulatedWorld {
    let home = PgbakHome {
        path: PathBuf::from("/simulated/pgbak"),
        owner_uid: 0,
    };
    let mut world = world;
    world.crashed = false;
    world.signal = None;
    let pid = 100 + u32::try_from(world.next_run).unwrap_or(u32::MAX);
    world.next_run += 1;
    let policy = world.world.policy;
    let log = Arc::new(SyncLog::discard());
    let mut session = Session::new(&home, policy, pid, options, log, world);
    let ended = session.run();
    let mut world = session.into_world();
    match ended {
        Ok(SyncEnded::Finished) => {
            let plan = next_actions(&world.world.state, world.world.now, &policy);
            assert!(plan.finished, "finished with a plan that is not: {plan:?}");
        }
        Ok(SyncEnded::Interrupted { .. }) => {}
        Ok(other) => panic!("a session ended {other:?}"),
        Err(error) => assert!(world.crashed, "the session failed: {error}"),
    }
    // A killed sync's children are gone with it (the next sync records them as failed).
    world.base_backup = None;
    world.script = None;
    world
}

/// Plays `steps`: a `StartSync` runs the real session (which takes the following steps while
/// it waits); then, children succeeding, starts syncs until everything is shipped.
fn run_walk(steps: Vec<Step>) -> SimulatedWorld {
    let mut world = SimulatedWorld::new(steps);
    while let Some(step) = world.walk.pop_front() {
        match step {
            Step::StartSync {
                force_script,
                force_base,
            } => {
                let options = SyncOptions {
                    force_script,
                    force_base,
                    background: false,
                };
                world = run_session(world, options);
            }
            other => world.perform_outside(other),
        }
    }
    // The offsite host is back: the prune script succeeds from here on (S-8.3).
    world.world.prune_script_failing = false;
    for _ in 0..LIVENESS_ROUNDS {
        let plan = next_actions(&world.world.state, world.world.now, &world.world.policy);
        if plan.finished && world.world.state.everything_shipped() {
            return world;
        }
        match plan
            .wake_at
            .filter(|wake| plan.finished && *wake > world.world.now)
        {
            // A retry left to the next `wal` (the server was unreachable, S-6.6).
            Some(wake) => world.world.now = wake,
            None => world = run_session(world, SyncOptions::default()),
        }
    }
    panic!("not everything was shipped\n{:#?}", world.world.state);
}

/// Syncs the liveness phase may start: each one ends finished, so few are needed.
const LIVENESS_ROUNDS: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::DirectoryPhase;
    use crate::machine::table::{EDGES, Edge, Kinds, edges_taken};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn steps(bytes: &[u8]) -> Vec<Step> {
        bytes
            .chunks(2)
            .map(|pair| Step::from_bytes(pair[0], pair.get(1).copied().unwrap_or(0)))
            .collect()
    }

    /// One file and one sync: the real loop takes the first base backup, switches `current`,
    /// runs the script and stops, all through the simulated world.
    #[test]
    fn one_file_and_one_sync_take_the_first_backup_through_the_real_loop() {
        let world = run_walk(vec![
            Step::ArchiveWal,
            Step::StartSync {
                force_script: false,
                force_base: false,
            },
        ]);
        let kinds: Vec<String> = world
            .world
            .history
            .iter()
            .map(|event| format!("{:?}", event.kind()))
            .collect();
        for expected in [
            "BaseBackupStarted",
            "BaseBackupFinished",
            "CurrentLinkSwitched",
            "ScriptStarted",
            "ScriptSucceeded",
            "SyncStopped",
        ] {
            assert!(kinds.iter().any(|kind| kind == expected), "{kinds:?}");
        }
        assert!(world.link.is_some());
    }

    /// The bytes of walk number `walk` of the deterministic walk set: xorshift64* from a seed
    /// derived from the walk's number, so a failing walk replays from its number alone.
    fn walk_bytes(walk: u64, len: usize) -> Vec<u8> {
        let mut seed = 0x005e_ed0f_9bac_u64 ^ walk.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (0..len)
            .map(|_| {
                seed ^= seed >> 12;
                seed ^= seed << 25;
                seed ^= seed >> 27;
                (seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    /// Walks of the deterministic set the edge-coverage check plays.
    const COVERAGE_WALKS: u64 = 400;

    /// Seeded walks of the real session reach every edge of the table: no edge (and so none
    /// in the diagram) is dead for the code that ships, and no walk takes an edge outside it.
    /// The journal's own repairs are recorded by the journal layer, not the session, so they
    /// are added by folding those facts directly.
    #[test]
    fn the_real_session_reaches_every_transition_in_the_table() {
        let mut seen: BTreeSet<Edge> = BTreeSet::new();
        for walk in 0..COVERAGE_WALKS {
            let bytes = walk_bytes(walk, 600);
            let world = std::panic::catch_unwind(|| run_walk(steps(&bytes)))
                .unwrap_or_else(|_| panic!("walk {walk} of the coverage set failed (see above)"));
            seen.extend(world.world.edges_seen.iter().copied());
        }
        let at = UnixMillis(1_795_478_400_000);
        let tail_cut = Event::JournalTailCut {
            offset: 1,
            discarded_bytes: 1,
            at,
        };
        let rebuilt = Event::JournalRebuilt {
            reason: "test".into(),
            damage: true,
            at,
        };
        for events in [
            vec![
                tail_cut.clone(),
                tail_cut.clone(),
                rebuilt.clone(),
                rebuilt.clone(),
                tail_cut,
            ],
            vec![rebuilt],
        ] {
            let mut state = State::default();
            for event in events {
                let before = Kinds::of(&state);
                apply(&mut state, &event).unwrap();
                seen.extend(edges_taken(&before, &Kinds::of(&state), &event));
            }
        }
        let table: BTreeSet<Edge> = EDGES.iter().copied().collect();
        let unreached: Vec<String> = table.difference(&seen).map(|e| e.to_string()).collect();
        assert!(unreached.is_empty(), "edges never taken: {unreached:#?}");
        let outside: Vec<String> = seen.difference(&table).map(|e| e.to_string()).collect();
        assert!(outside.is_empty(), "edges outside the table: {outside:#?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Replaying any prefix of what the real session (and the world around it) recorded
        /// gives exactly the state at that point (S-3.2): crash recovery is replay.
        #[test]
        fn replaying_any_prefix_of_the_real_session_gives_the_state_at_that_point(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cut in any::<prop::sample::Index>(),
        ) {
            let world = run_walk(steps(&bytes));
            let (length, expected) = &world.checkpoints[cut.index(world.checkpoints.len())];
            let mut replayed = State::default();
            for event in &world.world.history[..*length] {
                apply(&mut replayed, event).unwrap();
            }
            prop_assert_eq!(&replayed, expected);
        }

        /// Liveness: from wherever a walk leaves it, with children that succeed, the real
        /// session ships everything within `LIVENESS_ROUNDS` syncs and leaves every directory
        /// current or sealed.
        #[test]
        fn the_real_session_eventually_ships_everything(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let world = run_walk(steps(&bytes));
            prop_assert!(world.world.state.everything_shipped());
            for (name, directory) in &world.world.state.directories {
                prop_assert!(
                    matches!(directory.phase, DirectoryPhase::Current | DirectoryPhase::Sealed),
                    "{} is {:?}", name, directory.phase
                );
            }
        }

        /// The real session loop in a simulated world: invariants after every step, the plan
        /// carried out whenever it waits, everything eventually shipped, and the recorded facts
        /// replay to the final state.
        #[test]
        fn the_real_session_keeps_the_invariants_and_ships_everything(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let world = run_walk(steps(&bytes));
            let state = &world.world.state;
            prop_assert!(state.everything_shipped());
            let mut replayed = State::default();
            for event in &world.world.history {
                apply(&mut replayed, event).unwrap();
            }
            prop_assert_eq!(&replayed, state);
        }
    }
}
