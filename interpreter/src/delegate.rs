//! The contract every processor implements (CPU, GPU, emulated DSP/NPU, vendor plugins).
//!
//! Modelled on TFLite's SimpleDelegateInterface plus a fingerprint for the learned
//! allowlist: a delegate says per node whether it can run it (and why not), compiles a
//! connected partition of nodes into a [`CompiledPartition`], and executes it on tensors.
//! The executor keeps every partition's CPU kernels as its fallback: a delegate that
//! fails, times out or is not allowed never loses a request.
//!
//! Buffers may move between invocations: a compiled partition must not keep pointers
//! into the views it is given.

use std::fmt;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::kernel::TensorMeta;
use crate::model::{Model, Node, Subgraph};
use crate::tensor::{TensorView, TensorViewMut};

/// The class of processor a delegate drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProcessorKind {
    Cpu,
    Gpu,
    Dsp,
    Npu,
}

impl ProcessorKind {
    pub fn name(self) -> &'static str {
        match self {
            ProcessorKind::Cpu => "cpu",
            ProcessorKind::Gpu => "gpu",
            ProcessorKind::Dsp => "dsp",
            ProcessorKind::Npu => "npu",
        }
    }

    pub fn from_name(s: &str) -> Option<ProcessorKind> {
        Some(match s {
            "cpu" => ProcessorKind::Cpu,
            "gpu" => ProcessorKind::Gpu,
            "dsp" => ProcessorKind::Dsp,
            "npu" => ProcessorKind::Npu,
            _ => return None,
        })
    }
}

impl fmt::Display for ProcessorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The float arithmetic a delegate computes in. Validation holds a reduced-precision
/// delegate to the scheduler's half-precision tolerance instead of the float one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FloatPrecision {
    #[default]
    F32,
    /// float16 storage (and possibly arithmetic), e.g. the GPU's fp16 variant.
    F16,
}

/// Whether a delegate can run one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Not supported, with the reason shown by `switchyard placement`.
    Unsupported(String),
}

impl Support {
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }
}

/// Limits on how a delegate's nodes are grouped (TFLite's delegate options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOptions {
    /// Partitions with fewer nodes stay on the CPU (dispatch overhead would dominate).
    pub min_nodes_per_partition: usize,
    /// At most this many partitions go to the delegate (largest first).
    pub max_partitions: usize,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        PartitionOptions {
            min_nodes_per_partition: 1,
            max_partitions: usize::MAX,
        }
    }
}

/// Everything `supports` may look at for one node.
pub struct NodeSupportCtx<'a> {
    pub subgraph: &'a Subgraph,
    pub node: &'a Node,
    pub inputs: Vec<Option<TensorMeta<'a>>>,
    pub outputs: Vec<TensorMeta<'a>>,
}

/// A connected set of nodes of one subgraph, assigned to one delegate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub subgraph: usize,
    /// Node indices in execution order.
    pub nodes: Vec<usize>,
    /// Tensors the partition reads that are produced outside it (constants excluded).
    pub inputs: Vec<usize>,
    /// Tensors produced inside and needed outside (by later nodes or as graph outputs).
    pub outputs: Vec<usize>,
}

impl Partition {
    /// Builds a partition from its nodes, deriving its boundary tensors.
    pub fn from_nodes(
        subgraph_index: usize,
        subgraph: &Subgraph,
        mut nodes: Vec<usize>,
    ) -> Partition {
        nodes.sort_unstable();
        nodes.dedup();
        let inside: std::collections::HashSet<usize> = nodes.iter().copied().collect();
        let mut produced = std::collections::HashSet::new();
        for &n in &nodes {
            produced.extend(subgraph.nodes[n].outputs.iter().copied());
        }
        let mut inputs = Vec::new();
        for &n in &nodes {
            for &t in subgraph.nodes[n].inputs.iter().flatten() {
                if !produced.contains(&t) && !subgraph.tensors[t].is_const() && !inputs.contains(&t)
                {
                    inputs.push(t);
                }
            }
        }
        let mut outputs = Vec::new();
        for &n in &nodes {
            for &t in &subgraph.nodes[n].outputs {
                let used_outside = subgraph.nodes.iter().enumerate().any(|(m, node)| {
                    !inside.contains(&m) && node.inputs.iter().flatten().any(|&x| x == t)
                });
                if (used_outside || subgraph.outputs.contains(&t)) && !outputs.contains(&t) {
                    outputs.push(t);
                }
            }
        }
        Partition {
            subgraph: subgraph_index,
            nodes,
            inputs,
            outputs,
        }
    }
}

/// What `compile` gets: the partition plus the resolved shapes of every tensor.
pub struct PartitionCtx<'a> {
    pub model: &'a Model,
    pub subgraph: &'a Subgraph,
    pub partition: &'a Partition,
    /// Resolved shape of every tensor of the subgraph.
    pub shapes: &'a [Vec<usize>],
    /// Value of tensor `t` when it is constant (model constants and folded tensors).
    pub constant: &'a dyn Fn(usize) -> Option<&'a [u8]>,
}

/// Why a delegate could not compile or run a partition.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DelegateError {
    #[error("{delegate}: unsupported: {what}")]
    Unsupported { delegate: String, what: String },
    #[error("{delegate}: compile failed: {what}")]
    Compile { delegate: String, what: String },
    #[error("{delegate}: execution failed: {what}")]
    Execute { delegate: String, what: String },
    #[error("{delegate}: timed out after {after:?}")]
    Timeout { delegate: String, after: Duration },
    #[error("{delegate}: device unavailable: {what}")]
    Unavailable { delegate: String, what: String },
}

/// Timing reported by a delegate for one execution.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExecReport {
    /// Time on the device's own clock: the virtual clock of an emulated device, or a
    /// device timer when the hardware has one. `None` when only wall time is known.
    pub device_time: Option<Duration>,
}

/// A partition compiled for one device: weights uploaded, shaders built, memory planned.
pub trait CompiledPartition: Send + Sync {
    /// Runs the partition. `inputs` follow `Partition::inputs`, `outputs` follow
    /// `Partition::outputs`. Must return by `deadline` (with `DelegateError::Timeout`
    /// when it cannot), so a hung device never stalls a request.
    fn execute(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
        deadline: Option<Instant>,
    ) -> Result<ExecReport, DelegateError>;
}

/// A processor that can run partitions of a model.
pub trait Delegate: Send + Sync {
    /// Unique name, e.g. "gpu", "npu (emulated)", "plugin:acme-npu".
    fn name(&self) -> &str;
    fn kind(&self) -> ProcessorKind;
    /// True for device models standing in for hardware this machine lacks.
    fn is_emulated(&self) -> bool {
        false
    }
    /// Driver/device/version identity; a change re-triggers allowlist validation.
    fn fingerprint(&self) -> String;
    /// The float precision it computes in (float32 unless it says otherwise).
    fn float_precision(&self) -> FloatPrecision {
        FloatPrecision::F32
    }
    /// Whether the delegate can run this node (op, dtypes, parameters).
    fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support;
    fn partition_options(&self) -> PartitionOptions {
        PartitionOptions::default()
    }
    /// Compiles a partition whose every node `supports` accepted.
    fn compile(&self, ctx: &PartitionCtx<'_>) -> Result<Box<dyn CompiledPartition>, DelegateError>;
}

/// One partition placed on a delegate, handed to `Interpreter::with_placement`.
#[derive(Clone)]
pub struct PlacedPartition {
    pub partition: Partition,
    pub delegate: std::sync::Arc<dyn Delegate>,
    /// Per-execution time limit before falling back to the CPU.
    pub timeout: Option<Duration>,
}

/// What happened to a placed partition so far (for metrics, the allowlist and the CLI).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionReport {
    pub delegate: String,
    pub nodes: Vec<usize>,
    /// Set when compile failed: the partition runs on the CPU only.
    pub compile_error: Option<String>,
    pub runs: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    /// Wall time spent in successful delegate executions.
    pub delegate_wall: Duration,
    /// Sum of device times reported by the delegate.
    pub device_time: Duration,
    /// Wall time spent re-running the partition on the CPU (fallbacks and validation).
    pub cpu_wall: Duration,
    /// Validation runs (delegate and CPU both run and compared).
    pub validations: u64,
    /// Largest element difference seen in validation, relative to the CPU output's
    /// largest magnitude (float) or in quantization steps (integer).
    pub max_validation_error: f64,
}
