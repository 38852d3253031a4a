//! The `[daemon]` section: where `switchyardd` listens, how many threads it uses, and the
//! per-tenant quotas. Defaults are small on purpose: the daemon shares a device with the
//! apps it serves, so an operator raises limits rather than discovering them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Where the daemon listens when neither the config nor `SWITCHYARD_SOCKET` says.
pub const DEFAULT_SOCKET: &str = "/run/switchyard/switchyard.sock";

/// The socket path clients use by default: `SWITCHYARD_SOCKET` if set, else
/// [`DEFAULT_SOCKET`].
pub fn default_socket_path() -> PathBuf {
    std::env::var_os("SWITCHYARD_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The side socket for shared-memory registration lives next to the gRPC socket, so a
/// client that knows one knows the other.
pub fn shm_socket_path(grpc_socket: &Path) -> PathBuf {
    grpc_socket.with_extension("shm")
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// gRPC Unix socket; its directory is created if missing.
    pub socket: PathBuf,
    /// Permissions of the socket files. 0o666 lets every local uid connect; tenants are
    /// still told apart by their peer credentials.
    pub socket_mode: u32,
    /// Permissions of the socket directory when the daemon creates it.
    pub socket_dir_mode: u32,
    /// Optional TCP listener (`host:port`); requests must carry a configured bearer token.
    pub tcp: Option<String>,
    /// Tokens accepted on TCP; each names the tenant it authenticates.
    pub tokens: Vec<TokenConfig>,
    /// uids allowed to see every tenant in `tenants` and `status`.
    pub admin_uids: Vec<u32>,
    /// Async runtime worker threads.
    pub worker_threads: usize,
    /// Interpreters prepared per model: how many requests for one model run at once.
    pub interpreters_per_model: usize,
    /// Most intra-op threads one request may use; the arbiter gives them only when no
    /// other request waits for the cores.
    pub kernel_threads: usize,
    /// How long shutdown waits for in-flight requests before exiting anyway.
    pub grace_ms: u64,
    /// Largest gRPC message accepted or sent (inline tensors and models).
    pub max_message_bytes: usize,
    /// Where learned state (the allowlist) lives across restarts. Empty: a `state`
    /// directory next to the socket, so two daemons on different sockets never share
    /// decisions by accident.
    pub state_dir: PathBuf,
    /// Vendor delegate plugins (`.so` paths) loaded at start, offered to the scheduler
    /// beside the emulated DSP/NPU.
    pub plugins: Vec<PathBuf>,
    /// Prometheus text endpoint (`GET /metrics`), off unless set: `host:port` for TCP
    /// (a bearer token selects the tenant whose figures are shown; an admin token shows
    /// all) or `unix:/path` (the peer's uid selects them; admin uids see all).
    pub metrics: Option<String>,
    pub quota: QuotaConfig,
    /// Connection, stream and request-size limits of the listeners.
    pub limits: LimitsConfig,
    /// The worker processes that validate delegates and host vendor plugins.
    pub worker: WorkerConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub tenant: String,
    #[serde(default)]
    pub admin: bool,
}

/// Limits per tenant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Models a tenant may hold at once.
    pub models: usize,
    /// Sum of the byte sizes of a tenant's models plus their prepared plans (packed
    /// weights, folded constants), each counted in full as if the tenant were alone.
    pub model_bytes: u64,
    /// Memory all of a tenant's sessions hold together (arenas at their current shapes,
    /// heap tensors, variables), including pooled sessions while it runs on them.
    pub arena_bytes: u64,
    /// Sessions a tenant may have open at once.
    pub sessions: usize,
    /// Requests a tenant may have running or queued at once.
    pub in_flight: usize,
    /// Shared-memory regions a tenant may register.
    pub regions: usize,
    /// Sum of the sizes of a tenant's shared-memory regions.
    pub region_bytes: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            models: 8,
            model_bytes: 64 << 20,
            arena_bytes: 256 << 20,
            sessions: 32,
            in_flight: 8,
            regions: 16,
            region_bytes: 256 << 20,
        }
    }
}

/// Limits on what clients can hold open, so one local user or one TCP peer cannot take
/// the daemon's descriptors, memory or tasks from everyone else. Each listener has its
/// own budget, and every budget is split per peer (uid on Unix sockets, address on TCP).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// gRPC connections open at once on the Unix socket, and per uid.
    pub unix_connections: usize,
    pub unix_connections_per_uid: usize,
    /// Side-socket (shared-memory registration) connections, and per uid.
    pub shm_connections: usize,
    pub shm_connections_per_uid: usize,
    /// TCP connections, and per peer address.
    pub tcp_connections: usize,
    pub tcp_connections_per_ip: usize,
    /// HTTP/2 streams (requests) one connection may have open at once.
    pub streams_per_connection: u32,
    /// Requests one tenant may have open at once over all its connections (reading the
    /// request, queued or running); more are refused before their body is read.
    pub requests_per_tenant: usize,
    /// Bytes of request bodies one tenant may have in the daemon's memory at once.
    pub request_bytes_per_tenant: u64,
    /// A connection that sends nothing for this long after it was accepted is closed.
    pub handshake_ms: u64,
    /// A connection with no request open for this long is closed.
    pub idle_ms: u64,
    /// Nodes one run may execute, loop iterations and nested subgraphs included: a
    /// model that loops for ever is an error for that request, not a core taken.
    pub run_max_nodes: u64,
    /// Wall time one run may execute once it started (checked between nodes); 0: none.
    pub run_max_ms: u64,
    /// Most work one node may do in one eval (multiply-accumulates plus elements read
    /// and written): the run budget is checked between nodes, so this bounds how long
    /// one node holds a core. A model with a bigger node is refused at load. Daemon-wide,
    /// because one prepared plan serves every tenant holding the model.
    pub node_max_work: f64,
    /// Run budgets of particular tenants (`uid:1000`, `token:camera-service`) in place
    /// of `run_max_nodes` and `run_max_ms`.
    pub tenants: BTreeMap<String, TenantRunLimits>,
}

/// One tenant's run budgets; an unset field keeps the daemon-wide value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantRunLimits {
    pub run_max_nodes: Option<u64>,
    pub run_max_ms: Option<u64>,
}

impl LimitsConfig {
    /// `(run_max_nodes, run_max_ms)` for `tenant` (its display name, e.g. `uid:1000`).
    pub fn run_budget(&self, tenant: &str) -> (u64, u64) {
        let own = self.tenants.get(tenant);
        (
            own.and_then(|t| t.run_max_nodes)
                .unwrap_or(self.run_max_nodes),
            own.and_then(|t| t.run_max_ms).unwrap_or(self.run_max_ms),
        )
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        // The sums stay well under a 1024-descriptor limit, so no listener can exhaust
        // the descriptors another one needs.
        LimitsConfig {
            unix_connections: 256,
            unix_connections_per_uid: 64,
            shm_connections: 256,
            shm_connections_per_uid: 32,
            tcp_connections: 128,
            tcp_connections_per_ip: 32,
            streams_per_connection: 16,
            requests_per_tenant: 64,
            request_bytes_per_tenant: 160 << 20,
            handshake_ms: 10_000,
            idle_ms: 300_000,
            // Far above any real model (a few thousand nodes and loop iterations, well
            // under a second), far below a hostile one.
            run_max_nodes: 50_000_000,
            run_max_ms: 30_000,
            // About a second of one phone core; ten times the largest node of the
            // benchmark set (the interpreter's own default).
            node_max_work: 1e10,
            tenants: BTreeMap::new(),
        }
    }
}

/// The worker processes (`switchyard-worker`): delegate validation and vendor plugins
/// run there, so a driver that crashes or hangs takes a worker down, not the daemon.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// The worker binary; empty: `switchyard-worker` next to the daemon's executable.
    pub path: PathBuf,
    /// How long one validation of one candidate may take before the worker is killed
    /// and the candidate blocked as hung.
    pub validation_timeout_ms: u64,
    /// Extra time a plugin call may take past its own deadline before the worker is
    /// killed as hung.
    pub call_grace_ms: u64,
    /// How long a worker may take to start and answer its first message.
    pub start_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            path: PathBuf::new(),
            validation_timeout_ms: 30_000,
            call_grace_ms: 1_000,
            start_timeout_ms: 10_000,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: 0o666,
            socket_dir_mode: 0o755,
            tcp: None,
            tokens: Vec::new(),
            admin_uids: vec![0],
            worker_threads: 2,
            interpreters_per_model: 2,
            kernel_threads: 1,
            grace_ms: 5_000,
            max_message_bytes: 64 << 20,
            state_dir: PathBuf::new(),
            plugins: Vec::new(),
            metrics: None,
            quota: QuotaConfig::default(),
            limits: LimitsConfig::default(),
            worker: WorkerConfig::default(),
        }
    }
}

impl DaemonConfig {
    /// The state directory actually used (see [`DaemonConfig::state_dir`]).
    pub fn effective_state_dir(&self) -> PathBuf {
        if !self.state_dir.as_os_str().is_empty() {
            return self.state_dir.clone();
        }
        let dir = self.socket.parent().unwrap_or(Path::new("."));
        let stem = self
            .socket
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        dir.join(format!("{stem}.state"))
    }

    /// Reads the `[daemon]` section of a whole config document (validating all of it).
    pub fn from_toml(text: &str) -> Result<DaemonConfig, ConfigError> {
        Ok(crate::Config::from_toml_str(text)?.daemon)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |field: &str, why: &str| Err(ConfigError::invalid(format!("daemon.{field}"), why));
        if self.socket.as_os_str().is_empty() {
            return bad("socket", "must not be empty");
        }
        if self.socket.file_name().is_none() {
            return bad("socket", "must name a file");
        }
        if self.socket_mode > 0o777 {
            return bad("socket_mode", "must be a permission mode (at most 0o777)");
        }
        if self.socket_dir_mode > 0o777 {
            return bad(
                "socket_dir_mode",
                "must be a permission mode (at most 0o777)",
            );
        }
        if let Some(addr) = &self.tcp {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad("tcp", "must be an address such as 127.0.0.1:7878");
            }
            if self.tokens.is_empty() {
                return bad("tokens", "a TCP listener needs at least one token");
            }
        }
        if let Some(m) = &self.metrics {
            let ok = match m.strip_prefix("unix:") {
                Some(path) => !path.is_empty(),
                None => m.parse::<std::net::SocketAddr>().is_ok(),
            };
            if !ok {
                return bad(
                    "metrics",
                    "must be an address such as 127.0.0.1:9464 or unix:/run/switchyard/metrics.sock",
                );
            }
        }
        let mut seen = HashSet::new();
        for t in &self.tokens {
            if t.token.len() < 16 {
                return bad("tokens", "each token must be at least 16 characters");
            }
            if t.tenant.is_empty() {
                return bad("tokens", "each token must name a tenant");
            }
            if !seen.insert(&t.token) {
                return bad("tokens", "tokens must be distinct");
            }
        }
        if self.worker_threads == 0 || self.worker_threads > 256 {
            return bad("worker_threads", "must be between 1 and 256");
        }
        if self.interpreters_per_model == 0 || self.interpreters_per_model > 64 {
            return bad("interpreters_per_model", "must be between 1 and 64");
        }
        if self.kernel_threads == 0 || self.kernel_threads > 256 {
            return bad("kernel_threads", "must be between 1 and 256");
        }
        if self.max_message_bytes < 1 << 16 || self.max_message_bytes > 1 << 30 {
            return bad("max_message_bytes", "must be between 64 KiB and 1 GiB");
        }
        let q = &self.quota;
        if q.models == 0 || q.in_flight == 0 {
            return bad("quota", "models and in_flight must be at least 1");
        }
        if q.in_flight > 1 << 16 {
            return bad("quota.in_flight", "must be at most 65536");
        }
        let l = &self.limits;
        for (key, total, per) in [
            (
                "unix_connections",
                l.unix_connections,
                l.unix_connections_per_uid,
            ),
            (
                "shm_connections",
                l.shm_connections,
                l.shm_connections_per_uid,
            ),
            (
                "tcp_connections",
                l.tcp_connections,
                l.tcp_connections_per_ip,
            ),
        ] {
            if total == 0 || per == 0 {
                return bad(&format!("limits.{key}"), "limits must be at least 1");
            }
            if total > 1 << 16 {
                return bad(&format!("limits.{key}"), "must be at most 65536");
            }
        }
        if l.streams_per_connection == 0 || l.requests_per_tenant == 0 {
            return bad(
                "limits",
                "streams_per_connection and requests_per_tenant must be at least 1",
            );
        }
        if l.request_bytes_per_tenant < self.max_message_bytes as u64 {
            return bad(
                "limits.request_bytes_per_tenant",
                "must be at least max_message_bytes, or no full-size request could arrive",
            );
        }
        if l.handshake_ms == 0 || l.idle_ms == 0 {
            return bad("limits", "handshake_ms and idle_ms must be at least 1");
        }
        if l.run_max_nodes == 0 {
            return bad("limits.run_max_nodes", "must be at least 1");
        }
        if l.node_max_work.is_nan() || l.node_max_work < 1.0 {
            return bad("limits.node_max_work", "must be at least 1");
        }
        for (tenant, t) in &l.tenants {
            if !(tenant.starts_with("uid:") || tenant.starts_with("token:")) {
                return bad(
                    "limits.tenants",
                    "a tenant is named `uid:<number>` or `token:<tenant name>`",
                );
            }
            if t.run_max_nodes == Some(0) {
                return bad("limits.tenants.run_max_nodes", "must be at least 1");
            }
        }
        let w = &self.worker;
        if w.validation_timeout_ms == 0 || w.start_timeout_ms == 0 {
            return bad(
                "worker",
                "validation_timeout_ms and start_timeout_ms must be at least 1",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        let c = DaemonConfig::from_toml("").unwrap();
        assert_eq!(c, DaemonConfig::default());
        assert_eq!(c.worker_threads, 2);
    }

    #[test]
    fn reads_section_and_ignores_others() {
        let c = DaemonConfig::from_toml(
            "[devices.npu]\nclock_mhz = 600.0\n[daemon]\nsocket = \"/tmp/a.sock\"\nsocket_mode = 0o600\n[daemon.quota]\nmodels = 2\n",
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.socket_mode, 0o600);
        assert_eq!(c.quota.models, 2);
        assert_eq!(c.quota.in_flight, QuotaConfig::default().in_flight);
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        assert!(DaemonConfig::from_toml("[daemon]\nsockett = \"x\"\n").is_err());
        assert!(DaemonConfig::from_toml("[daemon]\ntcp = \"127.0.0.1:1\"\n").is_err());
        assert!(DaemonConfig::from_toml("[daemon]\nworker_threads = 0\n").is_err());
        assert!(DaemonConfig::from_toml("[daemon.quota]\nin_flight = 0\n").is_err());
        let e = DaemonConfig::from_toml(
            "[daemon]\ntcp = \"127.0.0.1:1\"\n[[daemon.tokens]]\ntoken = \"short\"\ntenant = \"a\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("16"), "{e}");
    }

    #[test]
    fn shm_socket_sits_next_to_grpc_socket() {
        assert_eq!(
            shm_socket_path(Path::new("/run/s/switchyard.sock")),
            PathBuf::from("/run/s/switchyard.shm")
        );
    }
}
