//! The processors the daemon offers the scheduler, built from the configuration in one
//! place so adding a delegate kind is one line here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Config;
use switchyard_delegates::{EmulatedDelegate, GpuDelegate, gpu};
use switchyard_interpreter::Delegate;
use tracing::{info, warn};

use crate::error::DaemonError;
use crate::worker::WorkerPool;

/// The daemon's processors: what the scheduler places on, and the GPU delegates again,
/// typed, for their orderly shutdown.
pub struct Processors {
    pub delegates: Vec<Arc<dyn Delegate>>,
    pub gpu: Vec<Arc<GpuDelegate>>,
}

impl Processors {
    /// Closes the GPU before the daemon exits: no new work, executions in flight
    /// finish (up to `timeout`), the queue drains, compiled pipelines are saved. The
    /// device itself goes when its last handle drops, idle.
    pub fn shutdown(&self, timeout: Duration) {
        for g in &self.gpu {
            let report = g.shutdown(timeout);
            if report.idle && report.in_flight == 0 {
                info!(delegate = g.name(), pipeline_cache_bytes = ?report.pipeline_cache_bytes, "GPU closed");
            } else {
                warn!(
                    delegate = g.name(),
                    in_flight = report.in_flight,
                    idle = report.idle,
                    "GPU closed while still busy"
                );
            }
        }
    }
}

/// Every non-CPU delegate the configuration enables. The CPU is not listed: it runs
/// whatever no delegate takes and is every partition's fallback. Vendor plugins are
/// never loaded into the daemon: they run in the plugin worker and appear here as
/// proxies.
pub fn build_delegates(
    cfg: &Config,
    workers: &Arc<WorkerPool>,
) -> Result<Vec<Arc<dyn Delegate>>, DaemonError> {
    build_processors(cfg, workers).map(|p| p.delegates)
}

/// [`build_delegates`], keeping the GPU handles.
pub fn build_processors(
    cfg: &Config,
    workers: &Arc<WorkerPool>,
) -> Result<Processors, DaemonError> {
    let mut out: Vec<Arc<dyn Delegate>> = Vec::new();
    // An injected hang must not outlive the partition timeout by much, or a blocked
    // device would hold a blocking-pool thread long after the CPU fallback finished.
    let hang_limit = Duration::from_millis(cfg.scheduler.partition_timeout_ms.saturating_mul(2));
    for d in EmulatedDelegate::from_profiles(&cfg.devices) {
        out.push(Arc::new(d.with_hang_limit(hang_limit)));
    }
    // Without an adapter the GPU delegate stays listed and refuses every node with the
    // reason, so `switchyard placement` says why nothing went to the GPU.
    let gpu = gpu::from_config(cfg, true);
    for g in &gpu {
        out.push(g.clone());
    }
    out.extend(workers.plugin_delegates());
    for d in &out {
        info!(delegate = d.name(), fingerprint = %d.fingerprint(), "delegate available");
    }
    Ok(Processors {
        delegates: out,
        gpu,
    })
}
