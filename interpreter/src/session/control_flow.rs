//! Steps that call subgraphs or touch session-wide state: IF, WHILE, CALL_ONCE, resource
//! variables, and the lazy steps whose kernels are prepared at run time.
//!
//! A called subgraph runs in this session's state for that subgraph (its own arena),
//! prepared through the plan's shared cache at the shapes it is called with. Every WHILE
//! iteration counts against the run's node budget besides the nodes it runs, so nested
//! loops are bounded by the total, not only per loop.

use std::sync::Arc;

use super::io::{self, SgState, tensor_bytes, tensor_shape, tensor_view};
use super::memory::{MBuf, Meter};
use super::{Session, Value};
use crate::control::RunControl;
use crate::error::{KernelError, RunError};
use crate::model::{Node, Subgraph};
use crate::plan::Prepared;
use crate::plan::prepare::{byte_len, kernel_err, prepare_ctx};
use crate::plan::steps::{Callee, Loc, StepIo};
use crate::plan::{PrepareCx, node_work_within};
use crate::tensor::TensorView;

impl Value {
    pub(crate) fn from_view(v: &TensorView<'_>, meter: &Arc<Meter>) -> Result<Value, RunError> {
        Ok(Value {
            dtype: v.dtype,
            shape: v.shape.to_vec(),
            data: MBuf::copy_of(meter, v.bytes, &|| "a control-flow value".into())?,
        })
    }

    /// Overwrites this value with `v`, reusing its buffer.
    pub(crate) fn assign(&mut self, v: &TensorView<'_>) -> Result<(), RunError> {
        self.dtype = v.dtype;
        self.shape.clear();
        self.shape.extend_from_slice(v.shape);
        self.data.set(v.bytes, &|| "a control-flow value".into())
    }

    pub(crate) fn view(&self) -> TensorView<'_> {
        TensorView {
            dtype: self.dtype,
            shape: &self.shape,
            quant: None,
            bytes: self.data.as_slice(),
        }
    }
}

/// Overwrites tensor `t` (a subgraph input) with `bytes`.
pub(crate) fn write_tensor(
    sg: &Subgraph,
    st: &mut SgState,
    vars: &mut [MBuf],
    t: usize,
    bytes: &[u8],
) -> Result<(), KernelError> {
    let dtype = sg.tensors[t].dtype;
    let shape = tensor_shape(st, t);
    let expected = byte_len(dtype, shape)?;
    if bytes.len() != expected {
        return Err(KernelError::shape(format!(
            "{dtype} tensor of shape {shape:?} takes {expected} bytes, got {}",
            bytes.len()
        )));
    }
    let dst = match st.prepared.locs.get(t) {
        Some(Loc::Arena(r)) => st.arena.as_mut_slice().get_mut(r.clone()),
        Some(Loc::Var(v)) => vars.get_mut(*v).map(MBuf::as_mut_slice),
        _ => None,
    }
    .filter(|d| d.len() == bytes.len())
    .ok_or_else(|| KernelError::invalid(format!("tensor {t} is not writable")))?;
    dst.copy_from_slice(bytes);
    Ok(())
}

/// Writes control-flow results into the node's outputs, resizing dynamic ones.
pub(crate) fn store_outputs(
    si: usize,
    sg: &Subgraph,
    node: &Node,
    st: &mut SgState,
    vars: &mut [MBuf],
    values: &[Value],
) -> Result<(), RunError> {
    let err = |e: KernelError| kernel_err(si, node, e);
    if values.len() < node.outputs.len() {
        return Err(err(KernelError::invalid(format!(
            "{} results for {} outputs",
            values.len(),
            node.outputs.len()
        ))));
    }
    for (&o, v) in node.outputs.iter().zip(values) {
        let dtype = sg.tensors[o].dtype;
        if v.dtype != dtype {
            return Err(err(KernelError::dtype(dtype.name(), v.dtype)));
        }
        let loc = st.prepared.locs.get(o).cloned().unwrap_or(Loc::Absent);
        match loc {
            Loc::Heap(h) => {
                let slot = st.heap.get_mut(h).ok_or_else(|| {
                    err(KernelError::invalid(format!("no heap slot for tensor {o}")))
                })?;
                slot.shape.clone_from(&v.shape);
                slot.buf.set(v.data.as_slice(), &|| {
                    format!("tensor {o} of subgraph {si}")
                })?;
            }
            Loc::Arena(r) => {
                let planned = st.prepared.shapes.get(o).map_or(&[][..], Vec::as_slice);
                if v.shape != planned {
                    return Err(err(KernelError::shape(format!(
                        "result of shape {:?} for output planned as {planned:?}",
                        v.shape
                    ))));
                }
                let dst = st
                    .arena
                    .as_mut_slice()
                    .get_mut(r)
                    .filter(|d| d.len() == v.data.len())
                    .ok_or_else(|| err(KernelError::invalid("result does not fit its output")))?;
                dst.copy_from_slice(v.data.as_slice());
            }
            Loc::Var(k) => {
                let dst = vars
                    .get_mut(k)
                    .map(MBuf::as_mut_slice)
                    .filter(|d| d.len() == v.data.len())
                    .ok_or_else(|| err(KernelError::invalid("result does not fit its output")))?;
                dst.copy_from_slice(v.data.as_slice());
            }
            Loc::Const | Loc::Folded(_) | Loc::Absent => {}
        }
    }
    Ok(())
}

fn resource_id(
    sg: &Subgraph,
    st: &SgState,
    vars: &[MBuf],
    node: &Node,
) -> Result<usize, KernelError> {
    let t = node
        .inputs
        .first()
        .copied()
        .flatten()
        .ok_or_else(|| KernelError::invalid("missing resource input"))?;
    let bytes = tensor_bytes(sg, st, vars, t);
    let raw: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KernelError::invalid("resource handle is not an int32"))?;
    usize::try_from(i32::from_le_bytes(raw))
        .map_err(|_| KernelError::invalid("negative resource id"))
}

impl Session {
    /// Runs subgraph `si` on `args` and leaves its outputs in `out` (reusing its buffers).
    pub(crate) fn call_subgraph(
        &mut self,
        si: usize,
        hint: Option<&Arc<Prepared>>,
        args: &[TensorView<'_>],
        out: &mut Vec<Value>,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        if self.depth >= self.plan.options().max_call_depth {
            return Err(RunError::Graph {
                subgraph: si,
                what: "subgraph calls nest too deeply".into(),
            });
        }
        let plan = self.plan.clone();
        let sg = plan
            .model()
            .subgraphs
            .get(si)
            .ok_or_else(|| RunError::Graph {
                subgraph: si,
                what: "no such subgraph".into(),
            })?;
        if args.len() != sg.inputs.len() {
            return Err(RunError::Graph {
                subgraph: si,
                what: format!(
                    "called with {} inputs, takes {}",
                    args.len(),
                    sg.inputs.len()
                ),
            });
        }
        self.ensure_state(si, hint, args)?;
        self.ensure_vars(si)?;
        let mut st = self.states[si].take().ok_or_else(|| RunError::Graph {
            subgraph: si,
            what: "recursive subgraph call".into(),
        })?;
        let mut vars = std::mem::take(&mut self.vars[si]);
        let result = (|| {
            for (k, (&t, x)) in sg.inputs.iter().zip(args).enumerate() {
                if x.dtype != sg.tensors[t].dtype {
                    return Err(RunError::Graph {
                        subgraph: si,
                        what: format!(
                            "input {k}: expected {}, got {}",
                            sg.tensors[t].dtype, x.dtype
                        ),
                    });
                }
                write_tensor(sg, &mut st, &mut vars, t, x.bytes).map_err(|e| RunError::Graph {
                    subgraph: si,
                    what: format!("input {k}: {e}"),
                })?;
            }
            self.depth += 1;
            let steps = st.prepared.steps.len();
            let r = self.run_steps(si, &mut st, &mut vars, 0..steps, false, ctl);
            self.depth -= 1;
            r?;
            out.truncate(sg.outputs.len());
            for (k, &t) in sg.outputs.iter().enumerate() {
                let view = tensor_view(sg, &st, &vars, t);
                match out.get_mut(k) {
                    Some(v) => v.assign(&view)?,
                    None => out.push(Value::from_view(&view, &self.meter)?),
                }
            }
            Ok(())
        })();
        self.states[si] = Some(st);
        self.vars[si] = vars;
        result
    }

    /// Makes this session's state for `si` the one prepared for the shapes of `args`.
    fn ensure_state(
        &mut self,
        si: usize,
        hint: Option<&Arc<Prepared>>,
        args: &[TensorView<'_>],
    ) -> Result<(), RunError> {
        let fits = |p: &Prepared| {
            p.input_shapes.len() == args.len()
                && p.input_shapes
                    .iter()
                    .zip(args)
                    .all(|(s, a)| s.as_slice() == a.shape)
        };
        if self.states[si]
            .as_ref()
            .is_some_and(|st| fits(&st.prepared))
        {
            return Ok(());
        }
        let prepared = match hint {
            Some(h) if fits(h) => h.clone(),
            _ => {
                let shapes = args.iter().map(|a| a.shape.to_vec()).collect();
                let mut cx = PrepareCx::new();
                cx.depth = self.depth + 1;
                self.plan.prepared(si, shapes, &mut cx)?
            }
        };
        self.install(si, prepared)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_if(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        st: &mut SgState,
        vars: &mut [MBuf],
        branches: (&Callee, &Callee),
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        let cond_t =
            node.inputs.first().copied().flatten().ok_or_else(|| {
                kernel_err(si, node, KernelError::invalid("IF without condition"))
            })?;
        let cond = tensor_bytes(sg, st, vars, cond_t).iter().any(|&b| b != 0);
        let branch = if cond { branches.0 } else { branches.1 };
        let mut outs = Vec::new();
        {
            let args: Vec<TensorView<'_>> = node
                .inputs
                .get(1..)
                .unwrap_or_default()
                .iter()
                .flatten()
                .map(|&t| tensor_view(sg, st, vars, t))
                .collect();
            self.call_subgraph(branch.si, branch.prepared.as_ref(), &args, &mut outs, ctl)?;
        }
        store_outputs(si, sg, node, st, vars, &outs)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_while(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        st: &mut SgState,
        vars: &mut [MBuf],
        cond: &Callee,
        body: &Callee,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        let mut state: Vec<Value> = node
            .inputs
            .iter()
            .flatten()
            .map(|&t| Value::from_view(&tensor_view(sg, st, vars, t), &self.meter))
            .collect::<Result<_, _>>()?;
        let mut next = Vec::new();
        let mut cond_out = Vec::new();
        let max = self.plan.options().max_while_iterations;
        let mut iterations = 0usize;
        loop {
            {
                let args: Vec<TensorView<'_>> = state.iter().map(Value::view).collect();
                self.call_subgraph(cond.si, cond.prepared.as_ref(), &args, &mut cond_out, ctl)?;
            }
            let go = cond_out
                .first()
                .is_some_and(|v| v.data.as_slice().iter().any(|&b| b != 0));
            if !go {
                break;
            }
            iterations += 1;
            if iterations > max {
                return Err(kernel_err(
                    si,
                    node,
                    KernelError::invalid(format!("WHILE exceeded {max} iterations")),
                ));
            }
            self.count(ctl)?;
            {
                let args: Vec<TensorView<'_>> = state.iter().map(Value::view).collect();
                self.call_subgraph(body.si, body.prepared.as_ref(), &args, &mut next, ctl)?;
            }
            std::mem::swap(&mut state, &mut next);
        }
        store_outputs(si, sg, node, st, vars, &state)
    }

    pub(crate) fn run_call_once(
        &mut self,
        init: &Callee,
        ctl: &mut dyn RunControl,
    ) -> Result<(), RunError> {
        if self.call_once_done.get(init.si).copied().unwrap_or(true) {
            return Ok(());
        }
        self.call_subgraph(init.si, init.prepared.as_ref(), &[], &mut Vec::new(), ctl)?;
        self.call_once_done[init.si] = true;
        Ok(())
    }

    pub(crate) fn read_variable(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        st: &mut SgState,
        vars: &mut [MBuf],
    ) -> Result<(), RunError> {
        let id = resource_id(sg, st, vars, node).map_err(|e| kernel_err(si, node, e))?;
        let value = self
            .variables
            .get(id)
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                kernel_err(
                    si,
                    node,
                    KernelError::invalid(format!("variable {id} read before assignment")),
                )
            })?;
        store_outputs(si, sg, node, st, vars, std::slice::from_ref(value))
    }

    pub(crate) fn assign_variable(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        st: &SgState,
        vars: &[MBuf],
    ) -> Result<(), RunError> {
        let err = |e: KernelError| kernel_err(si, node, e);
        let id = resource_id(sg, st, vars, node).map_err(err)?;
        let value_t = node
            .inputs
            .get(1)
            .copied()
            .flatten()
            .ok_or_else(|| err(KernelError::invalid("ASSIGN_VARIABLE without value")))?;
        let view = tensor_view(sg, st, vars, value_t);
        let slot = self
            .variables
            .get_mut(id)
            .ok_or_else(|| err(KernelError::invalid(format!("unknown variable {id}"))))?;
        match slot {
            Some(v) => v.assign(&view),
            None => {
                *slot = Some(Value::from_view(&view, &self.meter)?);
                Ok(())
            }
        }
    }

    /// A node whose output shapes depend on runtime values: prepared now, on the values
    /// it reads, then run into heap tensors sized for this run.
    pub(crate) fn run_lazy(
        &mut self,
        si: usize,
        sg: &Subgraph,
        node: &Node,
        st: &mut SgState,
        vars: &mut [MBuf],
    ) -> Result<(), RunError> {
        let err = |e: KernelError| kernel_err(si, node, e);
        let prepared = {
            let (st_ref, vars_ref): (&SgState, &[MBuf]) = (st, vars);
            let shape_of = |t: usize| tensor_shape(st_ref, t);
            let value_of = |t: usize| Some(tensor_bytes(sg, st_ref, vars_ref, t));
            let ctx = prepare_ctx(sg, node, &shape_of, &value_of, self.plan.options().threads);
            let prepared = self.plan.resolver().prepare(&ctx).map_err(err)?;
            let work = self
                .plan
                .resolver()
                .work_bound(&ctx, &prepared.output_shapes);
            node_work_within(work, &self.plan.options().prepare)?;
            prepared
        };
        if prepared.output_shapes.len() != node.outputs.len() {
            return Err(err(KernelError::invalid(format!(
                "kernel produced {} output shapes for {} outputs",
                prepared.output_shapes.len(),
                node.outputs.len()
            ))));
        }
        for (&o, shape) in node.outputs.iter().zip(&prepared.output_shapes) {
            let len = byte_len(sg.tensors[o].dtype, shape).map_err(err)?;
            let Some(Loc::Heap(h)) = st.prepared.locs.get(o).cloned() else {
                return Err(err(KernelError::invalid(format!(
                    "output tensor {o} has no runtime storage"
                ))));
            };
            let slot = st
                .heap
                .get_mut(h)
                .ok_or_else(|| err(KernelError::invalid("missing heap slot")))?;
            slot.shape.clone_from(shape);
            slot.buf
                .resize(len, &|| format!("tensor {o} of subgraph {si}"))?;
        }
        let mutated = prepared.kernel.mutated_inputs();
        let mut written = node.outputs.clone();
        for &k in mutated {
            let t =
                node.inputs.get(k).copied().flatten().ok_or_else(|| {
                    err(KernelError::invalid(format!("mutated input {k} is absent")))
                })?;
            written.push(t);
        }
        let io = StepIo::build(&st.prepared.locs, &node.inputs, &written, mutated).map_err(err)?;
        io::with_io(sg, st, vars, &io, |ins, outs| {
            prepared.kernel.eval(ins, outs)
        })
        .map_err(err)
    }
}
