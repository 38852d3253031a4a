//! The immutable half of running a model: a [`Plan`] is prepared once per model (and
//! placement) and shared, behind an `Arc`, by every session and tenant that runs it.
//!
//! It holds the verified model, the kernel resolver's prepared kernels (packed weights),
//! folded constants, compiled delegate partitions and the arena layout, per subgraph and
//! per set of input shapes. Those prepared subgraphs live in a bounded cache keyed by
//! (subgraph, input shapes); each key is prepared at most once even when many sessions
//! ask for it at the same time (the others wait for the first). Everything mutable lives
//! in a [`crate::Session`].
//!
//! Layout: [`prepare`] walks a subgraph's nodes, [`fold`] evaluates constant nodes,
//! [`partition`] groups and compiles delegate partitions, [`steps`] is what they produce.

pub(crate) mod fold;
pub(crate) mod partition;
pub(crate) mod prepare;
pub(crate) mod steps;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::control::BudgetExceeded;
use crate::delegate::{PartitionReport, PlacedPartition};
use crate::error::RunError;
use crate::kernel::OpResolver;
use crate::model::Model;
use crate::ops::{BuiltinOp, OpKind, OpOptions};
use crate::session::{Session, SessionLimits};
use crate::tensor::DType;

pub(crate) use steps::Prepared;

/// Largest single tensor the interpreter allocates. A corrupted or hostile model can
/// name any shape; refusing it here turns what would be an allocation abort (the whole
/// daemon gone) into an error for that one model.
pub const MAX_TENSOR_BYTES: usize = 1 << 30;

/// How a plan prepares and runs its model.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Threads kernels may use.
    pub threads: usize,
    /// Evaluate nodes with constant inputs once at prepare time.
    pub fold_constants: bool,
    /// Upper bound on one WHILE loop's iterations (the run's node budget bounds all
    /// loops together).
    pub max_while_iterations: usize,
    /// Maximum nesting of subgraph calls.
    pub max_call_depth: usize,
    /// Drop each folded value that no step reads at run time once the subgraph is
    /// prepared (fp16 weights dequantized to float for a convolution that packed them):
    /// it would otherwise stay beside the packed copy as long as the plan. Off where a
    /// caller inspects folded values after prepare (the placement planner reads them
    /// through [`crate::Interpreter::prepared_value`]).
    pub release_consumed: bool,
    pub prepare: PrepareLimits,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            threads: 1,
            fold_constants: true,
            max_while_iterations: 1_000_000,
            max_call_depth: 16,
            release_consumed: false,
            prepare: PrepareLimits::default(),
        }
    }
}

/// The work one preparation may do: a hostile model's prepare is an error quickly, never
/// a stall of the caller (who may hold locks other tenants wait on).
#[derive(Clone, Debug)]
pub struct PrepareLimits {
    /// Node preparations (kernel prepare calls) of one top-level prepare, nested
    /// subgraphs included.
    pub max_nodes: u64,
    /// Wall time of one top-level prepare.
    pub max_time: Option<Duration>,
    /// Bytes of constants folded by one top-level prepare.
    pub max_folded_bytes: usize,
    /// Largest arena one subgraph may plan.
    pub max_arena_bytes: usize,
    /// Input shape sets kept prepared per plan (over all subgraphs).
    pub max_shape_sets: usize,
    /// Most work one node may do in one eval ([`crate::OpResolver::work_bound`]). The
    /// run budget is checked between nodes, so without this one hostile node (a
    /// reduction over a quarter-gigabyte tensor) holds a core for as long as its tensors
    /// allow, under every budget.
    pub max_node_work: f64,
}

impl Default for PrepareLimits {
    fn default() -> Self {
        PrepareLimits {
            max_nodes: 200_000,
            max_time: None,
            max_folded_bytes: 1 << 30,
            max_arena_bytes: 2 << 30,
            max_shape_sets: 64,
            max_node_work: DEFAULT_MAX_NODE_WORK,
        }
    }
}

/// Per-node work limit when the caller sets none: about a second of one phone core,
/// ten times the largest node of the benchmark set's models.
pub const DEFAULT_MAX_NODE_WORK: f64 = 1e10;

/// Refuses a node whose work bound is above the limit (`None`: the resolver gave no
/// bound, nothing to check).
pub(crate) fn node_work_within(work: Option<f64>, limits: &PrepareLimits) -> Result<(), RunError> {
    match work {
        // `as` saturates: a NaN or astronomically large bound reads as u64::MAX.
        Some(work) if work.is_nan() || work > limits.max_node_work => Err(BudgetExceeded::NodeWork {
            work: if work.is_nan() { u64::MAX } else { work as u64 },
            limit: limits.max_node_work as u64,
        }
        .into()),
        _ => Ok(()),
    }
}

/// Name, dtype, stored shape and shape signature of a model input or output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    /// The stored shape (a placeholder where the signature says -1).
    pub shape: Vec<usize>,
    /// -1 marks a dynamic dimension; `None` when the model has no signature.
    pub signature: Option<Vec<i32>>,
}

impl TensorInfo {
    /// Whether dimension `d` may change without an explicit resize.
    pub fn is_dynamic(&self, d: usize) -> bool {
        self.signature
            .as_ref()
            .and_then(|s| s.get(d))
            .is_some_and(|&v| v < 0)
    }
}

/// A persistent variable tensor of a subgraph (old-style state, e.g. LSTM cells).
#[derive(Clone, Debug)]
pub(crate) struct VarTensor {
    pub tensor: usize,
    pub bytes: usize,
    /// The byte every element starts (and resets) to: an int8 variable's zero point,
    /// else 0, as TFLite's ResetVariableTensor (which ignores a stored buffer too).
    pub fill: u8,
}

/// The work one top-level preparation has done so far.
pub(crate) struct PrepareCx {
    nodes: u64,
    folded: usize,
    started: Instant,
    pub depth: usize,
}

impl PrepareCx {
    pub fn new() -> PrepareCx {
        PrepareCx {
            nodes: 0,
            folded: 0,
            started: Instant::now(),
            depth: 0,
        }
    }

    /// Counts one node preparation against the limits.
    pub fn node(&mut self, limits: &PrepareLimits) -> Result<(), RunError> {
        self.nodes += 1;
        if self.nodes > limits.max_nodes {
            return Err(BudgetExceeded::PrepareNodes {
                limit: limits.max_nodes,
            }
            .into());
        }
        if let Some(limit) = limits.max_time
            && self.started.elapsed() > limit
        {
            return Err(BudgetExceeded::PrepareTime { limit }.into());
        }
        Ok(())
    }

    /// Counts `bytes` of folded constants against the limits.
    pub fn fold(&mut self, bytes: usize, limits: &PrepareLimits) -> Result<(), RunError> {
        self.folded = self.folded.saturating_add(bytes);
        if self.folded > limits.max_folded_bytes {
            return Err(BudgetExceeded::PrepareBytes {
                limit: limits.max_folded_bytes,
            }
            .into());
        }
        Ok(())
    }
}

type ShapeKey = (usize, Vec<Vec<usize>>);

/// One cache entry: empty until its first preparer finishes; others wait on the lock.
struct CacheSlot {
    ready: Mutex<Option<Arc<Prepared>>>,
    last_used: AtomicU64,
}

/// Prepared subgraphs by (subgraph, input shapes), bounded.
#[derive(Default)]
struct ShapeCache {
    slots: Mutex<HashMap<ShapeKey, Arc<CacheSlot>>>,
    clock: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A kernel that panicked during prepare poisons nothing we rely on: the slot is
    // simply still empty.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model prepared for running: immutable, `Send + Sync`, shared by sessions.
pub struct Plan {
    model: Arc<Model>,
    resolver: Arc<dyn OpResolver>,
    options: PlanOptions,
    placements: Vec<PlacedPartition>,
    reports: Mutex<Vec<PartitionReport>>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    /// Resource variable ids by (container, shared name), over all subgraphs.
    var_ids: HashMap<(String, String), usize>,
    /// Persistent variable tensors per subgraph.
    var_tensors: Vec<Vec<VarTensor>>,
    cache: ShapeCache,
    /// Subgraph 0 at the stored input shapes, or why it could not be prepared yet.
    initial: Result<Arc<Prepared>, String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("model", &self.model)
            .field("placements", &self.placements.len())
            .finish()
    }
}

impl Plan {
    /// Prepares subgraph 0 at the model's stored input shapes, on the CPU only.
    pub fn new(
        model: Arc<Model>,
        resolver: Arc<dyn OpResolver>,
        options: PlanOptions,
    ) -> Result<Arc<Plan>, RunError> {
        Plan::with_placement(model, resolver, options, Vec::new())
    }

    /// Prepares the model with some partitions placed on delegates. Every partition
    /// keeps its CPU kernels: compile failures, execution errors and timeouts fall back
    /// to them and are recorded in [`Plan::partition_reports`].
    ///
    /// Models with dynamic input dimensions often store placeholders (1 where the
    /// signature says -1) that no kernel accepts; such a model is prepared on its first
    /// resize instead of being refused.
    pub fn with_placement(
        model: Arc<Model>,
        resolver: Arc<dyn OpResolver>,
        options: PlanOptions,
        placements: Vec<PlacedPartition>,
    ) -> Result<Arc<Plan>, RunError> {
        let _span = tracing::debug_span!("plan", bytes = model.byte_len).entered();
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
        let info = |ts: &[usize]| -> Vec<TensorInfo> {
            let sg = &model.subgraphs[0];
            ts.iter()
                .map(|&t| {
                    let d = &sg.tensors[t];
                    TensorInfo {
                        name: d.name.clone(),
                        dtype: d.dtype,
                        shape: d.shape.clone(),
                        signature: d.shape_signature.clone(),
                    }
                })
                .collect()
        };
        let inputs = info(&model.subgraphs[0].inputs);
        let outputs = info(&model.subgraphs[0].outputs);
        let mut var_ids = HashMap::new();
        let mut var_tensors = Vec::with_capacity(model.subgraphs.len());
        for (si, sg) in model.subgraphs.iter().enumerate() {
            for node in &sg.nodes {
                if let (
                    OpKind::Builtin(BuiltinOp::VarHandle),
                    OpOptions::VarHandle {
                        container,
                        shared_name,
                    },
                ) = (&node.op, &node.options)
                {
                    let next = var_ids.len();
                    var_ids
                        .entry((container.clone(), shared_name.clone()))
                        .or_insert(next);
                }
            }
            let mut vars = Vec::new();
            for (t, def) in sg.tensors.iter().enumerate() {
                if def.is_variable && !def.is_const() && !sg.inputs.contains(&t) {
                    let bytes =
                        prepare::byte_len(def.dtype, &def.shape).map_err(|e| RunError::Graph {
                            subgraph: si,
                            what: format!("variable tensor {t}: {e}"),
                        })?;
                    let fill = match (def.dtype, &def.quant) {
                        (DType::I8, Some(q)) => q.zero_point_at(0) as i8 as u8,
                        _ => 0,
                    };
                    vars.push(VarTensor {
                        tensor: t,
                        bytes,
                        fill,
                    });
                }
            }
            var_tensors.push(vars);
        }
        let mut plan = Plan {
            model,
            resolver,
            options,
            placements,
            reports: Mutex::new(reports),
            inputs,
            outputs,
            var_ids,
            var_tensors,
            cache: ShapeCache::default(),
            initial: Err(String::new()),
        };
        let shapes: Vec<Vec<usize>> = plan.inputs.iter().map(|t| t.shape.clone()).collect();
        plan.initial = match plan.prepared(0, shapes, &mut PrepareCx::new()) {
            Ok(p) => Ok(p),
            Err(e) if plan.has_dynamic_inputs() => {
                tracing::debug!("deferring prepare until inputs are resized: {e}");
                Err(e.to_string())
            }
            Err(e) => return Err(e),
        };
        Ok(Arc::new(plan))
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    pub(crate) fn resolver(&self) -> &dyn OpResolver {
        &*self.resolver
    }

    pub(crate) fn placements(&self) -> &[PlacedPartition] {
        &self.placements
    }

    pub(crate) fn var_count(&self) -> usize {
        self.var_ids.len()
    }

    pub(crate) fn var_id(&self, container: &str, shared_name: &str) -> Option<usize> {
        self.var_ids
            .get(&(container.to_string(), shared_name.to_string()))
            .copied()
    }

    pub(crate) fn var_tensors(&self, si: usize) -> &[VarTensor] {
        self.var_tensors.get(si).map_or(&[], Vec::as_slice)
    }

    /// Subgraph 0 at the stored shapes, or why the model waits for a resize.
    pub(crate) fn initial(&self) -> Result<&Arc<Prepared>, &str> {
        self.initial.as_ref().map_err(String::as_str)
    }

    fn has_dynamic_inputs(&self) -> bool {
        self.inputs.iter().any(|t| {
            t.signature
                .as_ref()
                .is_some_and(|s| s.iter().any(|&d| d < 0))
        })
    }

    /// Whether a session carries state from one run to the next: resource variables,
    /// CALL_ONCE initialisation or old-style variable tensors (LSTM cells). Such a model
    /// must never share a session between streams, let alone tenants; a stateless one
    /// may run any request on any free session.
    pub fn is_stateful(&self) -> bool {
        self.var_count() > 0
            || self.var_tensors.iter().any(|v| !v.is_empty())
            || self.model.subgraphs.iter().any(|sg| {
                sg.nodes.iter().any(|n| {
                    matches!(
                        n.op,
                        OpKind::Builtin(
                            BuiltinOp::CallOnce
                                | BuiltinOp::VarHandle
                                | BuiltinOp::ReadVariable
                                | BuiltinOp::AssignVariable
                        )
                    )
                })
            })
    }

    /// A new session: its arena and variable slots, never a re-prepare.
    pub fn session(self: &Arc<Self>, limits: SessionLimits) -> Result<Session, RunError> {
        Session::new(self.clone(), limits)
    }

    /// Per placed partition: runs, failures, fallbacks, times, validation error,
    /// aggregated over all sessions.
    pub fn partition_reports(&self) -> Vec<PartitionReport> {
        lock(&self.reports).clone()
    }

    pub(crate) fn update_report(&self, placement: usize, f: impl FnOnce(&mut PartitionReport)) {
        if let Some(r) = lock(&self.reports).get_mut(placement) {
            f(r);
        }
    }

    /// Bytes the plan holds for all sessions: folded constants and what kernels report
    /// for packed weights, over every prepared shape set. Charged once per model.
    pub fn shared_bytes(&self) -> usize {
        self.cached()
            .iter()
            .map(|p| p.folded_bytes + p.kernel_bytes)
            .sum()
    }

    /// Bytes a session needs at the stored shapes: subgraph 0's arena, the arenas of
    /// the subgraphs it calls at the shapes known at prepare, and variable tensors.
    pub fn session_bytes_estimate(&self) -> usize {
        let vars: usize = self.var_tensors.iter().flatten().map(|v| v.bytes).sum();
        let mut arenas = 0;
        if let Ok(main) = &self.initial {
            let mut seen = vec![false; self.model.subgraphs.len()];
            let mut todo = vec![main.clone()];
            while let Some(p) = todo.pop() {
                if std::mem::replace(&mut seen[p.si], true) {
                    continue;
                }
                arenas += p.arena_bytes();
                for step in &p.steps {
                    let callees: Vec<&steps::Callee> = match step {
                        steps::Step::If {
                            then_branch,
                            else_branch,
                            ..
                        } => vec![then_branch, else_branch],
                        steps::Step::While { cond, body, .. } => vec![cond, body],
                        steps::Step::CallOnce { init, .. } => vec![init],
                        _ => vec![],
                    };
                    todo.extend(callees.into_iter().filter_map(|c| c.prepared.clone()));
                }
            }
        }
        arenas + vars
    }

    /// Every prepared subgraph in the cache.
    pub(crate) fn cached(&self) -> Vec<Arc<Prepared>> {
        let slots: Vec<Arc<CacheSlot>> = lock(&self.cache.slots).values().cloned().collect();
        slots
            .iter()
            .filter_map(|s| s.ready.try_lock().ok().and_then(|g| g.clone()))
            .collect()
    }

    /// Subgraph `si` prepared for `input_shapes`, from the cache or prepared now (once,
    /// however many sessions ask at the same time).
    pub(crate) fn prepared(
        &self,
        si: usize,
        input_shapes: Vec<Vec<usize>>,
        cx: &mut PrepareCx,
    ) -> Result<Arc<Prepared>, RunError> {
        let key = (si, input_shapes);
        let tick = self.cache.clock.fetch_add(1, Ordering::Relaxed);
        let slot = {
            let mut slots = lock(&self.cache.slots);
            match slots.get(&key) {
                Some(s) => s.clone(),
                None => {
                    if slots.len() >= self.options.prepare.max_shape_sets {
                        self.evict_one(&mut slots)?;
                    }
                    let s = Arc::new(CacheSlot {
                        ready: Mutex::new(None),
                        last_used: AtomicU64::new(tick),
                    });
                    slots.insert(key.clone(), s.clone());
                    s
                }
            }
        };
        slot.last_used.store(tick, Ordering::Relaxed);
        // Waiting here while another session prepares the same key cannot deadlock:
        // a preparer only waits on keys of subgraphs its subgraph calls, and the model
        // verifier guarantees the call graph is acyclic.
        let mut ready = lock(&slot.ready);
        if let Some(p) = ready.as_ref() {
            return Ok(p.clone());
        }
        let prepared = Arc::new(prepare::prepare_subgraph(self, si, key.1, cx)?);
        *ready = Some(prepared.clone());
        Ok(prepared)
    }

    /// Drops the least recently used prepared entry that nobody is preparing.
    fn evict_one(&self, slots: &mut HashMap<ShapeKey, Arc<CacheSlot>>) -> Result<(), RunError> {
        let victim = slots
            .iter()
            .filter(|(_, s)| s.ready.try_lock().is_ok_and(|g| g.is_some()))
            .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                slots.remove(&k);
                Ok(())
            }
            None => Err(BudgetExceeded::ShapeSets {
                limit: self.options.prepare.max_shape_sets,
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests;
