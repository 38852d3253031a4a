//! Activations: RELU, RELU6, RELU_N1_TO_1, TANH, LOGISTIC, HARD_SWISH, LEAKY_RELU, PRELU,
//! GELU, ELU.
//!
//! Float kernels compute directly. For int8/uint8, LOGISTIC and TANH (and the other
//! smooth activations) use a 256-entry lookup table built at prepare from the float
//! function, exactly as LiteRT's optimized built-in kernels do; RELU-family ops requantize
//! with a fixed-point multiplier and clamp.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

use crate::quant::{multiply_by_quantized_multiplier, per_tensor, quantize_multiplier};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::{broadcast_shapes, for_each_broadcast};
use switchyard_interpreter::NodeSupportCtx;

/// RELU, RELU6, RELU_N1_TO_1, TANH, LOGISTIC, HARD_SWISH, LEAKY_RELU, PRELU, GELU, ELU.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Relu, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Relu6, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::ReluN1To1, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
    OpDescriptor::new(BuiltinOp::Tanh, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::Logistic, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::HardSwish, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::LeakyRelu, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
    OpDescriptor::new(BuiltinOp::Prelu, prepare)
        .optimized(prepare_optimized)
        .gpu(super::binary::gpu),
    OpDescriptor::new(BuiltinOp::Gelu, prepare).optimized(prepare_optimized),
    OpDescriptor::new(BuiltinOp::Elu, prepare).optimized(prepare_optimized),
];

/// GPU: float32, same shape in and out.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 1, 1, 1)?;
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
    support::gpu_count(x.shape)
}

enum Kernel {
    Float(fn(f32, f32) -> f32, f32),
    /// Optimized mode: the same formulas as `Float`, with the op chosen once per call
    /// rather than through a function pointer per element, so the loops vectorise.
    FastFloat(BuiltinOp, f32),
    /// int8/uint8 through a table indexed by the raw byte.
    Table(Box<[u8; 256]>),
    Prelu {
        x: Vec<usize>,
        alpha: Vec<usize>,
        out: Vec<usize>,
        /// Optimized mode, when alpha varies along the last axis only and x has the
        /// output's shape (MediaPipe's per-channel PRELU): one alpha row per pixel.
        per_channel: bool,
    },
}

struct Activation {
    kernel: Kernel,
}

/// erf via Abramowitz & Stegun 7.1.26 refined with one Newton step on the complement; the
/// result is within ~1e-7 absolute, far inside GELU's float tolerance.
fn erf(x: f32) -> f32 {
    let x64 = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x64.abs());
    // Numerical Recipes' erfc Chebyshev fit (fractional error < 1.2e-7).
    let y = t
        * (-x64 * x64 - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x64 >= 0.0 { 1.0 - y } else { y - 1.0 }) as f32
}

/// erf in float32 as a rational function of x over [-4, 4] (erf is ±1 in float32
/// beyond): odd degree-13 numerator, even degree-8 denominator, the minimax fit Eigen
/// and XLA use. Absolute error below 1e-6 (tested on a 1e-4 grid; no FMA, which
/// would be a libm call without the target feature); branch-free, so the optimized
/// loop vectorises where `erf` above calls `exp` in f64.
#[inline(always)]
fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5f32;
    for c in [
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_473_9e-2,
    ] {
        q = q * x2 + c;
    }
    x * p / q
}

/// tanh in float32 as a rational function over [-7.905, 7.905] (±1 in float32
/// beyond): odd degree-13 over even degree-6, Eigen's fit. Error below 1e-6 absolute
/// and relative (tested against f64 tanh on a 1e-4 grid); branch-free.
#[inline(always)]
fn tanh_fast(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = -2.760_768_5e-16f32;
    for c in [
        2.000_188e-13,
        -8.604_672e-11,
        5.122_297e-8,
        1.485_722_4e-5,
        6.372_619_3e-4,
        4.893_524_6e-3,
    ] {
        p = p * x2 + c;
    }
    let mut q = 1.198_258_4e-6f32;
    for c in [1.185_347e-4, 2.268_434_6e-3, 4.893_525e-3] {
        q = q * x2 + c;
    }
    x * p / q
}

/// An element function taking the value and one parameter (alpha), with that parameter.
type FloatFn = (fn(f32, f32) -> f32, f32);

fn float_fn(op: BuiltinOp, options: &OpOptions) -> Option<FloatFn> {
    Some(match op {
        BuiltinOp::Relu => (|x, _| x.max(0.0), 0.0),
        BuiltinOp::Relu6 => (|x, _| x.clamp(0.0, 6.0), 0.0),
        BuiltinOp::ReluN1To1 => (|x, _| x.clamp(-1.0, 1.0), 0.0),
        BuiltinOp::Tanh => (|x, _| x.tanh(), 0.0),
        BuiltinOp::Logistic => (|x, _| 1.0 / (1.0 + (-x).exp()), 0.0),
        BuiltinOp::HardSwish => (|x, _| x * (x + 3.0).clamp(0.0, 6.0) / 6.0, 0.0),
        BuiltinOp::Elu => (|x, _| if x < 0.0 { x.exp_m1() } else { x }, 0.0),
        BuiltinOp::LeakyRelu => {
            let alpha = match options {
                OpOptions::LeakyRelu { alpha } => *alpha,
                _ => 0.0,
            };
            (|x, a| if x > 0.0 { x } else { a * x }, alpha)
        }
        BuiltinOp::Gelu => {
            let approximate = matches!(options, OpOptions::Gelu { approximate: true });
            if approximate {
                (
                    |x, _| {
                        let c = (2.0f32 / std::f32::consts::PI).sqrt();
                        0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
                    },
                    0.0,
                )
            } else {
                (
                    |x, _| 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
                    0.0,
                )
            }
        }
        _ => return None,
    })
}

/// The reference kernel (plain loops).
pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    build(ctx, false)
}

/// The optimized kernel where this op has one for the node's dtypes, else the reference.
pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    build(ctx, true)
}

fn build(ctx: &PrepareCtx<'_>, optimized: bool) -> Result<PreparedKernel, KernelError> {
    let op = ctx
        .op()
        .builtin()
        .ok_or_else(|| KernelError::unsupported(ctx.op().to_string()))?;
    let x = ctx.input(0)?;
    let out = ctx.output(0)?;
    if op == BuiltinOp::Prelu {
        ctx.expect_arity(2, 2, 1)?;
        let alpha = ctx.input(1)?;
        if x.dtype != DType::F32 || alpha.dtype != DType::F32 {
            return Err(KernelError::unsupported(format!("PRELU on {}", x.dtype)));
        }
        let shape = broadcast_shapes(x.shape, alpha.shape)?;
        let per_channel = optimized
            && x.shape == shape.as_slice()
            && alpha.element_count() > 0
            && alpha.element_count() == shape.last().copied().unwrap_or(0)
            && alpha.shape.last() == shape.last();
        return Ok(PreparedKernel::new(
            vec![shape.clone()],
            Activation {
                kernel: Kernel::Prelu {
                    x: x.shape.to_vec(),
                    alpha: alpha.shape.to_vec(),
                    out: shape,
                    per_channel,
                },
            },
        ));
    }
    ctx.expect_arity(1, 1, 1)?;
    let (f, param) = float_fn(op, &ctx.node.options)
        .ok_or_else(|| KernelError::unsupported(format!("{} is not an activation", ctx.op())))?;
    let kernel = match x.dtype {
        DType::F32
            if optimized
                && matches!(
                    op,
                    BuiltinOp::Relu
                        | BuiltinOp::Relu6
                        | BuiltinOp::ReluN1To1
                        | BuiltinOp::LeakyRelu
                        | BuiltinOp::HardSwish
                        | BuiltinOp::Logistic
                        | BuiltinOp::Tanh
                        | BuiltinOp::Gelu
                ) =>
        {
            let approximate = matches!(ctx.node.options, OpOptions::Gelu { approximate: true });
            let param = if op == BuiltinOp::Gelu {
                f32::from(u8::from(approximate))
            } else {
                param
            };
            Kernel::FastFloat(op, param)
        }
        DType::F32 => Kernel::Float(f, param),
        DType::I8 | DType::U8 => {
            if out.dtype != x.dtype && !(op == BuiltinOp::Logistic || op == BuiltinOp::Tanh) {
                return Err(KernelError::invalid(
                    "output dtype differs from input dtype",
                ));
            }
            let (si, zi) = per_tensor(x.quant, "input")?;
            let (so, zo) = per_tensor(out.quant, "output")?;
            let (qmin, qmax) = crate::quant::dtype_range(out.dtype)?;
            let mut table = Box::new([0u8; 256]);
            let relu_like = matches!(
                op,
                BuiltinOp::Relu | BuiltinOp::Relu6 | BuiltinOp::ReluN1To1
            );
            let (m, shift) = quantize_multiplier(si as f64 / so as f64);
            for raw in 0..256u32 {
                let q = if x.dtype == DType::I8 {
                    raw as u8 as i8 as i32
                } else {
                    raw as i32
                };
                let v = if relu_like {
                    // Requantize, then clamp to the activation's range (as LiteRT's
                    // quantized ReLU does).
                    let scaled = zo.saturating_add(multiply_by_quantized_multiplier(
                        q.saturating_sub(zi),
                        m,
                        shift,
                    ));
                    let q_of = |f: f32| zo.saturating_add((f / so).round() as i32);
                    let (lo, hi) = match op {
                        BuiltinOp::Relu => (qmin.max(zo), qmax),
                        BuiltinOp::Relu6 => (qmin.max(zo), qmax.min(q_of(6.0))),
                        _ => (qmin.max(q_of(-1.0)), qmax.min(q_of(1.0))),
                    };
                    // min then max, as LiteRT clamps: a hostile output zero point can
                    // put `lo` above `hi`, which `clamp` would panic on.
                    scaled.min(hi).max(lo)
                } else {
                    let real = si * q.saturating_sub(zi) as f32;
                    let y = f(real, param);
                    ((y / so).round() as i32)
                        .saturating_add(zo)
                        .clamp(qmin, qmax)
                };
                let idx = if x.dtype == DType::I8 {
                    (q as i8) as u8
                } else {
                    q as u8
                };
                table[idx as usize] = if out.dtype == DType::I8 {
                    v as i8 as u8
                } else {
                    v as u8
                };
            }
            Kernel::Table(table)
        }
        other => return Err(KernelError::unsupported(format!("{} on {other}", ctx.op()))),
    };
    Ok(PreparedKernel::new(
        vec![x.shape.to_vec()],
        Activation { kernel },
    ))
}

impl OpKernel for Activation {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        match &self.kernel {
            Kernel::Float(f, p) => {
                for (o, &v) in out.f32s_mut()?.iter_mut().zip(x.f32s()?) {
                    *o = f(v, *p);
                }
            }
            Kernel::FastFloat(op, a) => {
                let (o, x) = (out.f32s_mut()?, x.f32s()?);
                fn map(o: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = f(v);
                    }
                }
                let a = *a;
                match op {
                    BuiltinOp::Relu => map(o, x, |x| x.max(0.0)),
                    BuiltinOp::Relu6 => map(o, x, |x| x.clamp(0.0, 6.0)),
                    BuiltinOp::ReluN1To1 => map(o, x, |x| x.clamp(-1.0, 1.0)),
                    BuiltinOp::LeakyRelu => map(o, x, |x| x.max(0.0) + a * x.min(0.0)),
                    BuiltinOp::HardSwish => map(o, x, |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0),
                    BuiltinOp::Tanh => map(o, x, tanh_fast),
                    // `a` carries GELU's `approximate` flag (see build).
                    BuiltinOp::Gelu if a != 0.0 => map(o, x, |x| {
                        let c = (2.0f32 / std::f32::consts::PI).sqrt();
                        0.5 * x * (1.0 + tanh_fast(c * (x + 0.044_715 * x * x * x)))
                    }),
                    BuiltinOp::Gelu => map(o, x, |x| {
                        0.5 * x * (1.0 + erf_fast(x * std::f32::consts::FRAC_1_SQRT_2))
                    }),
                    _ => map(o, x, |x| 1.0 / (1.0 + (-x).exp())),
                }
            }
            Kernel::Table(t) => {
                for (o, &v) in out.bytes.iter_mut().zip(x.bytes) {
                    *o = t[v as usize];
                }
            }
            Kernel::Prelu {
                x: xs,
                alpha,
                out: os,
                per_channel,
            } => {
                let a = input(inputs, 1)?.f32s()?;
                let xv = x.f32s()?;
                let o = out.f32s_mut()?;
                if *per_channel {
                    for (orow, xrow) in o.chunks_exact_mut(a.len()).zip(xv.chunks_exact(a.len())) {
                        // Branch-free so it vectorises (signs are random: a branch
                        // mispredicts half the time); equal to the reference up to
                        // the sign of a zero.
                        for ((ov, &v), &al) in orow.iter_mut().zip(xrow).zip(a) {
                            *ov = v.max(0.0) + al * v.min(0.0);
                        }
                    }
                    return Ok(());
                }
                for_each_broadcast(xs, alpha, os, |k, i, j| {
                    let v = xv[i];
                    o[k] = if v >= 0.0 { v } else { a[j] * v };
                });
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.kernel {
            Kernel::Float(..) => "activation/f32",
            Kernel::FastFloat(..) => "activation/f32/fast",
            Kernel::Table(_) => "activation/lut",
            Kernel::Prelu { .. } => "prelu/f32",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, OpResolver, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::CpuResolver;

    fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    fn single(
        op: BuiltinOp,
        options: OpOptions,
        dtype: DType,
        qin: Option<Quant>,
        out_dtype: DType,
        qout: Option<Quant>,
    ) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, &[3, 40]);
        let y = sg.tensor("y", out_dtype, &[3, 40]);
        if let Some(q) = qin {
            sg.set_quant(x, q);
        }
        if let Some(q) = qout {
            sg.set_quant(y, q);
        }
        sg.op(OpKind::Builtin(op), &[Some(x)], &[y], options);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn float_activations_match_litert() {
        use BuiltinOp::*;
        let cases = [
            (Relu, OpOptions::None),
            (Relu6, OpOptions::None),
            (ReluN1To1, OpOptions::None),
            (Tanh, OpOptions::None),
            (Logistic, OpOptions::None),
            (HardSwish, OpOptions::None),
            (Elu, OpOptions::None),
            (LeakyRelu, OpOptions::LeakyRelu { alpha: 0.2 }),
            (Gelu, OpOptions::Gelu { approximate: false }),
            (Gelu, OpOptions::Gelu { approximate: true }),
        ];
        for (op, options) in cases {
            let model = single(op, options.clone(), DType::F32, None, DType::F32, None);
            let x = random_tensor(DType::F32, &[3, 40], 9, -8.0, 8.0);
            assert_matches_litert(
                &format!("{op:?} {options:?}"),
                &model,
                &[x],
                &resolvers(),
                None,
            );
        }
    }

    #[test]
    fn quantized_activations_match_litert() {
        use BuiltinOp::*;
        let qin = Quant::per_tensor(0.1, -5);
        for (op, out_q) in [
            (Logistic, Quant::per_tensor(1.0 / 256.0, -128)),
            (Tanh, Quant::per_tensor(1.0 / 128.0, 0)),
            (Relu, Quant::per_tensor(0.05, -128)),
            (Relu6, Quant::per_tensor(0.05, -128)),
        ] {
            let model = single(
                op,
                OpOptions::None,
                DType::I8,
                Some(qin.clone()),
                DType::I8,
                Some(out_q),
            );
            let x = random_tensor(DType::I8, &[3, 40], 11, -128.0, 127.0);
            assert_matches_litert(&format!("{op:?} int8"), &model, &[x], &resolvers(), None);
        }
        let model = single(
            Logistic,
            OpOptions::None,
            DType::U8,
            Some(Quant::per_tensor(0.1, 120)),
            DType::U8,
            Some(Quant::per_tensor(1.0 / 256.0, 0)),
        );
        let x = random_tensor(DType::U8, &[3, 40], 12, 0.0, 255.0);
        assert_matches_litert("Logistic uint8", &model, &[x], &resolvers(), None);
    }

    #[test]
    fn prelu_broadcasts_alpha() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4, 4, 3]);
        let alpha = sg.constant_f32("alpha", &[1, 1, 3], &[0.1, -0.5, 2.0]);
        let y = sg.tensor("y", DType::F32, &[1, 4, 4, 3]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Prelu),
            &[Some(x), Some(alpha)],
            &[y],
            OpOptions::None,
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let input = random_tensor(DType::F32, &[1, 4, 4, 3], 13, -2.0, 2.0);
        assert_matches_litert("PRELU", &mb.finish(), &[input], &resolvers(), None);
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (3.0, 0.999_977_9),
        ] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn fast_erf_and_tanh_are_accurate() {
        for i in -120_000..=120_000 {
            let x = i as f32 * 1e-4;
            // `erf` is within ~1e-7 of the true value.
            assert!(
                (erf_fast(x) - erf(x)).abs() < 1e-6,
                "erf_fast({x}) = {}",
                erf_fast(x)
            );
            let want = (x as f64).tanh();
            let got = tanh_fast(x) as f64;
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "tanh_fast({x}) = {got}, want {want}"
            );
        }
        assert!((tanh_fast(100.0) - 1.0).abs() < 1e-6 && (tanh_fast(-100.0) + 1.0).abs() < 1e-6);
        assert!((erf_fast(-100.0) + 1.0).abs() < 1e-6 && (erf_fast(100.0) - 1.0).abs() < 1e-6);
        assert!(tanh_fast(f32::NAN).is_nan() && erf_fast(f32::NAN).is_nan());
    }
}
