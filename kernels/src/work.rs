//! How much work one node is, counted from shapes alone: the input of every cost model
//! (the scheduler's priors and the emulated devices' virtual clocks), so both count the
//! same thing and an emulated device's time stays deterministic.
//!
//! Convolutions and matrix products count multiply-accumulates (one per weight tap per
//! output element); pooling counts one element operation per window tap; every other op
//! one element operation per output element.

use switchyard_interpreter::{Node, OpOptions};

/// Work of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpWork {
    /// Multiply-accumulates (convolutions, matrix products, recurrent gates).
    pub macs: f64,
    /// Simple element operations (elementwise, pooling taps, copies).
    pub elements: f64,
}

/// What a work estimate sees: the node and the resolved shape of any tensor of its
/// subgraph (empty when unknown).
pub struct WorkCtx<'a> {
    pub node: &'a Node,
    pub shape: &'a dyn Fn(usize) -> Vec<usize>,
}

impl WorkCtx<'_> {
    /// Shape of node input `i` (empty when absent).
    pub fn input(&self, i: usize) -> Vec<usize> {
        self.node
            .inputs
            .get(i)
            .copied()
            .flatten()
            .map(|t| (self.shape)(t))
            .unwrap_or_default()
    }

    /// Elements over all outputs.
    pub fn output_elements(&self) -> f64 {
        self.node
            .outputs
            .iter()
            .map(|&o| count(&(self.shape)(o)))
            .sum()
    }

    fn macs(&self, per_output: f64) -> OpWork {
        OpWork {
            macs: self.output_elements() * per_output,
            elements: 0.0,
        }
    }
}

pub type WorkFn = fn(&WorkCtx<'_>) -> OpWork;

fn count(shape: &[usize]) -> f64 {
    shape.iter().map(|&d| d as f64).product()
}

/// One element operation per output element.
pub fn elementwise(w: &WorkCtx<'_>) -> OpWork {
    OpWork {
        macs: 0.0,
        elements: w.output_elements(),
    }
}

/// CONV_2D, weights [out_c, kh, kw, in_c/groups]: one MAC per tap per output element.
pub fn conv2d(w: &WorkCtx<'_>) -> OpWork {
    match w.input(1).as_slice() {
        [_, kh, kw, ic] => w.macs((kh * kw * ic) as f64),
        _ => w.macs(1.0),
    }
}

/// DEPTHWISE_CONV_2D, weights [1, kh, kw, out_c]: each output element sees one
/// channel's window.
pub fn depthwise(w: &WorkCtx<'_>) -> OpWork {
    match w.input(1).as_slice() {
        [_, kh, kw, _] => w.macs((kh * kw) as f64),
        _ => w.macs(1.0),
    }
}

/// FULLY_CONNECTED, weights [units, in]: one dot product of length `in` per output.
pub fn fully_connected(w: &WorkCtx<'_>) -> OpWork {
    match w.input(1).as_slice() {
        [.., k] => w.macs(*k as f64),
        _ => w.macs(1.0),
    }
}

/// BATCH_MATMUL: one dot product along the first operand's last axis per output.
pub fn batch_matmul(w: &WorkCtx<'_>) -> OpWork {
    match w.input(0).as_slice() {
        [.., k] => w.macs(*k as f64),
        _ => w.macs(1.0),
    }
}

/// TRANSPOSE_CONV, inputs (output_shape, weights [out_c, kh, kw, in_c], input): every
/// input element scatters into kh·kw·out_c outputs.
pub fn transpose_conv(w: &WorkCtx<'_>) -> OpWork {
    let (wt, x) = (w.input(1), w.input(2));
    match wt.as_slice() {
        [oc, kh, kw, _] => OpWork {
            macs: count(&x) * (oc * kh * kw) as f64,
            elements: 0.0,
        },
        _ => w.macs(1.0),
    }
}

/// The LSTM family: four gates over [input, hidden] per output element.
pub fn lstm(w: &WorkCtx<'_>) -> OpWork {
    let k = w.input(0).last().copied().unwrap_or(0)
        + w.node
            .outputs
            .first()
            .and_then(|&o| (w.shape)(o).last().copied())
            .unwrap_or(0);
    w.macs(4.0 * k as f64)
}

/// Pooling: one element operation per window tap per output element.
pub fn pool(w: &WorkCtx<'_>) -> OpWork {
    let taps = match &w.node.options {
        OpOptions::Pool(p) => (p.filter_h * p.filter_w).max(1),
        _ => 1,
    };
    OpWork {
        macs: 0.0,
        elements: w.output_elements() * taps as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_interpreter::ops::{ConvOptions, PoolOptions};
    use switchyard_interpreter::{BuiltinOp, OpKind};

    fn node(op: BuiltinOp, inputs: &[usize], outputs: &[usize], options: OpOptions) -> Node {
        Node {
            index: 0,
            op: OpKind::Builtin(op),
            version: 1,
            options,
            inputs: inputs.iter().map(|&t| Some(t)).collect(),
            outputs: outputs.to_vec(),
            intermediates: Vec::new(),
        }
    }

    fn work(n: &Node, shapes: &[Vec<usize>]) -> OpWork {
        crate::registry::node_work(n, &|t| shapes[t].clone())
    }

    #[test]
    fn convolutions_and_products_count_one_mac_per_tap() {
        let shapes = vec![
            vec![1, 8, 8, 3],
            vec![16, 3, 3, 3],
            vec![1, 8, 8, 16],
            vec![1, 3, 3, 16],
            vec![10, 64],
            vec![2, 10],
            vec![2, 64],
        ];
        let conv = node(
            BuiltinOp::Conv2d,
            &[0, 1],
            &[2],
            OpOptions::Conv(ConvOptions::default()),
        );
        assert_eq!(work(&conv, &shapes).macs, 1024.0 * 27.0);
        let dw = node(
            BuiltinOp::DepthwiseConv2d,
            &[2, 3],
            &[2],
            OpOptions::Conv(ConvOptions::default()),
        );
        assert_eq!(work(&dw, &shapes).macs, 1024.0 * 9.0);
        let fc = node(BuiltinOp::FullyConnected, &[6, 4], &[5], OpOptions::None);
        assert_eq!(work(&fc, &shapes).macs, 20.0 * 64.0);
        let pool = node(
            BuiltinOp::MaxPool2d,
            &[2],
            &[2],
            OpOptions::Pool(PoolOptions {
                filter_h: 2,
                filter_w: 3,
                ..Default::default()
            }),
        );
        assert_eq!(
            work(&pool, &shapes),
            OpWork {
                macs: 0.0,
                elements: 1024.0 * 6.0
            }
        );
        let add = node(BuiltinOp::Add, &[2, 2], &[2], OpOptions::None);
        assert_eq!(
            work(&add, &shapes),
            OpWork {
                macs: 0.0,
                elements: 1024.0
            }
        );
    }
}
