//! Optimized building blocks (packed GEMM, SIMD micro-kernels, threading) used by the
//! optimized kernels in `ops/`. Each is tested against the reference kernels.
