//! The cost model: expected seconds for a partition on a processor.
//!
//! Before anything ran, a device profile's numbers (clock, MACs per cycle, dispatch
//! overhead, bandwidth) turn a partition's work into a prior. Measurements replace it:
//! per-node CPU times profiled the way requests are served (optimized kernels, the
//! serving thread count, warm, real input shapes), delegate times from validation, and
//! then every served run, per (model or partition, processor, threads). Tensors crossing
//! between processors pay both sides' transfer bandwidth (through host memory).
//!
//! Learning is robust on purpose: the estimate is the median of the recent samples,
//! each weighted by its age (half-life [`Learning::half_life_s`]). One cold start or one
//! hang does not move a median; a sustained change does, within a few runs; and a
//! figure nobody refreshed fades until it no longer counts as measured, so admission
//! control (which refuses only on measured figures) lets the next request run and
//! measure again instead of refusing on an old outlier forever.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use switchyard_config::{DeviceProfile, DeviceProfiles};
use switchyard_interpreter::ProcessorKind;

use crate::graph::{GraphInfo, Work};

/// Measured times of one (partition, processor).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The robust estimate (age-weighted median of the recent samples).
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

/// How served runs become estimates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Learning {
    /// Recent samples kept per key.
    pub window: usize,
    /// Age at which a sample weighs half as much as a new one.
    pub half_life_s: f64,
    /// Total weight of recent samples an estimate needs to count as measured (a new
    /// sample weighs 1).
    pub min_weight: f64,
}

impl Default for Learning {
    fn default() -> Self {
        Learning {
            window: 16,
            half_life_s: 1.0,
            min_weight: 1.5,
        }
    }
}

impl Learning {
    pub fn from_config(cfg: &switchyard_config::SchedulerConfig) -> Learning {
        Learning {
            window: cfg.estimate_window.max(1),
            half_life_s: cfg.estimate_half_life_s,
            ..Learning::default()
        }
    }
}

/// A learned service time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Learned {
    /// Age-weighted median of the recent samples.
    pub seconds: f64,
    /// Their total weight now.
    pub weight: f64,
    /// Samples ever recorded.
    pub samples: u64,
    /// Enough recent weight to act on (refuse, drop).
    pub measured: bool,
}

/// The recent samples of one key: (seconds, when).
#[derive(Clone, Debug, Default)]
struct Samples {
    recent: VecDeque<(f64, f64)>,
    total: u64,
}

impl Samples {
    fn push(&mut self, seconds: f64, at: f64, window: usize) {
        while self.recent.len() >= window.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back((seconds, at));
        self.total += 1;
    }

    fn learned(&self, now: f64, l: &Learning) -> Option<Learned> {
        if self.recent.is_empty() {
            return None;
        }
        let mut w: Vec<(f64, f64)> = self
            .recent
            .iter()
            .map(|&(s, at)| {
                (
                    s,
                    0.5f64.powf((now - at).max(0.0) / l.half_life_s.max(1e-9)),
                )
            })
            .collect();
        w.sort_by(|a, b| a.0.total_cmp(&b.0));
        let weight: f64 = w.iter().map(|x| x.1).sum();
        let mut acc = 0.0;
        let mut median = w[w.len() - 1].0;
        for &(s, wi) in &w {
            acc += wi;
            if acc >= weight / 2.0 {
                median = s;
                break;
            }
        }
        Some(Learned {
            seconds: median,
            weight,
            samples: self.total,
            measured: weight >= l.min_weight,
        })
    }
}

/// Priors from profiles, replaced by measurements.
#[derive(Clone, Debug)]
pub struct CostModel {
    profiles: DeviceProfiles,
    learning: Learning,
    epoch: Instant,
    /// Per processor: measured/prior ratio learned from whole-model runs (calibration).
    scale: HashMap<ProcessorKind, f64>,
    /// Per key, per (processor, threads): recent served times. Nested so a lookup by
    /// `&str` allocates nothing (it runs on every request).
    measured: HashMap<String, HashMap<(ProcessorKind, usize), Samples>>,
    /// Per model sha256: each node's CPU time as served (None: folded or not profiled).
    cpu_nodes: HashMap<String, Vec<Option<f64>>>,
}

/// Key of a partition for measurements: the model and its nodes.
pub fn partition_key(model_sha: &str, nodes: &[usize]) -> String {
    let list: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("{model_sha}:{}", list.join(","))
}

impl CostModel {
    pub fn new(profiles: DeviceProfiles, learning: Learning) -> CostModel {
        CostModel {
            profiles,
            learning,
            epoch: Instant::now(),
            scale: HashMap::new(),
            measured: HashMap::new(),
            cpu_nodes: HashMap::new(),
        }
    }

    /// Seconds since this cost model was made: the clock samples are aged on.
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    pub fn learning(&self) -> Learning {
        self.learning
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

    /// Expected compute time of `nodes` of `info` on `kind`: the partition's own
    /// measurements, else (CPU) the sum of its nodes' profiled times as served, else the
    /// prior.
    pub fn estimate(&self, info: &GraphInfo, nodes: &[usize], kind: ProcessorKind) -> Estimate {
        let mut work = Work::default();
        for &n in nodes {
            if let Some(w) = info.work.get(n) {
                work += *w;
            }
        }
        let prior_s = self.prior_seconds(kind, work);
        let measured = self
            .measured(&partition_key(&info.sha256, nodes), kind)
            .or_else(|| {
                if kind != ProcessorKind::Cpu {
                    return None;
                }
                let per = self.cpu_nodes.get(&info.sha256)?;
                let mut sum = 0.0;
                for &n in nodes {
                    match per.get(n) {
                        Some(Some(s)) => sum += s,
                        // A folded node costs nothing per run; an unprofiled one leaves
                        // the sum unknown.
                        _ if info.folded.get(n).copied().unwrap_or(false) => {}
                        _ => return None,
                    }
                }
                Some(Measured {
                    mean_s: sum,
                    samples: 1,
                })
            });
        Estimate {
            seconds: measured.map_or(prior_s, |m| m.mean_s),
            prior_s,
            measured,
        }
    }

    /// Records each node's CPU time of model `sha256` as profiled the way requests are
    /// served (see [`GraphInfo::measure_cpu`]).
    pub fn observe_cpu_profile(&mut self, sha256: &str, per_node_s: &[Option<f64>]) {
        self.cpu_nodes
            .insert(sha256.to_string(), per_node_s.to_vec());
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

    /// Records one observed time of a partition on a processor (one thread), now.
    pub fn observe(&mut self, key: &str, kind: ProcessorKind, seconds: f64) {
        let now = self.now();
        self.observe_at(key, kind, 1, seconds, now);
    }

    /// Records one served run of `key` on `kind` with `threads` intra-op threads that
    /// took `seconds`, at time `now` (seconds on [`CostModel::now`]'s clock, or any
    /// clock the caller uses consistently).
    pub fn observe_at(
        &mut self,
        key: &str,
        kind: ProcessorKind,
        threads: usize,
        seconds: f64,
        now: f64,
    ) {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return;
        }
        let window = self.learning.window;
        let per = match self.measured.get_mut(key) {
            Some(per) => per,
            None => self.measured.entry(key.to_string()).or_default(),
        };
        per.entry((kind, threads.max(1)))
            .or_default()
            .push(seconds, now, window);
    }

    /// What was learned about `key` on `kind` with `threads`, aged to `now`.
    pub fn learned(
        &self,
        key: &str,
        kind: ProcessorKind,
        threads: usize,
        now: f64,
    ) -> Option<Learned> {
        self.measured
            .get(key)?
            .get(&(kind, threads.max(1)))?
            .learned(now, &self.learning)
    }

    /// The current estimate of `key` on `kind` (one thread), however old.
    pub fn measured(&self, key: &str, kind: ProcessorKind) -> Option<Measured> {
        let l = self.learned(key, kind, 1, self.now())?;
        Some(Measured {
            mean_s: l.seconds,
            samples: l.samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learn() -> CostModel {
        CostModel::new(DeviceProfiles::default(), Learning::default())
    }

    #[test]
    fn measurements_replace_the_prior() {
        let mut cm = learn();
        cm.observe("m:1,2", ProcessorKind::Npu, 0.010);
        assert_eq!(
            cm.measured("m:1,2", ProcessorKind::Npu).unwrap().mean_s,
            0.010
        );
        cm.observe("m:1,2", ProcessorKind::Npu, 0.020);
        cm.observe("m:1,2", ProcessorKind::Npu, 0.012);
        let m = cm.measured("m:1,2", ProcessorKind::Npu).unwrap();
        assert_eq!(m.mean_s, 0.012, "the median of 10, 12 and 20 ms");
        assert_eq!(m.samples, 3);
        assert!(cm.measured("m:1,2", ProcessorKind::Gpu).is_none());
    }

    #[test]
    fn a_cold_start_does_not_stick() {
        // The first run after load takes 500 ms (page faults, caches); the next ones
        // 2 ms. One sample is not yet a measurement; with the second, the estimate is
        // the warm time.
        let mut cm = learn();
        let (k, cpu) = ("face:all", ProcessorKind::Cpu);
        cm.observe_at(k, cpu, 1, 0.500, 0.0);
        let first = cm.learned(k, cpu, 1, 0.0).unwrap();
        assert!(!first.measured, "one sample is not enough to refuse on");
        cm.observe_at(k, cpu, 1, 0.002, 0.01);
        let l = cm.learned(k, cpu, 1, 0.01).unwrap();
        assert!(l.measured);
        assert_eq!(l.seconds, 0.002);
    }

    #[test]
    fn a_hang_decays_instead_of_sticking() {
        let mut cm = learn();
        let (k, npu) = ("m:placed", ProcessorKind::Npu);
        for i in 0..8 {
            cm.observe_at(k, npu, 1, 0.003, i as f64 * 0.02);
        }
        // One hang among normal runs: the median does not move.
        cm.observe_at(k, npu, 1, 2.0, 0.2);
        assert_eq!(cm.learned(k, npu, 1, 0.2).unwrap().seconds, 0.003);
        // Every run hangs until a 250 ms timeout: the estimate follows...
        for i in 0..10 {
            cm.observe_at(k, npu, 1, 0.25, 2.0 + 0.25 * i as f64);
        }
        let hung = cm.learned(k, npu, 1, 4.3).unwrap();
        assert!(hung.measured && hung.seconds == 0.25, "{hung:?}");
        // ...and nobody refreshes it while requests are refused on it: after a few
        // half-lives it no longer counts as measured, so the next request runs.
        let later = cm
            .learned(k, npu, 1, 4.3 + 5.0 * cm.learning().half_life_s)
            .unwrap();
        assert!(!later.measured, "{later:?}");
        // The device recovered: two fresh runs decide again.
        cm.observe_at(k, npu, 1, 0.003, 9.5);
        cm.observe_at(k, npu, 1, 0.003, 9.6);
        let back = cm.learned(k, npu, 1, 9.6).unwrap();
        assert!(back.measured && back.seconds == 0.003, "{back:?}");
    }

    #[test]
    fn threads_are_learned_apart() {
        let mut cm = learn();
        cm.observe_at("m", ProcessorKind::Cpu, 1, 0.010, 0.0);
        cm.observe_at("m", ProcessorKind::Cpu, 2, 0.006, 0.0);
        assert_eq!(
            cm.learned("m", ProcessorKind::Cpu, 2, 0.0).unwrap().seconds,
            0.006
        );
        assert_eq!(
            cm.learned("m", ProcessorKind::Cpu, 1, 0.0).unwrap().seconds,
            0.010
        );
    }

    #[test]
    fn priors_follow_the_profile_and_calibration() {
        let mut cm = learn();
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
        let cm = learn();
        assert_eq!(
            cm.transfer_seconds(1 << 20, ProcessorKind::Gpu, ProcessorKind::Gpu),
            0.0
        );
        assert!(cm.transfer_seconds(1 << 20, ProcessorKind::Cpu, ProcessorKind::Npu) > 2e-4);
    }
}
