//! MEAN and SUM on float32 over constant axes. Axes that form one contiguous block
//! (a spatial MEAN, a reduction over the last axis) run as a row reduction with one
//! workgroup per output; any other set of axes walks them per output element.

use switchyard_interpreter::BuiltinOp as B;

use super::{MAX_RANK, NodeView, const_ints, count_u32, groups_2d, pad_shape, u32_of};
use crate::cpu::util::normalize_axis;
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::{REDUCE, REDUCE_ROWS};

enum Plan {
    /// [outer, rows, inner] → [outer, inner].
    Rows {
        mean: bool,
        outputs: u32,
        rows: u32,
        inner: u32,
    },
    General {
        op: u32,
        params: Vec<u32>,
    },
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
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
    count_u32(x.shape)?;
    let total: usize = (0..rank)
        .filter(|&d| reduced[d])
        .map(|d| x.shape[d])
        .product();
    let first = reduced.iter().position(|&r| r);
    let last = reduced.iter().rposition(|&r| r);
    if let (Some(f), Some(l)) = (first, last)
        && reduced[f..=l].iter().all(|&r| r)
    {
        let inner: usize = x.shape[l + 1..].iter().product();
        let outputs = count_u32(out.shape)?;
        return Ok(Plan::Rows {
            mean: op == 0,
            outputs,
            rows: u32_of(total, "reduced count")?,
            inner: u32_of(inner.max(1), "inner")?,
        });
    }
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
    Ok(Plan::General { op, params })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let d = match p {
        Plan::Rows {
            mean,
            outputs,
            rows,
            inner,
        } => Dispatch::new(
            &REDUCE_ROWS,
            vec![x],
            out,
            vec![outputs, rows, inner, u32::from(mean)],
            Grid::Groups(groups_2d(outputs)?),
        ),
        Plan::General { op, params } => {
            let count = params[0];
            Dispatch::new(&REDUCE, vec![x], out, params, Grid::Threads(count)).constant("OP", op)
        }
    };
    l.dispatch(d);
    Ok(())
}
