//! The GPU delegate: float partitions as wgpu compute shaders (WGSL) on Vulkan.
//!
//! On a build machine the only Vulkan device is usually Mesa's lavapipe (software
//! Vulkan), which is enough to prove the shaders right and to hold the executor to its
//! hardware-independent targets (`GpuCounters`: one submit, one upload per input, one
//! readback per output per run, nothing created after compile); a real GPU gets the
//! same code. When no adapter exists, or the crate is built without the `gpu` feature,
//! the delegate still exists but reports itself unavailable: every node is unsupported
//! with the reason and `compile` fails with [`DelegateError::Unavailable`], so
//! partitions stay on the CPU.
//!
//! Layout (with the `gpu` feature):
//! - `context`: adapter, device and optional features (subgroups, `shader-f16`,
//!   timestamps, pipeline cache), the fingerprint, wgpu errors as typed failures, work
//!   counters, blocking after a device loss or a driver out-of-memory error, shutdown
//! - `pipelines`: the WGSL sources (`shaders/<family>/<op>.wgsl`), how one shader's text
//!   is assembled (precision, reduction flavour, epilogue), the pipeline cache
//! - `disk_cache`: the driver's compiled pipelines persisted across runs
//! - `ops/<op>.rs`: per operator, `check` (what compile requires) and `lower` (its
//!   dispatches); `supports` answers from the op descriptors' GPU rules
//!   (`switchyard_kernels::supports`), with `check` as a backstop
//! - `ir`: values and dispatches with their epilogues; `fuse`: elementwise ops and
//!   activations moved into their producers
//! - `compile`: partition → fused dispatches, lifetime-planned buffer slots, constants,
//!   pipelines; `execute`: resident buffer sets, one submit per run, profiling
//!
//! [`DelegateError::Unavailable`]: switchyard_interpreter::DelegateError::Unavailable

/// The fp32 delegate's name in placements, reports and the allowlist.
pub const DELEGATE_NAME: &str = "gpu";
/// The fp16 variant's name.
pub const FP16_DELEGATE_NAME: &str = "gpu-fp16";

mod types;
pub use types::{
    DispatchProfile, GpuCounters, GpuOptions, PartitionProfile, Precision, ShutdownReport,
};

#[cfg(feature = "gpu")]
mod compile;
#[cfg(feature = "gpu")]
mod context;
#[cfg(feature = "gpu")]
mod delegate;
#[cfg(feature = "gpu")]
mod disk_cache;
#[cfg(feature = "gpu")]
mod execute;
#[cfg(feature = "gpu")]
mod fuse;
#[cfg(feature = "gpu")]
mod ir;
#[cfg(feature = "gpu")]
mod ops;
#[cfg(feature = "gpu")]
mod pipelines;
#[cfg(all(test, feature = "gpu"))]
mod tests;

#[cfg(not(feature = "gpu"))]
mod stub;

#[cfg(feature = "gpu")]
pub use delegate::GpuDelegate;
#[cfg(not(feature = "gpu"))]
pub use stub::GpuDelegate;

/// The GPU delegates a configuration asks for, built one way for the daemon and for
/// `switchyard placement` so offline plans are made against the same GPU: the fp32
/// delegate and, when the adapter has `shader-f16` and `[gpu] fp16` allows it, its fp16
/// variant on the same device. None when `devices.gpu.enabled` is false.
/// `persist_pipelines` keeps compiled pipelines under `<daemon.state_dir>/gpu` (when
/// `[gpu] pipeline_cache` allows).
pub fn from_config(
    cfg: &switchyard_config::Config,
    persist_pipelines: bool,
) -> Vec<std::sync::Arc<GpuDelegate>> {
    if !cfg.devices.gpu.enabled {
        return Vec::new();
    }
    let options = GpuOptions {
        subgroups: cfg.gpu.subgroups,
        fp16: cfg.gpu.fp16,
        pipeline_cache_dir: (persist_pipelines && cfg.gpu.pipeline_cache)
            .then(|| cfg.daemon.effective_state_dir().join("gpu")),
        max_resident_sets: cfg.gpu.max_resident_sets,
    };
    let gpu = GpuDelegate::with_options(&options);
    let fp16 = gpu.fp16_variant();
    let mut out = vec![std::sync::Arc::new(gpu)];
    out.extend(fp16.map(std::sync::Arc::new));
    out
}
