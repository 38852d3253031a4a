//! Requests go through the scheduler's arbiter: one queue per processor, the policy
//! from `scheduler.policy`, weighted fair share between tenants
//! (`scheduler.tenant_weights`) and admission control (full queues and hopeless
//! deadlines are refused with the reason). A request is one stage on its model's main
//! processor: the interpreter runs every partition itself, with CPU fallback inside.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_config::SchedulerConfig;
use switchyard_interpreter::ProcessorKind;
use switchyard_scheduler::arbiter::runtime::{ArbiterService, StageRunner};
use switchyard_scheduler::arbiter::{
    Arbiter, ArbiterOptions, Job, Outcome, Policy, PriorityClass, Request, Stage, StageOption,
};

use crate::error::DaemonError;
use crate::tenant::lock;

type Work = Box<dyn FnOnce() + Send>;

/// The work of admitted requests, keyed by request id, run when the arbiter says so.
#[derive(Default)]
struct Jobs(Mutex<HashMap<u64, Work>>);

impl StageRunner for Jobs {
    fn run(&self, job: &Job, _processor: ProcessorKind) -> Result<(), String> {
        let work = lock(&self.0).remove(&job.request);
        match work {
            Some(w) => {
                w();
                Ok(())
            }
            None => Err("the request's work is gone".into()),
        }
    }
}

/// The daemon's arbiter and the work waiting in it.
pub struct Gate {
    pub service: ArbiterService,
    jobs: Arc<Jobs>,
    weights: std::collections::BTreeMap<String, f64>,
}

impl Gate {
    pub fn new(cfg: &SchedulerConfig, processors: &[ProcessorKind]) -> Gate {
        let opts = ArbiterOptions {
            policy: Policy::from_name(&cfg.policy).unwrap_or(Policy::FairShare),
            queue_limit: cfg.queue_limit.max(1),
            admission: true,
            migration: false,
        };
        let jobs = Arc::new(Jobs::default());
        Gate {
            service: ArbiterService::new(Arbiter::new(processors, opts), jobs.clone()),
            jobs,
            weights: cfg.tenant_weights.clone(),
        }
    }

    /// Queues `work` for tenant `tenant` on `processor` (expected `service_s` seconds)
    /// and waits until it has run, or returns why it was refused or dropped.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        id: u64,
        tenant: String,
        class: PriorityClass,
        deadline_ms: u64,
        processor: ProcessorKind,
        service_s: f64,
        work: Work,
    ) -> Result<(), DaemonError> {
        let now = self.service.now();
        let deadline = if deadline_ms == 0 {
            f64::INFINITY
        } else {
            now + deadline_ms as f64 / 1e3
        };
        let weight = self.weights.get(&tenant).copied().unwrap_or(1.0);
        lock(&self.jobs.0).insert(id, work);
        let request = Request {
            id,
            app: tenant.clone(),
            tenant,
            class,
            weight,
            arrival: now,
            deadline,
            stages: vec![Stage {
                options: vec![StageOption {
                    processor,
                    service_s: service_s.max(1e-6),
                }],
            }],
        };
        match self.service.submit(request).await {
            Outcome::Completed { .. } => Ok(()),
            Outcome::Rejected { reason, .. } => {
                lock(&self.jobs.0).remove(&id);
                Err(DaemonError::Rejected {
                    deadline: reason.contains("deadline"),
                    reason,
                })
            }
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
