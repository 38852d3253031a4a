//! CONCATENATION on float32: one copy dispatch per input into its slice of the output;
//! each writes its own elements through the node's epilogue.

use switchyard_interpreter::OpOptions;

use super::{NodeView, activation_code, count_u32, u32_of};
use crate::cpu::util::normalize_axis;
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::CONCAT;

/// Per input: the parameter words of its copy.
fn plan(v: &NodeView<'_>) -> Result<(u32, Vec<Vec<u32>>), String> {
    let OpOptions::Concatenation { axis, activation } = &v.node.options else {
        return Err("CONCATENATION without its options".into());
    };
    if v.inputs.is_empty() || v.outputs.len() != 1 {
        return Err("expects at least one input and one output".into());
    }
    let out = v.f32_output(0)?;
    let rank = out.shape.len();
    let axis = normalize_axis(i64::from(*axis), rank).map_err(|e| e.to_string())?;
    let outer: usize = out.shape[..axis].iter().product();
    let inner: usize = out.shape[axis + 1..].iter().product();
    let out_row = out.shape[axis] * inner;
    let mut offset = 0usize;
    let mut copies = Vec::new();
    for i in 0..v.inputs.len() {
        let x = v.f32_input(i)?;
        let same_elsewhere =
            x.shape.len() == rank && (0..rank).all(|d| d == axis || x.shape[d] == out.shape[d]);
        if !same_elsewhere {
            return Err(format!(
                "input {i} shape {:?} does not fit output {:?} along axis {axis}",
                x.shape, out.shape
            ));
        }
        let row = x.shape[axis] * inner;
        copies.push(vec![
            count_u32(x.shape)?,
            u32_of(row.max(1), "row")?,
            u32_of(out_row, "row")?,
            u32_of(offset, "offset")?,
        ]);
        offset += row;
    }
    if offset != out_row || outer * out_row != out.element_count() {
        return Err(format!(
            "inputs fill {offset} of the output's {out_row} values per row"
        ));
    }
    Ok((activation_code(*activation)?, copies))
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (activation, copies) = plan(v)?;
    let out = l.output(0)?;
    for (i, params) in copies.into_iter().enumerate() {
        let x = l.input(i)?;
        let count = params[0];
        if count == 0 {
            continue;
        }
        l.dispatch(
            Dispatch::new(&CONCAT, vec![x], out, params, Grid::Threads(count)).clamp(activation),
        );
    }
    Ok(())
}
