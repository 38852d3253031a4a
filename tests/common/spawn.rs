//! A real `switchyardd` for the hostile-input, isolation and soak tests: started on a
//! temporary socket with a config fragment, its stderr kept in a log file, and its
//! descriptors and memory readable from /proc so a test can prove nothing leaked.
//!
//! `SWITCHYARD_DAEMON_BIN` points the tests at another daemon build (for example
//! main's, to show a regression test failing before its fix).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_client::blocking::Client;

use crate::workspace_binary;

/// uids the multi-tenant tests run helper processes as (they need no passwd entry).
pub const UID_A: u32 = 61011;
pub const UID_B: u32 = 61012;

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    log: PathBuf,
}

/// The daemon binary under test.
pub fn daemon_binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_DAEMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_binary("switchyardd"))
}

impl Daemon {
    /// Starts the daemon with `extra` appended to its `[daemon]` section (further
    /// sections may follow) and waits until it listens.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with_env(extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables (its workers inherit them).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // Other uids must reach the socket and write their outputs here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let socket = dir.path().join("run/switchyard.sock");
        let config = dir.path().join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = \"{}\"\ngrace_ms = 2000\n{extra}",
                socket.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("switchyardd.log");
        let child = Command::new(daemon_binary())
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .env("SWITCHYARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            dir,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("switchyardd exited at start ({status}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "switchyardd did not start listening:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        d
    }

    pub fn client(&self) -> Client {
        Client::connect_unix(&self.socket).unwrap()
    }

    pub fn shm_socket(&self) -> PathBuf {
        self.socket.with_extension("shm")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running (it has not crashed or aborted).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics with the log when the daemon died.
    pub fn assert_alive(&mut self, after: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("switchyardd died after {after} ({status}):\n{}", self.log());
        }
    }

    /// Descriptors the daemon has open.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        wait_timeout(&mut self.child, Duration::from_secs(20)).expect("switchyardd did not exit")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `KiB` field of /proc/<pid>/status (0 when unreadable).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command run as another uid (setpriv, util-linux).
pub fn as_uid(uid: u32, program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program);
    c
}

/// This test binary re-run as `uid`, running only the ignored helper test `helper`.
pub fn helper(uid: u32, helper: &str) -> Command {
    let mut c = as_uid(uid, &std::env::current_exe().unwrap());
    c.args(["--ignored", "--exact", helper, "--nocapture"]);
    c
}

/// Runs `f` on a thread and gives up waiting after `limit` (the thread is left behind:
/// the daemon it talks to is killed when the test ends).
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// Raises this process's soft descriptor limit to its hard limit (tests that open
/// many connections).
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE)
        .map(|l| l.0)
        .unwrap_or(1024)
}

/// The example vendor plugin (plugins/example-npu) built next to the test binaries.
pub fn example_plugin() -> PathBuf {
    let dir = workspace_binary("switchyardd")
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let p = dir.join("libswitchyard_example_npu.so");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// A raw tonic channel to the daemon's Unix socket, for tests that speak the wire
/// protocol beneath the client library (hand-made requests, RPCs it does not expose).
pub async fn raw_channel(socket: impl AsRef<Path>) -> tonic::transport::Channel {
    let socket = socket.as_ref().to_path_buf();
    tonic::transport::Endpoint::from_static("http://switchyard.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the daemon's socket")
}
