//! The GPU delegate of a build without the `gpu` feature: present, so callers need no
//! `cfg`, but unavailable.

use switchyard_interpreter::{
    CompiledPartition, Delegate, DelegateError, NodeSupportCtx, PartitionCtx, ProcessorKind,
    Support,
};

use super::DELEGATE_NAME;

const REASON: &str = "switchyard-delegates was built without the `gpu` feature";

/// Stands in for the wgpu delegate; every node is unsupported.
#[derive(Debug, Default)]
pub struct GpuDelegate;

impl GpuDelegate {
    pub fn new() -> GpuDelegate {
        GpuDelegate
    }

    /// Why the delegate cannot run anything.
    pub fn unavailable_reason(&self) -> Option<&str> {
        Some(REASON)
    }

    pub fn is_available(&self) -> bool {
        false
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
