//! Client side of shared-memory tensors: a sealed memfd, registered with the daemon by
//! sending its fd over the side socket. Dropping the region closes the side connection,
//! which is how the daemon learns to release it (also when the app crashes).
#![allow(unsafe_code)]

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::DType;
use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use switchyard_proto::v1::ShmRef;

use crate::ClientError;

const REGISTER_MAGIC: [u8; 8] = *b"SYSHM\x01\0\0";

/// The side socket path for a gRPC socket path (same rule as the daemon's config).
fn side_socket(grpc: &Path) -> std::path::PathBuf {
    grpc.with_extension("shm")
}

/// A shared-memory region registered with the daemon.
pub struct ShmRegion {
    id: u64,
    map: MmapRaw,
    _side: UnixStream,
}

impl std::fmt::Debug for ShmRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmRegion")
            .field("id", &self.id)
            .field("len", &self.map.len())
            .finish()
    }
}

fn shm_err(what: &str) -> impl Fn(nix::Error) -> ClientError + '_ {
    move |e| ClientError::Shm(format!("{what}: {e}"))
}

impl ShmRegion {
    pub(crate) fn create(grpc_socket: &Path, size: usize) -> Result<ShmRegion, ClientError> {
        if size == 0 {
            return Err(ClientError::Invalid(
                "a region needs at least one byte".into(),
            ));
        }
        let fd = memfd_create(
            c"switchyard-tensors",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(shm_err("memfd_create"))?;
        let file = std::fs::File::from(fd);
        file.set_len(size as u64)
            .map_err(|source| ClientError::Io {
                what: "sizing the memfd".into(),
                source,
            })?;
        let fd = OwnedFd::from(file);
        // The daemon refuses fds without this seal: shrinking the file under its mapping
        // would crash it.
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL),
        )
        .map_err(shm_err("sealing the memfd"))?;
        let file = std::fs::File::from(fd);
        // Raw: the daemon writes outputs into the same pages, so no Rust reference to
        // the whole mapping may exist; accesses go through checked ranges below.
        let map = MmapOptions::new()
            .len(size)
            .map_raw(&file)
            .map_err(|source| ClientError::Io {
                what: "mapping the memfd".into(),
                source,
            })?;
        let path = side_socket(grpc_socket);
        let mut side = UnixStream::connect(&path).map_err(|e| ClientError::Connect {
            target: path.display().to_string(),
            why: e.to_string(),
        })?;
        let fds = [file.as_raw_fd()];
        let iov = [IoSlice::new(&REGISTER_MAGIC)];
        sendmsg::<()>(
            side.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map_err(shm_err("sending the memfd"))?;
        let io = |source| ClientError::Io {
            what: "reading the daemon's reply on the side socket".into(),
            source,
        };
        let mut head = [0u8; 21];
        side.read_exact(&mut head).map_err(io)?;
        let id = u64::from_le_bytes(head[1..9].try_into().unwrap_or_default());
        let msg_len = u32::from_le_bytes(head[17..21].try_into().unwrap_or_default()) as usize;
        let mut msg = vec![0u8; msg_len.min(4096)];
        side.read_exact(&mut msg).map_err(io)?;
        if head[0] != 0 {
            return Err(ClientError::Shm(format!(
                "the daemon refused the region: {}",
                String::from_utf8_lossy(&msg)
            )));
        }
        Ok(ShmRegion {
            id,
            map,
            _side: side,
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Copies `data` to a checked range. `&self`: callers (the pool) guarantee that no
    /// two writers share a range.
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        let r = self.range(offset, data.len() as u64)?;
        // SAFETY: the range is inside the mapping (checked), which lives as long as
        // `self`; the memfd is sealed against shrinking, so the pages stay backed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(r.start),
                r.len(),
            )
        };
        Ok(())
    }

    /// Where `offset` lies in this process (for C callers that write in place); the
    /// pool checks ranges before handing it out.
    pub(crate) fn ptr_at(&self, offset: u64) -> *mut u8 {
        self.map.as_mut_ptr().wrapping_add(offset as usize)
    }

    /// The bytes of a checked range. The daemon writes outputs here during a run; read
    /// them after the run's response.
    pub(crate) fn bytes_at(&self, offset: u64, len: u64) -> Result<&[u8], ClientError> {
        let r = self.range(offset, len)?;
        // SAFETY: as in `write_at`.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(r.start), r.len()) })
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, ClientError> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(len).ok()?));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.map.len() => Ok(s..e),
            _ => Err(ClientError::Invalid(format!(
                "offset {offset} length {len} is outside the region of {} bytes",
                self.map.len()
            ))),
        }
    }

    /// Copies `data` to `offset` and returns the reference a request names.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<ShmRef, ClientError> {
        self.write_at(offset, data)?;
        Ok(ShmRef {
            region: self.id,
            offset,
            length: data.len() as u64,
        })
    }

    /// Writes a tensor's bytes at `offset`: the (dtype, shape, ref) triple `run_shm` takes.
    pub fn write_tensor(
        &mut self,
        offset: u64,
        t: &crate::Tensor,
    ) -> Result<(DType, Vec<u64>, ShmRef), ClientError> {
        let r = self.write(offset, &t.data)?;
        Ok((t.dtype, t.shape.clone(), r))
    }

    /// A destination of `length` bytes at `offset` for an output.
    pub fn slot(&self, offset: u64, length: u64) -> Result<ShmRef, ClientError> {
        self.range(offset, length)?;
        Ok(ShmRef {
            region: self.id,
            offset,
            length,
        })
    }

    /// The bytes a reference names (e.g. an output the daemon wrote).
    pub fn read(&self, r: &ShmRef) -> Result<&[u8], ClientError> {
        if r.region != self.id {
            return Err(ClientError::Invalid(format!(
                "reference names region {}, this is region {}",
                r.region, self.id
            )));
        }
        self.bytes_at(r.offset, r.length)
    }
}
