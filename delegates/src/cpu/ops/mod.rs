//! One file per operator (or per tight family sharing one kernel shape), each with its
//! `prepare` and its kernels. This module only routes a node to its file.

pub mod activations;
pub mod batch_matmul;
pub mod binary;
pub mod compare;
pub mod concatenation;
pub mod conv2d;
pub mod depth_to_space;
pub mod depthwise_conv2d;
pub mod fully_connected;
pub mod gather;
pub mod lstm;
pub mod movement;
pub mod pad;
pub mod pool;
pub mod quantize;
pub mod reduce;
pub mod reshape;
pub mod resize;
pub mod softmax;
pub mod split;
pub mod strided_slice;
pub mod transpose;
pub mod transpose_conv;
pub mod unary;

use switchyard_interpreter::{BuiltinOp as B, KernelError, OpKind, PrepareCtx, PreparedKernel};

use super::KernelMode;

/// Name of MediaPipe's transposed convolution with bias, a custom op.
pub const CONV2D_TRANSPOSE_BIAS: &str = "Convolution2DTransposeBias";

type PrepareFn = fn(&PrepareCtx<'_>, KernelMode) -> Result<PreparedKernel, KernelError>;

fn route(op: &OpKind) -> Option<PrepareFn> {
    let f: PrepareFn = match op {
        OpKind::Builtin(b) => match b {
            B::Add
            | B::Sub
            | B::Mul
            | B::Div
            | B::Maximum
            | B::Minimum
            | B::SquaredDifference
            | B::Pow
            | B::FloorDiv
            | B::FloorMod => binary::prepare,
            B::Less | B::LessEqual | B::Greater | B::GreaterEqual | B::Equal | B::NotEqual => {
                compare::prepare
            }
            B::Abs
            | B::Neg
            | B::Log
            | B::Exp
            | B::Sqrt
            | B::Rsqrt
            | B::Square
            | B::Sin
            | B::Cos
            | B::Floor
            | B::Ceil
            | B::Round
            | B::LogicalNot => unary::prepare,
            B::Relu
            | B::Relu6
            | B::ReluN1To1
            | B::Tanh
            | B::Logistic
            | B::HardSwish
            | B::LeakyRelu
            | B::Prelu
            | B::Gelu
            | B::Elu => activations::prepare,
            B::Softmax | B::LogSoftmax => softmax::prepare,
            B::Quantize | B::Dequantize | B::Cast => quantize::prepare,
            B::Conv2d => conv2d::prepare,
            B::DepthwiseConv2d => depthwise_conv2d::prepare,
            B::TransposeConv => transpose_conv::prepare,
            B::FullyConnected => fully_connected::prepare,
            B::BatchMatmul => batch_matmul::prepare,
            B::UnidirectionalSequenceLstm => lstm::prepare,
            B::Reshape | B::Squeeze | B::ExpandDims | B::Densify => reshape::prepare,
            B::Concatenation | B::Pack => concatenation::prepare,
            B::Split | B::SplitV | B::Unpack => split::prepare,
            B::StridedSlice | B::Slice => strided_slice::prepare,
            B::Transpose => transpose::prepare,
            B::Pad | B::PadV2 | B::MirrorPad => pad::prepare,
            B::Gather => gather::prepare,
            B::DepthToSpace | B::SpaceToDepth => depth_to_space::prepare,
            B::MaxPool2d | B::AveragePool2d => pool::prepare,
            B::Mean | B::Sum | B::ReduceMax | B::ReduceMin | B::ReduceProd => reduce::prepare,
            B::ResizeBilinear | B::ResizeNearestNeighbor => resize::prepare,
            _ => return None,
        },
        OpKind::Custom(name) if name == CONV2D_TRANSPOSE_BIAS => transpose_conv::prepare,
        _ => return None,
    };
    Some(f)
}

/// Whether some CPU kernel handles `op`.
pub fn is_supported(op: &OpKind) -> bool {
    route(op).is_some()
}

/// Prepares a node on the CPU; unknown ops get an error naming them.
pub fn prepare(ctx: &PrepareCtx<'_>, mode: KernelMode) -> Result<PreparedKernel, KernelError> {
    match route(ctx.op()) {
        Some(f) => f(ctx, mode),
        None => Err(KernelError::unsupported(format!(
            "operator {} has no CPU kernel",
            ctx.op()
        ))),
    }
}

/// Helpers shared by the per-op tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use switchyard_interpreter::{Interpreter, KernelError, Model, OpResolver, RunError};

    use crate::cpu::CpuResolver;

    /// Both CPU kernel families, for `assert_matches_litert`.
    pub fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    /// Loads `model` and expects preparing it on the CPU to fail in a node's prepare;
    /// returns that node's error.
    pub fn prepare_error(model: &[u8]) -> KernelError {
        let model = Arc::new(Model::from_bytes(model).expect("test model loads"));
        match Interpreter::new(
            model,
            Arc::new(CpuResolver::reference()),
            Default::default(),
        ) {
            Ok(_) => panic!("prepare accepted a bad node"),
            Err(RunError::Node { error, .. }) => error,
            Err(other) => panic!("expected a node error, got {other}"),
        }
    }
}
