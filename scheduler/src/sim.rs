//! Workload simulator on a virtual clock.
//!
//! Every app's model is partitioned and planned for the device profiles; each frame
//! becomes a request whose stages are the plan's partitions, with the expected time of
//! each on every processor allowed to run it (the CPU always is). The same arrival
//! trace (frame times with a little seeded jitter) and the same service-time noise run
//! under every arbiter policy and under the fixed placements that apps use without a
//! scheduler: everything on the CPU, or everything a single delegate supports on that
//! delegate, first come first served, no admission control. The report gives SLO
//! satisfaction (frames finished by their deadline over frames offered), throughput,
//! latency percentiles and processor utilisation per app and overall.
//!
//! Service times come from the cost model: the profiles' priors, with the CPU prior
//! calibrated by one real run of the model on this machine when every op has a CPU
//! kernel. No hardware runs here: the simulated device is the profile.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use serde::Serialize;
use switchyard_config::DeviceProfiles;
use switchyard_interpreter::{Model, ProcessorKind};

use crate::SchedError;
use crate::arbiter::{
    Arbiter, ArbiterOptions, Outcome, Policy, PriorityClass, Request, Stage, StageOption,
};
use crate::capability::{Capability, profile_rules};
use crate::cost::CostModel;
use crate::graph::GraphInfo;
use crate::partition::partition;
use crate::placement::{Permission, plan};
use crate::workload::Workload;

/// How requests are placed and ordered in one simulation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The arbiter with this policy, admission control and migration.
    Policy(Policy),
    /// Everything on the CPU, first come first served.
    AllCpu,
    /// Everything this processor supports on it, the rest on the CPU, FIFO.
    Single(ProcessorKind),
}

impl Strategy {
    pub fn name(self) -> String {
        match self {
            Strategy::Policy(p) => p.name().to_string(),
            Strategy::AllCpu => "fixed: all-cpu".into(),
            Strategy::Single(k) => format!("fixed: {k}"),
        }
    }

    pub fn is_fixed(self) -> bool {
        !matches!(self, Strategy::Policy(_))
    }
}

/// One app ready to simulate: its stages under each strategy.
#[derive(Clone, Debug, Serialize)]
pub struct AppSetup {
    pub name: String,
    pub tenant: String,
    pub weight: f64,
    #[serde(skip)]
    pub class: PriorityClass,
    pub fps: f64,
    pub deadline_ms: f64,
    pub start_s: f64,
    pub duration_s: f64,
    /// The plan's stages, with every allowed processor per stage.
    pub planned: Vec<Stage>,
    pub all_cpu_s: f64,
    /// Per accelerator: stages when only it is used.
    #[serde(skip)]
    pub single: BTreeMap<ProcessorKind, Vec<Stage>>,
    /// How the CPU time was obtained.
    pub cpu_source: String,
}

/// A workload with its apps' stages, ready for [`simulate`].
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    pub name: String,
    pub duration_s: f64,
    pub seed: u64,
    pub apps: Vec<AppSetup>,
    #[serde(skip)]
    pub processors: Vec<ProcessorKind>,
    pub queue_limit: usize,
}

/// Plans every app of `workload` on `profiles`. `calibrate_cpu` times each model once
/// on this machine's CPU (when it has kernels for every op) to replace the CPU prior.
pub fn setup(
    workload: &Workload,
    profiles: &DeviceProfiles,
    queue_limit: usize,
    calibrate_cpu: bool,
) -> Result<Setup, SchedError> {
    let caps = profile_rules(profiles);
    let mut processors = vec![ProcessorKind::Cpu];
    processors.extend(caps.iter().map(|c| c.kind()));
    let mut apps = Vec::new();
    for app in &workload.apps {
        let model = Arc::new(Model::from_path(&app.model)?);
        let info = GraphInfo::analyse(model)?;
        let mut cost = CostModel::new(profiles.clone(), 0.2);
        let mut cpu_source = "profile prior".to_string();
        if calibrate_cpu && let Some(m) = info.measure_cpu(3) {
            let prior = cost
                .estimate(&info, &info.run_nodes, ProcessorKind::Cpu)
                .prior_s;
            cost.calibrate(ProcessorKind::Cpu, m.total_s / prior);
            cpu_source = format!("measured on this cpu: {:.3} ms", m.total_s * 1e3);
        }
        let planned = stages(&info, &caps, &cost, None);
        let all_cpu_s = cost
            .estimate(&info, &info.run_nodes, ProcessorKind::Cpu)
            .seconds;
        let mut single = BTreeMap::new();
        for (ci, cap) in caps.iter().enumerate() {
            single.insert(cap.kind(), stages(&info, &caps, &cost, Some(ci)));
        }
        apps.push(AppSetup {
            name: app.name.clone(),
            tenant: app.tenant.clone(),
            weight: app.weight,
            class: app.priority,
            fps: app.fps,
            deadline_ms: app.deadline_ms,
            start_s: app.start_s,
            duration_s: app.duration_s.unwrap_or(workload.duration_s),
            planned,
            all_cpu_s,
            single,
            cpu_source,
        });
    }
    Ok(Setup {
        name: workload.name.clone(),
        duration_s: workload.duration_s,
        seed: workload.seed,
        apps,
        processors,
        queue_limit,
    })
}

/// The plan's stages; `only` restricts placement to one capability. Each stage lists
/// its planned processor first, then the CPU fallback, then any other accelerator that
/// has a candidate covering all of its nodes.
fn stages(
    info: &GraphInfo,
    caps: &[Box<dyn Capability>],
    cost: &CostModel,
    only: Option<usize>,
) -> Vec<Stage> {
    let parts = partition(info, caps);
    let allow = |c: &crate::partition::Candidate| {
        if only.is_none_or(|o| o == c.processor) {
            Permission::Allowed
        } else {
            Permission::Denied("fixed placement".into())
        }
    };
    let p = plan(info, &parts, caps, cost, &allow);
    p.partitions
        .iter()
        .map(|pp| {
            let mut options = vec![StageOption {
                processor: pp.processor,
                service_s: pp.expected_s + pp.transfer_s,
            }];
            if pp.processor != ProcessorKind::Cpu {
                options.push(StageOption {
                    processor: ProcessorKind::Cpu,
                    service_s: pp.cpu_s,
                });
            }
            for c in &parts.candidates {
                let covers = pp.nodes.iter().all(|n| c.nodes.contains(n));
                if covers && options.iter().all(|o| o.processor != c.kind) {
                    let e = cost.estimate(info, &pp.nodes, c.kind).seconds;
                    let bytes: usize = {
                        let (i, o) = info.boundary(&pp.nodes);
                        i.iter().chain(&o).map(|&t| info.tensor_bytes(t)).sum()
                    };
                    options.push(StageOption {
                        processor: c.kind,
                        service_s: e + cost.transfer_seconds(bytes, ProcessorKind::Cpu, c.kind),
                    });
                }
            }
            Stage { options }
        })
        .collect()
}

/// Results of one app (or all apps) in one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub frames: u64,
    pub met: u64,
    pub completed: u64,
    pub rejected: u64,
    pub slo_pct: f64,
    /// Completed frames per second of workload.
    pub throughput_fps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One strategy's run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub strategy: String,
    pub fixed: bool,
    pub apps: Vec<(String, Stats)>,
    pub overall: Stats,
    /// Busy fraction of each processor during the workload's duration (work drained
    /// after the last arrival window is not counted).
    pub utilisation: BTreeMap<String, f64>,
}

/// Deterministic noise in [0, 1) from a seed and two integers (splitmix64).
fn noise(seed: u64, a: u64, b: u64) -> f64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The frames of the workload: (arrival, app), identical for every strategy.
pub fn arrivals(s: &Setup) -> Vec<(f64, usize)> {
    let mut out = Vec::new();
    for (ai, a) in s.apps.iter().enumerate() {
        let period = 1.0 / a.fps;
        let end = (a.start_s + a.duration_s).min(s.duration_s);
        let mut k = 0u64;
        loop {
            // Up to 10% of a period of jitter: sensors and audio buffers are not exact.
            let t = a.start_s + k as f64 * period + 0.1 * period * noise(s.seed, ai as u64, k);
            if t >= end {
                break;
            }
            out.push((t, ai));
            k += 1;
        }
    }
    out.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    out
}

#[derive(PartialEq)]
struct Finish(f64, ProcessorKind, f64);
impl Eq for Finish {}
impl PartialOrd for Finish {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Finish {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs one strategy over the workload's arrival trace.
pub fn simulate(s: &Setup, strategy: Strategy) -> Report {
    let (policy, admission, migration, limit) = match strategy {
        Strategy::Policy(p) => (p, true, true, s.queue_limit),
        _ => (Policy::Fifo, false, false, usize::MAX),
    };
    let mut arb = Arbiter::new(
        &s.processors,
        ArbiterOptions {
            policy,
            queue_limit: limit,
            admission,
            migration,
        },
    );
    let trace = arrivals(s);
    let mut requests: Vec<(usize, f64, f64)> = Vec::with_capacity(trace.len());
    let mut met = vec![false; trace.len()];
    let mut completed = vec![None; trace.len()];
    let mut rejected = vec![false; trace.len()];
    let mut busy: BTreeMap<ProcessorKind, f64> = BTreeMap::new();
    let mut heap: BinaryHeap<Finish> = BinaryHeap::new();
    let mut next = 0usize;
    let record = |outs: Vec<Outcome>,
                  requests: &[(usize, f64, f64)],
                  met: &mut [bool],
                  completed: &mut [Option<f64>],
                  rejected: &mut [bool]| {
        for o in outs {
            match o {
                Outcome::Completed { request, finish } => {
                    let r = request as usize;
                    if let Some(&(_, arrival, deadline)) = requests.get(r) {
                        completed[r] = Some(finish - arrival);
                        met[r] = finish <= deadline + 1e-12;
                    }
                }
                Outcome::Rejected { request, .. } => {
                    if let Some(x) = rejected.get_mut(request as usize) {
                        *x = true;
                    }
                }
            }
        }
    };
    loop {
        let t_arr = trace.get(next).map(|a| a.0);
        let t_fin = heap.peek().map(|f| f.0);
        let now = match (t_arr, t_fin) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(f)) => f,
            (Some(a), Some(f)) => a.min(f),
        };
        while heap.peek().is_some_and(|f| f.0 <= now) {
            if let Some(Finish(_, p, took)) = heap.pop() {
                arb.complete(p, now, took);
            }
        }
        while trace.get(next).is_some_and(|a| a.0 <= now) {
            let (arrival, ai) = trace[next];
            let app = &s.apps[ai];
            let stages = match strategy {
                Strategy::Policy(_) => app.planned.clone(),
                Strategy::AllCpu => vec![Stage {
                    options: vec![StageOption {
                        processor: ProcessorKind::Cpu,
                        service_s: app.all_cpu_s,
                    }],
                }],
                Strategy::Single(k) => app.single.get(&k).cloned().unwrap_or_default(),
            };
            let deadline = arrival + app.deadline_ms * 1e-3;
            requests.push((ai, arrival, deadline));
            let req = Request {
                id: next as u64,
                tenant: app.tenant.clone(),
                app: app.name.clone(),
                class: app.class,
                weight: app.weight,
                arrival,
                deadline,
                stages,
            };
            if arb.submit(req, now).is_err() {
                rejected[next] = true;
            }
            next += 1;
        }
        for a in arb.dispatch(now) {
            let factor = 0.95 + 0.15 * noise(s.seed ^ 0xA5A5, a.job.request, a.job.stage as u64);
            let took = a.job.service_on(a.processor).unwrap_or(0.0) * factor;
            let inside = (now + took).min(s.duration_s) - now.min(s.duration_s);
            *busy.entry(a.processor).or_default() += inside;
            heap.push(Finish(now + took, a.processor, took));
        }
        record(
            arb.take_outcomes(),
            &requests,
            &mut met,
            &mut completed,
            &mut rejected,
        );
    }
    let stats = |filter: &dyn Fn(usize) -> bool| -> Stats {
        let idx: Vec<usize> = (0..requests.len())
            .filter(|&i| filter(requests[i].0))
            .collect();
        let mut lat: Vec<f64> = idx.iter().filter_map(|&i| completed[i]).collect();
        lat.sort_by(f64::total_cmp);
        let frames = idx.len() as u64;
        let m = idx.iter().filter(|&&i| met[i]).count() as u64;
        Stats {
            frames,
            met: m,
            completed: lat.len() as u64,
            rejected: idx.iter().filter(|&&i| rejected[i]).count() as u64,
            slo_pct: if frames == 0 {
                0.0
            } else {
                100.0 * m as f64 / frames as f64
            },
            throughput_fps: lat.len() as f64 / s.duration_s,
            p50_ms: percentile(&lat, 0.5) * 1e3,
            p99_ms: percentile(&lat, 0.99) * 1e3,
        }
    };
    let apps = s
        .apps
        .iter()
        .enumerate()
        .map(|(ai, a)| (a.name.clone(), stats(&|x| x == ai)))
        .collect();
    Report {
        strategy: strategy.name(),
        fixed: strategy.is_fixed(),
        apps,
        overall: stats(&|_| true),
        utilisation: s
            .processors
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    busy.get(p).copied().unwrap_or(0.0) / s.duration_s,
                )
            })
            .collect(),
    }
}

/// Every policy and every fixed placement on the same trace.
pub fn compare(s: &Setup) -> Vec<Report> {
    let mut strategies: Vec<Strategy> = [
        Policy::Priority,
        Policy::Edf,
        Policy::LeastSlack,
        Policy::FairShare,
    ]
    .into_iter()
    .map(Strategy::Policy)
    .collect();
    strategies.push(Strategy::AllCpu);
    for &p in &s.processors {
        if p != ProcessorKind::Cpu {
            strategies.push(Strategy::Single(p));
        }
    }
    strategies.into_iter().map(|st| simulate(s, st)).collect()
}

/// A strategy's name and its overall SLO satisfaction in percent.
pub type Best<'a> = (&'a str, f64);

/// Best policy's and best fixed placement's overall SLO satisfaction, by name.
pub fn best(reports: &[Report]) -> Option<(Best<'_>, Best<'_>)> {
    let pick = |fixed: bool| {
        reports
            .iter()
            .filter(|r| r.fixed == fixed)
            .fold(None::<&Report>, |best, r| match best {
                Some(b) if b.overall.slo_pct >= r.overall.slo_pct => Some(b),
                _ => Some(r),
            })
            .map(|r| (r.strategy.as_str(), r.overall.slo_pct))
    };
    Some((pick(false)?, pick(true)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(opts: &[(ProcessorKind, f64)]) -> Stage {
        Stage {
            options: opts
                .iter()
                .map(|&(processor, service_s)| StageOption {
                    processor,
                    service_s,
                })
                .collect(),
        }
    }

    /// Two apps on a GPU-first plan: 60 fps at 10 ms each on the GPU overloads it
    /// (1.2 s of work per second); with the CPU (14 ms) beside it, the load fits.
    fn overloaded() -> Setup {
        use ProcessorKind::{Cpu, Gpu};
        let app = |name: &str| AppSetup {
            name: name.into(),
            tenant: name.into(),
            weight: 1.0,
            class: PriorityClass::Interactive,
            fps: 60.0,
            deadline_ms: 40.0,
            start_s: 0.0,
            duration_s: 5.0,
            planned: vec![stage(&[(Gpu, 0.010), (Cpu, 0.014)])],
            all_cpu_s: 0.014,
            single: BTreeMap::from([(Gpu, vec![stage(&[(Gpu, 0.010)])])]),
            cpu_source: "test".into(),
        };
        Setup {
            name: "t".into(),
            duration_s: 5.0,
            seed: 1,
            apps: vec![app("a"), app("b")],
            processors: vec![Cpu, Gpu],
            queue_limit: 64,
        }
    }

    #[test]
    fn the_same_trace_feeds_every_strategy() {
        let s = overloaded();
        let a = arrivals(&s);
        assert_eq!(a, arrivals(&s));
        assert_eq!(a.len(), 600);
        let reports = compare(&s);
        for r in &reports {
            assert_eq!(r.overall.frames, 600, "{}", r.strategy);
        }
    }

    #[test]
    fn using_both_processors_beats_an_overloaded_fixed_one() {
        let s = overloaded();
        let gpu = simulate(&s, Strategy::Single(ProcessorKind::Gpu));
        let cpu = simulate(&s, Strategy::AllCpu);
        let edf = simulate(&s, Strategy::Policy(Policy::Edf));
        // A FIFO queue that receives more than it can serve falls ever further behind.
        assert!(gpu.overall.slo_pct < 50.0, "{:?}", gpu.overall);
        assert!(cpu.overall.slo_pct < 50.0, "{:?}", cpu.overall);
        assert!(edf.overall.slo_pct > 90.0, "{:?}", edf.overall);
        assert!(edf.utilisation["cpu"] > 0.1 && edf.utilisation["gpu"] > 0.5);
    }

    #[test]
    fn an_unloaded_workload_meets_every_deadline_everywhere() {
        let mut s = overloaded();
        for a in &mut s.apps {
            a.fps = 10.0;
        }
        for r in compare(&s) {
            assert_eq!(r.overall.slo_pct, 100.0, "{}", r.strategy);
        }
    }
}
