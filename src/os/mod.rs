//! Operating-system primitives, with no knowledge of what pgbak stores.
pub mod clock;
pub mod durable;
pub mod lock;
pub mod regular_file;
pub mod signals;
