//! DEPTH_TO_SPACE on float32 NHWC: a gather, one invocation per output element.

use switchyard_interpreter::OpOptions;

use super::{NodeView, count_u32, u32_of};
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::DEPTH_TO_SPACE;

fn plan(v: &NodeView<'_>) -> Result<Vec<u32>, String> {
    v.expect_arity(1, 1, 1)?;
    let OpOptions::DepthToSpace { block_size: b } = v.node.options else {
        return Err("DEPTH_TO_SPACE without its options".into());
    };
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    let &[n, ih, iw, ic] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    if b == 0 || ic % (b * b) != 0 {
        return Err(format!(
            "{ic} channels are not a multiple of block {b} squared"
        ));
    }
    let expected = [n, ih * b, iw * b, ic / (b * b)];
    if out.shape != expected {
        return Err(format!(
            "output shape {:?} should be {expected:?}",
            out.shape
        ));
    }
    let mut params = vec![count_u32(out.shape)?];
    for (d, what) in [
        (ih, "height"),
        (iw, "width"),
        (ic, "channels"),
        (expected[1], "height"),
        (expected[2], "width"),
        (expected[3], "channels"),
        (b, "block"),
    ] {
        params.push(u32_of(d, what)?);
    }
    Ok(params)
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let params = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let count = params[0];
    l.dispatch(Dispatch::new(
        &DEPTH_TO_SPACE,
        vec![x],
        out,
        params,
        Grid::Threads(count),
    ));
    Ok(())
}
