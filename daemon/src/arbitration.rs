//! Requests go through the scheduler's arbiter: one queue per processor, the CPU served
//! by several cores at once, the policy from `scheduler.policy`, weighted fair share
//! between tenants (`scheduler.tenant_weights`), admission control in the policy's
//! order (full queues and hopeless deadlines are refused with the prediction), and
//! migration: a model placed on an accelerator may run all on the CPU when that
//! finishes first. Which processors a request may take and what each costs is the
//! model's serving plan (`switchyard_scheduler::serving`); every served run is recorded
//! in the shared cost model it learns from.
//!
//! A request is one stage today: the interpreter runs every partition of its form
//! itself, with CPU fallback inside. When sessions run one stage at a time, each placed
//! partition becomes a stage of its own here.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use switchyard_config::SchedulerConfig;
use switchyard_interpreter::ProcessorKind;
use switchyard_scheduler::arbiter::runtime::{ArbiterService, RunsOn, StageRunner};
use switchyard_scheduler::arbiter::{
    Arbiter, ArbiterOptions, Job, Outcome, Policy, PriorityClass, Request,
};
use switchyard_scheduler::cost::CostModel;
use switchyard_scheduler::serving::{ServingPlan, Variant};

use crate::error::DaemonError;
use crate::tenant::lock;

/// Where the arbiter put a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assigned {
    pub processor: ProcessorKind,
    /// The model's form that runs there.
    pub variant: Variant,
    /// Intra-op threads (CPU cores held).
    pub threads: usize,
}

/// The work a request carries through the arbiter.
pub trait Work: Send + 'static {
    /// Runs the request where the arbiter put it, keeping its result for the submitter.
    /// Returns whether it succeeded: only successful runs teach the cost model.
    fn run(&mut self, at: Assigned) -> bool;
}

/// A request's work with the serving plan of its model.
pub struct Carried<W> {
    work: W,
    plan: Arc<ServingPlan>,
}

/// Runs a stage and records the time it took in the cost model.
struct Runner {
    cost: Arc<Mutex<CostModel>>,
}

impl<W: Work> StageRunner<Carried<W>> for Runner {
    fn run(
        &self,
        c: &mut Carried<W>,
        _job: &Job,
        processor: ProcessorKind,
        threads: usize,
    ) -> Result<(), String> {
        let at = Assigned {
            processor,
            variant: c.plan.variant(processor),
            threads,
        };
        let started = Instant::now();
        let ok = c.work.run(at);
        let took = started.elapsed().as_secs_f64();
        if ok {
            let mut cost = lock(&self.cost);
            let now = cost.now();
            c.plan.observe(&mut cost, processor, threads, took, now);
        }
        Ok(())
    }
}

/// The daemon's arbiter and the cost model it reads and teaches.
pub struct Gate<W: Work> {
    pub service: ArbiterService<Carried<W>>,
    cost: Arc<Mutex<CostModel>>,
    weights: std::collections::BTreeMap<String, f64>,
}

/// CPU cores the arbiter serves requests on: `scheduler.cpu_cores`, or all of them.
pub fn cpu_cores(cfg: &SchedulerConfig) -> usize {
    if cfg.cpu_cores > 0 {
        return cfg.cpu_cores;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The arbiter's options from the configuration.
pub fn arbiter_options(cfg: &SchedulerConfig) -> ArbiterOptions {
    ArbiterOptions {
        policy: Policy::from_name(&cfg.policy).unwrap_or(Policy::LeastSlack),
        queue_limit: cfg.queue_limit.max(1),
        admission: true,
        migration: cfg.migration,
        aging_s: cfg.aging_ms as f64 / 1e3,
        background_share: cfg.background_share,
        background_reserve: cfg.background_reserve,
        express_s: cfg.express_ms / 1e3,
    }
}

impl<W: Work> Gate<W> {
    /// An arbiter over the CPU's cores and one server per other processor.
    pub fn new(
        cfg: &SchedulerConfig,
        processors: &[ProcessorKind],
        cost: Arc<Mutex<CostModel>>,
    ) -> Gate<W> {
        let servers: Vec<(ProcessorKind, usize)> = processors
            .iter()
            .map(|&p| {
                let n = if p == ProcessorKind::Cpu {
                    cpu_cores(cfg)
                } else {
                    1
                };
                (p, n)
            })
            .collect();
        let runner = Arc::new(Runner { cost: cost.clone() });
        Gate {
            service: ArbiterService::new(Arbiter::new(&servers, arbiter_options(cfg)), runner),
            cost,
            weights: cfg.tenant_weights.clone(),
        }
    }

    /// Queues `work` for `tenant` as `plan` offers it, waits until it has run and
    /// returns it (with its result inside), or says why it was refused, dropped or
    /// could not run. `on` says where a request the arbiter starts at once runs (see
    /// [`ArbiterService::submit_on`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn run_on(
        &self,
        id: u64,
        tenant: String,
        class: PriorityClass,
        deadline_ms: u64,
        plan: Arc<ServingPlan>,
        work: W,
        on: RunsOn,
    ) -> Result<W, DaemonError> {
        let now = self.service.now();
        let deadline = if deadline_ms == 0 {
            f64::INFINITY
        } else {
            now + deadline_ms as f64 / 1e3
        };
        let weight = self.weights.get(&tenant).copied().unwrap_or(1.0);
        let stages = {
            let cost = lock(&self.cost);
            plan.stages(&cost, cost.now())
        };
        let request = Request {
            id,
            app: tenant.clone(),
            tenant,
            class,
            weight,
            arrival: now,
            deadline,
            stages,
        };
        match self
            .service
            .submit_on(request, Carried { work, plan }, on)
            .await
        {
            (Outcome::Completed { .. }, Some(c)) => Ok(c.work),
            (Outcome::Completed { .. }, None) => Err(DaemonError::Internal(
                "the request completed without its work".into(),
            )),
            (Outcome::Rejected { reason, .. }, _) => Err(DaemonError::Rejected(reason)),
        }
    }
}

/// The wire priority as the arbiter's class (unspecified is interactive).
pub fn class_from_wire(p: i32) -> PriorityClass {
    match p {
        1 => PriorityClass::Realtime,
        3 => PriorityClass::Background,
        _ => PriorityClass::Interactive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchyard_config::DeviceProfiles;
    use switchyard_scheduler::arbiter::Refusal;
    use switchyard_scheduler::cost::Learning;

    /// Sleeps as long as a CPU request of the test takes, counting how many run at once.
    struct Sleep {
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
        ms: u64,
    }

    impl Work for Sleep {
        fn run(&mut self, _at: Assigned) -> bool {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(self.ms));
            self.running.fetch_sub(1, Ordering::SeqCst);
            true
        }
    }

    fn gate(cores: usize) -> (Gate<Sleep>, Arc<Mutex<CostModel>>) {
        let cfg = SchedulerConfig {
            cpu_cores: cores,
            ..SchedulerConfig::default()
        };
        let cost = Arc::new(Mutex::new(CostModel::new(
            DeviceProfiles::default(),
            Learning::default(),
        )));
        (Gate::new(&cfg, &[ProcessorKind::Cpu], cost.clone()), cost)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_requests_run_side_by_side_and_teach_the_cost_model() {
        let (gate, cost) = gate(2);
        let gate = Arc::new(gate);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let dispatcher = tokio::spawn(gate.service.clone().run(async {
            let _ = stopped.await;
        }));
        let plan = Arc::new(ServingPlan::cpu_only("m", 1e-3, 1));
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (g, p) = (gate.clone(), plan.clone());
            let w = Sleep {
                running: running.clone(),
                peak: peak.clone(),
                ms: 40,
            };
            tasks.push(tokio::spawn(async move {
                g.run_on(
                    i,
                    "t".into(),
                    PriorityClass::Interactive,
                    0,
                    p,
                    w,
                    RunsOn::Pool,
                )
                .await
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            2,
            "two cores, two requests at once"
        );
        let l = {
            let c = lock(&cost);
            c.learned(plan.key(Variant::Placed), ProcessorKind::Cpu, 1, c.now())
                .unwrap()
        };
        assert_eq!(l.samples, 4);
        assert!(l.measured && l.seconds >= 0.040, "{l:?}");
        let _ = stop.send(());
        dispatcher.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hopeless_deadline_is_a_typed_refusal_once_the_model_is_measured() {
        let (gate, cost) = gate(1);
        let plan = Arc::new(ServingPlan::cpu_only("m", 1e-3, 1));
        {
            let mut c = lock(&cost);
            let now = c.now();
            for _ in 0..3 {
                plan.observe(&mut c, ProcessorKind::Cpu, 1, 0.050, now);
            }
        }
        let w = Sleep {
            running: Arc::new(AtomicUsize::new(0)),
            peak: Arc::new(AtomicUsize::new(0)),
            ms: 1,
        };
        let err = match gate
            .run_on(
                1,
                "t".into(),
                PriorityClass::Realtime,
                10,
                plan,
                w,
                RunsOn::Pool,
            )
            .await
        {
            Err(e) => e,
            Ok(_) => panic!("50 ms of work cannot meet a 10 ms deadline"),
        };
        match &err {
            DaemonError::Rejected(Refusal::Deadline {
                predicted_s,
                deadline_s,
                ..
            }) => assert!(*predicted_s > *deadline_s),
            other => panic!("{other:?}"),
        }
        let status: tonic::Status = err.into();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}
