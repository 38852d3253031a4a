//! The emulated DSP's capability model: quantized (int8/uint8) ops only, the subset a
//! vector DSP's neural-network library accepts.
//!
//! Accepted ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, SUB, MUL,
//! AVERAGE_POOL_2D, MAX_POOL_2D, CONCATENATION, RESHAPE, SQUEEZE, EXPAND_DIMS, PAD,
//! PADV2, STRIDED_SLICE, SPLIT, SPLIT_V, LOGISTIC, TANH, RELU, RELU6, HARD_SWISH,
//! SOFTMAX, MEAN, RESIZE_BILINEAR, DEPTH_TO_SPACE, QUANTIZE (requantize between int8
//! and uint8; from float it is refused like every float op). Activations in and out
//! must be int8 or uint8 with quantization parameters; weights int8/uint8
//! (per-channel allowed), biases and shape operands int32 constants.

use switchyard_interpreter::{BuiltinOp as B, DType, NodeSupportCtx, Support};

use super::{TensorRole, node_tensors};

/// Ops the emulated DSP accepts (dtype rules apply on top).
pub const OPS: &[B] = &[
    B::Conv2d,
    B::DepthwiseConv2d,
    B::FullyConnected,
    B::Add,
    B::Sub,
    B::Mul,
    B::AveragePool2d,
    B::MaxPool2d,
    B::Concatenation,
    B::Reshape,
    B::Squeeze,
    B::ExpandDims,
    B::Pad,
    B::PadV2,
    B::StridedSlice,
    B::Split,
    B::SplitV,
    B::Logistic,
    B::Tanh,
    B::Relu,
    B::Relu6,
    B::HardSwish,
    B::Softmax,
    B::Mean,
    B::ResizeBilinear,
    B::DepthToSpace,
    B::Quantize,
];

pub fn supports(ctx: &NodeSupportCtx<'_>) -> Support {
    let op = &ctx.node.op;
    if !ctx.node.builtin().is_some_and(|b| OPS.contains(&b)) {
        return Support::Unsupported(format!("dsp (emulated) does not run {op}"));
    }
    for t in node_tensors(ctx) {
        let ok = match (t.role, t.constant) {
            (TensorRole::Output, _) | (TensorRole::Input, false) => {
                matches!(t.dtype, DType::I8 | DType::U8)
            }
            (TensorRole::Input, true) => matches!(t.dtype, DType::I8 | DType::U8 | DType::I32),
        };
        if !ok {
            return Support::Unsupported(format!(
                "dsp runs quantized ops only: {op} has {} {}s",
                t.dtype,
                t.role.name()
            ));
        }
        if matches!(t.dtype, DType::I8 | DType::U8) && !t.quantized {
            return Support::Unsupported(format!(
                "dsp runs quantized ops only: {op} {} `{}` has no quantization parameters",
                t.role.name(),
                t.name
            ));
        }
    }
    Support::Supported
}
