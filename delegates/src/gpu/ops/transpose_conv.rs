//! TRANSPOSE_CONV (builtin, float32, constant filter) and MediaPipe's custom
//! Convolution2DTransposeBias, in gather form: one invocation per output pixel and
//! channel, the channel's filter slice staged in workgroup memory. Output size and
//! padding come from the CPU kernel's own parameter derivation, so both agree.

use switchyard_interpreter::{DType, OpOptions, PrepareCtx};

use super::{NodeView, activation_code, count_u32, u32_of};
use crate::cpu::ops::transpose_conv::prepare_params;
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::TRANSPOSE_CONV;

struct Plan {
    params: Vec<u32>,
    groups: [u32; 3],
    activation: u32,
    data: usize,
    weights: usize,
    bias: Option<usize>,
    out_channels: usize,
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    let ctx = PrepareCtx {
        node: v.node,
        inputs: v.inputs.to_vec(),
        outputs: v.outputs.to_vec(),
        intermediates: Vec::new(),
        threads: 1,
    };
    let p = prepare_params(&ctx).map_err(|e| e.to_string())?;
    if p.dtype != DType::F32 {
        return Err(format!(
            "{} transposed convolution; the GPU delegate runs float32 only",
            p.dtype
        ));
    }
    let out = v.f32_output(0)?;
    if out.shape != p.output_shape().as_slice() {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            p.output_shape()
        ));
    }
    if v.input(p.weights_input)?.data.is_none() {
        return Err("the filter must be a constant".into());
    }
    count_u32(out.shape)?;
    let pixels = p.batches * p.out_h * p.out_w;
    let mut params = Vec::with_capacity(14);
    for (d, what) in [
        (p.batches, "batch"),
        (p.in_h, "height"),
        (p.in_w, "width"),
        (p.in_c, "channels"),
        (p.out_h, "height"),
        (p.out_w, "width"),
        (p.out_c, "channels"),
        (p.filter_h, "filter height"),
        (p.filter_w, "filter width"),
        (p.stride_h, "stride"),
        (p.stride_w, "stride"),
        (p.pad_top, "padding"),
        (p.pad_left, "padding"),
        (pixels, "pixels"),
    ] {
        params.push(u32_of(d, what)?);
    }
    let groups_x = u32_of(pixels.div_ceil(64), "pixel groups")?;
    let groups_y = u32_of(p.out_c, "channels")?;
    if groups_x > 65_535 || groups_y > 65_535 {
        return Err(format!(
            "{pixels} pixels x {} channels exceed one dispatch",
            p.out_c
        ));
    }
    let activation = match &v.node.options {
        OpOptions::Conv(c) => activation_code(c.activation)?,
        _ => 0,
    };
    Ok(Plan {
        params,
        groups: [groups_x, groups_y, 1],
        activation,
        data: p.data_input,
        weights: p.weights_input,
        bias: p.bias_input,
        out_channels: p.out_c,
    })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let x = l.input(p.data)?;
    let w = l.input(p.weights)?;
    let bias = match p.bias {
        Some(b) => l.input(b)?,
        None => l.constant(vec![0.0; p.out_channels]),
    };
    let out = l.output(0)?;
    l.dispatch(
        Dispatch::new(
            &TRANSPOSE_CONV,
            vec![x, w, bias],
            out,
            p.params,
            Grid::Groups(p.groups),
        )
        .clamp(p.activation),
    );
    Ok(())
}
