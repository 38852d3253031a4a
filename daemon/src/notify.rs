//! Readiness notification to the service manager (the sd_notify protocol): one
//! datagram of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` for the abstract namespace). Without the variable it does nothing, so the
//! daemon runs the same outside systemd. Written here rather than pulled in: it is a
//! single `sendto`.

use std::os::unix::net::UnixDatagram;

use tracing::warn;

/// Sends `state` (e.g. "READY=1\nSTATUS=serving") if the daemon runs under a service
/// manager that asked for notifications. Failures are logged, never fatal: the
/// manager's timeout is the authority on a daemon that never became ready.
pub fn notify(state: &str) {
    let Ok(target) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, state) {
        warn!(error = %e, socket = %target, "sd_notify failed");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let sent = if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?
    } else {
        sock.send_to(state.as_bytes(), target)?
    };
    if sent != state.len() {
        return Err(std::io::Error::other("short datagram"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("switchyard-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(send(dir.path().join("nobody").to_str().unwrap(), "READY=1").is_err());
    }
}
