//! Passing file descriptors over Unix sockets (SCM_RIGHTS) without ever leaking one.
//!
//! Every descriptor the kernel installs in this process while receiving a message is
//! wrapped in an [`OwnedFd`] before anything else happens, whatever the message looks
//! like: a sender that attaches more descriptors than the protocol allows, several
//! control messages, or a truncated control buffer gets all of them closed when the
//! returned value (or the error path that drops it) goes out of scope. Before this
//! module, a client attaching three fds made the parser give up on the control buffer
//! and leave the two that did arrive open for ever (issue 10, defect 6).
//!
//! The control buffer is sized for `SCM_MAX_FD` (253) descriptors, the most the Linux
//! kernel hands over in one `recvmsg` on a stream socket, so truncation cannot happen
//! for SCM_RIGHTS; it is still reported (and everything that did arrive still closed)
//! should a kernel ever deliver more.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// The most descriptors Linux passes in one message (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

const INT: usize = std::mem::size_of::<libc::c_int>();
const HDR: usize = std::mem::size_of::<libc::cmsghdr>();

const fn align(len: usize) -> usize {
    (len + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1)
}

/// Bytes of control buffer that hold `fds` descriptors (CMSG_SPACE).
const fn cmsg_space(fds: usize) -> usize {
    align(HDR) + align(fds * INT)
}

/// One received message: how many data bytes landed in the caller's buffer, every
/// descriptor that came with them, and whether the kernel had to drop control data.
#[derive(Debug)]
pub struct Received {
    pub bytes: usize,
    pub fds: Vec<OwnedFd>,
    /// MSG_CTRUNC: control data did not fit. The descriptors that did fit are in `fds`.
    pub truncated: bool,
}

/// Descriptors found in a control buffer, as raw numbers, in order. Pure: walks the
/// headers with bounds checks against `control`, so a malformed buffer can end the walk
/// early but never read outside it.
pub fn scm_rights_in(control: &[u8]) -> Vec<RawFd> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(hdr_end) = at.checked_add(HDR).filter(|&e| e <= control.len()) {
        // SAFETY: `at..hdr_end` lies inside `control`; the read is unaligned-safe.
        let hdr: libc::cmsghdr =
            unsafe { std::ptr::read_unaligned(control[at..hdr_end].as_ptr().cast()) };
        let len = hdr.cmsg_len as usize;
        let data_start = at + align(HDR);
        if len < align(HDR) {
            break;
        }
        let end = at.saturating_add(len).min(control.len());
        if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
            let data = control.get(data_start..end).unwrap_or(&[]);
            for chunk in data.chunks_exact(INT) {
                let mut b = [0u8; INT];
                b.copy_from_slice(chunk);
                out.push(libc::c_int::from_ne_bytes(b));
            }
        }
        match at.checked_add(align(len)) {
            Some(next) if next > at => at = next,
            _ => break,
        }
    }
    out
}

/// Receives one message into `buf` with up to [`MAX_FDS_PER_MESSAGE`] descriptors
/// (close-on-exec). Works on blocking and non-blocking sockets (the latter return
/// `WouldBlock` as usual). End of stream is `bytes == 0` with no descriptors.
pub fn recv(socket: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // u64 words keep the buffer aligned for cmsghdr.
    let mut control = vec![0u64; cmsg_space(MAX_FDS_PER_MESSAGE).div_ceil(8)];
    let control_len = control.len() * 8;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_len as _;
    // SAFETY: `msg` points at `iov` (which points at `buf`) and at `control`, both live
    // and sized as declared for the duration of the call.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        // Nothing was received, so no descriptor was installed.
        return Err(io::Error::last_os_error());
    }
    let used = (msg.msg_controllen as usize).min(control_len);
    // SAFETY: `control` is `control_len` initialised bytes; `used` does not exceed it.
    let control_bytes = unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), used) };
    let fds = scm_rights_in(control_bytes)
        .into_iter()
        .filter(|&raw| raw >= 0)
        // SAFETY: SCM_RIGHTS installed these descriptors in this process during the
        // call above; nothing else knows their numbers, so each gets exactly one owner.
        .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
        .collect();
    Ok(Received {
        bytes: n as usize,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Sends `bytes` with `fds` attached (at most [`MAX_FDS_PER_MESSAGE`]). Returns how many
/// bytes went out; the descriptors travel with the first of them.
pub fn send(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_FDS_PER_MESSAGE} descriptors per message"),
        ));
    }
    let mut control = vec![0u64; cmsg_space(fds.len().max(1)).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = fds.len() * INT;
        let hdr = libc::cmsghdr {
            cmsg_len: (align(HDR) + data_len) as _,
            cmsg_level: libc::SOL_SOCKET,
            cmsg_type: libc::SCM_RIGHTS,
        };
        let base = control.as_mut_ptr().cast::<u8>();
        // SAFETY: `control` holds cmsg_space(fds.len()) bytes: the header, then the
        // descriptors right after its aligned size; both writes stay inside it.
        unsafe {
            std::ptr::write_unaligned(base.cast::<libc::cmsghdr>(), hdr);
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(
                    base.add(align(HDR) + i * INT).cast::<libc::c_int>(),
                    *fd,
                );
            }
        }
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
    }
    // SAFETY: `msg` points at live buffers of the declared sizes; sendmsg only reads.
    let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// How many descriptors this process has open (entries of /proc/self/fd). Tests and the
/// soak use it to prove nothing leaks.
pub fn open_fd_count() -> io::Result<usize> {
    // The directory's own descriptor is counted by read_dir and discounted here.
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn memfds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| {
                nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap()
            })
            .collect()
    }

    #[test]
    fn every_descriptor_of_a_message_is_owned_and_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent = memfds(5);
        let raw: Vec<RawFd> = sent.iter().map(|f| f.as_raw_fd()).collect();
        let before = open_fd_count().unwrap();
        send(a.as_raw_fd(), b"12345678", &raw).unwrap();
        let mut buf = [0u8; 8];
        let got = recv(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got.bytes, 8);
        assert_eq!(got.fds.len(), 5);
        assert!(!got.truncated);
        assert_eq!(open_fd_count().unwrap(), before + 5);
        drop(got);
        assert_eq!(open_fd_count().unwrap(), before);
    }

    #[test]
    fn the_most_the_kernel_passes_is_received_without_truncation() {
        let (a, b) = UnixStream::pair().unwrap();
        let sent = memfds(MAX_FDS_PER_MESSAGE);
        let raw: Vec<RawFd> = sent.iter().map(|f| f.as_raw_fd()).collect();
        send(a.as_raw_fd(), b"x", &raw).unwrap();
        drop(sent);
        let before = open_fd_count().unwrap();
        let mut buf = [0u8; 8];
        let got = recv(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(got.fds.len(), MAX_FDS_PER_MESSAGE);
        assert!(!got.truncated);
        drop(got);
        assert_eq!(open_fd_count().unwrap(), before);
    }

    #[test]
    fn malformed_control_buffers_end_the_walk_without_reading_outside() {
        assert!(scm_rights_in(&[]).is_empty());
        assert!(scm_rights_in(&[0xff; 7]).is_empty());
        // A header claiming more bytes than the buffer holds yields what is there.
        let mut buf = vec![0u8; cmsg_space(2)];
        let hdr = libc::cmsghdr {
            cmsg_len: 4096,
            cmsg_level: libc::SOL_SOCKET,
            cmsg_type: libc::SCM_RIGHTS,
        };
        // SAFETY: the buffer is larger than a header.
        unsafe { std::ptr::write_unaligned(buf.as_mut_ptr().cast(), hdr) };
        buf[align(HDR)..align(HDR) + 4].copy_from_slice(&7i32.to_ne_bytes());
        let fds = scm_rights_in(&buf);
        assert_eq!(fds.first(), Some(&7));
        // A zero length header must not loop for ever.
        let zero = vec![0u8; 64];
        assert!(scm_rights_in(&zero).is_empty());
    }
}
