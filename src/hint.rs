//! Operator hints: the second line (`hint: …`) printed under an error where the operator can act.
//!
//! Owns: the [`OperatorHint`] trait that every room's error enum implements. An error that
//! wraps another one answers by asking it; `main.rs` asks the command's [`crate::Error`]
//! (see `crate::error` for why there is no registry of types to walk).
//! Invariant: a hint is one line, says what to do (not what went wrong: the error says that).

/// Implemented by each layer's error enum.
pub trait OperatorHint {
    /// What the operator can do about this error, if anything.
    fn hint(&self) -> Option<String>;
}
