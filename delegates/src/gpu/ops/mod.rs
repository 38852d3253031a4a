//! One file per operator (or tight family sharing one shader), each with `check` (what
//! `lower` checks before lowering: compile never trusts that `supports` was asked) and
//! `lower` (the compute dispatches that run the node). What `supports` answers is the
//! op descriptors' GPU rule in `switchyard-kernels`; a test holds the two together.

pub mod activations;
pub mod binary;
pub mod concatenation;
pub mod conv2d;
pub mod depth_to_space;
pub mod depthwise_conv2d;
pub mod fully_connected;
pub mod pad;
pub mod pool;
pub mod reduce;
pub mod reshape;
pub mod resize;
pub mod softmax;
pub mod transpose_conv;

use switchyard_interpreter::{Activation, BuiltinOp as B, DType, Node, OpKind, TensorMeta};

use super::ir::Lowering;
use crate::cpu::ops::CONV2D_TRANSPOSE_BIAS;

/// Most dimensions any shader indexes (NumPy broadcasting, PAD, reductions).
pub const MAX_RANK: usize = 6;

/// A node with what is known about its tensors (dtype, resolved shape, constant value).
pub struct NodeView<'a> {
    pub node: &'a Node,
    pub inputs: &'a [Option<TensorMeta<'a>>],
    pub outputs: &'a [TensorMeta<'a>],
}

impl<'a> NodeView<'a> {
    pub fn input(&self, i: usize) -> Result<TensorMeta<'a>, String> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("missing input {i}"))
    }

    pub fn optional_input(&self, i: usize) -> Option<TensorMeta<'a>> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn output(&self, i: usize) -> Result<TensorMeta<'a>, String> {
        self.outputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing output {i}"))
    }

    /// Input `i`, which must be float32.
    pub fn f32_input(&self, i: usize) -> Result<TensorMeta<'a>, String> {
        let t = self.input(i)?;
        expect_f32(&t, &format!("input {i}"))?;
        Ok(t)
    }

    /// Output `i`, which must be float32.
    pub fn f32_output(&self, i: usize) -> Result<TensorMeta<'a>, String> {
        let t = self.output(i)?;
        expect_f32(&t, &format!("output {i}"))?;
        Ok(t)
    }

    pub fn expect_arity(&self, min: usize, max: usize, outputs: usize) -> Result<(), String> {
        let n = self.inputs.len();
        if n < min || n > max {
            return Err(format!("expects {min}..={max} inputs, has {n}"));
        }
        if self.outputs.len() != outputs {
            return Err(format!(
                "expects {outputs} outputs, has {}",
                self.outputs.len()
            ));
        }
        Ok(())
    }
}

fn expect_f32(t: &TensorMeta<'_>, what: &str) -> Result<(), String> {
    if t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(format!(
            "{what} is {}; the GPU delegate runs float32 only",
            t.dtype
        ))
    }
}

/// Element count as the u32 the shaders index with.
pub fn count_u32(shape: &[usize]) -> Result<u32, String> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("shape {shape:?} has more than 2^32 elements"))
}

pub fn u32_of(v: usize, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in 32 bits"))
}

/// Workgroups along one dimension, within the per-dimension limit.
pub fn groups_1d(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n.max(1))
        .ok()
        .filter(|&g| g <= super::pipelines::MAX_WORKGROUPS_PER_DIMENSION)
        .ok_or_else(|| format!("{n} {what} exceed one dispatch"))
}

/// One workgroup per item, numbered over x then y (`wid.x + wid.y * nwg.x`).
pub fn groups_2d(items: u32) -> Result<[u32; 3], String> {
    let max = super::pipelines::MAX_WORKGROUPS_PER_DIMENSION;
    let items = items.max(1);
    if items <= max {
        return Ok([items, 1, 1]);
    }
    let y = items.div_ceil(max);
    if y > max {
        return Err(format!("{items} workgroups exceed one dispatch"));
    }
    Ok([max, y, 1])
}

/// The fused activation as the prelude's `clamp_act` code. Only the clamps: LiteRT's
/// kernels turn a fused activation into a (min, max) range and so ignore TANH and
/// SIGN_BIT; such a node stays on the CPU rather than risk a second interpretation.
pub fn activation_code(a: Activation) -> Result<u32, String> {
    match a {
        Activation::None => Ok(0),
        Activation::Relu => Ok(1),
        Activation::ReluN1To1 => Ok(2),
        Activation::Relu6 => Ok(3),
        Activation::Tanh | Activation::SignBit => Err(format!(
            "fused {a:?} activation (only clamps are fused on the GPU)"
        )),
    }
}

/// `shape` right-aligned into `MAX_RANK` dimensions with leading 1s.
pub fn pad_shape(shape: &[usize]) -> Result<[usize; MAX_RANK], String> {
    if shape.len() > MAX_RANK {
        return Err(format!(
            "rank {} is above the GPU shaders' {MAX_RANK}",
            shape.len()
        ));
    }
    let mut out = [1usize; MAX_RANK];
    out[MAX_RANK - shape.len()..].copy_from_slice(shape);
    Ok(out)
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

type CheckFn = fn(&NodeView<'_>) -> Result<(), String>;
type LowerFn = fn(&NodeView<'_>, &mut Lowering<'_, '_>) -> Result<(), String>;

fn route(op: B) -> Option<(CheckFn, LowerFn)> {
    Some(match op {
        B::Add
        | B::Sub
        | B::Mul
        | B::Div
        | B::Maximum
        | B::Minimum
        | B::SquaredDifference
        | B::Prelu => (binary::check, binary::lower),
        B::Relu | B::Relu6 | B::ReluN1To1 | B::Tanh | B::Logistic | B::HardSwish | B::LeakyRelu => {
            (activations::check, activations::lower)
        }
        B::Conv2d => (conv2d::check, conv2d::lower),
        B::DepthwiseConv2d => (depthwise_conv2d::check, depthwise_conv2d::lower),
        B::FullyConnected => (fully_connected::check, fully_connected::lower),
        B::MaxPool2d | B::AveragePool2d => (pool::check, pool::lower),
        B::Pad | B::PadV2 => (pad::check, pad::lower),
        B::Reshape | B::Squeeze | B::ExpandDims => (reshape::check, reshape::lower),
        B::Concatenation => (concatenation::check, concatenation::lower),
        B::Mean | B::Sum => (reduce::check, reduce::lower),
        B::Softmax => (softmax::check, softmax::lower),
        B::ResizeBilinear | B::ResizeNearestNeighbor => (resize::check, resize::lower),
        B::TransposeConv => (transpose_conv::check, transpose_conv::lower),
        B::DepthToSpace => (depth_to_space::check, depth_to_space::lower),
        _ => return None,
    })
}

/// The op's check and lower, builtin or custom.
fn route_node(node: &Node) -> Result<(CheckFn, LowerFn), String> {
    match &node.op {
        OpKind::Builtin(op) => route(*op).ok_or_else(|| format!("{} has no GPU kernel", op.name())),
        OpKind::Custom(name) if name == CONV2D_TRANSPOSE_BIAS => {
            Ok((transpose_conv::check, transpose_conv::lower))
        }
        other => Err(format!("{other} has no GPU kernel")),
    }
}

/// Whether the GPU can run this node, or why not.
pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    // Values the interpreter folds at prepare (fp16 weight DEQUANTIZE, DENSIFY of sparse
    // weights, shape arithmetic) cost the GPU nothing: consumers read them as constants.
    if !v.outputs.is_empty() && v.outputs.iter().all(|o| o.data.is_some()) {
        return Ok(());
    }
    if let Some(op @ (B::Dequantize | B::Densify)) = v.node.builtin() {
        return match v.input(0)?.data {
            Some(_) => Ok(()),
            None => Err(format!(
                "{} of a runtime tensor has no GPU kernel",
                op.name()
            )),
        };
    }
    let (check, _) = route_node(v.node)?;
    check(v)
}

/// Appends the dispatches of one node.
pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (check, lower) = route_node(v.node)?;
    check(v)?;
    lower(v, l)
}
