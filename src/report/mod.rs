//! The status report of `pgbak status`: what is stored, shipped, running, due and wrong (S-6.4).
//!
//! Owns: the [`StatusReport`] (the `--json` schema, version [`SCHEMA_VERSION`], documented in
//! the README) and its human rendering, and `--journal`'s record listing. In the order the data
//! flows: `collect` (the I/O, and [`build_report`] which assembles the report), `analyse` (the
//! parts computed from the journal state alone, pure), `model` (the report's shape), `render`.
//!
//! Invariants: the report is computed once, from one consistent replay of the journal plus a
//! look at the tree, and both renderings print that same report, so they never disagree.
//! Opening the journal may repair it (cut a torn tail, rebuild from the tree); the repair is
//! recorded in the journal and reported. An unused `$PGBAK` (no journal bytes, no backup
//! directory) is reported as empty and left untouched. Strict modes (S-1.5) are reported as
//! `insecure_permissions` problems, first, instead of refused: status runs nothing from
//! `$PGBAK`, and an operator needs it most when something is wrong.

mod analyse;
mod collect;
mod error;
mod model;
mod render;
mod retention;

pub use collect::build_report;
pub use error::ReportError;
pub use model::*;
pub use render::{human_bytes, render_human, render_journal};
