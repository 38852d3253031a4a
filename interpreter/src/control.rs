//! Bounded work: what a run may spend, checked between nodes.
//!
//! A run calls [`RunControl::between_nodes`] after every node it executes, nested
//! subgraphs and every WHILE iteration included, with the running count. The usual
//! control is a [`Budget`] (node count, wall-clock deadline, cancellation flag); the
//! arbiter wraps one to yield the core between nodes. A nested loop is bounded by the
//! total count, not only per loop, so no model can spin a core for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::error::RunError;

/// Which budget a run or prepare ran out of.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum BudgetExceeded {
    #[error("run budget exceeded: more than {limit} nodes executed (loop iterations included)")]
    Nodes { limit: u64 },
    #[error("run budget exceeded: the deadline passed after {executed} nodes")]
    Deadline { executed: u64 },
    #[error("prepare budget exceeded: more than {limit} node preparations")]
    PrepareNodes { limit: u64 },
    #[error("prepare budget exceeded: more than {limit:?} of wall time")]
    PrepareTime { limit: Duration },
    #[error("prepare budget exceeded: folded constants need more than {limit} bytes")]
    PrepareBytes { limit: usize },
    #[error(
        "prepare budget exceeded: one node would do about {work} operations, more than the limit of {limit}"
    )]
    NodeWork { work: u64, limit: u64 },
    #[error("more than {limit} input shape sets of one subgraph are being prepared at once")]
    ShapeSets { limit: usize },
}

/// Called between the nodes of a run. Returning an error stops the run with it.
///
/// Besides enforcing budgets this is a yield point: an implementation may block here
/// (the arbiter pauses background work while realtime work waits for the core).
pub trait RunControl {
    fn between_nodes(&mut self, executed: u64) -> Result<(), RunError>;
}

impl<F: FnMut(u64) -> Result<(), RunError>> RunControl for F {
    fn between_nodes(&mut self, executed: u64) -> Result<(), RunError> {
        self(executed)
    }
}

/// Node budget, deadline and cancellation: the control a request runs under.
///
/// The clock is read between nodes only when a deadline is set, so an unbounded-time
/// budget costs a compare per node.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Nodes the run may execute, loop iterations and nested subgraphs included.
    pub max_nodes: u64,
    pub deadline: Option<Instant>,
    /// Raised by whoever wants the run to stop (e.g. the client disconnected).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Nodes a run may execute when the caller sets no budget: far above any real model
/// (a few thousand nodes, a few thousand loop iterations), far below a hostile one.
pub const DEFAULT_MAX_NODES: u64 = 50_000_000;

impl Default for Budget {
    fn default() -> Self {
        Budget::nodes(DEFAULT_MAX_NODES)
    }
}

impl Budget {
    /// Only a node budget.
    pub fn nodes(max_nodes: u64) -> Budget {
        Budget {
            max_nodes,
            deadline: None,
            cancel: None,
        }
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Budget {
        self.deadline = Some(deadline);
        self
    }

    /// Deadline `after` from now.
    pub fn with_timeout(self, after: Duration) -> Budget {
        self.with_deadline(Instant::now() + after)
    }

    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Budget {
        self.cancel = Some(flag);
        self
    }
}

impl RunControl for Budget {
    #[inline]
    fn between_nodes(&mut self, executed: u64) -> Result<(), RunError> {
        if executed > self.max_nodes {
            return Err(BudgetExceeded::Nodes {
                limit: self.max_nodes,
            }
            .into());
        }
        if let Some(flag) = &self.cancel
            && flag.load(Ordering::Relaxed)
        {
            return Err(RunError::Cancelled);
        }
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Err(BudgetExceeded::Deadline { executed }.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stops_at_each_limit() {
        let mut b = Budget::nodes(3);
        assert!(b.between_nodes(3).is_ok());
        assert!(matches!(
            b.between_nodes(4),
            Err(RunError::Budget(BudgetExceeded::Nodes { limit: 3 }))
        ));
        let flag = Arc::new(AtomicBool::new(false));
        let mut b = Budget::nodes(100).with_cancel(flag.clone());
        assert!(b.between_nodes(1).is_ok());
        flag.store(true, Ordering::Relaxed);
        assert!(matches!(b.between_nodes(2), Err(RunError::Cancelled)));
        let mut b = Budget::nodes(100).with_deadline(Instant::now());
        assert!(matches!(
            b.between_nodes(1),
            Err(RunError::Budget(BudgetExceeded::Deadline { executed: 1 }))
        ));
    }

    #[test]
    fn closures_are_controls() {
        let mut seen = 0;
        let mut hook = |n: u64| {
            seen = n;
            Ok(())
        };
        hook.between_nodes(7).unwrap();
        assert_eq!(seen, 7);
    }
}
