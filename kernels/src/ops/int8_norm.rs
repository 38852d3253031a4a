//! int8 RSQRT and SQUARED_DIFFERENCE: the MEAN / SQUARED_DIFFERENCE / RSQRT pattern that
//! converters emit for layer norm, in full-integer models.
//!
//! Both follow LiteRT's built-in kernels bit for bit (docs/coverage/README.md):
//! - RSQRT: `1/sqrt(x - zero_point)` as gemmlowp's fixed-point Newton iteration
//!   (TFLite's GetInvSqrtQuantizedMultiplierExp) applied to 1 with 20 extra bits, then
//!   rescaled to the output; 0 maps to the dtype's maximum. The input has 256 possible
//!   values, so prepare computes them all and the kernel is a table lookup.
//! - SQUARED_DIFFERENCE: both inputs shifted left by 7 and rescaled to twice the larger
//!   input scale, the difference squared in int32, rescaled to the output.
//!
//! The ops' prepare routes int8 nodes here (`route`); both registries share the kernels.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
    kernel::input,
};

use crate::quant::{
    inv_sqrt_quantized_multiplier_exp, multiply_by_quantized_multiplier as mul_q, per_tensor,
    quantize_multiplier,
};
use crate::util::{broadcast_shapes, for_each_broadcast};

/// The int8 kernel for `ctx.node` when it is an int8 RSQRT or SQUARED_DIFFERENCE.
pub fn route(ctx: &PrepareCtx<'_>) -> Result<Option<PreparedKernel>, KernelError> {
    let Some(x) = ctx.inputs.first().copied().flatten() else {
        return Ok(None);
    };
    if x.dtype != DType::I8 {
        return Ok(None);
    }
    match ctx.node.builtin() {
        Some(BuiltinOp::Rsqrt) => prepare_rsqrt(ctx).map(Some),
        Some(BuiltinOp::SquaredDifference) => prepare_squared_difference(ctx).map(Some),
        _ => Ok(None),
    }
}

fn out_int8(ctx: &PrepareCtx<'_>) -> Result<(f32, i32), KernelError> {
    let out = ctx.output(0)?;
    if out.dtype != DType::I8 {
        return Err(KernelError::invalid(format!(
            "{} from int8 to {}",
            ctx.op(),
            out.dtype
        )));
    }
    per_tensor(out.quant, "output")
}

/// int8 RSQRT as a 256-entry table made at prepare.
struct RsqrtInt8 {
    table: [i8; 256],
}

fn prepare_rsqrt(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    let (in_scale, in_zp) = per_tensor(x.quant, "input")?;
    let (out_scale, out_zp) = out_int8(ctx)?;
    if in_scale <= 0.0 || out_scale <= 0.0 {
        return Err(KernelError::invalid("RSQRT with a non-positive scale"));
    }
    let (m, s) = quantize_multiplier((1.0 / f64::from(in_scale).sqrt()) / f64::from(out_scale));
    let mut table = [0i8; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let v = i as i32 - 128 - in_zp;
        *t = if v == 0 {
            i8::MAX
        } else {
            // A negative value has no square root; LiteRT's loop sees it as 0 or 1 and
            // answers the largest multiplier, as here.
            let (im, is) = inv_sqrt_quantized_multiplier_exp(v, -1);
            let data = mul_q(1, im, is + 20);
            (mul_q(data, m, s - 20) + out_zp).clamp(-128, 127) as i8
        };
    }
    Ok(PreparedKernel::new(
        vec![x.shape.to_vec()],
        RsqrtInt8 { table },
    ))
}

impl OpKernel for RsqrtInt8 {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.i8s()?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .i8s_mut()?;
        if out.len() != x.len() {
            return Err(KernelError::shape("output size differs from the input's"));
        }
        for (o, &v) in out.iter_mut().zip(x) {
            *o = self.table[(i32::from(v) + 128) as usize];
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "rsqrt/int8/table"
    }
}

/// int8 SQUARED_DIFFERENCE with broadcasting.
struct SquaredDifferenceInt8 {
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    out_shape: Vec<usize>,
    m1: (i32, i32),
    m2: (i32, i32),
    mo: (i32, i32),
    zp: (i32, i32, i32),
}

fn prepare_squared_difference(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(2, 2, 1)?;
    let a = ctx.input(0)?;
    let b = ctx.input(1)?;
    if b.dtype != DType::I8 {
        return Err(KernelError::unsupported(format!(
            "SQUARED_DIFFERENCE of int8 and {}",
            b.dtype
        )));
    }
    let (s1, zp1) = per_tensor(a.quant, "input 0")?;
    let (s2, zp2) = per_tensor(b.quant, "input 1")?;
    let (so, zpo) = out_int8(ctx)?;
    if so <= 0.0 {
        return Err(KernelError::invalid("output scale is not positive"));
    }
    let twice = 2.0 * f64::from(s1.max(s2));
    let out_shape = broadcast_shapes(a.shape, b.shape)?;
    Ok(PreparedKernel::new(
        vec![out_shape.clone()],
        SquaredDifferenceInt8 {
            a_shape: a.shape.to_vec(),
            b_shape: b.shape.to_vec(),
            out_shape,
            m1: quantize_multiplier(f64::from(s1) / twice),
            m2: quantize_multiplier(f64::from(s2) / twice),
            mo: quantize_multiplier(twice * twice / ((1u64 << 14) as f64 * f64::from(so))),
            zp: (zp1, zp2, zpo),
        },
    ))
}

impl SquaredDifferenceInt8 {
    fn one(&self, x: i8, y: i8) -> i8 {
        let sx = mul_q((i32::from(x) - self.zp.0) << 7, self.m1.0, self.m1.1);
        let sy = mul_q((i32::from(y) - self.zp.1) << 7, self.m2.0, self.m2.1);
        let d = sx - sy;
        (mul_q(d.wrapping_mul(d), self.mo.0, self.mo.1) + self.zp.2).clamp(-128, 127) as i8
    }
}

impl OpKernel for SquaredDifferenceInt8 {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let a = input(inputs, 0)?.i8s()?;
        let b = input(inputs, 1)?.i8s()?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .i8s_mut()?;
        let total: usize = self.out_shape.iter().product();
        let sizes = |s: &[usize]| s.iter().product::<usize>();
        if out.len() != total || a.len() != sizes(&self.a_shape) || b.len() != sizes(&self.b_shape)
        {
            return Err(KernelError::shape(
                "tensor sizes differ from the prepared shapes",
            ));
        }
        if self.a_shape == self.b_shape {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = self.one(x, y);
            }
        } else {
            for_each_broadcast(&self.a_shape, &self.b_shape, &self.out_shape, |o, i, j| {
                out[o] = self.one(a[i], b[j]);
            });
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "squared_difference/int8"
    }
}
