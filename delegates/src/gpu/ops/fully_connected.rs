//! FULLY_CONNECTED on float32: [..., k] input, [o, k] weights, optional bias; one
//! workgroup per output element with a workgroup (or subgroup) reduction over k.

use switchyard_interpreter::OpOptions;

use super::{NodeView, activation_code, count_u32, groups_2d, u32_of};
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::FULLY_CONNECTED;

struct Plan {
    activation: u32,
    params: Vec<u32>,
    units: usize,
    groups: [u32; 3],
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    v.expect_arity(2, 3, 1)?;
    let OpOptions::FullyConnected {
        activation,
        weights_format,
        ..
    } = &v.node.options
    else {
        return Err("FULLY_CONNECTED without its options".into());
    };
    if *weights_format != 0 {
        return Err(format!("shuffled weights format {weights_format}"));
    }
    let x = v.f32_input(0)?;
    let w = v.f32_input(1)?;
    let out = v.f32_output(0)?;
    let &[units, depth] = w.shape else {
        return Err(format!("weights {:?} must be [units, depth]", w.shape));
    };
    if depth == 0 || x.element_count() % depth != 0 {
        return Err(format!(
            "input {:?} is not a whole number of rows of {depth}",
            x.shape
        ));
    }
    let rows = x.element_count() / depth;
    if out.element_count() != rows * units {
        return Err(format!(
            "output {:?} should hold {rows} x {units} values",
            out.shape
        ));
    }
    if let Some(b) = v.optional_input(2) {
        super::expect_f32(&b, "bias")?;
        if b.element_count() != units {
            return Err(format!(
                "bias has {} values for {units} units",
                b.element_count()
            ));
        }
    }
    let outputs = count_u32(out.shape)?;
    Ok(Plan {
        activation: activation_code(*activation)?,
        params: vec![
            u32_of(rows, "rows")?,
            u32_of(depth, "depth")?,
            u32_of(units, "units")?,
            outputs,
        ],
        units,
        groups: groups_2d(outputs)?,
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
        None => l.constant(vec![0.0; p.units]),
    };
    let out = l.output(0)?;
    l.dispatch(
        Dispatch::new(
            &FULLY_CONNECTED,
            vec![x, w, bias],
            out,
            p.params,
            Grid::Groups(p.groups),
        )
        .clamp(p.activation),
    );
    Ok(())
}
