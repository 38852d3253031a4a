//! switchyard-daemon: the Switchyard system service as a library; `switchyardd` is a thin
//! binary over [`run`].
//!
//! Layout:
//! - [`activation`]: sockets passed by systemd (LISTEN_FDS) or Android init;
//!   [`notify`]: sd_notify readiness.
//! - [`server`]: binding the sockets, serving gRPC (Unix socket, optional TCP) and the
//!   shared-memory side socket, graceful shutdown with a grace timeout.
//! - [`authority`]: the Unix socket accepts any HTTP/2 `:authority` (C-core clients
//!   send the socket path, which h2 would refuse).
//! - [`service`]: the gRPC service: caller identity, request checks, runs.
//! - [`tenant`]: tenants, their model handles, quotas and counters.
//! - [`arbitration`]: requests queue per processor in the scheduler's arbiter.
//! - [`processors`]: the delegates the configuration enables, built in one place.
//! - [`placement`]: scheduler decisions on first load, run-time failures fed back into
//!   the persisted allowlist.
//! - [`metrics`]: request counters and histograms, the Prometheus endpoint.
//! - [`registry`]: one shared plan per model (by sha256) in a sharded concurrent map
//!   with per-model once-slots, and a bounded pool of sessions per model.
//! - [`sessions`]: tenants' sessions (one stream's state each) and who opened them.
//! - [`debug_hooks`]: test-only hooks, compiled into debug builds only.
//! - [`shm`]: memfd regions received over SCM_RIGHTS, range checks.
//! - [`fastpath`]: run channels: a shared-memory mailbox per (model, session) whose
//!   requests go through the same checks, arbiter and accounting as gRPC runs.
//! - [`fdpass`]: receiving descriptors so that none can leak, whatever the sender does.
//! - [`limits`]: connection budgets per listener and per peer, idle connections closed.
//! - [`auth`]: the caller identified from headers before any body is read; per-tenant
//!   budgets of open requests and request bytes.
//! - [`worker`]: the worker processes (`switchyard-worker`) that validate delegates and
//!   host vendor plugins, so a driver that crashes or hangs cannot take the daemon down.
//! - [`error`]: [`DaemonError`] and its one mapping to `tonic::Status`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_daemon::DaemonError> {
//! let config = switchyard_config::DaemonConfig::default();
//! let listeners = switchyard_daemon::server::bind(&config).await?;
//! switchyard_daemon::run(config, listeners, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
#![deny(unsafe_code)]

pub mod activation;
pub mod arbitration;
pub mod auth;
pub mod authority;
pub mod debug_hooks;
pub mod error;
pub mod fastpath;
pub mod fdpass;
pub mod fuzzing;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod panics;
pub mod placement;
pub mod processors;
pub mod registry;
pub mod server;
pub mod service;
pub mod sessions;
pub mod shm;
pub mod tenant;
pub mod worker;

pub use error::DaemonError;
pub use server::{Listeners, bind, run};
