//! One file per operator (or per tight family sharing one kernel shape), each with its
//! descriptors (`DESCRIPTORS`: prepare for both registries, support rules per processor,
//! work estimate) and its kernels. `crate::registry` collects the descriptors.

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
pub mod hybrid;
pub mod int8_norm;
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

/// Name of MediaPipe's transposed convolution with bias, a custom op.
pub const CONV2D_TRANSPOSE_BIAS: &str = "Convolution2DTransposeBias";

/// Whether some CPU kernel handles `op`.
pub fn is_supported(op: &switchyard_interpreter::OpKind) -> bool {
    crate::registry::descriptor(op).is_some()
}

/// Helpers shared by the per-op tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use switchyard_interpreter::{Interpreter, KernelError, Model, OpResolver, RunError};

    use crate::CpuResolver;

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
