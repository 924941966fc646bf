//! Operating-system primitives, each knowing nothing of what pgbak stores: durable files
//! (fsync the file, then the directory, S-2.3), OFD byte-range locks (S-3.5), the clock (S-6.5),
//! stop signals (S-6.1), bounded non-blocking reads of regular files (S-7.1), the one supervisor
//! of children in their own process group and their drained output (S-5.4), and detaching a background process (S-2.8).
//!
//! Invariant: every descriptor opened here is `O_CLOEXEC`; nothing here decides what to do.

pub mod child_output;
pub mod clock;
pub mod detach;
pub mod durable;
pub mod lock;
pub mod process_group;
pub mod regular_file;
pub mod signals;
