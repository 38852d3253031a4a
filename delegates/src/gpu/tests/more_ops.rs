//! Parity of the ops that took the float models' last nodes onto the GPU: SOFTMAX,
//! RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR, TRANSPOSE_CONV and MediaPipe's
//! Convolution2DTransposeBias, DEPTH_TO_SPACE — in every variant.

use switchyard_interpreter::builder::ModelBuilder;
use switchyard_interpreter::ops::ConvOptions;
use switchyard_interpreter::{Activation, BuiltinOp, DType, OpKind, OpOptions, Padding};

use super::{assert_parity, f32_tol, input, single_op, values, variants};
use crate::cpu::ops::CONV2D_TRANSPOSE_BIAS;

#[test]
fn softmax_matches_cpu() {
    for v in variants() {
        let cases: [(&[usize], f32); 3] = [(&[1, 10], 1.0), (&[3, 5, 300], 0.5), (&[2, 1001], 1.0)];
        for (k, (shape, beta)) in cases.into_iter().enumerate() {
            let model = single_op(
                BuiltinOp::Softmax,
                &[(shape, None)],
                shape,
                OpOptions::Softmax { beta },
            );
            assert_parity(
                &format!("SOFTMAX case {k}"),
                &v.d,
                &model,
                &[input(shape, 200 + k as u64)],
                f32_tol(),
            );
        }
    }
}

pub(crate) fn resize_model(
    op: BuiltinOp,
    x: &[usize],
    hw: [usize; 2],
    align: bool,
    half: bool,
) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let xt = sg.tensor("x", DType::F32, x);
    let size = sg.constant_i32("size", &[2], &[hw[0] as i32, hw[1] as i32]);
    let y = sg.tensor("y", DType::F32, &[x[0], hw[0], hw[1], x[3]]);
    sg.op(
        OpKind::Builtin(op),
        &[Some(xt), Some(size)],
        &[y],
        OpOptions::Resize {
            align_corners: align,
            half_pixel_centers: half,
        },
    );
    sg.set_inputs(&[xt]);
    sg.set_outputs(&[y]);
    mb.finish()
}

#[test]
fn resizes_match_cpu() {
    use BuiltinOp::{ResizeBilinear as Bi, ResizeNearestNeighbor as Ne};
    // (op, input, output size, align_corners, half_pixel_centers)
    type Case = (BuiltinOp, &'static [usize], [usize; 2], bool, bool);
    let cases: [Case; 6] = [
        (Bi, &[1, 16, 16, 8], [32, 32], false, true),
        (Bi, &[2, 5, 7, 3], [9, 13], true, false),
        (Bi, &[1, 6, 6, 5], [12, 12], false, false),
        // Downsampling: patches too large to stage, read directly.
        (Bi, &[1, 40, 40, 4], [7, 9], false, true),
        (Ne, &[1, 6, 6, 5], [12, 18], false, true),
        (Ne, &[1, 7, 7, 2], [4, 4], true, false),
    ];
    for v in variants() {
        for (k, (op, x, hw, align, half)) in cases.into_iter().enumerate() {
            assert_parity(
                &format!("{op:?} case {k}"),
                &v.d,
                &resize_model(op, x, hw, align, half),
                &[input(x, 210 + k as u64)],
                f32_tol(),
            );
        }
    }
}

/// Builtin TRANSPOSE_CONV: (output_shape, weights [oc, kh, kw, ic], input, bias).
pub(crate) fn transpose_conv_model(
    x: &[usize],
    filter: [usize; 4],
    out_hw: [usize; 2],
    stride: usize,
    padding: Padding,
    act: Activation,
    seed: u64,
) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let xt = sg.tensor("x", DType::F32, x);
    let out = [x[0], out_hw[0], out_hw[1], filter[0]];
    let shape = sg.constant_i32("output_shape", &[4], &out.map(|d| d as i32));
    let w = sg.constant_f32(
        "w",
        &filter,
        &values(filter.iter().product(), seed, -1.0, 1.0),
    );
    let b = sg.constant_f32("b", &[filter[0]], &values(filter[0], seed + 1, -1.0, 1.0));
    let y = sg.tensor("y", DType::F32, &out);
    sg.op_versioned(
        OpKind::Builtin(BuiltinOp::TransposeConv),
        4,
        &[Some(shape), Some(w), Some(xt), Some(b)],
        &[y],
        OpOptions::Conv(ConvOptions {
            padding,
            stride_h: stride,
            stride_w: stride,
            dilation_h: 1,
            dilation_w: 1,
            activation: act,
            depth_multiplier: 0,
        }),
    );
    sg.set_inputs(&[xt]);
    sg.set_outputs(&[y]);
    mb.finish()
}

/// MediaPipe's Convolution2DTransposeBias: (input, weights, bias) and three int32
/// options (padding code, stride width, stride height).
pub(crate) fn mediapipe_model(
    x: &[usize],
    filter: [usize; 4],
    stride: usize,
    seed: u64,
) -> Vec<u8> {
    let mut mb = ModelBuilder::new();
    let sg = mb.main();
    let xt = sg.tensor("x", DType::F32, x);
    let w = sg.constant_f32(
        "w",
        &filter,
        &values(filter.iter().product(), seed, -1.0, 1.0),
    );
    let b = sg.constant_f32("b", &[filter[0]], &values(filter[0], seed + 1, -1.0, 1.0));
    // SAME: out = stride * (in - 1) + k - max(0, k - (in - 1) % stride - 1).
    let size = |i: usize, k: usize| {
        let total = (k as i64 - ((i - 1) % stride) as i64 - 1).max(0) as usize;
        stride * (i - 1) + k - total
    };
    let y = sg.tensor(
        "y",
        DType::F32,
        &[
            x[0],
            size(x[1], filter[1]),
            size(x[2], filter[2]),
            filter[0],
        ],
    );
    let options: Vec<u8> = [1i32, stride as i32, stride as i32]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    sg.op(
        OpKind::Custom(CONV2D_TRANSPOSE_BIAS.into()),
        &[Some(xt), Some(w), Some(b)],
        &[y],
        OpOptions::Custom(options),
    );
    sg.set_inputs(&[xt]);
    sg.set_outputs(&[y]);
    mb.finish()
}

#[test]
fn transposed_convolutions_match_cpu() {
    for v in variants() {
        let builtin = [
            (
                &[1usize, 4, 5, 3][..],
                [2, 3, 3, 3],
                [8, 10],
                2,
                Padding::Same,
                Activation::Relu,
            ),
            (
                &[2, 3, 3, 6],
                [5, 2, 2, 6],
                [6, 6],
                2,
                Padding::Valid,
                Activation::None,
            ),
            (
                &[1, 5, 5, 4],
                [3, 3, 3, 4],
                [5, 5],
                1,
                Padding::Same,
                Activation::Relu6,
            ),
        ];
        for (k, (x, f, hw, s, pad, act)) in builtin.into_iter().enumerate() {
            assert_parity(
                &format!("TRANSPOSE_CONV case {k}"),
                &v.d,
                &transpose_conv_model(x, f, hw, s, pad, act, 220 + k as u64),
                &[input(x, 230 + k as u64)],
                f32_tol(),
            );
        }
        // The selfie segmenter's shape (2x2, stride 2, 16 -> 1 channel), and a filter
        // slice too large to stage in workgroup memory.
        let custom: [(&[usize], [usize; 4], usize); 2] = [
            (&[1, 8, 8, 16], [1, 2, 2, 16], 2),
            (&[1, 4, 4, 300], [2, 3, 3, 300], 2),
        ];
        for (k, (x, f, s)) in custom.into_iter().enumerate() {
            assert_parity(
                &format!("Convolution2DTransposeBias case {k}"),
                &v.d,
                &mediapipe_model(x, f, s, 240 + k as u64),
                &[input(x, 250 + k as u64)],
                f32_tol(),
            );
        }
    }
}

#[test]
fn depth_to_space_matches_cpu() {
    for v in variants() {
        let cases: [(&[usize], usize); 2] = [(&[1, 4, 5, 12], 2), (&[2, 3, 3, 9], 3)];
        for (k, (x, b)) in cases.into_iter().enumerate() {
            let out = [x[0], x[1] * b, x[2] * b, x[3] / (b * b)];
            let model = single_op(
                BuiltinOp::DepthToSpace,
                &[(x, None)],
                &out,
                OpOptions::DepthToSpace { block_size: b },
            );
            assert_parity(
                &format!("DEPTH_TO_SPACE case {k}"),
                &v.d,
                &model,
                &[input(x, 260 + k as u64)],
                f32_tol(),
            );
        }
    }
}

/// A filter known only at run time is read in its own layout (no repacking).
#[test]
fn conv2d_with_a_runtime_filter_matches_cpu() {
    use super::conv_options;
    for v in variants() {
        let x: &[usize] = &[1, 6, 6, 5];
        let f: &[usize] = &[7, 3, 3, 5];
        let model = single_op(
            BuiltinOp::Conv2d,
            &[(x, None), (f, None)],
            &[1, 6, 6, 7],
            OpOptions::Conv(conv_options(Padding::Same, 1, 1, Activation::Relu)),
        );
        assert_parity(
            "CONV_2D runtime filter",
            &v.d,
            &model,
            &[input(x, 270), input(f, 271)],
            f32_tol(),
        );
    }
}
