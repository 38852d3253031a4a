//! SOFTMAX on float32 over the last axis, with beta: one workgroup per row, max and sum
//! through workgroup (or subgroup) reductions.

use switchyard_interpreter::OpOptions;

use super::{NodeView, count_u32, groups_2d, u32_of};
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::SOFTMAX;

fn plan(v: &NodeView<'_>) -> Result<(Vec<u32>, [u32; 3]), String> {
    v.expect_arity(1, 1, 1)?;
    let OpOptions::Softmax { beta } = v.node.options else {
        return Err("SOFTMAX without its options".into());
    };
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    if x.shape != out.shape {
        return Err(format!(
            "output shape {:?} differs from input {:?}",
            out.shape, x.shape
        ));
    }
    let depth = *x.shape.last().ok_or("SOFTMAX of a scalar")?;
    if depth == 0 {
        return Err("SOFTMAX over an empty axis".into());
    }
    count_u32(x.shape)?;
    let rows = x.element_count() / depth;
    let rows = u32_of(rows, "rows")?;
    Ok((
        vec![rows, u32_of(depth, "depth")?, beta.to_bits()],
        groups_2d(rows)?,
    ))
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (params, groups) = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    l.dispatch(Dispatch::new(
        &SOFTMAX,
        vec![x],
        out,
        params,
        Grid::Groups(groups),
    ));
    Ok(())
}
