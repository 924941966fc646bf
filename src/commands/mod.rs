//! One module per CLI subcommand: each turns parsed arguments into calls on the layers below and
//! returns a [`crate::Error`] to `main.rs`, which prints it (with its hint) and maps it to an
//! exit code.

pub mod init;
pub mod new_series;
pub mod prune;
pub mod restore;
pub mod restore_wal;
pub mod status;
pub mod sync;
pub mod verify;
pub mod wait;
pub mod wal;
