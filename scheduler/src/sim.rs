//! Workload simulator on a virtual clock.
//!
//! Every app's model is partitioned and planned for the device profiles; each frame
//! becomes a request whose stages are the plan's partitions, with the expected time of
//! each on every processor allowed to run it (the CPU always is). The same arrival
//! trace (frame times with a little seeded jitter; back-to-back apps send their next
//! request when the previous one returns) and the same service-time noise run under
//! every arbiter policy and under the fixed placements that apps use without a
//! scheduler: everything on the CPU, or everything a single delegate supports on that
//! delegate, first come first served. The comparison is fair: the fixed placements get
//! the same admission control (hopeless frames refused, late ones dropped) and the same
//! CPU cores, and migration is a switch ([`compare`]'s `migration`), so the report
//! shows what the policies, and what migration, add. It gives SLO satisfaction (frames
//! finished by their deadline over frames offered), throughput, latency percentiles
//! and processor utilisation per app and overall.
//!
//! Service times come from the cost model: the profiles' priors for accelerators, and
//! for the CPU each node's time measured on this machine as the daemon serves it
//! (optimized kernels, one thread per request, warm) when every op has a CPU kernel.
//! No accelerator runs here: the simulated device is the profile.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use serde::Serialize;
use switchyard_config::DeviceProfiles;
use switchyard_interpreter::{Model, ProcessorKind};

use crate::SchedError;
use crate::arbiter::{
    Arbiter, ArbiterOptions, Outcome, Policy, PriorityClass, Request, Stage, StageOption,
};
use crate::capability::Capability;
use crate::cost::CostModel;
use crate::graph::GraphInfo;
use crate::partition::partition;
use crate::placement::{Permission, plan};
use crate::workload::Workload;

/// How requests are placed and ordered in one simulation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// The arbiter with this policy and admission control; `migration` lets requests
    /// take whichever allowed processor finishes them first.
    Policy { policy: Policy, migration: bool },
    /// Everything on the CPU, first come first served, admission control.
    AllCpu,
    /// Everything this processor supports on it, the rest on the CPU, FIFO, admission
    /// control.
    Single(ProcessorKind),
}

impl Strategy {
    pub fn name(self) -> String {
        match self {
            Strategy::Policy {
                policy,
                migration: true,
            } => policy.name().to_string(),
            Strategy::Policy {
                policy,
                migration: false,
            } => format!("{} (no migration)", policy.name()),
            Strategy::AllCpu => "fixed: all-cpu".into(),
            Strategy::Single(k) => format!("fixed: {k}"),
        }
    }

    pub fn is_fixed(self) -> bool {
        !matches!(self, Strategy::Policy { .. })
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
    /// None: no deadline (back-to-back work).
    pub deadline_ms: Option<f64>,
    pub back_to_back: bool,
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
    /// Each processor and its servers (the CPU: cores).
    #[serde(skip)]
    pub processors: Vec<(ProcessorKind, usize)>,
    pub queue_limit: usize,
    pub cpu_cores: usize,
}

/// How [`setup`] prepares a workload.
#[derive(Clone, Copy, Debug)]
pub struct SetupOptions {
    /// Jobs one tenant may queue per processor.
    pub queue_limit: usize,
    /// CPU cores that run requests side by side.
    pub cpu_cores: usize,
    /// Time each model's nodes on this machine's CPU as served (when it has kernels for
    /// every op) instead of using the CPU profile's prior.
    pub measure_cpu: bool,
}

/// Plans every app of `workload` on `profiles`.
pub fn setup(
    workload: &Workload,
    profiles: &DeviceProfiles,
    opts: SetupOptions,
) -> Result<Setup, SchedError> {
    let (_, caps) = crate::capability::for_device(profiles);
    let cores = opts.cpu_cores.max(1);
    let mut processors = vec![(ProcessorKind::Cpu, cores)];
    processors.extend(caps.iter().map(|c| (c.kind(), 1)));
    let mut apps = Vec::new();
    for app in &workload.apps {
        let model = Arc::new(Model::from_path(&app.model)?);
        let info = GraphInfo::analyse(model)?;
        let mut cost = CostModel::new(profiles.clone(), crate::cost::Learning::default());
        let mut cpu_source = "profile prior".to_string();
        if opts.measure_cpu
            && let Some(m) = info.measure_cpu(5, 1)
        {
            cost.observe_cpu_profile(&info.sha256, &m.per_node_s);
            cpu_source = format!("measured as served: {:.3} ms", m.total_s * 1e3);
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
            back_to_back: app.back_to_back,
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
        queue_limit: opts.queue_limit,
        cpu_cores: cores,
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
            let mut options = vec![StageOption::measured(
                pp.processor,
                pp.expected_s + pp.transfer_s,
            )];
            if pp.processor != ProcessorKind::Cpu {
                options.push(StageOption::measured(ProcessorKind::Cpu, pp.cpu_s));
            }
            for c in &parts.candidates {
                let covers = pp.nodes.iter().all(|n| c.nodes.contains(n));
                if covers && options.iter().all(|o| o.processor != c.kind) {
                    let e = cost.estimate(info, &pp.nodes, c.kind).seconds;
                    let bytes: usize = {
                        let (i, o) = info.boundary(&pp.nodes);
                        i.iter().chain(&o).map(|&t| info.tensor_bytes(t)).sum()
                    };
                    options.push(StageOption::measured(
                        c.kind,
                        e + cost.transfer_seconds(bytes, ProcessorKind::Cpu, c.kind),
                    ));
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
    /// Busy fraction of each processor (all its servers) during the workload's duration
    /// (work drained after the last arrival window is not counted).
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

/// The frames of the workload's frame-rate apps: (arrival, app), identical for every
/// strategy. Back-to-back apps have no trace: they send when their last request ends.
pub fn arrivals(s: &Setup) -> Vec<(f64, usize)> {
    let mut out = Vec::new();
    for (ai, a) in s.apps.iter().enumerate() {
        if a.back_to_back {
            continue;
        }
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

/// A stage finishing: (time, request, stage, seconds it took); a min-heap on time.
#[derive(PartialEq)]
struct Finish(f64, u64, usize, f64);
impl Eq for Finish {}
impl PartialOrd for Finish {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Finish {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.total_cmp(&self.0)
            .then(o.1.cmp(&self.1))
            .then(o.2.cmp(&self.2))
    }
}

/// An arrival to come: (time, app); a min-heap on time, then app.
#[derive(PartialEq)]
struct Arrival(f64, usize);
impl Eq for Arrival {}
impl PartialOrd for Arrival {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Arrival {
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
    let defaults = ArbiterOptions::default();
    let opts = match strategy {
        Strategy::Policy { policy, migration } => ArbiterOptions {
            policy,
            queue_limit: s.queue_limit,
            migration,
            ..defaults
        },
        // Apps each with their own runtime: no arbiter orders them, caps background work
        // or moves it; they still drop what cannot make its deadline.
        _ => ArbiterOptions {
            policy: Policy::Fifo,
            queue_limit: s.queue_limit,
            migration: false,
            background_share: 1.0,
            background_reserve: 0.0,
            express_s: 0.0,
            ..defaults
        },
    };
    let mut arb = Arbiter::new(&s.processors, opts);
    let mut arrivals: BinaryHeap<Arrival> = arrivals(s)
        .into_iter()
        .map(|(t, ai)| Arrival(t, ai))
        .collect();
    for (ai, a) in s.apps.iter().enumerate() {
        if a.back_to_back && a.start_s < s.duration_s {
            arrivals.push(Arrival(a.start_s, ai));
        }
    }
    let end_of = |a: &AppSetup| (a.start_s + a.duration_s).min(s.duration_s);
    // Per request: (app, arrival, deadline), and what became of it.
    let mut requests: Vec<(usize, f64, f64)> = Vec::new();
    let mut met: Vec<bool> = Vec::new();
    let mut completed: Vec<Option<f64>> = Vec::new();
    let mut rejected: Vec<bool> = Vec::new();
    let mut busy: BTreeMap<ProcessorKind, f64> = BTreeMap::new();
    let mut heap: BinaryHeap<Finish> = BinaryHeap::new();
    loop {
        let t_arr = arrivals.peek().map(|a| a.0);
        let t_fin = heap.peek().map(|f| f.0);
        let now = match (t_arr, t_fin) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(f)) => f,
            (Some(a), Some(f)) => a.min(f),
        };
        while heap.peek().is_some_and(|f| f.0 <= now) {
            if let Some(Finish(_, request, stage, took)) = heap.pop() {
                arb.complete(request, stage, now, took);
            }
        }
        while arrivals.peek().is_some_and(|a| a.0 <= now) {
            let Some(Arrival(arrival, ai)) = arrivals.pop() else {
                break;
            };
            let app = &s.apps[ai];
            let stages = match strategy {
                Strategy::Policy { .. } => app.planned.clone(),
                Strategy::AllCpu => vec![Stage {
                    options: vec![StageOption::measured(ProcessorKind::Cpu, app.all_cpu_s)],
                }],
                Strategy::Single(k) => app.single.get(&k).cloned().unwrap_or_default(),
            };
            let deadline = app
                .deadline_ms
                .map_or(f64::INFINITY, |d| arrival + d * 1e-3);
            let id = requests.len() as u64;
            requests.push((ai, arrival, deadline));
            met.push(false);
            completed.push(None);
            rejected.push(false);
            let req = Request {
                id,
                tenant: app.tenant.clone(),
                app: app.name.clone(),
                class: app.class,
                weight: app.weight,
                arrival,
                deadline,
                stages,
            };
            if arb.submit(req, now).is_err() {
                rejected[id as usize] = true;
                if app.back_to_back {
                    // Refused: try again a little later rather than spin at one instant.
                    let next = now + 1e-3;
                    if next < end_of(app) {
                        arrivals.push(Arrival(next, ai));
                    }
                }
            }
        }
        for a in arb.dispatch(now) {
            let factor = 0.95 + 0.15 * noise(s.seed ^ 0xA5A5, a.job.request, a.job.stage as u64);
            let took = (a.expected_finish - now) * factor;
            let inside = (now + took).min(s.duration_s) - now.min(s.duration_s);
            *busy.entry(a.processor).or_default() += inside * a.threads as f64;
            heap.push(Finish(now + took, a.job.request, a.job.stage, took));
        }
        for o in arb.take_outcomes() {
            let r = o.request() as usize;
            let Some(&(ai, arrival, deadline)) = requests.get(r) else {
                continue;
            };
            match o {
                Outcome::Completed { finish, .. } => {
                    completed[r] = Some(finish - arrival);
                    met[r] = finish <= deadline + 1e-12;
                }
                Outcome::Rejected { .. } => rejected[r] = true,
            }
            let app = &s.apps[ai];
            if app.back_to_back && now < end_of(app) {
                arrivals.push(Arrival(now, ai));
            }
        }
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
        // Frames with a deadline: back-to-back work is judged by its throughput.
        overall: stats(&|ai| s.apps.get(ai).is_some_and(|a| a.deadline_ms.is_some())),
        utilisation: s
            .processors
            .iter()
            .map(|&(p, n)| {
                (
                    p.to_string(),
                    busy.get(&p).copied().unwrap_or(0.0) / (s.duration_s * n as f64),
                )
            })
            .collect(),
    }
}

/// Every policy (with or without migration) and every fixed placement on the same
/// trace.
pub fn compare(s: &Setup, migration: bool) -> Vec<Report> {
    let mut strategies: Vec<Strategy> = [
        Policy::Priority,
        Policy::Edf,
        Policy::LeastSlack,
        Policy::FairShare,
    ]
    .into_iter()
    .map(|policy| Strategy::Policy { policy, migration })
    .collect();
    strategies.push(Strategy::AllCpu);
    for &(p, _) in &s.processors {
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
                .map(|&(p, service_s)| StageOption::measured(p, service_s))
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
            deadline_ms: Some(40.0),
            back_to_back: false,
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
            processors: vec![(Cpu, 1), (Gpu, 1)],
            queue_limit: 64,
            cpu_cores: 1,
        }
    }

    #[test]
    fn the_same_trace_feeds_every_strategy() {
        let s = overloaded();
        let a = arrivals(&s);
        assert_eq!(a, arrivals(&s));
        assert_eq!(a.len(), 600);
        let reports = compare(&s, true);
        for r in &reports {
            assert_eq!(r.overall.frames, 600, "{}", r.strategy);
        }
    }

    #[test]
    fn using_both_processors_beats_an_overloaded_fixed_one() {
        let s = overloaded();
        let gpu = simulate(&s, Strategy::Single(ProcessorKind::Gpu));
        let cpu = simulate(&s, Strategy::AllCpu);
        let edf = |migration| {
            simulate(
                &s,
                Strategy::Policy {
                    policy: Policy::Edf,
                    migration,
                },
            )
        };
        let (with, without) = (edf(true), edf(false));
        // With the same admission control, an overloaded fixed processor refuses or
        // drops what it cannot serve in time: 1.2 s of work per second on the GPU.
        assert!(gpu.overall.slo_pct < 90.0, "{:?}", gpu.overall);
        assert!(cpu.overall.slo_pct < 80.0, "{:?}", cpu.overall);
        assert!(gpu.overall.rejected > 0);
        // Migration is what uses the idle CPU; without it the policy is stuck on the GPU
        // like the fixed placement.
        assert!(with.overall.slo_pct > 95.0, "{:?}", with.overall);
        assert!(without.overall.slo_pct < 90.0, "{:?}", without.overall);
        assert!(with.utilisation["cpu"] > 0.1 && with.utilisation["gpu"] > 0.5);
    }

    #[test]
    fn back_to_back_work_fills_the_idle_time_without_hurting_frames() {
        let mut s = overloaded();
        for a in &mut s.apps {
            a.fps = 20.0;
        }
        let mut bg = s.apps[0].clone();
        bg.name = "batch".into();
        bg.tenant = "batch".into();
        bg.class = PriorityClass::Background;
        bg.back_to_back = true;
        bg.deadline_ms = None;
        s.apps.push(bg);
        let r = simulate(
            &s,
            Strategy::Policy {
                policy: Policy::LeastSlack,
                migration: true,
            },
        );
        let batch = &r.apps[2].1;
        assert!(batch.throughput_fps > 30.0, "{batch:?}");
        assert!(r.overall.slo_pct > 99.0, "{:?}", r.overall);
        assert_eq!(r.overall.frames, 200, "the batch app is not a frame app");
    }

    #[test]
    fn an_unloaded_workload_meets_every_deadline_everywhere() {
        let mut s = overloaded();
        for a in &mut s.apps {
            a.fps = 10.0;
        }
        for r in compare(&s, true) {
            assert_eq!(r.overall.slo_pct, 100.0, "{}", r.strategy);
        }
    }
}
