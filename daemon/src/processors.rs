//! The processors the daemon offers the scheduler, built from the configuration in one
//! place so adding a delegate kind is one line here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Config;
use switchyard_delegates::{EmulatedDelegate, GpuDelegate};
use switchyard_interpreter::Delegate;
use tracing::info;

use crate::error::DaemonError;
use crate::worker::WorkerPool;

/// Every non-CPU delegate the configuration enables. The CPU is not listed: it runs
/// whatever no delegate takes and is every partition's fallback. Vendor plugins are
/// never loaded into the daemon: they run in the plugin worker and appear here as
/// proxies.
pub fn build_delegates(
    cfg: &Config,
    workers: &Arc<WorkerPool>,
) -> Result<Vec<Arc<dyn Delegate>>, DaemonError> {
    let mut out: Vec<Arc<dyn Delegate>> = Vec::new();
    // An injected hang must not outlive the partition timeout by much, or a blocked
    // device would hold a blocking-pool thread long after the CPU fallback finished.
    let hang_limit = Duration::from_millis(cfg.scheduler.partition_timeout_ms.saturating_mul(2));
    for d in EmulatedDelegate::from_profiles(&cfg.devices) {
        out.push(Arc::new(d.with_hang_limit(hang_limit)));
    }
    if cfg.devices.gpu.enabled {
        // Without an adapter the delegate stays listed and refuses every node with the
        // reason, so `switchyard placement` says why nothing went to the GPU.
        out.push(Arc::new(GpuDelegate::new()));
    }
    out.extend(workers.plugin_delegates());
    for d in &out {
        info!(delegate = d.name(), fingerprint = %d.fingerprint(), "delegate available");
    }
    Ok(out)
}
