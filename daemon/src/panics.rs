//! Panics inside the daemon's own work (a kernel, prepare, placement) are bugs, but they
//! are bugs one request triggered: that request gets INTERNAL with a generic message,
//! the details go to the daemon log, and nothing else notices. Before, a panicking run
//! surfaced as RESOURCE_EXHAUSTED "refused by the arbiter" carrying the panic text
//! (issue 10, defect 13).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tracing::error;

use crate::error::DaemonError;

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f`, turning a panic into [`DaemonError::Internal`] with a generic message that
/// names `what` and `id` (so a user can quote it) and logging the panic itself.
///
/// State `f` touches must be left consistent by unwinding: callers drop what `f`
/// borrowed (an interpreter that panicked is never returned to its pool).
pub fn contain<T>(
    what: &'static str,
    id: u64,
    f: impl FnOnce() -> Result<T, DaemonError>,
) -> Result<T, DaemonError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            error!(what, id, panic = %message(payload.as_ref()), "panic contained; the request fails with INTERNAL");
            Err(generic(what, id))
        }
    }
}

/// The error a client sees for a contained panic: no internals, an id to quote.
pub fn generic(what: &'static str, id: u64) -> DaemonError {
    DaemonError::Internal(format!(
        "the {what} failed unexpectedly; the daemon log has the details (id {id})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_without_its_text() {
        let r: Result<(), _> = contain("run", 42, || panic!("secret detail {}", 7));
        let e = r.unwrap_err();
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("secret"), "{}", s.message());
        assert!(s.message().contains("id 42"), "{}", s.message());
        assert_eq!(contain("run", 1, || Ok(5)).unwrap(), 5);
    }
}
