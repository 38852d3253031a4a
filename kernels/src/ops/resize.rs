//! RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR of NHWC tensors to the (height, width)
//! held by an int32 size tensor (constant, or known only at run time: prepare then asks
//! to be run lazily). float32, int8 and uint8.
//!
//! Source coordinates follow LiteRT's rules for `align_corners` and
//! `half_pixel_centers`, computed in f32 as LiteRT does so that the same source pixels
//! are picked. As in LiteRT's builtin kernels, uint8 bilinear interpolates in f32 and
//! adds 0.5 before truncating toward zero, while int8 interpolates in 10-bit fixed point
//! (scales rounded to 1/1024, so source positions differ slightly from float ones).
//! Resizing never rescales, so input and output must share quantization.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

use crate::quant::{load_q, per_tensor, store_q};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::expect_rank;

/// RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::ResizeBilinear, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::ResizeNearestNeighbor, prepare).gpu(gpu),
];

/// GPU: float32 NHWC input, a constant int32 [2] size, not both align_corners and
/// half_pixel_centers; 8x8 output tiles and 4-channel groups within one dispatch.
fn gpu(ctx: &switchyard_interpreter::NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 2, 2, 1)?;
    if let OpOptions::Resize {
        align_corners: true,
        half_pixel_centers: true,
    } = ctx.node.options
    {
        return Err("align_corners and half_pixel_centers cannot both be set".into());
    }
    let x = support::input(ctx, 0)?;
    let size = support::input(ctx, 1)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    if size.dtype != DType::I32 {
        return Err(format!("size is {}, expected int32", size.dtype));
    }
    let &[n, ih, iw, c] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    let hw = support::const_ints(&size, "size")?;
    let (oh, ow) = match hw.as_slice() {
        &[h, w] if h > 0 && w > 0 => (h as usize, w as usize),
        other => return Err(format!("output size {other:?} must be two positive values")),
    };
    if ih == 0 || iw == 0 {
        return Err(format!("cannot resize an empty image {:?}", x.shape));
    }
    if out.shape != [n, oh, ow, c] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, c]
        ));
    }
    support::gpu_count(out.shape)?;
    support::gpu_count(x.shape)?;
    let tiles = oh.div_ceil(8) * ow.div_ceil(8) * n;
    if tiles > 65_535 || c.div_ceil(4) > 65_535 {
        return Err(format!("{tiles} tiles of {c} channels exceed one dispatch"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bilinear,
    Nearest,
}

struct Resize {
    kind: Kind,
    dtype: DType,
    align_corners: bool,
    half_pixel_centers: bool,
    /// batches, in_h, in_w, depth, out_h, out_w
    dims: [usize; 6],
    /// Float bilinear: per output column, the two source columns and the fraction.
    columns: Vec<(usize, usize, f32)>,
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let kind = match ctx.op().builtin() {
        Some(BuiltinOp::ResizeBilinear) => Kind::Bilinear,
        Some(BuiltinOp::ResizeNearestNeighbor) => Kind::Nearest,
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a resize op",
                ctx.op()
            )));
        }
    };
    ctx.expect_arity(2, 2, 1)?;
    let x = ctx.input(0)?;
    let size = ctx.input(1)?;
    let out = ctx.output(0)?;
    expect_rank("resize input", x.shape, 4)?;
    if size.dtype != DType::I32 {
        return Err(KernelError::dtype("int32 size", size.dtype));
    }
    if size.shape != [2] {
        return Err(KernelError::shape(format!(
            "size must have shape [2], has {:?}",
            size.shape
        )));
    }
    if out.dtype != x.dtype {
        return Err(KernelError::invalid(format!(
            "output dtype {} differs from input dtype {}",
            out.dtype, x.dtype
        )));
    }
    let (align_corners, half_pixel_centers) = match ctx.node.options {
        OpOptions::Resize {
            align_corners,
            half_pixel_centers,
        } => (align_corners, half_pixel_centers),
        _ => (false, false),
    };
    if align_corners && half_pixel_centers {
        return Err(KernelError::invalid(
            "align_corners and half_pixel_centers cannot both be set",
        ));
    }
    match x.dtype {
        DType::F32 => {}
        DType::I8 | DType::U8 => {
            let (si, zi) = per_tensor(x.quant, "input")?;
            let (so, zo) = per_tensor(out.quant, "output")?;
            if si != so || zi != zo {
                return Err(KernelError::unsupported(format!(
                    "{} with different input (scale {si}, zero point {zi}) and output (scale {so}, zero point {zo}) quantization",
                    ctx.op()
                )));
            }
        }
        other => {
            return Err(KernelError::unsupported(format!("{} on {other}", ctx.op())));
        }
    }
    let Some(size) = size.value() else {
        return Err(KernelError::NeedsValues);
    };
    let hw = size.i32s()?;
    let (out_h, out_w) = match hw {
        &[h, w] if h > 0 && w > 0 => (h as usize, w as usize),
        other => {
            return Err(KernelError::invalid(format!(
                "output size must be positive, is {other:?}"
            )));
        }
    };
    if x.shape[1] == 0 || x.shape[2] == 0 {
        return Err(KernelError::shape(format!(
            "cannot resize an empty image of shape {:?}",
            x.shape
        )));
    }
    let dims = [x.shape[0], x.shape[1], x.shape[2], x.shape[3], out_h, out_w];
    let columns = if kind == Kind::Bilinear && x.dtype == DType::F32 {
        let sw = scale(dims[2], out_w, align_corners);
        (0..out_w)
            .map(|ox| {
                let (px, x0, x1) = bilinear_source(ox, sw, half_pixel_centers, dims[2]);
                (x0, x1, px - x0 as f32)
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(PreparedKernel::new(
        vec![vec![dims[0], out_h, out_w, dims[3]]],
        Resize {
            kind,
            dtype: x.dtype,
            align_corners,
            half_pixel_centers,
            dims,
            columns,
        },
    ))
}

/// Input/output size ratio along one axis.
fn scale(input: usize, output: usize, align_corners: bool) -> f32 {
    if align_corners && output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        input as f32 / output as f32
    }
}

/// The two source indices around output index `v` and the fractional source position.
fn bilinear_source(v: usize, scale: f32, half_pixel: bool, input: usize) -> (f32, usize, usize) {
    let pos = if half_pixel {
        (v as f32 + 0.5) * scale - 0.5
    } else {
        v as f32 * scale
    };
    let lower = (pos.floor() as i64).max(0) as usize;
    let upper = (pos.ceil() as i64).clamp(0, input as i64 - 1) as usize;
    (pos, lower.min(input - 1), upper)
}

/// The source index nearest to output index `v`.
fn nearest_source(v: usize, scale: f32, align: bool, half_pixel: bool, input: usize) -> usize {
    let offset = if half_pixel { 0.5 } else { 0.0 };
    let pos = (v as f32 + offset) * scale;
    // f32::round rounds halves away from zero, like TfLiteRound.
    let i = if align { pos.round() } else { pos.floor() } as i64;
    i.clamp(0, input as i64 - 1) as usize
}

/// LiteRT's fixed-point source position (in 1/1024ths) of output index `v`, and the
/// two source indices around it.
fn bilinear_source_q10(v: i32, scale_10: i32, half_pixel: bool, input: i32) -> (i32, i32, i32) {
    let pos = if half_pixel {
        v * scale_10 + scale_10 / 2 - (1 << 9)
    } else {
        v * scale_10
    };
    // `/` truncates toward zero, as C++ does: a slightly negative position maps to 0.
    let lower = (pos / (1 << 10)).max(0);
    let upper = ((pos + (1 << 10) - 1) / (1 << 10)).min(input - 1);
    (pos, lower, upper)
}

/// Fixed-point ratio input/output (in 1/1024ths), rounded to nearest.
fn scale_q10(input: usize, output: usize, align_corners: bool) -> i32 {
    let (i, o) = if align_corners && output > 1 {
        (input as i64 - 1, output as i64 - 1)
    } else {
        (input as i64, output as i64)
    };
    (((1 << 10) * i + o / 2) / o) as i32
}

impl Resize {
    fn eval_bilinear_i8(&self, x: &[u8], y: &mut [u8]) {
        let [batches, in_h, in_w, depth, out_h, out_w] = self.dims;
        let sh = scale_q10(in_h, out_h, self.align_corners);
        let sw = scale_q10(in_w, out_w, self.align_corners);
        let one = 1i64 << 10;
        let mut o = 0;
        for b in 0..batches {
            for oy in 0..out_h {
                let (py, y0, y1) =
                    bilinear_source_q10(oy as i32, sh, self.half_pixel_centers, in_h as i32);
                let dy = py as i64 - one * y0 as i64;
                for ox in 0..out_w {
                    let (px, x0, x1) =
                        bilinear_source_q10(ox as i32, sw, self.half_pixel_centers, in_w as i32);
                    let dx = px as i64 - one * x0 as i64;
                    let at = |yy: i32, xx: i32, c: usize| {
                        load_q(
                            x,
                            DType::I8,
                            ((b * in_h + yy as usize) * in_w + xx as usize) * depth + c,
                        ) as i64
                    };
                    for c in 0..depth {
                        let sum = at(y0, x0, c) * (one - dy) * (one - dx)
                            + at(y1, x0, c) * dy * (one - dx)
                            + at(y0, x1, c) * (one - dy) * dx
                            + at(y1, x1, c) * dy * dx;
                        let round = if sum > 0 { 1 << 19 } else { -(1 << 19) };
                        let v = ((sum + round) / (1 << 20)) as i32;
                        store_q(y, DType::I8, o, v.clamp(-128, 127));
                        o += 1;
                    }
                }
            }
        }
    }

    /// Float bilinear with the reference's arithmetic (same products, same order, so
    /// the same bits), written straight into the output with the channel loop
    /// innermost over contiguous rows so it vectorises.
    fn eval_bilinear_f32(&self, x: &[f32], y: &mut [f32]) {
        let [batches, in_h, in_w, depth, out_h, _] = self.dims;
        let sh = scale(in_h, out_h, self.align_corners);
        let mut o = 0;
        for b in 0..batches {
            for oy in 0..out_h {
                let (py, y0, y1) = bilinear_source(oy, sh, self.half_pixel_centers, in_h);
                let dy = py - y0 as f32;
                let (r0, r1) = ((b * in_h + y0) * in_w, (b * in_h + y1) * in_w);
                for &(x0, x1, dx) in &self.columns {
                    let (w00, w01) = ((1.0 - dy) * (1.0 - dx), (1.0 - dy) * dx);
                    let (w10, w11) = (dy * (1.0 - dx), dy * dx);
                    let p00 = &x[(r0 + x0) * depth..(r0 + x0 + 1) * depth];
                    let p01 = &x[(r0 + x1) * depth..(r0 + x1 + 1) * depth];
                    let p10 = &x[(r1 + x0) * depth..(r1 + x0 + 1) * depth];
                    let p11 = &x[(r1 + x1) * depth..(r1 + x1 + 1) * depth];
                    let out = &mut y[o..o + depth];
                    for c in 0..depth {
                        out[c] = p00[c] * w00 + p01[c] * w01 + p10[c] * w10 + p11[c] * w11;
                    }
                    o += depth;
                }
            }
        }
    }

    fn eval_bilinear(&self, x: &[u8], y: &mut [u8]) -> Result<(), KernelError> {
        let [batches, in_h, in_w, depth, out_h, out_w] = self.dims;
        if self.dtype == DType::F32 {
            let x = bytemuck::try_cast_slice(x)
                .map_err(|e| KernelError::invalid(format!("misaligned input: {e:?}")))?;
            let y = bytemuck::try_cast_slice_mut(y)
                .map_err(|e| KernelError::invalid(format!("misaligned output: {e:?}")))?;
            self.eval_bilinear_f32(x, y);
            return Ok(());
        }
        let sh = scale(in_h, out_h, self.align_corners);
        let sw = scale(in_w, out_w, self.align_corners);
        let floats: Option<&[f32]> = if self.dtype == DType::F32 {
            Some(
                bytemuck::try_cast_slice(x)
                    .map_err(|e| KernelError::invalid(format!("misaligned input: {e:?}")))?,
            )
        } else {
            None
        };
        let load = |i: usize| -> f32 {
            match floats {
                Some(f) => f[i],
                None => load_q(x, self.dtype, i) as f32,
            }
        };
        let mut out_f: Vec<f32> = Vec::new();
        let mut o = 0;
        for b in 0..batches {
            for oy in 0..out_h {
                let (py, y0, y1) = bilinear_source(oy, sh, self.half_pixel_centers, in_h);
                let dy = py - y0 as f32;
                for ox in 0..out_w {
                    let (px, x0, x1) = bilinear_source(ox, sw, self.half_pixel_centers, in_w);
                    let dx = px - x0 as f32;
                    let at =
                        |yy: usize, xx: usize, c: usize| ((b * in_h + yy) * in_w + xx) * depth + c;
                    for c in 0..depth {
                        // Weights multiplied first, corners summed row by row: the
                        // order LiteRT's builtin kernel uses, which decides how a
                        // quantized value near .5 rounds.
                        let v = load(at(y0, x0, c)) * ((1.0 - dy) * (1.0 - dx))
                            + load(at(y0, x1, c)) * ((1.0 - dy) * dx)
                            + load(at(y1, x0, c)) * (dy * (1.0 - dx))
                            + load(at(y1, x1, c)) * (dy * dx);
                        if floats.is_some() {
                            out_f.push(v);
                        } else {
                            let (lo, hi) = if self.dtype == DType::I8 {
                                (-128, 127)
                            } else {
                                (0, 255)
                            };
                            store_q(y, self.dtype, o, ((v + 0.5) as i32).clamp(lo, hi));
                        }
                        o += 1;
                    }
                }
            }
        }
        if floats.is_some() {
            let out = bytemuck::try_cast_slice_mut::<u8, f32>(y)
                .map_err(|e| KernelError::invalid(format!("misaligned output: {e:?}")))?;
            out.copy_from_slice(&out_f);
        }
        Ok(())
    }

    fn eval_nearest(&self, x: &[u8], y: &mut [u8]) {
        let [batches, in_h, in_w, depth, out_h, out_w] = self.dims;
        let size = self.dtype.size();
        let row = depth * size;
        let sh = scale(in_h, out_h, self.align_corners);
        let sw = scale(in_w, out_w, self.align_corners);
        let mut o = 0;
        for b in 0..batches {
            for oy in 0..out_h {
                let iy = nearest_source(oy, sh, self.align_corners, self.half_pixel_centers, in_h);
                for ox in 0..out_w {
                    let ix =
                        nearest_source(ox, sw, self.align_corners, self.half_pixel_centers, in_w);
                    let src = ((b * in_h + iy) * in_w + ix) * row;
                    y[o..o + row].copy_from_slice(&x[src..src + row]);
                    o += row;
                }
            }
        }
    }
}

impl OpKernel for Resize {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let y = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        let [b, ih, iw, d, oh, ow] = self.dims;
        let size = self.dtype.size();
        if x.bytes.len() != b * ih * iw * d * size || y.bytes.len() != b * oh * ow * d * size {
            return Err(KernelError::shape(
                "resize buffers do not match the prepared shapes",
            ));
        }
        match self.kind {
            Kind::Bilinear if self.dtype == DType::I8 => {
                self.eval_bilinear_i8(x.bytes, y.bytes);
                Ok(())
            }
            Kind::Bilinear => self.eval_bilinear(x.bytes, y.bytes),
            Kind::Nearest => {
                self.eval_nearest(x.bytes, y.bytes);
                Ok(())
            }
        }
    }

    fn name(&self) -> &str {
        match self.kind {
            Kind::Bilinear => "resize_bilinear",
            Kind::Nearest => "resize_nearest",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, Quant, Tensor};
    use switchyard_testkit::{Tolerance, assert_matches_litert, random_tensor};

    use super::*;
    use crate::ops::testing::{prepare_error, resolvers};

    struct Case {
        op: BuiltinOp,
        dtype: DType,
        shape: [usize; 4],
        size: [i32; 2],
        align_corners: bool,
        half_pixel_centers: bool,
        runtime_size: bool,
    }

    fn model(c: &Case) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.shape);
        let size = if c.runtime_size {
            sg.tensor("size", DType::I32, &[2])
        } else {
            sg.constant_i32("size", &[2], &c.size)
        };
        let out_shape = [
            c.shape[0],
            c.size[0].max(0) as usize,
            c.size[1].max(0) as usize,
            c.shape[3],
        ];
        let y = sg.tensor("y", c.dtype, &out_shape);
        let q = match c.dtype {
            DType::I8 => Some(Quant::per_tensor(0.1, -3)),
            DType::U8 => Some(Quant::per_tensor(0.1, 125)),
            _ => None,
        };
        if let Some(q) = q {
            sg.set_quant(x, q.clone());
            sg.set_quant(y, q);
        }
        sg.op(
            OpKind::Builtin(c.op),
            &[Some(x), Some(size)],
            &[y],
            OpOptions::Resize {
                align_corners: c.align_corners,
                half_pixel_centers: c.half_pixel_centers,
            },
        );
        if c.runtime_size {
            sg.set_inputs(&[x, size]);
        } else {
            sg.set_inputs(&[x]);
        }
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn run(c: &Case) {
        let (lo, hi) = match c.dtype {
            DType::F32 => (-5.0, 5.0),
            _ => (-128.0, 255.0),
        };
        let mut inputs = vec![random_tensor(c.dtype, &c.shape, 5, lo, hi)];
        if c.runtime_size {
            inputs.push(
                Tensor::from_bytes(DType::I32, vec![2], bytemuck::cast_slice(&c.size)).unwrap(),
            );
        }
        let name = format!(
            "{:?} {:?} {:?} -> {:?} align {} half {} runtime {}",
            c.op, c.dtype, c.shape, c.size, c.align_corners, c.half_pixel_centers, c.runtime_size
        );
        // Nearest neighbour only copies values, and quantized bilinear follows LiteRT's
        // arithmetic: both exact.
        let tol = (c.op == BuiltinOp::ResizeNearestNeighbor || c.dtype != DType::F32)
            .then_some(Tolerance::Exact);
        assert_matches_litert(&name, &model(c), &inputs, &resolvers(), tol);
    }

    fn case(op: BuiltinOp, dtype: DType, shape: [usize; 4], size: [i32; 2]) -> Case {
        Case {
            op,
            dtype,
            shape,
            size,
            align_corners: false,
            half_pixel_centers: false,
            runtime_size: false,
        }
    }

    fn all_modes(op: BuiltinOp, dtype: DType) {
        for (shape, size) in [
            ([1, 4, 5, 3], [8, 10]),
            ([2, 5, 3, 2], [7, 4]),
            ([1, 8, 6, 4], [3, 5]),
            ([1, 1, 1, 2], [3, 2]),
        ] {
            for (align_corners, half_pixel_centers) in
                [(false, false), (true, false), (false, true)]
            {
                run(&Case {
                    align_corners,
                    half_pixel_centers,
                    ..case(op, dtype, shape, size)
                });
            }
        }
        run(&Case {
            runtime_size: true,
            half_pixel_centers: true,
            ..case(op, dtype, [1, 3, 4, 2], [6, 9])
        });
    }

    #[test]
    fn bilinear_matches_litert() {
        for dtype in [DType::F32, DType::I8, DType::U8] {
            all_modes(BuiltinOp::ResizeBilinear, dtype);
        }
    }

    #[test]
    fn nearest_neighbor_matches_litert() {
        for dtype in [DType::F32, DType::I8, DType::U8] {
            all_modes(BuiltinOp::ResizeNearestNeighbor, dtype);
        }
    }

    #[test]
    fn bad_resizes_are_rejected_at_prepare() {
        let base = || case(BuiltinOp::ResizeBilinear, DType::F32, [1, 4, 4, 1], [8, 8]);
        let e = prepare_error(&model(&Case {
            align_corners: true,
            half_pixel_centers: true,
            ..base()
        }));
        assert!(e.to_string().contains("align_corners"), "{e}");
        let e = prepare_error(&model(&Case {
            size: [0, 3],
            ..base()
        }));
        assert!(e.to_string().contains("positive"), "{e}");
        let e = prepare_error(&model(&Case {
            size: [-2, 3],
            ..case(
                BuiltinOp::ResizeNearestNeighbor,
                DType::F32,
                [1, 4, 4, 1],
                [8, 8],
            )
        }));
        assert!(e.to_string().contains("positive"), "{e}");
        let e = prepare_error(&model(&case(
            BuiltinOp::ResizeBilinear,
            DType::I32,
            [1, 4, 4, 1],
            [8, 8],
        )));
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        // Rank-3 input.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[4, 4, 1]);
        let size = sg.constant_i32("size", &[2], &[8, 8]);
        let y = sg.tensor("y", DType::F32, &[8, 8, 1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::ResizeBilinear),
            &[Some(x), Some(size)],
            &[y],
            OpOptions::None,
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&mb.finish());
        assert!(matches!(e, KernelError::Shape(_)), "{e}");
    }
}
