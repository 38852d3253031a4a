//! FULLY_CONNECTED on float32: [..., k] input, [o, k] weights, optional bias.

use switchyard_interpreter::OpOptions;

use super::{NodeView, activation_code, count_u32, u32_of};
use crate::gpu::compile::{Dispatch, Lowering};
use crate::gpu::pipelines::FULLY_CONNECTED;

struct Plan {
    activation: u32,
    params: Vec<u32>,
    units: usize,
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
    Ok(Plan {
        activation: activation_code(*activation)?,
        params: vec![
            count_u32(out.shape)?,
            u32_of(depth, "depth")?,
            u32_of(units, "units")?,
        ],
        units,
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
        None => l.constant_f32(&vec![0.0; p.units]),
    };
    let out = l.output(0)?;
    let invocations = p.params[0];
    l.dispatch(Dispatch {
        shader: &FULLY_CONNECTED,
        constants: vec![("ACTIVATION", p.activation)],
        inputs: vec![x, w, bias],
        output: out,
        params: p.params,
        invocations,
    });
    Ok(())
}
