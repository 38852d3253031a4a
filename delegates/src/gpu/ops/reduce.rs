//! MEAN and SUM on float32 over constant axes.

use switchyard_interpreter::BuiltinOp as B;

use super::{MAX_RANK, NodeView, const_ints, count_u32, pad_shape, u32_of};
use crate::cpu::util::normalize_axis;
use crate::gpu::compile::{Dispatch, Lowering};
use crate::gpu::pipelines::REDUCE;

fn plan(v: &NodeView<'_>) -> Result<(u32, Vec<u32>), String> {
    v.expect_arity(2, 2, 1)?;
    let op = match v.node.builtin() {
        Some(B::Mean) => 0,
        Some(B::Sum) => 1,
        _ => return Err("not MEAN or SUM".into()),
    };
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    let rank = x.shape.len();
    let mut reduced = vec![false; rank];
    for a in const_ints(&v.input(1)?, "axes")? {
        reduced[normalize_axis(a, rank).map_err(|e| e.to_string())?] = true;
    }
    let kept: usize = (0..rank)
        .filter(|&d| !reduced[d])
        .map(|d| x.shape[d])
        .product();
    if out.element_count() != kept {
        return Err(format!("output {:?} should hold {kept} values", out.shape));
    }
    let total: usize = (0..rank)
        .filter(|&d| reduced[d])
        .map(|d| x.shape[d])
        .product();
    let shape = pad_shape(x.shape)?;
    let mut strides = [0usize; MAX_RANK];
    let mut s = 1usize;
    for d in (0..MAX_RANK).rev() {
        strides[d] = s;
        s = s.saturating_mul(shape[d]);
    }
    let mut flags = [0u32; MAX_RANK];
    for (d, &r) in reduced.iter().enumerate() {
        flags[MAX_RANK - rank + d] = u32::from(r);
    }
    let mut params = vec![count_u32(out.shape)?, u32_of(total, "reduced count")?];
    for d in shape.iter().chain(&strides) {
        params.push(u32_of(*d, "dimension")?);
    }
    params.extend(flags);
    Ok((op, params))
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (op, params) = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let invocations = params[0];
    l.dispatch(Dispatch {
        shader: &REDUCE,
        constants: vec![("OP", op)],
        inputs: vec![x],
        output: out,
        params,
        invocations,
    });
    Ok(())
}
