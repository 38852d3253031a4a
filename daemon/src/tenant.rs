//! Tenants: who is calling, what they hold, and the quotas that bound them.
//!
//! A tenant is a uid on the Unix socket (from SO_PEERCRED) or the owner of a bearer token
//! on TCP. Model handles live inside the tenant, so looking a model up through another
//! tenant is impossible by construction rather than by a check that could be forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use switchyard_config::daemon::QuotaConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::error::DaemonError;
use crate::registry::PreparedModel;

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
    /// existing handle without charging the quota again.
    pub fn insert(&self, caller: &Caller, id: String, handle: Handle) -> Result<(), DaemonError> {
        self.with(caller, |s| {
            if let Some(existing) = s.handles.get(&id) {
                if existing.model.sha256 == handle.model.sha256 {
                    return Ok(());
                }
                return Err(DaemonError::Internal(format!(
                    "model id `{id}` collides with another model of this tenant"
                )));
            }
            check_model_quota(
                &self.quota,
                s,
                handle.model.bytes,
                handle.model.arena_bytes,
                Some(&id),
            )?;
            s.handles.insert(id, handle);
            Ok(())
        })
    }

    pub fn remove(&self, caller: &Caller, id: &str) -> Result<Handle, DaemonError> {
        self.with(caller, |s| s.handles.remove(id))
            .ok_or_else(|| DaemonError::NotFound {
                kind: "model",
                id: id.to_owned(),
            })
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
    let model_bytes: u64 = s.handles.values().map(|h| h.model.bytes).sum();
    if model_bytes.saturating_add(bytes) > q.model_bytes {
        return Err(DaemonError::Quota {
            quota: "model_bytes",
            limit: q.model_bytes,
            detail: format!(
                "the tenant holds {model_bytes} bytes of models and this one has {bytes}"
            ),
        });
    }
    let arena_bytes: u64 = s.handles.values().map(|h| h.model.arena_bytes).sum();
    if arena_bytes.saturating_add(arena) > q.arena_bytes {
        return Err(DaemonError::Quota {
            quota: "arena_bytes",
            limit: q.arena_bytes,
            detail: format!(
                "the tenant's models use {arena_bytes} arena bytes and this one needs {arena}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ModelRegistry;
    use crate::registry::tests::add_model;

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
        let one = reg.load(&add_model(1.0)).unwrap().0;
        let two = reg.load(&add_model(2.0)).unwrap().0;
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
