//! Constant folding: a node whose inputs are all known at prepare time (model constants
//! or values folded before it) is evaluated once, here, and its outputs become values of
//! the plan. fp16 weights behind DEQUANTIZE, DENSIFY and shape arithmetic cost nothing
//! per invoke, and every session shares the result.

use super::prepare::{Known, byte_len, kernel_err};
use super::{Plan, PrepareCx};
use crate::error::RunError;
use crate::kernel::OpKernel;
use crate::model::{Node, Subgraph};
use crate::tensor::{AlignedBuf, TensorView, TensorViewMut};

/// Whether `node` can be evaluated at prepare time: it has inputs, all of them known,
/// and none of its outputs is a subgraph output (those must live where callers read).
pub(crate) fn foldable(sg: &Subgraph, node: &Node, known: &Known) -> bool {
    !node.inputs.is_empty()
        && node
            .inputs
            .iter()
            .flatten()
            .all(|&t| known.value(sg, t).is_some())
        && !node.outputs.iter().any(|o| sg.outputs.contains(o))
}

/// Runs `kernel` on the known inputs and records its outputs as folded values.
pub(crate) fn fold(
    plan: &Plan,
    si: usize,
    sg: &Subgraph,
    node: &Node,
    kernel: &dyn OpKernel,
    known: &mut Known,
    cx: &mut PrepareCx,
) -> Result<(), RunError> {
    let err = |e| kernel_err(si, node, e);
    let mut outs: Vec<AlignedBuf> = Vec::with_capacity(node.outputs.len());
    for &o in &node.outputs {
        let len = byte_len(sg.tensors[o].dtype, &known.shapes[o]).map_err(err)?;
        cx.fold(len, &plan.options().prepare)?;
        outs.push(AlignedBuf::try_zeroed(len).map_err(|e| RunError::Memory {
            what: format!("folding node {} of subgraph {si}", node.index),
            requested: e.bytes,
            used: 0,
            limit: plan.options().prepare.max_folded_bytes,
        })?);
    }
    {
        let inputs: Vec<Option<TensorView<'_>>> = node
            .inputs
            .iter()
            .map(|t| {
                t.map(|t| TensorView {
                    dtype: sg.tensors[t].dtype,
                    shape: &known.shapes[t],
                    quant: sg.tensors[t].quant.as_ref(),
                    bytes: known.value(sg, t).unwrap_or_default(),
                })
            })
            .collect();
        let mut outputs: Vec<TensorViewMut<'_>> = node
            .outputs
            .iter()
            .zip(outs.iter_mut())
            .map(|(&o, buf)| TensorViewMut {
                dtype: sg.tensors[o].dtype,
                shape: &known.shapes[o],
                quant: sg.tensors[o].quant.as_ref(),
                bytes: buf.as_mut_slice(),
            })
            .collect();
        kernel.eval(&inputs, &mut outputs).map_err(err)?;
    }
    for (&o, buf) in node.outputs.iter().zip(outs) {
        known.set_folded(o, buf);
    }
    Ok(())
}
