//! ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE and PRELU: one shader with
//! NumPy broadcasting and a fused activation. Fusion moves the op into the producer of
//! an operand when the other lines up element by element, per channel or as a scalar.

use switchyard_interpreter::{BuiltinOp as B, OpOptions};

use super::{MAX_RANK, NodeView, activation_code, count_u32, pad_shape, u32_of};
use crate::cpu::util::{broadcast_shapes, broadcast_strides};
use crate::gpu::ir::{Dispatch, Elementwise, Grid, Lowering};
use crate::gpu::pipelines::BINARY;

/// `binary_op`'s code in the prelude.
fn op_code(op: B) -> Result<u32, String> {
    Ok(match op {
        B::Add => 0,
        B::Sub => 1,
        B::Mul => 2,
        B::Div => 3,
        B::Maximum => 4,
        B::Minimum => 5,
        B::SquaredDifference => 6,
        B::Prelu => 7,
        other => return Err(format!("{} is not a binary op", other.name())),
    })
}

struct Plan {
    op: u32,
    activation: u32,
    params: Vec<u32>,
    count: u32,
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    v.expect_arity(2, 2, 1)?;
    let op = v.node.builtin().ok_or("not a builtin")?;
    let a = v.f32_input(0)?;
    let b = v.f32_input(1)?;
    let out = v.f32_output(0)?;
    let shape = broadcast_shapes(a.shape, b.shape).map_err(|e| e.to_string())?;
    if shape != out.shape {
        return Err(format!(
            "output shape {:?} is not the broadcast {shape:?}",
            out.shape
        ));
    }
    let activation = match &v.node.options {
        OpOptions::Activation(act) => activation_code(*act)?,
        _ => 0,
    };
    let count = count_u32(&shape)?;
    let padded = pad_shape(&shape)?;
    let a_padded = pad_shape(a.shape)?;
    let b_padded = pad_shape(b.shape)?;
    let broadcast = a.shape != out.shape || b.shape != out.shape;
    let mut params = vec![count, u32::from(broadcast)];
    for d in padded {
        params.push(u32_of(d, "dimension")?);
    }
    for s in broadcast_strides(&a_padded, &padded)
        .into_iter()
        .chain(broadcast_strides(&b_padded, &padded))
    {
        params.push(u32_of(s, "stride")?);
    }
    debug_assert_eq!(params.len(), 2 + 3 * MAX_RANK);
    Ok(Plan {
        op: op_code(op)?,
        activation,
        params,
        count,
    })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let a = l.input(0)?;
    let b = l.input(1)?;
    let out = l.output(0)?;
    let mut d = Dispatch::new(&BINARY, vec![a, b], out, p.params, Grid::Threads(p.count))
        .constant("OP", p.op)
        .clamp(p.activation);
    d.fusable = Some(Elementwise::Binary { op: p.op, a, b });
    l.dispatch(d);
    Ok(())
}
