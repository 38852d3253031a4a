//! The descriptor table: one [`OpDescriptor`] per operator, and everything that reads it.
//!
//! Each op module declares `DESCRIPTORS` (its ops, their prepare functions, per-processor
//! support rules and work estimate); [`FAMILIES`] lists the modules. From that one table
//! come the two CPU registries ([`ReferenceResolver`], [`OptimizedResolver`], like
//! TFLite's BuiltinRefOpResolver and BuiltinOpResolver), the answer to "can this
//! processor run this node" ([`supports`]) for the scheduler, the emulated DSP/NPU and
//! the GPU delegate, and the work estimate every cost model uses ([`node_work`]).

use std::sync::OnceLock;

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, Node, NodeSupportCtx, OpKernel, OpKind, OpResolver, PrepareCtx,
    PreparedKernel, ProcessorKind, Support, TensorView, TensorViewMut,
};

use crate::ops;
use crate::support::SupportRule;
use crate::work::{OpWork, WorkCtx, WorkFn};

/// Validates a node, computes its output shapes and returns its kernel.
pub type PrepareFn = fn(&PrepareCtx<'_>) -> Result<PreparedKernel, KernelError>;

/// Which operator a descriptor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKey {
    Builtin(BuiltinOp),
    /// A custom op, by its name in the model.
    Custom(&'static str),
}

impl OpKey {
    pub fn matches(&self, op: &OpKind) -> bool {
        match (self, op) {
            (OpKey::Builtin(a), OpKind::Builtin(b)) => a == b,
            (OpKey::Custom(a), OpKind::Custom(b)) => a == b,
            _ => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            OpKey::Builtin(b) => b.name(),
            OpKey::Custom(n) => n,
        }
    }
}

/// Everything the system knows about one operator, in one place.
#[derive(Clone, Copy)]
pub struct OpDescriptor {
    pub op: OpKey,
    /// Prepare for the reference registry: plain loops, the oracle.
    pub reference: PrepareFn,
    /// Prepare for the optimized registry (the reference where the op has nothing faster).
    pub optimized: PrepareFn,
    /// Whether the GPU / DSP / NPU runs the node; `None`: never.
    pub gpu: Option<SupportRule>,
    pub dsp: Option<SupportRule>,
    pub npu: Option<SupportRule>,
    pub work: WorkFn,
}

impl OpDescriptor {
    /// An op with one kernel for both registries, CPU only, elementwise work.
    pub const fn new(op: BuiltinOp, prepare: PrepareFn) -> OpDescriptor {
        OpDescriptor {
            op: OpKey::Builtin(op),
            reference: prepare,
            optimized: prepare,
            gpu: None,
            dsp: None,
            npu: None,
            work: crate::work::elementwise,
        }
    }

    pub const fn custom(name: &'static str, prepare: PrepareFn) -> OpDescriptor {
        let mut d = OpDescriptor::new(BuiltinOp::Custom, prepare);
        d.op = OpKey::Custom(name);
        d
    }

    pub const fn optimized(mut self, prepare: PrepareFn) -> OpDescriptor {
        self.optimized = prepare;
        self
    }

    pub const fn gpu(mut self, rule: SupportRule) -> OpDescriptor {
        self.gpu = Some(rule);
        self
    }

    pub const fn dsp(mut self, rule: SupportRule) -> OpDescriptor {
        self.dsp = Some(rule);
        self
    }

    pub const fn npu(mut self, rule: SupportRule) -> OpDescriptor {
        self.npu = Some(rule);
        self
    }

    pub const fn work(mut self, work: WorkFn) -> OpDescriptor {
        self.work = work;
        self
    }

    /// The rule for `kind` (the CPU runs every op it has a descriptor for).
    pub fn rule(&self, kind: ProcessorKind) -> Option<SupportRule> {
        match kind {
            ProcessorKind::Gpu => self.gpu,
            ProcessorKind::Dsp => self.dsp,
            ProcessorKind::Npu => self.npu,
            ProcessorKind::Cpu => Some(|_| Ok(())),
        }
    }
}

impl std::fmt::Debug for OpDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpDescriptor")
            .field("op", &self.op)
            .field("gpu", &self.gpu.is_some())
            .field("dsp", &self.dsp.is_some())
            .field("npu", &self.npu.is_some())
            .finish()
    }
}

/// Every op module's descriptors. Adding an op module means adding it here.
pub static FAMILIES: &[&[OpDescriptor]] = &[
    ops::activations::DESCRIPTORS,
    ops::batch_matmul::DESCRIPTORS,
    ops::binary::DESCRIPTORS,
    ops::compare::DESCRIPTORS,
    ops::concatenation::DESCRIPTORS,
    ops::conv2d::DESCRIPTORS,
    ops::depth_to_space::DESCRIPTORS,
    ops::depthwise_conv2d::DESCRIPTORS,
    ops::fully_connected::DESCRIPTORS,
    ops::gather::DESCRIPTORS,
    ops::lstm::DESCRIPTORS,
    ops::pad::DESCRIPTORS,
    ops::pool::DESCRIPTORS,
    ops::quantize::DESCRIPTORS,
    ops::reduce::DESCRIPTORS,
    ops::reshape::DESCRIPTORS,
    ops::resize::DESCRIPTORS,
    ops::softmax::DESCRIPTORS,
    ops::split::DESCRIPTORS,
    ops::strided_slice::DESCRIPTORS,
    ops::transpose::DESCRIPTORS,
    ops::transpose_conv::DESCRIPTORS,
    ops::unary::DESCRIPTORS,
];

/// Every descriptor.
pub fn descriptors() -> impl Iterator<Item = &'static OpDescriptor> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

/// Builtin descriptors indexed by builtin code, built once, so prepare (which may run
/// at every invoke for nodes with runtime shapes) looks an op up in O(1).
fn by_code() -> &'static [Option<&'static OpDescriptor>] {
    static TABLE: OnceLock<Vec<Option<&'static OpDescriptor>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<Option<&'static OpDescriptor>> = Vec::new();
        for d in descriptors() {
            if let OpKey::Builtin(b) = d.op
                && let Ok(code) = usize::try_from(b.code())
            {
                if t.len() <= code {
                    t.resize(code + 1, None);
                }
                t[code] = Some(d);
            }
        }
        t
    })
}

/// The descriptor of `op`, if any CPU kernel handles it.
pub fn descriptor(op: &OpKind) -> Option<&'static OpDescriptor> {
    match op {
        OpKind::Builtin(b) => usize::try_from(b.code())
            .ok()
            .and_then(|c| by_code().get(c).copied().flatten()),
        OpKind::Custom(_) => descriptors().find(|d| d.op.matches(op)),
        OpKind::UnknownBuiltin(_) => None,
    }
}

fn unknown(ctx: &PrepareCtx<'_>) -> KernelError {
    KernelError::unsupported(format!("operator {} has no CPU kernel", ctx.op()))
}

/// The reference kernels: plain loops, no packing, SIMD or threads (TFLite's
/// BuiltinRefOpResolver). The oracle every other path is tested against.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceResolver;

impl OpResolver for ReferenceResolver {
    fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
        let d = descriptor(ctx.op()).ok_or_else(|| unknown(ctx))?;
        Ok(checked(ctx, (d.reference)(ctx)?))
    }

    fn work_bound(&self, ctx: &PrepareCtx<'_>, output_shapes: &[Vec<usize>]) -> Option<f64> {
        Some(work_bound(ctx, output_shapes))
    }
}

/// The optimized kernels (TFLite's BuiltinOpResolver): packed weights, SIMD and threads
/// where an op has them, the reference kernel elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct OptimizedResolver;

impl OpResolver for OptimizedResolver {
    fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
        let d = descriptor(ctx.op()).ok_or_else(|| unknown(ctx))?;
        Ok(checked(ctx, (d.optimized)(ctx)?))
    }

    fn work_bound(&self, ctx: &PrepareCtx<'_>, output_shapes: &[Vec<usize>]) -> Option<f64> {
        Some(work_bound(ctx, output_shapes))
    }
}

/// The node's work estimate plus every element it reads and writes. The estimate alone
/// counts a reduction by its output, so a sum of a quarter-gigabyte tensor to one
/// value would count as one operation; the elements touched bound that kind of op.
fn work_bound(ctx: &PrepareCtx<'_>, output_shapes: &[Vec<usize>]) -> f64 {
    let elements = |shape: &[usize]| shape.iter().map(|&d| d as f64).product::<f64>();
    let shape_of =
        |t: usize| -> Vec<usize> {
            let input =
                ctx.node.inputs.iter().zip(&ctx.inputs).find_map(|(i, m)| {
                    (*i == Some(t)).then(|| m.as_ref().map(|m| m.shape.to_vec()))
                });
            if let Some(found) = input {
                return found.unwrap_or_default();
            }
            ctx.node
                .outputs
                .iter()
                .zip(output_shapes)
                .find_map(|(&o, s)| (o == t).then(|| s.clone()))
                .unwrap_or_default()
        };
    let estimate = node_work(ctx.node, &shape_of);
    let read: f64 = ctx.inputs.iter().flatten().map(|m| elements(m.shape)).sum();
    let written: f64 = output_shapes.iter().map(|s| elements(s)).sum();
    estimate.macs + estimate.elements + read + written
}

/// Dtype and byte length a buffer must have at eval (`None`: not checked, e.g. strings,
/// whose length is their content).
type Expect = Option<(DType, usize)>;

fn expect_of(dtype: DType, shape: &[usize]) -> Expect {
    if matches!(dtype, DType::Str | DType::Resource | DType::Variant) {
        return None;
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .map(|bytes| (dtype, bytes))
}

/// Wraps a prepared kernel so that eval first checks every buffer it is handed against
/// what prepare saw: dtype, and byte length (not element count: an int8 buffer of the
/// right element count for a float32 tensor is a quarter of the bytes). Kernels index
/// with prepared shapes, so a buffer that disagrees (a graph that reads a tensor before
/// it is written, an executor bug, a hostile model) is a [`KernelError`], never an
/// out-of-bounds panic. This is the class-wide guard of issue 10's defect 11; the
/// kernels' own length checks stay as a second line.
fn checked(ctx: &PrepareCtx<'_>, prepared: PreparedKernel) -> PreparedKernel {
    let inputs: Vec<Expect> = ctx
        .inputs
        .iter()
        .map(|m| m.and_then(|m| expect_of(m.dtype, m.shape)))
        .collect();
    let outputs: Vec<Expect> = ctx
        .outputs
        .iter()
        .zip(&prepared.output_shapes)
        .map(|(m, shape)| expect_of(m.dtype, shape))
        .collect();
    PreparedKernel {
        output_shapes: prepared.output_shapes,
        kernel: Box::new(Checked {
            inner: prepared.kernel,
            inputs,
            outputs,
        }),
    }
}

struct Checked {
    inner: Box<dyn OpKernel>,
    inputs: Vec<Expect>,
    outputs: Vec<Expect>,
}

fn check_buffer(
    what: &str,
    i: usize,
    want: Expect,
    dtype: DType,
    len: usize,
) -> Result<(), KernelError> {
    if let Some((w_dtype, w_len)) = want
        && (w_dtype != dtype || w_len != len)
    {
        return Err(KernelError::shape(format!(
            "{what} {i} is a {dtype} buffer of {len} bytes; prepared for {w_dtype} of {w_len} bytes"
        )));
    }
    Ok(())
}

impl OpKernel for Checked {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        for (i, (want, got)) in self.inputs.iter().zip(inputs).enumerate() {
            if let Some(v) = got {
                check_buffer("input", i, *want, v.dtype, v.bytes.len())?;
            }
        }
        // Outputs past the node's own are the variable inputs a kernel updates in place
        // (`mutated_inputs`), checked as inputs at prepare; they are not re-checked here.
        if outputs.len() < self.outputs.len() {
            return Err(KernelError::invalid(format!(
                "{} output buffers for {} outputs",
                outputs.len(),
                self.outputs.len()
            )));
        }
        for (i, (want, got)) in self.outputs.iter().zip(outputs.iter()).enumerate() {
            check_buffer("output", i, *want, got.dtype, got.bytes.len())?;
        }
        self.inner.eval(inputs, outputs)
    }

    fn mutated_inputs(&self) -> &[usize] {
        self.inner.mutated_inputs()
    }

    fn consumed_inputs(&self) -> &[usize] {
        self.inner.consumed_inputs()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }
}

/// Whether a processor of class `kind` runs this node, by the op's descriptor.
///
/// For the GPU, a node whose outputs are all known at prepare (folded: fp16 weight
/// DEQUANTIZE, DENSIFY, shape arithmetic) costs nothing: consumers read the values as
/// constants, so it is supported whatever the op.
pub fn supports(kind: ProcessorKind, ctx: &NodeSupportCtx<'_>) -> Support {
    let folded = !ctx.outputs.is_empty() && ctx.outputs.iter().all(|o| o.data.is_some());
    if kind == ProcessorKind::Gpu && folded {
        return Support::Supported;
    }
    let Some(d) = descriptor(&ctx.node.op) else {
        return Support::Unsupported(format!("{} has no kernel on any processor", ctx.node.op));
    };
    let Some(rule) = d.rule(kind) else {
        return Support::Unsupported(format!("{kind} does not run {}", ctx.node.op));
    };
    if let Err(why) = rule(ctx) {
        return Support::Unsupported(why);
    }
    // The DSP and NPU classes compute with the reference kernels' integer arithmetic (the
    // emulated devices run them; a vendor driver must match them bit for bit), so a node
    // the reference kernel refuses (a dtype it lacks) does not run there either.
    if matches!(kind, ProcessorKind::Dsp | ProcessorKind::Npu) {
        let pctx = PrepareCtx {
            node: ctx.node,
            inputs: ctx.inputs.clone(),
            outputs: ctx.outputs.clone(),
            intermediates: switchyard_interpreter::kernel::intermediate_metas(
                ctx.subgraph,
                ctx.node,
            ),
            threads: 1,
        };
        if let Err(e) = (d.reference)(&pctx) {
            return Support::Unsupported(format!("{kind} cannot run this {}: {e}", ctx.node.op));
        }
    }
    Support::Supported
}

/// Ops a processor class runs at all (for documentation and listings).
pub fn ops_on(kind: ProcessorKind) -> impl Iterator<Item = OpKey> {
    descriptors()
        .filter(move |d| d.rule(kind).is_some())
        .map(|d| d.op)
}

/// Work of `node` from its descriptor (elementwise for ops without one).
pub fn node_work(node: &Node, shape: &dyn Fn(usize) -> Vec<usize>) -> OpWork {
    let w = WorkCtx { node, shape };
    match descriptor(&node.op) {
        Some(d) => (d.work)(&w),
        None => crate::work::elementwise(&w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_one_descriptor() {
        let all: Vec<_> = descriptors().collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.op, b.op, "{} is described twice", a.op.name());
            }
        }
        for d in &all {
            let op = match d.op {
                OpKey::Builtin(b) => OpKind::Builtin(b),
                OpKey::Custom(n) => OpKind::Custom(n.to_string()),
            };
            let found = descriptor(&op).expect("lookup finds every descriptor");
            assert_eq!(found.op, d.op);
        }
        assert!(descriptor(&OpKind::Builtin(BuiltinOp::Svdf)).is_none());
        assert!(descriptor(&OpKind::Custom("NoSuchOp".into())).is_none());
    }

    /// Issue 10, defect 11: a kernel handed a buffer whose byte length disagrees with
    /// what prepare saw (a tensor read before it is written, a folded constant written
    /// over, a length counted in elements of the wrong dtype) indexed out of bounds and
    /// panicked. Every node of every real model, prepared by both registries, now answers
    /// a short or long buffer, in any input or the output, with an error.
    #[test]
    fn every_kernel_refuses_buffers_of_the_wrong_byte_length() {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        use switchyard_interpreter::{AlignedBuf, Model, TensorMeta};

        let dir = switchyard_testkit::models_dir();
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .expect("models/ (scripts/setup.sh)")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
            .collect();
        paths.sort();
        let (mut checked, mut refused) = (0usize, 0usize);
        for path in paths {
            let model = Model::from_path(&path).expect("model loads");
            let sg = &model.subgraphs[0];
            // Constants as dense bytes (sparse ones expanded).
            let dense: Vec<Option<Vec<u8>>> = sg
                .tensors
                .iter()
                .map(|d| d.data.as_ref().map(|c| c.dense().unwrap().into_owned()))
                .collect();
            for node in &sg.nodes {
                let meta = |t: usize| {
                    let d = &sg.tensors[t];
                    TensorMeta {
                        dtype: d.dtype,
                        shape: &d.shape,
                        quant: d.quant.as_ref(),
                        data: dense[t].as_deref(),
                        name: &d.name,
                    }
                };
                let ctx = PrepareCtx {
                    node,
                    inputs: node.inputs.iter().map(|t| t.map(meta)).collect(),
                    outputs: node.outputs.iter().map(|&t| meta(t)).collect(),
                    intermediates: switchyard_interpreter::kernel::intermediate_metas(sg, node),
                    threads: 1,
                };
                let resolvers: [&dyn OpResolver; 2] = [&ReferenceResolver, &OptimizedResolver];
                for r in resolvers {
                    let Ok(prepared) = r.prepare(&ctx) else {
                        continue;
                    };
                    if !prepared.kernel.mutated_inputs().is_empty() {
                        continue;
                    }
                    let ins: Vec<Option<(usize, AlignedBuf)>> = node
                        .inputs
                        .iter()
                        .map(|t| {
                            t.map(|t| {
                                let d = &sg.tensors[t];
                                let buf = match &dense[t] {
                                    Some(c) => AlignedBuf::from_bytes(c),
                                    None => AlignedBuf::zeroed(
                                        d.shape.iter().product::<usize>() * d.dtype.size(),
                                    ),
                                };
                                (t, buf)
                            })
                        })
                        .collect();
                    let outs: Vec<(usize, AlignedBuf)> = node
                        .outputs
                        .iter()
                        .zip(&prepared.output_shapes)
                        .map(|(&t, shape)| {
                            let n = shape.iter().product::<usize>() * sg.tensors[t].dtype.size();
                            (t, AlignedBuf::zeroed(n))
                        })
                        .collect();
                    // Case k: buffer k (inputs, then outputs) is one byte short or long.
                    let buffers = ins.iter().flatten().count() + outs.len();
                    for k in 0..buffers {
                        for delta in [-1isize, 1] {
                            let mut ins = ins.clone();
                            let mut outs = outs.clone();
                            let target = ins
                                .iter_mut()
                                .flatten()
                                .map(|(_, b)| b)
                                .chain(outs.iter_mut().map(|(_, b)| b))
                                .nth(k)
                                .expect("k < buffers");
                            let len = target.len();
                            if len == 0 && delta < 0 {
                                continue;
                            }
                            let new_len = (len as isize + delta) as usize;
                            let mut bytes = target.as_slice().to_vec();
                            bytes.resize(new_len, 0);
                            *target = AlignedBuf::from_bytes(&bytes);
                            let in_views: Vec<Option<TensorView<'_>>> = ins
                                .iter()
                                .map(|x| {
                                    x.as_ref().map(|(t, b)| TensorView {
                                        dtype: sg.tensors[*t].dtype,
                                        shape: &sg.tensors[*t].shape,
                                        quant: sg.tensors[*t].quant.as_ref(),
                                        bytes: b.as_slice(),
                                    })
                                })
                                .collect();
                            let mut out_views: Vec<TensorViewMut<'_>> = outs
                                .iter_mut()
                                .zip(&prepared.output_shapes)
                                .map(|((t, b), shape)| TensorViewMut {
                                    dtype: sg.tensors[*t].dtype,
                                    shape,
                                    quant: sg.tensors[*t].quant.as_ref(),
                                    bytes: b.as_mut_slice(),
                                })
                                .collect();
                            let result = catch_unwind(AssertUnwindSafe(|| {
                                prepared.kernel.eval(&in_views, &mut out_views)
                            }));
                            let op = &node.op;
                            match result {
                                Err(_) => panic!(
                                    "{} node {} ({op}): eval panicked on buffer {k} resized by {delta}",
                                    path.display(),
                                    node.index
                                ),
                                Ok(Ok(())) => panic!(
                                    "{} node {} ({op}): eval accepted buffer {k} resized by {delta}",
                                    path.display(),
                                    node.index
                                ),
                                Ok(Err(_)) => refused += 1,
                            }
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 200 && refused > 1000,
            "{checked} kernels, {refused} refusals"
        );
    }
}
