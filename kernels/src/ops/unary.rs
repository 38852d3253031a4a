//! Unary math on floats (and ABS/NEG/SQUARE on int32, LOGICAL_NOT on bool): ABS, NEG,
//! LOG, EXP, SQRT, RSQRT, SQUARE, SIN, COS, FLOOR, CEIL, ROUND (half to even, as TFLite).

use crate::registry::OpDescriptor;
use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
    kernel::input,
};

/// ABS, NEG, LOG, EXP, SQRT, RSQRT, SQUARE, SIN, COS, FLOOR, CEIL, ROUND, LOGICAL_NOT.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Abs, prepare),
    OpDescriptor::new(BuiltinOp::Neg, prepare),
    OpDescriptor::new(BuiltinOp::Log, prepare),
    OpDescriptor::new(BuiltinOp::Exp, prepare),
    OpDescriptor::new(BuiltinOp::Sqrt, prepare),
    OpDescriptor::new(BuiltinOp::Rsqrt, prepare),
    OpDescriptor::new(BuiltinOp::Square, prepare),
    OpDescriptor::new(BuiltinOp::Sin, prepare),
    OpDescriptor::new(BuiltinOp::Cos, prepare),
    OpDescriptor::new(BuiltinOp::Floor, prepare),
    OpDescriptor::new(BuiltinOp::Ceil, prepare),
    OpDescriptor::new(BuiltinOp::Round, prepare),
    OpDescriptor::new(BuiltinOp::LogicalNot, prepare),
];

struct Unary {
    op: BuiltinOp,
    dtype: DType,
}

fn float_fn(op: BuiltinOp) -> Option<fn(f32) -> f32> {
    Some(match op {
        BuiltinOp::Abs => f32::abs,
        BuiltinOp::Neg => |x: f32| -x,
        BuiltinOp::Log => f32::ln,
        BuiltinOp::Exp => f32::exp,
        BuiltinOp::Sqrt => f32::sqrt,
        BuiltinOp::Rsqrt => |x: f32| 1.0 / x.sqrt(),
        BuiltinOp::Square => |x: f32| x * x,
        BuiltinOp::Sin => f32::sin,
        BuiltinOp::Cos => f32::cos,
        BuiltinOp::Floor => f32::floor,
        BuiltinOp::Ceil => f32::ceil,
        BuiltinOp::Round => f32::round_ties_even,
        _ => return None,
    })
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(int8) = super::int8_norm::route(ctx)? {
        return Ok(int8);
    }
    let op = ctx
        .op()
        .builtin()
        .ok_or_else(|| KernelError::unsupported(ctx.op().to_string()))?;
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    let ok = match x.dtype {
        DType::F32 => float_fn(op).is_some(),
        DType::I32 => matches!(op, BuiltinOp::Abs | BuiltinOp::Neg | BuiltinOp::Square),
        DType::Bool => op == BuiltinOp::LogicalNot,
        _ => false,
    };
    if !ok {
        return Err(KernelError::unsupported(format!(
            "{} on {}",
            ctx.op(),
            x.dtype
        )));
    }
    if ctx.output(0)?.dtype != x.dtype {
        return Err(KernelError::invalid(
            "output dtype differs from input dtype",
        ));
    }
    Ok(PreparedKernel::new(
        vec![x.shape.to_vec()],
        Unary { op, dtype: x.dtype },
    ))
}

impl OpKernel for Unary {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        match self.dtype {
            DType::F32 => {
                let f = float_fn(self.op).ok_or_else(|| KernelError::unsupported("op"))?;
                for (o, &v) in out.f32s_mut()?.iter_mut().zip(x.f32s()?) {
                    *o = f(v);
                }
            }
            DType::I32 => {
                let op = self.op;
                for (o, &v) in out.i32s_mut()?.iter_mut().zip(x.i32s()?) {
                    *o = match op {
                        BuiltinOp::Abs => v.wrapping_abs(),
                        BuiltinOp::Neg => v.wrapping_neg(),
                        _ => v.wrapping_mul(v),
                    };
                }
            }
            _ => {
                for (o, &v) in out.u8s_mut()?.iter_mut().zip(x.u8s()?) {
                    *o = (v == 0) as u8;
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "unary"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, OpOptions, OpResolver};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::CpuResolver;

    #[test]
    fn unary_float_ops_match_litert() {
        let resolvers: Vec<(&str, Arc<dyn OpResolver>)> = vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ];
        use BuiltinOp::*;
        for op in [
            Abs, Neg, Log, Exp, Sqrt, Rsqrt, Square, Sin, Cos, Floor, Ceil, Round,
        ] {
            let (lo, hi) = if matches!(op, Log | Sqrt | Rsqrt) {
                (0.05, 4.0)
            } else {
                (-3.0, 3.0)
            };
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &[2, 17]);
            let y = sg.tensor("y", DType::F32, &[2, 17]);
            sg.op(OpKind::Builtin(op), &[Some(x)], &[y], OpOptions::None);
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let mut input = random_tensor(DType::F32, &[2, 17], 5, lo, hi);
            if op == Round {
                // Exercise ties: x.5 values round to even.
                let v: &mut [f32] = bytemuck::cast_slice_mut(input.data.as_mut_slice());
                v[0] = 2.5;
                v[1] = -1.5;
                v[2] = 0.5;
            }
            assert_matches_litert(&format!("{op:?}"), &mb.finish(), &[input], &resolvers, None);
        }
    }
}
