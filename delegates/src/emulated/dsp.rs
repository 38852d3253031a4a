//! The emulated DSP's capability model: quantized (int8/uint8) ops only, the subset a
//! vector DSP's neural-network library accepts.
//!
//! Which ops it accepts, and with which dtypes, is the `dsp` entry of each op's
//! descriptor in `switchyard-kernels` (listed by `registry::ops_on`); the class rule is
//! `support::dsp_quantized`: activations in and out int8 or uint8 with quantization
//! parameters; weights int8/uint8 (per-channel allowed), biases and shape operands int32
//! constants. QUANTIZE requantizes between int8 and uint8; from float it is refused
//! like every float op.

use switchyard_interpreter::{NodeSupportCtx, ProcessorKind, Support};

pub fn supports(ctx: &NodeSupportCtx<'_>) -> Support {
    super::by_descriptor(ProcessorKind::Dsp, "dsp (emulated)", ctx)
}
