//! RELU, RELU6, RELU_N1_TO_1, TANH, LOGISTIC, HARD_SWISH and LEAKY_RELU on float32.

use switchyard_interpreter::{BuiltinOp as B, OpOptions};

use super::{NodeView, count_u32};
use crate::gpu::compile::{Dispatch, Lowering};
use crate::gpu::pipelines::UNARY;

fn op_code(op: B) -> Result<u32, String> {
    Ok(match op {
        B::Relu => 0,
        B::Relu6 => 1,
        B::ReluN1To1 => 2,
        B::Tanh => 3,
        B::Logistic => 4,
        B::HardSwish => 5,
        B::LeakyRelu => 6,
        other => return Err(format!("{} is not an activation", other.name())),
    })
}

fn plan(v: &NodeView<'_>) -> Result<(u32, Vec<u32>), String> {
    v.expect_arity(1, 1, 1)?;
    let op = v.node.builtin().ok_or("not a builtin")?;
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    if x.shape != out.shape {
        return Err(format!(
            "output shape {:?} differs from input {:?}",
            out.shape, x.shape
        ));
    }
    let alpha = match &v.node.options {
        OpOptions::LeakyRelu { alpha } => *alpha,
        _ => 0.0,
    };
    Ok((op_code(op)?, vec![count_u32(x.shape)?, alpha.to_bits()]))
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
        shader: &UNARY,
        constants: vec![("OP", op)],
        inputs: vec![x],
        output: out,
        params,
        invocations,
    });
    Ok(())
}
