//! The GPU delegate's public plain data: options, counters, profiles. Compiled with and
//! without the `gpu` feature so callers (daemon, CLI, tests) need no `cfg`.

use std::path::PathBuf;
use std::time::Duration;

/// How the delegate may use the adapter. Every switch only ever turns a feature *off*:
/// an adapter that lacks a feature is never asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuOptions {
    /// Use subgroup operations (reductions in FULLY_CONNECTED, MEAN/SUM, SOFTMAX and
    /// global pooling) when the adapter has them; `false` forces the workgroup-memory
    /// versions everywhere.
    pub subgroups: bool,
    /// Offer the fp16 variant ([`crate::GpuDelegate::fp16_variant`]) when the adapter
    /// has `shader-f16`; `false` never creates it.
    pub fp16: bool,
    /// Where compiled pipelines persist between runs of the process (the daemon uses
    /// `<state_dir>/gpu`); `None` keeps them in memory only.
    pub pipeline_cache_dir: Option<PathBuf>,
    /// Executions of one compiled partition that may run at the same time; each holds its
    /// own resident buffer set, and an execution beyond this waits for a free set.
    pub max_resident_sets: usize,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            subgroups: true,
            fp16: true,
            pipeline_cache_dir: None,
            max_resident_sets: 4,
        }
    }
}

/// Storage and arithmetic precision of a compiled partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// float32 storage and arithmetic.
    F32,
    /// float16 storage (activations, weights, biases) with float32 accumulation in the
    /// shaders' sums; partition inputs and outputs stay float32 on the host.
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::F16 => "fp16",
        }
    }

    /// Bytes of one stored element.
    pub fn size(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 => 2,
        }
    }
}

/// Work the delegate asked of the driver, counted where our code asks for it. These are
/// the executor's hardware-independent targets: per run of a partition one queue
/// submit, one upload per input, one readback per output, and nothing created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuCounters {
    pub runs: u64,
    pub queue_submits: u64,
    /// `write_buffer` calls carrying partition inputs.
    pub uploads: u64,
    pub upload_bytes: u64,
    /// Partition outputs copied back to the host.
    pub readbacks: u64,
    pub readback_bytes: u64,
    /// Staging-buffer mappings (one per run, covering every output).
    pub maps: u64,
    pub command_buffers_recorded: u64,
    pub dispatches_recorded: u64,
    pub shader_modules_created: u64,
    pub pipelines_created: u64,
    pub bind_groups_created: u64,
    pub buffers_created: u64,
    /// Resident buffer sets made (one per partition at compile, more only under
    /// concurrent executions).
    pub resident_sets_created: u64,
}

impl GpuCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &GpuCounters) -> GpuCounters {
        GpuCounters {
            runs: self.runs - earlier.runs,
            queue_submits: self.queue_submits - earlier.queue_submits,
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            readbacks: self.readbacks - earlier.readbacks,
            readback_bytes: self.readback_bytes - earlier.readback_bytes,
            maps: self.maps - earlier.maps,
            command_buffers_recorded: self.command_buffers_recorded
                - earlier.command_buffers_recorded,
            dispatches_recorded: self.dispatches_recorded - earlier.dispatches_recorded,
            shader_modules_created: self.shader_modules_created - earlier.shader_modules_created,
            pipelines_created: self.pipelines_created - earlier.pipelines_created,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            buffers_created: self.buffers_created - earlier.buffers_created,
            resident_sets_created: self.resident_sets_created - earlier.resident_sets_created,
        }
    }
}

/// One dispatch of a compiled partition, after fusion.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchProfile {
    /// Operator names of the nodes it runs, e.g. `CONV_2D+ADD+RELU`.
    pub label: String,
    /// The shader it runs, e.g. `conv/conv2d`.
    pub shader: String,
    /// The nodes it runs: the producer first, then the fused elementwise consumers.
    pub nodes: Vec<usize>,
    /// Mean time per profiled run: the GPU's timestamps when the adapter has them, else
    /// the wall time of a submission holding this dispatch alone.
    pub mean: Duration,
}

/// A compiled partition as `switchyard bench --device gpu` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionProfile {
    pub nodes: Vec<usize>,
    pub precision: Precision,
    /// Dispatches per run after fusion.
    pub dispatches: usize,
    pub inputs: usize,
    pub outputs: usize,
    /// Distinct pipelines the partition uses.
    pub pipelines: usize,
    /// Wall time of compiling the partition (lowering, pipelines, buffers, bind groups).
    pub compile: Duration,
    /// Profiled runs so far.
    pub runs: u64,
    /// Mean wall time per profiled run of each phase, each in its own submission:
    /// inputs written and flushed, all dispatches, outputs copied, mapped and read.
    pub upload: Duration,
    pub compute: Duration,
    pub readback: Duration,
    /// Sum of the per-dispatch GPU times (timestamps), when the adapter has them.
    pub compute_gpu: Option<Duration>,
    /// Whether per-dispatch times come from timestamp queries.
    pub timestamps: bool,
    pub steps: Vec<DispatchProfile>,
}

/// What [`crate::GpuDelegate::shutdown`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Executions still running when the wait ended.
    pub in_flight: usize,
    /// The queue drained before the deadline.
    pub idle: bool,
    /// Pipeline-cache bytes written to disk, when a cache directory is set.
    pub pipeline_cache_bytes: Option<usize>,
}
