//! The cost model: expected seconds for a partition on a processor.
//!
//! Before anything ran, a device profile's numbers (clock, MACs per cycle, dispatch
//! overhead, bandwidth) turn a partition's work into a prior. Once the partition has
//! run there, an exponentially weighted moving average of the observed times replaces
//! the prior, so a profile that flatters a device is corrected by the device itself.
//! Tensors crossing between processors pay both sides' transfer bandwidth (through host
//! memory).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use switchyard_config::{DeviceProfile, DeviceProfiles};
use switchyard_interpreter::ProcessorKind;

use crate::graph::{GraphInfo, Work};

/// Measured times of one (partition, processor).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub mean_s: f64,
    pub samples: u64,
}

/// What the cost model expects, and where the figure came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The figure to plan with: the measurement when there is one, else the prior.
    pub seconds: f64,
    pub prior_s: f64,
    pub measured: Option<Measured>,
}

/// Priors from profiles, replaced by measurements.
#[derive(Clone, Debug)]
pub struct CostModel {
    profiles: DeviceProfiles,
    alpha: f64,
    /// Per processor: measured/prior ratio learned from whole-model runs (calibration).
    scale: HashMap<ProcessorKind, f64>,
    measured: HashMap<(String, ProcessorKind), Measured>,
}

/// Key of a partition for measurements: the model and its nodes.
pub fn partition_key(model_sha: &str, nodes: &[usize]) -> String {
    let list: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("{model_sha}:{}", list.join(","))
}

impl CostModel {
    pub fn new(profiles: DeviceProfiles, alpha: f64) -> CostModel {
        CostModel {
            profiles,
            alpha: alpha.clamp(1e-6, 1.0),
            scale: HashMap::new(),
            measured: HashMap::new(),
        }
    }

    pub fn profile(&self, kind: ProcessorKind) -> &DeviceProfile {
        match kind {
            ProcessorKind::Cpu => &self.profiles.cpu,
            ProcessorKind::Gpu => &self.profiles.gpu,
            ProcessorKind::Dsp => &self.profiles.dsp,
            ProcessorKind::Npu => &self.profiles.npu,
        }
    }

    /// Scales all priors of `kind`, e.g. after timing a whole model on the real CPU.
    pub fn calibrate(&mut self, kind: ProcessorKind, measured_over_prior: f64) {
        if measured_over_prior.is_finite() && measured_over_prior > 0.0 {
            self.scale.insert(kind, measured_over_prior);
        }
    }

    /// Prior seconds for `work` on `kind`, dispatch included, transfers excluded.
    pub fn prior_seconds(&self, kind: ProcessorKind, work: Work) -> f64 {
        let p = self.profile(kind);
        p.estimate_seconds(work.macs, work.elements, 0.0) * self.scale.get(&kind).unwrap_or(&1.0)
    }

    /// Seconds to move `bytes` from one processor to another (zero when they are the
    /// same): read out over `from`'s link and in over `to`'s.
    pub fn transfer_seconds(&self, bytes: usize, from: ProcessorKind, to: ProcessorKind) -> f64 {
        if from == to || bytes == 0 {
            return 0.0;
        }
        let b = bytes as f64;
        b / (self.profile(from).transfer_gbps * 1e9) + b / (self.profile(to).transfer_gbps * 1e9)
    }

    /// Expected compute time of `nodes` of `info` on `kind`.
    pub fn estimate(&self, info: &GraphInfo, nodes: &[usize], kind: ProcessorKind) -> Estimate {
        let mut work = Work::default();
        for &n in nodes {
            if let Some(w) = info.work.get(n) {
                work += *w;
            }
        }
        let prior_s = self.prior_seconds(kind, work);
        let measured = self
            .measured
            .get(&(partition_key(&info.sha256, nodes), kind))
            .copied();
        Estimate {
            seconds: measured.map_or(prior_s, |m| m.mean_s),
            prior_s,
            measured,
        }
    }

    /// One node's share of a partition on `kind`: its compute time without the
    /// partition's dispatch overhead (for per-node explanations).
    pub fn node_seconds(&self, info: &GraphInfo, n: usize, kind: ProcessorKind) -> f64 {
        let w = info.work.get(n).copied().unwrap_or_default();
        let p = self.profile(kind);
        (self.prior_seconds(kind, w) / self.scale.get(&kind).unwrap_or(&1.0)
            - p.dispatch_overhead_us * 1e-6)
            .max(0.0)
            * self.scale.get(&kind).unwrap_or(&1.0)
    }

    /// Records one observed time of a partition on a processor.
    pub fn observe(&mut self, key: &str, kind: ProcessorKind, seconds: f64) {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return;
        }
        let alpha = self.alpha;
        self.measured
            .entry((key.to_string(), kind))
            .and_modify(|m| {
                m.mean_s = alpha * seconds + (1.0 - alpha) * m.mean_s;
                m.samples += 1;
            })
            .or_insert(Measured {
                mean_s: seconds,
                samples: 1,
            });
    }

    pub fn measured(&self, key: &str, kind: ProcessorKind) -> Option<Measured> {
        self.measured.get(&(key.to_string(), kind)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_replace_the_prior_as_a_moving_average() {
        let mut cm = CostModel::new(DeviceProfiles::default(), 0.5);
        cm.observe("m:1,2", ProcessorKind::Npu, 0.010);
        assert_eq!(
            cm.measured("m:1,2", ProcessorKind::Npu).unwrap().mean_s,
            0.010
        );
        cm.observe("m:1,2", ProcessorKind::Npu, 0.020);
        let m = cm.measured("m:1,2", ProcessorKind::Npu).unwrap();
        assert!((m.mean_s - 0.015).abs() < 1e-12);
        assert_eq!(m.samples, 2);
        assert!(cm.measured("m:1,2", ProcessorKind::Gpu).is_none());
    }

    #[test]
    fn priors_follow_the_profile_and_calibration() {
        let mut cm = CostModel::new(DeviceProfiles::default(), 0.2);
        let w = Work {
            macs: 1e9,
            elements: 0.0,
        };
        let npu = cm.prior_seconds(ProcessorKind::Npu, w);
        let cpu = cm.prior_seconds(ProcessorKind::Cpu, w);
        assert!(npu < cpu, "a 512-MAC/cycle NPU beats an 8-MAC/cycle CPU");
        cm.calibrate(ProcessorKind::Cpu, 2.0);
        assert!((cm.prior_seconds(ProcessorKind::Cpu, w) - 2.0 * cpu).abs() < 1e-12);
    }

    #[test]
    fn transfers_cost_nothing_on_the_same_processor() {
        let cm = CostModel::new(DeviceProfiles::default(), 0.2);
        assert_eq!(
            cm.transfer_seconds(1 << 20, ProcessorKind::Gpu, ProcessorKind::Gpu),
            0.0
        );
        assert!(cm.transfer_seconds(1 << 20, ProcessorKind::Cpu, ProcessorKind::Npu) > 2e-4);
    }
}
