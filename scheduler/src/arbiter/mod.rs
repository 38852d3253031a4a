//! The arbiter: per-processor queues of jobs, and who runs next.
//!
//! A request (one frame of one app) is a chain of stages, one per planned partition;
//! a stage becomes a job when the previous one finished (its inputs are ready). Each
//! job lists the processors allowed to run it with the expected service time on each
//! (the CPU is always among them: every partition keeps its CPU fallback).
//!
//! Policies are pure functions `fn schedule(&Ctx, &mut Queue) -> Vec<Assignment>`, one
//! per file, testable without async code or hardware (after mrsnu/band). Around them,
//! [`Arbiter`] keeps the state: admission control on submit, dropping jobs that can no
//! longer meet their deadline, migration of queued jobs to a processor that would
//! finish them sooner, and the next stage on completion. [`runtime`] drives it with
//! tokio for the daemon; [`crate::sim`] drives it on a virtual clock.

pub mod admission;
pub mod edf;
pub mod fair_share;
pub mod fifo;
pub mod least_slack;
pub mod migration;
pub mod priority;
pub mod runtime;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use switchyard_interpreter::ProcessorKind;

/// Priority classes, most urgent first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PriorityClass {
    /// Frames a user sees or hears now (camera preview, wake word).
    Realtime,
    #[default]
    Interactive,
    /// Batch work with loose deadlines (indexing, embeddings).
    Background,
}

/// Where a stage may run and how long it takes there (transfers included).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StageOption {
    #[serde(serialize_with = "crate::ser_kind")]
    pub processor: ProcessorKind,
    pub service_s: f64,
}

/// One partition of a request; `options[0]` is the planned processor.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    pub options: Vec<StageOption>,
}

impl Stage {
    pub fn fastest(&self) -> f64 {
        self.options
            .iter()
            .map(|o| o.service_s)
            .fold(f64::INFINITY, f64::min)
    }
}

/// One inference request. Times are seconds on the arbiter's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub id: u64,
    pub tenant: String,
    pub app: String,
    pub class: PriorityClass,
    /// Tenant's share weight for fair share.
    pub weight: f64,
    pub arrival: f64,
    /// Absolute deadline.
    pub deadline: f64,
    pub stages: Vec<Stage>,
}

/// A stage of a request whose inputs are ready.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub request: u64,
    pub stage: usize,
    pub tenant: String,
    pub class: PriorityClass,
    pub weight: f64,
    pub deadline: f64,
    pub ready_at: f64,
    pub options: Vec<StageOption>,
    /// Fastest expected time of the stages after this one (for slack).
    pub rest_s: f64,
    /// The queue it is in.
    pub processor: ProcessorKind,
}

impl Job {
    pub fn service_on(&self, p: ProcessorKind) -> Option<f64> {
        self.options
            .iter()
            .find(|o| o.processor == p)
            .map(|o| o.service_s)
    }

    /// Expected time on the processor whose queue holds it.
    pub fn service(&self) -> f64 {
        self.service_on(self.processor).unwrap_or(f64::INFINITY)
    }

    pub fn fastest(&self) -> f64 {
        self.options
            .iter()
            .map(|o| o.service_s)
            .fold(f64::INFINITY, f64::min)
    }
}

/// Jobs waiting per processor.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    pub per: BTreeMap<ProcessorKind, Vec<Job>>,
}

impl Queue {
    pub fn len(&self, p: ProcessorKind) -> usize {
        self.per.get(&p).map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.per.values().all(Vec::is_empty)
    }

    pub fn push(&mut self, job: Job) {
        self.per.entry(job.processor).or_default().push(job);
    }

    /// Expected seconds of queued work on `p`.
    pub fn queued_work(&self, p: ProcessorKind) -> f64 {
        self.per
            .get(&p)
            .map_or(0.0, |q| q.iter().map(Job::service).sum())
    }
}

/// What a policy may look at.
#[derive(Clone, Debug)]
pub struct Ctx<'a> {
    pub now: f64,
    /// Processors idle now.
    pub free: Vec<ProcessorKind>,
    /// When each busy processor is expected to be free again.
    pub busy_until: &'a BTreeMap<ProcessorKind, f64>,
    /// Processor seconds each tenant received so far (for fair share).
    pub served: &'a HashMap<String, f64>,
}

impl Ctx<'_> {
    /// Expected seconds until `p` could start a job queued behind `queue`'s work.
    pub fn backlog(&self, queue: &Queue, p: ProcessorKind) -> f64 {
        let busy = self
            .busy_until
            .get(&p)
            .map_or(0.0, |&t| (t - self.now).max(0.0));
        busy + queue.queued_work(p)
    }
}

/// A job given to a processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub job: Job,
    pub processor: ProcessorKind,
    pub start: f64,
    pub expected_finish: f64,
}

/// Takes, for every free processor, the queued job with the smallest `key`.
pub fn pick_by<K: PartialOrd>(
    ctx: &Ctx<'_>,
    queue: &mut Queue,
    key: impl Fn(&Ctx<'_>, &Job) -> K,
) -> Vec<Assignment> {
    let mut out = Vec::new();
    for &p in &ctx.free {
        let Some(jobs) = queue.per.get_mut(&p) else {
            continue;
        };
        let mut best: Option<(usize, K)> = None;
        for (i, j) in jobs.iter().enumerate() {
            let k = key(ctx, j);
            if best.as_ref().is_none_or(|(_, bk)| k < *bk) {
                best = Some((i, k));
            }
        }
        if let Some((i, _)) = best {
            let job = jobs.remove(i);
            let s = job.service();
            out.push(Assignment {
                processor: p,
                start: ctx.now,
                expected_finish: ctx.now + s,
                job,
            });
        }
    }
    out
}

/// The policies the arbiter can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    Fifo,
    Priority,
    Edf,
    LeastSlack,
    FairShare,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::Fifo,
        Policy::Priority,
        Policy::Edf,
        Policy::LeastSlack,
        Policy::FairShare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Fifo => "fifo",
            Policy::Priority => "priority",
            Policy::Edf => "edf",
            Policy::LeastSlack => "least-slack",
            Policy::FairShare => "fair-share",
        }
    }

    pub fn from_name(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == s)
    }

    pub fn schedule(self, ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
        match self {
            Policy::Fifo => fifo::schedule(ctx, queue),
            Policy::Priority => priority::schedule(ctx, queue),
            Policy::Edf => edf::schedule(ctx, queue),
            Policy::LeastSlack => least_slack::schedule(ctx, queue),
            Policy::FairShare => fair_share::schedule(ctx, queue),
        }
    }
}

/// How an [`Arbiter`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct ArbiterOptions {
    pub policy: Policy,
    /// Jobs one processor may hold queued.
    pub queue_limit: usize,
    /// Refuse requests (and drop queued jobs) that cannot meet their deadline.
    pub admission: bool,
    /// Let jobs choose and change processor among their options.
    pub migration: bool,
}

/// What happened to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed {
        request: u64,
        finish: f64,
    },
    /// Refused at submit or dropped later, with the reason.
    Rejected {
        request: u64,
        reason: String,
    },
}

struct Pending {
    request: Request,
}

/// Queues, running jobs and request progress: the state the policies work on.
pub struct Arbiter {
    opts: ArbiterOptions,
    processors: Vec<ProcessorKind>,
    queue: Queue,
    /// Running job per processor and its expected finish.
    running: BTreeMap<ProcessorKind, (u64, usize, f64)>,
    busy_until: BTreeMap<ProcessorKind, f64>,
    pending: HashMap<u64, Pending>,
    served: HashMap<String, f64>,
    outcomes: Vec<Outcome>,
}

impl Arbiter {
    pub fn new(processors: &[ProcessorKind], opts: ArbiterOptions) -> Arbiter {
        Arbiter {
            opts,
            processors: processors.to_vec(),
            queue: Queue::default(),
            running: BTreeMap::new(),
            busy_until: BTreeMap::new(),
            pending: HashMap::new(),
            served: HashMap::new(),
            outcomes: Vec::new(),
        }
    }

    pub fn options(&self) -> ArbiterOptions {
        self.opts
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    fn ctx(&self, now: f64) -> Ctx<'_> {
        Ctx {
            now,
            free: self
                .processors
                .iter()
                .copied()
                .filter(|p| !self.running.contains_key(p))
                .collect(),
            busy_until: &self.busy_until,
            served: &self.served,
        }
    }

    fn job_for(&self, r: &Request, stage: usize, now: f64) -> Option<Job> {
        let s = r.stages.get(stage)?;
        let mut options: Vec<StageOption> = s
            .options
            .iter()
            .copied()
            .filter(|o| self.processors.contains(&o.processor))
            .collect();
        if !self.opts.migration {
            options.truncate(1);
        }
        let first = options.first()?.processor;
        let mut job = Job {
            request: r.id,
            stage,
            tenant: r.tenant.clone(),
            class: r.class,
            weight: r.weight,
            deadline: r.deadline,
            ready_at: now,
            rest_s: r.stages[stage + 1..].iter().map(Stage::fastest).sum(),
            options,
            processor: first,
        };
        if self.opts.migration {
            let ctx = self.ctx(now);
            job.processor = migration::soonest(&ctx, &self.queue, &job).0;
        }
        Some(job)
    }

    /// Admits a request (its first stage is ready now) or refuses it with a reason.
    pub fn submit(&mut self, request: Request, now: f64) -> Result<(), String> {
        let job = self
            .job_for(&request, 0, now)
            .ok_or_else(|| "no stage of the request can run on these processors".to_string())?;
        admission::admit(
            &self.ctx(now),
            &self.queue,
            &job,
            self.opts.queue_limit,
            self.opts.admission,
        )?;
        self.queue.push(job);
        self.pending.insert(request.id, Pending { request });
        Ok(())
    }

    /// Gives every free processor its next job: drops hopeless jobs (admission on),
    /// migrates (migration on), then asks the policy.
    pub fn dispatch(&mut self, now: f64) -> Vec<Assignment> {
        let mut queue = std::mem::take(&mut self.queue);
        let ctx = self.ctx(now);
        let dropped = if self.opts.admission {
            admission::expired(&ctx, &mut queue)
        } else {
            Vec::new()
        };
        if self.opts.migration {
            migration::migrate(&ctx, &mut queue);
        }
        let assigned = self.opts.policy.schedule(&ctx, &mut queue);
        self.queue = queue;
        for (job, reason) in dropped {
            self.pending.remove(&job.request);
            self.outcomes.push(Outcome::Rejected {
                request: job.request,
                reason,
            });
        }
        for a in &assigned {
            self.running
                .insert(a.processor, (a.job.request, a.job.stage, a.expected_finish));
            self.busy_until.insert(a.processor, a.expected_finish);
        }
        assigned
    }

    /// Records that `processor` finished its job after `took` seconds; readies the
    /// request's next stage or completes it.
    pub fn complete(&mut self, processor: ProcessorKind, now: f64, took: f64) {
        let Some((request, stage, _)) = self.running.remove(&processor) else {
            return;
        };
        self.busy_until.remove(&processor);
        let Some(p) = self.pending.get(&request) else {
            return;
        };
        *self.served.entry(p.request.tenant.clone()).or_default() += took / p.request.weight;
        let next = stage + 1;
        if next >= p.request.stages.len() {
            self.pending.remove(&request);
            self.outcomes.push(Outcome::Completed {
                request,
                finish: now,
            });
            return;
        }
        match self.job_for(&p.request, next, now) {
            Some(job) => self.queue.push(job),
            None => {
                self.pending.remove(&request);
                self.outcomes.push(Outcome::Rejected {
                    request,
                    reason: "next stage has no processor".into(),
                });
            }
        }
    }

    /// Records that `processor`'s job failed for good (its CPU fallback failed too):
    /// the processor is free again and the request is refused with the reason.
    pub fn fail(&mut self, processor: ProcessorKind, reason: String) {
        let Some((request, _, _)) = self.running.remove(&processor) else {
            return;
        };
        self.busy_until.remove(&processor);
        self.pending.remove(&request);
        self.outcomes.push(Outcome::Rejected { request, reason });
    }

    /// Outcomes since the last call.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.queue.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn job(request: u64, p: ProcessorKind, service: f64, deadline: f64) -> Job {
        Job {
            request,
            stage: 0,
            tenant: format!("t{}", request % 2),
            class: PriorityClass::Interactive,
            weight: 1.0,
            deadline,
            ready_at: request as f64 * 1e-3,
            options: vec![StageOption {
                processor: p,
                service_s: service,
            }],
            rest_s: 0.0,
            processor: p,
        }
    }

    pub fn queue(jobs: Vec<Job>) -> Queue {
        let mut q = Queue::default();
        for j in jobs {
            q.push(j);
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProcessorKind::{Cpu, Gpu};

    fn req(
        id: u64,
        arrival: f64,
        deadline: f64,
        stages: Vec<Vec<(ProcessorKind, f64)>>,
    ) -> Request {
        Request {
            id,
            tenant: "a".into(),
            app: "app".into(),
            class: PriorityClass::Interactive,
            weight: 1.0,
            arrival,
            deadline,
            stages: stages
                .into_iter()
                .map(|o| Stage {
                    options: o
                        .into_iter()
                        .map(|(processor, service_s)| StageOption {
                            processor,
                            service_s,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn opts(admission: bool, migration: bool) -> ArbiterOptions {
        ArbiterOptions {
            policy: Policy::Edf,
            queue_limit: 8,
            admission,
            migration,
        }
    }

    #[test]
    fn stages_run_in_order_and_complete_the_request() {
        let mut a = Arbiter::new(&[Cpu, Gpu], opts(false, false));
        a.submit(
            req(1, 0.0, 1.0, vec![vec![(Gpu, 0.01)], vec![(Cpu, 0.02)]]),
            0.0,
        )
        .unwrap();
        let d = a.dispatch(0.0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].processor, Gpu);
        a.complete(Gpu, 0.01, 0.01);
        let d = a.dispatch(0.01);
        assert_eq!((d[0].processor, d[0].job.stage), (Cpu, 1));
        a.complete(Cpu, 0.03, 0.02);
        assert_eq!(
            a.take_outcomes(),
            vec![Outcome::Completed {
                request: 1,
                finish: 0.03
            }]
        );
        assert!(a.is_idle());
    }

    #[test]
    fn a_second_job_goes_to_the_processor_that_finishes_it_sooner() {
        let mut a = Arbiter::new(&[Cpu, Gpu], opts(true, true));
        let both = vec![vec![(Gpu, 0.010), (Cpu, 0.015)]];
        a.submit(req(1, 0.0, 1.0, both.clone()), 0.0).unwrap();
        a.submit(req(2, 0.0, 1.0, both), 0.0).unwrap();
        let mut d = a.dispatch(0.0);
        d.sort_by_key(|x| x.job.request);
        assert_eq!(d[0].processor, Gpu);
        assert_eq!(d[1].processor, Cpu, "waiting 10 ms for the gpu is slower");
    }

    #[test]
    fn hopeless_requests_are_refused_with_a_reason() {
        let mut a = Arbiter::new(&[Cpu], opts(true, true));
        let err = a
            .submit(req(1, 0.0, 0.005, vec![vec![(Cpu, 0.010)]]), 0.0)
            .unwrap_err();
        assert!(err.contains("deadline"), "{err}");
    }
}
