//! The plan executor: prepares each subgraph into a list of steps over one planned arena,
//! then runs them.
//!
//! Preparation walks nodes in order, asking the [`OpResolver`] for a kernel with the
//! shapes known so far. Nodes whose inputs are all known values are evaluated right
//! there (constant folding: DEQUANTIZE of fp16 weights, DENSIFY, shape arithmetic), so
//! they cost nothing per invoke. Nodes whose output shape depends on runtime values are
//! prepared again at every run ("lazy" steps) and write to heap buffers. Everything else
//! lives in the arena planned by [`crate::planner`].
//!
//! Control flow (IF, WHILE, CALL_ONCE) and resource variables (VAR_HANDLE, READ_VARIABLE,
//! ASSIGN_VARIABLE) are run by the executor itself, since they call subgraphs or touch
//! interpreter-wide state.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::delegate::{CompiledPartition, PartitionCtx, PartitionReport, PlacedPartition};
use crate::error::{KernelError, RunError};
use crate::kernel::{OpKernel, OpResolver, PrepareCtx, TensorMeta};
use crate::model::{Model, Node, Subgraph};
use crate::ops::{BuiltinOp, OpKind, OpOptions};
use crate::planner::{self, ArenaPlan, Lifetime};
use crate::tensor::{AlignedBuf, DType, Tensor, TensorView, TensorViewMut, element_count};

/// Tuning knobs of one interpreter instance.
#[derive(Clone, Debug)]
pub struct InterpreterOptions {
    /// Threads kernels may use.
    pub threads: usize,
    /// Evaluate nodes with constant inputs once at prepare time.
    pub fold_constants: bool,
    /// Upper bound on WHILE iterations, so a hostile model cannot spin forever.
    pub max_while_iterations: usize,
    /// Maximum nesting of subgraph calls.
    pub max_call_depth: usize,
    /// Upper bound on one subgraph's planned arena (the daemon sets it from quotas).
    pub max_arena_bytes: usize,
}

impl Default for InterpreterOptions {
    fn default() -> Self {
        InterpreterOptions {
            threads: 1,
            fold_constants: true,
            max_while_iterations: 1_000_000,
            max_call_depth: 16,
            max_arena_bytes: 2 << 30,
        }
    }
}

/// Time spent in one step over all invokes since profiling was enabled.
#[derive(Clone, Debug)]
pub struct StepProfile {
    pub subgraph: usize,
    pub node: usize,
    pub op: String,
    pub kernel: String,
    pub total: Duration,
    pub count: u64,
}

enum Storage {
    /// Omitted optional tensor, or a tensor no step touches.
    Absent,
    /// Constant data from the model.
    Const,
    /// Owned buffer: folded constants, dynamic-shape tensors, variables, resource handles.
    Heap(AlignedBuf),
    Arena(Range<usize>),
}

enum Step {
    Kernel {
        node: usize,
        kernel: Box<dyn OpKernel>,
    },
    /// Prepared at every run because an output shape depends on runtime values.
    Lazy {
        node: usize,
    },
    If {
        node: usize,
        then_sg: usize,
        else_sg: usize,
    },
    While {
        node: usize,
        cond_sg: usize,
        body_sg: usize,
    },
    CallOnce {
        node: usize,
        init_sg: usize,
    },
    ReadVariable {
        node: usize,
    },
    AssignVariable {
        node: usize,
    },
    /// Nodes placed on a delegate; `fallback` holds their CPU steps, run when the
    /// delegate is missing, fails, times out, or to validate it.
    Partition {
        placement: usize,
        compiled: Option<Box<dyn CompiledPartition>>,
        fallback: Vec<Step>,
    },
}

impl Step {
    fn node(&self) -> usize {
        match self {
            Step::Kernel { node, .. }
            | Step::Lazy { node }
            | Step::If { node, .. }
            | Step::While { node, .. }
            | Step::CallOnce { node, .. }
            | Step::ReadVariable { node }
            | Step::AssignVariable { node } => *node,
            Step::Partition { fallback, .. } => fallback.first().map_or(0, Step::node),
        }
    }

    /// Nodes this step runs (one, or all of a partition's).
    fn nodes(&self) -> Vec<usize> {
        match self {
            Step::Partition { fallback, .. } => fallback.iter().map(Step::node).collect(),
            other => vec![other.node()],
        }
    }
}

struct SubgraphRuntime {
    input_shapes: Vec<Vec<usize>>,
    shapes: Vec<Vec<usize>>,
    storage: Vec<Storage>,
    arena: AlignedBuf,
    plan: ArenaPlan,
    steps: Vec<Step>,
    timings: Vec<(Duration, u64)>,
}

/// Resource variables shared by all subgraphs of one interpreter.
#[derive(Default)]
struct Variables {
    ids: HashMap<(String, String), i32>,
    values: Vec<Option<Tensor>>,
}

impl Variables {
    fn handle(&mut self, container: &str, shared_name: &str) -> i32 {
        let next = self.values.len() as i32;
        let id = *self
            .ids
            .entry((container.to_string(), shared_name.to_string()))
            .or_insert(next);
        if id == next {
            self.values.push(None);
        }
        id
    }
}

/// Runs one model. Not `Sync`: one interpreter serves one caller at a time; the daemon
/// keeps a pool of them per model.
pub struct Interpreter {
    model: Arc<Model>,
    resolver: Arc<dyn OpResolver>,
    options: InterpreterOptions,
    runtimes: Vec<Option<SubgraphRuntime>>,
    variables: Variables,
    call_once_done: HashSet<usize>,
    depth: usize,
    profiling: bool,
    placements: Vec<PlacedPartition>,
    reports: Vec<PartitionReport>,
    validate: bool,
    /// Set when the stored input shapes are placeholders of dynamic dimensions that the
    /// model cannot be prepared with: the shapes to start resizing from, and why.
    deferred: Option<(Vec<Vec<usize>>, String)>,
}

fn kernel_err(subgraph: usize, node: &Node, source: KernelError) -> RunError {
    RunError::Node {
        subgraph,
        node: node.index,
        op: node.op.to_string(),
        error: source,
    }
}

/// Largest single tensor the interpreter allocates. A corrupted or hostile model can
/// name any shape; refusing it here turns what would be an allocation abort (the whole
/// daemon gone) into an error for that one model.
pub const MAX_TENSOR_BYTES: usize = 1 << 30;

fn byte_len(dtype: DType, shape: &[usize]) -> Result<usize, KernelError> {
    element_count(shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&n| n <= MAX_TENSOR_BYTES)
        .ok_or_else(|| {
            KernelError::shape(format!(
                "shape {shape:?} of {dtype} exceeds the {MAX_TENSOR_BYTES}-byte tensor limit"
            ))
        })
}

impl Interpreter {
    /// Prepares subgraph 0 with the model's stored input shapes.
    pub fn new(
        model: Arc<Model>,
        resolver: Arc<dyn OpResolver>,
        options: InterpreterOptions,
    ) -> Result<Interpreter, RunError> {
        let n = model.subgraphs.len();
        let mut it = Interpreter {
            model,
            resolver,
            options,
            runtimes: (0..n).map(|_| None).collect(),
            variables: Variables::default(),
            call_once_done: HashSet::new(),
            depth: 0,
            profiling: false,
            placements: Vec::new(),
            reports: Vec::new(),
            validate: false,
            deferred: None,
        };
        it.prepare_initial()?;
        Ok(it)
    }

    /// Prepares the model with some partitions placed on delegates. Every partition
    /// keeps its CPU kernels: compile failures, execution errors and timeouts fall back
    /// to them and are recorded in [`Interpreter::partition_reports`].
    pub fn with_placement(
        model: Arc<Model>,
        resolver: Arc<dyn OpResolver>,
        options: InterpreterOptions,
        placements: Vec<PlacedPartition>,
    ) -> Result<Interpreter, RunError> {
        let n = model.subgraphs.len();
        for p in &placements {
            let sg = model
                .subgraphs
                .get(p.partition.subgraph)
                .ok_or_else(|| RunError::Graph {
                    subgraph: p.partition.subgraph,
                    what: "placement names a missing subgraph".into(),
                })?;
            if p.partition.nodes.is_empty()
                || p.partition.nodes.iter().any(|&i| i >= sg.nodes.len())
            {
                return Err(RunError::Graph {
                    subgraph: p.partition.subgraph,
                    what: format!(
                        "placement on {} has invalid nodes {:?}",
                        p.delegate.name(),
                        p.partition.nodes
                    ),
                });
            }
        }
        let reports = placements
            .iter()
            .map(|p| PartitionReport {
                delegate: p.delegate.name().to_string(),
                nodes: p.partition.nodes.clone(),
                ..Default::default()
            })
            .collect();
        let mut it = Interpreter {
            model,
            resolver,
            options,
            runtimes: (0..n).map(|_| None).collect(),
            variables: Variables::default(),
            call_once_done: HashSet::new(),
            depth: 0,
            profiling: false,
            placements,
            reports,
            validate: false,
            deferred: None,
        };
        it.prepare_initial()?;
        Ok(it)
    }

    /// In validation mode every delegate execution is followed by the CPU fallback on the
    /// same inputs; outputs are compared (recorded in the reports) and the CPU's are kept.
    pub fn set_validation(&mut self, on: bool) {
        self.validate = on;
    }

    /// Per placed partition: runs, failures, fallbacks, times, validation error.
    pub fn partition_reports(&self) -> &[PartitionReport] {
        &self.reports
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    fn default_input_shapes(&self, si: usize) -> Vec<Vec<usize>> {
        let sg = &self.model.subgraphs[si];
        sg.inputs
            .iter()
            .map(|&t| sg.tensors[t].shape.clone())
            .collect()
    }

    fn main(&self) -> Result<&SubgraphRuntime, RunError> {
        self.runtimes
            .first()
            .and_then(|r| r.as_ref())
            .ok_or_else(|| RunError::Graph {
                subgraph: 0,
                what: match &self.deferred {
                    Some((_, why)) => format!(
                        "the model has dynamic input shapes and cannot run with its \
                         placeholder shapes ({why}); resize the inputs first"
                    ),
                    None => "subgraph 0 is not prepared".into(),
                },
            })
    }

    /// Prepares subgraph 0 with the stored input shapes. Models with dynamic input
    /// dimensions often store placeholders (1 where the signature says -1) that no
    /// kernel accepts, e.g. a [1, 1] audio buffer before a 512-wide convolution; such a
    /// model is prepared on its first resize instead of being refused.
    fn prepare_initial(&mut self) -> Result<(), RunError> {
        let shapes = self.default_input_shapes(0);
        match self.prepare_subgraph(0, shapes.clone()) {
            Ok(()) => Ok(()),
            Err(e) if self.has_dynamic_inputs() => {
                tracing::debug!("deferring prepare until inputs are resized: {e}");
                self.deferred = Some((shapes, e.to_string()));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn has_dynamic_inputs(&self) -> bool {
        let sg = &self.model.subgraphs[0];
        sg.inputs.iter().any(|&t| {
            sg.tensors[t]
                .shape_signature
                .as_ref()
                .is_some_and(|sig| sig.iter().any(|&d| d < 0))
        })
    }

    /// Current input shapes: the prepared ones, or the placeholders while deferred.
    fn current_input_shapes(&self) -> Result<Vec<Vec<usize>>, RunError> {
        match &self.deferred {
            Some((shapes, _)) if self.runtimes[0].is_none() => Ok(shapes.clone()),
            _ => Ok(self.main()?.input_shapes.clone()),
        }
    }

    pub fn input_count(&self) -> usize {
        self.model.subgraphs[0].inputs.len()
    }

    pub fn output_count(&self) -> usize {
        self.model.subgraphs[0].outputs.len()
    }

    /// dtype and current shape of input `i`.
    pub fn input_info(&self, i: usize) -> Result<(DType, Vec<usize>), RunError> {
        let sg = &self.model.subgraphs[0];
        let t = *sg.inputs.get(i).ok_or_else(|| RunError::Input {
            index: i,
            what: format!("model has {} inputs", sg.inputs.len()),
        })?;
        let shape = match self.runtimes[0].as_ref() {
            Some(rt) => rt.shapes[t].clone(),
            None => self.current_input_shapes()?[i].clone(),
        };
        Ok((sg.tensors[t].dtype, shape))
    }

    /// Changes the shape of input `i` and prepares the model again.
    pub fn resize_input(&mut self, i: usize, shape: Vec<usize>) -> Result<(), RunError> {
        let mut shapes = self.current_input_shapes()?;
        let slot = shapes.get_mut(i).ok_or_else(|| RunError::Input {
            index: i,
            what: "no such input".into(),
        })?;
        if *slot == shape && self.runtimes[0].is_some() {
            return Ok(());
        }
        let sg = &self.model.subgraphs[0];
        let def = &sg.tensors[sg.inputs[i]];
        if let Some(sig) = &def.shape_signature {
            let compatible = sig.len() == shape.len()
                && sig
                    .iter()
                    .zip(&shape)
                    .all(|(&s, &d)| s < 0 || s as usize == d);
            if !compatible {
                return Err(RunError::Input {
                    index: i,
                    what: format!("shape {shape:?} does not fit the signature {sig:?}"),
                });
            }
        } else if def.shape.len() != shape.len() {
            return Err(RunError::Input {
                index: i,
                what: format!("shape {shape:?} has a different rank than {:?}", def.shape),
            });
        }
        *slot = shape;
        match self.prepare_subgraph(0, shapes.clone()) {
            Ok(()) => {
                self.deferred = None;
                Ok(())
            }
            // Several dynamic inputs are resized one at a time: the model may only
            // prepare once all of them have their real shapes.
            Err(e) if self.deferred.is_some() => {
                self.deferred = Some((shapes, e.to_string()));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Copies `bytes` into input `i`; the length must match the input's current shape.
    pub fn set_input(&mut self, i: usize, bytes: &[u8]) -> Result<(), RunError> {
        let sg = &self.model.subgraphs[0];
        let t = *sg.inputs.get(i).ok_or_else(|| RunError::Input {
            index: i,
            what: format!("model has {} inputs", sg.inputs.len()),
        })?;
        let dtype = sg.tensors[t].dtype;
        self.main()?;
        let rt = self.runtimes[0].as_mut().ok_or_else(|| RunError::Graph {
            subgraph: 0,
            what: "not prepared".into(),
        })?;
        write_tensor(rt, t, dtype, bytes).map_err(|e| RunError::Input {
            index: i,
            what: e.to_string(),
        })
    }

    /// Runs subgraph 0 on the inputs set so far.
    pub fn invoke(&mut self) -> Result<(), RunError> {
        self.main()?;
        let mut rt = self.runtimes[0].take().ok_or_else(|| RunError::Graph {
            subgraph: 0,
            what: "not prepared".into(),
        })?;
        let result = self.run_steps(0, &mut rt);
        self.runtimes[0] = Some(rt);
        result
    }

    /// A view of output `i` after `invoke`.
    pub fn output(&self, i: usize) -> Result<TensorView<'_>, RunError> {
        let sg = &self.model.subgraphs[0];
        let t = *sg.outputs.get(i).ok_or_else(|| RunError::Output {
            index: i,
            what: format!("model has {} outputs", sg.outputs.len()),
        })?;
        let rt = self.main()?;
        Ok(TensorView {
            dtype: sg.tensors[t].dtype,
            shape: &rt.shapes[t],
            quant: sg.tensors[t].quant.as_ref(),
            bytes: tensor_bytes(&self.model, sg, rt, t),
        })
    }

    /// Resizes inputs as needed, sets them, invokes, and returns owned outputs.
    pub fn run(&mut self, inputs: &[TensorView<'_>]) -> Result<Vec<Tensor>, RunError> {
        if inputs.len() != self.input_count() {
            return Err(RunError::Input {
                index: inputs.len(),
                what: format!(
                    "model takes {} inputs, got {}",
                    self.input_count(),
                    inputs.len()
                ),
            });
        }
        for (i, x) in inputs.iter().enumerate() {
            let (dtype, shape) = self.input_info(i)?;
            if x.dtype != dtype {
                return Err(RunError::Input {
                    index: i,
                    what: format!("expected {dtype}, got {}", x.dtype),
                });
            }
            if x.shape != shape.as_slice() {
                self.resize_input(i, x.shape.to_vec())?;
            }
            self.set_input(i, x.bytes)?;
        }
        self.invoke()?;
        (0..self.output_count())
            .map(|i| self.output(i).map(|v| v.to_owned_tensor()))
            .collect()
    }

    /// Keys of the model's signatures, in model order.
    pub fn signature_keys(&self) -> Vec<&str> {
        self.model
            .signatures
            .iter()
            .map(|s| s.key.as_str())
            .collect()
    }

    /// Runs the signature `key` on inputs given by name and returns its outputs by name,
    /// in the signature's order. A signature may name any subgraph; it runs on this
    /// interpreter's state (variables, CALL_ONCE), like LiteRT's signature runners.
    pub fn run_signature(
        &mut self,
        key: &str,
        inputs: &[(&str, TensorView<'_>)],
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let model = self.model.clone();
        let sig = model
            .signatures
            .iter()
            .find(|s| s.key == key)
            .ok_or_else(|| RunError::Graph {
                subgraph: 0,
                what: format!("model has no signature {key:?}"),
            })?;
        let si = sig.subgraph;
        let sg = &model.subgraphs[si];
        if let Some((name, _)) = inputs
            .iter()
            .find(|(n, _)| !sig.inputs.iter().any(|(s, _)| s == n))
        {
            return Err(RunError::Input {
                index: 0,
                what: format!("signature {key:?} has no input {name:?}"),
            });
        }
        let mut args = Vec::with_capacity(sg.inputs.len());
        for (index, &t) in sg.inputs.iter().enumerate() {
            let (name, _) =
                sig.inputs
                    .iter()
                    .find(|(_, st)| *st == t)
                    .ok_or_else(|| RunError::Input {
                        index,
                        what: format!("signature {key:?} does not name subgraph input {index}"),
                    })?;
            let (_, view) =
                inputs
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| RunError::Input {
                        index,
                        what: format!("missing input {name:?} of signature {key:?}"),
                    })?;
            let def = &sg.tensors[t];
            if view.dtype != def.dtype {
                return Err(RunError::Input {
                    index,
                    what: format!("{name:?}: expected {}, got {}", def.dtype, view.dtype),
                });
            }
            if view.shape.len() != def.shape.len() {
                return Err(RunError::Input {
                    index,
                    what: format!(
                        "{name:?}: shape {:?} has a different rank than {:?}",
                        view.shape, def.shape
                    ),
                });
            }
            args.push(view.to_owned_tensor());
        }
        let outs = self.call_subgraph(si, args)?;
        sig.outputs
            .iter()
            .map(|(name, t)| {
                let k = sg
                    .outputs
                    .iter()
                    .position(|o| o == t)
                    .ok_or_else(|| RunError::Output {
                        index: 0,
                        what: format!("signature output {name:?} is not a subgraph output"),
                    })?;
                let value = outs.get(k).cloned().ok_or_else(|| RunError::Output {
                    index: k,
                    what: "missing result".into(),
                })?;
                Ok((name.clone(), value))
            })
            .collect()
    }

    /// Bytes of planned arena memory over all prepared subgraphs.
    pub fn arena_bytes(&self) -> usize {
        self.runtimes
            .iter()
            .flatten()
            .map(|r| r.plan.high_water)
            .sum()
    }

    /// Bytes held outside the arena: folded constants, dynamic tensors and variables.
    pub fn heap_bytes(&self) -> usize {
        let storage: usize = self
            .runtimes
            .iter()
            .flatten()
            .flat_map(|r| r.storage.iter())
            .map(|s| match s {
                Storage::Heap(b) => b.len(),
                _ => 0,
            })
            .sum();
        let vars: usize = self
            .variables
            .values
            .iter()
            .flatten()
            .map(|t| t.data.len())
            .sum();
        storage + vars
    }

    /// Arena layout of subgraph `si`, for debugging.
    pub fn dump_arena(&self, si: usize) -> Option<String> {
        let rt = self.runtimes.get(si)?.as_ref()?;
        Some(format!("subgraph {si}: {}", rt.plan.dump(&[])))
    }

    /// Starts (or stops) recording time per step; enabling clears old figures.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        for rt in self.runtimes.iter_mut().flatten() {
            rt.timings.iter_mut().for_each(|t| *t = (Duration::ZERO, 0));
        }
    }

    /// Per-step timings in run order (subgraph 0 first).
    pub fn profile(&self) -> Vec<StepProfile> {
        let mut out = Vec::new();
        for (si, rt) in self.runtimes.iter().enumerate() {
            let Some(rt) = rt else { continue };
            let sg = &self.model.subgraphs[si];
            for (step, &(total, count)) in rt.steps.iter().zip(&rt.timings) {
                if count == 0 {
                    continue;
                }
                let node = &sg.nodes[step.node()];
                let kernel = match step {
                    Step::Kernel { kernel, .. } => kernel.name().to_string(),
                    Step::Lazy { .. } => "lazy".into(),
                    _ => "control".into(),
                };
                out.push(StepProfile {
                    subgraph: si,
                    node: node.index,
                    op: node.op.to_string(),
                    kernel,
                    total,
                    count,
                });
            }
        }
        out
    }

    /// Resolved shape of every tensor of subgraph `si` after prepare, for the
    /// scheduler's partitioner and cost model (`None` when `si` is not prepared).
    pub fn tensor_shapes(&self, si: usize) -> Option<&[Vec<usize>]> {
        self.runtimes
            .get(si)?
            .as_ref()
            .map(|rt| rt.shapes.as_slice())
    }

    /// Nodes of subgraph `si` that run at every invoke, in run order. Nodes folded at
    /// prepare (constant inputs) are absent: placing them anywhere costs nothing.
    pub fn run_nodes(&self, si: usize) -> Option<Vec<usize>> {
        let rt = self.runtimes.get(si)?.as_ref()?;
        Some(rt.steps.iter().flat_map(Step::nodes).collect())
    }

    /// Value of tensor `t` of subgraph `si` when known at prepare time: a model constant
    /// or the output of a folded node.
    pub fn prepared_value(&self, si: usize, t: usize) -> Option<&[u8]> {
        let rt = self.runtimes.get(si)?.as_ref()?;
        let sg = self.model.subgraphs.get(si)?;
        let def = sg.tensors.get(t)?;
        match rt.storage.get(t)? {
            Storage::Const => def.data.as_ref().map(|d| d.as_slice()),
            Storage::Heap(b) if !def.is_variable => {
                let produced_by_step = rt.steps.iter().flat_map(Step::nodes).any(|n| {
                    sg.nodes
                        .get(n)
                        .is_some_and(|node| node.outputs.contains(&t))
                });
                (!produced_by_step && !sg.inputs.contains(&t)).then(|| b.as_slice())
            }
            _ => None,
        }
    }

    /// Number of steps in subgraph 0 that run per invoke (after folding).
    pub fn step_count(&self) -> usize {
        self.runtimes[0].as_ref().map_or(0, |r| r.steps.len())
    }

    // ---- preparation -------------------------------------------------------------

    fn prepare_subgraph(
        &mut self,
        si: usize,
        input_shapes: Vec<Vec<usize>>,
    ) -> Result<(), RunError> {
        if self.depth > self.options.max_call_depth {
            return Err(RunError::Graph {
                subgraph: si,
                what: "subgraph calls nest too deeply".into(),
            });
        }
        let model = self.model.clone();
        let sg = &model.subgraphs[si];
        if input_shapes.len() != sg.inputs.len() {
            return Err(RunError::Graph {
                subgraph: si,
                what: format!(
                    "called with {} inputs, takes {}",
                    input_shapes.len(),
                    sg.inputs.len()
                ),
            });
        }
        let n = sg.tensors.len();
        let mut shapes: Vec<Vec<usize>> = sg.tensors.iter().map(|t| t.shape.clone()).collect();
        for (&t, s) in sg.inputs.iter().zip(&input_shapes) {
            shapes[t] = s.clone();
        }
        let mut storage: Vec<Storage> = sg
            .tensors
            .iter()
            .map(|t| {
                if t.is_const() {
                    Storage::Const
                } else {
                    Storage::Absent
                }
            })
            .collect();
        // Tensors whose shape is only known at run time.
        let mut dynamic = vec![false; n];
        let input_set: HashSet<usize> = sg.inputs.iter().copied().collect();
        for (t, def) in sg.tensors.iter().enumerate() {
            // Old-style variable tensors (e.g. LSTM state): persistent, zero-initialised.
            if def.is_variable && !def.is_const() && !input_set.contains(&t) {
                let len = byte_len(def.dtype, &shapes[t]).map_err(|e| RunError::Graph {
                    subgraph: si,
                    what: e.to_string(),
                })?;
                storage[t] = Storage::Heap(AlignedBuf::zeroed(len));
            }
        }
        let mut steps = Vec::new();
        self.depth += 1;
        let result = (|| {
            for node in &sg.nodes {
                let step =
                    self.prepare_node(si, sg, node, &mut shapes, &mut storage, &mut dynamic)?;
                if let Some(step) = step {
                    steps.push(step);
                }
            }
            Ok::<(), RunError>(())
        })();
        self.depth -= 1;
        result?;
        let steps = self.group_partitions(si, sg, steps, &shapes, &storage)?;

        // Plan the arena for every tensor not already placed.
        let last = steps.len();
        let mut first_use = vec![usize::MAX; n];
        let mut last_use = vec![0usize; n];
        let touch = |t: usize, step: usize, first: &mut Vec<usize>, lastv: &mut Vec<usize>| {
            first[t] = first[t].min(step);
            lastv[t] = lastv[t].max(step);
        };
        for &t in &sg.inputs {
            touch(t, 0, &mut first_use, &mut last_use);
        }
        for (si_step, step) in steps.iter().enumerate() {
            for n in step.nodes() {
                let node = &sg.nodes[n];
                for &t in node.inputs.iter().flatten().chain(&node.outputs) {
                    touch(t, si_step, &mut first_use, &mut last_use);
                }
            }
        }
        for &t in &sg.outputs {
            touch(t, last, &mut first_use, &mut last_use);
            first_use[t] = first_use[t].min(last);
        }
        let mut requests = Vec::new();
        for t in 0..n {
            if first_use[t] == usize::MAX || !matches!(storage[t], Storage::Absent) {
                continue;
            }
            if dynamic[t] {
                storage[t] = Storage::Heap(AlignedBuf::default());
                continue;
            }
            let size = byte_len(sg.tensors[t].dtype, &shapes[t]).map_err(|e| RunError::Graph {
                subgraph: si,
                what: format!("tensor {t}: {e}"),
            })?;
            requests.push(Lifetime {
                tensor: t,
                size,
                first_step: first_use[t],
                last_step: last_use[t],
            });
        }
        let plan = planner::plan(&requests);
        if plan.high_water > self.options.max_arena_bytes {
            return Err(RunError::Graph {
                subgraph: si,
                what: format!(
                    "the arena needs {} bytes, over the limit of {}",
                    plan.high_water, self.options.max_arena_bytes
                ),
            });
        }
        for (req, &off) in requests.iter().zip(&plan.offsets) {
            storage[req.tensor] = Storage::Arena(off..off + req.size);
        }
        let arena = AlignedBuf::zeroed(plan.high_water);
        let timings = vec![(Duration::ZERO, 0); steps.len()];
        self.runtimes[si] = Some(SubgraphRuntime {
            input_shapes,
            shapes,
            storage,
            arena,
            plan,
            steps,
            timings,
        });
        Ok(())
    }

    /// Folds the steps of each placed partition of subgraph `si` into one
    /// `Step::Partition` at the position of its first node, and compiles it.
    fn group_partitions(
        &mut self,
        si: usize,
        sg: &Subgraph,
        steps: Vec<Step>,
        shapes: &[Vec<usize>],
        storage: &[Storage],
    ) -> Result<Vec<Step>, RunError> {
        let mine: Vec<usize> = (0..self.placements.len())
            .filter(|&p| self.placements[p].partition.subgraph == si)
            .collect();
        if mine.is_empty() {
            return Ok(steps);
        }
        let mut owner: HashMap<usize, usize> = HashMap::new();
        for &p in &mine {
            for &n in &self.placements[p].partition.nodes {
                if owner.insert(n, p).is_some() {
                    return Err(RunError::Graph {
                        subgraph: si,
                        what: format!("node {n} is placed in two partitions"),
                    });
                }
            }
        }
        // A partition runs where its first node was: everything it reads from outside
        // must be produced before that point. Nodes folded at prepare produce
        // constants, available from the start.
        let stepped: HashSet<usize> = steps.iter().map(Step::node).collect();
        let mut producer: HashMap<usize, usize> = HashMap::new();
        for node in &sg.nodes {
            if !stepped.contains(&node.index) {
                continue;
            }
            for &t in &node.outputs {
                producer.insert(t, node.index);
            }
        }
        for &p in &mine {
            let part = &self.placements[p].partition;
            let first = part.nodes.iter().copied().min().unwrap_or(0);
            for &n in &part.nodes {
                for &t in sg.nodes[n].inputs.iter().flatten() {
                    if let Some(&pn) = producer.get(&t)
                        && !part.nodes.contains(&pn)
                        && pn > first
                    {
                        return Err(RunError::Graph {
                            subgraph: si,
                            what: format!(
                                "partition {:?} on {} reads tensor {t} produced later by node {pn}",
                                part.nodes,
                                self.placements[p].delegate.name()
                            ),
                        });
                    }
                }
            }
        }
        let mut out: Vec<Step> = Vec::new();
        let mut slot_of: HashMap<usize, usize> = HashMap::new();
        for step in steps {
            match owner.get(&step.node()) {
                None => out.push(step),
                Some(&p) => match slot_of.get(&p) {
                    Some(&slot) => {
                        if let Step::Partition { fallback, .. } = &mut out[slot] {
                            fallback.push(step);
                        }
                    }
                    None => {
                        slot_of.insert(p, out.len());
                        out.push(Step::Partition {
                            placement: p,
                            compiled: None,
                            fallback: vec![step],
                        });
                    }
                },
            }
        }
        let model = self.model.clone();
        for step in out.iter_mut() {
            let Step::Partition {
                placement,
                compiled,
                fallback,
            } = step
            else {
                continue;
            };
            let placed = &self.placements[*placement];
            let report = &mut self.reports[*placement];
            if fallback.iter().any(|s| !matches!(s, Step::Kernel { .. })) {
                report.compile_error =
                    Some("partition has dynamic shapes or control flow; runs on the CPU".into());
                continue;
            }
            let constant = |t: usize| -> Option<&[u8]> {
                match &storage[t] {
                    Storage::Const | Storage::Heap(_) if !sg.tensors[t].is_variable => {
                        Some(known_bytes(sg, storage, t))
                    }
                    _ => None,
                }
            };
            let ctx = PartitionCtx {
                model: &model,
                subgraph: sg,
                partition: &placed.partition,
                shapes,
                constant: &constant,
            };
            let _span =
                tracing::debug_span!("compile_partition", delegate = placed.delegate.name())
                    .entered();
            match placed.delegate.compile(&ctx) {
                Ok(c) => {
                    *compiled = Some(c);
                    report.compile_error = None;
                }
                Err(e) => {
                    tracing::warn!(delegate = placed.delegate.name(), error = %e, "partition falls back to the CPU");
                    report.compile_error = Some(e.to_string());
                }
            }
        }
        Ok(out)
    }

    fn prepare_node(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        shapes: &mut [Vec<usize>],
        storage: &mut [Storage],
        dynamic: &mut [bool],
    ) -> Result<Option<Step>, RunError> {
        let err = |e: KernelError| kernel_err(si, node, e);
        let input_shapes = |shapes: &[Vec<usize>]| -> Vec<Vec<usize>> {
            node.inputs
                .iter()
                .skip(1)
                .map(|t| t.map(|t| shapes[t].clone()).unwrap_or_default())
                .collect()
        };
        let any_dynamic = node.inputs.iter().flatten().any(|&t| dynamic[t]);
        match (&node.op, &node.options) {
            (
                OpKind::Builtin(BuiltinOp::VarHandle),
                OpOptions::VarHandle {
                    container,
                    shared_name,
                },
            ) => {
                let id = self.variables.handle(container, shared_name);
                let out = *node
                    .outputs
                    .first()
                    .ok_or_else(|| err(KernelError::invalid("VAR_HANDLE without output")))?;
                storage[out] = Storage::Heap(AlignedBuf::from_slice(&[id]));
                shapes[out] = vec![];
                return Ok(None);
            }
            (OpKind::Builtin(BuiltinOp::ReadVariable), _) => {
                for &o in &node.outputs {
                    let sig_dynamic = sg.tensors[o]
                        .shape_signature
                        .as_ref()
                        .is_some_and(|s| s.iter().any(|&d| d < 0));
                    if sig_dynamic {
                        dynamic[o] = true;
                    }
                }
                return Ok(Some(Step::ReadVariable { node: node.index }));
            }
            (OpKind::Builtin(BuiltinOp::AssignVariable), _) => {
                return Ok(Some(Step::AssignVariable { node: node.index }));
            }
            (OpKind::Builtin(BuiltinOp::CallOnce), OpOptions::CallOnce { init_subgraph }) => {
                self.ensure_prepared(*init_subgraph, vec![])?;
                return Ok(Some(Step::CallOnce {
                    node: node.index,
                    init_sg: *init_subgraph,
                }));
            }
            (
                OpKind::Builtin(BuiltinOp::If),
                OpOptions::If {
                    then_subgraph,
                    else_subgraph,
                },
            ) => {
                let branch_inputs = input_shapes(shapes);
                self.ensure_prepared(*then_subgraph, branch_inputs.clone())?;
                self.ensure_prepared(*else_subgraph, branch_inputs)?;
                let then_out = self.subgraph_output_shapes(*then_subgraph);
                let else_out = self.subgraph_output_shapes(*else_subgraph);
                for (k, &o) in node.outputs.iter().enumerate() {
                    match (then_out.get(k), else_out.get(k)) {
                        (Some(a), Some(b)) if a == b && !any_dynamic => shapes[o] = a.clone(),
                        _ => dynamic[o] = true,
                    }
                }
                return Ok(Some(Step::If {
                    node: node.index,
                    then_sg: *then_subgraph,
                    else_sg: *else_subgraph,
                }));
            }
            (
                OpKind::Builtin(BuiltinOp::While),
                OpOptions::While {
                    cond_subgraph,
                    body_subgraph,
                },
            ) => {
                let state: Vec<Vec<usize>> = node
                    .inputs
                    .iter()
                    .map(|t| t.map(|t| shapes[t].clone()).unwrap_or_default())
                    .collect();
                self.ensure_prepared(*cond_subgraph, state.clone())?;
                self.ensure_prepared(*body_subgraph, state.clone())?;
                let body_out = self.subgraph_output_shapes(*body_subgraph);
                for (k, &o) in node.outputs.iter().enumerate() {
                    match (state.get(k), body_out.get(k)) {
                        (Some(a), Some(b)) if a == b && !any_dynamic => shapes[o] = a.clone(),
                        _ => dynamic[o] = true,
                    }
                }
                return Ok(Some(Step::While {
                    node: node.index,
                    cond_sg: *cond_subgraph,
                    body_sg: *body_subgraph,
                }));
            }
            _ => {}
        }
        if any_dynamic {
            node.outputs.iter().for_each(|&o| dynamic[o] = true);
            return Ok(Some(Step::Lazy { node: node.index }));
        }
        let prepared = {
            let ctx = self.prepare_ctx(sg, node, shapes, storage, None);
            self.resolver.prepare(&ctx)
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(KernelError::NeedsValues) => {
                node.outputs.iter().for_each(|&o| dynamic[o] = true);
                return Ok(Some(Step::Lazy { node: node.index }));
            }
            Err(e) => return Err(err(e)),
        };
        if prepared.output_shapes.len() != node.outputs.len() {
            return Err(err(KernelError::invalid(format!(
                "kernel produced {} output shapes for {} outputs",
                prepared.output_shapes.len(),
                node.outputs.len()
            ))));
        }
        for (&o, s) in node.outputs.iter().zip(&prepared.output_shapes) {
            shapes[o] = s.clone();
        }
        let all_known = node.inputs.iter().flatten().all(|&t| {
            matches!(storage[t], Storage::Const | Storage::Heap(_)) && !sg.tensors[t].is_variable
        });
        let is_graph_output = node.outputs.iter().any(|o| sg.outputs.contains(o));
        if self.options.fold_constants && all_known && !node.inputs.is_empty() && !is_graph_output {
            // Constant folding: run the kernel now; its outputs become constants.
            let mut outs: Vec<AlignedBuf> = Vec::with_capacity(node.outputs.len());
            for &o in &node.outputs {
                outs.push(AlignedBuf::zeroed(
                    byte_len(sg.tensors[o].dtype, &shapes[o]).map_err(err)?,
                ));
            }
            {
                let inputs: Vec<Option<TensorView<'_>>> = node
                    .inputs
                    .iter()
                    .map(|t| {
                        t.map(|t| TensorView {
                            dtype: sg.tensors[t].dtype,
                            shape: &shapes[t],
                            quant: sg.tensors[t].quant.as_ref(),
                            bytes: known_bytes(sg, storage, t),
                        })
                    })
                    .collect();
                let mut outputs: Vec<TensorViewMut<'_>> = node
                    .outputs
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(&o, buf)| TensorViewMut {
                        dtype: sg.tensors[o].dtype,
                        shape: &shapes[o],
                        quant: sg.tensors[o].quant.as_ref(),
                        bytes: buf.as_mut_slice(),
                    })
                    .collect();
                prepared.kernel.eval(&inputs, &mut outputs).map_err(err)?;
            }
            for (&o, buf) in node.outputs.iter().zip(outs) {
                storage[o] = Storage::Heap(buf);
            }
            return Ok(None);
        }
        Ok(Some(Step::Kernel {
            node: node.index,
            kernel: prepared.kernel,
        }))
    }

    fn prepare_ctx<'a>(
        &self,
        sg: &'a Subgraph,
        node: &'a Node,
        shapes: &'a [Vec<usize>],
        storage: &'a [Storage],
        runtime_values: Option<&[Option<&'a [u8]>]>,
    ) -> PrepareCtx<'a> {
        let meta = |t: usize, data: Option<&'a [u8]>| TensorMeta {
            dtype: sg.tensors[t].dtype,
            shape: &shapes[t],
            quant: sg.tensors[t].quant.as_ref(),
            data,
            name: &sg.tensors[t].name,
        };
        let inputs = node
            .inputs
            .iter()
            .enumerate()
            .map(|(k, t)| {
                t.map(|t| {
                    let data = match runtime_values {
                        Some(values) => values.get(k).copied().flatten(),
                        None => match storage[t] {
                            Storage::Const | Storage::Heap(_) if !sg.tensors[t].is_variable => {
                                Some(known_bytes(sg, storage, t))
                            }
                            _ => None,
                        },
                    };
                    meta(t, data)
                })
            })
            .collect();
        let outputs = node.outputs.iter().map(|&t| meta(t, None)).collect();
        PrepareCtx {
            node,
            inputs,
            outputs,
            threads: self.options.threads,
        }
    }

    fn ensure_prepared(
        &mut self,
        si: usize,
        input_shapes: Vec<Vec<usize>>,
    ) -> Result<(), RunError> {
        let fresh = match &self.runtimes[si] {
            Some(rt) => rt.input_shapes != input_shapes,
            None => true,
        };
        if fresh {
            self.prepare_subgraph(si, input_shapes)?;
        }
        Ok(())
    }

    fn subgraph_output_shapes(&self, si: usize) -> Vec<Vec<usize>> {
        let sg = &self.model.subgraphs[si];
        match &self.runtimes[si] {
            Some(rt) => sg.outputs.iter().map(|&t| rt.shapes[t].clone()).collect(),
            None => vec![],
        }
    }

    // ---- running -----------------------------------------------------------------

    /// Runs subgraph `si` on owned inputs (used by control flow) and returns its outputs.
    fn call_subgraph(&mut self, si: usize, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        if self.depth >= self.options.max_call_depth {
            return Err(RunError::Graph {
                subgraph: si,
                what: "subgraph calls nest too deeply".into(),
            });
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape.clone()).collect();
        self.ensure_prepared(si, shapes)?;
        let model = self.model.clone();
        let sg = &model.subgraphs[si];
        let mut rt = self.runtimes[si].take().ok_or_else(|| RunError::Graph {
            subgraph: si,
            what: "recursive subgraph call".into(),
        })?;
        let result = (|| {
            for (k, (&t, x)) in sg.inputs.iter().zip(&inputs).enumerate() {
                write_tensor(&mut rt, t, sg.tensors[t].dtype, x.data.as_slice()).map_err(|e| {
                    RunError::Graph {
                        subgraph: si,
                        what: format!("input {k}: {e}"),
                    }
                })?;
            }
            self.depth += 1;
            let r = self.run_steps(si, &mut rt);
            self.depth -= 1;
            r?;
            Ok(sg
                .outputs
                .iter()
                .map(|&t| Tensor {
                    dtype: sg.tensors[t].dtype,
                    shape: rt.shapes[t].clone(),
                    data: AlignedBuf::from_bytes(tensor_bytes(&model, sg, &rt, t)),
                })
                .collect())
        })();
        self.runtimes[si] = Some(rt);
        result
    }

    fn run_steps(&mut self, si: usize, rt: &mut SubgraphRuntime) -> Result<(), RunError> {
        let model = self.model.clone();
        let sg = &model.subgraphs[si];
        let steps = std::mem::take(&mut rt.steps);
        let result = (|| {
            for (k, step) in steps.iter().enumerate() {
                let started = self.profiling.then(Instant::now);
                let node = &sg.nodes[step.node()];
                let _span =
                    tracing::trace_span!("node", subgraph = si, node = node.index, op = %node.op)
                        .entered();
                self.run_step(si, sg, node, step, rt)?;
                if let Some(t0) = started {
                    let slot = &mut rt.timings[k];
                    slot.0 += t0.elapsed();
                    slot.1 += 1;
                }
            }
            Ok(())
        })();
        rt.steps = steps;
        result
    }

    fn run_step(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        step: &Step,
        rt: &mut SubgraphRuntime,
    ) -> Result<(), RunError> {
        let err = |e: KernelError| kernel_err(si, node, e);
        match step {
            Step::Kernel { kernel, .. } => {
                with_node_io(sg, rt, node, kernel.mutated_inputs(), |ins, outs| {
                    kernel.eval(ins, outs)
                })
                .map_err(err)
            }
            Step::Lazy { .. } => {
                let prepared = {
                    let values: Vec<Option<&[u8]>> = node
                        .inputs
                        .iter()
                        .map(|t| t.map(|t| tensor_bytes(&self.model, sg, rt, t)))
                        .collect();
                    let ctx = self.prepare_ctx(sg, node, &rt.shapes, &rt.storage, Some(&values));
                    self.resolver.prepare(&ctx).map_err(err)?
                };
                for (&o, shape) in node.outputs.iter().zip(&prepared.output_shapes) {
                    let len = byte_len(sg.tensors[o].dtype, shape).map_err(err)?;
                    rt.shapes[o] = shape.clone();
                    match &mut rt.storage[o] {
                        Storage::Heap(buf) => buf.resize(len),
                        other => *other = Storage::Heap(AlignedBuf::zeroed(len)),
                    }
                }
                with_node_io(
                    sg,
                    rt,
                    node,
                    prepared.kernel.mutated_inputs(),
                    |ins, outs| prepared.kernel.eval(ins, outs),
                )
                .map_err(err)
            }
            Step::CallOnce { init_sg, .. } => {
                if self.call_once_done.insert(*init_sg) {
                    self.call_subgraph(*init_sg, vec![])?;
                }
                Ok(())
            }
            Step::If {
                then_sg, else_sg, ..
            } => {
                let cond_t = node
                    .inputs
                    .first()
                    .copied()
                    .flatten()
                    .ok_or_else(|| err(KernelError::invalid("IF without condition")))?;
                let cond = tensor_bytes(&self.model, sg, rt, cond_t)
                    .iter()
                    .any(|&b| b != 0);
                let args = self.collect_inputs(sg, rt, &node.inputs[1..]);
                let outs = self.call_subgraph(if cond { *then_sg } else { *else_sg }, args)?;
                store_outputs(sg, rt, &node.outputs, outs).map_err(err)
            }
            Step::While {
                cond_sg, body_sg, ..
            } => {
                let mut state = self.collect_inputs(sg, rt, &node.inputs);
                let mut iterations = 0usize;
                loop {
                    let c = self.call_subgraph(*cond_sg, state.clone())?;
                    let go = c
                        .first()
                        .is_some_and(|t| t.data.as_slice().iter().any(|&b| b != 0));
                    if !go {
                        break;
                    }
                    iterations += 1;
                    if iterations > self.options.max_while_iterations {
                        return Err(err(KernelError::invalid(format!(
                            "WHILE exceeded {} iterations",
                            self.options.max_while_iterations
                        ))));
                    }
                    state = self.call_subgraph(*body_sg, state)?;
                }
                store_outputs(sg, rt, &node.outputs, state).map_err(err)
            }
            Step::ReadVariable { .. } => {
                let id = self.resource_id(sg, rt, node).map_err(err)?;
                let value = self
                    .variables
                    .values
                    .get(id)
                    .and_then(|v| v.clone())
                    .ok_or_else(|| {
                        err(KernelError::invalid(format!(
                            "variable {id} read before assignment"
                        )))
                    })?;
                store_outputs(sg, rt, &node.outputs, vec![value]).map_err(err)
            }
            Step::Partition {
                placement,
                compiled,
                fallback,
            } => self.run_partition(si, sg, rt, *placement, compiled.as_deref(), fallback),
            Step::AssignVariable { .. } => {
                let id = self.resource_id(sg, rt, node).map_err(err)?;
                let value_t =
                    node.inputs.get(1).copied().flatten().ok_or_else(|| {
                        err(KernelError::invalid("ASSIGN_VARIABLE without value"))
                    })?;
                let value = Tensor {
                    dtype: sg.tensors[value_t].dtype,
                    shape: rt.shapes[value_t].clone(),
                    data: AlignedBuf::from_bytes(tensor_bytes(&self.model, sg, rt, value_t)),
                };
                let slot =
                    self.variables.values.get_mut(id).ok_or_else(|| {
                        err(KernelError::invalid(format!("unknown variable {id}")))
                    })?;
                *slot = Some(value);
                Ok(())
            }
        }
    }

    fn run_partition(
        &mut self,
        si: usize,
        sg: &Subgraph,
        rt: &mut SubgraphRuntime,
        placement: usize,
        compiled: Option<&dyn CompiledPartition>,
        fallback: &[Step],
    ) -> Result<(), RunError> {
        let Some(compiled) = compiled else {
            return self.run_fallback(si, sg, rt, placement, fallback);
        };
        let part = self.placements[placement].partition.clone();
        let deadline = self.placements[placement]
            .timeout
            .map(|t| Instant::now() + t);
        let inputs: Vec<Option<usize>> = part.inputs.iter().map(|&t| Some(t)).collect();
        let started = Instant::now();
        let result = with_io(sg, rt, &inputs, part.outputs.clone(), &[], |ins, outs| {
            let ins: Vec<TensorView<'_>> = ins.iter().flatten().copied().collect();
            Ok(compiled.execute(&ins, outs, deadline))
        })
        .map_err(|e| RunError::Graph {
            subgraph: si,
            what: e.to_string(),
        })?;
        let elapsed = started.elapsed();
        match result {
            Ok(exec) => {
                let report = &mut self.reports[placement];
                report.runs += 1;
                report.delegate_wall += elapsed;
                report.device_time += exec.device_time.unwrap_or(elapsed);
                if self.validate {
                    let delegate_out: Vec<Tensor> = part
                        .outputs
                        .iter()
                        .map(|&t| Tensor {
                            dtype: sg.tensors[t].dtype,
                            shape: rt.shapes[t].clone(),
                            data: AlignedBuf::from_bytes(tensor_bytes(&self.model, sg, rt, t)),
                        })
                        .collect();
                    self.run_fallback(si, sg, rt, placement, fallback)?;
                    let mut worst = 0f64;
                    for (t, d) in part.outputs.iter().zip(&delegate_out) {
                        let cpu = tensor_bytes(&self.model, sg, rt, *t);
                        worst = worst.max(output_error(d.dtype, d.data.as_slice(), cpu));
                    }
                    let report = &mut self.reports[placement];
                    report.validations += 1;
                    report.max_validation_error = report.max_validation_error.max(worst);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(delegate = %self.reports[placement].delegate, error = %e, "delegate failed; re-running the partition on the CPU");
                let report = &mut self.reports[placement];
                report.failures += 1;
                report.last_error = Some(e.to_string());
                self.run_fallback(si, sg, rt, placement, fallback)
            }
        }
    }

    fn run_fallback(
        &mut self,
        si: usize,
        sg: &Subgraph,
        rt: &mut SubgraphRuntime,
        placement: usize,
        fallback: &[Step],
    ) -> Result<(), RunError> {
        let started = Instant::now();
        for step in fallback {
            let node = &sg.nodes[step.node()];
            self.run_step(si, sg, node, step, rt)?;
        }
        self.reports[placement].cpu_wall += started.elapsed();
        Ok(())
    }

    fn resource_id(
        &self,
        sg: &Subgraph,
        rt: &SubgraphRuntime,
        node: &Node,
    ) -> Result<usize, KernelError> {
        let t = node
            .inputs
            .first()
            .copied()
            .flatten()
            .ok_or_else(|| KernelError::invalid("missing resource input"))?;
        let bytes = tensor_bytes(&self.model, sg, rt, t);
        let raw: [u8; 4] = bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KernelError::invalid("resource handle is not an int32"))?;
        usize::try_from(i32::from_le_bytes(raw))
            .map_err(|_| KernelError::invalid("negative resource id"))
    }

    fn collect_inputs(
        &self,
        sg: &Subgraph,
        rt: &SubgraphRuntime,
        tensors: &[Option<usize>],
    ) -> Vec<Tensor> {
        tensors
            .iter()
            .flatten()
            .map(|&t| Tensor {
                dtype: sg.tensors[t].dtype,
                shape: rt.shapes[t].clone(),
                data: AlignedBuf::from_bytes(tensor_bytes(&self.model, sg, rt, t)),
            })
            .collect()
    }
}

/// Bytes of a tensor whose value is known at prepare time (constant or heap).
fn known_bytes<'a>(sg: &'a Subgraph, storage: &'a [Storage], t: usize) -> &'a [u8] {
    match &storage[t] {
        Storage::Heap(b) => b.as_slice(),
        _ => sg.tensors[t].data.as_ref().map_or(&[], |d| d.as_slice()),
    }
}

fn tensor_bytes<'a>(
    _model: &'a Model,
    sg: &'a Subgraph,
    rt: &'a SubgraphRuntime,
    t: usize,
) -> &'a [u8] {
    match &rt.storage[t] {
        Storage::Const => sg.tensors[t].data.as_ref().map_or(&[], |d| d.as_slice()),
        Storage::Heap(b) => b.as_slice(),
        Storage::Arena(r) => &rt.arena.as_slice()[r.clone()],
        Storage::Absent => &[],
    }
}

/// Overwrites tensor `t` (an input or control-flow output) with `bytes`.
fn write_tensor(
    rt: &mut SubgraphRuntime,
    t: usize,
    dtype: DType,
    bytes: &[u8],
) -> Result<(), KernelError> {
    let expected = byte_len(dtype, &rt.shapes[t])?;
    if bytes.len() != expected {
        return Err(KernelError::shape(format!(
            "{dtype} tensor of shape {:?} takes {expected} bytes, got {}",
            rt.shapes[t],
            bytes.len()
        )));
    }
    match &mut rt.storage[t] {
        Storage::Arena(r) => rt.arena.as_mut_slice()[r.clone()].copy_from_slice(bytes),
        Storage::Heap(b) => *b = AlignedBuf::from_bytes(bytes),
        Storage::Const | Storage::Absent => {
            return Err(KernelError::invalid("tensor is not writable"));
        }
    }
    Ok(())
}

/// Writes control-flow results into the node's outputs, resizing dynamic ones.
fn store_outputs(
    sg: &Subgraph,
    rt: &mut SubgraphRuntime,
    outputs: &[usize],
    values: Vec<Tensor>,
) -> Result<(), KernelError> {
    if values.len() < outputs.len() {
        return Err(KernelError::invalid(format!(
            "{} results for {} outputs",
            values.len(),
            outputs.len()
        )));
    }
    for (&o, v) in outputs.iter().zip(values) {
        if v.dtype != sg.tensors[o].dtype {
            return Err(KernelError::dtype(sg.tensors[o].dtype.name(), v.dtype));
        }
        match &mut rt.storage[o] {
            Storage::Heap(b) => {
                *b = v.data;
                rt.shapes[o] = v.shape;
            }
            Storage::Arena(r) => {
                if v.shape != rt.shapes[o] {
                    return Err(KernelError::shape(format!(
                        "result of shape {:?} for output planned as {:?}",
                        v.shape, rt.shapes[o]
                    )));
                }
                rt.arena.as_mut_slice()[r.clone()].copy_from_slice(v.data.as_slice());
            }
            Storage::Const | Storage::Absent => {}
        }
    }
    Ok(())
}

/// Gives `f` read views of the node's inputs and write views of its outputs.
///
/// Outputs in the arena are carved out with `split_at_mut`, which proves to the compiler
/// that they are disjoint from each other and from every input; heap outputs are moved
/// out of the storage table for the duration of the call.
fn with_node_io<R>(
    sg: &Subgraph,
    rt: &mut SubgraphRuntime,
    node: &Node,
    mutated_inputs: &[usize],
    f: impl FnOnce(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    // Writable tensors: the node's outputs, then the inputs it updates in place.
    let mut written: Vec<usize> = node.outputs.clone();
    for &k in mutated_inputs {
        let t = node
            .inputs
            .get(k)
            .copied()
            .flatten()
            .ok_or_else(|| KernelError::invalid(format!("mutated input {k} is absent")))?;
        written.push(t);
    }
    with_io(sg, rt, &node.inputs, written, mutated_inputs, f)
}

/// Views of `input_tensors` (read) and `written` (write) tensors for one call. Inputs at
/// the positions in `skip_inputs` are passed as `None` (they are among `written`).
fn with_io<R>(
    sg: &Subgraph,
    rt: &mut SubgraphRuntime,
    input_tensors: &[Option<usize>],
    written: Vec<usize>,
    skip_inputs: &[usize],
    f: impl FnOnce(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    let SubgraphRuntime {
        shapes,
        storage,
        arena,
        ..
    } = rt;
    let mut taken: Vec<(usize, AlignedBuf)> = Vec::new();
    let mut arena_outs: Vec<(usize, Range<usize>)> = Vec::new();
    for (k, &o) in written.iter().enumerate() {
        match &mut storage[o] {
            Storage::Heap(b) => taken.push((k, std::mem::take(b))),
            Storage::Arena(r) => arena_outs.push((k, r.clone())),
            Storage::Const | Storage::Absent => {
                for (k, buf) in taken.drain(..) {
                    storage[written[k]] = Storage::Heap(buf);
                }
                return Err(KernelError::invalid(format!(
                    "output tensor {o} is not writable"
                )));
            }
        }
    }
    let result = (|| {
        let (out_slices, gaps) = split_arena(arena.as_mut_slice(), &arena_outs)?;
        let mut slots: Vec<Option<&mut [u8]>> = (0..written.len()).map(|_| None).collect();
        for ((k, _), s) in arena_outs.iter().zip(out_slices) {
            slots[*k] = Some(s);
        }
        for (k, buf) in taken.iter_mut() {
            slots[*k] = Some(buf.as_mut_slice());
        }
        let mut outputs = Vec::with_capacity(written.len());
        for (&o, slot) in written.iter().zip(slots) {
            let bytes = slot.ok_or_else(|| KernelError::invalid("output listed twice"))?;
            outputs.push(TensorViewMut {
                dtype: sg.tensors[o].dtype,
                shape: &shapes[o],
                quant: sg.tensors[o].quant.as_ref(),
                bytes,
            });
        }
        let mut inputs = Vec::with_capacity(input_tensors.len());
        for (k, t) in input_tensors.iter().enumerate() {
            let Some(t) = *t else {
                inputs.push(None);
                continue;
            };
            if skip_inputs.contains(&k) {
                inputs.push(None);
                continue;
            }
            let bytes: &[u8] = match &storage[t] {
                Storage::Const => sg.tensors[t].data.as_ref().map_or(&[], |d| d.as_slice()),
                Storage::Heap(b) => {
                    if written.contains(&t) {
                        return Err(KernelError::invalid(format!(
                            "tensor {t} is both input and output"
                        )));
                    }
                    b.as_slice()
                }
                Storage::Arena(r) => gaps.get(r)?,
                Storage::Absent => &[],
            };
            inputs.push(Some(TensorView {
                dtype: sg.tensors[t].dtype,
                shape: &shapes[t],
                quant: sg.tensors[t].quant.as_ref(),
                bytes,
            }));
        }
        f(&inputs, &mut outputs)
    })();
    for (k, buf) in taken {
        storage[written[k]] = Storage::Heap(buf);
    }
    result
}

/// Read-only pieces of the arena between the output ranges.
struct Gaps<'a> {
    pieces: Vec<(usize, &'a [u8])>,
}

impl<'a> Gaps<'a> {
    fn get(&self, r: &Range<usize>) -> Result<&'a [u8], KernelError> {
        for &(base, piece) in &self.pieces {
            if r.start >= base && r.end <= base + piece.len() {
                return Ok(&piece[r.start - base..r.end - base]);
            }
        }
        Err(KernelError::invalid(format!(
            "input range {r:?} overlaps an output"
        )))
    }
}

fn split_arena<'a>(
    arena: &'a mut [u8],
    outs: &[(usize, Range<usize>)],
) -> Result<(Vec<&'a mut [u8]>, Gaps<'a>), KernelError> {
    let mut order: Vec<usize> = (0..outs.len()).collect();
    order.sort_by_key(|&i| outs[i].1.start);
    let mut slices: Vec<Option<&'a mut [u8]>> = (0..outs.len()).map(|_| None).collect();
    let mut pieces = Vec::new();
    let mut rest = arena;
    let mut cursor = 0usize;
    for i in order {
        let r = &outs[i].1;
        if r.start < cursor || r.end > cursor + rest.len() {
            return Err(KernelError::invalid("overlapping output tensors"));
        }
        let (gap, tail) = rest.split_at_mut(r.start - cursor);
        let (out, tail) = tail.split_at_mut(r.len());
        pieces.push((cursor, &*gap));
        slices[i] = Some(out);
        rest = tail;
        cursor = r.end;
    }
    pieces.push((cursor, &*rest));
    let slices = slices.into_iter().flatten().collect();
    Ok((slices, Gaps { pieces }))
}

/// Largest difference between a delegate's output and the CPU's: relative to the CPU
/// output's largest magnitude for floats, in steps for integers.
fn output_error(dtype: DType, delegate: &[u8], cpu: &[u8]) -> f64 {
    if delegate.len() != cpu.len() {
        return f64::INFINITY;
    }
    match dtype {
        DType::F32 => {
            let (Ok(a), Ok(b)) = (
                bytemuck::try_cast_slice::<u8, f32>(delegate),
                bytemuck::try_cast_slice::<u8, f32>(cpu),
            ) else {
                return f64::INFINITY;
            };
            let scale = b
                .iter()
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(f32::MIN_POSITIVE) as f64;
            a.iter()
                .zip(b)
                .map(|(x, y)| {
                    if x.is_nan() != y.is_nan() {
                        f64::INFINITY
                    } else {
                        ((x - y).abs() as f64) / scale
                    }
                })
                .fold(0f64, |m, v| if v.is_nan() { m } else { m.max(v) })
        }
        DType::I8 => delegate
            .iter()
            .zip(cpu)
            .map(|(&x, &y)| ((x as i8 as i32) - (y as i8 as i32)).abs() as f64)
            .fold(0f64, f64::max),
        DType::U8 | DType::Bool => delegate
            .iter()
            .zip(cpu)
            .map(|(&x, &y)| ((x as i32) - (y as i32)).abs() as f64)
            .fold(0f64, f64::max),
        _ => {
            if delegate == cpu {
                0.0
            } else {
                f64::INFINITY
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::ModelBuilder;
    use crate::delegate::{
        Delegate, DelegateError, ExecReport, NodeSupportCtx, Partition, ProcessorKind, Support,
    };
    use crate::kernel::{FnKernel, PreparedKernel};
    use crate::tensor::TensorViewMut;

    /// Elementwise float ADD of same-shape tensors: enough to exercise the executor.
    struct AddOnly;

    fn add_into(a: &[f32], b: &[f32], out: &mut [f32], bias: f32) {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = x + y + bias;
        }
    }

    impl OpResolver for AddOnly {
        fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
            if ctx.op() != &OpKind::Builtin(BuiltinOp::Add) {
                return Err(KernelError::unsupported(ctx.op().to_string()));
            }
            let shape = ctx.input(0)?.shape.to_vec();
            Ok(PreparedKernel::new(
                vec![shape],
                FnKernel::new("add", |ins, outs| {
                    let a = crate::kernel::input(ins, 0)?.f32s()?;
                    let b = crate::kernel::input(ins, 1)?.f32s()?;
                    add_into(a, b, outs[0].f32s_mut()?, 0.0);
                    Ok(())
                }),
            ))
        }
    }

    #[derive(Clone, Copy)]
    enum Behaviour {
        Correct,
        Fail,
        OffByOne,
    }

    struct TestDelegate(Behaviour);

    struct Compiled {
        behaviour: Behaviour,
        /// (node's two input positions in the partition, or a constant) per node: the
        /// test graph is a chain x -> +c1 -> +c2, so the partition computes x + c1 + c2.
        constants: Vec<Vec<f32>>,
    }

    impl CompiledPartition for Compiled {
        fn execute(
            &self,
            inputs: &[TensorView<'_>],
            outputs: &mut [TensorViewMut<'_>],
            _deadline: Option<Instant>,
        ) -> Result<ExecReport, DelegateError> {
            let err = |what: String| DelegateError::Execute {
                delegate: "test".into(),
                what,
            };
            match self.behaviour {
                Behaviour::Fail => Err(err("injected failure".into())),
                b => {
                    let x = inputs[0].f32s().map_err(|e| err(e.to_string()))?;
                    let out = outputs[0].f32s_mut().map_err(|e| err(e.to_string()))?;
                    out.copy_from_slice(x);
                    for c in &self.constants {
                        for (o, v) in out.iter_mut().zip(c) {
                            *o += v;
                        }
                    }
                    if matches!(b, Behaviour::OffByOne) {
                        out.iter_mut().for_each(|o| *o += 1.0);
                    }
                    Ok(ExecReport {
                        device_time: Some(Duration::from_micros(5)),
                    })
                }
            }
        }
    }

    impl Delegate for TestDelegate {
        fn name(&self) -> &str {
            "test"
        }
        fn kind(&self) -> ProcessorKind {
            ProcessorKind::Npu
        }
        fn fingerprint(&self) -> String {
            "test-1".into()
        }
        fn supports(&self, ctx: &NodeSupportCtx<'_>) -> Support {
            if ctx.node.op == OpKind::Builtin(BuiltinOp::Add) {
                Support::Supported
            } else {
                Support::Unsupported("only ADD".into())
            }
        }
        fn compile(
            &self,
            ctx: &PartitionCtx<'_>,
        ) -> Result<Box<dyn CompiledPartition>, DelegateError> {
            let mut constants = Vec::new();
            for &n in &ctx.partition.nodes {
                let c = ctx.subgraph.nodes[n].inputs[1]
                    .and_then(|t| (ctx.constant)(t))
                    .ok_or_else(|| DelegateError::Compile {
                        delegate: "test".into(),
                        what: "second input must be constant".into(),
                    })?;
                constants.push(bytemuck::cast_slice::<u8, f32>(c).to_vec());
            }
            Ok(Box::new(Compiled {
                behaviour: self.0,
                constants,
            }))
        }
    }

    fn chain_model() -> Arc<Model> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4]);
        let c1 = sg.constant_f32("c1", &[4], &[1.0, 2.0, 3.0, 4.0]);
        let t = sg.tensor("t", DType::F32, &[4]);
        let c2 = sg.constant_f32("c2", &[4], &[10.0, 20.0, 30.0, 40.0]);
        let y = sg.tensor("y", DType::F32, &[4]);
        let add = OpKind::Builtin(BuiltinOp::Add);
        sg.op(
            add.clone(),
            &[Some(x), Some(c1)],
            &[t],
            OpOptions::Activation(Default::default()),
        );
        sg.op(
            add,
            &[Some(t), Some(c2)],
            &[y],
            OpOptions::Activation(Default::default()),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        Arc::new(Model::from_bytes(&mb.finish()).unwrap())
    }

    fn run_placed(b: Behaviour, validate: bool) -> (Vec<f32>, PartitionReport) {
        let model = chain_model();
        let partition = Partition::from_nodes(0, &model.subgraphs[0], vec![0, 1]);
        assert_eq!(partition.inputs, vec![0]);
        assert_eq!(partition.outputs, vec![4]);
        let placed = PlacedPartition {
            partition,
            delegate: Arc::new(TestDelegate(b)),
            timeout: None,
        };
        let mut it = Interpreter::with_placement(
            model,
            Arc::new(AddOnly),
            InterpreterOptions::default(),
            vec![placed],
        )
        .unwrap();
        it.set_validation(validate);
        let x = Tensor::from_f32(vec![4], &[0.5, 0.5, 0.5, 0.5]).unwrap();
        let out = it.run(&[x.view()]).unwrap();
        (
            out[0].view().f32s().unwrap().to_vec(),
            it.partition_reports()[0].clone(),
        )
    }

    const EXPECTED: [f32; 4] = [11.5, 22.5, 33.5, 44.5];

    #[test]
    fn cpu_only_runs_the_chain() {
        let mut it = Interpreter::new(
            chain_model(),
            Arc::new(AddOnly),
            InterpreterOptions::default(),
        )
        .unwrap();
        let x = Tensor::from_f32(vec![4], &[0.5; 4]).unwrap();
        let out = it.run(&[x.view()]).unwrap();
        assert_eq!(out[0].view().f32s().unwrap(), &EXPECTED);
        assert_eq!(it.step_count(), 2);
    }

    #[test]
    fn delegate_runs_the_partition() {
        let (y, r) = run_placed(Behaviour::Correct, false);
        assert_eq!(y, EXPECTED);
        assert_eq!((r.runs, r.failures), (1, 0));
        assert_eq!(r.device_time, Duration::from_micros(5));
    }

    #[test]
    fn failing_delegate_falls_back_to_cpu() {
        let (y, r) = run_placed(Behaviour::Fail, false);
        assert_eq!(y, EXPECTED);
        assert_eq!(r.failures, 1);
        assert!(r.last_error.unwrap().contains("injected failure"));
    }

    #[test]
    fn validation_catches_wrong_results_and_keeps_cpu_outputs() {
        let (y, r) = run_placed(Behaviour::OffByOne, true);
        assert_eq!(y, EXPECTED);
        assert_eq!(r.validations, 1);
        assert!(r.max_validation_error > 0.02, "{}", r.max_validation_error);
        let (_, ok) = run_placed(Behaviour::Correct, true);
        assert_eq!(ok.max_validation_error, 0.0);
    }

    #[test]
    fn invalid_placements_are_rejected() {
        let model = chain_model();
        let bad = PlacedPartition {
            partition: Partition {
                subgraph: 0,
                nodes: vec![7],
                inputs: vec![],
                outputs: vec![],
            },
            delegate: Arc::new(TestDelegate(Behaviour::Correct)),
            timeout: None,
        };
        assert!(
            Interpreter::with_placement(
                model,
                Arc::new(AddOnly),
                InterpreterOptions::default(),
                vec![bad]
            )
            .is_err()
        );
    }

    #[test]
    fn wrong_input_size_is_an_error_not_a_panic() {
        let mut it = Interpreter::new(
            chain_model(),
            Arc::new(AddOnly),
            InterpreterOptions::default(),
        )
        .unwrap();
        assert!(it.set_input(0, &[0u8; 3]).is_err());
        assert!(it.set_input(5, &[0u8; 16]).is_err());
        // A different rank cannot be a resize of a model without a shape signature.
        let x = Tensor::from_f32(vec![2, 2], &[0.0; 4]).unwrap();
        assert!(it.run(&[x.view()]).is_err());
        let i = Tensor::from_bytes(DType::I32, vec![4], &[0; 16]).unwrap();
        assert!(it.run(&[i.view()]).is_err());
        assert!(it.run(&[]).is_err());
    }
}
