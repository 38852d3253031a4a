//! MEAN, SUM, REDUCE_MAX, REDUCE_MIN and REDUCE_PROD over the axes given by an int32
//! tensor (constant, or known only at run time: prepare then asks to be run lazily).
//! Negative axes count from the end and duplicates count once, as in LiteRT.
//!
//! float32 and int32 reduce directly (int32 MEAN sums in 64 bits and truncates toward
//! zero, like LiteRT). int8/uint8 MEAN and SUM requantize in fixed point exactly as
//! LiteRT's builtin kernel: the zero-point-corrected sum is multiplied by
//! `input_scale / output_scale` (for MEAN with `1 / count` folded into the multiplier);
//! the 4-D MEAN over height and width with kept dims (global average pooling) takes
//! LiteRT's separate path for it, which rounds differently ([`Arith::MeanHw`]).
//! Quantized MAX/MIN compare raw values, so input and output must share quantization.
//! Quantized PROD (int8, as in LiteRT) rescales after every multiplication by
//! `input_scale / output_scale^(1/count)` so the running product never overflows.
//!
//! LiteRT sums int8 values in int8 (wrapping, ignoring the zero point) when input and
//! output share quantization; we requantize in every case, which agrees with it whenever
//! its own result is meaningful (zero point 0, no overflow).

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

use crate::quant::{
    dtype_range, load_q, multiply_by_quantized_multiplier, multiply_by_quantized_multiplier_i64,
    per_tensor, quantize_multiplier, store_q,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::normalize_axis;
use switchyard_interpreter::NodeSupportCtx;

/// MEAN, SUM, REDUCE_MAX, REDUCE_MIN, REDUCE_PROD.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Mean, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::Sum, prepare).gpu(gpu),
    OpDescriptor::new(BuiltinOp::ReduceMax, prepare),
    OpDescriptor::new(BuiltinOp::ReduceMin, prepare),
    OpDescriptor::new(BuiltinOp::ReduceProd, prepare),
];

/// GPU: float32 up to rank 6, constant axes.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 2, 2, 1)?;
    let x = support::input(ctx, 0)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    let rank = x.shape.len();
    let mut reduced = vec![false; rank];
    for a in support::const_ints(&support::input(ctx, 1)?, "axes")? {
        reduced[normalize_axis(a, rank).map_err(|e| e.to_string())?] = true;
    }
    let kept: usize = (0..rank)
        .filter(|&d| !reduced[d])
        .map(|d| x.shape[d])
        .product();
    if out.element_count() != kept {
        return Err(format!("output {:?} should hold {kept} values", out.shape));
    }
    let total: usize = (0..rank)
        .filter(|&d| reduced[d])
        .map(|d| x.shape[d])
        .product();
    support::gpu_rank(x.shape)?;
    support::gpu_count(out.shape)?;
    support::gpu_u32(total, "reduced count")?;
    let mut stride = 1usize;
    for &d in x.shape.iter().rev() {
        support::gpu_u32(d, "dimension")?;
        support::gpu_u32(stride, "dimension")?;
        stride = stride.saturating_mul(d);
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
}

#[derive(Clone, Copy, Debug)]
enum Arith {
    F32,
    I32,
    /// Requantizing MEAN/SUM of int8/uint8.
    Requant {
        dtype: DType,
        zp_in: i32,
        zp_out: i32,
        multiplier: i32,
        shift: i32,
        qmin: i32,
        qmax: i32,
    },
    /// Quantized int8 PROD: each multiplication step rescales by
    /// `input_scale / output_scale^(1/count)` so the running product stays in range.
    Prod {
        zp_in: i32,
        zp_out: i32,
        multiplier: i32,
        shift: i32,
    },
    /// MAX/MIN of int8/uint8 with shared quantization.
    RawQ {
        dtype: DType,
    },
    /// LiteRT's own path for the 4-D MEAN over height and width with kept dims (global
    /// average pooling), which rounds differently from the general one: the raw sum is
    /// rescaled by `input_scale / (count * output_scale)` and a bias (the output zero
    /// point minus the rounded, rescaled input zero point) is added.
    MeanHw {
        dtype: DType,
        multiplier: i32,
        shift: i32,
        bias: i32,
        qmin: i32,
        qmax: i32,
    },
}

struct Reduce {
    kind: Kind,
    in_shape: Vec<usize>,
    /// Per input dimension, the stride of the output index (0 on reduced axes).
    out_strides: Vec<usize>,
    out_len: usize,
    /// Input elements folded into each output element.
    count: usize,
    arith: Arith,
}

/// Sorted, de-duplicated, non-negative axes.
fn resolve_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, KernelError> {
    let mut out = Vec::new();
    for &a in axes {
        if rank == 0 {
            // LiteRT ignores the axes of a scalar; so do we, but only in-range ones.
            if a != 0 && a != -1 {
                return Err(KernelError::invalid(format!(
                    "axis {a} out of range for a scalar"
                )));
            }
            continue;
        }
        let a = normalize_axis(a, rank)?;
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let kind = match ctx.op().builtin() {
        Some(BuiltinOp::Mean) => Kind::Mean,
        Some(BuiltinOp::Sum) => Kind::Sum,
        Some(BuiltinOp::ReduceMax) => Kind::Max,
        Some(BuiltinOp::ReduceMin) => Kind::Min,
        Some(BuiltinOp::ReduceProd) => Kind::Prod,
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a reduction",
                ctx.op()
            )));
        }
    };
    ctx.expect_arity(2, 2, 1)?;
    let x = ctx.input(0)?;
    let axis = ctx.input(1)?;
    let out = ctx.output(0)?;
    if axis.dtype != DType::I32 {
        return Err(KernelError::dtype("int32 axes", axis.dtype));
    }
    if axis.shape.len() > 1 {
        return Err(KernelError::shape(format!(
            "axes must be a scalar or a vector, have shape {:?}",
            axis.shape
        )));
    }
    if out.dtype != x.dtype {
        return Err(KernelError::invalid(format!(
            "output dtype {} differs from input dtype {}",
            out.dtype, x.dtype
        )));
    }
    let keep_dims = match ctx.node.options {
        OpOptions::Reducer { keep_dims } => keep_dims,
        _ => false,
    };
    let arith = match x.dtype {
        DType::F32 => Arith::F32,
        DType::I32 => Arith::I32,
        DType::I8 | DType::U8 => {
            let (si, zi) = per_tensor(x.quant, "input")?;
            let (so, zo) = per_tensor(out.quant, "output")?;
            match kind {
                Kind::Mean | Kind::Sum => {
                    if !(si > 0.0 && so > 0.0 && si.is_finite() && so.is_finite()) {
                        return Err(KernelError::invalid(format!(
                            "quantization scales must be positive, are {si} and {so}"
                        )));
                    }
                    let (multiplier, shift) = quantize_multiplier(si as f64 / so as f64);
                    let (qmin, qmax) = dtype_range(x.dtype)?;
                    Arith::Requant {
                        dtype: x.dtype,
                        zp_in: zi,
                        zp_out: zo,
                        multiplier,
                        shift,
                        qmin,
                        qmax,
                    }
                }
                Kind::Max | Kind::Min => {
                    if si != so || zi != zo {
                        return Err(KernelError::unsupported(format!(
                            "{} with different input (scale {si}, zero point {zi}) and output (scale {so}, zero point {zo}) quantization",
                            ctx.op()
                        )));
                    }
                    Arith::RawQ { dtype: x.dtype }
                }
                // The multiplier depends on the reduced count, known once the axes are.
                Kind::Prod if x.dtype == DType::I8 => Arith::Prod {
                    zp_in: zi,
                    zp_out: zo,
                    multiplier: 0,
                    shift: 0,
                },
                Kind::Prod => {
                    return Err(KernelError::unsupported(format!(
                        "{} on quantized {} (LiteRT has int8 only)",
                        ctx.op(),
                        x.dtype
                    )));
                }
            }
        }
        other => {
            return Err(KernelError::unsupported(format!("{} on {other}", ctx.op())));
        }
    };
    let Some(axis_value) = axis.value() else {
        return Err(KernelError::NeedsValues);
    };
    let rank = x.shape.len();
    let axes = resolve_axes(&axis_value.to_i64_vec()?, rank)?;
    let mut kept = x.shape.to_vec();
    for &a in &axes {
        kept[a] = 1;
    }
    let out_len: usize = kept.iter().product();
    let mut out_strides = vec![0; rank];
    let mut s = 1;
    for d in (0..rank).rev() {
        out_strides[d] = if axes.contains(&d) { 0 } else { s };
        s *= kept[d];
    }
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let out_shape = if keep_dims {
        kept
    } else {
        (0..rank)
            .filter(|d| !axes.contains(d))
            .map(|d| x.shape[d])
            .collect()
    };
    // LiteRT matches the literal axis values here, not the resolved ones.
    let raw_axes = axis_value.to_i64_vec()?;
    let hw = keep_dims && rank == 4 && (raw_axes == [1, 2] || raw_axes == [2, 1]);
    let arith = match (kind, arith) {
        (
            Kind::Mean,
            Arith::Requant {
                dtype,
                zp_in,
                zp_out,
                qmin,
                qmax,
                ..
            },
        ) if hw && count > 0 => {
            let (si, _) = per_tensor(x.quant, "input")?;
            let (so, _) = per_tensor(out.quant, "output")?;
            let (multiplier, shift) = quantize_multiplier((si / (count as f32 * so)) as f64);
            // f32 arithmetic and rounding half away from zero, as LiteRT computes it.
            let centre = zp_in as f32 * si / so;
            let centre = if centre > 0.0 {
                centre + 0.5
            } else {
                centre - 0.5
            };
            let bias = zp_out - centre as i32;
            Arith::MeanHw {
                dtype,
                multiplier,
                shift,
                bias,
                qmin,
                qmax,
            }
        }
        (Kind::Prod, Arith::Prod { zp_in, zp_out, .. }) => {
            let (si, _) = per_tensor(x.quant, "input")?;
            let (so, _) = per_tensor(out.quant, "output")?;
            let (multiplier, shift) = if count > 0 {
                quantize_multiplier(si as f64 / (so as f64).powf(1.0 / count as f64))
            } else {
                (0, 0)
            };
            if !(-31..8).contains(&shift) {
                return Err(KernelError::unsupported(format!(
                    "quantized {} rescales by 2^{shift}, outside LiteRT's range",
                    ctx.op()
                )));
            }
            Arith::Prod {
                zp_in,
                zp_out,
                multiplier,
                shift,
            }
        }
        // Fold 1/count into the multiplier, keeping as many bits as the shift allows.
        (
            Kind::Mean,
            Arith::Requant {
                dtype,
                zp_in,
                zp_out,
                multiplier,
                shift,
                qmin,
                qmax,
            },
        ) if count > 0 => {
            let n = count as i64;
            let extra = (63 - (n as u64).leading_zeros() as i32)
                .min(32)
                .min(31 + shift);
            let extra = extra.max(0);
            Arith::Requant {
                dtype,
                zp_in,
                zp_out,
                multiplier: (((multiplier as i64) << extra) / n) as i32,
                shift: shift - extra,
                qmin,
                qmax,
            }
        }
        (_, a) => a,
    };
    Ok(PreparedKernel::new(
        vec![out_shape],
        Reduce {
            kind,
            in_shape: x.shape.to_vec(),
            out_strides,
            out_len,
            count,
            arith,
        },
    ))
}

impl Reduce {
    /// Calls `f(input_index, output_index)` for every input element in row-major order.
    fn walk(&self, mut f: impl FnMut(usize, usize)) {
        let total: usize = self.in_shape.iter().product();
        let rank = self.in_shape.len();
        let mut idx = vec![0usize; rank];
        let mut o = 0usize;
        for i in 0..total {
            f(i, o);
            for d in (0..rank).rev() {
                idx[d] += 1;
                o += self.out_strides[d];
                if idx[d] < self.in_shape[d] {
                    break;
                }
                o -= self.out_strides[d] * self.in_shape[d];
                idx[d] = 0;
            }
        }
    }

    /// The reduced axes are the innermost ones (ignoring size-1 axes), so input
    /// element `i` folds into output `i / count`.
    fn trailing(&self) -> bool {
        let mut reduced = false;
        for (&n, &s) in self.in_shape.iter().zip(&self.out_strides) {
            if n == 1 {
                continue;
            }
            if s == 0 {
                reduced = true;
            } else if reduced {
                return false;
            }
        }
        true
    }

    fn eval_f32(&self, x: &[f32], y: &mut [f32]) {
        let init = match self.kind {
            Kind::Mean | Kind::Sum => 0.0,
            Kind::Prod => 1.0,
            Kind::Max => f32::MIN,
            Kind::Min => f32::MAX,
        };
        if self.count > 0 && x.len() == y.len() * self.count && self.trailing() {
            // Each output folds one contiguous run, in the walk's order: same bits,
            // without the per-element index arithmetic.
            for (yo, run) in y.iter_mut().zip(x.chunks_exact(self.count)) {
                *yo = match self.kind {
                    Kind::Mean | Kind::Sum => run.iter().fold(init, |a, &v| a + v),
                    Kind::Prod => run.iter().fold(init, |a, &v| a * v),
                    Kind::Max => run.iter().fold(init, |a, &v| a.max(v)),
                    Kind::Min => run.iter().fold(init, |a, &v| a.min(v)),
                };
            }
        } else {
            y.fill(init);
            self.walk(|i, o| {
                let v = x[i];
                y[o] = match self.kind {
                    Kind::Mean | Kind::Sum => y[o] + v,
                    Kind::Prod => y[o] * v,
                    Kind::Max => y[o].max(v),
                    Kind::Min => y[o].min(v),
                };
            });
        }
        if self.kind == Kind::Mean {
            if self.count == 0 {
                y.fill(f32::NAN);
            } else {
                let n = self.count as f32;
                y.iter_mut().for_each(|v| *v /= n);
            }
        }
    }

    fn eval_i32(&self, x: &[i32], y: &mut [i32]) {
        let mut acc: Vec<i64> = vec![0; self.out_len];
        match self.kind {
            Kind::Mean => self.walk(|i, o| acc[o] += x[i] as i64),
            _ => {
                let init = match self.kind {
                    Kind::Prod => 1,
                    Kind::Max => i32::MIN,
                    Kind::Min => i32::MAX,
                    _ => 0,
                };
                y.fill(init);
                self.walk(|i, o| {
                    let v = x[i];
                    y[o] = match self.kind {
                        Kind::Sum => y[o].wrapping_add(v),
                        Kind::Prod => y[o].wrapping_mul(v),
                        Kind::Max => y[o].max(v),
                        _ => y[o].min(v),
                    };
                });
                return;
            }
        }
        let n = self.count as i64;
        for (out, s) in y.iter_mut().zip(acc) {
            *out = if n == 0 { 0 } else { (s / n) as i32 };
        }
    }

    fn eval_q(&self, x: &[u8], y: &mut [u8]) {
        match self.arith {
            Arith::Requant {
                dtype,
                zp_in,
                zp_out,
                multiplier,
                shift,
                qmin,
                qmax,
            } => {
                if self.count == 0 {
                    y.fill(0);
                    return;
                }
                let mut acc: Vec<i64> = vec![0; self.out_len];
                self.walk(|i, o| acc[o] += load_q(x, dtype, i) as i64);
                let n = self.count as i64;
                for (o, s) in acc.into_iter().enumerate() {
                    let centred = (s - zp_in as i64 * n) as i32;
                    let v = multiply_by_quantized_multiplier(centred, multiplier, shift)
                        .saturating_add(zp_out);
                    store_q(y, dtype, o, v.clamp(qmin, qmax));
                }
            }
            Arith::RawQ { dtype } => {
                let (qmin, qmax) = match dtype {
                    DType::I8 => (-128, 127),
                    _ => (0, 255),
                };
                let init = if self.kind == Kind::Max { qmin } else { qmax };
                let mut acc: Vec<i32> = vec![init; self.out_len];
                self.walk(|i, o| {
                    let v = load_q(x, dtype, i);
                    acc[o] = if self.kind == Kind::Max {
                        acc[o].max(v)
                    } else {
                        acc[o].min(v)
                    };
                });
                for (o, v) in acc.into_iter().enumerate() {
                    store_q(y, dtype, o, v);
                }
            }
            Arith::MeanHw {
                dtype,
                multiplier,
                shift,
                bias,
                qmin,
                qmax,
            } => {
                let mut acc: Vec<i32> = vec![0; self.out_len];
                self.walk(|i, o| acc[o] += load_q(x, dtype, i));
                for (o, s) in acc.into_iter().enumerate() {
                    let v = multiply_by_quantized_multiplier(s, multiplier, shift) + bias;
                    store_q(y, dtype, o, v.clamp(qmin, qmax));
                }
            }
            Arith::Prod {
                zp_in,
                zp_out,
                multiplier,
                shift,
            } => {
                if self.count == 0 {
                    return;
                }
                // The first element of each product is taken as is, later ones rescale.
                let mut acc: Vec<Option<i32>> = vec![None; self.out_len];
                self.walk(|i, o| {
                    let v = load_q(x, DType::I8, i) - zp_in;
                    acc[o] = Some(match acc[o] {
                        None => v,
                        Some(p) => multiply_by_quantized_multiplier_i64(
                            p as i64 * v as i64,
                            multiplier,
                            shift,
                        ),
                    });
                });
                for (o, p) in acc.into_iter().enumerate() {
                    let p = p.unwrap_or(0) as i64;
                    let v = multiply_by_quantized_multiplier_i64(p, multiplier, shift)
                        .saturating_add(zp_out);
                    store_q(y, DType::I8, o, v.clamp(-128, 127));
                }
            }
            Arith::F32 | Arith::I32 => {}
        }
    }
}

impl OpKernel for Reduce {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let y = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        let in_len: usize = self.in_shape.iter().product();
        if x.element_count() != in_len || x.bytes.len() != in_len * x.dtype.size() {
            return Err(KernelError::shape(format!(
                "input has shape {:?}, prepared for {:?}",
                x.shape, self.in_shape
            )));
        }
        if y.element_count() != self.out_len || y.bytes.len() != self.out_len * y.dtype.size() {
            return Err(KernelError::shape(format!(
                "output has {} elements, expected {}",
                y.element_count(),
                self.out_len
            )));
        }
        match self.arith {
            Arith::F32 => self.eval_f32(x.f32s()?, y.f32s_mut()?),
            Arith::I32 => self.eval_i32(x.i32s()?, y.i32s_mut()?),
            Arith::Requant { .. }
            | Arith::RawQ { .. }
            | Arith::MeanHw { .. }
            | Arith::Prod { .. } => self.eval_q(x.bytes, y.bytes),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.arith {
            Arith::F32 => "reduce/f32",
            Arith::I32 => "reduce/i32",
            Arith::Requant { .. } => "reduce/q8-requant",
            Arith::RawQ { .. } => "reduce/q8",
            Arith::MeanHw { .. } => "mean_hw/q8",
            Arith::Prod { .. } => "prod/i8",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, Quant};
    use switchyard_testkit::{Tolerance, assert_matches_litert, random_tensor};

    use super::*;
    use crate::ops::testing::{prepare_error, resolvers};

    struct Case {
        op: BuiltinOp,
        dtype: DType,
        shape: Vec<usize>,
        axes: Vec<i32>,
        keep_dims: bool,
        /// Axes fed as a model input instead of a constant.
        runtime_axes: bool,
        /// (input, output) quantization.
        quant: Option<(Quant, Quant)>,
    }

    fn expected_shape(c: &Case) -> Vec<usize> {
        let rank = c.shape.len();
        // Bad axes (prepare-error tests) keep the input shape.
        let Ok(axes) = resolve_axes(&c.axes.iter().map(|&a| a as i64).collect::<Vec<_>>(), rank)
        else {
            return c.shape.clone();
        };
        (0..rank)
            .filter_map(|d| {
                if axes.contains(&d) {
                    c.keep_dims.then_some(1)
                } else {
                    Some(c.shape[d])
                }
            })
            .collect()
    }

    fn model(c: &Case) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.shape);
        let axes = if c.runtime_axes {
            sg.tensor("axes", DType::I32, &[c.axes.len()])
        } else {
            sg.constant_i32("axes", &[c.axes.len()], &c.axes)
        };
        let y = sg.tensor("y", c.dtype, &expected_shape(c));
        if let Some((qi, qo)) = &c.quant {
            sg.set_quant(x, qi.clone());
            sg.set_quant(y, qo.clone());
        }
        sg.op(
            OpKind::Builtin(c.op),
            &[Some(x), Some(axes)],
            &[y],
            OpOptions::Reducer {
                keep_dims: c.keep_dims,
            },
        );
        if c.runtime_axes {
            sg.set_inputs(&[x, axes]);
        } else {
            sg.set_inputs(&[x]);
        }
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn run(c: &Case) {
        let (lo, hi) = match c.dtype {
            DType::F32 => (-2.0, 2.0),
            DType::I32 => (-1000.0, 1000.0),
            _ => (-128.0, 255.0),
        };
        let (lo, hi) = if c.op == BuiltinOp::ReduceProd && c.dtype == DType::I32 {
            (-3.0, 3.0)
        } else if c.op == BuiltinOp::ReduceProd && c.dtype == DType::I8 {
            (-70.0, 70.0)
        } else if c.op == BuiltinOp::ReduceProd {
            (0.5, 1.5)
        } else {
            (lo, hi)
        };
        let mut inputs = vec![random_tensor(c.dtype, &c.shape, 11, lo, hi)];
        if c.runtime_axes {
            inputs.push(
                switchyard_interpreter::Tensor::from_bytes(
                    DType::I32,
                    vec![c.axes.len()],
                    bytemuck::cast_slice(&c.axes),
                )
                .unwrap(),
            );
        }
        let name = format!(
            "{:?} {:?} {:?} axes {:?} keep {} runtime {} quant {:?}",
            c.op, c.dtype, c.shape, c.axes, c.keep_dims, c.runtime_axes, c.quant
        );
        let tol = (c.dtype != DType::F32).then_some(Tolerance::Exact);
        assert_matches_litert(&name, &model(c), &inputs, &resolvers(), tol);
    }

    fn case(op: BuiltinOp, dtype: DType, shape: &[usize], axes: &[i32]) -> Case {
        Case {
            op,
            dtype,
            shape: shape.to_vec(),
            axes: axes.to_vec(),
            keep_dims: false,
            runtime_axes: false,
            quant: None,
        }
    }

    const ALL: [BuiltinOp; 5] = [
        BuiltinOp::Mean,
        BuiltinOp::Sum,
        BuiltinOp::ReduceMax,
        BuiltinOp::ReduceMin,
        BuiltinOp::ReduceProd,
    ];

    #[test]
    fn float_reductions_match_litert() {
        for op in ALL {
            run(&case(op, DType::F32, &[2, 3, 4, 5], &[1, 2]));
            run(&Case {
                keep_dims: true,
                ..case(op, DType::F32, &[2, 3, 4, 5], &[1, 2])
            });
            // Negative and duplicated axes.
            run(&case(op, DType::F32, &[3, 4, 5], &[-1, 0, 2]));
            run(&Case {
                keep_dims: true,
                ..case(op, DType::F32, &[3, 4, 5], &[-2])
            });
            // Every axis, and axes given at run time.
            run(&case(op, DType::F32, &[4, 6], &[0, 1]));
            run(&Case {
                runtime_axes: true,
                ..case(op, DType::F32, &[3, 4, 5], &[1])
            });
        }
    }

    #[test]
    fn int32_reductions_match_litert() {
        for op in ALL {
            run(&case(op, DType::I32, &[3, 4, 5], &[1]));
            run(&Case {
                keep_dims: true,
                ..case(op, DType::I32, &[3, 4, 5], &[0, -1])
            });
        }
    }

    #[test]
    fn quantized_mean_and_sum_requantize_like_litert() {
        for dtype in [DType::I8, DType::U8] {
            let shift = if dtype == DType::U8 { 128 } else { 0 };
            let quants = [
                (
                    Quant::per_tensor(0.05, 3 + shift),
                    Quant::per_tensor(0.02, -5 + shift),
                ),
                (
                    Quant::per_tensor(0.1, -20 + shift),
                    Quant::per_tensor(0.1, -20 + shift),
                ),
                (
                    Quant::per_tensor(0.013, shift),
                    Quant::per_tensor(0.07, 10 + shift),
                ),
            ];
            for q in quants {
                // The 4-D height/width mean LiteRT special-cases, and the general path.
                let mean4 = Case {
                    keep_dims: true,
                    quant: Some(q.clone()),
                    ..case(BuiltinOp::Mean, dtype, &[2, 5, 7, 3], &[1, 2])
                };
                run(&mean4);
                run(&Case {
                    quant: Some(q.clone()),
                    ..case(BuiltinOp::Mean, dtype, &[3, 4, 5], &[-1, 0])
                });
                run(&Case {
                    quant: Some(q.clone()),
                    runtime_axes: true,
                    ..case(BuiltinOp::Mean, dtype, &[6, 4], &[1])
                });
            }
            // SUM with different scales (the sum must fit the output's range).
            let q = (
                Quant::per_tensor(0.01, 2 + shift),
                Quant::per_tensor(0.2, -3 + shift),
            );
            run(&Case {
                quant: Some(q.clone()),
                ..case(BuiltinOp::Sum, dtype, &[3, 4, 5], &[1])
            });
            run(&Case {
                quant: Some(q),
                keep_dims: true,
                ..case(BuiltinOp::Sum, dtype, &[2, 3, 4, 2], &[1, 2])
            });
            // MAX/MIN compare raw values.
            let same = (
                Quant::per_tensor(0.05, 7 + shift),
                Quant::per_tensor(0.05, 7 + shift),
            );
            for op in [BuiltinOp::ReduceMax, BuiltinOp::ReduceMin] {
                run(&Case {
                    quant: Some(same.clone()),
                    ..case(op, dtype, &[3, 4, 5], &[0, 2])
                });
            }
        }
    }

    #[test]
    fn edge_cases_match_litert() {
        // No axes: a copy. The general int8 MEAN path for a 4-D tensor without kept dims.
        run(&case(BuiltinOp::Sum, DType::F32, &[2, 3], &[]));
        run(&case(BuiltinOp::ReduceMax, DType::I32, &[2, 3], &[]));
        run(&Case {
            quant: Some((Quant::per_tensor(0.05, 3), Quant::per_tensor(0.02, -5))),
            ..case(BuiltinOp::Mean, DType::I8, &[2, 5, 7, 3], &[1, 2])
        });
        // SUM with shared quantization and zero point 0, in range: LiteRT's raw int8
        // sum and our requantized one agree.
        let same = (Quant::per_tensor(0.1, 0), Quant::per_tensor(0.1, 0));
        let mut mb_case = case(BuiltinOp::Sum, DType::I8, &[4, 3], &[0]);
        mb_case.quant = Some(same);
        let x = random_tensor(DType::I8, &[4, 3], 3, -20.0, 20.0);
        let name = "SUM int8 shared quantization";
        assert_matches_litert(
            name,
            &model(&mb_case),
            &[x],
            &resolvers(),
            Some(Tolerance::Exact),
        );
    }

    #[test]
    fn quantized_int8_prod_rescales_each_step_like_litert() {
        for (shape, axes, keep_dims, qi, qo) in [
            (vec![3, 4, 5], vec![1], false, (0.02, 0), (0.05, -4)),
            (vec![2, 3, 4], vec![0, 2], true, (0.015, 5), (0.1, 3)),
            (vec![6, 2], vec![-2], false, (0.01, -10), (0.004, 0)),
        ] {
            run(&Case {
                keep_dims,
                quant: Some((Quant::per_tensor(qi.0, qi.1), Quant::per_tensor(qo.0, qo.1))),
                ..case(BuiltinOp::ReduceProd, DType::I8, &shape, &axes)
            });
        }
    }

    #[test]
    fn bad_reductions_are_rejected_at_prepare() {
        let err = |c: &Case| prepare_error(&model(c));
        let e = err(&case(BuiltinOp::Mean, DType::F32, &[2, 3], &[2]));
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = err(&case(BuiltinOp::Sum, DType::F32, &[2, 3], &[-3]));
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = err(&case(BuiltinOp::Mean, DType::I8, &[2, 3], &[0]));
        assert!(e.to_string().contains("quantization"), "{e}");
        let e = err(&Case {
            quant: Some((Quant::per_tensor(0.1, 0), Quant::per_tensor(0.2, 0))),
            ..case(BuiltinOp::ReduceMax, DType::I8, &[2, 3], &[0])
        });
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        let e = err(&Case {
            quant: Some((Quant::per_tensor(0.1, 128), Quant::per_tensor(0.1, 128))),
            ..case(BuiltinOp::ReduceProd, DType::U8, &[2, 3], &[0])
        });
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        let e = err(&case(BuiltinOp::Mean, DType::Bool, &[2, 3], &[0]));
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        // Axes of the wrong dtype.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[2, 3]);
        let axes = sg.constant_f32("axes", &[1], &[0.0]);
        let y = sg.tensor("y", DType::F32, &[3]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Mean),
            &[Some(x), Some(axes)],
            &[y],
            OpOptions::Reducer { keep_dims: false },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&mb.finish());
        assert!(matches!(e, KernelError::DType { .. }), "{e}");
    }

    /// The run budget is checked between nodes, so one node's work is bounded at
    /// prepare: a reduction reads every input element whatever its output size (the
    /// fuzzer's timeout was a quantized reduction of a huge tensor into a few values).
    #[test]
    fn a_node_above_the_work_limit_is_refused_before_it_runs() {
        use std::sync::Arc;
        use switchyard_interpreter::{
            BudgetExceeded, Model, Plan, PlanOptions, PrepareLimits, RunError, SessionLimits,
        };
        let options = |limit: f64| PlanOptions {
            prepare: PrepareLimits {
                max_node_work: limit,
                ..PrepareLimits::default()
            },
            ..PlanOptions::default()
        };
        let big = case(BuiltinOp::Sum, DType::F32, &[64, 64, 64], &[0, 1, 2]);
        for (_, resolver) in resolvers() {
            let load = || Arc::new(Model::from_bytes(&model(&big)).unwrap());
            // 262,144 elements read: refused under 1e5, prepared under 1e6.
            let e = Plan::new(load(), resolver.clone(), options(1e5)).unwrap_err();
            assert!(
                matches!(e, RunError::Budget(BudgetExceeded::NodeWork { .. })),
                "{e}"
            );
            Plan::new(load(), resolver.clone(), options(1e6)).unwrap();
            // Axes known only at run time: the node is prepared then, and refused then.
            let lazy = Case {
                runtime_axes: true,
                ..case(BuiltinOp::Sum, DType::F32, &[64, 64, 64], &[0, 1, 2])
            };
            let plan = Plan::new(
                Arc::new(Model::from_bytes(&model(&lazy)).unwrap()),
                resolver.clone(),
                options(1e5),
            )
            .unwrap();
            let mut s = plan.session(SessionLimits::default()).unwrap();
            let x = random_tensor(DType::F32, &[64, 64, 64], 3, -1.0, 1.0);
            let axes = [0i32, 1, 2];
            s.set_input(0, x.view().bytes).unwrap();
            s.set_input(1, bytemuck::cast_slice(&axes)).unwrap();
            let e = s
                .invoke(&mut switchyard_interpreter::Budget::default())
                .unwrap_err();
            assert!(
                matches!(e, RunError::Budget(BudgetExceeded::NodeWork { .. })),
                "{e}"
            );
        }
    }
}
