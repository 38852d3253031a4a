//! Hybrid (dynamic-range) kernels for FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D and
//! BATCH_MATMUL (constant right-hand side):
//! float activations, constant int8 weights with per-channel (or per-tensor) scales.
//!
//! A dynamic-range model (TFLite's default post-training quantization) stores weights as
//! int8 and leaves activations float. At run time each input row (FULLY_CONNECTED) or
//! image (convolutions) is quantized to int8 with its own scale, and for asymmetric
//! inputs its own zero point; products accumulate in int32 and are scaled back to float.
//! LiteRT's built-in kernels do exactly this, so the rounding rules here are theirs
//! (docs/coverage/README.md says how that was checked bit for bit): a different rounding
//! would move outputs by far more than float noise. Both registries use these kernels;
//! the ops' prepare routes float-input/int8-weight nodes here (`route`).

use std::cell::RefCell;

use crate::optimized::ConvGeom;
use crate::optimized::hconv::{HybridConv, HybridDepthwise};
use crate::optimized::hquant;
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, KernelError, OpKernel, OpOptions, Padding, PrepareCtx,
    PreparedKernel, TensorMeta, TensorView, TensorViewMut, kernel::input,
};

/// The hybrid kernel for `ctx.node` when it has float input and int8 weights; `None`
/// for every other node (the op's own prepare goes on). These are the plain loops, the
/// oracle of [`route_optimized`]'s.
pub fn route(ctx: &PrepareCtx<'_>) -> Result<Option<PreparedKernel>, KernelError> {
    route_with(ctx, false)
}

/// As [`route`], for the optimized registry: convolutions run their int32 sums on the
/// packed int8 GEMM or the channel-vectorised depthwise loop
/// ([`crate::optimized::hconv`]), bit-identical to the plain loops.
pub fn route_optimized(ctx: &PrepareCtx<'_>) -> Result<Option<PreparedKernel>, KernelError> {
    route_with(ctx, true)
}

fn route_with(
    ctx: &PrepareCtx<'_>,
    optimized: bool,
) -> Result<Option<PreparedKernel>, KernelError> {
    let (Some(x), Some(w)) = (
        ctx.inputs.first().copied().flatten(),
        ctx.inputs.get(1).copied().flatten(),
    ) else {
        return Ok(None);
    };
    if x.dtype != DType::F32 || w.dtype != DType::I8 {
        return Ok(None);
    }
    match ctx.node.builtin() {
        Some(BuiltinOp::FullyConnected) => {
            let asymmetric = matches!(
                ctx.node.options,
                OpOptions::FullyConnected {
                    asymmetric_quantize_inputs: true,
                    ..
                }
            );
            prepare_fully_connected(ctx, asymmetric, optimized).map(Some)
        }
        Some(BuiltinOp::Conv2d) => prepare_conv(ctx, false, optimized).map(Some),
        Some(BuiltinOp::DepthwiseConv2d) => prepare_conv(ctx, true, optimized).map(Some),
        Some(BuiltinOp::BatchMatmul) => prepare_batch_matmul(ctx).map(Some),
        _ => Ok(None),
    }
}

/// Quantizes `x` symmetrically into `q` (range ±127) and returns the scale: the row's
/// largest magnitude over 127, or 1 for an all-zero row (whose `q` is all zero).
pub fn quantize_row_symmetric(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_row_symmetric_with(x, q, false)
}

/// [`quantize_row_symmetric`], on the AVX2 build of its loops when `avx2`.
pub fn quantize_row_symmetric_with(x: &[f32], q: &mut [i8], avx2: bool) -> f32 {
    let (lo, hi) = hquant::min_max(x, f32::INFINITY, f32::NEG_INFINITY, avx2);
    let range = lo.abs().max(hi.abs());
    if x.is_empty() || range == 0.0 {
        q.iter_mut().for_each(|v| *v = 0);
        return 1.0;
    }
    let inv = 127.0f32 / range;
    // f32::round rounds half away from zero, as TfLiteRound does.
    hquant::quantize(x, q, inv, 0.0, -127, 127, avx2);
    range / 127.0
}

/// Quantizes `x` asymmetrically into `q` (range -128..=127 over [min(0, x), max(0, x)])
/// and returns (scale, zero point). The zero point is chosen, as in LiteRT, from the end
/// of the range whose rounding error is smaller, in double precision.
pub fn quantize_row_asymmetric(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    quantize_row_asymmetric_with(x, q, false)
}

/// [`quantize_row_asymmetric`], on the AVX2 build of its loops when `avx2`.
pub fn quantize_row_asymmetric_with(x: &[f32], q: &mut [i8], avx2: bool) -> (f32, i32) {
    let (lo, hi) = hquant::min_max(x, 0.0, 0.0, avx2);
    let (rmin, rmax) = (f64::from(lo), f64::from(hi));
    if rmin == rmax {
        q.iter_mut().for_each(|v| *v = 0);
        return (1.0, 0);
    }
    let (qmin, qmax) = (-128.0f64, 127.0f64);
    let scale = (rmax - rmin) / (qmax - qmin);
    let zp_from_min = qmin - rmin / scale;
    let zp_from_max = qmax - rmax / scale;
    let err_min = qmin.abs() + (rmin / scale).abs();
    let err_max = qmax.abs() + (rmax / scale).abs();
    let zp = if err_min < err_max {
        zp_from_min
    } else {
        zp_from_max
    };
    let zero_point = if zp <= qmin {
        -128
    } else if zp >= qmax {
        127
    } else {
        zp.round() as i32
    };
    let scale_f = scale as f32;
    let inv = (1.0f64 / f64::from(scale_f)) as f32;
    hquant::quantize(x, q, inv, zero_point as f32, -128, 127, avx2);
    (scale_f, zero_point)
}

pub use crate::optimized::qgemm::dot_i8;

/// Sum of each row of `w` (`rows` × `cols`, row-major): the zero-point correction of
/// asymmetric inputs, computed once at prepare.
pub fn row_sums(w: &[i8], cols: usize, out: &mut [i32]) {
    for (s, row) in out.iter_mut().zip(w.chunks_exact(cols.max(1))) {
        *s = row.iter().map(|&v| i32::from(v)).sum();
    }
}

/// Weights of a hybrid kernel, prepared once: int8 rows (one per output channel), their
/// scales (one per channel, or one for the tensor) and row sums.
pub struct HybridWeights<'a> {
    pub data: &'a [i8],
    pub rows: usize,
    pub cols: usize,
    pub scales: &'a [f32],
    pub row_sums: &'a [i32],
}

/// FULLY_CONNECTED with int8 weights and float input, as LiteRT computes it: `out`
/// (`batch` × `rows`) starts as the bias (or 0), each input row is quantized (symmetric,
/// or asymmetric with a zero point), and `dot * scale` is added in float.
#[allow(clippy::too_many_arguments)]
pub fn fully_connected(
    input: &[f32],
    batch: usize,
    w: &HybridWeights<'_>,
    bias: Option<&[f32]>,
    asymmetric: bool,
    quantized: &mut [i8],
    out: &mut [f32],
    avx2: bool,
) {
    let cols = w.cols;
    for b in 0..batch {
        let x = &input[b * cols..(b + 1) * cols];
        let q = &mut quantized[..cols];
        let (mut scale, zp) = if asymmetric {
            quantize_row_asymmetric_with(x, q, avx2)
        } else {
            (quantize_row_symmetric_with(x, q, avx2), 0)
        };
        let per_tensor = w.scales.len() == 1;
        if per_tensor {
            scale *= w.scales[0];
        }
        let o = &mut out[b * w.rows..(b + 1) * w.rows];
        for (r, ov) in o.iter_mut().enumerate() {
            let row = &w.data[r * cols..(r + 1) * cols];
            let mut dot = dot_i8(row, q, avx2);
            let s = if per_tensor {
                scale
            } else {
                scale * w.scales[r]
            };
            if asymmetric {
                // LiteRT subtracts in float and truncates back to int32.
                dot = (dot as f32 - (w.row_sums[r] as f32 * zp as f32)) as i32;
            }
            let start = bias.map_or(0.0, |bv| bv[r]);
            *ov = start + dot as f32 * s;
        }
    }
}

/// NHWC convolution geometry (the caller resolves SAME/VALID into the top/left pads).
pub struct Geom {
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub pad: (usize, usize),
}

impl Geom {
    /// The input row/column of tap `k` for output position `o`, or `None` in the padding.
    fn at(
        &self,
        o: usize,
        k: usize,
        stride: usize,
        dil: usize,
        pad: usize,
        len: usize,
    ) -> Option<usize> {
        (o * stride + k * dil).checked_sub(pad).filter(|&i| i < len)
    }
}

/// Hybrid CONV_2D with per-channel int8 weights (OHWI, `w.rows` output channels), as
/// LiteRT's optimized kernel: each batch's image is quantized asymmetrically, padding
/// reads the zero point (so it contributes nothing once the zero point is taken out),
/// and each output is `float(acc) * (channel_scale * image_scale) + bias`, clamped.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    input: &[f32],
    batch: usize,
    g: &Geom,
    w: &HybridWeights<'_>,
    bias: Option<&[f32]>,
    clamp: (f32, f32),
    quantized: &mut [i8],
    out: &mut [f32],
) {
    let img = g.in_h * g.in_w * g.in_c;
    let out_img = g.out_h * g.out_w * w.rows;
    for b in 0..batch {
        let q = &mut quantized[..img];
        let (sf, zp) = quantize_row_asymmetric(&input[b * img..(b + 1) * img], q);
        let o = &mut out[b * out_img..(b + 1) * out_img];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for oc in 0..w.rows {
                    let wrow = &w.data[oc * w.cols..(oc + 1) * w.cols];
                    let mut acc: i32 = 0;
                    for ky in 0..g.k_h {
                        let Some(iy) = g.at(oy, ky, g.stride.0, g.dilation.0, g.pad.0, g.in_h)
                        else {
                            continue;
                        };
                        for kx in 0..g.k_w {
                            let Some(ix) = g.at(ox, kx, g.stride.1, g.dilation.1, g.pad.1, g.in_w)
                            else {
                                continue;
                            };
                            let xi = (iy * g.in_w + ix) * g.in_c;
                            let wi = (ky * g.k_w + kx) * g.in_c;
                            for c in 0..g.in_c {
                                acc += i32::from(wrow[wi + c]) * (i32::from(q[xi + c]) - zp);
                            }
                        }
                    }
                    let scale = w.scales.get(oc).copied().unwrap_or(w.scales[0]) * sf;
                    let v = acc as f32 * scale + bias.map_or(0.0, |bv| bv[oc]);
                    o[(oy * g.out_w + ox) * w.rows + oc] = v.max(clamp.0).min(clamp.1);
                }
            }
        }
    }
}

/// Hybrid DEPTHWISE_CONV_2D (weights 1HWC with C = in_c × multiplier, per-channel), as
/// LiteRT: the image quantized asymmetrically, taps inside the image only, and the
/// output `(float(acc) * channel_scale) * image_scale + bias`, in that order.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    input: &[f32],
    batch: usize,
    g: &Geom,
    multiplier: usize,
    w: &[i8],
    scales: &[f32],
    bias: Option<&[f32]>,
    clamp: (f32, f32),
    quantized: &mut [i8],
    out: &mut [f32],
) {
    let img = g.in_h * g.in_w * g.in_c;
    let oc_n = g.in_c * multiplier;
    let out_img = g.out_h * g.out_w * oc_n;
    for b in 0..batch {
        let q = &mut quantized[..img];
        let (sf, zp) = quantize_row_asymmetric(&input[b * img..(b + 1) * img], q);
        let o = &mut out[b * out_img..(b + 1) * out_img];
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for oc in 0..oc_n {
                    let ic = oc / multiplier;
                    let mut acc: i32 = 0;
                    for ky in 0..g.k_h {
                        let Some(iy) = g.at(oy, ky, g.stride.0, g.dilation.0, g.pad.0, g.in_h)
                        else {
                            continue;
                        };
                        for kx in 0..g.k_w {
                            let Some(ix) = g.at(ox, kx, g.stride.1, g.dilation.1, g.pad.1, g.in_w)
                            else {
                                continue;
                            };
                            let xv = i32::from(q[(iy * g.in_w + ix) * g.in_c + ic]) - zp;
                            acc += i32::from(w[(ky * g.k_w + kx) * oc_n + oc]) * xv;
                        }
                    }
                    let cs = scales.get(oc).copied().unwrap_or(scales[0]);
                    let v = (acc as f32 * cs) * sf + bias.map_or(0.0, |bv| bv[oc]);
                    o[(oy * g.out_w + ox) * oc_n + oc] = v.max(clamp.0).min(clamp.1);
                }
            }
        }
    }
}

thread_local! {
    /// The quantized copy of the input, grown once per thread and reused.
    static QUANTIZED: RefCell<Vec<i8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch buffer of at least `len` bytes, allocating only when it grows.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [i8]) -> R) -> Result<R, KernelError> {
    QUANTIZED.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < len {
            let extra = len - buf.len();
            buf.try_reserve(extra)
                .map_err(|_| KernelError::invalid(format!("cannot allocate {len} bytes")))?;
            buf.resize(len, 0);
        }
        Ok(f(&mut buf[..len]))
    })
}

/// Whether the optimized hybrid kernels may take their AVX2 paths: the int8 path
/// detection, so `QIsa::forced` pins them in tests too.
pub(crate) fn avx2_detected() -> bool {
    use crate::optimized::qgemm::QIsa;
    QIsa::detect() != QIsa::Portable
}

fn clamp_of(a: Activation) -> (f32, f32) {
    match a {
        Activation::Relu => (0.0, f32::INFINITY),
        Activation::Relu6 => (0.0, 6.0),
        Activation::ReluN1To1 => (-1.0, 1.0),
        _ => (f32::NEG_INFINITY, f32::INFINITY),
    }
}

/// The int8 weights of a hybrid node: constant, symmetric (zero points 0), with one
/// scale per output channel along `axis` or one for the tensor.
struct Weights {
    data: Vec<i8>,
    scales: Vec<f32>,
    row_sums: Vec<i32>,
}

fn weights(
    w: &TensorMeta<'_>,
    channels: usize,
    axis: usize,
    cols: usize,
) -> Result<Weights, KernelError> {
    let bytes = w
        .data
        .ok_or_else(|| KernelError::unsupported("hybrid weights must be constant"))?;
    let q = w
        .quant
        .ok_or_else(|| KernelError::unsupported("int8 weights without quantization"))?;
    if q.zero_point.iter().any(|&z| z != 0) {
        return Err(KernelError::unsupported(
            "hybrid weights with a nonzero zero point",
        ));
    }
    let scales = match q.scale.len() {
        1 => vec![q.scale[0]],
        n if n == channels && q.axis == axis => q.scale.clone(),
        n => {
            return Err(KernelError::unsupported(format!(
                "{n} weight scales for {channels} channels on axis {}",
                q.axis
            )));
        }
    };
    let data: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
    if data.len() != channels * cols {
        return Err(KernelError::shape("weights do not match their shape"));
    }
    let mut sums = vec![0; channels];
    row_sums(&data, cols, &mut sums);
    Ok(Weights {
        data,
        scales,
        row_sums: sums,
    })
}

fn float_bias(b: Option<TensorMeta<'_>>, n: usize) -> Result<Option<Vec<f32>>, KernelError> {
    let Some(b) = b else { return Ok(None) };
    if b.dtype != DType::F32 {
        return Err(KernelError::unsupported(format!(
            "hybrid bias of type {}",
            b.dtype
        )));
    }
    let bytes = b
        .data
        .ok_or_else(|| KernelError::unsupported("hybrid bias must be constant"))?;
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if v.len() != n {
        return Err(KernelError::shape(format!(
            "bias of {} for {n} channels",
            v.len()
        )));
    }
    Ok(Some(v))
}

fn out_f32<'a, 'b>(outputs: &'a mut [TensorViewMut<'b>]) -> Result<&'a mut [f32], KernelError> {
    outputs
        .first_mut()
        .ok_or_else(|| KernelError::invalid("missing output"))?
        .f32s_mut()
}

// --- FULLY_CONNECTED --------------------------------------------------------------------

struct Fc {
    w: Weights,
    cols: usize,
    bias: Option<Vec<f32>>,
    asymmetric: bool,
    clamp: (f32, f32),
    /// The AVX2 dot product (optimized registry on an AVX2 CPU).
    avx2: bool,
    name: &'static str,
}

/// FULLY_CONNECTED with float input and int8 weights. `asymmetric`: the node's
/// `asymmetric_quantize_inputs` option.
pub fn prepare_fully_connected(
    ctx: &PrepareCtx<'_>,
    asymmetric: bool,
    optimized: bool,
) -> Result<PreparedKernel, KernelError> {
    let x = ctx.input(0)?;
    let w = ctx.input(1)?;
    let (activation, keep_num_dims) = match &ctx.node.options {
        OpOptions::FullyConnected {
            activation,
            keep_num_dims,
            ..
        } => (*activation, *keep_num_dims),
        _ => (Activation::None, false),
    };
    let [units, cols] = *w.shape else {
        return Err(KernelError::shape("FULLY_CONNECTED weights must be 2-D"));
    };
    let total: usize = x.shape.iter().product();
    if cols == 0 || !total.is_multiple_of(cols) {
        return Err(KernelError::shape(
            "input size is not a multiple of the weights' depth",
        ));
    }
    let batch = total / cols;
    let out_shape = if keep_num_dims {
        let mut s = x.shape.to_vec();
        if let Some(l) = s.last_mut() {
            *l = units;
        }
        s
    } else {
        vec![batch, units]
    };
    Ok(PreparedKernel::new(
        vec![out_shape],
        Fc {
            w: weights(&w, units, 0, cols)?,
            cols,
            bias: float_bias(ctx.optional_input(2), units)?,
            asymmetric,
            clamp: clamp_of(activation),
            avx2: optimized && avx2_detected(),
            name: if optimized && avx2_detected() {
                "fully_connected/hybrid/avx2"
            } else {
                "fully_connected/hybrid"
            },
        },
    ))
}

impl OpKernel for Fc {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.f32s()?;
        let out = out_f32(outputs)?;
        let batch = x.len() / self.cols.max(1);
        let rows = self.w.row_sums.len();
        if out.len() != batch * rows {
            return Err(KernelError::shape("output size does not match"));
        }
        let hw = HybridWeights {
            data: &self.w.data,
            rows,
            cols: self.cols,
            scales: &self.w.scales,
            row_sums: &self.w.row_sums,
        };
        with_scratch(self.cols, |q| {
            fully_connected(
                x,
                batch,
                &hw,
                self.bias.as_deref(),
                self.asymmetric,
                q,
                out,
                self.avx2,
            )
        })?;
        for v in out.iter_mut() {
            *v = v.max(self.clamp.0).min(self.clamp.1);
        }
        Ok(())
    }
    fn name(&self) -> &str {
        self.name
    }
}

// --- CONV_2D / DEPTHWISE_CONV_2D ----------------------------------------------------------

fn out_size(
    padding: Padding,
    input: usize,
    k: usize,
    stride: usize,
    dil: usize,
) -> Result<(usize, usize), KernelError> {
    let eff = (k - 1) * dil + 1;
    let stride = stride.max(1);
    let out = match padding {
        Padding::Same => input.div_ceil(stride),
        _ => {
            if input < eff {
                return Err(KernelError::shape("filter larger than the input"));
            }
            (input - eff) / stride + 1
        }
    };
    let needed = (out.saturating_sub(1)) * stride + eff;
    let pad = needed.saturating_sub(input) / 2;
    Ok((out, pad))
}

struct Conv {
    g: Geom,
    batch: usize,
    depthwise: Option<usize>,
    w: Weights,
    bias: Option<Vec<f32>>,
    clamp: (f32, f32),
    /// The optimized kernel and the per-channel scales it reads (a per-tensor scale
    /// repeated), when the optimized registry prepared this node.
    fast: Option<(Fast, Vec<f32>)>,
    name: String,
}

enum Fast {
    Conv(HybridConv),
    Depthwise(HybridDepthwise),
}

/// CONV_2D (OHWI weights) or DEPTHWISE_CONV_2D (1HWC) with float input, int8 weights;
/// `optimized` picks the packed-GEMM and vectorised kernels over the plain loops.
pub fn prepare_conv(
    ctx: &PrepareCtx<'_>,
    depthwise: bool,
    optimized: bool,
) -> Result<PreparedKernel, KernelError> {
    let x = ctx.input(0)?;
    let w = ctx.input(1)?;
    let OpOptions::Conv(o) = &ctx.node.options else {
        return Err(KernelError::invalid("convolution without its options"));
    };
    let [batch, in_h, in_w, in_c] = *x.shape else {
        return Err(KernelError::shape("convolution input must be NHWC"));
    };
    let [wo, k_h, k_w, wc] = *w.shape else {
        return Err(KernelError::shape("convolution weights must be 4-D"));
    };
    let (out_c, multiplier) = if depthwise {
        let m = o.depth_multiplier.max(1);
        if wo != 1 || wc != in_c * m {
            return Err(KernelError::shape(
                "depthwise weights do not match the input",
            ));
        }
        (wc, Some(m))
    } else {
        if wc != in_c {
            return Err(KernelError::unsupported("grouped convolution"));
        }
        (wo, None)
    };
    let (out_h, pad_t) = out_size(o.padding, in_h, k_h, o.stride_h, o.dilation_h.max(1))?;
    let (out_w, pad_l) = out_size(o.padding, in_w, k_w, o.stride_w, o.dilation_w.max(1))?;
    let g = Geom {
        in_h,
        in_w,
        in_c,
        out_h,
        out_w,
        k_h,
        k_w,
        stride: (o.stride_h.max(1), o.stride_w.max(1)),
        dilation: (o.dilation_h.max(1), o.dilation_w.max(1)),
        pad: (pad_t, pad_l),
    };
    // LiteRT's per-tensor hybrid convolution quantizes symmetrically and scales
    // differently; converters emit per-channel scales, which is what this implements.
    if w.quant.is_some_and(|q| q.scale.len() == 1) && out_c > 1 {
        return Err(KernelError::unsupported(
            "hybrid convolution with a per-tensor filter scale",
        ));
    }
    // Depthwise weights are 1HWC: channels on the last axis, k_h × k_w taps each.
    let wts = if depthwise {
        weights(&w, out_c, 3, k_h * k_w)?
    } else {
        weights(&w, out_c, 0, k_h * k_w * in_c)?
    };
    let op = if depthwise {
        "depthwise_conv2d"
    } else {
        "conv2d"
    };
    let mut name = format!("{op}/hybrid");
    let mut fast = None;
    if optimized && multiplier.is_none_or(|m| m == 1) {
        let cg = ConvGeom {
            batch: 1,
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            k_h,
            k_w,
            stride_h: g.stride.0,
            stride_w: g.stride.1,
            dil_h: g.dilation.0,
            dil_w: g.dilation.1,
            pad_top: pad_t,
            pad_left: pad_l,
        };
        let kernel = if depthwise {
            Fast::Depthwise(HybridDepthwise::new(cg, &wts.data)?)
        } else {
            Fast::Conv(HybridConv::new(cg, &wts.data, &wts.row_sums)?)
        };
        let isa = match &kernel {
            Fast::Conv(k) => k.isa,
            Fast::Depthwise(k) => k.isa,
        };
        name = format!("{op}/hybrid/{}", isa.name());
        let scales = (0..out_c)
            .map(|c| wts.scales.get(c).copied().unwrap_or(wts.scales[0]))
            .collect();
        fast = Some((kernel, scales));
    }
    Ok(PreparedKernel::new(
        vec![vec![batch, out_h, out_w, out_c]],
        Conv {
            g,
            batch,
            depthwise: multiplier,
            w: wts,
            bias: float_bias(ctx.optional_input(2), out_c)?,
            clamp: clamp_of(o.activation),
            fast,
            name,
        },
    ))
}

impl Conv {
    /// Output channels.
    fn bias_len_or_channels(&self) -> usize {
        match self.depthwise {
            Some(m) => self.g.in_c * m,
            None => self.w.row_sums.len(),
        }
    }
}

impl OpKernel for Conv {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.f32s()?;
        let out = out_f32(outputs)?;
        let g = &self.g;
        let img = g.in_h * g.in_w * g.in_c;
        let expected_out = self.batch * g.out_h * g.out_w * self.bias_len_or_channels();
        if x.len() != self.batch * img || out.len() != expected_out {
            return Err(KernelError::shape("input or output size does not match"));
        }
        if let Some((fast, scales)) = &self.fast {
            let per_out = expected_out / self.batch.max(1);
            return with_scratch(img, |q| {
                for b in 0..self.batch {
                    let image = &x[b * img..(b + 1) * img];
                    let isa = match fast {
                        Fast::Conv(k) => k.isa,
                        Fast::Depthwise(k) => k.isa,
                    };
                    let avx2 = isa != crate::optimized::qgemm::QIsa::Portable;
                    let (sf, zp) = quantize_row_asymmetric_with(image, q, avx2);
                    let o = &mut out[b * per_out..(b + 1) * per_out];
                    let bias = self.bias.as_deref();
                    match fast {
                        Fast::Conv(k) => k.run(q, zp, sf, scales, bias, self.clamp, o)?,
                        Fast::Depthwise(k) => k.run(q, zp, sf, scales, bias, self.clamp, o)?,
                    }
                }
                Ok(())
            })?;
        }
        with_scratch(img, |q| match self.depthwise {
            Some(m) => depthwise(
                x,
                self.batch,
                g,
                m,
                &self.w.data,
                &self.w.scales,
                self.bias.as_deref(),
                self.clamp,
                q,
                out,
            ),
            None => {
                let rows = self.w.row_sums.len();
                let hw = HybridWeights {
                    data: &self.w.data,
                    rows,
                    cols: g.k_h * g.k_w * g.in_c,
                    scales: &self.w.scales,
                    row_sums: &self.w.row_sums,
                };
                conv2d(
                    x,
                    self.batch,
                    g,
                    &hw,
                    self.bias.as_deref(),
                    self.clamp,
                    q,
                    out,
                )
            }
        })
    }
    fn name(&self) -> &str {
        &self.name
    }
}

// --- BATCH_MATMUL -------------------------------------------------------------------------

/// Hybrid BATCH_MATMUL: float left-hand side, a constant 2-D int8 right-hand side
/// (`k` × `n`, one scale) shared by every batch.
struct BatchMatmul {
    rhs: Vec<i8>,
    scale: f32,
    k: usize,
    n: usize,
}

/// Each left-hand row is quantized symmetrically (LiteRT's default; the node's
/// `asymmetric_quantize_inputs` is not decoded yet, so such nodes would differ) and
/// `float(dot) * (row_scale * rhs_scale)` is the output, as LiteRT computes it.
pub fn prepare_batch_matmul(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(2, 2, 1)?;
    let x = ctx.input(0)?;
    let w = ctx.input(1)?;
    if let OpOptions::BatchMatmul { adj_x, adj_y, .. } = ctx.node.options
        && (adj_x || adj_y)
    {
        return Err(KernelError::unsupported(
            "hybrid BATCH_MATMUL with adjoint inputs",
        ));
    }
    let [k, n] = *w.shape else {
        return Err(KernelError::unsupported(
            "hybrid BATCH_MATMUL with a right-hand side of rank other than 2",
        ));
    };
    let Some((&kx, rows)) = x.shape.split_last() else {
        return Err(KernelError::shape("BATCH_MATMUL of a scalar"));
    };
    if kx != k || rows.is_empty() {
        return Err(KernelError::shape(format!(
            "left-hand side {:?} does not match right-hand side {:?}",
            x.shape, w.shape
        )));
    }
    let wt = weights(&w, 1, 0, k * n)?;
    let mut shape = rows.to_vec();
    shape.push(n);
    Ok(PreparedKernel::new(
        vec![shape],
        BatchMatmul {
            rhs: wt.data,
            scale: wt.scales[0],
            k,
            n,
        },
    ))
}

impl OpKernel for BatchMatmul {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.f32s()?;
        let out = out_f32(outputs)?;
        let rows = x.len() / self.k.max(1);
        if x.len() != rows * self.k || out.len() != rows * self.n {
            return Err(KernelError::shape(
                "tensor sizes differ from the prepared shapes",
            ));
        }
        with_scratch(self.k, |q| {
            for r in 0..rows {
                let sf = quantize_row_symmetric(&x[r * self.k..(r + 1) * self.k], q);
                let s = sf * self.scale;
                for j in 0..self.n {
                    let dot: i32 = (0..self.k)
                        .map(|i| i32::from(q[i]) * i32::from(self.rhs[i * self.n + j]))
                        .sum();
                    out[r * self.n + j] = dot as f32 * s;
                }
            }
        })
    }

    fn name(&self) -> &str {
        "batch_matmul/hybrid"
    }
}

#[cfg(test)]
mod tests {
    use super::dot_i8;
    use crate::optimized::qgemm::QIsa;

    /// Both dot-product paths equal the plain sum at every length around the 16- and
    /// 32-lane steps, with extreme values (which a pairwise madd must not overflow).
    #[test]
    fn dot_products_match_the_plain_sum_on_every_path() {
        let mut seed = 5u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8 as i8
        };
        for n in (0..70).chain([127, 128, 1000, 1280]) {
            for extreme in [false, true] {
                let (a, b): (Vec<i8>, Vec<i8>) = if extreme {
                    (vec![-128; n], vec![-128; n])
                } else {
                    (
                        (0..n).map(|_| next()).collect(),
                        (0..n).map(|_| next()).collect(),
                    )
                };
                let want = a.iter().zip(&b).fold(0i32, |s, (&x, &y)| {
                    s.wrapping_add(i32::from(x) * i32::from(y))
                });
                for isa in QIsa::available() {
                    let avx2 = isa != QIsa::Portable;
                    assert_eq!(dot_i8(&a, &b, avx2), want, "n {n} {isa:?}");
                }
            }
        }
    }
}
