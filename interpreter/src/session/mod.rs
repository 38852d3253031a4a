//! The mutable half of running a model: a [`Session`] holds one stream's state over a
//! shared [`Plan`]: arenas, heap (dynamic-shape) tensors, resource variables, CALL_ONCE
//! flags and old-style variable tensors. Opening one is a few allocations; it never
//! prepares anything the plan already has.
//!
//! Every byte a session allocates is counted against its [`SessionLimits`]; growth past
//! the limit (a resize, a dynamic tensor, a variable) is `RunError::Memory`, never an
//! allocation abort. Runs are bounded by a [`RunControl`] called between nodes.
//!
//! Layout: [`io`] hands steps their tensors (the hot path), [`control_flow`] runs IF,
//! WHILE, CALL_ONCE, variables and lazy steps, [`fallback`] runs delegate partitions with
//! their CPU fallback, [`memory`] counts bytes.

pub(crate) mod control_flow;
pub(crate) mod fallback;
pub(crate) mod io;
pub(crate) mod memory;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io::{HeapTensor, SgState, tensor_shape, tensor_view};
pub use memory::MemoryPool;
use memory::{MBuf, Meter};

use crate::control::RunControl;
use crate::delegate::{PartitionReport, ProcessorKind};
use crate::error::RunError;
use crate::model::Subgraph;
use crate::plan::prepare::kernel_err;
use crate::plan::steps::Step;
use crate::plan::{Plan, PrepareCx, Prepared};
use crate::tensor::{AlignedBuf, DType, Tensor, TensorView};

/// What one session may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Upper bound on arenas + heap tensors + variables of this session (the daemon sets
    /// it from the tenant's remaining quota).
    pub max_bytes: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max_bytes: 4 << 30 }
    }
}

/// A tensor value owned by the session: resource variables, control-flow state.
pub(crate) struct Value {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: MBuf,
}

/// One stage of the main subgraph: a placed partition on its delegate, or a run of CPU
/// steps between partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageInfo {
    pub processor: ProcessorKind,
    /// Delegate name ("cpu" for CPU stages).
    pub delegate: String,
    /// Nodes the stage runs, in order.
    pub nodes: Vec<usize>,
}

/// Where to run a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageTarget {
    /// On the processor the plan placed it on (falling back to the CPU on failure).
    Planned,
    /// On the CPU whatever the placement (migration).
    Cpu,
}

/// What running one stage did.
#[derive(Clone, Debug, PartialEq)]
pub struct StageReport {
    pub stage: usize,
    /// Where its results came from.
    pub processor: ProcessorKind,
    /// The stage was placed on a delegate but ran on the CPU (forced, failed, validating).
    pub fell_back: bool,
    pub wall: Duration,
    /// Nodes executed by this stage (loop iterations included).
    pub executed: u64,
}

/// Steps of one stage, and the placement it runs on (`None`: the CPU).
type StageRange = (Range<usize>, Option<usize>);

/// Per-session mutable state over a shared [`Plan`]. `Send`, not `Sync`: one caller at
/// a time.
pub struct Session {
    plan: Arc<Plan>,
    meter: Arc<Meter>,
    /// Per subgraph: its state at the shapes it last ran with.
    states: Vec<Option<SgState>>,
    /// Per subgraph: persistent variable tensors, kept across re-prepares.
    vars: Vec<Vec<MBuf>>,
    input_shapes: Vec<Vec<usize>>,
    /// Why subgraph 0 is not prepared yet (dynamic inputs waiting for a resize).
    deferred: Option<String>,
    variables: Vec<Option<Value>>,
    call_once_done: Vec<bool>,
    depth: usize,
    executed: u64,
    profiling: bool,
    validate: bool,
    reports: Vec<PartitionReport>,
    next_stage: usize,
}

fn input_err(index: usize, what: impl Into<String>) -> RunError {
    RunError::Input {
        index,
        what: what.into(),
    }
}

impl Session {
    pub(crate) fn new(plan: Arc<Plan>, limits: SessionLimits) -> Result<Session, RunError> {
        let n = plan.model().subgraphs.len();
        let mut s = Session {
            meter: Meter::new(limits.max_bytes),
            states: (0..n).map(|_| None).collect(),
            vars: (0..n).map(|_| Vec::new()).collect(),
            input_shapes: plan.inputs().iter().map(|t| t.shape.clone()).collect(),
            deferred: None,
            variables: (0..plan.var_count()).map(|_| None).collect(),
            call_once_done: vec![false; n],
            depth: 0,
            executed: 0,
            profiling: false,
            validate: false,
            reports: plan.partition_reports(),
            next_stage: 0,
            plan,
        };
        s.reset_reports();
        match s.plan.initial() {
            Ok(p) => {
                let p = p.clone();
                s.install(0, p)?;
            }
            Err(why) => s.deferred = Some(why.to_string()),
        }
        s.ensure_vars(0)?;
        Ok(s)
    }

    /// Session-local reports start from zero; compile results come from the plan.
    fn reset_reports(&mut self) {
        for r in self.reports.iter_mut() {
            *r = PartitionReport {
                delegate: std::mem::take(&mut r.delegate),
                nodes: std::mem::take(&mut r.nodes),
                compile_error: r.compile_error.take(),
                ..Default::default()
            };
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Model inputs and outputs.
    pub fn input_count(&self) -> usize {
        self.input_shapes.len()
    }

    pub fn output_count(&self) -> usize {
        self.plan.outputs().len()
    }

    /// Current shape of input `i`.
    pub fn input_shape(&self, i: usize) -> Result<&[usize], RunError> {
        self.input_shapes
            .get(i)
            .map(Vec::as_slice)
            .ok_or_else(|| input_err(i, format!("model has {} inputs", self.input_count())))
    }

    /// Changes the limit on this session's memory (e.g. the tenant's quota changed).
    /// Memory already held stays; growth is checked against the new limit.
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.meter.set_limit(limits.max_bytes);
    }

    /// Arena + heap tensors + variables, at the current shapes.
    pub fn memory_bytes(&self) -> usize {
        self.meter.used()
    }

    /// Counts this session's bytes in `pool` as well from now on (None: in no pool), or
    /// refuses with the figures when the pool cannot take what the session holds.
    pub fn set_memory_pool(&mut self, pool: Option<&MemoryPool>) -> Result<(), RunError> {
        self.meter.set_parent(pool.map(|p| p.meter.clone()), &|| {
            "the memory this session holds".into()
        })
    }

    /// In validation mode every delegate execution is followed by the CPU fallback on
    /// the same inputs; outputs are compared (recorded in the reports) and the CPU's kept.
    pub fn set_validation(&mut self, on: bool) {
        self.validate = on;
    }

    /// This session's partition reports (the plan aggregates over all sessions).
    pub fn partition_reports(&self) -> &[PartitionReport] {
        &self.reports
    }

    /// Makes `prepared` this session's state for subgraph `si`, with a fresh arena.
    pub(crate) fn install(&mut self, si: usize, prepared: Arc<Prepared>) -> Result<(), RunError> {
        // Release the old arena first: the new one is counted alone.
        self.states[si] = None;
        let arena = MBuf::zeroed(&self.meter, prepared.arena_bytes(), &|| {
            format!("the arena of subgraph {si}")
        })?;
        let heap = prepared
            .heap_tensors
            .iter()
            .map(|&t| HeapTensor {
                shape: vec![0; prepared.shapes.get(t).map_or(1, |s| s.len().max(1))],
                buf: MBuf::empty(&self.meter),
            })
            .collect();
        let timings = vec![(Duration::ZERO, 0); prepared.steps.len()];
        self.states[si] = Some(SgState {
            prepared,
            arena,
            heap,
            timings,
        });
        Ok(())
    }

    /// Allocates subgraph `si`'s persistent variable tensors on first use.
    pub(crate) fn ensure_vars(&mut self, si: usize) -> Result<(), RunError> {
        let wanted = self.plan.var_tensors(si);
        if self.vars[si].len() == wanted.len() {
            return Ok(());
        }
        let mut vars = Vec::with_capacity(wanted.len());
        for v in wanted {
            let mut buf = MBuf::zeroed(&self.meter, v.bytes, &|| {
                format!("variable tensor {} of subgraph {si}", v.tensor)
            })?;
            buf.as_mut_slice().fill(v.fill);
            vars.push(buf);
        }
        self.vars[si] = vars;
        Ok(())
    }

    fn main_state(&self) -> Result<&SgState, RunError> {
        self.states[0].as_ref().ok_or_else(|| self.not_prepared())
    }

    fn not_prepared(&self) -> RunError {
        RunError::Graph {
            subgraph: 0,
            what: match &self.deferred {
                Some(why) => format!(
                    "the model has dynamic input shapes and cannot run with its \
                     placeholder shapes ({why}); resize the inputs first"
                ),
                None => "subgraph 0 is not prepared".into(),
            },
        }
    }

    /// Explicit resize of input `i` (checked against the shape signature): the new shape
    /// set comes from the plan's shared cache, and this session's arena is re-planned
    /// within its limit.
    pub fn resize_input(&mut self, i: usize, shape: &[usize]) -> Result<(), RunError> {
        let info = self
            .plan
            .inputs()
            .get(i)
            .ok_or_else(|| input_err(i, "no such input"))?;
        if let Some(sig) = &info.signature {
            let compatible = sig.len() == shape.len()
                && sig
                    .iter()
                    .zip(shape)
                    .all(|(&s, &d)| s < 0 || s as usize == d);
            if !compatible {
                return Err(input_err(
                    i,
                    format!("shape {shape:?} does not fit the signature {sig:?}"),
                ));
            }
        } else if info.shape.len() != shape.len() {
            return Err(input_err(
                i,
                format!("shape {shape:?} has a different rank than {:?}", info.shape),
            ));
        }
        let mut shapes = self.input_shapes.clone();
        shapes[i] = shape.to_vec();
        self.resize_all(shapes)
    }

    /// Prepares subgraph 0 for `shapes` (once for all inputs that changed).
    fn resize_all(&mut self, shapes: Vec<Vec<usize>>) -> Result<(), RunError> {
        if shapes == self.input_shapes && self.states[0].is_some() {
            return Ok(());
        }
        let prepared = match self.plan.prepared(0, shapes.clone(), &mut PrepareCx::new()) {
            Ok(p) => p,
            // Several dynamic inputs are resized one at a time: the model may only
            // prepare once all of them have their real shapes.
            Err(e) if self.states[0].is_none() => {
                self.input_shapes = shapes;
                self.deferred = Some(e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let old = self.states[0].as_ref().map(|st| st.prepared.clone());
        if let Err(e) = self.install(0, prepared) {
            // Back to the shapes that fitted before (the memory they held is free again).
            if let Some(old) = old {
                let _ = self.install(0, old);
            }
            return Err(e);
        }
        self.input_shapes = shapes;
        self.deferred = None;
        self.next_stage = 0;
        let plan_reports = self.plan.partition_reports();
        for (mine, theirs) in self.reports.iter_mut().zip(plan_reports) {
            mine.compile_error = theirs.compile_error;
        }
        Ok(())
    }

    /// Copies `bytes` into input `i`; the length must match the input's current shape.
    pub fn set_input(&mut self, i: usize, bytes: &[u8]) -> Result<(), RunError> {
        let plan = self.plan.clone();
        let sg = &plan.model().subgraphs[0];
        let t = *sg
            .inputs
            .get(i)
            .ok_or_else(|| input_err(i, format!("model has {} inputs", sg.inputs.len())))?;
        if self.states[0].is_none() {
            return Err(self.not_prepared());
        }
        let st = self.states[0]
            .as_mut()
            .ok_or_else(|| input_err(i, "not prepared"))?;
        control_flow::write_tensor(sg, st, &mut self.vars[0], t, bytes)
            .map_err(|e| input_err(i, e.to_string()))?;
        self.next_stage = 0;
        Ok(())
    }

    /// Runs subgraph 0 on the inputs set so far.
    pub fn invoke(&mut self, ctl: &mut dyn RunControl) -> Result<(), RunError> {
        let _span = tracing::trace_span!("invoke").entered();
        self.next_stage = 0;
        self.executed = 0;
        let steps = self.main_state()?.prepared.steps.len();
        self.run_main(0..steps, false, ctl)
    }

    /// Runs main-subgraph steps `range` with subgraph 0's state taken out of `self`.
    fn run_main(
        &mut self,
        range: Range<usize>,
        force_cpu: bool,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        let mut st = self.states[0].take().ok_or_else(|| self.not_prepared())?;
        let mut vars = std::mem::take(&mut self.vars[0]);
        let result = self.run_steps(0, &mut st, &mut vars, range, force_cpu, ctl);
        self.states[0] = Some(st);
        self.vars[0] = vars;
        result
    }

    /// A view of output `i` after `invoke`.
    pub fn output(&self, i: usize) -> Result<TensorView<'_>, RunError> {
        let sg = &self.plan.model().subgraphs[0];
        let t = *sg.outputs.get(i).ok_or_else(|| RunError::Output {
            index: i,
            what: format!("model has {} outputs", sg.outputs.len()),
        })?;
        let st = self.main_state()?;
        Ok(tensor_view(sg, st, &self.vars[0], t))
    }

    /// Strict run: sets the inputs, invokes, and returns owned outputs. An input whose
    /// shape differs from the current one is `RunError::InputShape` unless every
    /// differing dimension is dynamic (-1) in the model's shape signature, in which case
    /// the model is resized for it.
    pub fn run(
        &mut self,
        inputs: &[TensorView<'_>],
        ctl: &mut dyn RunControl,
    ) -> Result<Vec<Tensor>, RunError> {
        if inputs.len() != self.input_count() {
            return Err(input_err(
                inputs.len(),
                format!(
                    "model takes {} inputs, got {}",
                    self.input_count(),
                    inputs.len()
                ),
            ));
        }
        let mut shapes = self.input_shapes.clone();
        for (i, x) in inputs.iter().enumerate() {
            let info = &self.plan.inputs()[i];
            if x.dtype != info.dtype {
                return Err(input_err(
                    i,
                    format!("expected {}, got {}", info.dtype, x.dtype),
                ));
            }
            let current = &self.input_shapes[i];
            if x.shape == current.as_slice() {
                continue;
            }
            let dynamic = x.shape.len() == current.len()
                && x.shape
                    .iter()
                    .zip(current)
                    .enumerate()
                    .all(|(d, (a, b))| a == b || info.is_dynamic(d));
            if !dynamic {
                return Err(RunError::InputShape {
                    index: i,
                    expected: current.clone(),
                    got: x.shape.to_vec(),
                });
            }
            shapes[i] = x.shape.to_vec();
        }
        self.resize_all(shapes)?;
        for (i, x) in inputs.iter().enumerate() {
            self.set_input(i, x.bytes)?;
        }
        self.invoke(ctl)?;
        self.outputs()
    }

    /// Owned copies of every output.
    pub fn outputs(&self) -> Result<Vec<Tensor>, RunError> {
        (0..self.output_count())
            .map(|i| {
                let v = self.output(i)?;
                let data = AlignedBuf::try_from_bytes(v.bytes).map_err(|e| RunError::Memory {
                    what: format!("a copy of output {i}"),
                    requested: e.bytes,
                    used: self.meter.used(),
                    limit: self.meter.limit(),
                })?;
                Ok(Tensor {
                    dtype: v.dtype,
                    shape: v.shape.to_vec(),
                    data,
                })
            })
            .collect()
    }

    /// Fresh stream: resource variables, CALL_ONCE flags and variable tensors back to
    /// their initial state.
    pub fn reset(&mut self) {
        self.variables.iter_mut().for_each(|v| *v = None);
        self.call_once_done.iter_mut().for_each(|d| *d = false);
        for (si, vars) in self.vars.iter_mut().enumerate() {
            let wanted = self.plan.var_tensors(si);
            for (v, w) in vars.iter_mut().zip(wanted) {
                v.as_mut_slice().fill(w.fill);
            }
        }
        self.next_stage = 0;
    }

    /// Moves this session onto another plan of the same model (e.g. from the CPU plan
    /// to a placed one), keeping variables, CALL_ONCE flags and variable tensors.
    pub fn rebind(&mut self, plan: Arc<Plan>) -> Result<(), RunError> {
        let same = Arc::ptr_eq(self.plan.model(), plan.model())
            || self.plan.model().bytes() == plan.model().bytes();
        if !same {
            return Err(RunError::Graph {
                subgraph: 0,
                what: "rebind needs a plan of the same model".into(),
            });
        }
        let shapes = self.input_shapes.clone();
        let old_plan = std::mem::replace(&mut self.plan, plan);
        let old_states: Vec<Option<SgState>> = self.states.iter_mut().map(Option::take).collect();
        let result = (|| {
            let main = match self.plan.initial() {
                Ok(p) if p.input_shapes == shapes => Some(p.clone()),
                _ => None,
            };
            let main = match main {
                Some(p) => p,
                None => self.plan.prepared(0, shapes, &mut PrepareCx::new())?,
            };
            self.install(0, main)
        })();
        if let Err(e) = result {
            self.plan = old_plan;
            self.states = old_states;
            return Err(e);
        }
        drop(old_states);
        self.reports = self.plan.partition_reports();
        self.reset_reports();
        self.next_stage = 0;
        Ok(())
    }

    // ---- stages -------------------------------------------------------------------

    /// Steps of the main subgraph grouped into stages, with their placement.
    fn stage_ranges(&self) -> Result<Vec<StageRange>, RunError> {
        let st = self.main_state()?;
        let mut out: Vec<StageRange> = Vec::new();
        for (k, step) in st.prepared.steps.iter().enumerate() {
            match step {
                Step::Partition(p) => out.push((k..k + 1, Some(p.placement))),
                _ => match out.last_mut() {
                    Some((r, None)) => r.end = k + 1,
                    _ => out.push((k..k + 1, None)),
                },
            }
        }
        Ok(out)
    }

    /// The main subgraph's steps at the current shapes, grouped into stages: each placed
    /// partition is one stage on its delegate; the CPU steps between them are one stage
    /// each. Every delegate stage keeps its CPU fallback. Empty while a model with
    /// dynamic inputs waits for its first resize.
    pub fn stages(&self) -> Vec<StageInfo> {
        let (Ok(st), Ok(ranges)) = (self.main_state(), self.stage_ranges()) else {
            return Vec::new();
        };
        let placements = self.plan.placements();
        ranges
            .into_iter()
            .map(|(range, placement)| {
                let nodes = st.prepared.steps[range]
                    .iter()
                    .flat_map(Step::nodes)
                    .collect();
                match placement.and_then(|p| placements.get(p)) {
                    Some(placed) => StageInfo {
                        processor: placed.delegate.kind(),
                        delegate: placed.delegate.name().to_string(),
                        nodes,
                    },
                    None => StageInfo {
                        processor: ProcessorKind::Cpu,
                        delegate: "cpu".into(),
                        nodes,
                    },
                }
            })
            .collect()
    }

    /// Runs one stage. Stages run in order 0..n after the inputs are set (stage 0 may
    /// be run again at any time to start over); the outputs are ready after the last.
    pub fn run_stage(
        &mut self,
        stage: usize,
        target: StageTarget,
        ctl: &mut dyn RunControl,
    ) -> Result<StageReport, RunError> {
        let ranges = self.stage_ranges()?;
        let (range, placement) = ranges.get(stage).cloned().ok_or_else(|| RunError::Graph {
            subgraph: 0,
            what: format!("no stage {stage}: the model has {}", ranges.len()),
        })?;
        if stage != 0 && stage != self.next_stage {
            return Err(RunError::Graph {
                subgraph: 0,
                what: format!(
                    "stage {stage} run out of order: stage {} comes next",
                    self.next_stage
                ),
            });
        }
        if stage == 0 {
            self.executed = 0;
        }
        let before = self.executed;
        let started = Instant::now();
        let force_cpu = target == StageTarget::Cpu;
        let on_delegate = match placement {
            Some(_) => {
                let mut st = self.states[0].take().ok_or_else(|| self.not_prepared())?;
                let mut vars = std::mem::take(&mut self.vars[0]);
                let plan = self.plan.clone();
                let sg = &plan.model().subgraphs[0];
                let prepared = st.prepared.clone();
                let result = match prepared.steps.get(range.start) {
                    Some(Step::Partition(p)) => {
                        self.run_partition(0, sg, &mut st, &mut vars, p, force_cpu, ctl)
                    }
                    _ => Err(RunError::Graph {
                        subgraph: 0,
                        what: format!("stage {stage} is not a partition"),
                    }),
                };
                self.states[0] = Some(st);
                self.vars[0] = vars;
                result?
            }
            None => {
                self.run_main(range, force_cpu, ctl)?;
                false
            }
        };
        self.next_stage = if stage + 1 == ranges.len() {
            0
        } else {
            stage + 1
        };
        let processor = match placement.and_then(|p| self.plan.placements().get(p)) {
            Some(placed) if on_delegate => placed.delegate.kind(),
            _ => ProcessorKind::Cpu,
        };
        Ok(StageReport {
            stage,
            processor,
            fell_back: placement.is_some() && !on_delegate,
            wall: started.elapsed(),
            executed: self.executed - before,
        })
    }

    // ---- running steps ---------------------------------------------------------------

    /// Counts one executed node (or loop iteration) and consults the run control.
    #[inline]
    pub(crate) fn count(&mut self, ctl: &mut dyn RunControl) -> Result<(), RunError> {
        self.executed += 1;
        ctl.between_nodes(self.executed)
    }

    pub(crate) fn run_steps(
        &mut self,
        si: usize,
        st: &mut SgState,
        vars: &mut [MBuf],
        range: Range<usize>,
        force_cpu: bool,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        let plan = self.plan.clone();
        let sg = &plan.model().subgraphs[si];
        let prepared = st.prepared.clone();
        let steps = prepared
            .steps
            .get(range.clone())
            .ok_or_else(|| RunError::Graph {
                subgraph: si,
                what: format!("steps {range:?} out of range"),
            })?;
        for (k, step) in steps.iter().enumerate() {
            if self.profiling {
                let started = Instant::now();
                self.run_step(si, sg, st, vars, step, force_cpu, ctl)?;
                if let Some(slot) = st.timings.get_mut(range.start + k) {
                    slot.0 += started.elapsed();
                    slot.1 += 1;
                }
            } else {
                self.run_step(si, sg, st, vars, step, force_cpu, ctl)?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_step(
        &mut self,
        si: usize,
        sg: &Subgraph,
        st: &mut SgState,
        vars: &mut [MBuf],
        step: &Step,
        force_cpu: bool,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        match step {
            Step::Kernel { node, kernel, io } => {
                io::with_io(sg, st, vars, io, |ins, outs| kernel.eval(ins, outs))
                    .map_err(|e| kernel_err(si, &sg.nodes[*node], e))?;
            }
            Step::Lazy { node } => self.run_lazy(si, sg, &sg.nodes[*node], st, vars)?,
            Step::If {
                node,
                then_branch,
                else_branch,
            } => self.run_if(
                si,
                sg,
                &sg.nodes[*node],
                st,
                vars,
                (then_branch, else_branch),
                ctl,
            )?,
            Step::While { node, cond, body } => {
                self.run_while(si, sg, &sg.nodes[*node], st, vars, cond, body, ctl)?
            }
            Step::CallOnce { init, .. } => self.run_call_once(init, ctl)?,
            Step::ReadVariable { node } => {
                self.read_variable(si, sg, &sg.nodes[*node], st, vars)?
            }
            Step::AssignVariable { node } => {
                self.assign_variable(si, sg, &sg.nodes[*node], st, vars)?
            }
            Step::Partition(p) => {
                self.run_partition(si, sg, st, vars, p, force_cpu, ctl)?;
                return Ok(());
            }
        }
        self.count(ctl)
    }

    // ---- signatures, introspection ---------------------------------------------------

    /// Runs the signature `key` on inputs given by name and returns its outputs by name,
    /// in the signature's order. A signature may name any subgraph; it runs on this
    /// session's state (variables, CALL_ONCE), like LiteRT's signature runners.
    pub fn run_signature(
        &mut self,
        key: &str,
        inputs: &[(&str, TensorView<'_>)],
        ctl: &mut dyn RunControl,
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        let plan = self.plan.clone();
        let model = plan.model();
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
            return Err(input_err(
                0,
                format!("signature {key:?} has no input {name:?}"),
            ));
        }
        let mut args = Vec::with_capacity(sg.inputs.len());
        for (index, &t) in sg.inputs.iter().enumerate() {
            let (name, _) = sig.inputs.iter().find(|(_, st)| *st == t).ok_or_else(|| {
                input_err(
                    index,
                    format!("signature {key:?} does not name subgraph input {index}"),
                )
            })?;
            let (_, view) = inputs.iter().find(|(n, _)| n == name).ok_or_else(|| {
                input_err(
                    index,
                    format!("missing input {name:?} of signature {key:?}"),
                )
            })?;
            let def = &sg.tensors[t];
            if view.dtype != def.dtype {
                return Err(input_err(
                    index,
                    format!("{name:?}: expected {}, got {}", def.dtype, view.dtype),
                ));
            }
            if view.shape.len() != def.shape.len() {
                return Err(input_err(
                    index,
                    format!(
                        "{name:?}: shape {:?} has a different rank than {:?}",
                        view.shape, def.shape
                    ),
                ));
            }
            args.push(*view);
        }
        self.executed = 0;
        let mut outs = Vec::new();
        self.call_subgraph(si, None, &args, &mut outs, ctl)?;
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
                let v = outs.get(k).ok_or_else(|| RunError::Output {
                    index: k,
                    what: "missing result".into(),
                })?;
                let data = AlignedBuf::try_from_bytes(v.data.as_slice()).map_err(|e| {
                    RunError::Memory {
                        what: format!("a copy of output {name:?}"),
                        requested: e.bytes,
                        used: self.meter.used(),
                        limit: self.meter.limit(),
                    }
                })?;
                Ok((
                    name.clone(),
                    Tensor {
                        dtype: v.dtype,
                        shape: v.shape.clone(),
                        data,
                    },
                ))
            })
            .collect()
    }

    /// Starts (or stops) recording time per step; enabling clears old figures.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        for st in self.states.iter_mut().flatten() {
            st.timings.iter_mut().for_each(|t| *t = (Duration::ZERO, 0));
        }
    }

    /// Per-step timings in run order (subgraph 0 first).
    pub fn profile(&self) -> Vec<crate::interpreter::StepProfile> {
        let mut out = Vec::new();
        for (si, st) in self.states.iter().enumerate() {
            let Some(st) = st else { continue };
            let sg = &self.plan.model().subgraphs[si];
            for (step, &(total, count)) in st.prepared.steps.iter().zip(&st.timings) {
                if count == 0 {
                    continue;
                }
                let node = &sg.nodes[step.node()];
                out.push(crate::interpreter::StepProfile {
                    subgraph: si,
                    node: node.index,
                    op: node.op.to_string(),
                    kernel: step.kernel_name().to_string(),
                    total,
                    count,
                });
            }
        }
        out
    }

    pub(crate) fn state(&self, si: usize) -> Option<&SgState> {
        self.states.get(si)?.as_ref()
    }

    /// Bytes of arenas over all subgraphs this session has run.
    pub fn arena_bytes(&self) -> usize {
        self.states.iter().flatten().map(|s| s.arena.len()).sum()
    }

    /// Bytes outside the arenas: dynamic tensors, variables, variable tensors, plus the
    /// plan's folded constants for the shapes this session runs.
    pub fn heap_bytes(&self) -> usize {
        let folded: usize = self
            .states
            .iter()
            .flatten()
            .map(|s| s.prepared.folded_bytes)
            .sum();
        folded + self.meter.used().saturating_sub(self.arena_bytes())
    }

    /// Current shape of tensor `t` of subgraph `si` (for tools).
    pub fn tensor_shape(&self, si: usize, t: usize) -> Option<&[usize]> {
        Some(tensor_shape(self.state(si)?, t))
    }

    /// Nodes (and loop iterations) the last run executed.
    pub fn executed(&self) -> u64 {
        self.executed
    }
}

#[cfg(test)]
pub(crate) mod tests;
