//! A real `switchyardd` on a temporary socket for end-to-end tests of clients other
//! than the Rust library (Python, C, grpcio, socket activation, metrics).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::workspace_binary;

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `[daemon] socket = <tmp>/run/switchyard.sock` plus
    /// `extra` TOML (keys of `[daemon]` first, then other sections), and waits until it
    /// accepts connections.
    pub fn start(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("run/switchyard.sock");
        let config = dir.path().join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = \"{}\"\ngrace_ms = 3000\n{extra}",
                socket.display()
            ),
        )
        .expect("write config");
        let child = Command::new(workspace_binary("switchyardd"))
            .arg("--config")
            .arg(&config)
            .env("SWITCHYARD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn switchyardd");
        let d = Daemon { child, dir, socket };
        wait_until("switchyardd listening on its socket", || {
            std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
        });
        d
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to a child, then its exit status (at most 20 s).
pub fn terminate(child: &mut Child) -> ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        assert!(Instant::now() < deadline, "switchyardd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ready` for up to 60 s.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
