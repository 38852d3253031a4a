//! MAX_POOL_2D and AVERAGE_POOL_2D over NHWC tensors: float32 with a fused activation,
//! int8 and uint8.
//!
//! Windows are clipped to the input (SAME padding never reads padded zeros), so an
//! average divides by the number of elements actually inside the window, as LiteRT does.
//! Quantized averages round to nearest the way LiteRT's integer kernels do: uint8 rounds
//! halves up, int8 rounds halves away from zero. Pooling never rescales, so quantized
//! input and output must share scale and zero point.

use switchyard_interpreter::{
    Activation, BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel,
    TensorView, TensorViewMut, kernel::input, ops::PoolOptions,
};

use crate::quant::{activation_range, load_q, per_tensor, store_q};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::{conv_output_size, expect_rank};
use switchyard_interpreter::NodeSupportCtx;

/// MAX_POOL_2D, AVERAGE_POOL_2D.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::MaxPool2d, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8)
        .work(crate::work::pool),
    OpDescriptor::new(BuiltinOp::AveragePool2d, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8)
        .work(crate::work::pool),
];

/// GPU: float32 NHWC, a clamp as fused activation.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 1, 1, 1)?;
    let OpOptions::Pool(o) = &ctx.node.options else {
        return Err("pooling without its options".into());
    };
    let x = support::input(ctx, 0)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    let &[n, ih, iw, c] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    let (oh, pad_top) =
        conv_output_size(ih, o.filter_h, o.stride_h, 1, o.padding).map_err(|e| e.to_string())?;
    let (ow, pad_left) =
        conv_output_size(iw, o.filter_w, o.stride_w, 1, o.padding).map_err(|e| e.to_string())?;
    if out.shape != [n, oh, ow, c] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, c]
        ));
    }
    support::gpu_count(out.shape)?;
    for (value, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (c, "channels"),
        (o.filter_h, "filter height"),
        (o.filter_w, "filter width"),
        (o.stride_h, "stride"),
        (o.stride_w, "stride"),
        (pad_top, "padding"),
        (pad_left, "padding"),
    ] {
        support::gpu_u32(value, what)?;
    }
    support::gpu_activation(o.activation)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Max,
    Average,
}

/// Geometry of one pooling node, fixed at prepare.
#[derive(Clone, Debug)]
struct Geometry {
    batches: usize,
    in_h: usize,
    in_w: usize,
    depth: usize,
    out_h: usize,
    out_w: usize,
    filter_h: usize,
    filter_w: usize,
    stride_h: usize,
    stride_w: usize,
    pad_top: usize,
    pad_left: usize,
}

impl Geometry {
    /// The input rows and columns covered by output (oy, ox), clipped to the input.
    fn window(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let y0 = (oy * self.stride_h) as isize - self.pad_top as isize;
        let x0 = (ox * self.stride_w) as isize - self.pad_left as isize;
        let ys = y0.max(0) as usize
            ..((y0 + self.filter_h as isize).min(self.in_h as isize)).max(0) as usize;
        let xs = x0.max(0) as usize
            ..((x0 + self.filter_w as isize).min(self.in_w as isize)).max(0) as usize;
        (ys, xs)
    }
}

#[derive(Clone, Copy)]
enum Arith {
    Float { min: f32, max: f32 },
    Quant { dtype: DType, min: i32, max: i32 },
}

struct Pool {
    kind: Kind,
    geo: Geometry,
    arith: Arith,
    /// Accumulate whole channel rows per window position (contiguous, vectorisable)
    /// instead of one channel at a time; same arithmetic in the same order per channel.
    rows: bool,
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
    let kind = match ctx.op().builtin() {
        Some(BuiltinOp::MaxPool2d) => Kind::Max,
        Some(BuiltinOp::AveragePool2d) => Kind::Average,
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a pooling op",
                ctx.op()
            )));
        }
    };
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    let out = ctx.output(0)?;
    let opts: &PoolOptions = match &ctx.node.options {
        OpOptions::Pool(p) => p,
        _ => return Err(KernelError::invalid("pooling node without Pool2DOptions")),
    };
    expect_rank("pooling input", x.shape, 4)?;
    if out.dtype != x.dtype {
        return Err(KernelError::invalid(format!(
            "output dtype {} differs from input dtype {}",
            out.dtype, x.dtype
        )));
    }
    if matches!(opts.activation, Activation::Tanh | Activation::SignBit) {
        return Err(KernelError::unsupported(format!(
            "fused activation {:?} on {}",
            opts.activation,
            ctx.op()
        )));
    }
    let (in_h, in_w) = (x.shape[1], x.shape[2]);
    let (out_h, pad_top) = conv_output_size(in_h, opts.filter_h, opts.stride_h, 1, opts.padding)?;
    let (out_w, pad_left) = conv_output_size(in_w, opts.filter_w, opts.stride_w, 1, opts.padding)?;
    let geo = Geometry {
        batches: x.shape[0],
        in_h,
        in_w,
        depth: x.shape[3],
        out_h,
        out_w,
        filter_h: opts.filter_h,
        filter_w: opts.filter_w,
        stride_h: opts.stride_h,
        stride_w: opts.stride_w,
        pad_top,
        pad_left,
    };
    let arith = match x.dtype {
        DType::F32 => {
            let (min, max) = opts.activation.float_range();
            Arith::Float { min, max }
        }
        DType::I8 | DType::U8 => {
            let (si, zi) = per_tensor(x.quant, "input")?;
            let (so, zo) = per_tensor(out.quant, "output")?;
            if si != so || zi != zo {
                return Err(KernelError::unsupported(format!(
                    "{} with different input (scale {si}, zero point {zi}) and output (scale {so}, zero point {zo}) quantization",
                    ctx.op()
                )));
            }
            let (min, max) = activation_range(opts.activation, so, zo, x.dtype)?;
            Arith::Quant {
                dtype: x.dtype,
                min,
                max,
            }
        }
        other => {
            return Err(KernelError::unsupported(format!("{} on {other}", ctx.op())));
        }
    };
    let shape = vec![geo.batches, out_h, out_w, geo.depth];
    let rows = optimized;
    Ok(PreparedKernel::new(
        vec![shape],
        Pool {
            kind,
            geo,
            arith,
            rows,
        },
    ))
}

impl Pool {
    /// Optimized float kernel: per output pixel, folds each window position's channel row
    /// into an accumulator row.
    fn eval_f32_rows(&self, x: &[f32], y: &mut [f32], min: f32, max: f32) {
        let g = &self.geo;
        let d = g.depth;
        if d == 0 {
            return;
        }
        let mut acc = vec![0f32; d];
        for (o, out) in y.chunks_exact_mut(d).enumerate() {
            let ox = o % g.out_w;
            let oy = (o / g.out_w) % g.out_h;
            let b = o / (g.out_w * g.out_h);
            let (ys, xs) = g.window(oy, ox);
            acc.fill(match self.kind {
                Kind::Max => f32::MIN,
                Kind::Average => 0.0,
            });
            for iy in ys.clone() {
                let row = (b * g.in_h + iy) * g.in_w;
                for ix in xs.clone() {
                    let src = &x[(row + ix) * d..(row + ix + 1) * d];
                    match self.kind {
                        Kind::Max => acc.iter_mut().zip(src).for_each(|(a, &v)| *a = a.max(v)),
                        Kind::Average => acc.iter_mut().zip(src).for_each(|(a, &v)| *a += v),
                    }
                }
            }
            let count = ys.len() * xs.len();
            if self.kind == Kind::Average && count > 0 {
                let n = count as f32;
                acc.iter_mut().for_each(|a| *a /= n);
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = a.clamp(min, max);
            }
        }
    }

    /// Optimized quantized kernel, organised like [`Pool::eval_f32_rows`].
    fn eval_q_rows(&self, x: &[u8], y: &mut [u8], dtype: DType, min: i32, max: i32) {
        let g = &self.geo;
        let d = g.depth;
        if d == 0 {
            return;
        }
        let mut acc = vec![0i32; d];
        let pixels = g.batches * g.out_h * g.out_w;
        for o in 0..pixels {
            let ox = o % g.out_w;
            let oy = (o / g.out_w) % g.out_h;
            let b = o / (g.out_w * g.out_h);
            let (ys, xs) = g.window(oy, ox);
            acc.fill(match self.kind {
                Kind::Max => i32::MIN,
                Kind::Average => 0,
            });
            for iy in ys.clone() {
                let row = (b * g.in_h + iy) * g.in_w;
                for ix in xs.clone() {
                    let base = (row + ix) * d;
                    for (c, a) in acc.iter_mut().enumerate() {
                        let v = load_q(x, dtype, base + c);
                        match self.kind {
                            Kind::Max => *a = (*a).max(v),
                            Kind::Average => *a += v,
                        }
                    }
                }
            }
            let count = (ys.len() * xs.len()) as i32;
            for (c, &a) in acc.iter().enumerate() {
                let v = if self.kind == Kind::Average && count > 0 {
                    if a > 0 {
                        (a + count / 2) / count
                    } else {
                        (a - count / 2) / count
                    }
                } else {
                    a
                };
                store_q(y, dtype, o * d + c, v.clamp(min, max));
            }
        }
    }

    fn eval_f32(&self, x: &[f32], y: &mut [f32], min: f32, max: f32) {
        let g = &self.geo;
        let mut o = 0;
        for b in 0..g.batches {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let (ys, xs) = g.window(oy, ox);
                    for c in 0..g.depth {
                        let mut acc = match self.kind {
                            Kind::Max => f32::MIN,
                            Kind::Average => 0.0,
                        };
                        let mut count = 0usize;
                        for iy in ys.clone() {
                            for ix in xs.clone() {
                                let v = x[((b * g.in_h + iy) * g.in_w + ix) * g.depth + c];
                                match self.kind {
                                    Kind::Max => acc = acc.max(v),
                                    Kind::Average => acc += v,
                                }
                                count += 1;
                            }
                        }
                        if self.kind == Kind::Average && count > 0 {
                            acc /= count as f32;
                        }
                        y[o] = acc.clamp(min, max);
                        o += 1;
                    }
                }
            }
        }
    }

    fn eval_q(&self, x: &[u8], y: &mut [u8], dtype: DType, min: i32, max: i32) {
        let g = &self.geo;
        let mut o = 0;
        for b in 0..g.batches {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let (ys, xs) = g.window(oy, ox);
                    for c in 0..g.depth {
                        let mut acc: i32 = match self.kind {
                            Kind::Max => i32::MIN,
                            Kind::Average => 0,
                        };
                        let mut count = 0i32;
                        for iy in ys.clone() {
                            for ix in xs.clone() {
                                let v = load_q(
                                    x,
                                    dtype,
                                    ((b * g.in_h + iy) * g.in_w + ix) * g.depth + c,
                                );
                                match self.kind {
                                    Kind::Max => acc = acc.max(v),
                                    Kind::Average => acc += v,
                                }
                                count += 1;
                            }
                        }
                        if self.kind == Kind::Average && count > 0 {
                            // Integer division truncates toward zero, so adding half the
                            // divisor with the sign of `acc` rounds half away from zero;
                            // uint8 sums are never negative.
                            acc = if acc > 0 {
                                (acc + count / 2) / count
                            } else {
                                (acc - count / 2) / count
                            };
                        }
                        store_q(y, dtype, o, acc.clamp(min, max));
                        o += 1;
                    }
                }
            }
        }
    }
}

impl OpKernel for Pool {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let y = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        let g = &self.geo;
        if x.element_count() != g.batches * g.in_h * g.in_w * g.depth
            || y.element_count() != g.batches * g.out_h * g.out_w * g.depth
            || x.bytes.len() != x.element_count() * x.dtype.size()
            || y.bytes.len() != y.element_count() * y.dtype.size()
        {
            return Err(KernelError::shape(
                "pooling buffers do not match the prepared shapes",
            ));
        }
        match (self.arith, self.rows) {
            (Arith::Float { min, max }, false) => self.eval_f32(x.f32s()?, y.f32s_mut()?, min, max),
            (Arith::Float { min, max }, true) => {
                self.eval_f32_rows(x.f32s()?, y.f32s_mut()?, min, max)
            }
            (Arith::Quant { dtype, min, max }, false) => {
                self.eval_q(x.bytes, y.bytes, dtype, min, max)
            }
            (Arith::Quant { dtype, min, max }, true) => {
                self.eval_q_rows(x.bytes, y.bytes, dtype, min, max)
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match (self.kind, &self.arith) {
            (Kind::Max, Arith::Float { .. }) => "max_pool/f32",
            (Kind::Max, Arith::Quant { .. }) => "max_pool/q8",
            (Kind::Average, Arith::Float { .. }) => "avg_pool/f32",
            (Kind::Average, Arith::Quant { .. }) => "avg_pool/q8",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, Padding, Quant};
    use switchyard_testkit::{Tolerance, assert_matches_litert, random_tensor};

    use super::*;
    use crate::ops::testing::{self, resolvers};

    struct Case {
        op: BuiltinOp,
        dtype: DType,
        shape: [usize; 4],
        filter: (usize, usize),
        stride: (usize, usize),
        padding: Padding,
        act: Activation,
    }

    fn options(c: &Case) -> OpOptions {
        OpOptions::Pool(PoolOptions {
            padding: c.padding,
            stride_w: c.stride.1,
            stride_h: c.stride.0,
            filter_w: c.filter.1,
            filter_h: c.filter.0,
            activation: c.act,
        })
    }

    fn model(c: &Case, out_shape: &[usize], quant: Option<Quant>) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.shape);
        let y = sg.tensor("y", c.dtype, out_shape);
        if let Some(q) = quant {
            sg.set_quant(x, q.clone());
            sg.set_quant(y, q);
        }
        sg.op(OpKind::Builtin(c.op), &[Some(x)], &[y], options(c));
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn run(c: &Case) {
        let (oh, _) = conv_output_size(c.shape[1], c.filter.0, c.stride.0, 1, c.padding).unwrap();
        let (ow, _) = conv_output_size(c.shape[2], c.filter.1, c.stride.1, 1, c.padding).unwrap();
        let out_shape = [c.shape[0], oh, ow, c.shape[3]];
        let (quant, lo, hi) = match c.dtype {
            DType::F32 => (None, -3.0, 3.0),
            DType::I8 => (Some(Quant::per_tensor(0.05, -7)), -128.0, 127.0),
            _ => (Some(Quant::per_tensor(0.05, 120)), 0.0, 255.0),
        };
        let x = random_tensor(c.dtype, &c.shape, 7, lo, hi);
        let name = format!(
            "{:?} {:?} {:?} filter {:?} stride {:?} {:?} {:?}",
            c.op, c.dtype, c.shape, c.filter, c.stride, c.padding, c.act
        );
        // Quantized pooling is integer arithmetic: it must be bit-exact.
        let tol = (c.dtype != DType::F32).then_some(Tolerance::Exact);
        assert_matches_litert(&name, &model(c, &out_shape, quant), &[x], &resolvers(), tol);
    }

    fn case(op: BuiltinOp, dtype: DType) -> Case {
        Case {
            op,
            dtype,
            shape: [2, 7, 6, 3],
            filter: (3, 3),
            stride: (2, 2),
            padding: Padding::Same,
            act: Activation::None,
        }
    }

    #[test]
    fn float_pools_match_litert() {
        for op in [BuiltinOp::MaxPool2d, BuiltinOp::AveragePool2d] {
            run(&case(op, DType::F32));
            run(&Case {
                padding: Padding::Valid,
                ..case(op, DType::F32)
            });
            run(&Case {
                filter: (2, 3),
                stride: (1, 2),
                act: Activation::Relu,
                ..case(op, DType::F32)
            });
            run(&Case {
                shape: [1, 8, 8, 5],
                filter: (2, 2),
                stride: (2, 2),
                act: Activation::Relu6,
                ..case(op, DType::F32)
            });
            run(&Case {
                filter: (4, 4),
                stride: (1, 1),
                act: Activation::ReluN1To1,
                ..case(op, DType::F32)
            });
        }
    }

    #[test]
    fn quantized_pools_match_litert_exactly() {
        for dtype in [DType::I8, DType::U8] {
            for op in [BuiltinOp::MaxPool2d, BuiltinOp::AveragePool2d] {
                run(&case(op, dtype));
                run(&Case {
                    padding: Padding::Valid,
                    filter: (2, 2),
                    stride: (1, 1),
                    ..case(op, dtype)
                });
                run(&Case {
                    shape: [1, 9, 9, 4],
                    filter: (5, 4),
                    stride: (3, 2),
                    act: Activation::Relu,
                    ..case(op, dtype)
                });
                run(&Case {
                    act: Activation::Relu6,
                    ..case(op, dtype)
                });
            }
        }
    }

    fn prepare_error(
        c: &Case,
        in_shape: &[usize],
        out_dtype: DType,
        qin: Option<Quant>,
        qout: Option<Quant>,
    ) -> KernelError {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, in_shape);
        let y = sg.tensor("y", out_dtype, in_shape);
        if let Some(q) = qin {
            sg.set_quant(x, q);
        }
        if let Some(q) = qout {
            sg.set_quant(y, q);
        }
        sg.op(OpKind::Builtin(c.op), &[Some(x)], &[y], options(c));
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        testing::prepare_error(&mb.finish())
    }

    #[test]
    fn bad_pooling_nodes_are_rejected_at_prepare() {
        let f32_case = || case(BuiltinOp::MaxPool2d, DType::F32);
        let shape = [1, 6, 6, 2];
        let e = prepare_error(&f32_case(), &[6, 6, 2], DType::F32, None, None);
        assert!(matches!(e, KernelError::Shape(_)), "{e}");
        let zero_stride = Case {
            stride: (0, 1),
            ..f32_case()
        };
        let e = prepare_error(&zero_stride, &shape, DType::F32, None, None);
        assert!(e.to_string().contains("stride"), "{e}");
        let too_big = Case {
            filter: (7, 7),
            padding: Padding::Valid,
            ..f32_case()
        };
        let e = prepare_error(&too_big, &shape, DType::F32, None, None);
        assert!(matches!(e, KernelError::Shape(_)), "{e}");
        let e = prepare_error(&f32_case(), &shape, DType::I32, None, None);
        assert!(e.to_string().contains("dtype"), "{e}");
        let q8 = case(BuiltinOp::AveragePool2d, DType::I8);
        let e = prepare_error(&q8, &shape, DType::I8, None, None);
        assert!(e.to_string().contains("quantization"), "{e}");
        let e = prepare_error(
            &q8,
            &shape,
            DType::I8,
            Some(Quant::per_tensor(0.1, 0)),
            Some(Quant::per_tensor(0.2, 0)),
        );
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        let i32_case = case(BuiltinOp::MaxPool2d, DType::I32);
        let e = prepare_error(&i32_case, &shape, DType::I32, None, None);
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        let tanh = Case {
            act: Activation::Tanh,
            ..f32_case()
        };
        let e = prepare_error(&tanh, &shape, DType::F32, None, None);
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// The optimized kernels fold the same values in the same order per channel as
        /// the reference ones, so their results are identical, bit for bit.
        #[test]
        fn optimized_equals_reference(
            avg in proptest::bool::ANY,
            dtype_pick in 0usize..3,
            b in 1usize..3, h in 1usize..9, w in 1usize..9, d in 1usize..6,
            fh in 1usize..5, fw in 1usize..5, sh in 1usize..4, sw in 1usize..4,
            same in proptest::bool::ANY,
            seed in 0u64..1000,
        ) {
            let dtype = [DType::F32, DType::I8, DType::U8][dtype_pick];
            let padding = if same { Padding::Same } else { Padding::Valid };
            proptest::prop_assume!(same || (fh <= h && fw <= w));
            let c = Case {
                op: if avg { BuiltinOp::AveragePool2d } else { BuiltinOp::MaxPool2d },
                dtype,
                shape: [b, h, w, d],
                filter: (fh, fw),
                stride: (sh, sw),
                padding,
                act: Activation::Relu6,
            };
            let (oh, _) = conv_output_size(h, fh, sh, 1, padding).unwrap();
            let (ow, _) = conv_output_size(w, fw, sw, 1, padding).unwrap();
            let quant = (dtype != DType::F32).then(|| Quant::per_tensor(0.05, if dtype == DType::U8 { 100 } else { -5 }));
            let bytes = model(&c, &[b, oh, ow, d], quant);
            let x = random_tensor(dtype, &c.shape, seed, -6.0, 6.0);
            let x = if dtype == DType::F32 { x } else { random_tensor(dtype, &c.shape, seed, -128.0, 255.0) };
            let run = |r: crate::CpuResolver| {
                switchyard_testkit::switchyard_run(&bytes, std::slice::from_ref(&x), std::sync::Arc::new(r)).unwrap()
            };
            let reference = run(crate::CpuResolver::reference());
            let optimized = run(crate::CpuResolver::optimized());
            proptest::prop_assert_eq!(reference[0].data.as_slice(), optimized[0].data.as_slice());
        }
    }
}
