//! Sessions: one stream's state over a shared plan, owned by one tenant.
//!
//! A session is opened on one of the tenant's models and lives in the tenant (see
//! [`crate::tenant`]), so another tenant cannot name it: its id is looked up in the
//! caller's own table and is `NotFound` exactly like an id that never existed. Ids count
//! per tenant and reveal nothing about other tenants.
//!
//! A session ends with `CloseSession`, when the tenant unloads its model, or when the
//! process that opened it exits (on the Unix socket; the daemon checks the opener's pid
//! and start time, so a reused pid does not keep it alive). A tenant on TCP has no pid:
//! its sessions live until closed or unloaded, bounded by its quotas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_interpreter::Session;

use crate::registry::PreparedModel;

/// The process that opened a session: pid and start time (clock ticks after boot, field
/// 22 of `/proc/<pid>/stat`), which together name one process even when pids are reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opener {
    pub pid: u32,
    pub start: u64,
}

impl Opener {
    /// The process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<Opener> {
        Some(Opener {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether the process that opened the session still runs.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything; the
    // fields after the last ')' start with field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One open session.
pub struct SessionEntry {
    pub id: u64,
    /// The tenant's handle on the model (its id).
    pub model_id: String,
    pub model: Arc<PreparedModel>,
    pub opener: Option<Opener>,
    /// Runs on one session execute one at a time, in arrival order.
    pub state: Arc<tokio::sync::Mutex<Session>>,
    runs: AtomicU64,
    /// Memory after the last run, reset or open (for listings without the lock).
    memory: AtomicU64,
}

impl SessionEntry {
    pub fn new(
        id: u64,
        model_id: String,
        model: Arc<PreparedModel>,
        opener: Option<Opener>,
        session: Session,
    ) -> SessionEntry {
        let memory = AtomicU64::new(session.memory_bytes() as u64);
        SessionEntry {
            id,
            model_id,
            model,
            opener,
            state: Arc::new(tokio::sync::Mutex::new(session)),
            runs: AtomicU64::new(0),
            memory,
        }
    }

    /// Records one finished run (or reset) and what the session holds after it.
    pub fn ran(&self, session: &Session, counted: bool) {
        if counted {
            self.runs.fetch_add(1, Ordering::Relaxed);
        }
        self.memory
            .store(session.memory_bytes() as u64, Ordering::Relaxed);
    }

    pub fn info(&self) -> switchyard_proto::v1::SessionInfo {
        switchyard_proto::v1::SessionInfo {
            id: self.id,
            model_id: self.model_id.clone(),
            memory_bytes: self.memory.load(Ordering::Relaxed),
            runs: self.runs.load(Ordering::Relaxed),
        }
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for SessionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEntry")
            .field("id", &self.id)
            .field("model_id", &self.model_id)
            .field("memory", &self.memory_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = Opener::of(std::process::id()).expect("own /proc entry");
        assert!(me.alive());
        let reused = Opener {
            start: me.start + 1,
            ..me
        };
        assert!(!reused.alive());
        assert!(Opener::of(u32::MAX).is_none());
    }
}
