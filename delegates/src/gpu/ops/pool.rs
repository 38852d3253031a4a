//! MAX_POOL_2D and AVERAGE_POOL_2D on float32 NHWC.

use switchyard_interpreter::{BuiltinOp as B, OpOptions};

use super::{NodeView, activation_code, count_u32, u32_of};
use crate::cpu::util::conv_output_size;
use crate::gpu::compile::{Dispatch, Lowering};
use crate::gpu::pipelines::{Constants, POOL2D};

fn plan(v: &NodeView<'_>) -> Result<(Constants, Vec<u32>), String> {
    v.expect_arity(1, 1, 1)?;
    let OpOptions::Pool(o) = &v.node.options else {
        return Err("pooling without its options".into());
    };
    let op = match v.node.builtin() {
        Some(B::MaxPool2d) => 0,
        Some(B::AveragePool2d) => 1,
        _ => return Err("not a max or average pool".into()),
    };
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    let &[n, ih, iw, c] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    let (oh, pad_top) =
        conv_output_size(ih, o.filter_h, o.stride_h, 1, o.padding).map_err(|e| e.to_string())?;
    let (ow, pad_left) =
        conv_output_size(iw, o.filter_w, o.stride_w, 1, o.padding).map_err(|e| e.to_string())?;
    if out.shape != [n, oh, ow, c] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, c]
        ));
    }
    let mut params = vec![count_u32(out.shape)?];
    for (value, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (c, "channels"),
        (oh, "height"),
        (ow, "width"),
        (o.filter_h, "filter height"),
        (o.filter_w, "filter width"),
        (o.stride_h, "stride"),
        (o.stride_w, "stride"),
        (pad_top, "padding"),
        (pad_left, "padding"),
    ] {
        params.push(u32_of(value, what)?);
    }
    Ok((
        vec![("OP", op), ("ACTIVATION", activation_code(o.activation)?)],
        params,
    ))
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (constants, params) = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let invocations = params[0];
    l.dispatch(Dispatch {
        shader: &POOL2D,
        constants,
        inputs: vec![x],
        output: out,
        params,
        invocations,
    });
    Ok(())
}
