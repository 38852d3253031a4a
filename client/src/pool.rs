//! A region allocator: one registered memfd carved into slices, so an app asks for
//! "room for this tensor" instead of laying out offsets by hand.
//!
//! Slices are 64-byte aligned (what the daemon's kernels like) and go back to the pool
//! when dropped. The pool's region stays registered as long as the pool or any slice
//! lives.

use std::sync::{Arc, Mutex};

use switchyard_proto::v1::ShmRef;

use crate::shm::ShmRegion;
use crate::{ClientError, DType, Tensor};

const ALIGN: u64 = 64;

struct PoolInner {
    region: ShmRegion,
    /// Free ranges `(offset, length)`, sorted by offset, never adjacent.
    free: Mutex<Vec<(u64, u64)>>,
}

/// A shared-memory region registered with the daemon, handing out slices.
#[derive(Clone)]
pub struct ShmPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for ShmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmPool")
            .field("region", &self.inner.region.id())
            .field("len", &self.inner.region.len())
            .field("free", &self.free_bytes())
            .finish()
    }
}

impl ShmPool {
    pub(crate) fn new(region: ShmRegion) -> ShmPool {
        let len = region.len() as u64;
        ShmPool {
            inner: Arc::new(PoolInner {
                region,
                free: Mutex::new(vec![(0, len)]),
            }),
        }
    }

    /// The daemon's id of the underlying region.
    pub fn region_id(&self) -> u64 {
        self.inner.region.id()
    }

    pub fn len(&self) -> usize {
        self.inner.region.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.region.is_empty()
    }

    pub fn free_bytes(&self) -> u64 {
        lock(&self.inner.free).iter().map(|r| r.1).sum()
    }

    /// A slice of `len` bytes (first fit), or an error when the pool has no such room.
    pub fn alloc(&self, len: usize) -> Result<ShmSlice, ClientError> {
        let want = (len.max(1) as u64)
            .checked_next_multiple_of(ALIGN)
            .ok_or_else(|| ClientError::Invalid(format!("{len} bytes is too large")))?;
        let mut free = lock(&self.inner.free);
        let i = free.iter().position(|&(_, l)| l >= want).ok_or_else(|| {
            ClientError::Shm(format!(
                "the pool of {} bytes has no free {want} bytes in one piece",
                self.inner.region.len()
            ))
        })?;
        let (offset, l) = free[i];
        if l == want {
            free.remove(i);
        } else {
            free[i] = (offset + want, l - want);
        }
        Ok(ShmSlice {
            pool: self.inner.clone(),
            offset,
            len: len as u64,
            reserved: want,
        })
    }

    /// A slice holding a copy of `t`'s bytes, ready to be a run's input.
    pub fn tensor(&self, t: &Tensor) -> Result<ShmTensor, ClientError> {
        let mut slice = self.alloc(t.data.len())?;
        slice.write(&t.data)?;
        Ok(ShmTensor {
            dtype: t.dtype,
            shape: t.shape.clone(),
            slice,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Room in a pool: a run's input or output destination.
pub struct ShmSlice {
    pool: Arc<PoolInner>,
    offset: u64,
    len: u64,
    reserved: u64,
}

impl std::fmt::Debug for ShmSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmSlice")
            .field("region", &self.pool.region.id())
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl ShmSlice {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The reference a request names.
    pub fn shm_ref(&self) -> ShmRef {
        ShmRef {
            region: self.pool.region.id(),
            offset: self.offset,
            length: self.len,
        }
    }

    /// Copies `data` to the start of the slice.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if data.len() as u64 > self.len {
            return Err(ClientError::Invalid(format!(
                "{} bytes do not fit a slice of {}",
                data.len(),
                self.len
            )));
        }
        self.pool.region.write_at(self.offset, data)
    }

    /// The first byte of the slice in this process, for writing in place (C callers).
    /// Stays valid while the slice lives; writes must stay within `len()` bytes.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.pool.region.ptr_at(self.offset)
    }

    /// The slice's bytes (e.g. an output the daemon wrote).
    pub fn bytes(&self) -> &[u8] {
        // In range by construction; an empty slice on the impossible error.
        self.pool
            .region
            .bytes_at(self.offset, self.len)
            .unwrap_or_default()
    }

    /// The first `len` bytes (an output's actual length, from the run's response).
    pub fn prefix(&self, len: u64) -> Result<&[u8], ClientError> {
        self.bytes()
            .get(..usize::try_from(len).unwrap_or(usize::MAX))
            .ok_or_else(|| ClientError::Invalid(format!("{len} is beyond a slice of {}", self.len)))
    }
}

impl Drop for ShmSlice {
    fn drop(&mut self) {
        let mut free = lock(&self.pool.free);
        let at = free.partition_point(|&(o, _)| o < self.offset);
        free.insert(at, (self.offset, self.reserved));
        // Merge with the next, then with the previous free range.
        if at + 1 < free.len() && free[at].0 + free[at].1 == free[at + 1].0 {
            free[at].1 += free[at + 1].1;
            free.remove(at + 1);
        }
        if at > 0 && free[at - 1].0 + free[at - 1].1 == free[at].0 {
            free[at - 1].1 += free[at].1;
            free.remove(at);
        }
    }
}

/// A tensor whose bytes live in a pool slice.
#[derive(Debug)]
pub struct ShmTensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub slice: ShmSlice,
}
