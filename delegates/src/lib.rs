//! switchyard-delegates: the processors that run model partitions.
//!
//! Layout:
//! - [`cpu`]: the `switchyard-kernels` crate (every operator's descriptor, reference and
//!   optimized CPU kernels), re-exported.
//! - [`gpu`]: wgpu compute shaders on Vulkan (cargo feature `gpu`, on by default; without
//!   it the delegate exists but reports itself unavailable).
//! - [`emulated`]: the DSP and NPU device models (capabilities, virtual clock, faults)
//!   around bit-exact reference arithmetic.
//! - [`plugin`]: the versioned C ABI for vendor drivers (`.so`) and its loader; with
//!   the GPU's pipeline-cache loader (`gpu/disk_cache.rs`, one call), the only code
//!   allowed `unsafe`.
#![deny(unsafe_code)]

/// The CPU kernels, now in `switchyard-kernels`; re-exported so `cpu::...` paths keep
/// working.
pub use switchyard_kernels as cpu;
pub mod emulated;
pub mod gpu;
pub mod plugin;

pub use cpu::{CpuResolver, KernelMode};
pub use emulated::{EmulatedDelegate, EmulatedKind};
pub use gpu::{GpuCounters, GpuDelegate, GpuOptions, Precision};
pub use plugin::PluginDelegate;
