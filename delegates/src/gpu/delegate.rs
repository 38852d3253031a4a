//! [`GpuDelegate`]: the `Delegate` contract over one wgpu device, in fp32 or (as a
//! second delegate sharing the device) fp16.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchyard_interpreter::{
    CompiledPartition, Delegate, DelegateError, FloatPrecision, NodeSupportCtx, PartitionCtx,
    ProcessorKind, Support,
};

use super::compile;
use super::context::GpuContext;
use super::ops::{self, NodeView};
use super::types::{GpuCounters, GpuOptions, PartitionProfile, Precision, ShutdownReport};
use super::{DELEGATE_NAME, FP16_DELEGATE_NAME};

/// Runs float partitions on the first Vulkan adapter found.
///
/// Construction never fails: without an adapter the delegate is unavailable and says why
/// (`supports` answers unsupported with the reason, `compile` fails), so the daemon can
/// always list it. A device that is lost or runs out of memory is blocked the same way
/// for the rest of the process, with the reason.
pub struct GpuDelegate {
    device: Result<Arc<GpuContext>, String>,
    precision: Precision,
    name: &'static str,
}

impl std::fmt::Debug for GpuDelegate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDelegate")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Default for GpuDelegate {
    fn default() -> Self {
        GpuDelegate::new()
    }
}

impl GpuDelegate {
    /// Opens the device (a real GPU first, then a software fallback such as lavapipe)
    /// with the default options.
    pub fn new() -> GpuDelegate {
        GpuDelegate::with_options(&GpuOptions::default())
    }

    /// Opens the device with the features `options` allow; the fp32 delegate.
    pub fn with_options(options: &GpuOptions) -> GpuDelegate {
        let device = GpuContext::acquire(options).map(Arc::new);
        match &device {
            Ok(ctx) => {
                ctx.watch_device_loss();
                tracing::info!(
                    fingerprint = %ctx.fingerprint(),
                    subgroups = ctx.subgroups,
                    f16 = ctx.f16,
                    timestamps = ctx.timestamps,
                    pipeline_cache = ctx.disk_cache.is_some(),
                    "GPU delegate ready"
                );
            }
            Err(e) => tracing::info!(reason = %e, "GPU delegate unavailable"),
        }
        GpuDelegate {
            device,
            precision: Precision::F32,
            name: DELEGATE_NAME,
        }
    }

    /// The same device computing in fp16 (`gpu-fp16`), when the adapter has
    /// `shader-f16` and the options allowed it. The scheduler validates it like any other
    /// delegate (with the half-precision tolerance) and the allowlist picks, per model,
    /// whichever of the two is allowed and faster.
    pub fn fp16_variant(&self) -> Option<GpuDelegate> {
        let ctx = self.device.as_ref().ok()?;
        ctx.f16.then(|| GpuDelegate {
            device: Ok(ctx.clone()),
            precision: Precision::F16,
            name: FP16_DELEGATE_NAME,
        })
    }

    /// Why the delegate cannot run anything, when it cannot: no adapter, or the device
    /// was lost, ran out of memory or is shutting down.
    pub fn unavailable_reason(&self) -> Option<String> {
        match &self.device {
            Err(e) => Some(e.clone()),
            Ok(ctx) => ctx.unavailable(),
        }
    }

    pub fn is_available(&self) -> bool {
        self.unavailable_reason().is_none()
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether shaders use subgroup operations (the adapter has them and the options
    /// allowed them).
    pub fn uses_subgroups(&self) -> bool {
        self.device.as_ref().is_ok_and(|c| c.subgroups)
    }

    /// Whether the pipeline cache persists to disk.
    pub fn has_pipeline_cache(&self) -> bool {
        self.device.as_ref().is_ok_and(|c| c.disk_cache.is_some())
    }

    /// Bytes of driver pipeline data loaded from disk at start (0: a cold start).
    pub fn pipeline_cache_loaded_bytes(&self) -> usize {
        self.device
            .as_ref()
            .ok()
            .and_then(|c| c.disk_cache.as_ref())
            .map_or(0, |d| d.loaded_bytes)
    }

    /// Number of compute pipelines built so far (shared by all partitions and both
    /// precisions).
    pub fn pipeline_count(&self) -> usize {
        self.device.as_ref().map_or(0, |c| c.pipelines.len())
    }

    /// Work asked of the driver so far, device-wide (both precisions).
    pub fn counters(&self) -> GpuCounters {
        self.device
            .as_ref()
            .map_or_else(|_| GpuCounters::default(), |c| c.counters())
    }

    /// Profiling mode: executions run upload, compute and readback apart, each dispatch
    /// between timestamp queries, and record a profile (for `switchyard bench`).
    pub fn set_profiling(&self, on: bool) {
        if let Ok(c) = &self.device {
            c.profiling.store(on, Ordering::Relaxed);
        }
    }

    /// Every live compiled partition of this precision with its profile so far.
    pub fn partition_profiles(&self) -> Vec<PartitionProfile> {
        let Ok(ctx) = &self.device else {
            return Vec::new();
        };
        let Ok(list) = ctx.partitions.lock() else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|w| w.upgrade())
            .map(|p| p.profile())
            .filter(|p| p.precision == self.precision)
            .collect()
    }

    /// Destroys the device as the driver would on a loss (a real `destroy`, used by
    /// tests of the CPU fallback): every later execution fails over to the CPU and the
    /// delegate reports itself blocked with the reason.
    pub fn destroy_device(&self) {
        if let Ok(c) = &self.device {
            c.device.destroy();
            c.block("device destroyed".into());
        }
    }

    /// Orderly teardown: refuses new work, waits up to `timeout` for executions in
    /// flight and for the queue to drain, and saves the pipeline cache. Call before the
    /// process exits; the device is destroyed when the last handle drops.
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        match &self.device {
            Ok(c) => c.shutdown(timeout),
            Err(_) => ShutdownReport {
                idle: true,
                ..Default::default()
            },
        }
    }

    /// Handles on the device other than this delegate's (partitions, the other
    /// precision); the daemon checks it is alone before it drops the last one.
    pub fn device_handles(&self) -> usize {
        self.device
            .as_ref()
            .map_or(0, |c| Arc::strong_count(c).saturating_sub(1))
    }

    fn context(&self) -> Result<&Arc<GpuContext>, DelegateError> {
        let ctx = self
            .device
            .as_ref()
            .map_err(|what| DelegateError::Unavailable {
                delegate: self.name.into(),
                what: what.clone(),
            })?;
        if let Some(why) = ctx.unavailable() {
            return Err(DelegateError::Unavailable {
                delegate: self.name.into(),
                what: why,
            });
        }
        Ok(ctx)
    }
}

impl Delegate for GpuDelegate {
    fn name(&self) -> &str {
        self.name
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Gpu
    }

    fn float_precision(&self) -> FloatPrecision {
        match self.precision {
            Precision::F32 => FloatPrecision::F32,
            Precision::F16 => FloatPrecision::F16,
        }
    }

    fn fingerprint(&self) -> String {
        match &self.device {
            Ok(ctx) => ctx.fingerprint(),
            Err(e) => format!("unavailable: {e}"),
        }
    }

    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        if let Some(why) = self.unavailable_reason() {
            return Support::Unsupported(format!("GPU unavailable: {why}"));
        }
        // The op descriptors' GPU rules (switchyard-kernels, one home per operator) answer;
        // `compile` lowers with its own checks, which stay as a backstop so a
        // disagreement never reaches compile (and a test holds the two to the same
        // answers).
        match switchyard_kernels::supports(ProcessorKind::Gpu, ctx) {
            Support::Supported => {
                let view = NodeView {
                    node: ctx.node,
                    inputs: &ctx.inputs,
                    outputs: &ctx.outputs,
                };
                match ops::check(&view) {
                    Ok(()) => Support::Supported,
                    Err(reason) => Support::Unsupported(reason),
                }
            }
            unsupported => unsupported,
        }
    }

    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        let gpu = self.context()?;
        let _span = tracing::debug_span!(
            "gpu_compile",
            delegate = self.name,
            nodes = ctx.partition.nodes.len(),
            subgraph = ctx.partition.subgraph
        )
        .entered();
        Ok(Box::new(compile::compile(
            gpu,
            self.name,
            self.precision,
            ctx,
        )?))
    }
}
