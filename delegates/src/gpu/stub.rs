//! The GPU delegate of a build without the `gpu` feature: present, with the same
//! methods, so callers need no `cfg`, but unavailable.

use std::time::Duration;

use switchyard_interpreter::{
    CompiledPartition, Delegate, DelegateError, NodeSupportCtx, PartitionCtx, ProcessorKind,
    Support,
};

use super::DELEGATE_NAME;
use super::types::{GpuCounters, GpuOptions, PartitionProfile, Precision, ShutdownReport};

const REASON: &str = "switchyard-delegates was built without the `gpu` feature";

/// Stands in for the wgpu delegate; every node is unsupported.
#[derive(Debug, Default)]
pub struct GpuDelegate;

impl GpuDelegate {
    pub fn new() -> GpuDelegate {
        GpuDelegate
    }

    pub fn with_options(_options: &GpuOptions) -> GpuDelegate {
        GpuDelegate
    }

    pub fn fp16_variant(&self) -> Option<GpuDelegate> {
        None
    }

    /// Why the delegate cannot run anything.
    pub fn unavailable_reason(&self) -> Option<String> {
        Some(REASON.into())
    }

    pub fn is_available(&self) -> bool {
        false
    }

    pub fn precision(&self) -> Precision {
        Precision::F32
    }

    pub fn uses_subgroups(&self) -> bool {
        false
    }

    pub fn has_pipeline_cache(&self) -> bool {
        false
    }

    pub fn pipeline_cache_loaded_bytes(&self) -> usize {
        0
    }

    pub fn pipeline_count(&self) -> usize {
        0
    }

    pub fn counters(&self) -> GpuCounters {
        GpuCounters::default()
    }

    pub fn set_profiling(&self, _on: bool) {}

    pub fn partition_profiles(&self) -> Vec<PartitionProfile> {
        Vec::new()
    }

    pub fn destroy_device(&self) {}

    pub fn shutdown(&self, _timeout: Duration) -> ShutdownReport {
        ShutdownReport {
            idle: true,
            ..Default::default()
        }
    }

    pub fn device_handles(&self) -> usize {
        0
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
        format!("unavailable: {REASON}")
    }

    fn supports(&self, _ctx: &NodeSupportCtx<'_>) -> Support {
        Support::Unsupported(REASON.into())
    }

    fn compile(
        &self,
        _ctx: &PartitionCtx<'_>,
    ) -> Result<Box<dyn CompiledPartition>, DelegateError> {
        Err(DelegateError::Unavailable {
            delegate: DELEGATE_NAME.into(),
            what: REASON.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_is_an_unavailable_gpu() {
        let d = GpuDelegate::new();
        assert!(!d.is_available());
        assert_eq!(d.kind(), ProcessorKind::Gpu);
        assert!(d.fingerprint().starts_with("unavailable"));
        println!("skipped: no GPU adapter ({REASON})");
    }
}
