//! The emulated NPU's capability model: int8 only (per-channel weights allowed),
//! static shapes, a small op set, and a fixed on-chip memory that must hold a
//! partition's weights and its live activations.
//!
//! Which ops it accepts is the `npu` entry of each op's descriptor in
//! `switchyard-kernels` (QUANTIZE only as an int8 to int8 requantize); the class rule,
//! `support::npu_int8`, refuses uint8 and float tensors and any tensor whose shape
//! signature has an unknown (-1) dimension. The on-chip memory check is this device's.

use switchyard_config::DeviceProfile;
use switchyard_interpreter::{NodeSupportCtx, ProcessorKind, Support};

use super::node_tensors;

pub fn supports(ctx: &NodeSupportCtx<'_>, profile: &DeviceProfile) -> Support {
    let op = &ctx.node.op;
    if let Support::Unsupported(why) =
        super::by_descriptor(ProcessorKind::Npu, "npu (emulated)", ctx)
    {
        return Support::Unsupported(why);
    }
    let bytes = node_tensors(ctx)
        .iter()
        .fold(0usize, |a, t| a.saturating_add(t.bytes));
    let limit = profile.on_chip_memory_bytes;
    if limit > 0 && bytes as u64 > limit {
        return Support::Unsupported(format!(
            "{op} alone needs {bytes} bytes of on-chip memory (weights and activations); \
             npu (emulated) has {limit}"
        ));
    }
    Support::Supported
}
