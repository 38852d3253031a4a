//! The processors the daemon offers the scheduler, built from the configuration in one
//! place so adding a delegate kind is one line here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Config;
use switchyard_delegates::{EmulatedDelegate, PluginDelegate};
use switchyard_interpreter::Delegate;
use tracing::info;

use crate::error::DaemonError;

/// Every non-CPU delegate the configuration enables. The CPU is not listed: it runs
/// whatever no delegate takes and is every partition's fallback.
pub fn build_delegates(cfg: &Config) -> Result<Vec<Arc<dyn Delegate>>, DaemonError> {
    let mut out: Vec<Arc<dyn Delegate>> = Vec::new();
    // An injected hang must not outlive the partition timeout by much, or a blocked
    // device would hold a blocking-pool thread long after the CPU fallback finished.
    let hang_limit = Duration::from_millis(cfg.scheduler.partition_timeout_ms.saturating_mul(2));
    for d in EmulatedDelegate::from_profiles(&cfg.devices) {
        out.push(Arc::new(d.with_hang_limit(hang_limit)));
    }
    // GPU delegate (delegates/src/gpu, on its own branch): when merged, add here
    //     if cfg.devices.gpu.enabled { out.push(Arc::new(GpuDelegate::new(&cfg.devices.gpu)?)); }
    for path in &cfg.daemon.plugins {
        let p = PluginDelegate::load(path)
            .map_err(|e| DaemonError::Internal(format!("plugin {}: {e}", path.display())))?;
        out.push(Arc::new(p));
    }
    for d in &out {
        info!(delegate = d.name(), fingerprint = %d.fingerprint(), "delegate available");
    }
    Ok(out)
}
