//! The GPU delegate: float32 partitions as wgpu compute shaders (WGSL) on Vulkan.
//!
//! On a build machine the only Vulkan device is usually Mesa's lavapipe (software
//! Vulkan), which is enough to prove the shaders right; a real GPU gets the same code.
//! When no adapter exists, or the crate is built without the `gpu` feature, the delegate
//! still exists but reports itself unavailable: every node is unsupported with the reason
//! and `compile` fails with [`DelegateError::Unavailable`], so partitions stay on the CPU.
//!
//! Layout (with the `gpu` feature):
//! - `context`: adapter and device, fingerprint, wgpu errors as `Result`s
//! - `pipelines`: the WGSL sources (`shaders/<family>/<op>.wgsl` after a shared
//!   `prelude.wgsl`) and the pipeline cache keyed by (shader, entry point, constants)
//! - `ops/<op>.rs`: per operator, `check` (what compile requires) and `lower` (its
//!   dispatches); `supports` answers from the op descriptors' GPU rules
//!   (`switchyard_kernels::supports`)
//! - `compile`: partition → values, lifetime-planned buffers, one command encoder per
//!   execution; tensors stay on the GPU between the partition's nodes
//!
//! [`DelegateError::Unavailable`]: switchyard_interpreter::DelegateError::Unavailable

/// The delegate's name in placements, reports and the allowlist.
pub const DELEGATE_NAME: &str = "gpu";

#[cfg(feature = "gpu")]
mod compile;
#[cfg(feature = "gpu")]
mod context;
#[cfg(feature = "gpu")]
mod delegate;
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
