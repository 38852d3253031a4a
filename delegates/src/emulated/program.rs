//! A partition compiled for an emulated device: the partition's nodes prepared with the
//! CPU *reference* kernels, plus the buffers to run them.
//!
//! The emulated DSP and NPU are timing and capability models; their arithmetic is the
//! reference kernels' integer arithmetic, so an emulated device's outputs are bit-exact
//! with the CPU reference. What differs from the CPU is which partitions they accept
//! and how long they say a run took.

use std::collections::HashMap;

use switchyard_interpreter::{
    AlignedBuf, DType, DelegateError, Node, OpKernel, OpResolver, PartitionCtx, PrepareCtx, Quant,
    Subgraph, TensorMeta, TensorView, TensorViewMut,
};

use crate::cpu::CpuResolver;

/// Dtype, resolved shape and quantization of one tensor the program touches.
#[derive(Clone, Debug)]
pub(crate) struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub quant: Option<Quant>,
}

impl TensorInfo {
    pub fn byte_len(&self) -> usize {
        self.shape
            .iter()
            .product::<usize>()
            .saturating_mul(self.dtype.size())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// The i-th partition input.
    Input(usize),
    /// A constant copied at compile time (weights, biases, shape operands).
    Const(usize),
    /// A tensor produced inside the partition.
    Temp(usize),
}

struct ProgramStep {
    node: usize,
    kernel: Box<dyn OpKernel>,
    inputs: Vec<Option<Slot>>,
    outputs: Vec<usize>,
}

/// What `prepare` sees of tensor `t`.
fn meta<'a>(
    sg: &'a Subgraph,
    shapes: &'a [Vec<usize>],
    t: usize,
    value: Option<&'a [u8]>,
) -> Result<TensorMeta<'a>, String> {
    let def = sg
        .tensors
        .get(t)
        .ok_or_else(|| format!("tensor {t} does not exist"))?;
    let shape = shapes
        .get(t)
        .ok_or_else(|| format!("tensor {t} has no resolved shape"))?;
    Ok(TensorMeta {
        dtype: def.dtype,
        shape,
        quant: def.quant.as_ref(),
        data: value,
        name: &def.name,
    })
}

/// The partition as a straight-line list of reference kernels.
pub(crate) struct Program {
    delegate: String,
    pub inputs: Vec<TensorInfo>,
    pub consts: Vec<(TensorInfo, AlignedBuf)>,
    pub temps: Vec<TensorInfo>,
    steps: Vec<ProgramStep>,
    /// Temp slot of each partition output, in `Partition::outputs` order.
    outputs: Vec<usize>,
}

impl Program {
    /// Nodes that run per execution (nodes folded into constants at prepare are absent).
    pub fn nodes(&self) -> impl Iterator<Item = usize> + '_ {
        self.steps.iter().map(|s| s.node)
    }

    pub fn output_infos(&self) -> impl Iterator<Item = &TensorInfo> + '_ {
        self.outputs.iter().map(|&s| &self.temps[s])
    }

    /// Prepares every node of the partition with the CPU reference kernels.
    pub fn compile(ctx: &PartitionCtx<'_>, delegate: &str) -> Result<Program, DelegateError> {
        let err = |what: String| DelegateError::Compile {
            delegate: delegate.to_string(),
            what,
        };
        let sg = ctx.subgraph;
        let info = |t: usize| -> Result<TensorInfo, DelegateError> {
            let def = sg
                .tensors
                .get(t)
                .ok_or_else(|| err(format!("tensor {t} does not exist")))?;
            let shape = ctx
                .shapes
                .get(t)
                .ok_or_else(|| err(format!("tensor {t} has no resolved shape")))?;
            Ok(TensorInfo {
                dtype: def.dtype,
                shape: shape.clone(),
                quant: def.quant.clone(),
            })
        };
        let mut program = Program {
            delegate: delegate.to_string(),
            inputs: Vec::new(),
            consts: Vec::new(),
            temps: Vec::new(),
            steps: Vec::new(),
            outputs: Vec::new(),
        };
        let mut slot_of: HashMap<usize, Slot> = HashMap::new();
        for (i, &t) in ctx.partition.inputs.iter().enumerate() {
            program.inputs.push(info(t)?);
            slot_of.insert(t, Slot::Input(i));
        }
        let resolver = CpuResolver::reference();
        for &n in &ctx.partition.nodes {
            let node: &Node = sg
                .nodes
                .get(n)
                .ok_or_else(|| err(format!("node {n} does not exist")))?;
            let folded = !node.outputs.is_empty()
                && node
                    .outputs
                    .iter()
                    .all(|&o| !slot_of.contains_key(&o) && (ctx.constant)(o).is_some());
            if folded {
                continue;
            }
            let mut slots = Vec::with_capacity(node.inputs.len());
            for t in &node.inputs {
                let Some(t) = *t else {
                    slots.push(None);
                    continue;
                };
                let slot = match slot_of.get(&t) {
                    Some(&s) => s,
                    None => {
                        let bytes = (ctx.constant)(t).ok_or_else(|| {
                            err(format!(
                                "node {n} ({}) reads tensor {t}, which is neither a partition \
                                 input, a constant, nor produced earlier in the partition",
                                node.op
                            ))
                        })?;
                        program
                            .consts
                            .push((info(t)?, AlignedBuf::from_bytes(bytes)));
                        let s = Slot::Const(program.consts.len() - 1);
                        slot_of.insert(t, s);
                        s
                    }
                };
                slots.push(Some(slot));
            }
            let mut input_metas = Vec::with_capacity(node.inputs.len());
            for (t, slot) in node.inputs.iter().zip(&slots) {
                match (t, slot) {
                    (Some(t), Some(Slot::Const(c))) => input_metas.push(Some(
                        meta(sg, ctx.shapes, *t, Some(program.consts[*c].1.as_slice()))
                            .map_err(err)?,
                    )),
                    (Some(t), Some(_)) => {
                        input_metas.push(Some(meta(sg, ctx.shapes, *t, None).map_err(err)?))
                    }
                    _ => input_metas.push(None),
                }
            }
            let mut output_metas = Vec::with_capacity(node.outputs.len());
            for &o in &node.outputs {
                output_metas.push(meta(sg, ctx.shapes, o, None).map_err(err)?);
            }
            let pctx = PrepareCtx {
                node,
                inputs: input_metas,
                outputs: output_metas,
                intermediates: switchyard_interpreter::kernel::intermediate_metas(sg, node),
                threads: 1,
            };
            let prepared = resolver
                .prepare(&pctx)
                .map_err(|e| err(format!("node {n} ({}): {e}", node.op)))?;
            if !prepared.kernel.mutated_inputs().is_empty() {
                return Err(err(format!(
                    "node {n} ({}) updates variable tensors in place, which this device cannot hold",
                    node.op
                )));
            }
            if prepared.output_shapes.len() != node.outputs.len() {
                return Err(err(format!(
                    "node {n} ({}) prepared {} outputs, the model lists {}",
                    node.op,
                    prepared.output_shapes.len(),
                    node.outputs.len()
                )));
            }
            let mut outputs = Vec::with_capacity(node.outputs.len());
            for (&o, shape) in node.outputs.iter().zip(&prepared.output_shapes) {
                let ti = info(o)?;
                if &ti.shape != shape {
                    return Err(err(format!(
                        "node {n} ({}) output {o} has shape {shape:?}, the plan says {:?}",
                        node.op, ti.shape
                    )));
                }
                program.temps.push(ti);
                let slot = program.temps.len() - 1;
                slot_of.insert(o, Slot::Temp(slot));
                outputs.push(slot);
            }
            program.steps.push(ProgramStep {
                node: n,
                kernel: prepared.kernel,
                inputs: slots,
                outputs,
            });
        }
        for &t in &ctx.partition.outputs {
            match slot_of.get(&t) {
                Some(Slot::Temp(s)) => program.outputs.push(*s),
                _ => {
                    return Err(err(format!(
                        "partition output {t} is not produced by a node that runs on the device"
                    )));
                }
            }
        }
        Ok(program)
    }

    fn exec_err(&self, what: String) -> DelegateError {
        DelegateError::Execute {
            delegate: self.delegate.clone(),
            what,
        }
    }

    /// Checks the tensors handed to `execute` against what was compiled: buffers may
    /// move between runs, but shapes and dtypes are fixed at compile time.
    pub fn check_io(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &[TensorViewMut<'_>],
    ) -> Result<(), DelegateError> {
        if inputs.len() != self.inputs.len() || outputs.len() != self.outputs.len() {
            return Err(self.exec_err(format!(
                "expected {} inputs and {} outputs, got {} and {}",
                self.inputs.len(),
                self.outputs.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for (i, (v, want)) in inputs.iter().zip(&self.inputs).enumerate() {
            if v.dtype != want.dtype || v.shape != want.shape.as_slice() {
                return Err(self.exec_err(format!(
                    "input {i} is {} {:?}, compiled for {} {:?}",
                    v.dtype, v.shape, want.dtype, want.shape
                )));
            }
            if v.bytes.len() != want.byte_len() {
                return Err(self.exec_err(format!(
                    "input {i} has {} bytes, needs {}",
                    v.bytes.len(),
                    want.byte_len()
                )));
            }
        }
        for (i, (v, want)) in outputs.iter().zip(self.output_infos()).enumerate() {
            if v.dtype != want.dtype || v.bytes.len() != want.byte_len() {
                return Err(self.exec_err(format!(
                    "output {i} is {} with {} bytes, compiled for {} {:?}",
                    v.dtype,
                    v.bytes.len(),
                    want.dtype,
                    want.shape
                )));
            }
        }
        Ok(())
    }

    /// Runs the kernels in order and copies the partition outputs out.
    pub fn run(
        &self,
        inputs: &[TensorView<'_>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), DelegateError> {
        self.check_io(inputs, outputs)?;
        // Copies keep the inputs 64-byte aligned whatever the caller's buffers are.
        let staged: Vec<AlignedBuf> = inputs
            .iter()
            .map(|v| AlignedBuf::from_bytes(v.bytes))
            .collect();
        let mut temps: Vec<AlignedBuf> = self
            .temps
            .iter()
            .map(|t| AlignedBuf::zeroed(t.byte_len()))
            .collect();
        for step in &self.steps {
            let mut outs_bufs: Vec<AlignedBuf> = step
                .outputs
                .iter()
                .map(|&s| std::mem::take(&mut temps[s]))
                .collect();
            let result = {
                let view = |slot: Slot| -> TensorView<'_> {
                    let (info, bytes) = match slot {
                        Slot::Input(i) => (&self.inputs[i], staged[i].as_slice()),
                        Slot::Const(c) => (&self.consts[c].0, self.consts[c].1.as_slice()),
                        Slot::Temp(t) => (&self.temps[t], temps[t].as_slice()),
                    };
                    TensorView {
                        dtype: info.dtype,
                        shape: &info.shape,
                        quant: info.quant.as_ref(),
                        bytes,
                    }
                };
                let ins: Vec<Option<TensorView<'_>>> =
                    step.inputs.iter().map(|s| s.map(view)).collect();
                let mut outs: Vec<TensorViewMut<'_>> = step
                    .outputs
                    .iter()
                    .zip(outs_bufs.iter_mut())
                    .map(|(&s, buf)| TensorViewMut {
                        dtype: self.temps[s].dtype,
                        shape: &self.temps[s].shape,
                        quant: self.temps[s].quant.as_ref(),
                        bytes: buf.as_mut_slice(),
                    })
                    .collect();
                step.kernel.eval(&ins, &mut outs)
            };
            for (&s, buf) in step.outputs.iter().zip(outs_bufs) {
                temps[s] = buf;
            }
            result.map_err(|e| self.exec_err(format!("node {}: {e}", step.node)))?;
        }
        for (out, &s) in outputs.iter_mut().zip(&self.outputs) {
            out.bytes.copy_from_slice(temps[s].as_slice());
        }
        Ok(())
    }
}

impl Program {
    /// Bytes of constants (weights, biases) the device must hold for this partition.
    pub fn constant_bytes(&self) -> usize {
        self.consts.iter().map(|(_, b)| b.len()).sum()
    }

    /// Largest sum of activation bytes alive at once while the partition runs: inputs
    /// until their last reader, each produced tensor from its step until its last
    /// reader (partition outputs until the end, they leave the device last).
    pub fn peak_activation_bytes(&self) -> usize {
        let n = self.steps.len();
        let mut last_input_use = vec![0usize; self.inputs.len()];
        let mut last_temp_use: Vec<usize> = vec![0; self.temps.len()];
        let mut born: Vec<usize> = vec![0; self.temps.len()];
        for (k, step) in self.steps.iter().enumerate() {
            for s in step.inputs.iter().flatten() {
                match *s {
                    Slot::Input(i) => last_input_use[i] = k,
                    Slot::Temp(t) => last_temp_use[t] = k,
                    Slot::Const(_) => {}
                }
            }
            for &t in &step.outputs {
                born[t] = k;
                last_temp_use[t] = last_temp_use[t].max(k);
            }
        }
        for &t in &self.outputs {
            last_temp_use[t] = n;
        }
        (0..n.max(1))
            .map(|k| {
                let ins: usize = (0..self.inputs.len())
                    .filter(|&i| last_input_use[i] >= k)
                    .map(|i| self.inputs[i].byte_len())
                    .sum();
                let temps: usize = (0..self.temps.len())
                    .filter(|&t| born[t] <= k && last_temp_use[t] >= k)
                    .map(|t| self.temps[t].byte_len())
                    .sum();
                ins + temps
            })
            .max()
            .unwrap_or(0)
    }
}
