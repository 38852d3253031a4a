//! The CPU delegate's kernels.
//!
//! Every operator lives in `ops/<op>.rs` with its `prepare` (validation, output shapes,
//! weight packing) and its kernels. `prepare` picks the reference kernel or, in
//! [`KernelMode::Optimized`], a faster one that is tested against the reference.

pub mod ops;
pub mod optimized;
pub mod quant;
pub mod util;

use switchyard_interpreter::{KernelError, OpKind, OpResolver, PrepareCtx, PreparedKernel};

/// Which kernel family `prepare` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelMode {
    /// Plain loops, no packing or SIMD: the oracle.
    Reference,
    /// Packed weights, SIMD and threads where an op has them; reference otherwise.
    #[default]
    Optimized,
}

/// Resolves nodes to CPU kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuResolver {
    pub mode: KernelMode,
}

impl CpuResolver {
    pub fn reference() -> CpuResolver {
        CpuResolver {
            mode: KernelMode::Reference,
        }
    }

    pub fn optimized() -> CpuResolver {
        CpuResolver {
            mode: KernelMode::Optimized,
        }
    }

    /// Whether this resolver has a kernel for `op` (dtype and parameter checks happen
    /// in prepare).
    pub fn knows(op: &OpKind) -> bool {
        ops::is_supported(op)
    }
}

impl OpResolver for CpuResolver {
    fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
        ops::prepare(ctx, self.mode)
    }
}
