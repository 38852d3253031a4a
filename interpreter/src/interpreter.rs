//! [`Interpreter`]: one [`Plan`] plus one [`Session`], for callers that run one stream
//! of one model (tools, tests, the oracle comparisons). Its `run` is strict like
//! [`Session::run`]: a differing input shape needs an explicit [`Interpreter::resize_input`]
//! unless the shape signature marks the dimension dynamic.

use std::sync::Arc;
use std::time::Duration;

use crate::control::{Budget, DEFAULT_MAX_NODES};
use crate::delegate::{PartitionReport, PlacedPartition};
use crate::error::RunError;
use crate::kernel::OpResolver;
use crate::model::Model;
use crate::plan::steps::{Loc, Step};
use crate::plan::{Plan, PlanOptions, PrepareLimits, Prepared};
use crate::session::{Session, SessionLimits};
use crate::tensor::{DType, Tensor, TensorView};

/// Tuning knobs and limits of one interpreter.
#[derive(Clone, Debug)]
pub struct InterpreterOptions {
    /// Threads kernels may use.
    pub threads: usize,
    /// Evaluate nodes with constant inputs once at prepare time.
    pub fold_constants: bool,
    /// Upper bound on one WHILE loop's iterations.
    pub max_while_iterations: usize,
    /// Maximum nesting of subgraph calls.
    pub max_call_depth: usize,
    /// Upper bound on one subgraph's planned arena.
    pub max_arena_bytes: usize,
    /// Nodes one invoke may execute, loop iterations and nested subgraphs included.
    pub max_nodes_per_run: u64,
    /// Upper bound on the session's arenas, heap tensors and variables together.
    pub max_session_bytes: usize,
}

impl Default for InterpreterOptions {
    fn default() -> Self {
        let plan = PlanOptions::default();
        InterpreterOptions {
            threads: plan.threads,
            fold_constants: plan.fold_constants,
            max_while_iterations: plan.max_while_iterations,
            max_call_depth: plan.max_call_depth,
            max_arena_bytes: plan.prepare.max_arena_bytes,
            max_nodes_per_run: DEFAULT_MAX_NODES,
            max_session_bytes: SessionLimits::default().max_bytes,
        }
    }
}

impl InterpreterOptions {
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            threads: self.threads,
            fold_constants: self.fold_constants,
            max_while_iterations: self.max_while_iterations,
            max_call_depth: self.max_call_depth,
            release_consumed: false,
            prepare: PrepareLimits {
                max_arena_bytes: self.max_arena_bytes,
                ..PrepareLimits::default()
            },
        }
    }

    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_bytes: self.max_session_bytes,
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

/// Runs one model: a plan and one session over it. Not `Sync`.
pub struct Interpreter {
    session: Session,
    max_nodes: u64,
}

impl Interpreter {
    /// Prepares subgraph 0 with the model's stored input shapes.
    pub fn new(
        model: Arc<Model>,
        resolver: Arc<dyn OpResolver>,
        options: InterpreterOptions,
    ) -> Result<Interpreter, RunError> {
        Interpreter::with_placement(model, resolver, options, Vec::new())
    }

    /// Prepares the model with some partitions placed on delegates (see
    /// [`Plan::with_placement`]).
    pub fn with_placement(
        model: Arc<Model>,
        resolver: Arc<dyn OpResolver>,
        options: InterpreterOptions,
        placements: Vec<PlacedPartition>,
    ) -> Result<Interpreter, RunError> {
        let plan = Plan::with_placement(model, resolver, options.plan_options(), placements)?;
        Ok(Interpreter {
            session: plan.session(options.session_limits())?,
            max_nodes: options.max_nodes_per_run,
        })
    }

    /// A facade over an existing session; `max_nodes` bounds each invoke.
    pub fn from_session(session: Session, max_nodes: u64) -> Interpreter {
        Interpreter { session, max_nodes }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    pub fn into_session(self) -> Session {
        self.session
    }

    pub fn plan(&self) -> &Arc<Plan> {
        self.session.plan()
    }

    /// See [`Session::set_validation`].
    pub fn set_validation(&mut self, on: bool) {
        self.session.set_validation(on);
    }

    /// Per placed partition: runs, failures, fallbacks, times, validation error.
    pub fn partition_reports(&self) -> &[PartitionReport] {
        self.session.partition_reports()
    }

    pub fn model(&self) -> &Arc<Model> {
        self.session.plan().model()
    }

    pub fn input_count(&self) -> usize {
        self.session.input_count()
    }

    pub fn output_count(&self) -> usize {
        self.session.output_count()
    }

    /// dtype and current shape of input `i`.
    pub fn input_info(&self, i: usize) -> Result<(DType, Vec<usize>), RunError> {
        let shape = self.session.input_shape(i)?.to_vec();
        Ok((self.plan().inputs()[i].dtype, shape))
    }

    /// Changes the shape of input `i` (checked against the shape signature).
    pub fn resize_input(&mut self, i: usize, shape: Vec<usize>) -> Result<(), RunError> {
        self.session.resize_input(i, &shape)
    }

    /// Copies `bytes` into input `i`; the length must match the input's current shape.
    pub fn set_input(&mut self, i: usize, bytes: &[u8]) -> Result<(), RunError> {
        self.session.set_input(i, bytes)
    }

    /// Runs subgraph 0 on the inputs set so far, within the node budget.
    pub fn invoke(&mut self) -> Result<(), RunError> {
        self.session.invoke(&mut Budget::nodes(self.max_nodes))
    }

    /// A view of output `i` after `invoke`.
    pub fn output(&self, i: usize) -> Result<TensorView<'_>, RunError> {
        self.session.output(i)
    }

    /// Strict run (see [`Session::run`]).
    pub fn run(&mut self, inputs: &[TensorView<'_>]) -> Result<Vec<Tensor>, RunError> {
        self.session.run(inputs, &mut Budget::nodes(self.max_nodes))
    }

    /// Keys of the model's signatures, in model order.
    pub fn signature_keys(&self) -> Vec<&str> {
        self.model()
            .signatures
            .iter()
            .map(|s| s.key.as_str())
            .collect()
    }

    /// See [`Session::run_signature`].
    pub fn run_signature(
        &mut self,
        key: &str,
        inputs: &[(&str, TensorView<'_>)],
    ) -> Result<Vec<(String, Tensor)>, RunError> {
        self.session
            .run_signature(key, inputs, &mut Budget::nodes(self.max_nodes))
    }

    /// Bytes of arena memory over all subgraphs run so far.
    pub fn arena_bytes(&self) -> usize {
        self.session.arena_bytes()
    }

    /// Bytes held outside the arena: folded constants, dynamic tensors and variables.
    pub fn heap_bytes(&self) -> usize {
        self.session.heap_bytes()
    }

    /// Arena layout of subgraph `si`, for debugging.
    pub fn dump_arena(&self, si: usize) -> Option<String> {
        let p = self.prepared_for(si)?;
        Some(format!(
            "subgraph {si}: {}",
            p.arena.dump(&p.arena_requests)
        ))
    }

    /// Starts (or stops) recording time per step; enabling clears old figures.
    pub fn set_profiling(&mut self, on: bool) {
        self.session.set_profiling(on);
    }

    /// Per-step timings in run order (subgraph 0 first).
    pub fn profile(&self) -> Vec<StepProfile> {
        self.session.profile()
    }

    /// The prepared subgraph `si` this session uses: the one it last ran, else the one
    /// the main subgraph's control flow was prepared with.
    fn prepared_for(&self, si: usize) -> Option<&Prepared> {
        if let Some(st) = self.session.state(si) {
            return Some(&st.prepared);
        }
        let mut todo: Vec<&Prepared> = vec![&self.session.state(0)?.prepared];
        let mut seen = vec![false; self.model().subgraphs.len()];
        while let Some(p) = todo.pop() {
            if p.si == si {
                return Some(p);
            }
            if std::mem::replace(seen.get_mut(p.si)?, true) {
                continue;
            }
            for step in &p.steps {
                let callees = match step {
                    Step::If {
                        then_branch,
                        else_branch,
                        ..
                    } => vec![then_branch, else_branch],
                    Step::While { cond, body, .. } => vec![cond, body],
                    Step::CallOnce { init, .. } => vec![init],
                    _ => vec![],
                };
                todo.extend(callees.into_iter().filter_map(|c| c.prepared.as_deref()));
            }
        }
        None
    }

    /// Resolved shape of every tensor of subgraph `si` after prepare, for the
    /// scheduler's partitioner and cost model (`None` when `si` is not prepared).
    pub fn tensor_shapes(&self, si: usize) -> Option<&[Vec<usize>]> {
        self.prepared_for(si).map(|p| p.shapes.as_slice())
    }

    /// Nodes of subgraph `si` that run at every invoke, in run order. Nodes folded at
    /// prepare (constant inputs) are absent: placing them anywhere costs nothing.
    pub fn run_nodes(&self, si: usize) -> Option<Vec<usize>> {
        self.prepared_for(si).map(|p| p.run_nodes.clone())
    }

    /// Value of tensor `t` of subgraph `si` when known at prepare time: a model constant
    /// or the output of a folded node.
    pub fn prepared_value(&self, si: usize, t: usize) -> Option<&[u8]> {
        let p = self.prepared_for(si)?;
        let def = self.model().subgraphs.get(si)?.tensors.get(t)?;
        if def.is_variable {
            return None;
        }
        match p.locs.get(t)? {
            Loc::Const => def.data.as_ref().map(|d| d.as_slice()),
            Loc::Folded(f) => p.folded.get(*f).map(|b| b.as_slice()),
            _ => None,
        }
    }

    /// Number of steps in subgraph 0 that run per invoke (after folding).
    pub fn step_count(&self) -> usize {
        self.session
            .state(0)
            .map_or(0, |st| st.prepared.steps.len())
    }
}
