//! Operator hints: the second line (`hint: …`) printed under an error where the operator can act.
//!
//! Owns: the [`OperatorHint`] trait that every layer's error enum implements, and
//! [`hint_for`], which finds the hint of the first error in an `anyhow` chain that has one.
//! Invariant: a hint is one line, says what to do (not what went wrong: the error says that).

/// Implemented by each layer's error enum.
pub trait OperatorHint {
    /// What the operator can do about this error, if anything.
    fn hint(&self) -> Option<String>;
}

/// Registry of the error types that carry hints, so `main.rs` can find one in a chain without
/// knowing every layer. Each layer adds its error type here.
pub fn hint_for(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<crate::home::environment::EnvironmentError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::config::ConfigError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::os::lock::LockError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::journal::JournalError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::sync::base_backup::BaseBackupError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::archive::ArchiveError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::commands::sync::SyncError>() {
            return e.hint();
        }
        if let Some(e) = cause.downcast_ref::<crate::commands::new_series::NewSeriesError>() {
            return e.hint();
        }
        None
    })
}
