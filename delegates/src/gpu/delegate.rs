//! [`GpuDelegate`]: the `Delegate` contract over one wgpu device.

use std::sync::Arc;

use switchyard_interpreter::{
    CompiledPartition, Delegate, DelegateError, NodeSupportCtx, PartitionCtx, ProcessorKind,
    Support,
};

use super::DELEGATE_NAME;
use super::compile;
use super::context::GpuContext;

/// Runs float32 partitions on the first Vulkan adapter found.
///
/// Construction never fails: without an adapter the delegate is unavailable and says why
/// (`supports` answers unsupported with the reason, `compile` fails), so the daemon can
/// always list it.
pub struct GpuDelegate {
    device: Result<Arc<GpuContext>, String>,
}

impl std::fmt::Debug for GpuDelegate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDelegate")
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
    /// Opens the device (a real GPU first, then a software fallback such as lavapipe).
    pub fn new() -> GpuDelegate {
        let device = GpuContext::acquire().map(Arc::new);
        match &device {
            Ok(ctx) => tracing::info!(fingerprint = %ctx.fingerprint(), "GPU delegate ready"),
            Err(e) => tracing::info!(reason = %e, "GPU delegate unavailable"),
        }
        GpuDelegate { device }
    }

    /// Why the delegate cannot run anything, when it cannot.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.device.as_ref().err().map(String::as_str)
    }

    pub fn is_available(&self) -> bool {
        self.device.is_ok()
    }

    /// Number of compute pipelines built so far (they are shared by all partitions).
    pub fn pipeline_count(&self) -> usize {
        self.device.as_ref().map_or(0, |c| c.pipelines.len())
    }

    fn context(&self) -> Result<&Arc<GpuContext>, DelegateError> {
        self.device
            .as_ref()
            .map_err(|what| DelegateError::Unavailable {
                delegate: DELEGATE_NAME.into(),
                what: what.clone(),
            })
    }
}

impl Delegate for GpuDelegate {
    fn name(&self) -> &str {
        DELEGATE_NAME
    }

    fn kind(&self) -> ProcessorKind {
        ProcessorKind::Gpu
    }

    fn fingerprint(&self) -> String {
        match &self.device {
            Ok(ctx) => ctx.fingerprint(),
            Err(e) => format!("unavailable: {e}"),
        }
    }

    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
        if let Err(e) = &self.device {
            return Support::Unsupported(format!("GPU unavailable: {e}"));
        }
        // The op descriptors' GPU rules (switchyard-kernels) answer; `compile` lowers with
        // its own checks, and a test holds the two to the same answers.
        switchyard_kernels::supports(ProcessorKind::Gpu, ctx)
    }

    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        let gpu = self.context()?;
        let _span = tracing::debug_span!(
            "gpu_compile",
            nodes = ctx.partition.nodes.len(),
            subgraph = ctx.partition.subgraph
        )
        .entered();
        Ok(Box::new(compile::compile(gpu, ctx)?))
    }
}
