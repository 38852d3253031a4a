//! Tenants: who is calling, what they hold, and the quotas that bound them.
//!
//! A tenant is a uid on the Unix socket (from SO_PEERCRED) or the owner of a bearer token
//! on TCP. Model handles and sessions live inside the tenant, so looking one up through
//! another tenant is impossible by construction rather than by a check that could be
//! forgotten.
//!
//! Memory a tenant is charged: every model it holds in full, as if it were alone (model
//! bytes plus the plan's packed weights and folded constants, quota `model_bytes`), and
//! every byte its sessions hold (arenas at their current shapes, heap tensors, variables,
//! quota `arena_bytes`), counted in one [`MemoryPool`] per tenant that every session it
//! opens or borrows counts into; growth past it is refused with the figures.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_config::daemon::QuotaConfig;
use switchyard_interpreter::MemoryPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::DaemonError;
use crate::registry::PreparedModel;
use crate::sessions::{Opener, SessionEntry};

/// Recovers the data of a poisoned lock: every critical section here leaves the maps
/// consistent before anything that could panic, so the data is still valid.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantId {
    Uid(u32),
    Token(String),
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantId::Uid(u) => write!(f, "uid:{u}"),
            TenantId::Token(t) => write!(f, "token:{t}"),
        }
    }
}

/// The identified caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: TenantId,
    pub pid: Option<u32>,
    pub admin: bool,
}

/// A tenant's handle on a shared prepared model.
#[derive(Clone)]
pub struct Handle {
    pub name: String,
    pub model: Arc<PreparedModel>,
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub requests: u64,
    pub failed: u64,
    pub rejected: u64,
    pub queue_us_total: u64,
    pub run_us_total: u64,
    pub last_queue_us: u64,
    pub last_run_us: u64,
}

struct TenantState {
    handles: BTreeMap<String, Handle>,
    in_flight: Arc<Semaphore>,
    counters: Counters,
    pids: VecDeque<u32>,
    /// Open sessions by the tenant's own ids.
    sessions: BTreeMap<u64, Arc<SessionEntry>>,
    next_session: u64,
    /// What every session of this tenant (its own, and pooled ones while it runs on
    /// them) holds, limited by `arena_bytes`.
    memory: MemoryPool,
}

/// What `tenants`/`status` report about one tenant (region figures are added by the
/// caller, which owns the region table).
#[derive(Clone, Debug)]
pub struct TenantSnapshot {
    pub id: TenantId,
    pub pids: Vec<u32>,
    pub models: usize,
    pub model_bytes: u64,
    pub arena_bytes: u64,
    /// Model bytes plus plan bytes of every model held, each as if alone.
    pub plan_bytes: u64,
    pub sessions: usize,
    /// Bytes the tenant's sessions hold now (its open ones and pooled ones it runs on).
    pub session_bytes: u64,
    pub in_flight: usize,
    pub counters: Counters,
}

const PIDS_KEPT: usize = 8;

pub struct Tenants {
    quota: QuotaConfig,
    inner: Mutex<HashMap<TenantId, TenantState>>,
}

impl Tenants {
    pub fn new(quota: QuotaConfig) -> Tenants {
        Tenants {
            quota,
            inner: Mutex::new(HashMap::new()),
        }
    }

    pub fn quota(&self) -> &QuotaConfig {
        &self.quota
    }

    fn with<R>(&self, caller: &Caller, f: impl FnOnce(&mut TenantState) -> R) -> R {
        let mut map = lock(&self.inner);
        let state = map
            .entry(caller.tenant.clone())
            .or_insert_with(|| TenantState {
                handles: BTreeMap::new(),
                in_flight: Arc::new(Semaphore::new(self.quota.in_flight)),
                counters: Counters::default(),
                pids: VecDeque::new(),
                sessions: BTreeMap::new(),
                next_session: 1,
                memory: MemoryPool::new(
                    usize::try_from(self.quota.arena_bytes).unwrap_or(usize::MAX),
                ),
            });
        if let Some(pid) = caller.pid
            && state.pids.back() != Some(&pid)
        {
            state.pids.retain(|&p| p != pid);
            state.pids.push_back(pid);
            if state.pids.len() > PIDS_KEPT {
                state.pids.pop_front();
            }
        }
        f(state)
    }

    /// Admits one more request of `caller`, or refuses it with the in-flight quota.
    pub fn admit(&self, caller: &Caller) -> Result<OwnedSemaphorePermit, DaemonError> {
        let limit = self.quota.in_flight as u64;
        self.with(caller, |s| match s.in_flight.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => {
                s.counters.rejected += 1;
                Err(DaemonError::Quota {
                    quota: "in_flight",
                    limit,
                    detail: format!("{} already has {limit} requests in flight", caller.tenant),
                })
            }
        })
    }

    pub fn handle(&self, caller: &Caller, id: &str) -> Result<Handle, DaemonError> {
        self.with(caller, |s| s.handles.get(id).cloned())
            .ok_or_else(|| DaemonError::NotFound {
                kind: "model",
                id: id.to_owned(),
            })
    }

    pub fn handles(&self, caller: &Caller) -> Vec<(String, Handle)> {
        self.with(caller, |s| {
            s.handles
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Checks the count and byte quotas before a model of `bytes` is prepared, so an
    /// over-quota tenant does not make the daemon do the expensive work first.
    pub fn precheck_load(&self, caller: &Caller, bytes: u64) -> Result<(), DaemonError> {
        self.with(caller, |s| {
            check_model_quota(&self.quota, s, bytes, 0, None)
        })
    }

    /// Whether `caller` already holds the model with this digest (reloading it costs no
    /// quota).
    pub fn holds(&self, caller: &Caller, digest: &[u8; 32]) -> bool {
        self.with(caller, |s| {
            s.handles.values().any(|h| &h.model.sha256 == digest)
        })
    }

    /// Gives `caller` a handle on `model`; loading the same model twice returns the
    /// existing handle without charging the quota again, and the tenant's sessions on it
    /// (which the caller resets: a reload starts fresh streams).
    pub fn insert(
        &self,
        caller: &Caller,
        id: String,
        handle: Handle,
    ) -> Result<Vec<Arc<SessionEntry>>, DaemonError> {
        self.with(caller, |s| {
            if let Some(existing) = s.handles.get(&id) {
                if existing.model.sha256 == handle.model.sha256 {
                    return Ok(s
                        .sessions
                        .values()
                        .filter(|e| e.model_id == id)
                        .cloned()
                        .collect());
                }
                return Err(DaemonError::Internal(format!(
                    "model id `{id}` collides with another model of this tenant"
                )));
            }
            check_model_quota(
                &self.quota,
                s,
                handle.model.bytes + handle.model.plan_bytes(),
                handle.model.arena_bytes,
                Some(&id),
            )?;
            s.handles.insert(id, handle);
            Ok(Vec::new())
        })
    }

    /// Drops the caller's handle on a model and closes its sessions on it.
    pub fn remove(&self, caller: &Caller, id: &str) -> Result<Handle, DaemonError> {
        self.with(caller, |s| {
            let h = s.handles.remove(id)?;
            s.sessions.retain(|_, e| e.model_id != id);
            Some(h)
        })
        .ok_or_else(|| DaemonError::NotFound {
            kind: "model",
            id: id.to_owned(),
        })
    }

    /// The pool every session `caller` uses counts into.
    pub fn memory(&self, caller: &Caller) -> MemoryPool {
        self.with(caller, |s| s.memory.clone())
    }

    /// Whether `caller` may open one more session (checked before the session's memory
    /// is allocated, and again when it is added).
    pub fn precheck_session(&self, caller: &Caller) -> Result<(), DaemonError> {
        self.with(caller, |s| check_session_quota(&self.quota, s))
    }

    /// Adds a session opened on the caller's model `model_id`; the model must still be
    /// held (an unload meanwhile makes it `NotFound`).
    pub fn add_session(
        &self,
        caller: &Caller,
        model_id: &str,
        opener: Option<Opener>,
        session: switchyard_interpreter::Session,
    ) -> Result<Arc<SessionEntry>, DaemonError> {
        self.with(caller, |s| {
            let model = s
                .handles
                .get(model_id)
                .ok_or_else(|| DaemonError::NotFound {
                    kind: "model",
                    id: model_id.to_owned(),
                })?
                .model
                .clone();
            check_session_quota(&self.quota, s)?;
            let id = s.next_session;
            s.next_session += 1;
            let entry = Arc::new(SessionEntry::new(
                id,
                model_id.to_owned(),
                model,
                opener,
                session,
            ));
            s.sessions.insert(id, entry.clone());
            Ok(entry)
        })
    }

    /// One of the caller's sessions; another tenant's id is as unknown as a made-up one.
    pub fn session(&self, caller: &Caller, id: u64) -> Result<Arc<SessionEntry>, DaemonError> {
        self.with(caller, |s| s.sessions.get(&id).cloned())
            .ok_or_else(|| session_not_found(id))
    }

    pub fn sessions(&self, caller: &Caller) -> Vec<Arc<SessionEntry>> {
        self.with(caller, |s| s.sessions.values().cloned().collect())
    }

    /// Closes one of the caller's sessions (its memory is freed once a run still using
    /// it ends).
    pub fn close_session(&self, caller: &Caller, id: u64) -> Result<(), DaemonError> {
        self.with(caller, |s| s.sessions.remove(&id))
            .map(drop)
            .ok_or_else(|| session_not_found(id))
    }

    /// Closes every session whose opening process has exited; returns how many.
    pub fn reap_sessions(&self) -> usize {
        let mut map = lock(&self.inner);
        let mut closed = 0;
        for s in map.values_mut() {
            let before = s.sessions.len();
            s.sessions.retain(|_, e| e.opener.is_none_or(|o| o.alive()));
            closed += before - s.sessions.len();
        }
        closed
    }

    /// Records a finished request's outcome and timings.
    pub fn record(&self, caller: &Caller, ok: bool, queue_us: u64, run_us: u64) {
        self.with(caller, |s| {
            let c = &mut s.counters;
            c.requests += 1;
            if !ok {
                c.failed += 1;
            }
            c.queue_us_total = c.queue_us_total.saturating_add(queue_us);
            c.run_us_total = c.run_us_total.saturating_add(run_us);
            c.last_queue_us = queue_us;
            c.last_run_us = run_us;
        })
    }

    pub fn touch(&self, caller: &Caller) {
        self.with(caller, |_| ());
    }

    pub fn snapshot(&self) -> Vec<TenantSnapshot> {
        let map = lock(&self.inner);
        let mut out: Vec<TenantSnapshot> = map
            .iter()
            .map(|(id, s)| TenantSnapshot {
                id: id.clone(),
                pids: s.pids.iter().copied().collect(),
                models: s.handles.len(),
                model_bytes: s.handles.values().map(|h| h.model.bytes).sum(),
                arena_bytes: s.handles.values().map(|h| h.model.arena_bytes).sum(),
                plan_bytes: s
                    .handles
                    .values()
                    .map(|h| h.model.bytes + h.model.plan_bytes())
                    .sum(),
                sessions: s.sessions.len(),
                session_bytes: s.memory.used() as u64,
                in_flight: self
                    .quota
                    .in_flight
                    .saturating_sub(s.in_flight.available_permits()),
                counters: s.counters.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn session_not_found(id: u64) -> DaemonError {
    DaemonError::NotFound {
        kind: "session",
        id: id.to_string(),
    }
}

fn check_session_quota(q: &QuotaConfig, s: &TenantState) -> Result<(), DaemonError> {
    if s.sessions.len() >= q.sessions {
        return Err(DaemonError::Quota {
            quota: "sessions",
            limit: q.sessions as u64,
            detail: format!("the tenant already has {} sessions open", s.sessions.len()),
        });
    }
    Ok(())
}

/// `bytes` is what the new model is charged for: its model bytes, plus its plan's
/// bytes once it is prepared; `arena` is what one session of it needs at the stored
/// shapes, which must fit in the tenant's session memory at all.
fn check_model_quota(
    q: &QuotaConfig,
    s: &TenantState,
    bytes: u64,
    arena: u64,
    new_id: Option<&str>,
) -> Result<(), DaemonError> {
    let held = s.handles.len();
    let adds_one = new_id.is_none_or(|id| !s.handles.contains_key(id));
    if adds_one && held >= q.models {
        return Err(DaemonError::Quota {
            quota: "models",
            limit: q.models as u64,
            detail: format!("the tenant already holds {held} models"),
        });
    }
    let model_bytes: u64 = s
        .handles
        .values()
        .map(|h| h.model.bytes + h.model.plan_bytes())
        .sum();
    if model_bytes.saturating_add(bytes) > q.model_bytes {
        return Err(DaemonError::Quota {
            quota: "model_bytes",
            limit: q.model_bytes,
            detail: format!(
                "the tenant holds {model_bytes} bytes of models and plans and this one has \
                 {bytes}"
            ),
        });
    }
    if arena > q.arena_bytes {
        return Err(DaemonError::Quota {
            quota: "arena_bytes",
            limit: q.arena_bytes,
            detail: format!("one session of this model needs {arena} bytes"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ModelRegistry;
    use switchyard_interpreter::example_models::add_constant;

    fn caller(uid: u32) -> Caller {
        Caller {
            tenant: TenantId::Uid(uid),
            pid: Some(100 + uid),
            admin: false,
        }
    }

    #[test]
    fn in_flight_quota_is_per_tenant_and_released_with_the_permit() {
        let t = Tenants::new(QuotaConfig {
            in_flight: 2,
            ..QuotaConfig::default()
        });
        let (a, b) = (caller(1), caller(2));
        let p1 = t.admit(&a).unwrap();
        let _p2 = t.admit(&a).unwrap();
        let e = t.admit(&a).unwrap_err();
        assert!(e.to_string().contains("`in_flight`"), "{e}");
        let _other = t.admit(&b).unwrap();
        drop(p1);
        let _again = t.admit(&a).unwrap();
        let snap = t.snapshot();
        assert_eq!(snap[0].counters.rejected, 1);
    }

    #[test]
    fn model_quotas_count_handles_and_bytes_and_unload_frees_them() {
        let reg = ModelRegistry::new(1, 1, crate::registry::tests::cpu_only());
        let one = reg.load(&add_constant(1.0)).unwrap().0;
        let two = reg.load(&add_constant(2.0)).unwrap().0;
        let t = Tenants::new(QuotaConfig {
            models: 1,
            ..QuotaConfig::default()
        });
        let a = caller(1);
        let handle = |m: &Arc<PreparedModel>| Handle {
            name: "m".into(),
            model: m.clone(),
        };
        t.insert(&a, one.id(), handle(&one)).unwrap();
        // Loading the same model again is not a second model.
        t.insert(&a, one.id(), handle(&one)).unwrap();
        // Sessions: per tenant, counted, closed with the model's handle.
        let pool = t.memory(&a);
        let sess = t
            .add_session(&a, &one.id(), None, one.open_session(&pool).unwrap())
            .unwrap();
        assert_eq!(pool.used() as u64, one.arena_bytes);
        let b = caller(2);
        let e = t.session(&b, sess.id).err().unwrap();
        assert_eq!(
            e.to_string(),
            t.session(&a, 999)
                .err()
                .unwrap()
                .to_string()
                .replace("999", &sess.id.to_string())
        );
        assert_eq!(t.insert(&a, one.id(), handle(&one)).unwrap().len(), 1);
        assert_eq!(t.snapshot()[0].sessions, 1);
        let e = t.insert(&a, two.id(), handle(&two)).unwrap_err();
        assert!(e.to_string().contains("`models`"), "{e}");
        assert!(t.precheck_load(&a, 10).is_err());
        // Another tenant cannot see the first tenant's handle: same error as unknown.
        let b = caller(2);
        let theirs = t.handle(&b, &one.id()).err().map(|e| e.to_string());
        let unknown = t
            .handle(&b, "0000000000000000")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            theirs.map(|s| s.replace(&one.id(), "X")),
            unknown.map(|s| s.replace("0000000000000000", "X"))
        );
        t.remove(&a, &one.id()).unwrap();
        assert!(
            t.session(&a, sess.id).is_err(),
            "unload closes the sessions"
        );
        drop(sess);
        assert_eq!(pool.used(), 0);
        t.insert(&a, two.id(), handle(&two)).unwrap();

        let tight = Tenants::new(QuotaConfig {
            model_bytes: one.bytes + two.bytes - 1,
            ..QuotaConfig::default()
        });
        tight.insert(&a, one.id(), handle(&one)).unwrap();
        let e = tight.insert(&a, two.id(), handle(&two)).unwrap_err();
        assert!(e.to_string().contains("`model_bytes`"), "{e}");
    }
}
