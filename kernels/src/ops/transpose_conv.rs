//! Transposed convolution, in its two forms:
//! - builtin TRANSPOSE_CONV: inputs `(output_shape, weights [OC, KH, KW, IC], input,
//!   bias?)`, float32, int8 (per-channel) and uint8, with a fused activation; the output
//!   size is the `output_shape` tensor and the padding is what a forward convolution
//!   from that size would use;
//! - MediaPipe's custom `Convolution2DTransposeBias` (float32 only): inputs
//!   `(input, weights, bias)`, and `custom_options` holding three little-endian int32s —
//!   padding (1 = SAME, 2 = VALID, TFLite's `TfLitePadding`), stride width, stride
//!   height — from which the output size is derived: with SAME, the total padding is
//!   `max(0, K - (in - 1) % stride - 1)` and `out = stride × (in - 1) + K - padding`.
//!
//! Both scatter every input pixel through the filter into the output (TFLite's
//! reference formulation), then add the bias and clamp.

use switchyard_interpreter::{
    DType, KernelError, OpKernel, OpKind, OpOptions, Padding, PrepareCtx, PreparedKernel,
    TensorView, TensorViewMut, kernel::input,
};

use super::conv2d::{
    QElem, QuantOutput, Rounding, bias_view, check_bias, check_dtypes, expect_len, first_output,
    float_clamp, quant_output,
};
use crate::registry::OpDescriptor;
use crate::util::expect_rank;
use switchyard_interpreter::BuiltinOp;

/// TRANSPOSE_CONV, and MediaPipe's custom transposed convolution with bias.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::TransposeConv, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .work(crate::work::transpose_conv),
    OpDescriptor::custom(super::CONV2D_TRANSPOSE_BIAS, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
];

/// GPU: float32 in either form, a constant filter, a clamp as fused activation, the
/// output as this file's prepare derives it, within one dispatch (64 pixels x one
/// channel per workgroup).
fn gpu(ctx: &switchyard_interpreter::NodeSupportCtx<'_>) -> Result<(), String> {
    let prepare_ctx = PrepareCtx {
        node: ctx.node,
        inputs: ctx.inputs.clone(),
        outputs: ctx.outputs.clone(),
        intermediates: Vec::new(),
        threads: 1,
    };
    let p = prepare_params(&prepare_ctx).map_err(|e| e.to_string())?;
    if p.dtype != DType::F32 {
        return Err(format!(
            "{} transposed convolution; the GPU delegate runs float32 only",
            p.dtype
        ));
    }
    let out = ctx
        .outputs
        .first()
        .ok_or_else(|| "missing output 0".to_string())?;
    if out.shape != p.output_shape().as_slice() {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            p.output_shape()
        ));
    }
    let weights = ctx
        .inputs
        .get(p.weights_input)
        .copied()
        .flatten()
        .ok_or_else(|| "missing filter".to_string())?;
    if weights.data.is_none() {
        return Err("the filter must be a constant".into());
    }
    crate::support::gpu_count(out.shape)?;
    let pixels = p.batches * p.out_h * p.out_w;
    if pixels.div_ceil(64) > 65_535 || p.out_c > 65_535 {
        return Err(format!(
            "{pixels} pixels x {} channels exceed one dispatch",
            p.out_c
        ));
    }
    if let OpOptions::Conv(c) = &ctx.node.options {
        crate::support::gpu_activation(c.activation)?;
    }
    Ok(())
}

/// What prepare decided for one transposed convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct TransposeConvParams {
    pub batches: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub filter_h: usize,
    pub filter_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Output rows/columns cropped before the first written one.
    pub pad_top: usize,
    pub pad_left: usize,
    pub dtype: DType,
    pub float_min: f32,
    pub float_max: f32,
    pub(crate) quant: Option<QuantOutput>,
    /// Positions of the data, weights and bias among the node's inputs (they differ
    /// between the builtin and the custom op).
    pub data_input: usize,
    pub weights_input: usize,
    pub bias_input: Option<usize>,
}

impl TransposeConvParams {
    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.batches, self.out_h, self.out_w, self.out_c]
    }
}

/// Leading padding of TRANSPOSE_CONV along one axis: LiteRT computes it as for a
/// forward convolution whose *input* is the transposed convolution's output.
fn builtin_padding(out: usize, filter: usize, stride: usize, padding: Padding) -> usize {
    let (out, filter, stride) = (out as i64, filter as i64, stride as i64);
    let conv_out = match padding {
        Padding::Same => (out + stride - 1) / stride,
        Padding::Valid => (out + stride - filter) / stride,
    };
    let total = (conv_out - 1) * stride + filter - out;
    (total.max(0) / 2) as usize
}

/// Output size and leading padding of Convolution2DTransposeBias along one axis.
fn mediapipe_size(
    input: usize,
    filter: usize,
    stride: usize,
    padding: Padding,
) -> Result<(usize, usize), KernelError> {
    if input == 0 {
        return Err(KernelError::shape("empty spatial input dimension"));
    }
    let total = match padding {
        Padding::Same => (filter as i64 - ((input - 1) % stride) as i64 - 1).max(0) as usize,
        Padding::Valid => 0,
    };
    let full = (input - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(filter))
        .ok_or_else(|| KernelError::shape("transposed convolution output overflows"))?;
    Ok((full - total, total / 2))
}

/// Reads the custom op's 12-byte options: padding, stride width, stride height.
fn mediapipe_options(bytes: &[u8]) -> Result<(Padding, usize, usize), KernelError> {
    let field = |i: usize| -> Result<i32, KernelError> {
        bytes
            .get(4 * i..4 * i + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
            .ok_or_else(|| {
                KernelError::invalid(format!(
                    "Convolution2DTransposeBias needs 12 bytes of options (padding, stride \
                     width, stride height), has {}",
                    bytes.len()
                ))
            })
    };
    let padding = match field(0)? {
        1 => Padding::Same,
        2 => Padding::Valid,
        other => {
            return Err(KernelError::invalid(format!(
                "Convolution2DTransposeBias padding code {other} (1 = SAME, 2 = VALID)"
            )));
        }
    };
    let stride = |i: usize| -> Result<usize, KernelError> {
        let v = field(i)?;
        usize::try_from(v)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| KernelError::invalid(format!("stride {v} must be positive")))
    };
    Ok((padding, stride(1)?, stride(2)?))
}

/// Validates a transposed convolution (either form) and fixes its parameters.
pub fn prepare_params(ctx: &PrepareCtx<'_>) -> Result<TransposeConvParams, KernelError> {
    let custom = matches!(ctx.op(), OpKind::Custom(_));
    let (data_input, weights_input, bias_input) = if custom {
        ctx.expect_arity(3, 3, 1)?;
        (0, 1, Some(2))
    } else {
        ctx.expect_arity(3, 4, 1)?;
        (2, 1, ctx.optional_input(3).map(|_| 3))
    };
    let input = ctx.input(data_input)?;
    let weights = ctx.input(weights_input)?;
    let bias = bias_input.map(|i| ctx.input(i)).transpose()?;
    let output = ctx.output(0)?;
    expect_rank("input", input.shape, 4)?;
    expect_rank("weights", weights.shape, 4)?;
    let (out_c, fh, fw, wic) = (
        weights.shape[0],
        weights.shape[1],
        weights.shape[2],
        weights.shape[3],
    );
    let (batches, in_h, in_w, in_c) = (
        input.shape[0],
        input.shape[1],
        input.shape[2],
        input.shape[3],
    );
    if wic != in_c {
        return Err(KernelError::shape(format!(
            "weights {:?} expect {wic} input channels, input {:?} has {in_c}",
            weights.shape, input.shape
        )));
    }
    if fh == 0 || fw == 0 || out_c == 0 {
        return Err(KernelError::shape(format!(
            "empty filter {:?}",
            weights.shape
        )));
    }
    let dtype = check_dtypes(&input, &weights, bias.as_ref(), &output)?;
    check_bias(bias.as_ref(), out_c)?;
    let (out_h, out_w, pad_top, pad_left, stride_h, stride_w, activation);
    if custom {
        if dtype != DType::F32 {
            return Err(KernelError::unsupported(format!(
                "Convolution2DTransposeBias on {dtype} (MediaPipe defines it for float32)"
            )));
        }
        let bytes = match &ctx.node.options {
            OpOptions::Custom(b) => b.as_slice(),
            _ => &[],
        };
        let (padding, sw, sh) = mediapipe_options(bytes)?;
        (out_h, pad_top) = mediapipe_size(in_h, fh, sh, padding)?;
        (out_w, pad_left) = mediapipe_size(in_w, fw, sw, padding)?;
        (stride_h, stride_w) = (sh, sw);
        activation = switchyard_interpreter::Activation::None;
    } else {
        let opts = match &ctx.node.options {
            OpOptions::Conv(c) => c.clone(),
            _ => {
                return Err(KernelError::invalid(
                    "TRANSPOSE_CONV node without its options",
                ));
            }
        };
        if opts.stride_h == 0 || opts.stride_w == 0 {
            return Err(KernelError::invalid(format!(
                "strides ({}, {}) must be positive",
                opts.stride_h, opts.stride_w
            )));
        }
        let shape_t = ctx.input(0)?;
        if shape_t.element_count() != 4 {
            return Err(KernelError::shape(format!(
                "output_shape must hold 4 values, has shape {:?}",
                shape_t.shape
            )));
        }
        let shape = shape_t
            .value()
            .ok_or(KernelError::NeedsValues)?
            .to_i64_vec()?;
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                KernelError::shape(format!("output_shape {shape:?} must be positive"))
            })?;
        if dims[0] != batches || dims[3] != out_c {
            return Err(KernelError::shape(format!(
                "output_shape {dims:?} disagrees with batch {batches} and {out_c} output channels"
            )));
        }
        (out_h, out_w) = (dims[1], dims[2]);
        pad_top = builtin_padding(out_h, fh, opts.stride_h, opts.padding);
        pad_left = builtin_padding(out_w, fw, opts.stride_w, opts.padding);
        (stride_h, stride_w) = (opts.stride_h, opts.stride_w);
        activation = opts.activation;
    }
    let (float_min, float_max) = float_clamp(activation)?;
    let quant = match dtype {
        DType::F32 => None,
        _ => Some(QuantOutput {
            // LiteRT's uint8 kernel goes through its GEMM (ruy, half up); the int8 one
            // requantizes groups of 8 channels with SIMD (half up) and the rest with
            // scalar gemmlowp code. The tie tests pin both.
            rounding: if dtype == DType::U8 {
                Rounding::HalfUp
            } else {
                Rounding::HalfUpBelow(out_c / 8 * 8)
            },
            ..quant_output(
                &input,
                &weights,
                &output,
                out_c,
                0,
                dtype == DType::U8,
                activation,
            )?
        }),
    };
    Ok(TransposeConvParams {
        batches,
        in_h,
        in_w,
        in_c,
        filter_h: fh,
        filter_w: fw,
        out_h,
        out_w,
        out_c,
        stride_h,
        stride_w,
        pad_top,
        pad_left,
        dtype,
        float_min,
        float_max,
        quant,
        data_input,
        weights_input,
        bias_input,
    })
}

/// The reference registry's kernel.
pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let params = prepare_params(ctx)?;
    let shape = params.output_shape();
    Ok(PreparedKernel::new(
        vec![shape],
        TransposeConvReference { params },
    ))
}

/// Optimized: float32 with constant weights runs on the packed GEMM
/// (optimized/transpose_conv.rs); the rest the reference.
pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let params = prepare_params(ctx)?;
    let shape = params.output_shape();
    let weights = crate::optimized::kernels::constant_f32(&ctx.input(params.weights_input)?);
    let (DType::F32, Some(w)) = (params.dtype, weights) else {
        return Ok(PreparedKernel::new(
            vec![shape],
            TransposeConvReference { params },
        ));
    };
    let p = &params;
    let geom = crate::optimized::transpose_conv::TransposeGeom {
        batches: p.batches,
        in_h: p.in_h,
        in_w: p.in_w,
        in_c: p.in_c,
        k_h: p.filter_h,
        k_w: p.filter_w,
        out_h: p.out_h,
        out_w: p.out_w,
        out_c: p.out_c,
        stride_h: p.stride_h,
        stride_w: p.stride_w,
        pad_top: p.pad_top,
        pad_left: p.pad_left,
    };
    let isa = crate::optimized::Isa::detect();
    let conv = crate::optimized::transpose_conv::TransposeConvF32::new(
        geom,
        &w,
        (p.float_min, p.float_max),
        isa,
    )?;
    Ok(PreparedKernel::new(
        vec![shape],
        TransposeConvGemm {
            conv,
            data_input: p.data_input,
            bias_input: p.bias_input,
            pool: crate::optimized::shared_pool(ctx.threads),
        },
    ))
}

/// Float32 with constant weights, on the packed GEMM.
struct TransposeConvGemm {
    conv: crate::optimized::transpose_conv::TransposeConvF32,
    data_input: usize,
    bias_input: Option<usize>,
    pool: std::sync::Arc<crate::optimized::ThreadPool>,
}

impl OpKernel for TransposeConvGemm {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, self.data_input)?.f32s()?;
        let bias = match self.bias_input {
            Some(i) => bias_view(inputs, i, true)?,
            None => None,
        };
        let bias = bias.map(|b| b.f32s()).transpose()?;
        let out = first_output(outputs)?.f32s_mut()?;
        self.conv.run(&self.pool, x, bias, out)
    }

    fn name(&self) -> &str {
        "transpose_conv/f32/gemm"
    }

    fn memory_bytes(&self) -> usize {
        self.conv.packed_bytes()
    }
}

/// Plain scatter loops, the oracle of the optimized kernels.
pub(crate) struct TransposeConvReference {
    pub params: TransposeConvParams,
}

/// Calls `f(input_index, weights_index_without_oc, output_index_without_oc)` for every
/// (input pixel, filter tap) pair that lands inside the output; the caller loops over
/// output channels (weights stride `KH × KW × IC`, output stride 1).
fn for_each_tap(p: &TransposeConvParams, mut f: impl FnMut(usize, usize, usize)) {
    for b in 0..p.batches {
        for iy in 0..p.in_h {
            for ix in 0..p.in_w {
                for ky in 0..p.filter_h {
                    let Some(oy) = (iy * p.stride_h + ky)
                        .checked_sub(p.pad_top)
                        .filter(|&y| y < p.out_h)
                    else {
                        continue;
                    };
                    for kx in 0..p.filter_w {
                        let Some(ox) = (ix * p.stride_w + kx)
                            .checked_sub(p.pad_left)
                            .filter(|&x| x < p.out_w)
                        else {
                            continue;
                        };
                        let out_base = ((b * p.out_h + oy) * p.out_w + ox) * p.out_c;
                        for ic in 0..p.in_c {
                            let in_idx = ((b * p.in_h + iy) * p.in_w + ix) * p.in_c + ic;
                            let w_base = (ky * p.filter_w + kx) * p.in_c + ic;
                            f(in_idx, w_base, out_base);
                        }
                    }
                }
            }
        }
    }
}

/// Float32 reference, summing in f64 (see `conv2d::conv_f32`).
pub(crate) fn transpose_conv_f32(
    p: &TransposeConvParams,
    input: &[f32],
    weights: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let w_stride = p.filter_h * p.filter_w * p.in_c;
    let mut acc = vec![0.0f64; out.len()];
    for_each_tap(p, |i, w, o| {
        let x = input[i] as f64;
        for oc in 0..p.out_c {
            acc[o + oc] += x * weights[oc * w_stride + w] as f64;
        }
    });
    for (px, apx) in out.chunks_exact_mut(p.out_c).zip(acc.chunks_exact(p.out_c)) {
        for (oc, (v, &a)) in px.iter_mut().zip(apx).enumerate() {
            let with_bias = (a + bias.map_or(0.0, |b| b[oc] as f64)) as f32;
            *v = with_bias.max(p.float_min).min(p.float_max);
        }
    }
}

pub(crate) fn transpose_conv_quant<T: QElem>(
    p: &TransposeConvParams,
    q: &QuantOutput,
    input: &[T],
    weights: &[T],
    bias: Option<&[i32]>,
    out: &mut [T],
) {
    let w_stride = p.filter_h * p.filter_w * p.in_c;
    let mut acc = vec![0i32; out.len()];
    for_each_tap(p, |i, w, o| {
        let x = input[i].widen() + q.input_offset;
        for oc in 0..p.out_c {
            let wv = weights[oc * w_stride + w].widen() + q.filter_offset;
            acc[o + oc] = acc[o + oc].wrapping_add(x.wrapping_mul(wv));
        }
    });
    for (px, apx) in out.chunks_exact_mut(p.out_c).zip(acc.chunks_exact(p.out_c)) {
        for (oc, (v, &a)) in px.iter_mut().zip(apx).enumerate() {
            let a = a.wrapping_add(bias.map_or(0, |b| b[oc]));
            *v = T::narrow(q.requantize(a, oc));
        }
    }
}

impl OpKernel for TransposeConvReference {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let p = &self.params;
        let x = input(inputs, p.data_input)?;
        let w = input(inputs, p.weights_input)?;
        let bias = match p.bias_input {
            Some(i) => bias_view(inputs, i, true)?,
            None => None,
        };
        let out = first_output(outputs)?;
        expect_len(
            "input",
            x.bytes.len(),
            x.dtype,
            p.batches * p.in_h * p.in_w * p.in_c,
        )?;
        expect_len(
            "weights",
            w.bytes.len(),
            w.dtype,
            p.out_c * p.filter_h * p.filter_w * p.in_c,
        )?;
        expect_len(
            "output",
            out.bytes.len(),
            out.dtype,
            p.batches * p.out_h * p.out_w * p.out_c,
        )?;
        if let Some(b) = bias {
            expect_len("bias", b.bytes.len(), b.dtype, p.out_c)?;
        }
        match (p.dtype, &p.quant) {
            (DType::F32, _) => {
                let bias = bias.map(|b| b.f32s()).transpose()?;
                transpose_conv_f32(p, x.f32s()?, w.f32s()?, bias, out.f32s_mut()?);
            }
            (DType::I8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                transpose_conv_quant(p, q, x.i8s()?, w.i8s()?, bias, out.i8s_mut()?);
            }
            (DType::U8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                transpose_conv_quant(p, q, x.u8s()?, w.u8s()?, bias, out.u8s_mut()?);
            }
            (other, _) => return Err(KernelError::dtype("prepared transpose conv dtype", other)),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.params.dtype {
            DType::F32 => "transpose_conv/f32/reference",
            DType::I8 => "transpose_conv/i8/reference",
            _ => "transpose_conv/u8/reference",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::ops::ConvOptions;
    use switchyard_interpreter::{Activation, BuiltinOp, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::super::CONV2D_TRANSPOSE_BIAS;
    use super::super::conv2d::testing::*;
    use super::*;

    #[derive(Clone, Debug)]
    struct Case {
        dtype: DType,
        input: [usize; 4],
        /// out_c, kh, kw
        filter: [usize; 3],
        stride: (usize, usize),
        padding: Padding,
        act: Activation,
        bias: bool,
        per_channel: bool,
        ties: bool,
    }

    fn base(dtype: DType) -> Case {
        Case {
            dtype,
            input: [1, 4, 5, 3],
            filter: [4, 3, 3],
            stride: (2, 2),
            padding: Padding::Same,
            act: Activation::None,
            bias: true,
            per_channel: dtype == DType::I8,
            ties: false,
        }
    }

    /// The output size MediaPipe's op derives; the builtin is given the same one.
    fn out_hw(c: &Case) -> (usize, usize) {
        let h = mediapipe_size(c.input[1], c.filter[1], c.stride.0, c.padding).expect("size");
        let w = mediapipe_size(c.input[2], c.filter[2], c.stride.1, c.padding).expect("size");
        (h.0, w.0)
    }

    fn weights_shape(c: &Case) -> [usize; 4] {
        [c.filter[0], c.filter[1], c.filter[2], c.input[3]]
    }

    /// `custom` builds MediaPipe's op; otherwise builtin TRANSPOSE_CONV with the same
    /// weights, bias and output size.
    fn build(c: &Case, custom: bool) -> Vec<u8> {
        let (oh, ow) = out_hw(c);
        let out_shape = [c.input[0], oh, ow, c.filter[0]];
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.input);
        let y = sg.tensor("y", c.dtype, &out_shape);
        let base_scale = 0.01;
        let depth = c.filter[1] * c.filter[2] * c.input[3];
        let (mut in_scale, mut out_scale) = scales(c.act, base_scale, depth);
        let scales = if c.ties {
            (in_scale, out_scale) = (TIE_IN_SCALE, TIE_OUT_SCALE);
            tie_filter_scales(c.filter[0], c.per_channel)
        } else if c.per_channel {
            channel_scales(c.filter[0], base_scale)
        } else {
            vec![base_scale]
        };
        if c.dtype != DType::F32 {
            sg.set_quant(x, Quant::per_tensor(in_scale, zp(c.dtype, -3)));
            sg.set_quant(y, Quant::per_tensor(out_scale, zp(c.dtype, 5)));
        }
        let filter_zp = if c.dtype == DType::U8 { 126 } else { 0 };
        let w = filter_in(
            sg,
            c.dtype,
            &weights_shape(c),
            7,
            &scales,
            filter_zp,
            0,
            c.ties.then_some((-3, 3)),
        );
        let span = if c.ties { 20.0 } else { 3000.0 };
        let b = c
            .bias
            .then(|| bias(sg, c.dtype, c.filter[0], 9, in_scale, &scales, span));
        if custom {
            let code = match c.padding {
                Padding::Same => 1i32,
                Padding::Valid => 2,
            };
            let bytes: Vec<u8> = [code, c.stride.1 as i32, c.stride.0 as i32]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            sg.op(
                OpKind::Custom(CONV2D_TRANSPOSE_BIAS.into()),
                &[Some(x), Some(w), b],
                &[y],
                OpOptions::Custom(bytes),
            );
        } else {
            let shape: Vec<i32> = out_shape.iter().map(|&d| d as i32).collect();
            let s = sg.constant_i32("output_shape", &[4], &shape);
            let mut inputs = vec![Some(s), Some(w), Some(x)];
            inputs.extend(b.map(Some));
            sg.op_versioned(
                OpKind::Builtin(BuiltinOp::TransposeConv),
                4,
                &inputs,
                &[y],
                OpOptions::Conv(ConvOptions {
                    padding: c.padding,
                    stride_h: c.stride.0,
                    stride_w: c.stride.1,
                    dilation_h: 1,
                    dilation_w: 1,
                    depth_multiplier: 1,
                    activation: c.act,
                }),
            );
        }
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn input_of(c: &Case) -> switchyard_interpreter::Tensor {
        if c.ties {
            let z = zp(c.dtype, -3) as f32;
            random_tensor(c.dtype, &c.input, 3, z - 3.0, z + 3.0)
        } else {
            random(c.dtype, &c.input, 3)
        }
    }

    fn check(c: &Case) {
        let name = format!("{c:?}");
        let x = input_of(c);
        let model = build(c, false);
        if c.dtype != DType::F32 {
            assert_informative(&name, &model, std::slice::from_ref(&x));
        }
        assert_matches_litert(&name, &model, &[x], &resolvers(), tol(c.dtype));
    }

    fn variants(dtype: DType) -> Vec<Case> {
        let b = base(dtype);
        vec![
            b.clone(),
            Case {
                padding: Padding::Valid,
                act: Activation::Relu,
                ..b.clone()
            },
            Case {
                stride: (1, 2),
                filter: [2, 2, 4],
                act: Activation::Relu6,
                bias: false,
                ..b.clone()
            },
            Case {
                input: [2, 3, 3, 5],
                filter: [3, 4, 4],
                stride: (2, 2),
                act: Activation::ReluN1To1,
                ..b
            },
        ]
    }

    #[test]
    fn float_matches_litert() {
        for c in variants(DType::F32) {
            check(&c);
        }
    }

    #[test]
    fn optimized_float_matches_reference() {
        let b = base(DType::F32);
        let mut cases = variants(DType::F32);
        cases.extend([
            // Taps that do not overlap (kernel = stride), as MediaPipe's upsampler.
            Case {
                input: [1, 6, 7, 16],
                filter: [2, 2, 2],
                ..b.clone()
            },
            Case {
                input: [1, 5, 3, 20],
                filter: [17, 3, 3],
                stride: (1, 1),
                act: Activation::Relu,
                bias: false,
                ..b
            },
        ]);
        for c in cases {
            // MediaPipe's op always has a bias.
            for custom in [false, true].into_iter().filter(|&m| !m || c.bias) {
                let x = input_of(&c);
                crate::optimized::kernels::testing::assert_optimized_matches_reference(
                    &format!("{c:?} custom {custom}"),
                    &build(&c, custom),
                    &[x],
                    "transpose_conv/f32/gemm",
                );
            }
        }
    }

    #[test]
    fn int8_matches_litert() {
        for c in variants(DType::I8) {
            check(&c);
        }
    }

    #[test]
    fn uint8_matches_litert() {
        for c in variants(DType::U8).into_iter().take(2) {
            check(&c);
        }
    }

    #[test]
    fn quantized_ties_match_litert() {
        for dtype in [DType::I8, DType::U8] {
            for out_c in [4, 12] {
                let b = base(dtype);
                check(&Case {
                    ties: true,
                    filter: [out_c, b.filter[1], b.filter[2]],
                    ..b
                });
            }
        }
    }

    /// LiteRT cannot run MediaPipe's custom op, so Convolution2DTransposeBias is
    /// compared with LiteRT's builtin TRANSPOSE_CONV given the same weights, bias and
    /// output size: the same arithmetic under another name (the SAME-padding rules of
    /// the two agree on these sizes, which `out_hw` feeds to both). The real model
    /// (mp_selfie_segmentation's 2× upsampling: 2×2 filter, stride 2) is the first
    /// case.
    #[test]
    fn mediapipe_custom_op_matches_builtin_in_litert() {
        let mp = Case {
            input: [1, 8, 8, 16],
            filter: [1, 2, 2],
            ..base(DType::F32)
        };
        for c in [mp]
            .into_iter()
            .chain(variants(DType::F32).into_iter().filter(|c| c.bias))
            .map(|c| Case {
                act: Activation::None,
                ..c
            })
        {
            let x = input_of(&c);
            assert_matches_litert_twin(
                &format!("{c:?}"),
                &build(&c, true),
                &build(&c, false),
                &[x],
            );
        }
    }

    /// The selfie segmenter's own Convolution2DTransposeBias node (real weights, fp16
    /// dequantized), against LiteRT's builtin TRANSPOSE_CONV rebuilt from the same
    /// tensors (LiteRT cannot run the custom op itself).
    #[test]
    fn selfie_segmentation_node_matches_builtin_in_litert() {
        let file = "mp_selfie_segmentation.tflite";
        let model =
            switchyard_interpreter::Model::from_path(switchyard_testkit::models_dir().join(file))
                .expect("model present (scripts/setup.sh)");
        let n = model.subgraphs[0]
            .nodes
            .iter()
            .position(|n| n.op == OpKind::Custom(CONV2D_TRANSPOSE_BIAS.into()))
            .expect("the selfie model has one transposed convolution");
        let ours = extract(file, n, None);
        let one = switchyard_interpreter::Model::from_bytes(&ours.model).expect("extracted");
        let sg = &one.subgraphs[0];
        let node = &sg.nodes[0];
        let OpOptions::Custom(bytes) = &node.options else {
            panic!("custom options expected");
        };
        let (padding, stride_w, stride_h) = mediapipe_options(bytes).expect("valid options");
        let t = |i: usize| &sg.tensors[node.inputs[i].expect("present")];
        let y_def = &sg.tensors[node.outputs[0]];
        let mut mb = ModelBuilder::new();
        let b = mb.main();
        let x = b.tensor("x", DType::F32, &t(0).shape);
        let data = |i: usize| t(i).data.as_ref().expect("constant").as_slice().to_vec();
        let w = b.constant("w", DType::F32, &t(1).shape, data(1));
        let bias = b.constant("b", DType::F32, &t(2).shape, data(2));
        let shape: Vec<i32> = y_def.shape.iter().map(|&d| d as i32).collect();
        let s = b.constant_i32("output_shape", &[4], &shape);
        let y = b.tensor("y", DType::F32, &y_def.shape);
        b.op_versioned(
            OpKind::Builtin(BuiltinOp::TransposeConv),
            4,
            &[Some(s), Some(w), Some(x), Some(bias)],
            &[y],
            OpOptions::Conv(ConvOptions {
                padding,
                stride_h,
                stride_w,
                dilation_h: 1,
                dilation_w: 1,
                depth_multiplier: 1,
                activation: Activation::None,
            }),
        );
        b.set_inputs(&[x]);
        b.set_outputs(&[y]);
        assert_matches_litert_twin(&ours.name, &ours.model, &mb.finish(), &ours.inputs);
    }

    #[test]
    fn invalid_nodes_are_prepare_errors() {
        // Options too short, unknown padding, zero stride.
        for (bytes, needle) in [
            (vec![1u8, 0, 0, 0, 2, 0, 0, 0], "12 bytes"),
            (
                [0i32, 2, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                "padding code",
            ),
            (
                [1i32, 0, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                "stride",
            ),
        ] {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &[1, 4, 4, 2]);
            let y = sg.tensor("y", DType::F32, &[1, 8, 8, 1]);
            let w = sg.constant_f32("w", &[1, 2, 2, 2], &[0.5; 8]);
            let b = sg.constant_f32("b", &[1], &[0.0]);
            sg.op(
                OpKind::Custom(CONV2D_TRANSPOSE_BIAS.into()),
                &[Some(x), Some(w), Some(b)],
                &[y],
                OpOptions::Custom(bytes),
            );
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let e = prepare_error(&mb.finish());
            assert!(e.contains(needle), "{e}");
        }
        // Weights whose input channels differ from the input's.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4, 4, 2]);
        let y = sg.tensor("y", DType::F32, &[1, 8, 8, 1]);
        let w = sg.constant_f32("w", &[1, 2, 2, 3], &[0.5; 12]);
        let s = sg.constant_i32("s", &[4], &[1, 8, 8, 1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::TransposeConv),
            &[Some(s), Some(w), Some(x)],
            &[y],
            OpOptions::Conv(ConvOptions {
                stride_h: 2,
                stride_w: 2,
                ..Default::default()
            }),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&mb.finish());
        assert!(e.contains("input channels"), "{e}");
        // An output_shape that disagrees with the weights.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4, 4, 2]);
        let y = sg.tensor("y", DType::F32, &[1, 8, 8, 1]);
        let w = sg.constant_f32("w", &[1, 2, 2, 2], &[0.5; 8]);
        let s = sg.constant_i32("s", &[4], &[1, 8, 8, 5]);
        sg.op(
            OpKind::Builtin(BuiltinOp::TransposeConv),
            &[Some(s), Some(w), Some(x)],
            &[y],
            OpOptions::Conv(ConvOptions {
                stride_h: 2,
                stride_w: 2,
                ..Default::default()
            }),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&mb.finish());
        assert!(e.contains("output_shape"), "{e}");
    }

    #[test]
    fn sizes_follow_both_conventions() {
        // MediaPipe: SAME keeps out = stride × in when the filter fits the stride.
        assert_eq!(mediapipe_size(128, 2, 2, Padding::Same).unwrap(), (256, 0));
        assert_eq!(mediapipe_size(4, 3, 2, Padding::Same).unwrap(), (8, 0));
        assert_eq!(mediapipe_size(4, 4, 2, Padding::Same).unwrap(), (8, 1));
        assert_eq!(mediapipe_size(4, 3, 2, Padding::Valid).unwrap(), (9, 0));
        // Builtin: padding from the output size.
        assert_eq!(builtin_padding(8, 4, 2, Padding::Same), 1);
        assert_eq!(builtin_padding(9, 3, 2, Padding::Valid), 0);
    }
}
