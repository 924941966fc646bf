//! Fuzz target: stepping the pure machine.
//!
//! Two halves per input. First, the bytes drive the simulated world (`machine::simulation`):
//! every step's facts must be accepted and the invariants must hold afterwards, and liveness
//! must hold from wherever the walk ended. Second, arbitrary raw events (most of them
//! nonsense) are thrown at `apply` and `next_actions`: neither may panic, and a rejected event
//! must leave the state exactly as it was, and an accepted one must keep the invariants.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use pgbak::machine::simulation::{Step, World, simulation_policy};
use pgbak::machine::{Event, apply, next_actions};
use pgbak::timestamp::UnixMillis;

/// Raw events thrown at the machine per input.
const MAX_RAW_EVENTS: usize = 1_000;

fuzz_target!(|data: &[u8]| {
    let split = data.len() / 2;
    let (walk, raw) = data.split_at(split);

    let mut world = World::new(simulation_policy());
    for pair in walk.chunks(2).take(2_000) {
        let step = Step::from_bytes(pair[0], pair.get(1).copied().unwrap_or(0));
        let previous = world.state.clone();
        let recorded = match world.perform(step) {
            Ok(recorded) => recorded,
            Err(rejection) => panic!("{step:?} rejected: {rejection}"),
        };
        if let Err(broken) = world.check(&previous, recorded) {
            panic!("after {step:?}: {broken}");
        }
    }
    let mut fair = world.clone();
    if let Err(stuck) = fair.run_until_shipped(400) {
        panic!("liveness: {stuck}");
    }

    let mut state = world.state.clone();
    let mut input = Unstructured::new(raw);
    // `arbitrary` keeps producing default values from exhausted input: stop when it is used up.
    for _ in 0..MAX_RAW_EVENTS {
        if input.is_empty() {
            break;
        }
        let Ok(event) = input.arbitrary::<Event>() else { break };
        let before = state.clone();
        match apply(&mut state, &event) {
            Err(_) => assert_eq!(state, before, "a rejected event changed the state"),
            // Whatever the machine accepts keeps its invariants.
            Ok(()) => {
                if let Err(broken) = state.check_invariants() {
                    panic!("{event:?} accepted but broke: {broken}");
                }
            }
        }
        let now: u64 = input.arbitrary().unwrap_or(0);
        let _ = next_actions(&state, UnixMillis(now), &world.policy);
    }
});
