//! Which processor can run a node: the rules the descriptors' GPU, DSP and NPU entries
//! are built from.
//!
//! A descriptor names, per processor, a [`SupportRule`]; an op without one does not run
//! there. The rules below are the processor classes' common parts (the DSP takes
//! quantized int8/uint8 tensors, the NPU int8 with static shapes, the GPU float32 with
//! only clamp activations fused and 32-bit indexing); op modules add their own shape and
//! option checks on top. What depends on one device's profile (the NPU's on-chip memory)
//! stays with that device.
//!
//! The GPU delegate's `compile` lowers each node with its own checks and never trusts
//! these rules; a test in `switchyard-delegates` holds the two to the same answers.

use switchyard_interpreter::{Activation, DType, NodeSupportCtx, TensorMeta};

/// `Ok` when the processor can run the node, or why not.
pub type SupportRule = fn(&NodeSupportCtx<'_>) -> Result<(), String>;

/// Whether a tensor is read or written by the node being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    Input,
    Output,
}

impl TensorRole {
    pub fn name(self) -> &'static str {
        match self {
            TensorRole::Input => "input",
            TensorRole::Output => "output",
        }
    }
}

/// One tensor of a node as the support rules see it.
pub struct NodeTensor<'a> {
    pub role: TensorRole,
    pub dtype: DType,
    pub name: &'a str,
    /// A model constant or a value folded at prepare.
    pub constant: bool,
    /// Has quantization parameters (a scale).
    pub quantized: bool,
    /// The stored shape signature (-1 for a dimension known only at run time).
    pub signature: Option<&'a [i32]>,
    pub bytes: usize,
}

/// Every present tensor of the node, inputs first.
pub fn node_tensors<'a>(ctx: &'a NodeSupportCtx<'a>) -> Vec<NodeTensor<'a>> {
    let sg = ctx.subgraph;
    let mut out = Vec::new();
    let ids = ctx.node.inputs.iter().map(|t| (TensorRole::Input, *t));
    let ids = ids.chain(
        ctx.node
            .outputs
            .iter()
            .map(|&t| (TensorRole::Output, Some(t))),
    );
    let metas = ctx
        .inputs
        .iter()
        .map(|m| m.as_ref())
        .chain(ctx.outputs.iter().map(Some));
    for ((role, t), meta) in ids.zip(metas) {
        let (Some(t), Some(meta)) = (t, meta) else {
            continue;
        };
        let def = sg.tensors.get(t);
        out.push(NodeTensor {
            role,
            dtype: meta.dtype,
            name: meta.name,
            constant: meta.data.is_some() || def.is_some_and(|d| d.is_const()),
            quantized: meta.quant.is_some_and(|q| !q.scale.is_empty()),
            signature: def.and_then(|d| d.shape_signature.as_deref()),
            bytes: meta
                .shape
                .iter()
                .product::<usize>()
                .saturating_mul(meta.dtype.size()),
        });
    }
    out
}

/// The DSP class: activations in and out int8 or uint8 with quantization parameters;
/// constants (weights, biases, shape operands) int8, uint8 or int32.
pub fn dsp_quantized(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    let op = &ctx.node.op;
    for t in node_tensors(ctx) {
        let ok = match (t.role, t.constant) {
            (TensorRole::Output, _) | (TensorRole::Input, false) => {
                matches!(t.dtype, DType::I8 | DType::U8)
            }
            (TensorRole::Input, true) => matches!(t.dtype, DType::I8 | DType::U8 | DType::I32),
        };
        if !ok {
            return Err(format!(
                "dsp runs quantized ops only: {op} has {} {}s",
                t.dtype,
                t.role.name()
            ));
        }
        if matches!(t.dtype, DType::I8 | DType::U8) && !t.quantized {
            return Err(format!(
                "dsp runs quantized ops only: {op} {} `{}` has no quantization parameters",
                t.role.name(),
                t.name
            ));
        }
    }
    Ok(())
}

/// The NPU class: int8 only (int32 constants for biases and shapes), quantization
/// parameters on every int8 tensor, no dimension unknown until run time.
pub fn npu_int8(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    let op = &ctx.node.op;
    for t in node_tensors(ctx) {
        let ok = match (t.role, t.constant) {
            (TensorRole::Output, _) | (TensorRole::Input, false) => t.dtype == DType::I8,
            (TensorRole::Input, true) => matches!(t.dtype, DType::I8 | DType::I32),
        };
        if !ok {
            return Err(format!(
                "npu runs int8 only: {op} has {} {}s",
                t.dtype,
                t.role.name()
            ));
        }
        if t.dtype == DType::I8 && !t.quantized {
            return Err(format!(
                "npu runs int8 only: {op} {} `{}` has no quantization parameters",
                t.role.name(),
                t.name
            ));
        }
        if let Some(sig) = t.signature
            && sig.iter().any(|&d| d < 0)
        {
            return Err(format!(
                "npu needs static shapes: {op} {} `{}` has dynamic shape {sig:?}",
                t.role.name(),
                t.name
            ));
        }
    }
    Ok(())
}

/// Most dimensions any GPU shader indexes (NumPy broadcasting, PAD, reductions).
pub const GPU_MAX_RANK: usize = 6;

/// Input `i` of the node, which must be present.
pub fn input<'a>(ctx: &NodeSupportCtx<'a>, i: usize) -> Result<TensorMeta<'a>, String> {
    ctx.inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("missing input {i}"))
}

pub fn output<'a>(ctx: &NodeSupportCtx<'a>, i: usize) -> Result<TensorMeta<'a>, String> {
    ctx.outputs
        .get(i)
        .copied()
        .ok_or_else(|| format!("missing output {i}"))
}

/// Between `min` and `max` inputs and exactly `outputs` outputs.
pub fn arity(
    ctx: &NodeSupportCtx<'_>,
    min: usize,
    max: usize,
    outputs: usize,
) -> Result<(), String> {
    let n = ctx.inputs.len();
    if n < min || n > max {
        return Err(format!("expects {min}..={max} inputs, has {n}"));
    }
    if ctx.outputs.len() != outputs {
        return Err(format!(
            "expects {outputs} outputs, has {}",
            ctx.outputs.len()
        ));
    }
    Ok(())
}

/// The GPU runs float32 only.
pub fn gpu_f32(t: &TensorMeta<'_>, what: &str) -> Result<(), String> {
    if t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!(
            "{what} is {}; the GPU delegate runs float32 only",
            t.dtype
        ))
    }
}

/// Every present input and every output is float32.
pub fn gpu_all_f32(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    for (i, t) in ctx.inputs.iter().enumerate() {
        if let Some(t) = t {
            gpu_f32(t, &format!("input {i}"))?;
        }
    }
    for (i, t) in ctx.outputs.iter().enumerate() {
        gpu_f32(t, &format!("output {i}"))?;
    }
    Ok(())
}

/// Shaders index with u32: element counts and dimensions must fit.
pub fn gpu_count(shape: &[usize]) -> Result<(), String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| u32::try_from(n).ok())
        .map(|_| ())
        .ok_or_else(|| format!("shape {shape:?} has more than 2^32 elements"))
}

/// A value the shaders take as a u32 parameter.
pub fn gpu_u32(v: usize, what: &str) -> Result<(), String> {
    u32::try_from(v)
        .map(|_| ())
        .map_err(|_| format!("{what} {v} does not fit in 32 bits"))
}

/// Shapes the GPU's rank-6 indexing can hold.
pub fn gpu_rank(shape: &[usize]) -> Result<(), String> {
    if shape.len() > GPU_MAX_RANK {
        return Err(format!(
            "rank {} is above the GPU shaders' {GPU_MAX_RANK}",
            shape.len()
        ));
    }
    Ok(())
}

/// Only clamps are fused on the GPU: LiteRT's kernels turn a fused activation into a
/// (min, max) range and so ignore TANH and SIGN_BIT; such a node stays on the CPU rather
/// than risk a second interpretation.
pub fn gpu_activation(a: Activation) -> Result<(), String> {
    match a {
        Activation::None | Activation::Relu | Activation::ReluN1To1 | Activation::Relu6 => Ok(()),
        Activation::Tanh | Activation::SignBit => Err(format!(
            "fused {a:?} activation (only clamps are fused on the GPU)"
        )),
    }
}

/// Integer values of a constant int32/int64 tensor.
pub fn const_ints(t: &TensorMeta<'_>, what: &str) -> Result<Vec<i64>, String> {
    let data = t.data.ok_or_else(|| format!("{what} must be a constant"))?;
    match t.dtype {
        DType::I32 => Ok(data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()),
        DType::I64 => Ok(data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()),
        other => Err(format!("{what} is {other}, expected int32 or int64")),
    }
}

/// GPU rule for DEQUANTIZE and DENSIFY: only of constants, which the interpreter folds
/// at prepare so the GPU reads the result as a constant.
pub fn gpu_of_constant(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    match input(ctx, 0)?.data {
        Some(_) => Ok(()),
        None => Err(format!(
            "{} of a runtime tensor has no GPU kernel",
            ctx.node.op
        )),
    }
}
