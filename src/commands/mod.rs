//! One module per CLI subcommand: each turns parsed arguments into calls on the layers below and
//! returns `anyhow::Result` to `main.rs`, which maps it to an exit code.

pub mod init;
pub mod new_series;
pub mod status;
pub mod sync;
pub mod wait;
pub mod wal;
