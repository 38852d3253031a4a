//! switchyard-kernels: every operator's one home.
//!
//! Each op module under [`ops`] declares, in its `DESCRIPTORS`, what the system knows
//! about its operators: prepare (validation, output shapes, weight packing) for the
//! reference and the optimized registry, the rules by which the GPU, DSP and NPU run it,
//! and its work estimate for the cost models. [`registry`] gathers them; everything else
//! (the CPU resolvers, the scheduler's and the emulated devices' support answers, the
//! cost models' work counts) reads that table and keeps no list of its own.
//!
//! - [`ops`]: one file per operator (or tight family), with its reference kernels;
//! - [`optimized`]: packed GEMM, SIMD and threaded building blocks the optimized
//!   prepares pick;
//! - [`quant`]: TFLite's integer rounding rules; [`fixedpoint`]: gemmlowp's int16
//!   logistic and tanh (the integer LSTM);
//! - [`support`]: the per-processor rules the descriptors are built from;
//! - [`work`]: MAC and element counts.
//!
//! Crate direction: interpreter <- kernels <- delegates <- scheduler.
#![deny(unsafe_code)]

pub mod fixedpoint;
pub mod ops;
pub mod optimized;
pub mod quant;
pub mod registry;
pub mod support;
pub mod util;
pub mod work;

pub use registry::{
    OpDescriptor, OpKey, OptimizedResolver, ReferenceResolver, descriptor, descriptors, node_work,
    supports,
};
pub use work::OpWork;

use switchyard_interpreter::{KernelError, OpKind, OpResolver, PrepareCtx, PreparedKernel};

/// Which of the two registries a [`CpuResolver`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelMode {
    /// [`ReferenceResolver`]: plain loops, no packing or SIMD: the oracle.
    Reference,
    /// [`OptimizedResolver`]: packed weights, SIMD and threads where an op has them.
    #[default]
    Optimized,
}

/// One of the two CPU registries chosen at run time (a command-line flag, a test
/// looping over both). The mode only picks the registry here; no prepare sees it.
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
        registry::descriptor(op).is_some()
    }
}

impl OpResolver for CpuResolver {
    fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
        match self.mode {
            KernelMode::Reference => ReferenceResolver.prepare(ctx),
            KernelMode::Optimized => OptimizedResolver.prepare(ctx),
        }
    }

    fn work_bound(&self, ctx: &PrepareCtx<'_>, output_shapes: &[Vec<usize>]) -> Option<f64> {
        // The bound is the op's, not the registry's: both modes do the same work.
        OptimizedResolver.work_bound(ctx, output_shapes)
    }
}
