//! SOFTMAX (with beta) and LOG_SOFTMAX over the last axis, float32. Subtracting the row
//! maximum first keeps exp() in range for any input.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

use crate::cpu::KernelMode;

struct Softmax {
    beta: f32,
    log: bool,
    depth: usize,
}

pub fn prepare(ctx: &PrepareCtx<'_>, _mode: KernelMode) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    if x.dtype != DType::F32 {
        return Err(KernelError::unsupported(format!(
            "{} on {}",
            ctx.op(),
            x.dtype
        )));
    }
    let depth = *x
        .shape
        .last()
        .ok_or_else(|| KernelError::shape("softmax of a scalar"))?;
    let log = ctx.op().builtin() == Some(BuiltinOp::LogSoftmax);
    let beta = match ctx.node.options {
        OpOptions::Softmax { beta } => beta,
        _ => 1.0,
    };
    Ok(PreparedKernel::new(
        vec![x.shape.to_vec()],
        Softmax { beta, log, depth },
    ))
}

impl OpKernel for Softmax {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.f32s()?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .f32s_mut()?;
        if self.depth == 0 {
            return Ok(());
        }
        for (row, orow) in x
            .chunks_exact(self.depth)
            .zip(out.chunks_exact_mut(self.depth))
        {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if self.log {
                let sum: f32 = row.iter().map(|&v| ((v - max) * self.beta).exp()).sum();
                let log_sum = sum.ln();
                for (o, &v) in orow.iter_mut().zip(row) {
                    *o = (v - max) * self.beta - log_sum;
                }
            } else {
                let mut sum = 0.0f32;
                for (o, &v) in orow.iter_mut().zip(row) {
                    *o = ((v - max) * self.beta).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                orow.iter_mut().for_each(|o| *o *= inv);
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "softmax/f32"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, OpResolver};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::cpu::CpuResolver;

    #[test]
    fn softmax_matches_litert() {
        let resolvers: Vec<(&str, Arc<dyn OpResolver>)> = vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ];
        for (op, options) in [
            (BuiltinOp::Softmax, OpOptions::Softmax { beta: 1.0 }),
            (BuiltinOp::Softmax, OpOptions::Softmax { beta: 0.5 }),
            (BuiltinOp::LogSoftmax, OpOptions::None),
        ] {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &[2, 3, 10]);
            let y = sg.tensor("y", DType::F32, &[2, 3, 10]);
            sg.op(OpKind::Builtin(op), &[Some(x)], &[y], options.clone());
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let input = random_tensor(DType::F32, &[2, 3, 10], 21, -10.0, 10.0);
            assert_matches_litert(
                &format!("{op:?} {options:?}"),
                &mb.finish(),
                &[input],
                &resolvers,
                None,
            );
        }
    }
}
