//! The emulated NPU's capability model: int8 only (per-channel weights allowed),
//! static shapes, a small op set, and a fixed on-chip memory that must hold a
//! partition's weights and its live activations.
//!
//! Accepted ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, MUL,
//! AVERAGE_POOL_2D, MAX_POOL_2D, CONCATENATION, RESHAPE, PAD, STRIDED_SLICE, LOGISTIC,
//! RELU, RELU6, QUANTIZE (int8 to int8 requantize). uint8 and float tensors are
//! refused, as is any tensor whose shape signature has an unknown (-1) dimension.

use switchyard_config::DeviceProfile;
use switchyard_interpreter::{BuiltinOp as B, DType, NodeSupportCtx, Support};

use super::{TensorRole, node_tensors};

/// Ops the emulated NPU accepts (dtype, shape and memory rules apply on top).
pub const OPS: &[B] = &[
    B::Conv2d,
    B::DepthwiseConv2d,
    B::FullyConnected,
    B::Add,
    B::Mul,
    B::AveragePool2d,
    B::MaxPool2d,
    B::Concatenation,
    B::Reshape,
    B::Pad,
    B::StridedSlice,
    B::Logistic,
    B::Relu,
    B::Relu6,
    B::Quantize,
];

pub fn supports(ctx: &NodeSupportCtx<'_>, profile: &DeviceProfile) -> Support {
    let op = &ctx.node.op;
    if !ctx.node.builtin().is_some_and(|b| OPS.contains(&b)) {
        return Support::Unsupported(format!("npu (emulated) does not run {op}"));
    }
    let mut bytes = 0usize;
    for t in node_tensors(ctx) {
        let ok = match (t.role, t.constant) {
            (TensorRole::Output, _) | (TensorRole::Input, false) => t.dtype == DType::I8,
            (TensorRole::Input, true) => matches!(t.dtype, DType::I8 | DType::I32),
        };
        if !ok {
            return Support::Unsupported(format!(
                "npu runs int8 only: {op} has {} {}s",
                t.dtype,
                t.role.name()
            ));
        }
        if t.dtype == DType::I8 && !t.quantized {
            return Support::Unsupported(format!(
                "npu runs int8 only: {op} {} `{}` has no quantization parameters",
                t.role.name(),
                t.name
            ));
        }
        if let Some(sig) = t.signature
            && sig.iter().any(|&d| d < 0)
        {
            return Support::Unsupported(format!(
                "npu needs static shapes: {op} {} `{}` has dynamic shape {sig:?}",
                t.role.name(),
                t.name
            ));
        }
        bytes = bytes.saturating_add(t.bytes);
    }
    let limit = profile.on_chip_memory_bytes;
    if limit > 0 && bytes as u64 > limit {
        return Support::Unsupported(format!(
            "{op} alone needs {bytes} bytes of on-chip memory (weights and activations); \
             npu (emulated) has {limit}"
        ));
    }
    Support::Supported
}
