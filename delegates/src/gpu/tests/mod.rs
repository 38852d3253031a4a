//! GPU versus CPU-reference parity on single-op models built with the interpreter's
//! model builder, in every variant the executor has (fp32 with and without subgroup
//! operations, fp16), plus partition-level behaviour (buffer reuse, aliasing, fallback).
//! `more_ops` covers SOFTMAX, the resizes, transposed convolution and DEPTH_TO_SPACE;
//! `executor` the executor's counters, fusion, concurrency, profiling, pipeline cache,
//! device loss and shutdown.
//!
//! Every test needs a Vulkan adapter. Without one it prints "skipped: no GPU adapter
//! (reason)" and returns, except on a machine where Mesa's lavapipe is installed (the
//! project's setup script installs it), where a missing adapter is a failure.

use std::sync::Arc;

use switchyard_interpreter::builder::{ModelBuilder, SubgraphBuilder};
use switchyard_interpreter::ops::{ConvOptions, PoolOptions};
use switchyard_interpreter::{
    Activation, BuiltinOp, DType, Delegate, Interpreter, InterpreterOptions, Model, NodeSupportCtx,
    OpKind, OpOptions, Padding, Partition, PartitionCtx, PartitionReport, PlacedPartition, Support,
    Tensor, TensorMeta, TensorView, TensorViewMut,
};
use switchyard_testkit::{Tolerance, compare, random_tensor};

use super::{GpuDelegate, GpuOptions, Precision};
use crate::cpu::CpuResolver;

mod executor;
mod more_ops;

const ICD_DIRS: [&str; 2] = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];

pub(crate) fn lavapipe_installed() -> bool {
    ICD_DIRS.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("lvp_icd"))
        })
    })
}

/// The delegate, or `None` (with the printed reason) where no adapter can exist.
pub(crate) fn gpu() -> Option<Arc<GpuDelegate>> {
    let d = GpuDelegate::new();
    match d.unavailable_reason() {
        None => Some(Arc::new(d)),
        Some(reason) => {
            assert!(
                !lavapipe_installed(),
                "lavapipe is installed but the GPU delegate found no adapter: {reason}"
            );
            println!("skipped: no GPU adapter ({reason})");
            None
        }
    }
}

/// One configuration of the executor.
pub(crate) struct Variant {
    pub d: Arc<GpuDelegate>,
}

/// Every configuration the adapter offers: fp32 with its subgroup operations, fp32
/// with them forced off, and fp16 (when the adapter has `shader-f16`).
pub(crate) fn variants() -> Vec<Variant> {
    let Some(base) = gpu() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(f16) = base.fp16_variant() {
        out.push(Variant { d: Arc::new(f16) });
    }
    out.insert(0, Variant { d: base });
    let plain = GpuDelegate::with_options(&GpuOptions {
        subgroups: false,
        ..GpuOptions::default()
    });
    assert!(!plain.uses_subgroups(), "subgroups forced off");
    out.push(Variant { d: Arc::new(plain) });
    out
}

/// fp16 results: the largest error, relative to the reference's largest magnitude
/// (what the allowlist's validation measures), within 1e-2.
pub(crate) const FP16_TOLERANCE: f64 = 1e-2;

/// Largest |a - e| over the largest |e|.
pub(crate) fn max_relative_error(a: &Tensor, e: &Tensor) -> f64 {
    let a: &[f32] = bytemuck::cast_slice(a.data.as_slice());
    let e: &[f32] = bytemuck::cast_slice(e.data.as_slice());
    let scale = e
        .iter()
        .fold(0f64, |m, v| m.max(f64::from(v.abs())))
        .max(1e-30);
    a.iter()
        .zip(e)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0f64, |m, d| {
            if d.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
        / scale
}

/// `actual` against `expected`: per element within `tol` in fp32, within
/// [`FP16_TOLERANCE`] of the largest magnitude in fp16.
pub(crate) fn check_close(
    case: &str,
    d: &GpuDelegate,
    actual: &Tensor,
    expected: &Tensor,
    tol: Tolerance,
) {
    let label = format!(
        "[{} subgroups={}] {case}",
        d.precision().name(),
        d.uses_subgroups()
    );
    match d.precision() {
        Precision::F32 => {
            if let Err(msg) = compare(actual, expected, tol) {
                panic!("{label}: {msg}");
            }
        }
        Precision::F16 => {
            assert_eq!(actual.shape, expected.shape, "{label}");
            let err = max_relative_error(actual, expected);
            assert!(err <= FP16_TOLERANCE, "{label}: error {err:.3e}");
        }
    }
}

pub(crate) fn f32_tol() -> Tolerance {
    Tolerance::Float { rel: 1e-4 }
}

/// What a node looks like to `supports`, from the model's stored shapes and constants.
pub(crate) fn support_of(d: &GpuDelegate, model: &Model, node: usize) -> Support {
    let sg = &model.subgraphs[0];
    let meta = |t: usize| TensorMeta {
        dtype: sg.tensors[t].dtype,
        shape: &sg.tensors[t].shape,
        quant: sg.tensors[t].quant.as_ref(),
        data: sg.tensors[t].data.as_ref().map(|c| c.as_slice()),
        name: &sg.tensors[t].name,
    };
    let n = &sg.nodes[node];
    d.supports(&NodeSupportCtx {
        subgraph: sg,
        node: n,
        inputs: n.inputs.iter().map(|t| t.map(meta)).collect(),
        outputs: n.outputs.iter().map(|&t| meta(t)).collect(),
    })
}

/// Runs every node of subgraph 0 as one partition on the GPU, straight through the
/// delegate (no interpreter): shapes and constants are the model's own.
pub(crate) fn run_on_gpu(
    d: &GpuDelegate,
    model: &Model,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, String> {
    let sg = &model.subgraphs[0];
    for n in 0..sg.nodes.len() {
        if let Support::Unsupported(why) = support_of(d, model, n) {
            return Err(format!("node {n} unsupported: {why}"));
        }
    }
    let partition = Partition::from_nodes(0, sg, (0..sg.nodes.len()).collect());
    let shapes: Vec<Vec<usize>> = sg.tensors.iter().map(|t| t.shape.clone()).collect();
    let constant = |t: usize| {
        sg.tensors
            .get(t)
            .and_then(|t| t.data.as_ref().map(|c| c.as_slice()))
    };
    let ctx = PartitionCtx {
        model,
        subgraph: sg,
        partition: &partition,
        shapes: &shapes,
        constant: &constant,
    };
    let compiled = d.compile(&ctx).map_err(|e| e.to_string())?;
    // Partition inputs follow first use; map them back to the model's inputs.
    let views: Vec<TensorView<'_>> = partition
        .inputs
        .iter()
        .map(|t| {
            let i = sg
                .inputs
                .iter()
                .position(|x| x == t)
                .ok_or("input not a model input")?;
            Ok(inputs[i].view())
        })
        .collect::<Result<_, String>>()?;
    let mut outs: Vec<Tensor> = partition
        .outputs
        .iter()
        .map(|&t| {
            let shape = shapes[t].clone();
            let n: usize = shape.iter().product();
            Tensor::from_bytes(DType::F32, shape, &vec![0u8; n * 4]).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    {
        let mut out_views: Vec<TensorViewMut<'_>> = outs
            .iter_mut()
            .map(|t| TensorViewMut {
                dtype: t.dtype,
                shape: &t.shape,
                quant: None,
                bytes: t.data.as_mut_slice(),
            })
            .collect();
        compiled
            .execute(&views, &mut out_views, None)
            .map_err(|e| e.to_string())?;
    }
    // Back to model output order.
    sg.outputs
        .iter()
        .map(|t| {
            let i = partition
                .outputs
                .iter()
                .position(|x| x == t)
                .ok_or("model output not produced by the partition")?;
            Ok(outs[i].clone())
        })
        .collect()
}

pub(crate) fn run_on_cpu(model: Arc<Model>, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut it = Interpreter::new(
        model,
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
    )
    .expect("CPU reference prepares the model");
    let views: Vec<_> = inputs.iter().map(Tensor::view).collect();
    it.run(&views).expect("CPU reference runs the model")
}

/// Asserts the GPU matches the CPU reference on `model` within `tol`.
pub(crate) fn assert_parity(
    case: &str,
    d: &GpuDelegate,
    bytes: &[u8],
    inputs: &[Tensor],
    tol: Tolerance,
) {
    let model = Arc::new(Model::from_bytes(bytes).unwrap_or_else(|e| panic!("{case}: {e}")));
    let expected = run_on_cpu(model.clone(), inputs);
    let actual = run_on_gpu(d, &model, inputs).unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(actual.len(), expected.len(), "{case}: output count");
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        check_close(&format!("{case}: output {i}"), d, a, e, tol);
    }
}

/// A model with one float op: `inputs` are (shape, constant values or None).
pub(crate) fn single_op(
    op: BuiltinOp,
    inputs: &[(&[usize], Option<Vec<f32>>)],
    out_shape: &[usize],
    options: OpOptions,
) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let mut ids = Vec::new();
    let mut runtime = Vec::new();
    for (i, (shape, data)) in inputs.iter().enumerate() {
        let t = match data {
            Some(v) => sg.constant_f32(&format!("c{i}"), shape, v),
            None => {
                let t = sg.tensor(&format!("x{i}"), DType::F32, shape);
                runtime.push(t);
                t
            }
        };
        ids.push(Some(t));
    }
    let y = sg.tensor("y", DType::F32, out_shape);
    sg.op(OpKind::Builtin(op), &ids, &[y], options);
    sg.set_inputs(&runtime);
    sg.set_outputs(&[y]);
    mb.finish()
}

pub(crate) fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let t = random_tensor(DType::F32, &[n], seed, lo, hi);
    bytemuck::cast_slice(t.data.as_slice()).to_vec()
}

pub(crate) fn input(shape: &[usize], seed: u64) -> Tensor {
    random_tensor(DType::F32, shape, seed, -4.0, 4.0)
}

#[test]
fn fingerprint_names_adapter_and_backend() {
    let Some(d) = gpu() else { return };
    let f = d.fingerprint();
    assert!(f.contains("vulkan"), "{f}");
    assert_eq!(f.split(" | ").count(), 4, "{f}");
    assert_eq!(d.kind(), switchyard_interpreter::ProcessorKind::Gpu);
}

#[test]
fn binary_ops_match_cpu_with_broadcast() {
    for v in variants() {
        let d = &v.d;
        use BuiltinOp::*;
        let shapes: [(&[usize], &[usize], &[usize]); 4] = [
            (&[2, 3, 4], &[2, 3, 4], &[2, 3, 4]),
            (&[1, 4, 4, 3], &[3], &[1, 4, 4, 3]),
            (&[2, 1, 4, 3], &[1, 5, 1, 3], &[2, 5, 4, 3]),
            (&[1], &[3, 2], &[3, 2]),
        ];
        for op in [Add, Sub, Mul, Div, Maximum, Minimum, SquaredDifference] {
            for (k, (a, b, out)) in shapes.iter().enumerate() {
                let options = match op {
                    Add | Sub | Mul | Div => OpOptions::Activation(Activation::None),
                    _ => OpOptions::None,
                };
                let model = single_op(op, &[(a, None), (b, None)], out, options);
                let xa = input(a, 1 + k as u64);
                // Divisors away from zero so the quotient is well conditioned.
                let xb = if op == Div {
                    random_tensor(DType::F32, b, 2 + k as u64, 0.5, 4.0)
                } else {
                    input(b, 2 + k as u64)
                };
                assert_parity(
                    &format!("{op:?} {a:?} {b:?}"),
                    d,
                    &model,
                    &[xa, xb],
                    f32_tol(),
                );
            }
        }
    }
}

#[test]
fn binary_ops_fuse_activations_and_take_constants() {
    for v in variants() {
        let d = &v.d;
        for act in [Activation::Relu, Activation::Relu6, Activation::ReluN1To1] {
            let c = values(8, 9, -2.0, 2.0);
            let model = single_op(
                BuiltinOp::Add,
                &[(&[1, 3, 8], None), (&[8], Some(c))],
                &[1, 3, 8],
                OpOptions::Activation(act),
            );
            assert_parity(
                &format!("ADD {act:?}"),
                d,
                &model,
                &[input(&[1, 3, 8], 3)],
                f32_tol(),
            );
        }
    }
}

#[test]
fn prelu_broadcasts_alpha() {
    for v in variants() {
        let d = &v.d;
        let alpha = values(3, 4, 0.0, 0.5);
        let model = single_op(
            BuiltinOp::Prelu,
            &[(&[1, 4, 4, 3], None), (&[1, 1, 3], Some(alpha))],
            &[1, 4, 4, 3],
            OpOptions::None,
        );
        assert_parity("PRELU", d, &model, &[input(&[1, 4, 4, 3], 5)], f32_tol());
    }
}

#[test]
fn activations_match_cpu() {
    for v in variants() {
        let d = &v.d;
        use BuiltinOp::*;
        for (op, options) in [
            (Relu, OpOptions::None),
            (Relu6, OpOptions::None),
            (ReluN1To1, OpOptions::None),
            (Tanh, OpOptions::None),
            (Logistic, OpOptions::None),
            (HardSwish, OpOptions::None),
            (LeakyRelu, OpOptions::LeakyRelu { alpha: 0.2 }),
        ] {
            let shape = [2, 5, 7, 3];
            let model = single_op(op, &[(&shape, None)], &shape, options);
            let x = random_tensor(DType::F32, &shape, 6, -8.0, 8.0);
            assert_parity(&format!("{op:?}"), d, &model, &[x], f32_tol());
        }
    }
}

/// (input, filter [oc, kh, kw, ic], padding, stride, dilation, bias, activation)
type ConvCase = (
    &'static [usize],
    [usize; 4],
    Padding,
    usize,
    usize,
    bool,
    Activation,
);
/// (input, kh, kw, multiplier, padding, stride, dilation, activation)
type DepthwiseCase = (
    &'static [usize],
    usize,
    usize,
    usize,
    Padding,
    usize,
    usize,
    Activation,
);
/// (op, input, filter, stride, padding, activation)
type PoolCase = (
    BuiltinOp,
    &'static [usize],
    usize,
    usize,
    Padding,
    Activation,
);

pub(crate) fn conv_options(
    padding: Padding,
    stride: usize,
    dilation: usize,
    act: Activation,
) -> ConvOptions {
    ConvOptions {
        padding,
        stride_w: stride,
        stride_h: stride,
        dilation_w: dilation,
        dilation_h: dilation,
        depth_multiplier: 1,
        activation: act,
    }
}

/// Convolutions sum `kh * kw * ic` products; the GPU starts from the bias and walks the
/// same order as the reference, so float32 results agree to a few ulps and the default
/// 1e-4 relative bound holds.
#[test]
fn conv2d_matches_cpu() {
    for v in variants() {
        let d = &v.d;
        // (input, filter [oc, kh, kw, ic], padding, stride, dilation, bias, activation)
        let cases: [ConvCase; 8] = [
            // Several K steps and two channel tiles of the implicit GEMM.
            (
                &[1, 12, 12, 20],
                [40, 3, 3, 20],
                Padding::Same,
                1,
                1,
                true,
                Activation::Relu6,
            ),
            // Pointwise, more pixels than one tile.
            (
                &[1, 16, 16, 24],
                [48, 1, 1, 24],
                Padding::Valid,
                1,
                1,
                true,
                Activation::None,
            ),
            (
                &[1, 8, 8, 3],
                [4, 3, 3, 3],
                Padding::Same,
                1,
                1,
                true,
                Activation::None,
            ),
            (
                &[1, 16, 16, 3],
                [6, 5, 5, 3],
                Padding::Same,
                2,
                1,
                true,
                Activation::Relu,
            ),
            (
                &[2, 6, 6, 8],
                [5, 1, 1, 8],
                Padding::Valid,
                1,
                1,
                false,
                Activation::Relu6,
            ),
            (
                &[1, 9, 9, 4],
                [3, 3, 3, 4],
                Padding::Valid,
                2,
                1,
                true,
                Activation::None,
            ),
            (
                &[1, 10, 10, 2],
                [3, 3, 3, 2],
                Padding::Same,
                1,
                2,
                true,
                Activation::Relu,
            ),
            (
                &[1, 7, 5, 3],
                [2, 2, 3, 3],
                Padding::Same,
                2,
                1,
                true,
                Activation::ReluN1To1,
            ),
        ];
        for (k, (x, f, padding, stride, dilation, bias, act)) in cases.into_iter().enumerate() {
            let o = conv_options(padding, stride, dilation, act);
            let (oh, _) = crate::cpu::util::conv_output_size(x[1], f[1], stride, dilation, padding)
                .expect("valid case");
            let (ow, _) = crate::cpu::util::conv_output_size(x[2], f[2], stride, dilation, padding)
                .expect("valid case");
            let w = values(f.iter().product(), 10 + k as u64, -1.0, 1.0);
            let mut ins: Vec<(&[usize], Option<Vec<f32>>)> = vec![(x, None), (&f, Some(w))];
            let bias_shape = [f[0]];
            if bias {
                ins.push((&bias_shape, Some(values(f[0], 20 + k as u64, -1.0, 1.0))));
            }
            let model = single_op(
                BuiltinOp::Conv2d,
                &ins,
                &[x[0], oh, ow, f[0]],
                OpOptions::Conv(o),
            );
            assert_parity(
                &format!("CONV_2D case {k}"),
                d,
                &model,
                &[input(x, 30 + k as u64)],
                f32_tol(),
            );
        }
    }
}

#[test]
fn depthwise_conv2d_matches_cpu() {
    for v in variants() {
        let d = &v.d;
        // (input, kh, kw, multiplier, padding, stride, dilation, activation)
        let cases: [DepthwiseCase; 7] = [
            // Tiled with 16 channels per tile, several tiles each way.
            (
                &[1, 20, 18, 32],
                5,
                5,
                1,
                Padding::Same,
                2,
                1,
                Activation::Relu6,
            ),
            // A patch too large for workgroup memory: the direct shader.
            (
                &[1, 24, 24, 20],
                7,
                7,
                1,
                Padding::Same,
                1,
                4,
                Activation::None,
            ),
            (
                &[1, 8, 8, 4],
                3,
                3,
                1,
                Padding::Same,
                1,
                1,
                Activation::None,
            ),
            (
                &[1, 16, 16, 6],
                5,
                5,
                1,
                Padding::Same,
                2,
                1,
                Activation::Relu,
            ),
            (
                &[2, 7, 7, 3],
                3,
                3,
                2,
                Padding::Valid,
                1,
                1,
                Activation::Relu6,
            ),
            (
                &[1, 9, 9, 2],
                3,
                3,
                1,
                Padding::Same,
                1,
                2,
                Activation::None,
            ),
            (
                &[1, 6, 10, 5],
                3,
                2,
                3,
                Padding::Same,
                2,
                1,
                Activation::None,
            ),
        ];
        for (k, (x, kh, kw, m, padding, stride, dilation, act)) in cases.into_iter().enumerate() {
            let mut o = conv_options(padding, stride, dilation, act);
            o.depth_multiplier = m;
            let oc = x[3] * m;
            let (oh, _) = crate::cpu::util::conv_output_size(x[1], kh, stride, dilation, padding)
                .expect("valid");
            let (ow, _) = crate::cpu::util::conv_output_size(x[2], kw, stride, dilation, padding)
                .expect("valid");
            let f = [1, kh, kw, oc];
            let model = single_op(
                BuiltinOp::DepthwiseConv2d,
                &[
                    (x, None),
                    (&f, Some(values(kh * kw * oc, 40 + k as u64, -1.0, 1.0))),
                    (&[oc], Some(values(oc, 50 + k as u64, -1.0, 1.0))),
                ],
                &[x[0], oh, ow, oc],
                OpOptions::Conv(o),
            );
            assert_parity(
                &format!("DEPTHWISE_CONV_2D case {k}"),
                d,
                &model,
                &[input(x, 60 + k as u64)],
                f32_tol(),
            );
        }
    }
}

#[test]
fn fully_connected_matches_cpu() {
    for v in variants() {
        let d = &v.d;
        // (input, units, bias, activation, keep_num_dims)
        let cases: [(&[usize], usize, bool, Activation, bool); 4] = [
            (&[2, 16], 8, true, Activation::None, false),
            (&[1, 64], 10, false, Activation::Relu, false),
            (&[1, 3, 12], 5, true, Activation::Relu6, true),
            (&[4, 2, 6], 7, true, Activation::None, false),
        ];
        for (k, (x, units, bias, act, keep)) in cases.into_iter().enumerate() {
            let depth = *x.last().expect("rank >= 1");
            let rows = x.iter().product::<usize>() / depth;
            let out: Vec<usize> = if keep {
                let mut s = x.to_vec();
                *s.last_mut().expect("rank >= 1") = units;
                s
            } else {
                vec![rows, units]
            };
            let w_shape = [units, depth];
            let b_shape = [units];
            let mut ins: Vec<(&[usize], Option<Vec<f32>>)> = vec![
                (x, None),
                (
                    &w_shape,
                    Some(values(units * depth, 70 + k as u64, -1.0, 1.0)),
                ),
            ];
            if bias {
                ins.push((&b_shape, Some(values(units, 80 + k as u64, -1.0, 1.0))));
            }
            let model = single_op(
                BuiltinOp::FullyConnected,
                &ins,
                &out,
                OpOptions::FullyConnected {
                    activation: act,
                    keep_num_dims: keep,
                    weights_format: 0,
                    asymmetric_quantize_inputs: false,
                },
            );
            assert_parity(
                &format!("FULLY_CONNECTED case {k}"),
                d,
                &model,
                &[input(x, 90 + k as u64)],
                f32_tol(),
            );
        }
    }
}

#[test]
fn pooling_matches_cpu() {
    for v in variants() {
        let d = &v.d;
        // (op, input, filter, stride, padding, activation)
        let cases: [PoolCase; 6] = [
            // Global average: the row reduction.
            (
                BuiltinOp::AveragePool2d,
                &[2, 7, 7, 24],
                7,
                1,
                Padding::Valid,
                Activation::Relu,
            ),
            (
                BuiltinOp::MaxPool2d,
                &[1, 8, 8, 3],
                2,
                2,
                Padding::Valid,
                Activation::None,
            ),
            (
                BuiltinOp::MaxPool2d,
                &[2, 9, 9, 4],
                3,
                2,
                Padding::Same,
                Activation::Relu,
            ),
            (
                BuiltinOp::AveragePool2d,
                &[1, 8, 8, 3],
                2,
                2,
                Padding::Valid,
                Activation::None,
            ),
            // Same padding: border windows average fewer elements.
            (
                BuiltinOp::AveragePool2d,
                &[1, 7, 7, 5],
                3,
                1,
                Padding::Same,
                Activation::Relu6,
            ),
            (
                BuiltinOp::AveragePool2d,
                &[1, 5, 6, 2],
                5,
                1,
                Padding::Valid,
                Activation::None,
            ),
        ];
        for (k, (op, x, f, s, padding, act)) in cases.into_iter().enumerate() {
            let (oh, _) =
                crate::cpu::util::conv_output_size(x[1], f, s, 1, padding).expect("valid");
            let (ow, _) =
                crate::cpu::util::conv_output_size(x[2], f, s, 1, padding).expect("valid");
            let model = single_op(
                op,
                &[(x, None)],
                &[x[0], oh, ow, x[3]],
                OpOptions::Pool(PoolOptions {
                    padding,
                    stride_w: s,
                    stride_h: s,
                    filter_w: f,
                    filter_h: f,
                    activation: act,
                }),
            );
            assert_parity(
                &format!("{op:?} case {k}"),
                d,
                &model,
                &[input(x, 100 + k as u64)],
                f32_tol(),
            );
        }
    }
}

fn pad_model(op: BuiltinOp, x: &[usize], paddings: &[i32], value: Option<f32>) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let xt = sg.tensor("x", DType::F32, x);
    let p = sg.constant_i32("paddings", &[x.len(), 2], paddings);
    let out: Vec<usize> = x
        .iter()
        .enumerate()
        .map(|(d, &s)| s + paddings[2 * d] as usize + paddings[2 * d + 1] as usize)
        .collect();
    let y = sg.tensor("y", DType::F32, &out);
    let mut ins = vec![Some(xt), Some(p)];
    if let Some(v) = value {
        ins.push(Some(sg.constant_f32("value", &[], &[v])));
    }
    sg.op(OpKind::Builtin(op), &ins, &[y], OpOptions::None);
    sg.set_inputs(&[xt]);
    sg.set_outputs(&[y]);
    mb.finish()
}

#[test]
fn pad_matches_cpu() {
    for v in variants() {
        let d = &v.d;
        let cases: [(&[usize], &[i32]); 3] = [
            // Channel padding, as MediaPipe's residual blocks do.
            (&[1, 4, 4, 3], &[0, 0, 0, 0, 0, 0, 0, 5]),
            (&[1, 4, 4, 3], &[0, 0, 1, 2, 0, 1, 0, 0]),
            (&[3, 5], &[2, 1, 0, 3]),
        ];
        for (k, (x, p)) in cases.into_iter().enumerate() {
            let model = pad_model(BuiltinOp::Pad, x, p, None);
            assert_parity(
                &format!("PAD case {k}"),
                d,
                &model,
                &[input(x, 110 + k as u64)],
                f32_tol(),
            );
        }
        let model = pad_model(
            BuiltinOp::PadV2,
            &[1, 3, 3, 2],
            &[0, 0, 1, 1, 2, 0, 0, 1],
            Some(-7.5),
        );
        assert_parity("PADV2", d, &model, &[input(&[1, 3, 3, 2], 120)], f32_tol());
    }
}

#[test]
fn concatenation_matches_cpu() {
    for v in variants() {
        let d = &v.d;
        let cases: [(&[&[usize]], i32, Activation); 3] = [
            (&[&[1, 4, 4, 3], &[1, 4, 4, 5]], 3, Activation::None),
            (&[&[2, 1, 3], &[2, 4, 3], &[2, 2, 3]], 1, Activation::Relu),
            (&[&[1, 896, 16], &[1, 128, 16]], -2, Activation::None),
        ];
        for (k, (shapes, axis, act)) in cases.into_iter().enumerate() {
            let rank = shapes[0].len();
            let a = axis.rem_euclid(rank as i32) as usize;
            let mut out = shapes[0].to_vec();
            out[a] = shapes.iter().map(|s| s[a]).sum();
            let ins: Vec<(&[usize], Option<Vec<f32>>)> =
                shapes.iter().map(|s| (*s, None)).collect();
            let model = single_op(
                BuiltinOp::Concatenation,
                &ins,
                &out,
                OpOptions::Concatenation {
                    axis,
                    activation: act,
                },
            );
            let inputs: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| input(s, 130 + (k * 10 + i) as u64))
                .collect();
            assert_parity(
                &format!("CONCATENATION case {k}"),
                d,
                &model,
                &inputs,
                f32_tol(),
            );
        }
    }
}

fn reduce_model(op: BuiltinOp, x: &[usize], axes: &[i32], keep_dims: bool) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let xt = sg.tensor("x", DType::F32, x);
    let a = sg.constant_i32("axes", &[axes.len()], axes);
    let rank = x.len() as i32;
    let reduced: Vec<usize> = axes.iter().map(|&a| a.rem_euclid(rank) as usize).collect();
    let out: Vec<usize> = (0..x.len())
        .filter_map(|d| match (reduced.contains(&d), keep_dims) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(x[d]),
        })
        .collect();
    let y = sg.tensor("y", DType::F32, &out);
    sg.op(
        OpKind::Builtin(op),
        &[Some(xt), Some(a)],
        &[y],
        OpOptions::Reducer { keep_dims },
    );
    sg.set_inputs(&[xt]);
    sg.set_outputs(&[y]);
    mb.finish()
}

/// Reductions of up to a few hundred values: float32 sums in a different association
/// than the reference's can differ by a few ulps of the running sum, well inside 1e-4.
#[test]
fn mean_and_sum_match_cpu() {
    for v in variants() {
        let d = &v.d;
        let cases: [(BuiltinOp, &[usize], &[i32], bool); 6] = [
            (BuiltinOp::Mean, &[1, 16, 16, 40], &[1, 2], true),
            (BuiltinOp::Mean, &[1, 7, 7, 16], &[1, 2], true),
            (BuiltinOp::Mean, &[1, 7, 7, 16], &[1, 2], false),
            (BuiltinOp::Mean, &[2, 3, 4], &[-1], false),
            (BuiltinOp::Mean, &[2, 3, 4], &[0, 2], true),
            (BuiltinOp::Sum, &[3, 5, 2], &[1], false),
        ];
        for (k, (op, x, axes, keep)) in cases.into_iter().enumerate() {
            let model = reduce_model(op, x, axes, keep);
            assert_parity(
                &format!("{op:?} case {k}"),
                d,
                &model,
                &[input(x, 140 + k as u64)],
                f32_tol(),
            );
        }
    }
}

/// x -> ADD c -> RESHAPE -> (MUL with itself through a second RESHAPE) -> output, plus
/// the reshaped intermediate as a second output: aliasing keeps one buffer for a tensor
/// and its reshapes, and an aliased partition output is read back correctly.
pub(crate) fn reshape_chain() -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg: &mut SubgraphBuilder = mb.main();
    let x = sg.tensor("x", DType::F32, &[1, 4, 6]);
    let c = sg.constant_f32("c", &[6], &values(6, 150, -1.0, 1.0));
    let t = sg.tensor("t", DType::F32, &[1, 4, 6]);
    let r = sg.tensor("r", DType::F32, &[4, 6]);
    let r2 = sg.tensor("r2", DType::F32, &[24]);
    let r3 = sg.tensor("r3", DType::F32, &[4, 6]);
    let y = sg.tensor("y", DType::F32, &[4, 6]);
    let shape = sg.constant_i32("shape", &[2], &[4, 6]);
    let flat = sg.constant_i32("flat", &[1], &[24]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(x), Some(c)],
        &[t],
        OpOptions::Activation(Activation::None),
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Reshape),
        &[Some(t), Some(shape)],
        &[r],
        OpOptions::Reshape {
            new_shape: Some(vec![4, 6]),
        },
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Reshape),
        &[Some(r), Some(flat)],
        &[r2],
        OpOptions::Reshape {
            new_shape: Some(vec![24]),
        },
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Reshape),
        &[Some(r2), Some(shape)],
        &[r3],
        OpOptions::Reshape {
            new_shape: Some(vec![4, 6]),
        },
    );
    sg.op(
        OpKind::Builtin(BuiltinOp::Mul),
        &[Some(r), Some(r3)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    sg.set_inputs(&[x]);
    sg.set_outputs(&[y, r2]);
    mb.finish()
}

#[test]
fn reshape_aliases_its_input_inside_a_partition() {
    for v in variants() {
        let d = &v.d;
        assert_parity(
            "ADD-RESHAPE-MUL",
            d,
            &reshape_chain(),
            &[input(&[1, 4, 6], 151)],
            f32_tol(),
        );
    }
}

#[test]
fn unsupported_nodes_say_why() {
    let Some(d) = gpu() else { return };
    // int32 ADD: wrong dtype.
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let a = sg.tensor("a", DType::I32, &[4]);
    let b = sg.tensor("b", DType::I32, &[4]);
    let y = sg.tensor("y", DType::I32, &[4]);
    sg.op(
        OpKind::Builtin(BuiltinOp::Add),
        &[Some(a), Some(b)],
        &[y],
        OpOptions::Activation(Activation::None),
    );
    sg.set_inputs(&[a, b]);
    sg.set_outputs(&[y]);
    let model = Model::from_bytes(&mb.finish()).expect("model loads");
    match support_of(&d, &model, 0) {
        Support::Unsupported(why) => assert!(why.contains("float32"), "{why}"),
        Support::Supported => panic!("int32 ADD must be unsupported"),
    }
    // An op without a GPU kernel names itself.
    let model = Model::from_bytes(&single_op(
        BuiltinOp::Exp,
        &[(&[1, 8], None)],
        &[1, 8],
        OpOptions::None,
    ))
    .expect("model loads");
    match support_of(&d, &model, 0) {
        Support::Unsupported(why) => assert!(why.contains("EXP"), "{why}"),
        Support::Supported => panic!("EXP has no GPU kernel"),
    }
    // A parameter the shaders do not handle: grouped convolution.
    let model = Model::from_bytes(&single_op(
        BuiltinOp::Conv2d,
        &[(&[1, 4, 4, 4], None), (&[2, 1, 1, 2], Some(vec![1.0; 4]))],
        &[1, 4, 4, 2],
        OpOptions::Conv(conv_options(Padding::Same, 1, 1, Activation::None)),
    ))
    .expect("model loads");
    match support_of(&d, &model, 0) {
        Support::Unsupported(why) => assert!(why.contains("grouped"), "{why}"),
        Support::Supported => panic!("grouped CONV_2D must be unsupported"),
    }
}

/// The placement path the daemon uses: the interpreter runs the partition on the GPU,
/// keeping the CPU kernels as fallback.
pub(crate) fn run_placed(
    d: Arc<GpuDelegate>,
    bytes: &[u8],
    inputs: &[Tensor],
    timeout: Option<std::time::Duration>,
) -> (Vec<Tensor>, PartitionReport) {
    let model = Arc::new(Model::from_bytes(bytes).expect("model loads"));
    let sg = &model.subgraphs[0];
    let partition = Partition::from_nodes(0, sg, (0..sg.nodes.len()).collect());
    let placed = PlacedPartition {
        partition,
        delegate: d,
        timeout,
    };
    let mut it = Interpreter::with_placement(
        model,
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
        vec![placed],
    )
    .expect("interpreter prepares");
    let views: Vec<_> = inputs.iter().map(Tensor::view).collect();
    let out = it.run(&views).expect("run completes");
    (out, it.partition_reports()[0].clone())
}

#[test]
fn interpreter_runs_a_partition_on_the_gpu() {
    let Some(d) = gpu() else { return };
    let bytes = reshape_chain();
    let x = input(&[1, 4, 6], 160);
    let expected = run_on_cpu(
        Arc::new(Model::from_bytes(&bytes).expect("loads")),
        std::slice::from_ref(&x),
    );
    let (out, report) = run_placed(d, &bytes, &[x], None);
    assert_eq!(report.compile_error, None);
    assert_eq!((report.runs, report.failures), (1, 0), "{report:?}");
    for (a, e) in out.iter().zip(&expected) {
        compare(a, e, f32_tol()).expect("GPU partition matches the CPU");
    }
}

/// A partition whose GPU execution fails (here: its deadline has passed before the
/// device could answer) re-runs on the CPU and the request still completes correctly.
#[test]
fn failed_gpu_execution_falls_back_to_cpu() {
    let Some(d) = gpu() else { return };
    let bytes = reshape_chain();
    let x = input(&[1, 4, 6], 170);
    let expected = run_on_cpu(
        Arc::new(Model::from_bytes(&bytes).expect("loads")),
        std::slice::from_ref(&x),
    );
    let (out, report) = run_placed(d, &bytes, &[x], Some(std::time::Duration::ZERO));
    assert_eq!(report.compile_error, None);
    assert_eq!(report.failures, 1, "{report:?}");
    assert!(
        report
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{report:?}"
    );
    for (a, e) in out.iter().zip(&expected) {
        compare(a, e, Tolerance::Exact).expect("fallback output is the CPU's");
    }
}

#[test]
fn pipelines_are_shared_between_partitions() {
    let Some(d) = gpu() else { return };
    let bytes = reshape_chain();
    let x = input(&[1, 4, 6], 180);
    run_placed(d.clone(), &bytes, std::slice::from_ref(&x), None);
    let after_first = d.pipeline_count();
    run_placed(d.clone(), &bytes, &[x], None);
    assert!(after_first >= 2, "ADD and MUL need pipelines");
    assert_eq!(
        d.pipeline_count(),
        after_first,
        "second compile reuses the cache"
    );
}

/// A real model whose every op the GPU runs (CONV_2D, LEAKY_RELU, MAXIMUM, MAX_POOL_2D,
/// PAD), on LiteRT's golden input.
pub(crate) const WHOLE_MODEL: &str = "oww_embedding_model";

pub(crate) fn real_model(stem: &str) -> (Arc<Model>, Vec<Tensor>) {
    let path = switchyard_testkit::models_dir().join(format!("{stem}.tflite"));
    let model = Model::from_path(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/setup.sh to fetch the models",
            path.display()
        )
    });
    let dir = switchyard_testkit::golden_dir().join(stem);
    let inputs = (0..model.subgraphs[0].inputs.len())
        .map(|i| {
            let p = dir.join(format!("input_{i}.npy"));
            switchyard_interpreter::npy::read(&p)
                .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", p.display()))
        })
        .collect();
    (Arc::new(model), inputs)
}

pub(crate) fn run_with_partitions(
    d: &Arc<GpuDelegate>,
    model: &Arc<Model>,
    inputs: &[Tensor],
    partitions: Vec<Vec<usize>>,
) -> (Vec<Tensor>, Vec<PartitionReport>) {
    let sg = &model.subgraphs[0];
    let placements = partitions
        .into_iter()
        .map(|nodes| PlacedPartition {
            partition: Partition::from_nodes(0, sg, nodes),
            delegate: d.clone(),
            timeout: Some(std::time::Duration::from_secs(120)),
        })
        .collect();
    let mut it = Interpreter::with_placement(
        model.clone(),
        Arc::new(CpuResolver::reference()),
        InterpreterOptions::default(),
        placements,
    )
    .expect("interpreter prepares");
    let views: Vec<_> = inputs.iter().map(Tensor::view).collect();
    let out = it.run(&views).expect("run completes");
    (out, it.partition_reports().to_vec())
}

/// Looser than the per-op 1e-4, and why: in a real model some outputs are small values
/// left after large terms cancel (hand landmarks' world coordinates: 1.4e-4 where the
/// output's largest magnitude is 4.4e-2). The GPU and the CPU round their float32 sums
/// differently (the GPU starts each sum from the bias, its exp differs in the last ulp),
/// so such an element can be off by 1e-3 of itself while every element is within 4e-6
/// of the output's largest magnitude (measured on lavapipe). 1e-3 per element, floored
/// at 1% of the largest magnitude, covers that with room; a wrong kernel misses it by
/// orders of magnitude.
pub(crate) const WHOLE_MODEL_TOLERANCE: Tolerance = Tolerance::Float { rel: 1e-3 };

#[test]
fn whole_model_on_gpu_matches_cpu_reference() {
    let Some(d) = gpu() else { return };
    let (model, inputs) = real_model(WHOLE_MODEL);
    let sg = &model.subgraphs[0];
    for n in 0..sg.nodes.len() {
        assert_eq!(
            support_of(&d, &model, n),
            Support::Supported,
            "node {n} ({})",
            sg.nodes[n].op
        );
    }
    let expected = run_on_cpu(model.clone(), &inputs);
    let (out, reports) =
        run_with_partitions(&d, &model, &inputs, vec![(0..sg.nodes.len()).collect()]);
    assert_eq!(reports[0].compile_error, None);
    assert_eq!(
        (reports[0].runs, reports[0].failures),
        (1, 0),
        "{:?}",
        reports[0]
    );
    for (i, (a, e)) in out.iter().zip(&expected).enumerate() {
        if let Err(msg) = compare(a, e, WHOLE_MODEL_TOLERANCE) {
            panic!("{WHOLE_MODEL} output {i}: {msg}");
        }
    }
}

/// Two GPU partitions with a CPU node between them: tensors cross the boundary both
/// ways and the result is the same.
#[test]
fn split_model_crosses_cpu_gpu_boundaries() {
    let Some(d) = gpu() else { return };
    let (model, inputs) = real_model(WHOLE_MODEL);
    let n = model.subgraphs[0].nodes.len();
    let mid = n / 2;
    let expected = run_on_cpu(model.clone(), &inputs);
    let (out, reports) = run_with_partitions(
        &d,
        &model,
        &inputs,
        vec![(0..mid).collect(), (mid + 1..n).collect()],
    );
    for r in &reports {
        assert_eq!(r.compile_error, None);
        assert_eq!((r.runs, r.failures), (1, 0), "{r:?}");
    }
    for (i, (a, e)) in out.iter().zip(&expected).enumerate() {
        if let Err(msg) = compare(a, e, WHOLE_MODEL_TOLERANCE) {
            panic!("{WHOLE_MODEL} split output {i}: {msg}");
        }
    }
}

/// Maximal runs of consecutive nodes the GPU supports: connected partitions in
/// execution order, as a partitioner would make for a single delegate. Weight decoding
/// of constants (folded at prepare, so nothing to run) belongs to no partition, as the
/// partitioner leaves it, and does not break a run.
pub(crate) fn supported_runs(d: &GpuDelegate, model: &Model) -> Vec<Vec<usize>> {
    let sg = &model.subgraphs[0];
    let folded = |n: usize| {
        let node = &sg.nodes[n];
        matches!(
            node.builtin(),
            Some(BuiltinOp::Dequantize | BuiltinOp::Densify)
        ) && node
            .inputs
            .iter()
            .flatten()
            .all(|&t| sg.tensors[t].data.is_some())
    };
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    for n in 0..model.subgraphs[0].nodes.len() {
        if folded(n) {
            continue;
        }
        if support_of(d, model, n).is_supported() {
            current.push(n);
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// The float MediaPipe models, placed on the GPU wherever it supports the nodes (face
/// detection and hand landmarks entirely; fp16 weights arrive as folded constants).
#[test]
fn real_models_placed_by_support_match_cpu_reference() {
    let Some(d) = gpu() else { return };
    for stem in [
        "mp_face_detection_short_range",
        "mp_hand_landmark_lite",
        "mp_iris_landmark",
        "mp_pose_detection",
        "mp_selfie_segmentation",
        "oww_hey_jarvis",
        "tfm_sine_float",
    ] {
        let (model, inputs) = real_model(stem);
        let runs = supported_runs(&d, &model);
        let placed: usize = runs.iter().map(Vec::len).sum();
        println!(
            "{stem}: {placed} of {} nodes in {} GPU partitions",
            model.subgraphs[0].nodes.len(),
            runs.len()
        );
        assert!(!runs.is_empty(), "{stem}: nothing placed on the GPU");
        let expected = run_on_cpu(model.clone(), &inputs);
        let (out, reports) = run_with_partitions(&d, &model, &inputs, runs);
        for r in &reports {
            assert_eq!(r.compile_error, None, "{stem}");
            assert_eq!((r.runs, r.failures), (1, 0), "{stem}: {r:?}");
        }
        for (i, (a, e)) in out.iter().zip(&expected).enumerate() {
            if let Err(msg) = compare(a, e, WHOLE_MODEL_TOLERANCE) {
                panic!("{stem} output {i}: {msg}");
            }
        }
    }
}

/// `supports` answers from the op descriptors' GPU rules (`switchyard-kernels`, one home
/// per operator) and compile lowers with the ops' own checks: the two agree on every node
/// of the real models and of the models the op tests build. Needs no adapter.
#[test]
fn descriptor_rules_and_lowering_checks_agree() {
    use switchyard_interpreter::ProcessorKind;
    let mut models: Vec<(String, Vec<u8>)> = Vec::new();
    let dir = switchyard_testkit::models_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tflite"))
        .collect();
    files.sort();
    for p in files {
        let bytes = std::fs::read(&p).expect("model readable");
        models.push((p.display().to_string(), bytes));
    }
    use BuiltinOp::{ResizeBilinear, ResizeNearestNeighbor};
    models.extend([
        (
            "resize bilinear".to_string(),
            more_ops::resize_model(ResizeBilinear, &[1, 6, 6, 5], [12, 12], false, true),
        ),
        (
            "resize nearest".to_string(),
            more_ops::resize_model(ResizeNearestNeighbor, &[1, 6, 6, 5], [3, 9], true, false),
        ),
        (
            "transpose conv".to_string(),
            more_ops::transpose_conv_model(
                &[1, 4, 5, 3],
                [2, 3, 3, 3],
                [8, 10],
                2,
                Padding::Same,
                Activation::Relu,
                1,
            ),
        ),
        (
            "mediapipe transpose conv".to_string(),
            more_ops::mediapipe_model(&[1, 8, 8, 16], [1, 2, 2, 16], 2, 2),
        ),
        (
            "softmax".to_string(),
            single_op(
                BuiltinOp::Softmax,
                &[(&[2, 10], None)],
                &[2, 10],
                OpOptions::Softmax { beta: 1.0 },
            ),
        ),
        (
            "depth to space".to_string(),
            single_op(
                BuiltinOp::DepthToSpace,
                &[(&[1, 2, 2, 8], None)],
                &[1, 4, 4, 2],
                OpOptions::DepthToSpace { block_size: 2 },
            ),
        ),
        (
            "exp".to_string(),
            single_op(BuiltinOp::Exp, &[(&[1, 8], None)], &[1, 8], OpOptions::None),
        ),
    ]);
    let mut checked = 0;
    for (name, bytes) in &models {
        let model = Model::from_bytes(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        for sg in &model.subgraphs {
            // Constants as dense bytes (sparse ones expanded).
            let dense: Vec<Option<Vec<u8>>> = sg
                .tensors
                .iter()
                .map(|d| d.data.as_ref().map(|c| c.dense().unwrap().into_owned()))
                .collect();
            let meta = |t: usize| TensorMeta {
                dtype: sg.tensors[t].dtype,
                shape: &sg.tensors[t].shape,
                quant: sg.tensors[t].quant.as_ref(),
                data: dense[t].as_deref(),
                name: &sg.tensors[t].name,
            };
            for (n, node) in sg.nodes.iter().enumerate() {
                let ctx = NodeSupportCtx {
                    subgraph: sg,
                    node,
                    inputs: node.inputs.iter().map(|t| t.map(meta)).collect(),
                    outputs: node.outputs.iter().map(|&t| meta(t)).collect(),
                };
                let rule = switchyard_kernels::supports(ProcessorKind::Gpu, &ctx);
                let check = super::ops::check(&super::ops::NodeView {
                    node,
                    inputs: &ctx.inputs,
                    outputs: &ctx.outputs,
                });
                assert_eq!(
                    rule.is_supported(),
                    check.is_ok(),
                    "{name} node {n} ({}): descriptor {rule:?}, lowering {check:?}",
                    node.op
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked} nodes");
}
