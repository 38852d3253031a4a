//! A session's memory: every buffer it owns is counted against its limit when it is
//! allocated or grown, and released when it shrinks or drops. Growth past the limit, or
//! an allocation the system refuses, is `RunError::Memory` with the figures.
//!
//! A session's meter may also count into a [`MemoryPool`] shared by several sessions
//! (the daemon gives each tenant one, limited by its quota), so that many sessions
//! together cannot grow past one limit either.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::RunError;
use crate::tensor::AlignedBuf;

/// Bytes a session holds and may hold.
#[derive(Debug)]
pub(crate) struct Meter {
    used: AtomicUsize,
    limit: AtomicUsize,
    /// Where these bytes are counted as well (a pool several sessions share).
    parent: Mutex<Option<Arc<Meter>>>,
}

impl Meter {
    pub fn new(limit: usize) -> Arc<Meter> {
        Arc::new(Meter {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            parent: Mutex::new(None),
        })
    }

    fn parent(&self) -> Option<Arc<Meter>> {
        self.parent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts everything this meter holds in `parent` from now on (and nowhere else),
    /// or refuses when `parent` cannot take it.
    pub fn set_parent(
        &self,
        parent: Option<Arc<Meter>>,
        what: &dyn Fn() -> String,
    ) -> Result<(), RunError> {
        let mut slot = self.parent.lock().unwrap_or_else(|e| e.into_inner());
        let used = self.used();
        if let Some(p) = &parent {
            p.charge(used, what)?;
        }
        if let Some(old) = std::mem::replace(&mut *slot, parent) {
            old.release(used);
        }
        Ok(())
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Counts `bytes` more, or refuses them.
    pub fn charge(&self, bytes: usize, what: &dyn Fn() -> String) -> Result<(), RunError> {
        let limit = self.limit();
        let refused = |used: usize| RunError::Memory {
            what: what(),
            requested: bytes,
            used,
            limit,
        };
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .map_err(refused)?;
        if let Some(p) = self.parent()
            && let Err(e) = p.charge(bytes, what)
        {
            self.release_own(bytes);
            return Err(e);
        }
        Ok(())
    }

    fn release_own(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    pub fn release(&self, bytes: usize) {
        self.release_own(bytes);
        if let Some(p) = self.parent() {
            p.release(bytes);
        }
    }
}

/// A limit shared by several sessions: each session's bytes count against its own
/// [`crate::SessionLimits`] and against the pool it is in (the daemon gives every tenant
/// one, sized by its quota, so all of the tenant's sessions together stay within it).
#[derive(Clone, Debug)]
pub struct MemoryPool {
    pub(crate) meter: Arc<Meter>,
}

impl MemoryPool {
    pub fn new(limit: usize) -> MemoryPool {
        MemoryPool {
            meter: Meter::new(limit),
        }
    }

    /// Bytes the sessions in the pool hold together.
    pub fn used(&self) -> usize {
        self.meter.used()
    }

    pub fn limit(&self) -> usize {
        self.meter.limit()
    }

    /// Memory already held stays; growth is checked against the new limit.
    pub fn set_limit(&self, limit: usize) {
        self.meter.set_limit(limit);
    }
}

/// A buffer counted against a session's meter. The default value is empty and
/// uncounted (what `std::mem::take` leaves behind while a buffer is lent to a kernel).
#[derive(Default)]
pub(crate) struct MBuf {
    buf: AlignedBuf,
    meter: Option<Arc<Meter>>,
}

impl MBuf {
    /// An empty buffer that counts what it grows to.
    pub fn empty(meter: &Arc<Meter>) -> MBuf {
        MBuf {
            buf: AlignedBuf::default(),
            meter: Some(meter.clone()),
        }
    }

    /// `len` zero bytes, counted.
    pub fn zeroed(
        meter: &Arc<Meter>,
        len: usize,
        what: &dyn Fn() -> String,
    ) -> Result<MBuf, RunError> {
        let mut b = MBuf::empty(meter);
        b.resize(len, what)?;
        Ok(b)
    }

    /// A counted copy of `bytes`.
    pub fn copy_of(
        meter: &Arc<Meter>,
        bytes: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<MBuf, RunError> {
        let mut b = MBuf::empty(meter);
        b.set(bytes, what)?;
        Ok(b)
    }

    /// Resizes to `len` bytes (new bytes zero), counting the difference.
    pub fn resize(&mut self, len: usize, what: &dyn Fn() -> String) -> Result<(), RunError> {
        let old = self.buf.len();
        if len > old {
            if let Some(m) = &self.meter {
                m.charge(len - old, what)?;
            }
            if let Err(e) = self.buf.try_resize(len) {
                let (used, limit) = match &self.meter {
                    Some(m) => {
                        m.release(len - old);
                        (m.used(), m.limit())
                    }
                    None => (0, 0),
                };
                return Err(RunError::Memory {
                    what: what(),
                    requested: e.bytes,
                    used,
                    limit,
                });
            }
        } else if len < old {
            self.buf.resize(len);
            if let Some(m) = &self.meter {
                m.release(old - len);
            }
        }
        Ok(())
    }

    /// Makes this buffer a copy of `bytes`.
    pub fn set(&mut self, bytes: &[u8], what: &dyn Fn() -> String) -> Result<(), RunError> {
        self.resize(bytes.len(), what)?;
        self.buf.as_mut_slice().copy_from_slice(bytes);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn as_slice(&self) -> &[u8] {
        self.buf.as_slice()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_mut_slice()
    }
}

impl std::fmt::Debug for MBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MBuf({} bytes)", self.buf.len())
    }
}

impl Drop for MBuf {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.release(self.buf.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn what() -> String {
        "test".into()
    }

    #[test]
    fn buffers_are_counted_until_dropped_and_refused_past_the_limit() {
        let m = Meter::new(1000);
        let mut a = MBuf::zeroed(&m, 600, &what).unwrap();
        assert_eq!(m.used(), 600);
        let e = MBuf::zeroed(&m, 500, &what).unwrap_err();
        assert!(
            matches!(
                e,
                RunError::Memory {
                    requested: 500,
                    used: 600,
                    limit: 1000,
                    ..
                }
            ),
            "{e}"
        );
        a.resize(100, &what).unwrap();
        assert_eq!(m.used(), 100);
        let b = MBuf::copy_of(&m, &[1; 900], &what).unwrap();
        assert_eq!(m.used(), 1000);
        drop(b);
        drop(a);
        assert_eq!(m.used(), 0);
        // An impossible size is an error, not an abort, even under a huge limit.
        let big = Meter::new(usize::MAX);
        assert!(MBuf::zeroed(&big, usize::MAX / 2, &what).is_err());
        assert_eq!(big.used(), 0);
    }

    #[test]
    fn sessions_in_a_pool_share_its_limit_and_move_between_pools_with_their_bytes() {
        let pool = MemoryPool::new(1000);
        let (a, b) = (Meter::new(800), Meter::new(800));
        a.set_parent(Some(pool.meter.clone()), &what).unwrap();
        b.set_parent(Some(pool.meter.clone()), &what).unwrap();
        let x = MBuf::zeroed(&a, 700, &what).unwrap();
        // B is within its own limit but the pool is not.
        let e = MBuf::zeroed(&b, 400, &what).unwrap_err();
        assert!(
            matches!(
                e,
                RunError::Memory {
                    used: 700,
                    limit: 1000,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!((b.used(), pool.used()), (0, 700));
        let y = MBuf::zeroed(&b, 300, &what).unwrap();
        assert_eq!(pool.used(), 1000);
        // Leaving the pool takes the bytes along; a pool too small refuses them.
        b.set_parent(None, &what).unwrap();
        assert_eq!(pool.used(), 700);
        let small = MemoryPool::new(100);
        assert!(b.set_parent(Some(small.meter.clone()), &what).is_err());
        assert_eq!((small.used(), b.used()), (0, 300));
        drop(x);
        drop(y);
        assert_eq!((pool.used(), a.used(), b.used()), (0, 0, 0));
    }
}
