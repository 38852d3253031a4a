//! Preparing one subgraph for one set of input shapes.
//!
//! Walks nodes in order, asking the resolver for a kernel with the shapes known so far.
//! Nodes whose inputs are all known values are evaluated right here ([`super::fold`]).
//! Nodes whose output shape depends on runtime values become lazy steps, prepared at
//! every run, writing session heap tensors. Control flow prepares the subgraphs it calls
//! (through the plan's cache). Then placed partitions are grouped and compiled
//! ([`super::partition`]), every remaining intermediate tensor gets an arena offset
//! ([`crate::planner`]), and each step's input and output views are fixed.

use std::ops::Range;
use std::sync::Arc;

use super::steps::{Callee, InLoc, Loc, Prepared, Step, StepIo};
use super::{Plan, PrepareCx, node_work_within};
use crate::error::{KernelError, RunError};
use crate::kernel::{PrepareCtx, TensorMeta};
use crate::model::{Node, Subgraph};
use crate::ops::{BuiltinOp, OpKind, OpOptions};
use crate::planner::{self, Lifetime};
use crate::tensor::{AlignedBuf, DType, element_count};

use super::MAX_TENSOR_BYTES;

pub(crate) fn kernel_err(subgraph: usize, node: &Node, source: KernelError) -> RunError {
    RunError::Node {
        subgraph,
        node: node.index,
        op: node.op.to_string(),
        error: source,
    }
}

/// Bytes of a tensor of `shape`, refused past [`MAX_TENSOR_BYTES`].
pub(crate) fn byte_len(dtype: DType, shape: &[usize]) -> Result<usize, KernelError> {
    element_count(shape)
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&n| n <= MAX_TENSOR_BYTES)
        .ok_or_else(|| {
            KernelError::shape(format!(
                "shape {shape:?} of {dtype} exceeds the {MAX_TENSOR_BYTES}-byte tensor limit"
            ))
        })
}

/// What is known about a subgraph's tensors while its nodes are prepared in order.
pub(crate) struct Known {
    pub shapes: Vec<Vec<usize>>,
    pub locs: Vec<Loc>,
    pub folded: Vec<AlignedBuf>,
    /// Tensors whose shape is only known at run time.
    pub dynamic: Vec<bool>,
}

impl Known {
    /// The value of `t` when known at prepare time (constants, folded values).
    pub fn value<'a>(&'a self, sg: &'a Subgraph, t: usize) -> Option<&'a [u8]> {
        if sg.tensors[t].is_variable {
            return None;
        }
        match &self.locs[t] {
            Loc::Const => Some(sg.tensors[t].data.as_ref().map_or(&[], |d| d.as_slice())),
            Loc::Folded(f) => self.folded.get(*f).map(AlignedBuf::as_slice),
            _ => None,
        }
    }

    /// Stores a value computed at prepare time as the value of `t`.
    pub fn set_folded(&mut self, t: usize, value: AlignedBuf) {
        self.locs[t] = Loc::Folded(self.folded.len());
        self.folded.push(value);
    }
}

/// Prepare context for `node`: shapes and, where known, values of its inputs.
/// `runtime` supplies the values at run time for lazy steps.
pub(crate) fn prepare_ctx<'a>(
    sg: &'a Subgraph,
    node: &'a Node,
    shape_of: &dyn Fn(usize) -> &'a [usize],
    value_of: &dyn Fn(usize) -> Option<&'a [u8]>,
    threads: usize,
) -> PrepareCtx<'a> {
    let meta = |t: usize, data: Option<&'a [u8]>| TensorMeta {
        dtype: sg.tensors[t].dtype,
        shape: shape_of(t),
        quant: sg.tensors[t].quant.as_ref(),
        data,
        name: &sg.tensors[t].name,
    };
    PrepareCtx {
        node,
        inputs: node
            .inputs
            .iter()
            .map(|t| t.map(|t| meta(t, value_of(t))))
            .collect(),
        outputs: node.outputs.iter().map(|&t| meta(t, None)).collect(),
        intermediates: node.intermediates.iter().map(|&t| meta(t, None)).collect(),
        threads,
    }
}

/// Prepares subgraph `si` of `plan` for `input_shapes`.
pub(crate) fn prepare_subgraph(
    plan: &Plan,
    si: usize,
    input_shapes: Vec<Vec<usize>>,
    cx: &mut PrepareCx,
) -> Result<Prepared, RunError> {
    let options = plan.options();
    if cx.depth > options.max_call_depth {
        return Err(RunError::Graph {
            subgraph: si,
            what: "subgraph calls nest too deeply".into(),
        });
    }
    let model = plan.model().clone();
    let sg = model.subgraphs.get(si).ok_or_else(|| RunError::Graph {
        subgraph: si,
        what: "no such subgraph".into(),
    })?;
    let _span = tracing::debug_span!("prepare_subgraph", subgraph = si).entered();
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
    let mut known = Known {
        shapes: sg.tensors.iter().map(|t| t.shape.clone()).collect(),
        locs: sg
            .tensors
            .iter()
            .map(|t| {
                if t.is_const() {
                    Loc::Const
                } else {
                    Loc::Absent
                }
            })
            .collect(),
        folded: Vec::new(),
        dynamic: vec![false; n],
    };
    // Sparse constants are expanded for this prepare only: as folded values, which the
    // plan drops once no step reads them.
    for (t, def) in sg.tensors.iter().enumerate() {
        if let Some(sparse) = def.data.as_ref().and_then(|d| d.sparse())
            && !def.is_variable
        {
            cx.fold(sparse.dense_len(), &options.prepare)?;
            let dense = sparse.densify().map_err(|what| RunError::Graph {
                subgraph: si,
                what: format!("sparse tensor {t} ({}): {what}", def.name),
            })?;
            known.set_folded(t, dense);
        }
    }
    for (&t, s) in sg.inputs.iter().zip(&input_shapes) {
        known.shapes[t] = s.clone();
    }
    for (k, v) in plan.var_tensors(si).iter().enumerate() {
        known.locs[v.tensor] = Loc::Var(k);
    }
    let mut steps = Vec::new();
    cx.depth += 1;
    let walked = (|| {
        for node in &sg.nodes {
            if let Some(step) = prepare_node(plan, si, sg, node, &mut known, cx)? {
                steps.push(step);
            }
        }
        Ok::<(), RunError>(())
    })();
    cx.depth -= 1;
    walked?;
    let mut steps = super::partition::group(plan, si, sg, steps, &known)?;

    // Plan the arena for every tensor not already placed.
    let last = steps.len();
    let mut first_use = vec![usize::MAX; n];
    let mut last_use = vec![0usize; n];
    let mut touch = |t: usize, step: usize| {
        first_use[t] = first_use[t].min(step);
        last_use[t] = last_use[t].max(step);
    };
    for &t in &sg.inputs {
        touch(t, 0);
    }
    for (k, step) in steps.iter().enumerate() {
        for n in step.nodes() {
            let node = &sg.nodes[n];
            for &t in node.inputs.iter().flatten().chain(&node.outputs) {
                touch(t, k);
            }
        }
    }
    for &t in &sg.outputs {
        touch(t, last);
    }
    let mut requests = Vec::new();
    let mut heap_tensors = Vec::new();
    for t in 0..n {
        if first_use[t] == usize::MAX || known.locs[t] != Loc::Absent {
            continue;
        }
        if known.dynamic[t] {
            known.locs[t] = Loc::Heap(heap_tensors.len());
            heap_tensors.push(t);
            continue;
        }
        let size =
            byte_len(sg.tensors[t].dtype, &known.shapes[t]).map_err(|e| RunError::Graph {
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
    // A delegate partition may recompute values folded at prepare (its nodes include
    // the folding ones); it writes them to scratch ranges of the arena, live for its
    // step only, and the folded values stay as they are.
    let planned = requests.len();
    let mut scratch: Vec<(usize, usize)> = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        if let Step::Partition(p) = step {
            for &t in &plan.placements()[p.placement].partition.outputs {
                if matches!(known.locs[t], Loc::Const | Loc::Folded(_)) {
                    let size = byte_len(sg.tensors[t].dtype, &known.shapes[t]).map_err(|e| {
                        RunError::Graph {
                            subgraph: si,
                            what: format!("tensor {t}: {e}"),
                        }
                    })?;
                    scratch.push((k, t));
                    requests.push(Lifetime {
                        tensor: t,
                        size,
                        first_step: k,
                        last_step: k,
                    });
                }
            }
        }
    }
    let arena = planner::plan(&requests);
    if arena.high_water > options.prepare.max_arena_bytes {
        return Err(RunError::Graph {
            subgraph: si,
            what: format!(
                "the arena needs {} bytes, over the limit of {}",
                arena.high_water, options.prepare.max_arena_bytes
            ),
        });
    }
    for (req, &off) in requests.iter().zip(&arena.offsets).take(planned) {
        known.locs[req.tensor] = Loc::Arena(off..off + req.size);
    }
    let mut scratch_of: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); steps.len()];
    for ((k, t), (req, &off)) in scratch
        .iter()
        .zip(requests.iter().zip(&arena.offsets).skip(planned))
    {
        scratch_of[*k].push((*t, off..off + req.size));
    }
    // Views of every step's inputs and outputs, now that every tensor has its place.
    for (step, scratch) in steps.iter_mut().zip(&scratch_of) {
        fix_io(plan, si, sg, &known.locs, scratch, step)?;
    }
    if options.release_consumed {
        release_unread(sg, &known.locs, &steps, &mut known.folded);
    }
    let run_nodes = steps.iter().flat_map(Step::nodes).collect();
    let kernel_bytes = steps.iter().map(step_kernel_bytes).sum();
    let folded_bytes = known.folded.iter().map(AlignedBuf::len).sum();
    Ok(Prepared {
        si,
        input_shapes,
        shapes: known.shapes,
        locs: known.locs,
        folded: known.folded,
        arena,
        arena_requests: requests,
        heap_tensors,
        steps,
        run_nodes,
        folded_bytes,
        kernel_bytes,
    })
}

/// Empties every folded value no step reads at run time: inputs that only fed other
/// folded nodes (a DENSIFY output behind a DEQUANTIZE), and weights a kernel packed
/// (its [`crate::OpKernel::consumed_inputs`], left out of its views by `fix_io`). A
/// kernel or partition reads what its views name; any other step (lazy, control flow,
/// variables) may read any input of its node, so those are kept whole.
fn release_unread(sg: &Subgraph, locs: &[Loc], steps: &[Step], folded: &mut [AlignedBuf]) {
    fn views(io: &StepIo, read: &mut [bool]) {
        for (_, at) in &io.ins {
            if let InLoc::Folded(f) = at
                && let Some(r) = read.get_mut(*f)
            {
                *r = true;
            }
        }
    }
    fn mark(sg: &Subgraph, locs: &[Loc], step: &Step, read: &mut [bool]) {
        match step {
            Step::Kernel { io, .. } => views(io, read),
            Step::Partition(p) => {
                views(&p.io, read);
                for s in &p.fallback {
                    mark(sg, locs, s, read);
                }
            }
            other => {
                for n in other.nodes() {
                    for &t in sg.nodes[n].inputs.iter().flatten() {
                        if let Some(Loc::Folded(f)) = locs.get(t)
                            && let Some(r) = read.get_mut(*f)
                        {
                            *r = true;
                        }
                    }
                }
            }
        }
    }
    let mut read = vec![false; folded.len()];
    // The subgraph's outputs are read by whoever called it.
    for &t in &sg.outputs {
        if let Some(Loc::Folded(f)) = locs.get(t)
            && let Some(r) = read.get_mut(*f)
        {
            *r = true;
        }
    }
    for step in steps {
        mark(sg, locs, step, &mut read);
    }
    for (value, read) in folded.iter_mut().zip(read) {
        if !read {
            *value = AlignedBuf::default();
        }
    }
}

fn step_kernel_bytes(step: &Step) -> usize {
    match step {
        Step::Kernel { kernel, .. } => kernel.memory_bytes(),
        Step::Partition(p) => p.fallback.iter().map(step_kernel_bytes).sum(),
        _ => 0,
    }
}

fn fix_io(
    plan: &Plan,
    si: usize,
    sg: &Subgraph,
    locs: &[Loc],
    scratch: &[(usize, Range<usize>)],
    step: &mut Step,
) -> Result<(), RunError> {
    match step {
        Step::Kernel { node, kernel, io } => {
            let node = &sg.nodes[*node];
            let mutated = kernel.mutated_inputs();
            let mut written = node.outputs.clone();
            for &k in mutated {
                let t = node.inputs.get(k).copied().flatten().ok_or_else(|| {
                    kernel_err(
                        si,
                        node,
                        KernelError::invalid(format!("mutated input {k} is absent")),
                    )
                })?;
                written.push(t);
            }
            // Inputs the kernel packed at prepare are not viewed at run time either.
            let skip: Vec<usize> = mutated
                .iter()
                .chain(kernel.consumed_inputs())
                .copied()
                .collect();
            *io = StepIo::build(locs, &node.inputs, &written, &skip)
                .map_err(|e| kernel_err(si, node, e))?;
        }
        Step::Partition(p) => {
            for s in p.fallback.iter_mut() {
                fix_io(plan, si, sg, locs, &[], s)?;
            }
            let part = &plan.placements()[p.placement].partition;
            let ins: Vec<Option<usize>> = part.inputs.iter().map(|&t| Some(t)).collect();
            p.io = StepIo::build_with_scratch(locs, &ins, &part.outputs, &[], scratch).map_err(
                |e| RunError::Graph {
                    subgraph: si,
                    what: format!("partition {:?}: {e}", part.nodes),
                },
            )?;
        }
        _ => {}
    }
    Ok(())
}

fn prepare_node(
    plan: &Plan,
    si: usize,
    sg: &Subgraph,
    node: &Node,
    known: &mut Known,
    cx: &mut PrepareCx,
) -> Result<Option<Step>, RunError> {
    let err = |e: KernelError| kernel_err(si, node, e);
    cx.node(&plan.options().prepare)?;
    let any_dynamic = node.inputs.iter().flatten().any(|&t| known.dynamic[t]);
    let shapes_of = |known: &Known, ts: &[Option<usize>]| -> Vec<Vec<usize>> {
        ts.iter()
            .map(|t| t.map(|t| known.shapes[t].clone()).unwrap_or_default())
            .collect()
    };
    match (&node.op, &node.options) {
        (
            OpKind::Builtin(BuiltinOp::VarHandle),
            OpOptions::VarHandle {
                container,
                shared_name,
            },
        ) => {
            let id = plan
                .var_id(container, shared_name)
                .ok_or_else(|| err(KernelError::invalid("unknown variable")))?;
            let id =
                i32::try_from(id).map_err(|_| err(KernelError::invalid("too many variables")))?;
            let out = *node
                .outputs
                .first()
                .ok_or_else(|| err(KernelError::invalid("VAR_HANDLE without output")))?;
            known.set_folded(out, AlignedBuf::from_slice(&[id]));
            known.shapes[out] = vec![];
            return Ok(None);
        }
        (OpKind::Builtin(BuiltinOp::ReadVariable), _) => {
            for &o in &node.outputs {
                let sig_dynamic = sg.tensors[o]
                    .shape_signature
                    .as_ref()
                    .is_some_and(|s| s.iter().any(|&d| d < 0));
                if sig_dynamic {
                    known.dynamic[o] = true;
                }
            }
            return Ok(Some(Step::ReadVariable { node: node.index }));
        }
        (OpKind::Builtin(BuiltinOp::AssignVariable), _) => {
            return Ok(Some(Step::AssignVariable { node: node.index }));
        }
        (OpKind::Builtin(BuiltinOp::CallOnce), OpOptions::CallOnce { init_subgraph }) => {
            let init = callee(plan, *init_subgraph, Some(vec![]), cx)?;
            return Ok(Some(Step::CallOnce {
                node: node.index,
                init,
            }));
        }
        (
            OpKind::Builtin(BuiltinOp::If),
            OpOptions::If {
                then_subgraph,
                else_subgraph,
            },
        ) => {
            let args = node.inputs.get(1..).unwrap_or_default();
            let shapes = (!any_dynamic).then(|| shapes_of(known, args));
            let then_branch = callee(plan, *then_subgraph, shapes.clone(), cx)?;
            let else_branch = callee(plan, *else_subgraph, shapes, cx)?;
            let model = plan.model();
            for (k, &o) in node.outputs.iter().enumerate() {
                let a = then_branch
                    .prepared
                    .as_ref()
                    .and_then(|p| p.static_output_shape(&model.subgraphs[p.si], k));
                let b = else_branch
                    .prepared
                    .as_ref()
                    .and_then(|p| p.static_output_shape(&model.subgraphs[p.si], k));
                match (a, b) {
                    (Some(a), Some(b)) if a == b => known.shapes[o] = a.to_vec(),
                    _ => known.dynamic[o] = true,
                }
            }
            return Ok(Some(Step::If {
                node: node.index,
                then_branch,
                else_branch,
            }));
        }
        (
            OpKind::Builtin(BuiltinOp::While),
            OpOptions::While {
                cond_subgraph,
                body_subgraph,
            },
        ) => {
            let state = shapes_of(known, &node.inputs);
            let shapes = (!any_dynamic).then(|| state.clone());
            let cond = callee(plan, *cond_subgraph, shapes.clone(), cx)?;
            let body = callee(plan, *body_subgraph, shapes, cx)?;
            let model = plan.model();
            for (k, &o) in node.outputs.iter().enumerate() {
                let b = body
                    .prepared
                    .as_ref()
                    .and_then(|p| p.static_output_shape(&model.subgraphs[p.si], k));
                match (state.get(k), b) {
                    (Some(a), Some(b)) if a.as_slice() == b && !any_dynamic => {
                        known.shapes[o] = a.clone()
                    }
                    _ => known.dynamic[o] = true,
                }
            }
            return Ok(Some(Step::While {
                node: node.index,
                cond,
                body,
            }));
        }
        _ => {}
    }
    if any_dynamic {
        node.outputs.iter().for_each(|&o| known.dynamic[o] = true);
        return Ok(Some(Step::Lazy { node: node.index }));
    }
    let (prepared, work) = {
        let shape_of = |t: usize| known.shapes[t].as_slice();
        let value_of = |t: usize| known.value(sg, t);
        let ctx = prepare_ctx(sg, node, &shape_of, &value_of, plan.options().threads);
        let prepared = plan.resolver().prepare(&ctx);
        let work = prepared
            .as_ref()
            .ok()
            .and_then(|p| plan.resolver().work_bound(&ctx, &p.output_shapes));
        (prepared, work)
    };
    let prepared = match prepared {
        Ok(p) => {
            node_work_within(work, &plan.options().prepare)?;
            p
        }
        Err(KernelError::NeedsValues) => {
            node.outputs.iter().for_each(|&o| known.dynamic[o] = true);
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
        known.shapes[o] = s.clone();
    }
    if plan.options().fold_constants && super::fold::foldable(sg, node, known) {
        super::fold::fold(plan, si, sg, node, &*prepared.kernel, known, cx)?;
        return Ok(None);
    }
    Ok(Some(Step::Kernel {
        node: node.index,
        kernel: prepared.kernel,
        io: StepIo::default(),
    }))
}

/// A called subgraph, prepared now when its input shapes are known.
fn callee(
    plan: &Plan,
    si: usize,
    shapes: Option<Vec<Vec<usize>>>,
    cx: &mut PrepareCx,
) -> Result<Callee, RunError> {
    let prepared = match shapes {
        Some(shapes) => Some(plan.prepared(si, shapes, cx)?),
        None => None,
    };
    Ok(Callee { si, prepared })
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Plan>();
    check::<Arc<Prepared>>();
}
