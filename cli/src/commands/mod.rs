pub mod allowlist;
pub mod bench;
pub mod bench_gpu;
pub mod daemon;
pub mod inspect;
pub mod placement;
pub mod run;
pub mod simulate;
