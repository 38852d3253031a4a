//! Sealed memfds for the bytes that cross between the daemon and a worker: immutable
//! blobs (a model file, validation inputs, a plugin's constants) and the shared arena
//! plugin executions read inputs from and write outputs to.
//!
//! Every memfd either side maps is sealed against shrinking first: a peer truncating
//! the file under a mapping would make the next access SIGBUS the mapping process. The
//! daemon only maps memfds it created and sealed itself.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};

use memmap2::{Mmap, MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

/// Alignment of tensors inside a blob (enough for every element type and SIMD loads).
const ALIGN: usize = 64;

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn new_memfd(name: &std::ffi::CStr) -> io::Result<File> {
    let fd =
        memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(nix_io)?;
    Ok(File::from(fd))
}

/// Checks that a received memfd cannot shrink and has at least `len` bytes.
fn check_sealed(fd: &impl AsFd, len: u64) -> io::Result<()> {
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(nix_io)?;
    if !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the memfd is not sealed against shrinking",
        ));
    }
    let size = File::from(fd.as_fd().try_clone_to_owned()?)
        .metadata()?
        .len();
    if size < len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the memfd has {size} bytes, {len} announced"),
        ));
    }
    Ok(())
}

/// Immutable bytes in a sealed memfd (shrink, grow, write and seal all sealed).
pub struct Blob {
    fd: OwnedFd,
    len: usize,
}

impl Blob {
    pub fn from_bytes(bytes: &[u8]) -> io::Result<Blob> {
        let mut f = new_memfd(c"switchyard-blob")?;
        f.write_all(bytes)?;
        let fd = OwnedFd::from(f);
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(nix_io)?;
        Ok(Blob {
            fd,
            len: bytes.len(),
        })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Collects pieces into one blob, each at an aligned offset.
#[derive(Default)]
pub struct BlobBuilder {
    bytes: Vec<u8>,
}

impl BlobBuilder {
    /// Appends `data` and returns its (offset, length).
    pub fn push(&mut self, data: &[u8]) -> (u64, u64) {
        let start = self.bytes.len().next_multiple_of(ALIGN);
        self.bytes.resize(start, 0);
        self.bytes.extend_from_slice(data);
        (start as u64, data.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn finish(self) -> io::Result<Blob> {
        Blob::from_bytes(&self.bytes)
    }
}

/// A received blob, mapped read-only.
pub struct Mapped {
    map: Option<Mmap>,
}

impl Mapped {
    /// Maps `len` bytes of a received memfd after checking it is sealed against
    /// shrinking.
    pub fn new(fd: &OwnedFd, len: u64) -> io::Result<Mapped> {
        check_sealed(fd, len)?;
        if len == 0 {
            return Ok(Mapped { map: None });
        }
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "blob too large"))?;
        // SAFETY: the memfd is sealed against shrinking (checked above), so the mapped
        // pages stay backed while mapped; the mapping is read-only.
        let map = unsafe { MmapOptions::new().len(len).map(fd)? };
        Ok(Mapped { map: Some(map) })
    }

    /// The whole mapping.
    pub fn all(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// `len` bytes at `offset`, if they lie inside the mapping.
    pub fn get(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.all().get(start..end)
    }
}

/// A plugin call's input views and output views into the arena.
pub type IoSlices<'a> = (Vec<&'a [u8]>, Vec<&'a mut [u8]>);

/// A read-write memfd mapped shared in both processes: the daemon writes a plugin's
/// inputs, the worker its outputs.
pub struct Arena {
    fd: OwnedFd,
    map: MmapRaw,
}

// SAFETY: the mapping is plain shared memory; every access goes through `&mut self` or
// copies, so sharing the handle between threads adds no aliasing of Rust references.
unsafe impl Send for Arena {}

impl Arena {
    /// A new arena of `len` bytes, sealed so neither side can resize it.
    pub fn new(len: usize) -> io::Result<Arena> {
        let f = new_memfd(c"switchyard-arena")?;
        f.set_len(len.max(1) as u64)?;
        let fd = OwnedFd::from(f);
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )
        .map_err(nix_io)?;
        Arena::map(fd, len.max(1) as u64)
    }

    /// Maps an arena received from the daemon (checked to be sealed against shrinking).
    pub fn from_fd(fd: OwnedFd, len: u64) -> io::Result<Arena> {
        check_sealed(&fd, len)?;
        Arena::map(fd, len)
    }

    fn map(fd: OwnedFd, len: u64) -> io::Result<Arena> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "arena too large"))?;
        // SAFETY: sealed against shrinking, so the pages stay backed; all accesses are
        // bounds-checked copies through raw pointers (the other process writes too).
        let map = MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(Arena { fd, map })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    fn range(&self, offset: u64, len: u64) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        (end <= self.map.len()).then_some(start..end)
    }

    /// Copies `data` to `offset`; false when it does not fit.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(r) = self.range(offset, data.len() as u64) else {
            return false;
        };
        // SAFETY: the range lies inside the mapping (checked); `data` is our own memory
        // and cannot overlap the shared mapping's pages.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(r.start),
                r.len(),
            )
        };
        true
    }

    /// Copies `out.len()` bytes from `offset`; false when the range is outside.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> bool {
        let Some(r) = self.range(offset, out.len() as u64) else {
            return false;
        };
        // SAFETY: as in `write`, in the other direction.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(r.start), out.as_mut_ptr(), r.len())
        };
        true
    }

    /// Mutable views of several disjoint ranges at once (a plugin's outputs), or None
    /// when one is outside the arena or two overlap.
    pub fn slices_mut(&mut self, ranges: &[(u64, u64)]) -> Option<Vec<&mut [u8]>> {
        let mut rs: Vec<std::ops::Range<usize>> = ranges
            .iter()
            .map(|&(o, l)| self.range(o, l))
            .collect::<Option<_>>()?;
        let mut sorted = rs.clone();
        sorted.sort_by_key(|r| r.start);
        if sorted.windows(2).any(|w| w[0].end > w[1].start) {
            return None;
        }
        let base = self.map.as_mut_ptr();
        Some(
            rs.drain(..)
                // SAFETY: each range lies inside the mapping and no two overlap
                // (checked above), so the slices are disjoint; they borrow `self`
                // mutably, so no other access happens while they live.
                .map(|r| unsafe { std::slice::from_raw_parts_mut(base.add(r.start), r.len()) })
                .collect(),
        )
    }

    /// A plugin call's views: inputs (which may overlap each other) and outputs (which
    /// may overlap nothing), or None when a range is outside the arena or overlaps.
    pub fn io_slices(&mut self, ins: &[(u64, u64)], outs: &[(u64, u64)]) -> Option<IoSlices<'_>> {
        let ri: Vec<std::ops::Range<usize>> = ins
            .iter()
            .map(|&(o, l)| self.range(o, l))
            .collect::<Option<_>>()?;
        let ro: Vec<std::ops::Range<usize>> = outs
            .iter()
            .map(|&(o, l)| self.range(o, l))
            .collect::<Option<_>>()?;
        let overlaps = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| {
            a.start < b.end && b.start < a.end
        };
        for (k, o) in ro.iter().enumerate() {
            if ro[k + 1..].iter().chain(&ri).any(|x| overlaps(o, x)) {
                return None;
            }
        }
        let base = self.map.as_mut_ptr();
        // SAFETY: every range lies inside the mapping; output ranges overlap neither
        // each other nor any input range (checked above), so no byte is reachable
        // through a mutable and another view at once; all views borrow `self` mutably.
        let i = ri
            .into_iter()
            .map(|r| unsafe { std::slice::from_raw_parts(base.add(r.start).cast_const(), r.len()) })
            .collect();
        // SAFETY: as above.
        let o = ro
            .into_iter()
            .map(|r| unsafe { std::slice::from_raw_parts_mut(base.add(r.start), r.len()) })
            .collect();
        Some((i, o))
    }

    /// Shared views of ranges (a plugin's inputs), or None when one is outside.
    pub fn slices(&self, ranges: &[(u64, u64)]) -> Option<Vec<&[u8]>> {
        let base = self.map.as_ptr();
        ranges
            .iter()
            .map(|&(o, l)| {
                let r = self.range(o, l)?;
                // SAFETY: inside the mapping; the views borrow `self`.
                Some(unsafe { std::slice::from_raw_parts(base.add(r.start), r.len()) })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_immutable_and_mapped_back() {
        let mut b = BlobBuilder::default();
        let (o1, l1) = b.push(b"abc");
        let (o2, l2) = b.push(b"defgh");
        assert_eq!((o1, l1), (0, 3));
        assert_eq!(o2 % 64, 0);
        let blob = b.finish().unwrap();
        let m = Mapped::new(blob.fd(), blob.len() as u64).unwrap();
        assert_eq!(m.get(o2, l2).unwrap(), b"defgh");
        assert!(m.get(o2, 1 << 20).is_none());
        assert!(m.get(u64::MAX, 2).is_none());
        // Sealed against writes and resizing.
        let f = File::from(blob.fd().try_clone().unwrap());
        assert!(f.set_len(1).is_err());
        assert!((&f).write_all(b"x").is_err());
        // More announced than the file holds is refused.
        assert!(Mapped::new(blob.fd(), 1 << 20).is_err());
    }

    #[test]
    fn arenas_are_shared_between_mappings() {
        let mut a = Arena::new(4096).unwrap();
        let mut b = Arena::from_fd(a.fd().try_clone().unwrap(), 4096).unwrap();
        assert!(a.write(10, b"hello"));
        let mut out = [0u8; 5];
        assert!(b.read(10, &mut out));
        assert_eq!(&out, b"hello");
        assert!(!a.write(4094, b"hello"));
        let s = b.slices_mut(&[(0, 4), (100, 4)]).unwrap();
        assert_eq!(s.len(), 2);
        assert!(b.slices_mut(&[(0, 8), (4, 4)]).is_none(), "overlap refused");
        assert!(b.slices(&[(4090, 10)]).is_none());
    }
}
