//! SOFTMAX (with beta) and LOG_SOFTMAX over the last axis, float32. Subtracting the row
//! maximum first keeps exp() in range for any input.
//!
//! int8 and uint8 SOFTMAX follow LiteRT's builtin kernel on x86 (its float-table path):
//! at prepare, `table[255 - d] = expf(-input_scale · beta · d)` for the 256 possible
//! distances `d` below the row maximum; per row, the float sum of the table entries in
//! order, `inv = 1 / (sum · output_scale)`, and each output `round(table · inv) +
//! zero_point` (int8: half away from zero; uint8: `+ 0.5` then truncation), clamped.

use crate::registry::OpDescriptor;
use crate::support;
use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

/// SOFTMAX, LOG_SOFTMAX.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Softmax, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::LogSoftmax, prepare),
];

/// GPU: float32 SOFTMAX over a non-empty last axis (one workgroup per row).
fn gpu(ctx: &switchyard_interpreter::NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 1, 1, 1)?;
    if !matches!(ctx.node.options, OpOptions::Softmax { .. }) {
        return Err("SOFTMAX without its options".into());
    }
    let x = support::input(ctx, 0)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    if x.shape != out.shape {
        return Err(format!(
            "output shape {:?} differs from input {:?}",
            out.shape, x.shape
        ));
    }
    match x.shape.last() {
        Some(&d) if d > 0 => support::gpu_count(x.shape),
        _ => Err("SOFTMAX over an empty axis or of a scalar".into()),
    }
}

struct Softmax {
    beta: f32,
    log: bool,
    depth: usize,
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    if matches!(x.dtype, DType::I8 | DType::U8) && ctx.op().builtin() == Some(BuiltinOp::Softmax) {
        return prepare_quantized(ctx);
    }
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

/// int8/uint8 SOFTMAX: LiteRT's float lookup table.
struct SoftmaxQ {
    table: Box<[f32; 256]>,
    out_scale: f32,
    zero_point: i32,
    depth: usize,
    dtype: DType,
}

fn prepare_quantized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let x = ctx.input(0)?;
    let out = ctx.output(0)?;
    if out.dtype != x.dtype {
        return Err(KernelError::unsupported(format!(
            "SOFTMAX from {} to {}",
            x.dtype, out.dtype
        )));
    }
    let (in_scale, _) = crate::quant::per_tensor(x.quant, "input")?;
    let (out_scale, zero_point) = crate::quant::per_tensor(out.quant, "output")?;
    let depth = *x
        .shape
        .last()
        .ok_or_else(|| KernelError::shape("softmax of a scalar"))?;
    let beta = match ctx.node.options {
        OpOptions::Softmax { beta } => beta,
        _ => 1.0,
    };
    let scale = -in_scale * beta;
    let mut table = Box::new([0f32; 256]);
    for d in 0..256usize {
        table[255 - d] = (scale * d as f32).exp();
    }
    Ok(PreparedKernel::new(
        vec![x.shape.to_vec()],
        SoftmaxQ {
            table,
            out_scale,
            zero_point,
            depth,
            dtype: x.dtype,
        },
    ))
}

impl SoftmaxQ {
    /// One row of values already widened to i32 (int8 or uint8 codes).
    fn row(&self, row: impl Iterator<Item = i32> + Clone, out: &mut [u8]) {
        let max = row.clone().max().unwrap_or(0);
        // Entries 255 - max + x lie in 0..=255 because x <= max and both are 8-bit codes
        // of one dtype (int8: -128 <= x, max <= 127).
        let at = |x: i32| self.table[(255 - max + x).clamp(0, 255) as usize];
        let mut sum = 0f32;
        for x in row.clone() {
            sum += at(x);
        }
        let inv = 1.0 / (sum * self.out_scale);
        let (lo, hi) = match self.dtype {
            DType::I8 => (-128, 127),
            _ => (0, 255),
        };
        for (o, x) in out.iter_mut().zip(row) {
            let p = at(x) * inv;
            let q = match self.dtype {
                DType::I8 => (p.round() as i32).saturating_add(self.zero_point),
                _ => ((p + 0.5) as i32).saturating_add(self.zero_point),
            };
            *o = q.clamp(lo, hi) as u8;
        }
    }
}

impl OpKernel for SoftmaxQ {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.bytes;
        let out = &mut outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .bytes;
        if self.depth == 0 || x.len() != out.len() || x.len() % self.depth != 0 {
            return Err(KernelError::shape(
                "softmax buffers disagree with the prepared depth",
            ));
        }
        for (row, orow) in x
            .chunks_exact(self.depth)
            .zip(out.chunks_exact_mut(self.depth))
        {
            match self.dtype {
                DType::I8 => self.row(row.iter().map(|&b| i32::from(b as i8)), orow),
                _ => self.row(row.iter().map(|&b| i32::from(b)), orow),
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "softmax/q8/table"
    }
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
    use crate::CpuResolver;

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

    /// int8 and uint8 SOFTMAX (MobileNet's classifier head, keyword spotters) against
    /// LiteRT's builtin kernel, with the output quantization LiteRT requires.
    #[test]
    fn quantized_softmax_matches_litert() {
        use switchyard_interpreter::Quant;
        let resolvers: Vec<(&str, Arc<dyn OpResolver>)> = vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ];
        for (dtype, in_zp, out_zp) in [(DType::I8, -5, -128), (DType::U8, 120, 0)] {
            for (beta, scale, shape) in [(1.0f32, 0.1f32, [2, 1000]), (0.7, 0.05, [3, 10])] {
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let x = sg.tensor("x", dtype, &shape);
                sg.set_quant(x, Quant::per_tensor(scale, in_zp));
                let y = sg.tensor("y", dtype, &shape);
                sg.set_quant(y, Quant::per_tensor(1.0 / 256.0, out_zp));
                sg.op(
                    OpKind::Builtin(BuiltinOp::Softmax),
                    &[Some(x)],
                    &[y],
                    OpOptions::Softmax { beta },
                );
                sg.set_inputs(&[x]);
                sg.set_outputs(&[y]);
                let (lo, hi) = if dtype == DType::I8 {
                    (-128.0, 127.0)
                } else {
                    (0.0, 255.0)
                };
                let input = random_tensor(dtype, &shape, 5, lo, hi);
                assert_matches_litert(
                    &format!("SOFTMAX {dtype} beta {beta}"),
                    &mb.finish(),
                    &[input],
                    &resolvers,
                    Some(switchyard_testkit::Tolerance::Exact),
                );
            }
        }
    }
}
