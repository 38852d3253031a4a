//! What one node costs an emulated device, counted from shapes alone so the virtual
//! clock is deterministic: the same partition always takes the same device time.
//!
//! The counts are the op descriptors' work estimates (`switchyard_kernels::work`), the
//! same the scheduler's cost model uses; [`DeviceProfile::estimate_seconds`] turns them
//! into time.

use std::time::Duration;

use switchyard_config::DeviceProfile;
use switchyard_interpreter::Node;

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

/// Work of `node`, given the resolved shape of every tensor of its subgraph: the
/// op descriptor's estimate (`switchyard_kernels::work`).
pub fn node_work(node: &Node, shape: impl Fn(usize) -> Vec<usize>) -> Work {
    let w = switchyard_kernels::node_work(node, &shape);
    Work {
        macs: w.macs,
        elements: w.elements,
        bytes: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_interpreter::ops::{ConvOptions, PoolOptions};
    use switchyard_interpreter::{BuiltinOp, OpKind, OpOptions};

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
