//! switchyard-delegates: the processors that run model partitions.
//!
//! Layout:
//! - [`cpu`]: reference kernels (plain, obviously correct: the oracle for every other
//!   path) and optimized kernels, one file per operator under `cpu/ops/`.
#![deny(unsafe_code)]

pub mod cpu;

pub use cpu::{CpuResolver, KernelMode};
