//! Sockets handed over by the service manager instead of bound by the daemon.
//!
//! systemd socket activation: `LISTEN_PID` is this process, `LISTEN_FDS` the number of
//! descriptors starting at 3, `LISTEN_FDNAMES` their colon-separated names. A socket
//! named `grpc`, `shm` or `tcp` (FileDescriptorName=) is that listener; unnamed ones
//! (the unit's name) are taken in order: gRPC, then the shared-memory side socket.
//! Android init passes `socket` entries of an .rc file as `ANDROID_SOCKET_<name>`:
//! `switchyard` and `switchyard_shm`.
//!
//! The service manager owns inherited socket files: the daemon neither creates nor
//! removes them.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
use nix::sys::stat::{SFlag, fstat};

use crate::error::DaemonError;

/// The first descriptor systemd passes.
const FIRST_FD: RawFd = 3;
/// More than any unit of this daemon declares; bounds what is looked at.
const MAX_FDS: usize = 16;

/// Listening sockets inherited from the service manager.
#[derive(Debug, Default)]
pub struct Inherited {
    pub grpc: Option<std::os::unix::net::UnixListener>,
    pub shm: Option<std::os::unix::net::UnixListener>,
    pub tcp: Option<std::net::TcpListener>,
}

/// What the environment says: `(fd, name)` pairs, from systemd or Android init.
pub fn passed_fds(
    env: impl Fn(&str) -> Option<String>,
    pid: u32,
) -> Result<Vec<(RawFd, String)>, DaemonError> {
    let mut out = Vec::new();
    if let Some(listen_pid) = env("LISTEN_PID") {
        // Descriptors meant for another process (a parent that exported them and then
        // started us) are not ours to take.
        if listen_pid.trim().parse::<u32>().ok() == Some(pid) {
            let n: usize = env("LISTEN_FDS")
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|_| DaemonError::invalid("LISTEN_FDS is not a number"))?;
            if n > MAX_FDS {
                return Err(DaemonError::invalid(format!(
                    "LISTEN_FDS={n}: more sockets than switchyardd uses"
                )));
            }
            let names = env("LISTEN_FDNAMES").unwrap_or_default();
            let mut names = names.split(':');
            for i in 0..n {
                let name = names.next().unwrap_or("").to_owned();
                out.push((FIRST_FD + i as RawFd, name));
            }
        }
    }
    for (var, name) in [
        ("ANDROID_SOCKET_switchyard", "grpc"),
        ("ANDROID_SOCKET_switchyard_shm", "shm"),
    ] {
        if let Some(v) = env(var) {
            let fd: RawFd = v
                .trim()
                .parse()
                .map_err(|_| DaemonError::invalid(format!("{var} is not a descriptor")))?;
            out.push((fd, name.to_owned()));
        }
    }
    Ok(out)
}

/// Takes ownership of the sockets the environment names. Each must be a listening
/// socket of the right family; anything else is an error rather than a surprise later.
pub fn inherited() -> Result<Inherited, DaemonError> {
    let fds = passed_fds(|k| std::env::var(k).ok(), std::process::id())?;
    let mut got = Inherited::default();
    let mut unnamed = Vec::new();
    let mut taken = Vec::new();
    for (fd, name) in fds {
        // One descriptor named twice (by both protocols) is still owned once.
        if taken.contains(&fd) {
            continue;
        }
        taken.push(fd);
        let kind = family(fd)?;
        // SAFETY: the service manager passed this descriptor to this process for it to
        // own (LISTEN_PID matched, or Android init's variable names it); it was checked
        // to be an open socket above, and nothing else in the process takes it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Passed descriptors arrive without close-on-exec; processes the daemon starts
        // (validation workers) must not inherit its listening sockets.
        fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| DaemonError::invalid(format!("inherited descriptor {fd}: {e}")))?;
        match (name.as_str(), kind) {
            ("grpc", AddressFamily::Unix) => got.grpc = Some(owned.into()),
            ("shm", AddressFamily::Unix) => got.shm = Some(owned.into()),
            ("tcp", AddressFamily::Inet | AddressFamily::Inet6) => got.tcp = Some(owned.into()),
            (_, AddressFamily::Unix) => unnamed.push(owned),
            (_, AddressFamily::Inet | AddressFamily::Inet6) if got.tcp.is_none() => {
                got.tcp = Some(owned.into())
            }
            (n, k) => {
                return Err(DaemonError::invalid(format!(
                    "inherited socket {fd} (`{n}`) has family {k:?}, which switchyardd does not serve"
                )));
            }
        }
    }
    for owned in unnamed {
        if got.grpc.is_none() {
            got.grpc = Some(owned.into());
        } else if got.shm.is_none() {
            got.shm = Some(owned.into());
        } else {
            return Err(DaemonError::invalid(
                "more inherited Unix sockets than gRPC and shm",
            ));
        }
    }
    Ok(got)
}

fn family(fd: RawFd) -> Result<AddressFamily, DaemonError> {
    let bad = |why: String| DaemonError::invalid(format!("inherited descriptor {fd}: {why}"));
    // SAFETY: only borrowed for the two queries below; `fd` stays open.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let st = fstat(borrowed).map_err(|e| bad(format!("not open ({e})")))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(bad("not a socket".into()));
    }
    let addr: SockaddrStorage = getsockname(fd).map_err(|e| bad(e.to_string()))?;
    addr.family()
        .ok_or_else(|| bad("socket without an address family".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn systemd_descriptors_start_at_3_and_carry_their_names() {
        let e = env(&[
            ("LISTEN_PID", "42"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "grpc:shm"),
        ]);
        assert_eq!(
            passed_fds(&e, 42).unwrap(),
            vec![(3, "grpc".to_owned()), (4, "shm".to_owned())]
        );
        // Meant for another process: ignored.
        assert!(passed_fds(&e, 43).unwrap().is_empty());
        let e = env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "many")]);
        assert!(passed_fds(&e, 42).is_err());
        let e = env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "1000")]);
        assert!(passed_fds(&e, 42).is_err());
    }

    #[test]
    fn android_init_sockets_are_named_by_variable() {
        let e = env(&[
            ("ANDROID_SOCKET_switchyard", "9"),
            ("ANDROID_SOCKET_switchyard_shm", "10"),
        ]);
        assert_eq!(
            passed_fds(&e, 1).unwrap(),
            vec![(9, "grpc".to_owned()), (10, "shm".to_owned())]
        );
    }
}
