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
use crate::authority::AuthorityFix;
use crate::error::DaemonError;
use crate::limits::{ConnLimiter, Incoming, Timeouts};
use crate::metrics::MetricsListener;
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
    /// The Prometheus endpoint, when `daemon.metrics` is set.
    pub metrics: Option<MetricsListener>,
    /// Socket files this daemon created (and removes at shutdown); inherited sockets
    /// belong to the service manager.
    paths: Vec<PathBuf>,
}

impl Listeners {
    pub fn tcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }
}

pub(crate) fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
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

fn unix_from_std(l: std::os::unix::net::UnixListener) -> Result<UnixListener, DaemonError> {
    l.set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(l))
        .map_err(|e| DaemonError::io("taking an inherited socket", e))
}

async fn bind_metrics(
    config: &DaemonConfig,
    paths: &mut Vec<PathBuf>,
) -> Result<Option<MetricsListener>, DaemonError> {
    let Some(spec) = &config.metrics else {
        return Ok(None);
    };
    let l = MetricsListener::bind(spec, config.socket_mode).await?;
    if let MetricsListener::Unix(_, p) = &l {
        paths.push(p.clone());
    }
    Ok(Some(l))
}

/// Listeners from sockets the service manager passed (activation.rs); whatever was
/// not passed is bound as configured. `None` when nothing was passed.
async fn bind_inherited(config: &DaemonConfig) -> Result<Option<Listeners>, DaemonError> {
    let inherited = crate::activation::inherited()?;
    let Some(grpc) = inherited.grpc else {
        if inherited.shm.is_some() || inherited.tcp.is_some() {
            return Err(DaemonError::invalid(
                "the service manager passed sockets but no gRPC socket",
            ));
        }
        return Ok(None);
    };
    let grpc_path = grpc
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let mut paths = Vec::new();
    let shm = match inherited.shm {
        Some(s) => unix_from_std(s)?,
        None => {
            let p = shm_socket_path(grpc_path.as_deref().unwrap_or(&config.socket));
            let l = bind_unix(&p, config.socket_mode)?;
            paths.push(p);
            l
        }
    };
    let tcp = match (inherited.tcp, &config.tcp) {
        (Some(t), _) => Some(
            t.set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(t))
                .map_err(|e| DaemonError::io("taking an inherited TCP socket", e))?,
        ),
        (None, Some(addr)) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::io(format!("binding {addr}"), e))?,
        ),
        (None, None) => None,
    };
    let metrics = bind_metrics(config, &mut paths).await?;
    Ok(Some(Listeners {
        grpc: unix_from_std(grpc)?,
        shm,
        tcp,
        metrics,
        paths,
    }))
}

/// Creates the socket directory if needed and binds every listener of `config`, or
/// takes the sockets the service manager passed (systemd socket activation, Android
/// init).
pub async fn bind(config: &DaemonConfig) -> Result<Listeners, DaemonError> {
    config.validate()?;
    if let Some(l) = bind_inherited(config).await? {
        return Ok(l);
    }
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
    let mut paths = vec![config.socket.clone(), shm_path];
    let metrics = bind_metrics(config, &mut paths).await?;
    Ok(Listeners {
        grpc,
        shm,
        tcp,
        metrics,
        paths,
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
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| DaemonError::Internal(format!("reflection: {e}")))?;
    // grpcurl and older grpcio-reflection clients still ask v1alpha.
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| DaemonError::Internal(format!("reflection: {e}")))?;
    let (health, health_service) = health_reporter().await;
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
        metrics,
        paths,
    } = listeners;
    let name = |l: &UnixListener| {
        l.local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            .unwrap_or_else(|| "(unnamed)".into())
    };
    info!(socket = %name(&grpc), shm = %name(&shm_listener), "switchyardd listening");

    // The arbiter dispatches until the process ends: queued requests must still run
    // while shutdown drains.
    let arbiter = tokio::spawn(state.gate.service.clone().run(std::future::pending()));
    let reaper = tokio::spawn(crate::service::reap_sessions(state.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    let l = &config_limits;
    tasks.spawn(shm::serve(
        shm_listener,
        state.regions.clone(),
        state.channels.clone(),
        ConnLimiter::new(
            "shm side socket",
            l.shm_connections,
            l.shm_connections_per_uid,
        ),
        stop_rx.clone(),
    ));
    if let Some(m) = metrics {
        info!("metrics endpoint on");
        tasks.spawn(crate::metrics::serve(m, state.clone(), stop_rx.clone()));
    }
    {
        let router = builder()
            .add_service(reflection.clone())
            .add_service(reflection_alpha.clone())
            .add_service(health_service.clone())
            .add_service(service());
        let signal = stopped(stop_rx.clone());
        // Every Unix connection goes through the :authority rewrite (authority.rs),
        // inside the connection budget.
        let incoming = Incoming::new(
            grpc,
            ConnLimiter::new(
                "unix socket",
                l.unix_connections,
                l.unix_connections_per_uid,
            ),
            timeouts,
            AuthorityFix::new,
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
        let router = builder()
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(health_service)
            .add_service(service());
        let signal = stopped(stop_rx.clone());
        let incoming = Incoming::new(
            tcp,
            ConnLimiter::new("tcp", l.tcp_connections, l.tcp_connections_per_ip),
            timeouts,
            |s| s,
        );
        tasks.spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                warn!(error = %e, "gRPC server on TCP failed");
            }
        });
    }

    crate::notify::notify(&format!(
        "READY=1\nSTATUS=serving\nMAINPID={}",
        std::process::id()
    ));
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
    crate::notify::notify("STOPPING=1\nSTATUS=draining");
    health.set_not_serving::<SwitchyardServer<Service>>().await;
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
    while tasks.join_next().await.is_some() {}
    arbiter.abort();
    reaper.abort();
    match drained {
        Ok(()) => info!("drained; exiting"),
        Err(_) => warn!(
            active = state.active(),
            "grace period over; exiting with requests still running"
        ),
    }
    // The GPU is closed before the process exits, never torn down while it does: new
    // work is refused, executions in flight finish, the queue drains, and the device is
    // destroyed idle when its last handle drops (here or when the runtime drops its
    // tasks, on the daemon's main thread).
    let processors_state = state.clone();
    let _ = tokio::task::spawn_blocking(move || processors_state.processors.shutdown(grace)).await;
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// The grpc.health.v1 service: SERVING for the whole server ("") and for
/// `switchyard.v1.Switchyard` once the daemon's state is built, NOT_SERVING from the
/// start of shutdown.
async fn health_reporter() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_serving::<SwitchyardServer<Service>>().await;
    (reporter, service)
}
