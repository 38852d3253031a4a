//! What one node costs an emulated device, counted from shapes alone so the virtual
//! clock is deterministic: the same partition always takes the same device time.
//!
//! Convolutions and matrix products count multiply-accumulates (one per weight tap per
//! output element); pooling counts one element operation per window tap; every other
//! op counts one element operation per output element. These are the numbers
//! [`DeviceProfile::estimate_seconds`] turns into time.

use std::time::Duration;

use switchyard_config::DeviceProfile;
use switchyard_interpreter::{BuiltinOp, Node, OpOptions};

/// Work of one node or one whole partition run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub macs: f64,
    pub elements: f64,
    /// Bytes moved between host and device.
    pub bytes: f64,
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, other: Work) -> Work {
        Work {
            macs: self.macs + other.macs,
            elements: self.elements + other.elements,
            bytes: self.bytes + other.bytes,
        }
    }
}

impl Work {
    /// Device time under `profile`: dispatch overhead plus compute plus transfer.
    pub fn device_time(&self, profile: &DeviceProfile) -> Duration {
        let s = profile.estimate_seconds(self.macs, self.elements, self.bytes);
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    }
}

fn count(shape: &[usize]) -> f64 {
    shape.iter().map(|&d| d as f64).product()
}

/// Work of `node`, given the resolved shape of every tensor of its subgraph.
pub fn node_work(node: &Node, shape: impl Fn(usize) -> Vec<usize>) -> Work {
    let out_elems: f64 = node.outputs.iter().map(|&o| count(&shape(o))).sum();
    let weights = node.inputs.get(1).copied().flatten().map(&shape);
    let macs = |per_output: f64| Work {
        macs: out_elems * per_output,
        ..Work::default()
    };
    match (node.builtin(), &node.options) {
        // Weights [out_c, kh, kw, in_c/groups]: one MAC per tap per output element.
        (Some(BuiltinOp::Conv2d), _) => match weights.as_deref() {
            Some([_, kh, kw, ic]) => macs((kh * kw * ic) as f64),
            _ => macs(1.0),
        },
        // Weights [1, kh, kw, out_c]: each output element sees one channel's window.
        (Some(BuiltinOp::DepthwiseConv2d), _) => match weights.as_deref() {
            Some([_, kh, kw, _]) => macs((kh * kw) as f64),
            _ => macs(1.0),
        },
        // Weights [units, in]: each output element is one dot product of length `in`.
        (Some(BuiltinOp::FullyConnected), _) => match weights.as_deref() {
            Some([.., k]) => macs(*k as f64),
            _ => macs(1.0),
        },
        (Some(BuiltinOp::BatchMatmul), _) => {
            let a = node.inputs.first().copied().flatten().map(&shape);
            match a.as_deref() {
                Some([.., k]) => macs(*k as f64),
                _ => macs(1.0),
            }
        }
        (
            Some(BuiltinOp::MaxPool2d | BuiltinOp::AveragePool2d | BuiltinOp::L2Pool2d),
            OpOptions::Pool(p),
        ) => Work {
            elements: out_elems * (p.filter_h * p.filter_w).max(1) as f64,
            ..Work::default()
        },
        _ => Work {
            elements: out_elems,
            ..Work::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_interpreter::OpKind;
    use switchyard_interpreter::ops::{ConvOptions, PoolOptions};

    fn node(op: BuiltinOp, inputs: &[usize], outputs: &[usize], options: OpOptions) -> Node {
        Node {
            index: 0,
            op: OpKind::Builtin(op),
            version: 1,
            options,
            inputs: inputs.iter().map(|&t| Some(t)).collect(),
            outputs: outputs.to_vec(),
        }
    }

    #[test]
    fn convolutions_count_one_mac_per_tap() {
        // x [1,8,8,3], w [16,3,3,3], y [1,8,8,16]: 1024 outputs x 27 taps.
        let shapes = [
            vec![1, 8, 8, 3],
            vec![16, 3, 3, 3],
            vec![16],
            vec![1, 8, 8, 16],
        ];
        let conv = node(
            BuiltinOp::Conv2d,
            &[0, 1, 2],
            &[3],
            OpOptions::Conv(ConvOptions::default()),
        );
        let w = node_work(&conv, |t| shapes[t].clone());
        assert_eq!(w.macs, 1024.0 * 27.0);
        assert_eq!(w.elements, 0.0);

        let shapes = [
            vec![1, 8, 8, 16],
            vec![1, 3, 3, 16],
            vec![16],
            vec![1, 8, 8, 16],
        ];
        let dw = node(
            BuiltinOp::DepthwiseConv2d,
            &[0, 1, 2],
            &[3],
            OpOptions::Conv(ConvOptions::default()),
        );
        assert_eq!(node_work(&dw, |t| shapes[t].clone()).macs, 1024.0 * 9.0);

        let shapes = [vec![1, 64], vec![10, 64], vec![10], vec![1, 10]];
        let fc = node(BuiltinOp::FullyConnected, &[0, 1, 2], &[3], OpOptions::None);
        assert_eq!(node_work(&fc, |t| shapes[t].clone()).macs, 640.0);
    }

    #[test]
    fn pooling_counts_window_taps_and_other_ops_outputs() {
        let shapes = [vec![1, 8, 8, 4], vec![1, 4, 4, 4]];
        let pool = node(
            BuiltinOp::MaxPool2d,
            &[0],
            &[1],
            OpOptions::Pool(PoolOptions {
                filter_h: 2,
                filter_w: 2,
                ..Default::default()
            }),
        );
        assert_eq!(node_work(&pool, |t| shapes[t].clone()).elements, 64.0 * 4.0);
        let add = node(BuiltinOp::Add, &[0, 0], &[1], OpOptions::None);
        assert_eq!(
            node_work(&add, |t| shapes[t].clone()),
            Work {
                elements: 64.0,
                ..Default::default()
            }
        );
    }
}
