//! FULLY_CONNECTED: `y = x · Wᵀ + b` over the rows of an input of any rank (weights
//! `[units, depth]`), float32, int8 (per-tensor or per-channel weights) and uint8, with a
//! fused activation and `keep_num_dims`.
//!
//! Rows are the input's elements taken `depth` at a time, as LiteRT does: an input of
//! shape `[2, 3, 8]` with depth 8 is six rows, and the output is `[6, units]` unless
//! `keep_num_dims` keeps `[2, 3, units]`.

use switchyard_interpreter::{
    DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
    kernel::input,
};

use super::conv2d::{
    QElem, QuantOutput, Rounding, bias_view, check_bias, check_dtypes, expect_len, first_output,
    float_clamp, quant_output,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::expect_rank;
use switchyard_interpreter::BuiltinOp;
use switchyard_interpreter::NodeSupportCtx;

/// FULLY_CONNECTED.
pub const DESCRIPTORS: &[OpDescriptor] = &[OpDescriptor::new(BuiltinOp::FullyConnected, prepare)
    .optimized(prepare_optimized)
    .gpu(gpu)
    .dsp(support::dsp_quantized)
    .npu(support::npu_int8)
    .work(crate::work::fully_connected)];

/// GPU: float32, [units, depth] weights in the default format, float32 bias, a clamp as
/// fused activation.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 2, 3, 1)?;
    let OpOptions::FullyConnected {
        activation,
        weights_format,
        ..
    } = &ctx.node.options
    else {
        return Err("FULLY_CONNECTED without its options".into());
    };
    if *weights_format != 0 {
        return Err(format!("shuffled weights format {weights_format}"));
    }
    let x = support::input(ctx, 0)?;
    let w = support::input(ctx, 1)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&w, "input 1")?;
    support::gpu_f32(&out, "output 0")?;
    let &[units, depth] = w.shape else {
        return Err(format!("weights {:?} must be [units, depth]", w.shape));
    };
    if depth == 0 || x.element_count() % depth != 0 {
        return Err(format!(
            "input {:?} is not a whole number of rows of {depth}",
            x.shape
        ));
    }
    let rows = x.element_count() / depth;
    if out.element_count() != rows * units {
        return Err(format!(
            "output {:?} should hold {rows} x {units} values",
            out.shape
        ));
    }
    if let Some(b) = ctx.inputs.get(2).copied().flatten() {
        support::gpu_f32(&b, "bias")?;
        if b.element_count() != units {
            return Err(format!(
                "bias has {} values for {units} units",
                b.element_count()
            ));
        }
    }
    support::gpu_activation(*activation)?;
    support::gpu_count(out.shape)?;
    support::gpu_u32(depth, "depth")?;
    support::gpu_u32(units, "units")
}

/// What prepare decided for one FULLY_CONNECTED node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FullyConnectedParams {
    pub rows: usize,
    pub depth: usize,
    pub units: usize,
    pub output_shape: Vec<usize>,
    pub dtype: DType,
    pub float_min: f32,
    pub float_max: f32,
    pub quant: Option<QuantOutput>,
    pub has_bias: bool,
}

/// Validates a FULLY_CONNECTED node and fixes its parameters.
pub(crate) fn prepare_params(ctx: &PrepareCtx<'_>) -> Result<FullyConnectedParams, KernelError> {
    ctx.expect_arity(2, 3, 1)?;
    let input = ctx.input(0)?;
    let weights = ctx.input(1)?;
    let bias = ctx.optional_input(2);
    let output = ctx.output(0)?;
    let (activation, keep_num_dims, weights_format) = match &ctx.node.options {
        OpOptions::FullyConnected {
            activation,
            keep_num_dims,
            weights_format,
            ..
        } => (*activation, *keep_num_dims, *weights_format),
        OpOptions::None => (Default::default(), false, 0),
        _ => {
            return Err(KernelError::invalid(
                "FULLY_CONNECTED node with foreign options",
            ));
        }
    };
    if weights_format != 0 {
        return Err(KernelError::unsupported(format!(
            "shuffled weights format {weights_format}"
        )));
    }
    let (float_min, float_max) = float_clamp(activation)?;
    expect_rank("weights", weights.shape, 2)?;
    let (units, depth) = (weights.shape[0], weights.shape[1]);
    if units == 0 {
        return Err(KernelError::shape(format!(
            "weights {:?} have no output units",
            weights.shape
        )));
    }
    let count = input.element_count();
    if depth == 0 || count % depth != 0 {
        return Err(KernelError::shape(format!(
            "input of shape {:?} cannot be split into rows of the weights' depth {depth}",
            input.shape
        )));
    }
    let rows = count / depth;
    let output_shape = if keep_num_dims {
        match input.shape.split_last() {
            Some((&last, lead)) if last == depth => {
                lead.iter().copied().chain([units]).collect::<Vec<_>>()
            }
            _ => {
                return Err(KernelError::shape(format!(
                    "keep_num_dims needs the input's last dimension to be the depth {depth}, \
                     input has shape {:?}",
                    input.shape
                )));
            }
        }
    } else {
        vec![rows, units]
    };
    let dtype = check_dtypes(&input, &weights, bias.as_ref(), &output)?;
    check_bias(bias.as_ref(), units)?;
    let quant = match dtype {
        DType::F32 => None,
        _ => Some(QuantOutput {
            // LiteRT's quantized FULLY_CONNECTED goes through ruy like CONV_2D.
            rounding: Rounding::HalfUp,
            ..quant_output(&input, &weights, &output, units, 0, true, activation)?
        }),
    };
    Ok(FullyConnectedParams {
        rows,
        depth,
        units,
        output_shape,
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
    let shape = params.output_shape.clone();
    Ok(PreparedKernel::new(
        vec![shape],
        FullyConnectedReference { params },
    ))
}

pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(hybrid) = super::hybrid::route_optimized(ctx)? {
        return Ok(hybrid);
    }
    let params = prepare_params(ctx)?;
    let shape = params.output_shape.clone();
    // Optimized: float32 with constant weights runs on the packed GEMM
    // (optimized/gemm.rs); the rest the reference.
    if let Some(kernel) = crate::optimized::kernels::try_fully_connected(ctx, &shape)? {
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
    Ok(PreparedKernel::new(
        vec![shape],
        FullyConnectedReference { params },
    ))
}

/// int8 with constant weights and bias runs the packed int8 GEMM as a 1×1 convolution
/// over `rows` pixels (optimized/qgemm.rs), bit-exact with the reference.
fn int8_gemm(
    ctx: &PrepareCtx<'_>,
    p: &FullyConnectedParams,
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let Some(q) = &p.quant else { return Ok(None) };
    if p.dtype != DType::I8 || q.filter_offset != 0 || q.rounding != Rounding::HalfUp {
        return Ok(None);
    }
    if !matches!(
        &ctx.node.options,
        OpOptions::FullyConnected {
            weights_format: 0,
            ..
        }
    ) {
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
        batch: 1,
        in_h: 1,
        in_w: p.rows,
        in_c: p.depth,
        out_h: 1,
        out_w: p.rows,
        out_c: p.units,
        k_h: 1,
        k_w: 1,
        stride_h: 1,
        stride_w: 1,
        dil_h: 1,
        dil_w: 1,
        pad_top: 0,
        pad_left: 0,
    };
    crate::optimized::qkernels::conv_i8(ctx, geom, bytemuck::cast_slice(w), bias.as_deref(), q)
}

/// Plain loops, the oracle of the optimized kernels.
pub(crate) struct FullyConnectedReference {
    pub params: FullyConnectedParams,
}

/// Float32 reference, summing in f64 (see `conv2d::conv_f32`).
pub(crate) fn fully_connected_f32(
    p: &FullyConnectedParams,
    input: &[f32],
    weights: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    for (row, out_row) in input
        .chunks_exact(p.depth)
        .zip(out.chunks_exact_mut(p.units))
    {
        for (u, o) in out_row.iter_mut().enumerate() {
            let w = &weights[u * p.depth..(u + 1) * p.depth];
            let mut acc: f64 = row.iter().zip(w).map(|(&x, &w)| x as f64 * w as f64).sum();
            if let Some(bias) = bias {
                acc += bias[u] as f64;
            }
            *o = (acc as f32).max(p.float_min).min(p.float_max);
        }
    }
}

pub(crate) fn fully_connected_quant<T: QElem>(
    p: &FullyConnectedParams,
    q: &QuantOutput,
    input: &[T],
    weights: &[T],
    bias: Option<&[i32]>,
    out: &mut [T],
) {
    for (row, out_row) in input
        .chunks_exact(p.depth)
        .zip(out.chunks_exact_mut(p.units))
    {
        for (u, o) in out_row.iter_mut().enumerate() {
            let w = &weights[u * p.depth..(u + 1) * p.depth];
            let mut acc = 0i32;
            for (&x, &w) in row.iter().zip(w) {
                let prod = (w.widen() + q.filter_offset).wrapping_mul(x.widen() + q.input_offset);
                acc = acc.wrapping_add(prod);
            }
            if let Some(bias) = bias {
                acc = acc.wrapping_add(bias[u]);
            }
            *o = T::narrow(q.requantize(acc, u));
        }
    }
}

impl OpKernel for FullyConnectedReference {
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
        expect_len("input", x.bytes.len(), x.dtype, p.rows * p.depth)?;
        expect_len("weights", w.bytes.len(), w.dtype, p.units * p.depth)?;
        expect_len("output", out.bytes.len(), out.dtype, p.rows * p.units)?;
        if let Some(b) = bias {
            expect_len("bias", b.bytes.len(), b.dtype, p.units)?;
        }
        match (p.dtype, &p.quant) {
            (DType::F32, _) => {
                let bias = bias.map(|b| b.f32s()).transpose()?;
                fully_connected_f32(p, x.f32s()?, w.f32s()?, bias, out.f32s_mut()?);
            }
            (DType::I8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                fully_connected_quant(p, q, x.i8s()?, w.i8s()?, bias, out.i8s_mut()?);
            }
            (DType::U8, Some(q)) => {
                let bias = bias.map(|b| b.i32s()).transpose()?;
                fully_connected_quant(p, q, x.u8s()?, w.u8s()?, bias, out.u8s_mut()?);
            }
            (other, _) => return Err(KernelError::dtype("prepared FC dtype", other)),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.params.dtype {
            DType::F32 => "fully_connected/f32/reference",
            DType::I8 => "fully_connected/i8/reference",
            _ => "fully_connected/u8/reference",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{Activation, BuiltinOp, OpKind, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::super::conv2d::testing::*;
    use super::*;

    #[derive(Clone, Debug)]
    struct Case {
        dtype: DType,
        input: Vec<usize>,
        units: usize,
        depth: usize,
        keep_num_dims: bool,
        act: Activation,
        bias: bool,
        per_channel: bool,
        ties: bool,
    }

    fn base(dtype: DType) -> Case {
        Case {
            dtype,
            input: vec![3, 20],
            units: 7,
            depth: 20,
            keep_num_dims: false,
            act: Activation::None,
            bias: true,
            per_channel: false,
            ties: false,
        }
    }

    fn output_shape(c: &Case) -> Vec<usize> {
        if c.keep_num_dims {
            let mut s = c.input.clone();
            if let Some(last) = s.last_mut() {
                *last = c.units;
            }
            s
        } else {
            let n: usize = c.input.iter().product();
            vec![n / c.depth, c.units]
        }
    }

    fn build(c: &Case) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", c.dtype, &c.input);
        let y = sg.tensor("y", c.dtype, &output_shape(c));
        let base_scale = 0.01;
        let (mut in_scale, mut out_scale) = scales(c.act, base_scale, c.depth);
        let scales = if c.ties {
            (in_scale, out_scale) = (TIE_IN_SCALE, TIE_OUT_SCALE);
            tie_filter_scales(c.units, c.per_channel)
        } else if c.per_channel {
            channel_scales(c.units, base_scale)
        } else {
            vec![base_scale]
        };
        if c.dtype != DType::F32 {
            sg.set_quant(x, Quant::per_tensor(in_scale, zp(c.dtype, -3)));
            sg.set_quant(y, Quant::per_tensor(out_scale, zp(c.dtype, 5)));
        }
        let filter_zp = if c.dtype == DType::U8 { 125 } else { 0 };
        let w = filter_in(
            sg,
            c.dtype,
            &[c.units, c.depth],
            7,
            &scales,
            filter_zp,
            0,
            c.ties.then_some((-3, 3)),
        );
        let span = if c.ties { 20.0 } else { 3000.0 };
        let b = c
            .bias
            .then(|| bias(sg, c.dtype, c.units, 9, in_scale, &scales, span));
        let version = if c.dtype == DType::I8 { 4 } else { 1 };
        sg.op_versioned(
            OpKind::Builtin(BuiltinOp::FullyConnected),
            version,
            &[Some(x), Some(w), b],
            &[y],
            OpOptions::FullyConnected {
                activation: c.act,
                keep_num_dims: c.keep_num_dims,
                weights_format: 0,
                asymmetric_quantize_inputs: false,
            },
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
        let model = build(c);
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
                act: Activation::Relu,
                bias: false,
                ..b.clone()
            },
            Case {
                input: vec![2, 3, 20],
                keep_num_dims: true,
                act: Activation::Relu6,
                ..b.clone()
            },
            Case {
                input: vec![2, 2, 3, 10],
                units: 5,
                act: Activation::ReluN1To1,
                ..b.clone()
            },
            Case {
                input: vec![1, 1, 1, 64],
                units: 1,
                depth: 64,
                ..b
            },
        ]
    }

    #[test]
    fn optimized_float_matches_reference() {
        let b = base(DType::F32);
        let mut cases = variants(DType::F32);
        cases.extend([
            // Batch 1 with many outputs: split across panels rather than rows.
            Case {
                input: vec![1, 200],
                units: 150,
                depth: 200,
                act: Activation::Relu,
                ..b.clone()
            },
            Case {
                input: vec![37, 33],
                units: 40,
                depth: 33,
                ..b
            },
        ]);
        for c in cases {
            let x = random(c.dtype, &c.input, 3);
            crate::optimized::kernels::testing::assert_optimized_matches_reference(
                &format!("{c:?}"),
                &build(&c),
                &[x],
                "fully_connected/f32/",
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
    fn int8_per_tensor_matches_litert() {
        for c in variants(DType::I8) {
            check(&c);
        }
    }

    #[test]
    fn int8_per_channel_matches_litert() {
        for c in variants(DType::I8).into_iter().take(3) {
            check(&Case {
                per_channel: true,
                ..c
            });
        }
    }

    #[test]
    fn uint8_matches_litert() {
        for c in variants(DType::U8) {
            check(&c);
        }
    }

    #[test]
    fn quantized_ties_match_litert() {
        for dtype in [DType::I8, DType::U8] {
            for per_channel in [false, dtype == DType::I8] {
                for (rows, units) in [(3, 7), (1, 12), (1, 1)] {
                    check(&Case {
                        ties: true,
                        per_channel,
                        input: vec![rows, 20],
                        units,
                        ..base(dtype)
                    });
                }
            }
        }
    }

    /// The wake-word model's int8 FULLY_CONNECTED (v4), cut out with its weights.
    #[test]
    fn real_model_node_matches_litert() {
        assert_eq!(
            real_nodes_match_litert("mww_okay_nabu.tflite", BuiltinOp::FullyConnected),
            1
        );
    }

    /// tfm_sine_float is three FULLY_CONNECTED layers and nothing else: the whole real
    /// model against LiteRT's recorded outputs (builtin kernels and XNNPACK).
    #[test]
    fn sine_model_matches_golden_outputs() {
        let model = switchyard_testkit::models_dir().join("tfm_sine_float.tflite");
        let bytes = std::fs::read(&model).expect("model present (scripts/setup.sh)");
        let golden = switchyard_testkit::golden_dir().join("tfm_sine_float");
        let read =
            |f: &str| switchyard_interpreter::npy::read(golden.join(f)).expect("golden present");
        let x = read("input_0.npy");
        for (name, resolver) in resolvers() {
            let got =
                switchyard_testkit::switchyard_run(&bytes, std::slice::from_ref(&x), resolver)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            for f in ["output_0.ref.npy", "output_0.npy"] {
                let want = read(f);
                let t = switchyard_testkit::default_tolerance(want.dtype);
                if let Err(e) = switchyard_testkit::compare(&got[0], &want, t) {
                    panic!("{name} vs {f}: {e}");
                }
            }
        }
    }

    /// A float node over `input` with weights `weights` and options.
    fn float_node(input: &[usize], weights: &[usize], keep_num_dims: bool, bias: usize) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, input);
        let y = sg.tensor("y", DType::F32, &[1, 1]);
        let n: usize = weights.iter().product();
        let w = sg.constant_f32("w", weights, &vec![0.5; n]);
        let b = sg.constant_f32("b", &[bias], &vec![0.0; bias]);
        sg.op(
            OpKind::Builtin(BuiltinOp::FullyConnected),
            &[Some(x), Some(w), Some(b)],
            &[y],
            OpOptions::FullyConnected {
                activation: Activation::None,
                keep_num_dims,
                weights_format: 0,
                asymmetric_quantize_inputs: false,
            },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn invalid_nodes_are_prepare_errors() {
        let e = prepare_error(&float_node(&[2, 7], &[3, 4], false, 3));
        assert!(e.contains("rows"), "{e}");
        let e = prepare_error(&float_node(&[2, 8], &[3, 4], true, 3));
        assert!(e.contains("keep_num_dims"), "{e}");
        let e = prepare_error(&float_node(&[2, 8], &[3, 4], false, 4));
        assert!(e.contains("bias"), "{e}");
        let e = prepare_error(&float_node(&[2, 8], &[0, 4], false, 0));
        assert!(e.contains("no output units"), "{e}");
        let e = prepare_error(&float_node(&[2, 8], &[3, 4, 1], false, 3));
        assert!(e.contains("rank 2"), "{e}");
    }
}
