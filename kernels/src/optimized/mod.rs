//! Optimized float32 building blocks used by the kernels in `ops/` under
//! [`OptimizedResolver`](crate::OptimizedResolver): a GEMM against weights packed at
//! prepare, convolutions built on it, a channel-vectorised depthwise convolution, and
//! the worker pool that splits them across `PrepareCtx::threads`.
//!
//! Each block is proptested here against a plain scalar loop; the ops that use them are
//! tested against the reference kernels.
//!
//! SIMD: AVX2+FMA on x86-64, chosen at prepare by runtime detection; elsewhere (aarch64
//! included, where NEON is the baseline ISA) the portable kernels, written over
//! fixed-size lanes so LLVM vectorises them.
// Raw pointers and intrinsics are confined to this module; every block states why it is
// sound in a `SAFETY:` comment.
#![allow(unsafe_code)]

pub mod batch_matmul;
pub mod conv;
pub mod depthwise;
pub mod gemm;
pub mod hconv;
pub mod hquant;
pub mod kernels;
pub mod pool;
pub mod qconv;
pub mod qdepthwise;
pub mod qelementwise;
pub mod qgemm;
pub mod qkernels;
pub mod transpose_conv;

pub use conv::{Conv2dF32, ConvGeom};
pub use depthwise::DepthwiseF32;
pub use gemm::{Isa, PackedB, clamp_of, gemm};
pub use pool::{ThreadPool, shared_pool};
