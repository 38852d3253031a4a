//! The contract between the executor and whoever implements operators.
//!
//! An [`OpResolver`] turns one node plus what is known about its inputs (dtype, shape,
//! quantization, and the value when constant) into a [`PreparedKernel`]: the output
//! shapes and an [`OpKernel`] whose `eval` only computes. All validation happens in
//! `prepare`, so `eval` may assume shapes and dtypes are consistent.
//!
//! Buffers may move between invocations: a kernel must not keep pointers into the views
//! it is given.

use crate::error::KernelError;
use crate::model::{Node, Subgraph};
use crate::ops::OpKind;
use crate::tensor::{DType, Quant, TensorView, TensorViewMut};

/// What prepare knows about one tensor.
#[derive(Clone, Copy, Debug)]
pub struct TensorMeta<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub quant: Option<&'a Quant>,
    /// The value, when it is known at prepare time (constants and folded tensors).
    pub data: Option<&'a [u8]>,
    pub name: &'a str,
}

impl<'a> TensorMeta<'a> {
    /// A view of the known value, if any.
    pub fn value(&self) -> Option<TensorView<'a>> {
        self.data.map(|bytes| TensorView {
            dtype: self.dtype,
            shape: self.shape,
            quant: self.quant,
            bytes,
        })
    }

    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The metas of `node`'s intermediate tensors as stored in `sg` (for building a
/// [`PrepareCtx`] outside the executor). Indices were checked at load.
pub fn intermediate_metas<'a>(sg: &'a Subgraph, node: &'a Node) -> Vec<TensorMeta<'a>> {
    node.intermediates
        .iter()
        .filter_map(|&t| sg.tensors.get(t))
        .map(|d| TensorMeta {
            dtype: d.dtype,
            shape: &d.shape,
            quant: d.quant.as_ref(),
            data: None,
            name: &d.name,
        })
        .collect()
}

/// Everything prepare may look at for one node.
#[derive(Debug)]
pub struct PrepareCtx<'a> {
    pub node: &'a Node,
    /// One entry per node input; `None` for an omitted optional input.
    pub inputs: Vec<Option<TensorMeta<'a>>>,
    /// Output dtype and quantization come from the model; `shape` is the stored shape,
    /// which prepare is expected to recompute.
    pub outputs: Vec<TensorMeta<'a>>,
    /// The node's intermediate tensors (`Node::intermediates`): quantization parameters
    /// only, no data. Empty for every node that has none.
    pub intermediates: Vec<TensorMeta<'a>>,
    /// Worker threads the kernel may use.
    pub threads: usize,
}

impl<'a> PrepareCtx<'a> {
    pub fn op(&self) -> &OpKind {
        &self.node.op
    }

    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<TensorMeta<'a>, KernelError> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| KernelError::invalid(format!("missing input {i}")))
    }

    /// Input `i` when present (optional inputs such as a bias).
    pub fn optional_input(&self, i: usize) -> Option<TensorMeta<'a>> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn output(&self, i: usize) -> Result<TensorMeta<'a>, KernelError> {
        self.outputs
            .get(i)
            .copied()
            .ok_or_else(|| KernelError::invalid(format!("missing output {i}")))
    }

    /// Checks the node has between `min` and `max` inputs and exactly `outputs` outputs.
    pub fn expect_arity(&self, min: usize, max: usize, outputs: usize) -> Result<(), KernelError> {
        let n = self.inputs.len();
        if n < min || n > max {
            return Err(KernelError::invalid(format!(
                "expects {min}..={max} inputs, has {n}"
            )));
        }
        if self.outputs.len() != outputs {
            return Err(KernelError::invalid(format!(
                "expects {outputs} outputs, has {}",
                self.outputs.len()
            )));
        }
        Ok(())
    }
}

/// A kernel ready to run: weights packed, parameters fixed.
pub trait OpKernel: Send + Sync {
    /// Computes outputs from inputs. `inputs[i]` is `None` for omitted optional inputs.
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError>;

    /// Node inputs this kernel updates in place (variable tensors such as LSTM state).
    /// The executor passes them as extra outputs after the node's own outputs, in this
    /// order, and as `None` among the inputs.
    fn mutated_inputs(&self) -> &[usize] {
        &[]
    }

    /// Node inputs this kernel copied into its own form at prepare (packed weights,
    /// bias) and never reads at run time. The executor passes them as `None`, and a plan
    /// drops a value folded at prepare that nothing else reads: a float copy of fp16
    /// weights would otherwise stay beside their packed copy for the plan's lifetime.
    fn consumed_inputs(&self) -> &[usize] {
        &[]
    }

    /// Short name for profiles, e.g. "conv2d/f32/im2col".
    fn name(&self) -> &str {
        "kernel"
    }

    /// Bytes this kernel holds beyond the model (packed weights, tables). A plan charges
    /// them once, however many sessions run it; 0 when the kernel keeps nothing.
    fn memory_bytes(&self) -> usize {
        0
    }
}

/// The result of preparing one node.
pub struct PreparedKernel {
    pub output_shapes: Vec<Vec<usize>>,
    pub kernel: Box<dyn OpKernel>,
}

impl PreparedKernel {
    pub fn new(output_shapes: Vec<Vec<usize>>, kernel: impl OpKernel + 'static) -> Self {
        PreparedKernel {
            output_shapes,
            kernel: Box::new(kernel),
        }
    }
}

/// Provides kernels for nodes (the CPU delegate's registry implements this).
pub trait OpResolver: Send + Sync {
    /// Prepares `ctx.node`, or explains why it cannot (an unsupported op names itself).
    fn prepare(&self, ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError>;

    /// An upper bound on the elementary operations (multiply-accumulates, element
    /// operations, elements read and written) one eval of the prepared node does, or
    /// `None` when the resolver cannot say. The run budget is checked between nodes, so
    /// this is what bounds the work of a single node: the plan refuses a node above
    /// [`crate::PrepareLimits::max_node_work`].
    fn work_bound(&self, _ctx: &PrepareCtx<'_>, _output_shapes: &[Vec<usize>]) -> Option<f64> {
        None
    }
}

/// A kernel defined by a closure, handy for simple ops and tests.
pub struct FnKernel<F> {
    name: &'static str,
    f: F,
}

impl<F> FnKernel<F>
where
    F: Fn(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<(), KernelError>
        + Send
        + Sync,
{
    pub fn new(name: &'static str, f: F) -> Self {
        FnKernel { name, f }
    }
}

impl<F> OpKernel for FnKernel<F>
where
    F: Fn(&[Option<TensorView<'_>>], &mut [TensorViewMut<'_>]) -> Result<(), KernelError>
        + Send
        + Sync,
{
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        (self.f)(inputs, outputs)
    }
    fn name(&self) -> &str {
        self.name
    }
}

/// Input `i` of an eval call, which must be present.
pub fn input<'a, 'b>(
    inputs: &'b [Option<TensorView<'a>>],
    i: usize,
) -> Result<&'b TensorView<'a>, KernelError> {
    inputs
        .get(i)
        .and_then(|t| t.as_ref())
        .ok_or_else(|| KernelError::invalid(format!("missing input {i}")))
}
