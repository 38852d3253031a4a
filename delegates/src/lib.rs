//! switchyard-delegates: the processors that run model partitions.
//!
//! Layout:
//! - [`cpu`]: reference kernels (plain, obviously correct: the oracle for every other
//!   path) and optimized kernels, one file per operator under `cpu/ops/`.
//! - [`gpu`]: wgpu compute shaders on Vulkan (cargo feature `gpu`, on by default; without
//!   it the delegate exists but reports itself unavailable).
//! - [`emulated`]: the DSP and NPU device models (capabilities, virtual clock, faults)
//!   around bit-exact reference arithmetic.
//! - [`plugin`]: the versioned C ABI for vendor drivers (`.so`) and its loader; the
//!   only module allowed `unsafe`.
#![deny(unsafe_code)]

pub mod cpu;
pub mod emulated;
pub mod gpu;
pub mod plugin;

pub use cpu::{CpuResolver, KernelMode};
pub use emulated::{EmulatedDelegate, EmulatedKind};
pub use gpu::GpuDelegate;
pub use plugin::PluginDelegate;
