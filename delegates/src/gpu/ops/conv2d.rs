//! CONV_2D on float32: NHWC input, OHWI filter, optional bias, fused activation.

use switchyard_interpreter::OpOptions;

use super::{NodeView, activation_code, count_u32, u32_of};
use crate::cpu::util::conv_output_size;
use crate::gpu::compile::{Dispatch, Lowering};
use crate::gpu::pipelines::CONV2D;

struct Plan {
    activation: u32,
    params: Vec<u32>,
    out_channels: usize,
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    v.expect_arity(2, 3, 1)?;
    let OpOptions::Conv(o) = &v.node.options else {
        return Err("CONV_2D without convolution options".into());
    };
    let x = v.f32_input(0)?;
    let w = v.f32_input(1)?;
    let out = v.f32_output(0)?;
    let (&[n, ih, iw, ic], &[oc, kh, kw, wc]) = (x.shape, w.shape) else {
        return Err(format!(
            "input {:?} and filter {:?} must both be rank 4",
            x.shape, w.shape
        ));
    };
    if wc != ic {
        return Err(format!(
            "filter depth {wc} differs from input depth {ic} (grouped convolution)"
        ));
    }
    if let Some(b) = v.optional_input(2) {
        super::expect_f32(&b, "bias")?;
        if b.element_count() != oc {
            return Err(format!(
                "bias has {} values for {oc} channels",
                b.element_count()
            ));
        }
    }
    let (oh, pad_top) =
        conv_output_size(ih, kh, o.stride_h, o.dilation_h, o.padding).map_err(|e| e.to_string())?;
    let (ow, pad_left) =
        conv_output_size(iw, kw, o.stride_w, o.dilation_w, o.padding).map_err(|e| e.to_string())?;
    if out.shape != [n, oh, ow, oc] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, oc]
        ));
    }
    let count = count_u32(out.shape)?;
    let mut params = vec![count];
    for (value, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (ic, "channels"),
        (oh, "height"),
        (ow, "width"),
        (oc, "channels"),
        (kh, "filter height"),
        (kw, "filter width"),
        (o.stride_h, "stride"),
        (o.stride_w, "stride"),
        (o.dilation_h, "dilation"),
        (o.dilation_w, "dilation"),
        (pad_top, "padding"),
        (pad_left, "padding"),
    ] {
        params.push(u32_of(value, what)?);
    }
    Ok(Plan {
        activation: activation_code(o.activation)?,
        params,
        out_channels: oc,
    })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let x = l.input(0)?;
    let w = l.input(1)?;
    let bias = match v.optional_input(2) {
        Some(_) => l.input(2)?,
        None => l.constant_f32(&vec![0.0; p.out_channels]),
    };
    let out = l.output(0)?;
    let invocations = p.params[0];
    l.dispatch(Dispatch {
        shader: &CONV2D,
        constants: vec![("ACTIVATION", p.activation)],
        inputs: vec![x, w, bias],
        output: out,
        params: p.params,
        invocations,
    });
    Ok(())
}
