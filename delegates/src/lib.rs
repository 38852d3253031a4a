//! switchyard-delegates: the processors that run model partitions.
//!
//! Layout:
//! - [`cpu`]: reference kernels (plain, obviously correct: the oracle for every other
//!   path) and optimized kernels, one file per operator under `cpu/ops/`.
//! - [`gpu`]: wgpu compute shaders on Vulkan (cargo feature `gpu`, on by default; without
//!   it the delegate exists but reports itself unavailable).
#![deny(unsafe_code)]

pub mod cpu;
pub mod gpu;

pub use cpu::{CpuResolver, KernelMode};
pub use gpu::GpuDelegate;
