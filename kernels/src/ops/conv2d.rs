//! CONV_2D: float32, int8 (per-channel filter scales) and uint8 (per tensor), NHWC input,
//! OHWI filter, strides, dilations, SAME/VALID padding, grouped filters and a fused
//! activation.
//!
//! This file also holds what the convolution family (DEPTHWISE_CONV_2D, TRANSPOSE_CONV,
//! FULLY_CONNECTED, BATCH_MATMUL) shares: the quantized output stage ([`QuantOutput`]),
//! float activation clamps and the element trait of the integer kernels. Quantized
//! results follow TFLite's integer scheme exactly — int32 accumulation of
//! offset-corrected products, int32 bias, then one MultiplyByQuantizedMultiplier per
//! output channel with the multiplier TFLite derives in double precision — so they are
//! bit-exact with LiteRT's kernels rather than merely close.

use switchyard_interpreter::{
    Activation, DType, KernelError, OpKernel, OpOptions, Padding, PrepareCtx, PreparedKernel,
    TensorMeta, TensorView, TensorViewMut, kernel::input, ops::ConvOptions,
};

use crate::quant::{
    activation_range, dtype_range, multiply_by_quantized_multiplier, quantize_multiplier,
    saturating_rounding_doubling_high_mul,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::{conv_output_size, expect_rank};
use switchyard_interpreter::BuiltinOp;
use switchyard_interpreter::NodeSupportCtx;

/// CONV_2D.
pub const DESCRIPTORS: &[OpDescriptor] = &[OpDescriptor::new(BuiltinOp::Conv2d, prepare)
    .optimized(prepare_optimized)
    .gpu(gpu)
    .dsp(support::dsp_quantized)
    .npu(support::npu_int8)
    .work(crate::work::conv2d)];

/// GPU: float32 NHWC input and OHWI filter, no grouping, float32 bias, a clamp as fused
/// activation.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 2, 3, 1)?;
    let OpOptions::Conv(o) = &ctx.node.options else {
        return Err("CONV_2D without convolution options".into());
    };
    let x = support::input(ctx, 0)?;
    let w = support::input(ctx, 1)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&w, "input 1")?;
    support::gpu_f32(&out, "output 0")?;
    let (&[n, ih, iw, ic], &[oc, kh, kw, wc]) = (x.shape, w.shape) else {
        return Err(format!(
            "input {:?} and filter {:?} must both be rank 4",
            x.shape, w.shape
        ));
    };
    if wc != ic {
        return Err(format!(
            "filter depth {wc} differs from input depth {ic} (grouped convolution)"
        ));
    }
    if let Some(b) = ctx.inputs.get(2).copied().flatten() {
        support::gpu_f32(&b, "bias")?;
        if b.element_count() != oc {
            return Err(format!(
                "bias has {} values for {oc} channels",
                b.element_count()
            ));
        }
    }
    let (oh, pad_top) =
        conv_output_size(ih, kh, o.stride_h, o.dilation_h, o.padding).map_err(|e| e.to_string())?;
    let (ow, pad_left) =
        conv_output_size(iw, kw, o.stride_w, o.dilation_w, o.padding).map_err(|e| e.to_string())?;
    if out.shape != [n, oh, ow, oc] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, oc]
        ));
    }
    support::gpu_count(out.shape)?;
    for (value, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (ic, "channels"),
        (kh, "filter height"),
        (kw, "filter width"),
        (o.stride_h, "stride"),
        (o.stride_w, "stride"),
        (o.dilation_h, "dilation"),
        (o.dilation_w, "dilation"),
        (pad_top, "padding"),
        (pad_left, "padding"),
    ] {
        support::gpu_u32(value, what)?;
    }
    support::gpu_activation(o.activation)
}

/// An int8 or uint8 element, widened to i32 for arithmetic.
pub(crate) trait QElem: Copy + Send + Sync + 'static {
    fn widen(self) -> i32;
    /// Narrows an already clamped value.
    fn narrow(v: i32) -> Self;
}

impl QElem for i8 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn narrow(v: i32) -> i8 {
        v as i8
    }
}

impl QElem for u8 {
    #[inline(always)]
    fn widen(self) -> i32 {
        self as i32
    }
    #[inline(always)]
    fn narrow(v: i32) -> u8 {
        v as u8
    }
}

/// The float clamp of a fused activation. Tanh and SignBit are not clamps and TFLite's
/// convolution kernels would silently ignore them, so they are refused instead.
pub(crate) fn float_clamp(act: Activation) -> Result<(f32, f32), KernelError> {
    match act {
        Activation::None | Activation::Relu | Activation::Relu6 | Activation::ReluN1To1 => {
            Ok(act.float_range())
        }
        other => Err(KernelError::unsupported(format!(
            "fused activation {other:?} on a convolution-like op"
        ))),
    }
}

/// How requantization rounds its final right shift. LiteRT's builtin kernels do not
/// all agree, and matching them bit for bit means following each. The tie tests
/// (power-of-two multipliers and small values, so that many products land exactly
/// half-way) pin down which op uses which:
/// - `Gemmlowp`, TFLite's reference MultiplyByQuantizedMultiplier, whose shift
///   (RoundingDivideByPOT) rounds half away from zero: uint8 DEPTHWISE_CONV_2D and
///   int8 BATCH_MATMUL;
/// - `HalfUp`, the shift rounds half up as ruy does: CONV_2D and FULLY_CONNECTED (int8
///   and uint8) and uint8 TRANSPOSE_CONV;
/// - `HalfUpBelow`: int8 DEPTHWISE_CONV_2D and int8 TRANSPOSE_CONV.
///
/// All share the doubling high multiply and differ only on exact negative ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    Gemmlowp,
    HalfUp,
    /// `HalfUp` for output channels below the bound, `Gemmlowp` from there on: LiteRT's
    /// int8 depthwise and transposed convolutions requantize whole groups of 8
    /// channels with SIMD (half up) and the remaining `out_c % 8` channels with scalar
    /// code (gemmlowp).
    HalfUpBelow(usize),
}

/// Fixed-point `x * multiplier * 2^(shift - 31)` rounded as `rounding` says.
#[inline(always)]
pub(crate) fn requantize_with(rounding: Rounding, x: i32, multiplier: i32, shift: i32) -> i32 {
    match rounding {
        Rounding::Gemmlowp | Rounding::HalfUpBelow(_) => {
            multiply_by_quantized_multiplier(x, multiplier, shift)
        }
        Rounding::HalfUp => {
            let left = shift.max(0);
            let right = (-shift).max(0);
            let high = saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left), multiplier);
            if right == 0 {
                high
            } else {
                ((high as i64 + (1i64 << (right - 1))) >> right) as i32
            }
        }
    }
}

/// Everything a quantized convolution-like kernel needs after accumulating: offsets,
/// one fixed-point multiplier and shift per output channel (per-tensor filters are
/// broadcast so kernels never branch on it) and the activation clamp.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantOutput {
    /// `-input_zero_point`, added to every input value.
    pub input_offset: i32,
    /// `-filter_zero_point` for per-tensor filters that have one (uint8); 0 otherwise.
    pub filter_offset: i32,
    pub output_offset: i32,
    pub multipliers: Vec<i32>,
    pub shifts: Vec<i32>,
    pub act_min: i32,
    pub act_max: i32,
    pub rounding: Rounding,
}

impl QuantOutput {
    /// Bias-added accumulator of output channel `c` to the clamped output value.
    #[inline(always)]
    pub fn requantize(&self, acc: i32, c: usize) -> i32 {
        let (m, s) = (self.multipliers[c], self.shifts[c]);
        let rounding = match self.rounding {
            Rounding::HalfUpBelow(n) if c < n => Rounding::HalfUp,
            other => other,
        };
        let scaled = requantize_with(rounding, acc, m, s);
        scaled
            .wrapping_add(self.output_offset)
            .max(self.act_min)
            .min(self.act_max)
    }
}

/// Scale and zero point of a per-tensor quantized tensor, checked to be usable.
fn checked_per_tensor(t: &TensorMeta<'_>, what: &str) -> Result<(f64, i32), KernelError> {
    let q = t
        .quant
        .ok_or_else(|| KernelError::invalid(format!("{what} has no quantization parameters")))?;
    if q.scale.len() != 1 {
        return Err(KernelError::invalid(format!(
            "{what} must be quantized per tensor, has {} scales",
            q.scale.len()
        )));
    }
    let scale = q.scale_at(0);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(KernelError::invalid(format!(
            "{what} has scale {scale}; it must be positive"
        )));
    }
    let zp = q.zero_point_at(0);
    let (lo, hi) = dtype_range(t.dtype)?;
    if zp < lo as i64 || zp > hi as i64 {
        return Err(KernelError::invalid(format!(
            "{what} zero point {zp} is outside the {} range",
            t.dtype
        )));
    }
    Ok((scale as f64, zp as i32))
}

/// Builds the output stage of a quantized convolution-like op.
///
/// `channels` is the number of output channels and `channel_axis` the filter axis a
/// per-channel quantization must run along. `filter_offset_allowed` says whether the op
/// honours a non-zero filter zero point: TFLite's int8 convolutions ignore it (the
/// quantization spec makes it 0), so accepting one there would silently disagree.
pub(crate) fn quant_output(
    input: &TensorMeta<'_>,
    filter: &TensorMeta<'_>,
    output: &TensorMeta<'_>,
    channels: usize,
    channel_axis: usize,
    filter_offset_allowed: bool,
    act: Activation,
) -> Result<QuantOutput, KernelError> {
    let (in_scale, in_zp) = checked_per_tensor(input, "input")?;
    let (out_scale, out_zp) = checked_per_tensor(output, "output")?;
    let fq = filter
        .quant
        .ok_or_else(|| KernelError::invalid("filter has no quantization parameters"))?;
    let n_scales = fq.scale.len();
    let per_channel = n_scales > 1;
    if n_scales == 0 || (per_channel && n_scales != channels) {
        return Err(KernelError::invalid(format!(
            "filter has {n_scales} scales for {channels} output channels"
        )));
    }
    if per_channel && fq.axis != channel_axis {
        return Err(KernelError::invalid(format!(
            "filter is quantized along axis {}, expected axis {channel_axis}",
            fq.axis
        )));
    }
    if per_channel && filter.dtype == DType::U8 {
        return Err(KernelError::unsupported(
            "per-channel quantization of a uint8 filter",
        ));
    }
    let mut filter_zp = 0i64;
    for c in 0..n_scales {
        let zp = fq.zero_point_at(c);
        if zp != 0 && (per_channel || !filter_offset_allowed) {
            return Err(KernelError::unsupported(format!(
                "{} filter with non-zero zero point {zp}",
                if per_channel { "per-channel" } else { "int8" }
            )));
        }
        filter_zp = zp;
    }
    let (lo, hi) = dtype_range(filter.dtype)?;
    if filter_zp < lo as i64 || filter_zp > hi as i64 {
        return Err(KernelError::invalid(format!(
            "filter zero point {filter_zp} is outside the {} range",
            filter.dtype
        )));
    }
    let mut multipliers = Vec::with_capacity(channels);
    let mut shifts = Vec::with_capacity(channels);
    for c in 0..channels {
        let fs = fq.scale_at(if per_channel { c } else { 0 });
        if !(fs.is_finite() && fs >= 0.0) {
            return Err(KernelError::invalid(format!(
                "filter scale {fs} of channel {c} is not a non-negative number"
            )));
        }
        // TFLite's order of operations, in double: input * filter / output.
        let (m, s) = quantize_multiplier(in_scale * fs as f64 / out_scale);
        multipliers.push(m);
        shifts.push(s);
    }
    let (act_min, act_max) = activation_range(act, out_scale as f32, out_zp, output.dtype)?;
    if act_min > act_max {
        return Err(KernelError::invalid(format!(
            "activation {act:?} leaves no representable output (range {act_min}..={act_max})"
        )));
    }
    Ok(QuantOutput {
        input_offset: -in_zp,
        filter_offset: -(filter_zp as i32),
        output_offset: out_zp,
        multipliers,
        shifts,
        act_min,
        act_max,
        rounding: Rounding::Gemmlowp,
    })
}

/// Checks the dtypes of a convolution-like op: float32 everywhere, or int8/uint8 data
/// with int32 bias. Returns the data dtype.
pub(crate) fn check_dtypes(
    input: &TensorMeta<'_>,
    filter: &TensorMeta<'_>,
    bias: Option<&TensorMeta<'_>>,
    output: &TensorMeta<'_>,
) -> Result<DType, KernelError> {
    let dtype = input.dtype;
    match dtype {
        DType::F32 | DType::I8 | DType::U8 => {}
        other => {
            return Err(KernelError::unsupported(format!(
                "{other} input (float32, int8 and uint8 are supported)"
            )));
        }
    }
    if filter.dtype != dtype {
        return Err(KernelError::unsupported(format!(
            "{} filter with {dtype} input (hybrid kernels are not supported)",
            filter.dtype
        )));
    }
    if output.dtype != dtype {
        return Err(KernelError::invalid(format!(
            "output dtype {} differs from input dtype {dtype}",
            output.dtype
        )));
    }
    if let Some(b) = bias {
        let want = if dtype == DType::F32 {
            DType::F32
        } else {
            DType::I32
        };
        if b.dtype != want {
            return Err(KernelError::dtype(format!("{want} bias"), b.dtype));
        }
    }
    Ok(dtype)
}

/// Requires a bias to hold exactly one value per output channel.
pub(crate) fn check_bias(
    bias: Option<&TensorMeta<'_>>,
    channels: usize,
) -> Result<(), KernelError> {
    match bias {
        Some(b) if b.element_count() != channels => Err(KernelError::shape(format!(
            "bias has shape {:?}, expected {channels} values",
            b.shape
        ))),
        _ => Ok(()),
    }
}

/// The spatial arrangement of a 2-D convolution, fixed at prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
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
    pub dilation_h: usize,
    pub dilation_w: usize,
    /// Rows and columns of implicit zero padding before the input (SAME padding).
    pub pad_top: usize,
    pub pad_left: usize,
}

impl ConvGeometry {
    /// Output size and padding of a NHWC input under a filter of `filter_h`×`filter_w`.
    pub fn new(
        input_shape: &[usize],
        filter_h: usize,
        filter_w: usize,
        out_c: usize,
        opts: &ConvOptions,
    ) -> Result<ConvGeometry, KernelError> {
        expect_rank("input", input_shape, 4)?;
        // A VALID window larger than the input leaves no output positions: an empty
        // output rather than an error, because models with dynamic input sizes (e.g.
        // oww_melspectrogram's [-1, -1] audio) are first prepared with placeholder
        // sizes of 1, before the caller's real input re-prepares them.
        let size = |input: usize, filter: usize, stride: usize, dilation: usize| {
            let effective = filter.saturating_sub(1).saturating_mul(dilation) + 1;
            if opts.padding == Padding::Valid && filter > 0 && input < effective {
                return Ok((0, 0));
            }
            conv_output_size(input, filter, stride, dilation, opts.padding)
        };
        let (out_h, pad_top) = size(input_shape[1], filter_h, opts.stride_h, opts.dilation_h)?;
        let (out_w, pad_left) = size(input_shape[2], filter_w, opts.stride_w, opts.dilation_w)?;
        Ok(ConvGeometry {
            batches: input_shape[0],
            in_h: input_shape[1],
            in_w: input_shape[2],
            in_c: input_shape[3],
            filter_h,
            filter_w,
            out_h,
            out_w,
            out_c,
            stride_h: opts.stride_h,
            stride_w: opts.stride_w,
            dilation_h: opts.dilation_h,
            dilation_w: opts.dilation_w,
            pad_top,
            pad_left,
        })
    }

    pub fn input_len(&self) -> usize {
        self.batches * self.in_h * self.in_w * self.in_c
    }

    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.batches, self.out_h, self.out_w, self.out_c]
    }

    pub fn output_len(&self) -> usize {
        self.batches * self.out_h * self.out_w * self.out_c
    }

    /// Input row read by output row `oy` at filter row `ky`, if inside the input.
    #[inline(always)]
    pub fn in_y(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride_h + ky * self.dilation_h)
            .checked_sub(self.pad_top)
            .filter(|&y| y < self.in_h)
    }

    /// Input column read by output column `ox` at filter column `kx`, if inside.
    #[inline(always)]
    pub fn in_x(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride_w + kx * self.dilation_w)
            .checked_sub(self.pad_left)
            .filter(|&x| x < self.in_w)
    }
}

/// The convolution options of a node, or an error naming what is wrong with them.
pub(crate) fn conv_options(ctx: &PrepareCtx<'_>) -> Result<ConvOptions, KernelError> {
    match &ctx.node.options {
        OpOptions::Conv(c) => {
            if c.stride_h == 0 || c.stride_w == 0 || c.dilation_h == 0 || c.dilation_w == 0 {
                return Err(KernelError::invalid(format!(
                    "strides ({}, {}) and dilations ({}, {}) must be positive",
                    c.stride_h, c.stride_w, c.dilation_h, c.dilation_w
                )));
            }
            Ok(c.clone())
        }
        _ => Err(KernelError::invalid(format!(
            "{} node without convolution options",
            ctx.op()
        ))),
    }
}

/// What prepare decided for one CONV_2D node; the optimized kernels start from this.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Conv2dParams {
    pub geometry: ConvGeometry,
    /// Input channels each filter sees (`in_c / groups`).
    pub filter_in_c: usize,
    pub groups: usize,
    pub dtype: DType,
    pub float_min: f32,
    pub float_max: f32,
    /// Present for int8/uint8.
    pub quant: Option<QuantOutput>,
    pub has_bias: bool,
}

impl Conv2dParams {
    fn filter_len(&self) -> usize {
        let g = &self.geometry;
        g.out_c * g.filter_h * g.filter_w * self.filter_in_c
    }
}

/// Validates a CONV_2D node and fixes its parameters.
pub(crate) fn prepare_params(ctx: &PrepareCtx<'_>) -> Result<Conv2dParams, KernelError> {
    ctx.expect_arity(2, 3, 1)?;
    let input = ctx.input(0)?;
    let filter = ctx.input(1)?;
    let bias = ctx.optional_input(2);
    let output = ctx.output(0)?;
    let opts = conv_options(ctx)?;
    let (float_min, float_max) = float_clamp(opts.activation)?;
    expect_rank("input", input.shape, 4)?;
    expect_rank("filter", filter.shape, 4)?;
    let (out_c, fh, fw, fic) = (
        filter.shape[0],
        filter.shape[1],
        filter.shape[2],
        filter.shape[3],
    );
    let in_c = input.shape[3];
    if fic == 0 || in_c % fic != 0 {
        return Err(KernelError::shape(format!(
            "input has {in_c} channels, not a multiple of the filter's {fic} (filter shape {:?})",
            filter.shape
        )));
    }
    let groups = in_c / fic;
    if groups == 0 || out_c % groups != 0 {
        return Err(KernelError::shape(format!(
            "{out_c} output channels cannot be split into {groups} groups"
        )));
    }
    let dtype = check_dtypes(&input, &filter, bias.as_ref(), &output)?;
    check_bias(bias.as_ref(), out_c)?;
    let geometry = ConvGeometry::new(input.shape, fh, fw, out_c, &opts)?;
    let quant = match dtype {
        DType::F32 => None,
        _ => Some(QuantOutput {
            // LiteRT's builtin convolution requantizes in ruy, which rounds half up.
            rounding: Rounding::HalfUp,
            ..quant_output(
                &input,
                &filter,
                &output,
                out_c,
                0,
                dtype == DType::U8,
                opts.activation,
            )?
        }),
    };
    Ok(Conv2dParams {
        geometry,
        filter_in_c: fic,
        groups,
        dtype,
        float_min,
        float_max,
        quant,
        has_bias: bias.is_some(),
    })
}

/// The reference kernel: plain loops, the oracle of the optimized kernels.
pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(hybrid) = super::hybrid::route(ctx)? {
        return Ok(hybrid);
    }
    let params = prepare_params(ctx)?;
    let shape = params.geometry.output_shape();
    Ok(PreparedKernel::new(vec![shape], Conv2dReference { params }))
}

pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(hybrid) = super::hybrid::route_optimized(ctx)? {
        return Ok(hybrid);
    }
    let params = prepare_params(ctx)?;
    let shape = params.geometry.output_shape();
    // Optimized: float32 with constant filters runs on the packed GEMM
    // (optimized/conv.rs); everything else keeps the reference loops.
    if let Some(kernel) = crate::optimized::kernels::try_conv2d(ctx, &shape)? {
        return Ok(PreparedKernel {
            output_shapes: vec![shape],
            kernel,
        });
    }
    if let Some(kernel) = int8_gemm(ctx, &params)? {
        return Ok(PreparedKernel {
            output_shapes: vec![shape],
            kernel,
        });
    }
    Ok(PreparedKernel::new(vec![shape], Conv2dReference { params }))
}

/// int8 with constant per-channel (or per-tensor, zero point 0) filters and a constant
/// bias runs the packed int8 GEMM (optimized/qgemm.rs), bit-exact with the reference.
fn int8_gemm(
    ctx: &PrepareCtx<'_>,
    p: &Conv2dParams,
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let Some(q) = &p.quant else { return Ok(None) };
    if p.dtype != DType::I8
        || p.groups != 1
        || q.filter_offset != 0
        || q.rounding != Rounding::HalfUp
    {
        return Ok(None);
    }
    let Some(w) = ctx.input(1)?.data else {
        return Ok(None);
    };
    let bias = match ctx.optional_input(2) {
        Some(b) => match b.data {
            Some(d) => Some(crate::quant::le_i32s(d)),
            None => return Ok(None),
        },
        None => None,
    };
    let g = &p.geometry;
    let geom = crate::optimized::ConvGeom {
        batch: g.batches,
        in_h: g.in_h,
        in_w: g.in_w,
        in_c: g.in_c,
        out_h: g.out_h,
        out_w: g.out_w,
        out_c: g.out_c,
        k_h: g.filter_h,
        k_w: g.filter_w,
        stride_h: g.stride_h,
        stride_w: g.stride_w,
        dil_h: g.dilation_h,
        dil_w: g.dilation_w,
        pad_top: g.pad_top,
        pad_left: g.pad_left,
    };
    crate::optimized::qkernels::conv_i8(ctx, geom, bytemuck::cast_slice(w), bias.as_deref(), q)
}

/// Plain loops over the output, the oracle of the optimized kernels.
pub(crate) struct Conv2dReference {
    pub params: Conv2dParams,
}

/// Requires an eval-time buffer to hold exactly the `want` elements prepare computed,
/// counted in bytes: a view's element count comes from its shape, not its buffer, so
/// only the byte length proves the buffer is as long as the shape says.
pub(crate) fn expect_len(
    what: &str,
    got_bytes: usize,
    dtype: DType,
    want: usize,
) -> Result<(), KernelError> {
    let want_bytes = want.checked_mul(dtype.size());
    if want_bytes != Some(got_bytes) {
        return Err(KernelError::shape(format!(
            "{what} holds {got_bytes} bytes of {dtype}, prepared for {want} elements"
        )));
    }
    Ok(())
}

/// Float32 reference convolution. Sums run in f64: the reference is the oracle, and
/// an exact-as-possible sum keeps its own rounding out of every comparison with LiteRT
/// and with the optimized kernels, whatever order they sum in.
pub(crate) fn conv_f32(
    p: &Conv2dParams,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let g = &p.geometry;
    let fic = p.filter_in_c;
    let oc_per_group = g.out_c / p.groups;
    for b in 0..g.batches {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let out_base = ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
                for oc in 0..g.out_c {
                    let ic0 = (oc / oc_per_group) * fic;
                    let mut acc = 0.0f64;
                    for ky in 0..g.filter_h {
                        let Some(iy) = g.in_y(oy, ky) else { continue };
                        for kx in 0..g.filter_w {
                            let Some(ix) = g.in_x(ox, kx) else { continue };
                            let ib = ((b * g.in_h + iy) * g.in_w + ix) * g.in_c + ic0;
                            let fb = ((oc * g.filter_h + ky) * g.filter_w + kx) * fic;
                            for (x, w) in input[ib..ib + fic].iter().zip(&filter[fb..fb + fic]) {
                                acc += *x as f64 * *w as f64;
                            }
                        }
                    }
                    if let Some(bias) = bias {
                        acc += bias[oc] as f64;
                    }
                    out[out_base + oc] = (acc as f32).max(p.float_min).min(p.float_max);
                }
            }
        }
    }
}

/// int8/uint8 reference convolution (TFLite's ConvPerChannel arithmetic).
pub(crate) fn conv_quant<T: QElem>(
    p: &Conv2dParams,
    q: &QuantOutput,
    input: &[T],
    filter: &[T],
    bias: Option<&[i32]>,
    out: &mut [T],
) {
    let g = &p.geometry;
    let fic = p.filter_in_c;
    let oc_per_group = g.out_c / p.groups;
    for b in 0..g.batches {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let out_base = ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
                for oc in 0..g.out_c {
                    let ic0 = (oc / oc_per_group) * fic;
                    let mut acc = 0i32;
                    for ky in 0..g.filter_h {
                        let Some(iy) = g.in_y(oy, ky) else { continue };
                        for kx in 0..g.filter_w {
                            let Some(ix) = g.in_x(ox, kx) else { continue };
                            let ib = ((b * g.in_h + iy) * g.in_w + ix) * g.in_c + ic0;
                            let fb = ((oc * g.filter_h + ky) * g.filter_w + kx) * fic;
                            for (&x, &w) in input[ib..ib + fic].iter().zip(&filter[fb..fb + fic]) {
                                let prod = (w.widen() + q.filter_offset)
                                    .wrapping_mul(x.widen() + q.input_offset);
                                acc = acc.wrapping_add(prod);
                            }
                        }
                    }
                    if let Some(bias) = bias {
                        acc = acc.wrapping_add(bias[oc]);
                    }
                    out[out_base + oc] = T::narrow(q.requantize(acc, oc));
                }
            }
        }
    }
}

/// The optional bias input of an eval call.
pub(crate) fn bias_view<'a, 'b>(
    inputs: &'b [Option<TensorView<'a>>],
    i: usize,
    has_bias: bool,
) -> Result<Option<&'b TensorView<'a>>, KernelError> {
    if !has_bias {
        return Ok(None);
    }
    input(inputs, i).map(Some)
}

pub(crate) fn first_output<'a, 'b>(
    outputs: &'b mut [TensorViewMut<'a>],
) -> Result<&'b mut TensorViewMut<'a>, KernelError> {
    outputs
        .first_mut()
        .ok_or_else(|| KernelError::invalid("missing output"))
}

impl OpKernel for Conv2dReference {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let p = &self.params;
        let x = input(inputs, 0)?;
        let w = input(inputs, 1)?;
        let bias = bias_view(inputs, 2, p.has_bias)?;
        let out = first_output(outputs)?;
        expect_len("input", x.bytes.len(), x.dtype, p.geometry.input_len())?;
        expect_len("filter", w.bytes.len(), w.dtype, p.filter_len())?;
        expect_len(
            "output",
            out.bytes.len(),
            out.dtype,
            p.geometry.output_len(),
        )?;
        if let Some(b) = bias {
            expect_len("bias", b.bytes.len(), b.dtype, p.geometry.out_c)?;
        }
        match (p.dtype, &p.quant) {
            (DType::F32, _) => {
                let bias = bias.map(|b| b.f32s()).transpose()?;
                conv_f32(p, x.f32s()?, w.f32s()?, bias, out.f32s_mut()?);
            }
            (DType::I8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                conv_quant(p, q, x.i8s()?, w.i8s()?, bias, out.i8s_mut()?);
            }
            (DType::U8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                conv_quant(p, q, x.u8s()?, w.u8s()?, bias, out.u8s_mut()?);
            }
            (other, _) => return Err(KernelError::dtype("prepared conv dtype", other)),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.params.dtype {
            DType::F32 => "conv2d/f32/reference",
            DType::I8 => "conv2d/i8/reference",
            _ => "conv2d/u8/reference",
        }
    }
}

/// Shared by the tests of the convolution family: random quantized tensors, one-op
/// models and the two CPU resolvers.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::builder::SubgraphBuilder;
    use switchyard_interpreter::{
        Activation, BuiltinOp, DType, Interpreter, Model, OpKind, OpOptions, OpResolver, Quant,
        Tensor,
    };
    use switchyard_testkit::{
        LiteRtKernels, Tolerance, assert_matches_litert, compare, default_tolerance, litert_run,
        random_tensor, switchyard_run,
    };

    use crate::CpuResolver;

    pub fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    /// Quantization of a test tensor: scale and zero point.
    #[derive(Clone, Copy, Debug)]
    pub struct Q {
        pub scale: f32,
        pub zp: i64,
    }

    /// Values over the whole range of `dtype` (floats in [-1, 1)).
    pub fn random(dtype: DType, shape: &[usize], seed: u64) -> Tensor {
        match dtype {
            DType::F32 => random_tensor(dtype, shape, seed, -1.0, 1.0),
            _ => random_tensor(dtype, shape, seed, -128.0, 255.0),
        }
    }

    /// Adds a constant filter of random values, per-channel scales along `axis` when
    /// `scales` has more than one entry; integer values come from `zp + range` when
    /// given, from the whole dtype range otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn filter_in(
        sg: &mut SubgraphBuilder,
        dtype: DType,
        shape: &[usize],
        seed: u64,
        scales: &[f32],
        zp: i64,
        axis: usize,
        range: Option<(i64, i64)>,
    ) -> usize {
        let t = match range {
            Some((lo, hi)) if dtype != DType::F32 => {
                random_tensor(dtype, shape, seed, (zp + lo) as f32, (zp + hi) as f32)
            }
            _ => random(dtype, shape, seed),
        };
        let f = sg.constant("filter", dtype, shape, t.data.as_slice().to_vec());
        if dtype != DType::F32 {
            sg.set_quant(
                f,
                Quant {
                    scale: scales.to_vec(),
                    zero_point: vec![zp; scales.len()],
                    axis,
                },
            );
        }
        f
    }

    /// Scales whose requantization multipliers are exact powers of two (1/2 and 1/4),
    /// so that with small inputs and weights many accumulators land exactly half-way
    /// between two outputs: the cases that tell TFLite's rounding modes apart.
    pub const TIE_IN_SCALE: f32 = 0.5;
    pub const TIE_OUT_SCALE: f32 = 0.25;
    pub fn tie_filter_scales(channels: usize, per_channel: bool) -> Vec<f32> {
        if per_channel {
            (0..channels)
                .map(|c| if c % 2 == 0 { 0.25 } else { 0.125 })
                .collect()
        } else {
            // 1/4 with the scales above: a right shift, where the modes differ.
            vec![0.125]
        }
    }

    /// Adds a constant bias: float in [-1, 1), or int32 with scale input × filter.
    /// Integer biases are drawn from `[-span, span]`.
    pub fn bias(
        sg: &mut SubgraphBuilder,
        dtype: DType,
        channels: usize,
        seed: u64,
        in_scale: f32,
        filter_scales: &[f32],
        span: f32,
    ) -> usize {
        if dtype == DType::F32 {
            let t = random(DType::F32, &[channels], seed);
            return sg.constant("bias", DType::F32, &[channels], t.data.as_slice().to_vec());
        }
        let t = random_tensor(DType::I32, &[channels], seed, -span, span);
        let b = sg.constant("bias", DType::I32, &[channels], t.data.as_slice().to_vec());
        let scales: Vec<f32> = filter_scales.iter().map(|s| s * in_scale).collect();
        let n = scales.len();
        sg.set_quant(
            b,
            Quant {
                scale: scales,
                zero_point: vec![0; n],
                axis: 0,
            },
        );
        b
    }

    /// Adds an all-zero bias (the twin of a bias-free node for LiteRT).
    pub fn zero(
        sg: &mut SubgraphBuilder,
        dtype: DType,
        channels: usize,
        in_scale: f32,
        filter_scales: &[f32],
    ) -> usize {
        let b = bias(sg, dtype, channels, 0, in_scale, filter_scales, 0.0);
        sg.spec_mut(b).data = Some(vec![0; channels * 4]);
        b
    }

    /// Runs `ours` in Switchyard (both resolvers) and `theirs` in LiteRT's builtin
    /// kernels, for nodes LiteRT refuses but can run in an equivalent form.
    pub fn assert_matches_litert_twin(case: &str, ours: &[u8], theirs: &[u8], inputs: &[Tensor]) {
        let dtype = inputs.first().map_or(DType::F32, |t| t.dtype);
        let expected = litert_run(theirs, inputs, LiteRtKernels::Builtin)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        for (name, resolver) in resolvers() {
            let actual = switchyard_run(ours, inputs, resolver)
                .unwrap_or_else(|e| panic!("{case} [{name}]: {e}"));
            assert_eq!(actual.len(), expected.len(), "{case} [{name}]");
            for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
                let t = tol(dtype).unwrap_or_else(|| default_tolerance(e.dtype));
                if let Err(msg) = compare(a, e, t) {
                    panic!("{case} [{name}] output {i}: {msg}");
                }
            }
        }
    }

    /// Fails when a quantized test output is (nearly) constant, e.g. all saturated:
    /// such a case would agree with LiteRT without testing the arithmetic.
    pub fn assert_informative(case: &str, model: &[u8], inputs: &[Tensor]) {
        let out = switchyard_run(model, inputs, Arc::new(CpuResolver::reference()))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        for t in out {
            let v = switchyard_testkit::to_f64(&t);
            let mut distinct: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let want = (v.len() / 4).clamp(2, 6).min(v.len());
            assert!(
                distinct.len() >= want,
                "{case}: output has only {} distinct values: {distinct:?}",
                distinct.len()
            );
        }
    }

    /// One node cut out of a real model: a one-op model with the node's options,
    /// version, constants and quantization, its activation inputs turned into model
    /// inputs (with random values), and its outputs as model outputs. Float16 weights
    /// behind a DEQUANTIZE (MediaPipe's layout) become float32 constants, as the
    /// executor's folding makes them. `as_op` replaces the operator (and options).
    pub struct Extracted {
        pub model: Vec<u8>,
        pub inputs: Vec<Tensor>,
        pub name: String,
    }

    pub fn extract(file: &str, node_index: usize, as_op: Option<(OpKind, OpOptions)>) -> Extracted {
        let path = switchyard_testkit::models_dir().join(file);
        let model = Model::from_path(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", path.display()));
        let sg = &model.subgraphs[0];
        let node = &sg.nodes[node_index];
        let mut mb = ModelBuilder::new();
        let out = mb.main();
        let mut inputs = Vec::new();
        let mut model_inputs = Vec::new();
        let mut node_inputs = Vec::new();
        for (k, t) in node.inputs.iter().enumerate() {
            let Some(t) = *t else {
                node_inputs.push(None);
                continue;
            };
            let td = &sg.tensors[t];
            let folded = sg
                .nodes
                .iter()
                .find(|n| n.outputs.contains(&t) && n.builtin() == Some(BuiltinOp::Dequantize))
                .and_then(|n| n.inputs.first().copied().flatten())
                .map(|src| &sg.tensors[src])
                .filter(|src| src.dtype == DType::F16 && src.data.is_some());
            let idx = if let Some(data) = &td.data {
                let i = out.constant(&td.name, td.dtype, &td.shape, data.as_slice().to_vec());
                if let Some(q) = &td.quant {
                    out.set_quant(i, q.clone());
                }
                i
            } else if let Some(src) = folded {
                let bytes = src.data.as_ref().map(|d| d.as_slice()).unwrap_or_default();
                let values: Vec<f32> = bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                out.constant_f32(&td.name, &src.shape, &values)
            } else {
                let i = out.tensor(&td.name, td.dtype, &td.shape);
                if let Some(q) = &td.quant {
                    out.set_quant(i, q.clone());
                }
                model_inputs.push(i);
                inputs.push(random(td.dtype, &td.shape, 11 + k as u64));
                i
            };
            node_inputs.push(Some(idx));
        }
        let mut outs = Vec::new();
        for &t in &node.outputs {
            let td = &sg.tensors[t];
            let i = out.tensor(&td.name, td.dtype, &td.shape);
            if let Some(q) = &td.quant {
                out.set_quant(i, q.clone());
            }
            outs.push(i);
        }
        let (op, options) = as_op.unwrap_or_else(|| (node.op.clone(), node.options.clone()));
        out.op_versioned(op, node.version, &node_inputs, &outs, options);
        out.set_inputs(&model_inputs);
        out.set_outputs(&outs);
        Extracted {
            model: mb.finish(),
            inputs,
            name: format!("{file} node {node_index} ({})", node.op),
        }
    }

    /// Indices of the subgraph-0 nodes of `file` that run `op`.
    pub fn nodes_of(file: &str, op: BuiltinOp) -> Vec<usize> {
        let path = switchyard_testkit::models_dir().join(file);
        let model = Model::from_path(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", path.display()));
        model.subgraphs[0]
            .nodes
            .iter()
            .filter(|n| n.builtin() == Some(op))
            .map(|n| n.index)
            .collect()
    }

    /// Cuts every `op` node out of `file` and compares it with LiteRT.
    pub fn real_nodes_match_litert(file: &str, op: BuiltinOp) -> usize {
        let nodes = nodes_of(file, op);
        for &n in &nodes {
            let e = extract(file, n, None);
            let dtype = e.inputs.first().map_or(DType::F32, |t| t.dtype);
            assert_matches_litert(&e.name, &e.model, &e.inputs, &resolvers(), tol(dtype));
        }
        nodes.len()
    }

    /// Integer outputs must be bit-exact with LiteRT; floats use the default bound.
    pub fn tol(dtype: DType) -> Option<Tolerance> {
        (dtype != DType::F32).then_some(Tolerance::Exact)
    }

    /// Input and output scales that keep most outputs inside the int8/uint8 range and
    /// spread over many steps. The accumulator's standard deviation for uniform inputs
    /// and weights is about 74 × 73 × √depth steps; it is mapped to about 40 output
    /// steps, and for clamping activations to a real spread that straddles the clamp.
    pub fn scales(act: Activation, filter_scale: f32, depth: usize) -> (f32, f32) {
        let acc_std = 5400.0 * (depth as f32).sqrt() * filter_scale;
        let in_scale = match act {
            Activation::Relu6 => 3.0 / acc_std,
            Activation::ReluN1To1 => 0.7 / acc_std,
            _ => 0.05,
        };
        (in_scale, in_scale * acc_std / 40.0)
    }

    /// Per-channel filter scales that differ from channel to channel.
    pub fn channel_scales(channels: usize, base: f32) -> Vec<f32> {
        (0..channels)
            .map(|c| base * (0.5 + (c % 7) as f32 * 0.25))
            .collect()
    }

    /// The zero point that centres `dtype` (0 for int8, 128 for uint8) plus `delta`.
    pub fn zp(dtype: DType, delta: i64) -> i64 {
        if dtype == DType::U8 {
            128 + delta
        } else {
            delta
        }
    }

    /// Loads and prepares `model` and returns the error message of whichever step
    /// refused it (the loader already checks some quantization facts); the test fails
    /// if both accept it.
    pub fn prepare_error(model: &[u8]) -> String {
        let model = match Model::from_bytes(model) {
            Ok(m) => Arc::new(m),
            Err(e) => return e.to_string(),
        };
        match Interpreter::new(
            model,
            Arc::new(CpuResolver::reference()),
            Default::default(),
        ) {
            Ok(_) => panic!("prepare accepted an invalid node"),
            Err(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{BuiltinOp, OpKind, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::testing::*;
    use super::*;

    #[derive(Clone, Debug)]
    struct Case {
        dtype: DType,
        input: [usize; 4],
        /// out_c, kh, kw, filter in_c
        filter: [usize; 4],
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
        act: Activation,
        bias: bool,
        per_channel: bool,
        /// Power-of-two multipliers and small values (see `tie_filter_scales`).
        ties: bool,
    }

    fn base(dtype: DType) -> Case {
        Case {
            dtype,
            input: [1, 7, 6, 5],
            filter: [4, 3, 3, 5],
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::Same,
            act: Activation::None,
            bias: true,
            per_channel: dtype == DType::I8,
            ties: false,
        }
    }

    fn options(c: &Case) -> ConvOptions {
        ConvOptions {
            padding: c.padding,
            stride_h: c.stride.0,
            stride_w: c.stride.1,
            dilation_h: c.dilation.0,
            dilation_w: c.dilation.1,
            depth_multiplier: 1,
            activation: c.act,
        }
    }

    fn build(c: &Case) -> Vec<u8> {
        build_with(c, false)
    }

    /// The model of `c`; `zero_bias` writes an all-zero bias when `c` has none.
    fn build_with(c: &Case, zero_bias: bool) -> Vec<u8> {
        let opts = options(c);
        let geo = ConvGeometry::new(&c.input, c.filter[1], c.filter[2], c.filter[0], &opts)
            .expect("test case geometry");
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.input);
        let y = sg.tensor("y", c.dtype, &geo.output_shape());
        let base_scale = 0.01;
        let depth = c.filter[1] * c.filter[2] * c.filter[3];
        let (mut in_scale, mut out_scale) = scales(c.act, base_scale, depth);
        let mut scales = if c.per_channel {
            channel_scales(c.filter[0], base_scale)
        } else {
            vec![base_scale]
        };
        if c.ties {
            (in_scale, out_scale) = (TIE_IN_SCALE, TIE_OUT_SCALE);
            scales = tie_filter_scales(c.filter[0], c.per_channel);
        }
        let in_q = Q {
            scale: in_scale,
            zp: zp(c.dtype, -3),
        };
        let out_q = Q {
            scale: out_scale,
            zp: zp(c.dtype, 5),
        };
        if c.dtype != DType::F32 {
            sg.set_quant(x, Quant::per_tensor(in_q.scale, in_q.zp));
            sg.set_quant(y, Quant::per_tensor(out_q.scale, out_q.zp));
        }
        let filter_zp = if c.dtype == DType::U8 { 120 } else { 0 };
        let range = c.ties.then_some((-3, 3));
        let w = filter_in(sg, c.dtype, &c.filter, 7, &scales, filter_zp, 0, range);
        let span = if c.ties { 20.0 } else { 3000.0 };
        let b = if c.bias {
            Some(bias(sg, c.dtype, c.filter[0], 9, in_q.scale, &scales, span))
        } else if zero_bias {
            Some(zero(sg, c.dtype, c.filter[0], in_q.scale, &scales))
        } else {
            None
        };
        let version = if c.dtype == DType::I8 { 3 } else { 1 };
        // LiteRT wants an absent bias left out rather than written as -1.
        let inputs: Vec<Option<usize>> =
            [Some(x), Some(w)].into_iter().chain(b.map(Some)).collect();
        sg.op_versioned(
            OpKind::Builtin(BuiltinOp::Conv2d),
            version,
            &inputs,
            &[y],
            OpOptions::Conv(opts),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn check(c: &Case) {
        let x = if c.ties {
            let z = zp(c.dtype, -3) as f32;
            random_tensor(c.dtype, &c.input, 3, z - 3.0, z + 3.0)
        } else {
            random(c.dtype, &c.input, 3)
        };
        if c.dtype != DType::F32 {
            assert_informative(&format!("{c:?}"), &build(c), std::slice::from_ref(&x));
        }
        if c.bias {
            assert_matches_litert(
                &format!("{c:?}"),
                &build(c),
                &[x],
                &resolvers(),
                tol(c.dtype),
            );
        } else {
            // LiteRT's CONV_2D refuses a node without bias, so the bias-free model runs
            // here and its explicit zero-bias twin in LiteRT: the same arithmetic.
            let zero_bias = build_with(c, true);
            assert_matches_litert_twin(&format!("{c:?}"), &build(c), &zero_bias, &[x]);
        }
    }

    fn variants(dtype: DType) -> Vec<Case> {
        let b = base(dtype);
        vec![
            b.clone(),
            Case {
                stride: (2, 2),
                ..b.clone()
            },
            Case {
                stride: (2, 1),
                padding: Padding::Valid,
                act: Activation::Relu,
                ..b.clone()
            },
            Case {
                dilation: (2, 2),
                act: Activation::Relu6,
                ..b.clone()
            },
            Case {
                dilation: (1, 2),
                padding: Padding::Valid,
                act: Activation::ReluN1To1,
                bias: false,
                ..b.clone()
            },
            Case {
                input: [2, 5, 5, 8],
                filter: [6, 1, 1, 8],
                ..b.clone()
            },
            Case {
                input: [1, 6, 8, 3],
                filter: [5, 2, 4, 3],
                stride: (2, 3),
                ..b
            },
        ]
    }

    #[test]
    fn optimized_float_matches_reference() {
        let b = base(DType::F32);
        let mut cases = variants(DType::F32);
        cases.extend([
            // Wide enough for several GEMM panels and row blocks per thread.
            Case {
                input: [1, 17, 19, 24],
                filter: [40, 3, 3, 24],
                stride: (2, 2),
                act: Activation::Relu6,
                ..b.clone()
            },
            Case {
                input: [1, 16, 16, 32],
                filter: [48, 1, 1, 32],
                act: Activation::Relu,
                ..b
            },
        ]);
        for c in cases {
            let x = random(c.dtype, &c.input, 3);
            crate::optimized::kernels::testing::assert_optimized_matches_reference(
                &format!("{c:?}"),
                &build(&c),
                &[x],
                "conv2d/f32/",
            );
        }
    }

    #[test]
    fn float_matches_litert() {
        for c in variants(DType::F32) {
            check(&c);
        }
    }

    #[test]
    fn int8_per_channel_matches_litert() {
        for c in variants(DType::I8) {
            check(&c);
        }
    }

    #[test]
    fn int8_per_tensor_matches_litert() {
        for c in variants(DType::I8).into_iter().take(3) {
            check(&Case {
                per_channel: false,
                ..c
            });
        }
    }

    /// Many exact half-way accumulators: pins the rounding mode (LiteRT's convolution
    /// rounds half away from zero, unlike its int8 depthwise kernel).
    #[test]
    fn quantized_ties_match_litert() {
        for dtype in [DType::I8, DType::U8] {
            for c in variants(dtype).into_iter().take(2) {
                check(&Case { ties: true, ..c });
            }
            let b = base(dtype);
            check(&Case {
                ties: true,
                filter: [12, 1, 1, b.filter[3]],
                ..b
            });
        }
    }

    #[test]
    fn uint8_matches_litert() {
        for c in variants(DType::U8) {
            check(&c);
        }
    }

    /// Every CONV_2D of the int8 wake-word model (per-channel, v3) and of the float
    /// selfie segmenter (fp16 weights), cut out with their real weights.
    #[test]
    fn real_model_nodes_match_litert() {
        assert_eq!(
            real_nodes_match_litert("mww_okay_nabu.tflite", BuiltinOp::Conv2d),
            6
        );
        assert_eq!(
            real_nodes_match_litert("mp_selfie_segmentation.tflite", BuiltinOp::Conv2d),
            43
        );
    }

    #[test]
    fn grouped_float_matches_litert() {
        check(&Case {
            input: [1, 5, 5, 6],
            filter: [4, 3, 3, 3],
            ..base(DType::F32)
        });
    }

    #[test]
    fn invalid_nodes_are_prepare_errors() {
        let good = base(DType::F32);
        // Filter channels that do not divide the input's.
        let mut c = good.clone();
        c.filter = [4, 3, 3, 4];
        let e = prepare_error(&build(&c));
        assert!(e.contains("channels"), "{e}");
        // A bias with the wrong number of values.
        let mut model = ModelBuilder::new();
        let sg = model.main();
        let x = sg.tensor("x", DType::F32, &[1, 2, 2, 5]);
        let y = sg.tensor("y", DType::F32, &[1, 1, 1, 4]);
        let w = sg.constant_f32("w", &[4, 3, 3, 5], &[0.5; 180]);
        let bad_bias = sg.constant_f32("b", &[3], &[0.0; 3]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Conv2d),
            &[Some(x), Some(w), Some(bad_bias)],
            &[y],
            OpOptions::Conv(options(&good)),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&model.finish());
        assert!(e.contains("bias"), "{e}");
    }

    /// Dynamic-size models are prepared with placeholder sizes first; a VALID window
    /// larger than such an input gives an empty output instead of failing the load.
    #[test]
    fn window_larger_than_input_gives_empty_output() {
        let mut c = base(DType::F32);
        c.padding = Padding::Valid;
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 2, 6, 5]);
        let y = sg.tensor("y", DType::F32, &[1, 1, 4, 4]);
        let w = sg.constant_f32("w", &[4, 3, 3, 5], &[0.5; 180]);
        let b = sg.constant_f32("b", &[4], &[0.0; 4]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Conv2d),
            &[Some(x), Some(w), Some(b)],
            &[y],
            OpOptions::Conv(options(&c)),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        for (name, resolver) in resolvers() {
            let out = switchyard_testkit::switchyard_run(
                &mb.finish(),
                &[random(DType::F32, &[1, 2, 6, 5], 1)],
                resolver,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out[0].shape, vec![1, 0, 4, 4], "{name}");
        }
    }

    /// Builds an int8 conv whose quantization is replaced by `q` on tensor `which`.
    fn int8_with(which: &str, q: Option<Quant>) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::I8, &[1, 4, 4, 3]);
        let y = sg.tensor("y", DType::I8, &[1, 4, 4, 3]);
        let w = sg.constant("w", DType::I8, &[3, 1, 1, 3], vec![1; 9]);
        let mut qs = [
            Some(Quant::per_tensor(0.1, 0)),
            Some(Quant {
                scale: vec![0.1, 0.2, 0.3],
                zero_point: vec![0; 3],
                axis: 0,
            }),
            Some(Quant::per_tensor(0.2, 0)),
        ];
        let i = ["input", "filter", "output"]
            .iter()
            .position(|n| *n == which)
            .expect("known tensor");
        qs[i] = q;
        for (t, q) in [x, w, y].into_iter().zip(qs) {
            if let Some(q) = q {
                sg.set_quant(t, q);
            }
        }
        sg.op(
            OpKind::Builtin(BuiltinOp::Conv2d),
            &[Some(x), Some(w), None],
            &[y],
            OpOptions::Conv(options(&base(DType::I8))),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn bad_quantization_is_a_prepare_error() {
        let e = prepare_error(&int8_with("input", None));
        assert!(e.contains("input has no quantization"), "{e}");
        let two_scales = Quant {
            scale: vec![0.1, 0.2],
            zero_point: vec![0, 0],
            axis: 0,
        };
        let e = prepare_error(&int8_with("filter", Some(two_scales)));
        assert!(e.contains("scales"), "{e}");
        let wrong_axis = Quant {
            scale: vec![0.1, 0.2, 0.3],
            zero_point: vec![0; 3],
            axis: 3,
        };
        let e = prepare_error(&int8_with("filter", Some(wrong_axis)));
        assert!(e.contains("axis"), "{e}");
        let e = prepare_error(&int8_with("output", Some(Quant::per_tensor(0.0, 0))));
        assert!(e.contains("scale"), "{e}");
        let e = prepare_error(&int8_with("output", Some(Quant::per_tensor(0.1, 300))));
        assert!(e.contains("zero point"), "{e}");
    }

    #[test]
    fn hybrid_and_tanh_are_refused() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 4, 4, 2]);
        let y = sg.tensor("y", DType::F32, &[1, 4, 4, 3]);
        let w = sg.constant("w", DType::I8, &[3, 1, 1, 2], vec![1; 6]);
        sg.set_quant(w, Quant::per_tensor(0.1, 0));
        sg.op(
            OpKind::Builtin(BuiltinOp::Conv2d),
            &[Some(x), Some(w), None],
            &[y],
            OpOptions::Conv(options(&base(DType::F32))),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&mb.finish());
        assert!(e.contains("hybrid"), "{e}");
        let mut c = base(DType::F32);
        c.act = Activation::Tanh;
        let e = prepare_error(&build(&c));
        assert!(e.contains("Tanh"), "{e}");
    }
}
