//! Listening and shutting down.
//!
//! `run` serves until the shutdown future resolves, then stops accepting, lets in-flight
//! requests finish for at most the configured grace period, and returns.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::daemon::shm_socket_path;
use switchyard_config::{Config, DaemonConfig};
use switchyard_proto::v1::switchyard_server::SwitchyardServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::auth::AuthLayer;
use crate::error::DaemonError;
use crate::limits::{ConnLimiter, Incoming, Timeouts};
use crate::service::{Service, State};
use crate::shm;

/// Largest header block a client may send (HPACK-decoded). gRPC metadata is small; the
/// h2 default would let one stream hold 16 MiB of headers.
const MAX_HEADER_LIST_BYTES: u32 = 64 << 10;

/// The daemon's bound sockets; binding is separate from serving so tests and the binary
/// can report bind errors before anything runs.
pub struct Listeners {
    pub grpc: UnixListener,
    pub shm: UnixListener,
    pub tcp: Option<TcpListener>,
    paths: Vec<PathBuf>,
}

impl Listeners {
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }
}

fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(DaemonError::io(
                format!("{} exists and is not a socket", path.display()),
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::io(
                format!("another daemon is listening on {}", path.display()),
                std::io::Error::from(std::io::ErrorKind::AddrInUse),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| DaemonError::io(format!("removing stale {}", path.display()), e))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| DaemonError::io(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| DaemonError::io(format!("chmod {}", path.display()), e))?;
    Ok(listener)
}

/// Creates the socket directory if needed and binds every listener of `config`.
pub async fn bind(config: &DaemonConfig) -> Result<Listeners, DaemonError> {
    config.validate()?;
    if let Some(dir) = config.socket.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| DaemonError::io(format!("creating {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(config.socket_dir_mode))
            .map_err(|e| DaemonError::io(format!("chmod {}", dir.display()), e))?;
    }
    let shm_path = shm_socket_path(&config.socket);
    let grpc = bind_unix(&config.socket, config.socket_mode)?;
    let shm = bind_unix(&shm_path, config.socket_mode)?;
    let tcp = match &config.tcp {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::io(format!("binding {addr}"), e))?,
        ),
        None => None,
    };
    Ok(Listeners {
        grpc,
        shm,
        tcp,
        paths: vec![config.socket.clone(), shm_path],
    })
}

/// Serves until `shutdown` resolves, then drains within `config.grace_ms`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    config.validate()?;
    let config_limits = config.daemon.limits.clone();
    let grace = Duration::from_millis(config.daemon.grace_ms);
    let max_message = config.daemon.max_message_bytes;
    let limits = config.daemon.limits.clone();
    let timeouts = Timeouts {
        handshake: Duration::from_millis(limits.handshake_ms),
        idle: Duration::from_millis(limits.idle_ms),
    };
    let auth = AuthLayer::new(&config.daemon);
    // Every listener gets the same HTTP/2 limits and the identity layer, which refuses
    // requests without a valid identity before their body is read.
    let builder = move || {
        tonic::transport::Server::builder()
            .max_concurrent_streams(limits.streams_per_connection)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .layer(auth.clone())
    };
    let state = Arc::new(
        tokio::task::spawn_blocking(move || State::new(config))
            .await
            .map_err(|e| DaemonError::Internal(format!("start task: {e}")))??,
    );
    let (stop_tx, stop_rx) = watch::channel(false);

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DaemonError::Internal(format!("reflection: {e}")))?;
    let service = || {
        SwitchyardServer::new(Service {
            state: state.clone(),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message)
    };
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let Listeners {
        grpc,
        shm: shm_listener,
        tcp,
        paths,
    } = listeners;
    info!(socket = %paths[0].display(), shm = %paths[1].display(), "switchyardd listening");

    // The arbiter dispatches until the process ends: queued requests must still run
    // while shutdown drains.
    let arbiter = tokio::spawn(state.gate.service.clone().run(std::future::pending()));
    let mut tasks = tokio::task::JoinSet::new();
    let l = &config_limits;
    tasks.spawn(shm::serve(
        shm_listener,
        state.regions.clone(),
        ConnLimiter::new(
            "shm side socket",
            l.shm_connections,
            l.shm_connections_per_uid,
        ),
        stop_rx.clone(),
    ));
    {
        let router = builder()
            .add_service(reflection.clone())
            .add_service(service());
        let signal = stopped(stop_rx.clone());
        let incoming = Incoming::new(
            grpc,
            ConnLimiter::new(
                "unix socket",
                l.unix_connections,
                l.unix_connections_per_uid,
            ),
            timeouts,
        );
        tasks.spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                warn!(error = %e, "gRPC server on the Unix socket failed");
            }
        });
    }
    if let Some(tcp) = tcp {
        if let Ok(addr) = tcp.local_addr() {
            info!(%addr, "switchyardd listening on TCP (bearer tokens)");
        }
        let router = builder().add_service(reflection).add_service(service());
        let signal = stopped(stop_rx.clone());
        let incoming = Incoming::new(
            tcp,
            ConnLimiter::new("tcp", l.tcp_connections, l.tcp_connections_per_ip),
            timeouts,
        );
        tasks.spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                warn!(error = %e, "gRPC server on TCP failed");
            }
        });
    }

    tokio::select! {
        _ = shutdown => {}
        _ = async { while tasks.join_next().await.is_some() {} } => {
            warn!("all servers ended before shutdown was requested");
        }
    }
    info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new connections; draining"
    );
    let _ = stop_tx.send(true);
    // Idle client connections can keep hyper's graceful shutdown waiting (they are not
    // closed until the client hangs up), so the drain ends when no load or run is still
    // executing, not when every connection has closed.
    let state_ref = &state;
    let drained = tokio::time::timeout(grace, async {
        loop {
            tokio::select! {
                done = tasks.join_next() => if done.is_none() { return; },
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    if state_ref.active() == 0 {
                        // Let the last responses reach their sockets.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return;
                    }
                }
            }
        }
    })
    .await;
    tasks.abort_all();
    arbiter.abort();
    match drained {
        Ok(()) => info!("drained; exiting"),
        Err(_) => warn!(
            active = state.active(),
            "grace period over; exiting with requests still running"
        ),
    }
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
