//! Comparisons with broadcasting: LESS, LESS_EQUAL, GREATER, GREATER_EQUAL, EQUAL,
//! NOT_EQUAL. Output is bool. Quantized inputs compare dequantized values when their
//! quantization differs, raw values when it is the same.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, Quant, TensorView,
    TensorViewMut, kernel::input,
};

use crate::quant::load_q;
use crate::registry::OpDescriptor;
use crate::util::{broadcast_shapes, for_each_broadcast};

/// LESS, LESS_EQUAL, GREATER, GREATER_EQUAL, EQUAL, NOT_EQUAL.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Less, prepare),
    OpDescriptor::new(BuiltinOp::LessEqual, prepare),
    OpDescriptor::new(BuiltinOp::Greater, prepare),
    OpDescriptor::new(BuiltinOp::GreaterEqual, prepare),
    OpDescriptor::new(BuiltinOp::Equal, prepare),
    OpDescriptor::new(BuiltinOp::NotEqual, prepare),
];

#[derive(Clone, Copy)]
enum Cmp {
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Equal,
    NotEqual,
}

impl Cmp {
    #[inline(always)]
    fn apply<T: PartialOrd>(self, x: T, y: T) -> bool {
        match self {
            Cmp::Less => x < y,
            Cmp::LessEqual => x <= y,
            Cmp::Greater => x > y,
            Cmp::GreaterEqual => x >= y,
            Cmp::Equal => x == y,
            Cmp::NotEqual => x != y,
        }
    }
}

struct Compare {
    cmp: Cmp,
    dtype: DType,
    a: Vec<usize>,
    b: Vec<usize>,
    out: Vec<usize>,
    /// (scale, zero point) of each input when they must be compared dequantized.
    dequant: Option<[(f64, i32); 2]>,
}

fn qparams(q: Option<&Quant>) -> (f64, i32) {
    q.map_or((1.0, 0), |q| {
        (q.scale_at(0) as f64, q.zero_point_at(0) as i32)
    })
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let cmp = match ctx.op().builtin() {
        Some(BuiltinOp::Less) => Cmp::Less,
        Some(BuiltinOp::LessEqual) => Cmp::LessEqual,
        Some(BuiltinOp::Greater) => Cmp::Greater,
        Some(BuiltinOp::GreaterEqual) => Cmp::GreaterEqual,
        Some(BuiltinOp::Equal) => Cmp::Equal,
        Some(BuiltinOp::NotEqual) => Cmp::NotEqual,
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a comparison",
                ctx.op()
            )));
        }
    };
    ctx.expect_arity(2, 2, 1)?;
    let (a, b) = (ctx.input(0)?, ctx.input(1)?);
    if a.dtype != b.dtype {
        return Err(KernelError::invalid(format!(
            "input dtypes differ: {} and {}",
            a.dtype, b.dtype
        )));
    }
    if ctx.output(0)?.dtype != DType::Bool {
        return Err(KernelError::dtype("bool output", ctx.output(0)?.dtype));
    }
    let dequant = match a.dtype {
        DType::F32 | DType::I32 | DType::I64 | DType::Bool => None,
        DType::I8 | DType::U8 | DType::I16 => {
            let (qa, qb) = (qparams(a.quant), qparams(b.quant));
            if qa == qb { None } else { Some([qa, qb]) }
        }
        other => {
            return Err(KernelError::dtype(
                "float32, int32, int64, int8, uint8 or bool",
                other,
            ));
        }
    };
    let out = broadcast_shapes(a.shape, b.shape)?;
    Ok(PreparedKernel::new(
        vec![out.clone()],
        Compare {
            cmp,
            dtype: a.dtype,
            a: a.shape.to_vec(),
            b: b.shape.to_vec(),
            out,
            dequant,
        },
    ))
}

impl OpKernel for Compare {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        let o = out.u8s_mut()?;
        let cmp = self.cmp;
        match self.dtype {
            DType::F32 => {
                let (x, y) = (a.f32s()?, b.f32s()?);
                for_each_broadcast(&self.a, &self.b, &self.out, |k, i, j| {
                    o[k] = cmp.apply(x[i], y[j]) as u8
                });
            }
            DType::I32 => {
                let (x, y) = (a.i32s()?, b.i32s()?);
                for_each_broadcast(&self.a, &self.b, &self.out, |k, i, j| {
                    o[k] = cmp.apply(x[i], y[j]) as u8
                });
            }
            DType::I64 => {
                let (x, y) = (a.i64s()?, b.i64s()?);
                for_each_broadcast(&self.a, &self.b, &self.out, |k, i, j| {
                    o[k] = cmp.apply(x[i], y[j]) as u8
                });
            }
            DType::Bool => {
                let (x, y) = (a.u8s()?, b.u8s()?);
                for_each_broadcast(&self.a, &self.b, &self.out, |k, i, j| {
                    o[k] = cmp.apply(x[i] != 0, y[j] != 0) as u8
                });
            }
            dt => {
                let (xb, yb) = (a.bytes, b.bytes);
                match self.dequant {
                    None => for_each_broadcast(&self.a, &self.b, &self.out, |k, i, j| {
                        o[k] = cmp.apply(load_q(xb, dt, i), load_q(yb, dt, j)) as u8
                    }),
                    Some([(sa, za), (sb, zb)]) => {
                        for_each_broadcast(&self.a, &self.b, &self.out, |k, i, j| {
                            let x = sa * (load_q(xb, dt, i) - za) as f64;
                            let y = sb * (load_q(yb, dt, j) - zb) as f64;
                            o[k] = cmp.apply(x, y) as u8
                        })
                    }
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "compare"
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
    fn comparisons_match_litert() {
        let resolvers: Vec<(&str, Arc<dyn OpResolver>)> = vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ];
        use BuiltinOp::*;
        for op in [Less, LessEqual, Greater, GreaterEqual, Equal, NotEqual] {
            for (dtype, lo, hi) in [(DType::F32, -1.0, 1.0), (DType::I32, -3.0, 3.0)] {
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let a = sg.tensor("a", dtype, &[3, 4]);
                let b = sg.tensor("b", dtype, &[4]);
                let y = sg.tensor("y", DType::Bool, &[3, 4]);
                sg.op(
                    OpKind::Builtin(op),
                    &[Some(a), Some(b)],
                    &[y],
                    OpOptions::None,
                );
                sg.set_inputs(&[a, b]);
                sg.set_outputs(&[y]);
                let xa = random_tensor(dtype, &[3, 4], 3, lo, hi);
                let xb = random_tensor(dtype, &[4], 4, lo, hi);
                assert_matches_litert(
                    &format!("{op:?} {dtype}"),
                    &mb.finish(),
                    &[xa, xb],
                    &resolvers,
                    None,
                );
            }
        }
    }
}
