//! DEPTHWISE_CONV_2D: each input channel convolved with its own `depth_multiplier`
//! filters (filter `[1, KH, KW, IC × M]`), float32, int8 (per-channel scales along the
//! filter's last axis) and uint8, with strides, dilations, SAME/VALID padding and a fused
//! activation.
//!
//! The depth multiplier comes from the shapes (`filter channels / input channels`), as
//! LiteRT computes it, not from the options field, which converters do not always fill.

use switchyard_interpreter::{
    DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
    kernel::input,
};

use super::conv2d::{
    ConvGeometry, QElem, QuantOutput, Rounding, bias_view, check_bias, check_dtypes, conv_options,
    expect_len, first_output, float_clamp, quant_output,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::conv_output_size;
use crate::util::expect_rank;
use switchyard_interpreter::BuiltinOp;
use switchyard_interpreter::NodeSupportCtx;
use switchyard_interpreter::OpOptions;

/// DEPTHWISE_CONV_2D.
pub const DESCRIPTORS: &[OpDescriptor] = &[OpDescriptor::new(BuiltinOp::DepthwiseConv2d, prepare)
    .optimized(prepare_optimized)
    .gpu(gpu)
    .dsp(support::dsp_quantized)
    .npu(support::npu_int8)
    .work(crate::work::depthwise)];

/// GPU: float32 NHWC input and [1, h, w, channels] filter, a multiplier that agrees with
/// the shapes, float32 bias, a clamp as fused activation.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 2, 3, 1)?;
    let OpOptions::Conv(o) = &ctx.node.options else {
        return Err("DEPTHWISE_CONV_2D without convolution options".into());
    };
    let x = support::input(ctx, 0)?;
    let w = support::input(ctx, 1)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&w, "input 1")?;
    support::gpu_f32(&out, "output 0")?;
    let (&[n, ih, iw, ic], &[1, kh, kw, oc]) = (x.shape, w.shape) else {
        return Err(format!(
            "input {:?} must be rank 4 and filter {:?} [1, h, w, channels]",
            x.shape, w.shape
        ));
    };
    // The multiplier follows from the shapes (some converters leave the option at 0).
    if ic == 0 || oc % ic != 0 {
        return Err(format!(
            "{oc} output channels are not a multiple of {ic} input channels"
        ));
    }
    let multiplier = oc / ic;
    if o.depth_multiplier != 0 && o.depth_multiplier != multiplier {
        return Err(format!(
            "depth_multiplier {} disagrees with the filter ({multiplier})",
            o.depth_multiplier
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

/// What prepare decided for one DEPTHWISE_CONV_2D node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DepthwiseParams {
    pub geometry: ConvGeometry,
    pub depth_multiplier: usize,
    pub dtype: DType,
    pub float_min: f32,
    pub float_max: f32,
    pub quant: Option<QuantOutput>,
    pub has_bias: bool,
}

impl DepthwiseParams {
    fn filter_len(&self) -> usize {
        let g = &self.geometry;
        g.filter_h * g.filter_w * g.out_c
    }
}

/// Validates a DEPTHWISE_CONV_2D node and fixes its parameters.
pub(crate) fn prepare_params(ctx: &PrepareCtx<'_>) -> Result<DepthwiseParams, KernelError> {
    ctx.expect_arity(2, 3, 1)?;
    let input = ctx.input(0)?;
    let filter = ctx.input(1)?;
    let bias = ctx.optional_input(2);
    let output = ctx.output(0)?;
    let opts = conv_options(ctx)?;
    let (float_min, float_max) = float_clamp(opts.activation)?;
    expect_rank("input", input.shape, 4)?;
    expect_rank("filter", filter.shape, 4)?;
    if filter.shape[0] != 1 {
        return Err(KernelError::shape(format!(
            "depthwise filter must have shape [1, KH, KW, C], has {:?}",
            filter.shape
        )));
    }
    let (fh, fw, out_c) = (filter.shape[1], filter.shape[2], filter.shape[3]);
    let in_c = input.shape[3];
    if in_c == 0 || out_c % in_c != 0 {
        return Err(KernelError::shape(format!(
            "filter has {out_c} channels, not a multiple of the input's {in_c}"
        )));
    }
    let depth_multiplier = out_c / in_c;
    let dtype = check_dtypes(&input, &filter, bias.as_ref(), &output)?;
    check_bias(bias.as_ref(), out_c)?;
    let geometry = ConvGeometry::new(input.shape, fh, fw, out_c, &opts)?;
    let quant = match dtype {
        DType::F32 => None,
        _ => {
            let mut q = quant_output(
                &input,
                &filter,
                &output,
                out_c,
                3,
                dtype == DType::U8,
                opts.activation,
            )?;
            if dtype == DType::I8 {
                q.rounding = Rounding::HalfUpBelow(out_c / 8 * 8);
            }
            Some(q)
        }
    };
    Ok(DepthwiseParams {
        geometry,
        depth_multiplier,
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
    Ok(PreparedKernel::new(
        vec![shape],
        DepthwiseReference { params },
    ))
}

pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(hybrid) = super::hybrid::route_optimized(ctx)? {
        return Ok(hybrid);
    }
    let params = prepare_params(ctx)?;
    let shape = params.geometry.output_shape();
    // Optimized: float32 with constant filters and multiplier 1 runs the
    // channel-vectorised kernel (optimized/depthwise.rs); the rest the reference.
    if let Some(kernel) = crate::optimized::kernels::try_depthwise(ctx, &shape)? {
        return Ok(PreparedKernel {
            output_shapes: vec![shape],
            kernel,
        });
    }
    if let Some(kernel) = int8_kernel(ctx, &params)? {
        return Ok(PreparedKernel {
            output_shapes: vec![shape],
            kernel,
        });
    }
    Ok(PreparedKernel::new(
        vec![shape],
        DepthwiseReference { params },
    ))
}

/// int8, multiplier 1, constant filter and bias: the channel-vectorised int8 kernel
/// (optimized/qdepthwise.rs), bit-exact with the reference.
fn int8_kernel(
    ctx: &PrepareCtx<'_>,
    p: &DepthwiseParams,
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let Some(q) = &p.quant else { return Ok(None) };
    let g = &p.geometry;
    let half_up_below = match q.rounding {
        Rounding::HalfUpBelow(n) => n,
        _ => return Ok(None),
    };
    if p.dtype != DType::I8 || p.depth_multiplier != 1 || q.filter_offset != 0 || g.in_c != g.out_c
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
    let isa = crate::optimized::qgemm::QIsa::detect();
    let dw = crate::optimized::qdepthwise::QDepthwise::new(
        geom,
        bytemuck::cast_slice(w),
        bias.as_deref(),
        q.input_offset,
        &q.multipliers,
        &q.shifts,
        half_up_below,
        q.output_offset,
        q.act_min,
        q.act_max,
        isa,
    )?;
    Ok(Some(Box::new(
        crate::optimized::qkernels::QDepthwiseKernel {
            dw,
            pool: crate::optimized::shared_pool(ctx.threads),
            name: format!("depthwise/i8/{}", isa.name()),
        },
    )))
}

/// Plain loops over the output, the oracle of the optimized kernels.
pub(crate) struct DepthwiseReference {
    pub params: DepthwiseParams,
}

/// Float32 reference depthwise convolution, summing in f64 (see `conv2d::conv_f32`).
pub(crate) fn depthwise_f32(
    p: &DepthwiseParams,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let g = &p.geometry;
    let dm = p.depth_multiplier;
    for b in 0..g.batches {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let out_base = ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
                for ic in 0..g.in_c {
                    for m in 0..dm {
                        let oc = ic * dm + m;
                        let mut acc = 0.0f64;
                        for ky in 0..g.filter_h {
                            let Some(iy) = g.in_y(oy, ky) else { continue };
                            for kx in 0..g.filter_w {
                                let Some(ix) = g.in_x(ox, kx) else { continue };
                                let x = input[((b * g.in_h + iy) * g.in_w + ix) * g.in_c + ic];
                                let w = filter[(ky * g.filter_w + kx) * g.out_c + oc];
                                acc += x as f64 * w as f64;
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
}

/// int8/uint8 reference depthwise convolution (TFLite's DepthwiseConvPerChannel).
pub(crate) fn depthwise_quant<T: QElem>(
    p: &DepthwiseParams,
    q: &QuantOutput,
    input: &[T],
    filter: &[T],
    bias: Option<&[i32]>,
    out: &mut [T],
) {
    let g = &p.geometry;
    let dm = p.depth_multiplier;
    for b in 0..g.batches {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let out_base = ((b * g.out_h + oy) * g.out_w + ox) * g.out_c;
                for ic in 0..g.in_c {
                    for m in 0..dm {
                        let oc = ic * dm + m;
                        let mut acc = 0i32;
                        for ky in 0..g.filter_h {
                            let Some(iy) = g.in_y(oy, ky) else { continue };
                            for kx in 0..g.filter_w {
                                let Some(ix) = g.in_x(ox, kx) else { continue };
                                let x = input[((b * g.in_h + iy) * g.in_w + ix) * g.in_c + ic];
                                let w = filter[(ky * g.filter_w + kx) * g.out_c + oc];
                                let prod = (w.widen() + q.filter_offset)
                                    .wrapping_mul(x.widen() + q.input_offset);
                                acc = acc.wrapping_add(prod);
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
}

impl OpKernel for DepthwiseReference {
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
                depthwise_f32(p, x.f32s()?, w.f32s()?, bias, out.f32s_mut()?);
            }
            (DType::I8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                depthwise_quant(p, q, x.i8s()?, w.i8s()?, bias, out.i8s_mut()?);
            }
            (DType::U8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                depthwise_quant(p, q, x.u8s()?, w.u8s()?, bias, out.u8s_mut()?);
            }
            (other, _) => return Err(KernelError::dtype("prepared depthwise dtype", other)),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.params.dtype {
            DType::F32 => "depthwise_conv2d/f32/reference",
            DType::I8 => "depthwise_conv2d/i8/reference",
            _ => "depthwise_conv2d/u8/reference",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::ops::ConvOptions;
    use switchyard_interpreter::{Activation, BuiltinOp, OpKind, OpOptions, Padding, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::super::conv2d::testing::*;
    use super::*;

    #[derive(Clone, Debug)]
    struct Case {
        dtype: DType,
        input: [usize; 4],
        kernel: (usize, usize),
        depth_multiplier: usize,
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
        act: Activation,
        bias: bool,
        per_channel: bool,
        ties: bool,
    }

    fn base(dtype: DType) -> Case {
        Case {
            dtype,
            input: [1, 7, 6, 4],
            kernel: (3, 3),
            depth_multiplier: 1,
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
            depth_multiplier: c.depth_multiplier,
            activation: c.act,
        }
    }

    fn build(c: &Case, zero_bias: bool) -> Vec<u8> {
        let opts = options(c);
        let out_c = c.input[3] * c.depth_multiplier;
        let geo = ConvGeometry::new(&c.input, c.kernel.0, c.kernel.1, out_c, &opts)
            .expect("test case geometry");
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.input);
        let y = sg.tensor("y", c.dtype, &geo.output_shape());
        let base_scale = 0.01;
        let (mut in_scale, mut out_scale) = scales(c.act, base_scale, c.kernel.0 * c.kernel.1);
        if c.ties {
            (in_scale, out_scale) = (TIE_IN_SCALE, TIE_OUT_SCALE);
        }
        if c.dtype != DType::F32 {
            sg.set_quant(x, Quant::per_tensor(in_scale, zp(c.dtype, -3)));
            sg.set_quant(y, Quant::per_tensor(out_scale, zp(c.dtype, 5)));
        }
        let scales = if c.ties {
            tie_filter_scales(out_c, c.per_channel)
        } else if c.per_channel {
            channel_scales(out_c, base_scale)
        } else {
            vec![base_scale]
        };
        let filter_zp = if c.dtype == DType::U8 { 130 } else { 0 };
        let w = filter_in(
            sg,
            c.dtype,
            &[1, c.kernel.0, c.kernel.1, out_c],
            7,
            &scales,
            filter_zp,
            3,
            c.ties.then_some((-3, 3)),
        );
        let span = if c.ties { 10.0 } else { 3000.0 };
        let b = if c.bias {
            Some(bias(sg, c.dtype, out_c, 9, in_scale, &scales, span))
        } else if zero_bias {
            Some(zero(sg, c.dtype, out_c, in_scale, &scales))
        } else {
            None
        };
        let inputs: Vec<Option<usize>> =
            [Some(x), Some(w)].into_iter().chain(b.map(Some)).collect();
        let version = if c.dtype == DType::I8 { 3 } else { 2 };
        sg.op_versioned(
            OpKind::Builtin(BuiltinOp::DepthwiseConv2d),
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
        let name = format!("{c:?}");
        let x = if c.ties {
            let z = zp(c.dtype, -3) as f32;
            random_tensor(c.dtype, &c.input, 3, z - 3.0, z + 3.0)
        } else {
            random(c.dtype, &c.input, 3)
        };
        let model = build(c, false);
        if c.dtype != DType::F32 {
            assert_informative(&name, &model, std::slice::from_ref(&x));
        }
        if c.bias {
            assert_matches_litert(&name, &model, &[x], &resolvers(), tol(c.dtype));
        } else {
            // LiteRT refuses a bias-free node; its zero-bias twin computes the same.
            assert_matches_litert_twin(&name, &model, &build(c, true), &[x]);
        }
    }

    fn variants(dtype: DType) -> Vec<Case> {
        let b = base(dtype);
        vec![
            b.clone(),
            Case {
                stride: (2, 2),
                act: Activation::Relu,
                ..b.clone()
            },
            Case {
                depth_multiplier: 2,
                padding: Padding::Valid,
                act: Activation::Relu6,
                ..b.clone()
            },
            Case {
                dilation: (2, 2),
                act: Activation::ReluN1To1,
                ..b.clone()
            },
            Case {
                input: [2, 9, 1, 6],
                kernel: (5, 1),
                stride: (2, 1),
                padding: Padding::Valid,
                bias: false,
                ..b.clone()
            },
            Case {
                input: [1, 6, 5, 3],
                kernel: (2, 3),
                depth_multiplier: 3,
                dilation: (1, 2),
                stride: (1, 2),
                ..b
            },
        ]
    }

    #[test]
    fn optimized_float_matches_reference() {
        let b = base(DType::F32);
        let mut cases: Vec<Case> = variants(DType::F32)
            .into_iter()
            .filter(|c| c.depth_multiplier == 1)
            .collect();
        cases.extend([
            // Channel counts that exercise the 32-, 8- and 1-wide loops.
            Case {
                input: [1, 13, 11, 45],
                stride: (2, 2),
                act: Activation::Relu6,
                ..b.clone()
            },
            Case {
                input: [1, 9, 10, 72],
                kernel: (5, 5),
                ..b
            },
        ]);
        for c in cases {
            let x = random(c.dtype, &c.input, 3);
            crate::optimized::kernels::testing::assert_optimized_matches_reference(
                &format!("{c:?}"),
                &build(&c, false),
                &[x],
                "depthwise/f32/",
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

    /// Many exact half-way accumulators: LiteRT's int8 depthwise kernel rounds them
    /// upward, its uint8 one away from zero.
    #[test]
    fn quantized_ties_match_litert() {
        for dtype in [DType::I8, DType::U8] {
            for c in variants(dtype).into_iter().take(3) {
                check(&Case { ties: true, ..c });
            }
            // The wake-word model's shapes (K×1 filters over one column), with channel
            // counts that exercise LiteRT's groups of 8 and its scalar tail.
            for channels in [32, 12, 20] {
                check(&Case {
                    input: [1, 12, 1, channels],
                    kernel: (5, 1),
                    padding: Padding::Valid,
                    ties: true,
                    per_channel: dtype == DType::I8,
                    ..base(dtype)
                });
            }
        }
    }

    #[test]
    fn uint8_matches_litert() {
        for c in variants(DType::U8) {
            check(&c);
        }
    }

    /// Every DEPTHWISE_CONV_2D of the int8 wake-word model and of the selfie
    /// segmenter, cut out with their real weights.
    #[test]
    fn real_model_nodes_match_litert() {
        assert_eq!(
            real_nodes_match_litert("mww_okay_nabu.tflite", BuiltinOp::DepthwiseConv2d),
            8
        );
        assert_eq!(
            real_nodes_match_litert("mp_selfie_segmentation.tflite", BuiltinOp::DepthwiseConv2d),
            11
        );
    }

    /// A depthwise node whose filter has shape `filter` over a `[1, 5, 5, 4]` input.
    fn float_with_filter(filter: &[usize]) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 5, 5, 4]);
        let y = sg.tensor("y", DType::F32, &[1, 5, 5, 8]);
        let n: usize = filter.iter().product();
        let w = sg.constant_f32("w", filter, &vec![0.5; n]);
        sg.op(
            OpKind::Builtin(BuiltinOp::DepthwiseConv2d),
            &[Some(x), Some(w)],
            &[y],
            OpOptions::Conv(options(&base(DType::F32))),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn invalid_nodes_are_prepare_errors() {
        let e = prepare_error(&float_with_filter(&[1, 3, 3, 6]));
        assert!(e.contains("not a multiple"), "{e}");
        let e = prepare_error(&float_with_filter(&[2, 3, 3, 8]));
        assert!(e.contains("[1, KH, KW, C]"), "{e}");
        let e = prepare_error(&float_with_filter(&[3, 3, 8]));
        assert!(e.contains("rank 4"), "{e}");
        // Per-channel scales along the wrong axis.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::I8, &[1, 4, 4, 1]);
        let y = sg.tensor("y", DType::I8, &[1, 4, 4, 1]);
        sg.set_quant(x, Quant::per_tensor(0.1, 0));
        sg.set_quant(y, Quant::per_tensor(0.1, 0));
        let w = sg.constant("w", DType::I8, &[1, 3, 1, 1], vec![1; 3]);
        sg.set_quant(
            w,
            Quant {
                scale: vec![0.1, 0.2, 0.3],
                zero_point: vec![0; 3],
                axis: 1,
            },
        );
        sg.op(
            OpKind::Builtin(BuiltinOp::DepthwiseConv2d),
            &[Some(x), Some(w)],
            &[y],
            OpOptions::Conv(options(&base(DType::I8))),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let e = prepare_error(&mb.finish());
        assert!(e.contains("scales"), "{e}");
    }
}
