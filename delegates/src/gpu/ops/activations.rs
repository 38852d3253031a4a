//! RELU, RELU6, RELU_N1_TO_1, TANH, LOGISTIC, HARD_SWISH and LEAKY_RELU on float32.
//! Fusion usually moves them into their producer's epilogue; the dispatch lowered here
//! runs only when it cannot (the input is a partition input, or is read elsewhere).

use switchyard_interpreter::{BuiltinOp as B, OpOptions};

use super::{NodeView, count_u32};
use crate::gpu::ir::{Dispatch, Elementwise, Grid, Lowering};
use crate::gpu::pipelines::UNARY;

/// `unary_op`'s code in the prelude.
pub fn op_code(op: B) -> Result<u32, String> {
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

fn plan(v: &NodeView<'_>) -> Result<(u32, f32, u32), String> {
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
    Ok((op_code(op)?, alpha, count_u32(x.shape)?))
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (op, alpha, count) = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let mut d = Dispatch::new(
        &UNARY,
        vec![x],
        out,
        vec![count, alpha.to_bits()],
        Grid::Threads(count),
    )
    .constant("OP", op);
    d.fusable = Some(Elementwise::Unary { op, alpha, x });
    l.dispatch(d);
    Ok(())
}
