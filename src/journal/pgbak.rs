//! The journal of pgbak's own machine: `impl Replay for machine::State`.
//!
//! Owns: the mapping from journal repairs to machine facts (`JournalTailCut`,
//! `JournalRebuilt`). Invariant: the machine accepts both repair facts in every state (the
//! `journal` component of the diagram has an edge from every kind), so a repair can always be
//! recorded.

use super::{Repair, Replay};
use crate::machine::{self, Event, State, TransitionError};
use crate::timestamp::UnixMillis;

impl Replay for State {
    type Event = Event;
    type Rejection = TransitionError;

    fn initial() -> Self {
        State::default()
    }

    fn apply(&mut self, event: &Event) -> Result<(), TransitionError> {
        machine::apply(self, event)
    }

    fn repair_event(repair: &Repair, at: UnixMillis) -> Event {
        match repair {
            Repair::TailCut {
                offset,
                discarded_bytes,
            } => Event::JournalTailCut {
                offset: *offset,
                discarded_bytes: *discarded_bytes,
                at,
            },
            Repair::Rebuilt { reason } => Event::JournalRebuilt {
                reason: reason.to_string(),
                damage: reason.is_damage(),
                at,
            },
        }
    }
}
