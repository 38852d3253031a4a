//! Starting a worker process with its end of a socketpair as descriptor 3, and telling
//! how it ended.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::libc;

/// The descriptor the worker finds its socket on (`SWITCHYARD_WORKER_FD`).
pub const WORKER_FD: i32 = 3;

/// Spawns `exe` with one end of a new socketpair as its descriptor 3 and returns the
/// child and the daemon's end. Every other descriptor of the daemon is close-on-exec,
/// so the worker inherits nothing else (no client socket, no region).
pub fn spawn(exe: &Path) -> std::io::Result<(Child, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.env("SWITCHYARD_WORKER_FD", WORKER_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == WORKER_FD {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, WORKER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    Ok((child, ours))
}

/// How a worker ended, in words ("killed by signal 11 (SIGSEGV)").
pub fn describe(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        return format!("killed by signal {sig} ({name}{core})");
    }
    match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "ended".into(),
    }
}

/// Waits up to `limit` for the child to end, then kills it; returns how it ended.
pub fn reap(child: &mut Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return describe(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => break,
        }
    }
    let _ = child.kill();
    match child.wait() {
        Ok(s) => describe(s),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// The worker's side: its socket from descriptor `SWITCHYARD_WORKER_FD`, and death with
/// the daemon: a watchdog thread ends the process as soon as its parent is gone, so no
/// worker outlives the daemon even while stuck inside a driver. (PR_SET_PDEATHSIG
/// would fire when the daemon *thread* that spawned the worker ends, which in a thread
/// pool is any time.)
pub fn worker_socket() -> Result<UnixStream, String> {
    let fd: i32 = std::env::var("SWITCHYARD_WORKER_FD")
        .map_err(|_| {
            "SWITCHYARD_WORKER_FD is not set: switchyard-worker is started by switchyardd"
                .to_string()
        })?
        .parse()
        .map_err(|_| "SWITCHYARD_WORKER_FD is not a number".to_string())?;
    let parent = std::os::unix::process::parent_id();
    std::thread::Builder::new()
        .name("parent-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                if std::os::unix::process::parent_id() != parent {
                    // No unwinding, no atexit handlers: a driver may hold any lock.
                    // SAFETY: _exit only ends the process.
                    unsafe { libc::_exit(0) };
                }
            }
        })
        .map_err(|e| format!("watchdog thread: {e}"))?;
    // SAFETY: checks that the descriptor is open and a socket before taking ownership.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(format!("descriptor {fd} is not a socket"));
    }
    // SAFETY: descriptor `fd` was handed to this process for this purpose (checked to be
    // an open socket above) and nothing else in the process owns it.
    let s = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Close-on-exec from now on: plugins must not pass it to processes they start.
    // SAFETY: plain fcntl on a descriptor this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(s)
}
