//! The arbiter: per-processor queues of jobs, and who runs next.
//!
//! A request (one frame of one app) is a chain of stages, one per planned partition;
//! a stage becomes a job when the previous one finished (its inputs are ready). Each
//! job lists the processors allowed to run it with the expected service time on each
//! (the CPU is always among them: every partition keeps its CPU fallback), and whether
//! that figure was measured or is only a prior.
//!
//! A processor is a set of servers: the CPU has one per core, so independent requests
//! run side by side; an accelerator usually has one. A CPU job may instead take several
//! cores as intra-op threads when nothing else waits for them (see [`pick_by`]).
//!
//! Policies are pure functions `fn schedule(&Ctx, &mut Queue) -> Vec<Assignment>`, one
//! per file, testable without async code or hardware (after mrsnu/band). Each is a
//! *key*: the job with the smallest key goes next. The same key orders the queue when
//! admission control predicts finish times ([`admission`]) and when migration decides
//! where a job finishes first ([`migration`]), so the predictions follow the order the
//! policy really serves. Around the policies, [`Arbiter`] keeps the state: admission
//! control on submit, dropping jobs that can no longer meet their deadline, migration,
//! background caps and reserves, and the next stage on completion. [`runtime`] drives it
//! with tokio for the daemon; [`crate::sim`] drives it on a virtual clock.
//!
//! No policy starves anyone: a request without a deadline is ordered as if it were due
//! [`ArbiterOptions::aging_s`] after it became ready (priority classes age by the same
//! step), and fair share orders tenants by the time they received.

pub mod admission;
pub mod edf;
pub mod fair_share;
pub mod fifo;
pub mod least_slack;
pub mod migration;
pub mod priority;
pub mod runtime;

use std::cmp::Ordering;
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

impl PriorityClass {
    /// 0 for realtime, 1 interactive, 2 background: how many aging steps apart they are.
    pub fn rank(self) -> f64 {
        match self {
            PriorityClass::Realtime => 0.0,
            PriorityClass::Interactive => 1.0,
            PriorityClass::Background => 2.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PriorityClass::Realtime => "realtime",
            PriorityClass::Interactive => "interactive",
            PriorityClass::Background => "background",
        }
    }
}

/// A CPU stage run with several intra-op threads, each holding one core.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Wide {
    pub threads: usize,
    pub service_s: f64,
    /// Measured at this thread count; a prior is tried when the cores are idle anyway.
    pub measured: bool,
}

/// Where a stage may run and how long it takes there (transfers included).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StageOption {
    #[serde(serialize_with = "crate::ser_kind")]
    pub processor: ProcessorKind,
    /// Expected seconds on one server (one core for the CPU).
    pub service_s: f64,
    /// The figure comes from runs of this stage there. Admission control never refuses
    /// a request on a prior.
    pub measured: bool,
    /// The same stage with intra-op threads (CPU only), when the model can run so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wide: Option<Wide>,
    /// The figure is a prior, rests on one run, or is old: worth measuring again when
    /// the processor is idle anyway (see [`migration::soonest`]). Without that, one slow
    /// run (a cold cache, a busy moment) would keep a processor out of use for good.
    pub stale: bool,
}

impl StageOption {
    /// A measured option on one server.
    pub fn measured(processor: ProcessorKind, service_s: f64) -> StageOption {
        StageOption {
            processor,
            service_s,
            measured: true,
            wide: None,
            stale: false,
        }
    }

    /// An option whose time is only a prior (profile, or too few runs yet).
    pub fn prior(processor: ProcessorKind, service_s: f64) -> StageOption {
        StageOption {
            measured: false,
            stale: true,
            ..StageOption::measured(processor, service_s)
        }
    }

    /// What admission control may count on: the measurement, else nothing.
    pub fn known_s(&self) -> f64 {
        if self.measured { self.service_s } else { 0.0 }
    }
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

    /// Fastest measured time (zero when some option is still unmeasured).
    pub fn fastest_known(&self) -> f64 {
        if self.options.iter().any(|o| !o.measured) {
            return 0.0;
        }
        self.fastest()
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
    /// Absolute deadline; `f64::INFINITY` when the request has none.
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
    /// The same counting measured times only (for admission and dropping).
    pub rest_known_s: f64,
    /// The queue it is in.
    pub processor: ProcessorKind,
}

impl Job {
    pub fn option_on(&self, p: ProcessorKind) -> Option<&StageOption> {
        self.options.iter().find(|o| o.processor == p)
    }

    pub fn service_on(&self, p: ProcessorKind) -> Option<f64> {
        self.option_on(p).map(|o| o.service_s)
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

    /// Fastest time admission may count on (zero when some option is unmeasured).
    pub fn fastest_known(&self) -> f64 {
        if self.options.iter().any(|o| !o.measured) {
            return 0.0;
        }
        self.fastest()
    }

    pub fn has_deadline(&self) -> bool {
        self.deadline.is_finite()
    }

    /// The deadline the policies order by: the real one, or for a request without one
    /// `aging_s` after it became ready, so it cannot wait forever behind requests that
    /// carry far deadlines.
    pub fn effective_deadline(&self, aging_s: f64) -> f64 {
        if self.has_deadline() {
            self.deadline
        } else {
            self.ready_at + aging_s
        }
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

    pub fn jobs(&self, p: ProcessorKind) -> &[Job] {
        self.per.get(&p).map_or(&[], Vec::as_slice)
    }
}

/// Background work on one processor, for the cap and the reserve.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackgroundState {
    /// Servers background jobs may hold at once.
    pub cap: usize,
    /// Servers they hold now.
    pub running: usize,
    /// Background work received less than its reserved share lately: a queued
    /// background job goes before the policy's choice.
    pub reserve_due: bool,
}

/// What a policy may look at.
#[derive(Clone, Debug)]
pub struct Ctx<'a> {
    pub now: f64,
    /// Per processor, when each of its servers is expected to be free (at or before
    /// `now`: free now), sorted.
    pub servers: BTreeMap<ProcessorKind, Vec<f64>>,
    /// Processor seconds each tenant received so far, divided by its weight.
    pub served: &'a HashMap<String, f64>,
    /// See [`ArbiterOptions::aging_s`].
    pub aging_s: f64,
    pub background: BTreeMap<ProcessorKind, BackgroundState>,
    /// The express lane of each multi-server processor (see
    /// [`ArbiterOptions::express_s`]).
    pub express: BTreeMap<ProcessorKind, Express>,
}

/// One extra server of a multi-server processor for jobs measured short, used when every
/// regular one is busy: the OS time-slices it with them, so a short frame (a wake word)
/// never waits behind a long job. Jobs are not preempted; this is what stands in for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Express {
    /// When the lane is expected to be free (at or before now: free).
    pub free_at: f64,
    /// Longest expected service a job may have to use it.
    pub max_s: f64,
}

impl<'a> Ctx<'a> {
    /// Every server of every processor idle (tests, simulations from scratch).
    pub fn idle(
        now: f64,
        servers: &[(ProcessorKind, usize)],
        served: &'a HashMap<String, f64>,
    ) -> Ctx<'a> {
        Ctx {
            now,
            servers: servers.iter().map(|&(p, n)| (p, vec![now; n])).collect(),
            served,
            aging_s: ArbiterOptions::default().aging_s,
            background: BTreeMap::new(),
            express: BTreeMap::new(),
        }
    }

    /// Servers of `p` free now.
    pub fn free(&self, p: ProcessorKind) -> usize {
        self.servers
            .get(&p)
            .map_or(0, |s| s.iter().filter(|&&t| t <= self.now).count())
    }

    /// Free processors, each once (for tests and simple callers).
    pub fn free_processors(&self) -> Vec<ProcessorKind> {
        self.servers
            .keys()
            .copied()
            .filter(|&p| self.free(p) > 0)
            .collect()
    }
}

/// A job given to a processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub job: Job,
    pub processor: ProcessorKind,
    /// Servers it holds: intra-op threads on the CPU, else 1.
    pub threads: usize,
    /// It runs on the express lane, beside the processor's busy servers.
    pub express: bool,
    pub start: f64,
    pub expected_finish: f64,
}

/// A policy's ordering key: smallest first, compared lexicographically, ties broken by
/// request id (older first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Key(pub [f64; 3], pub u64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Key {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0[0]
            .total_cmp(&o.0[0])
            .then(self.0[1].total_cmp(&o.0[1]))
            .then(self.0[2].total_cmp(&o.0[2]))
            .then(self.1.cmp(&o.1))
    }
}

/// Fills every free server with the queued job of the smallest `key`, under the
/// background cap (background jobs hold at most `cap` servers of a processor) and the
/// background reserve (when background work got less than its share lately, a queued
/// background job goes first); then, when every server is busy, gives the express lane
/// (see [`Express`]) to the most urgent short job. A CPU job takes several cores as
/// intra-op threads only when no other job waits for them, it is not background work,
/// and its threads are not known to be slower than one core.
pub fn pick_by(
    ctx: &Ctx<'_>,
    queue: &mut Queue,
    key: impl Fn(&Ctx<'_>, &Job) -> Key,
) -> Vec<Assignment> {
    let mut out = Vec::new();
    for &p in ctx.servers.keys() {
        let mut free = ctx.free(p);
        let bg = ctx.background.get(&p).copied().unwrap_or(BackgroundState {
            cap: usize::MAX,
            running: 0,
            reserve_due: false,
        });
        let mut bg_running = bg.running;
        let mut reserve_due = bg.reserve_due;
        let Some(jobs) = queue.per.get_mut(&p) else {
            continue;
        };
        while free > 0 {
            let allowed = |j: &Job| j.class != PriorityClass::Background || bg_running < bg.cap;
            let best_of = |jobs: &[Job], only_bg: bool| {
                jobs.iter()
                    .enumerate()
                    .filter(|(_, j)| {
                        allowed(j) && (!only_bg || j.class == PriorityClass::Background)
                    })
                    .min_by_key(|(_, j)| key(ctx, j))
                    .map(|(i, _)| i)
            };
            let pick = if reserve_due {
                best_of(jobs, true).or_else(|| best_of(jobs, false))
            } else {
                best_of(jobs, false)
            };
            let Some(i) = pick else {
                break;
            };
            let job = jobs.remove(i);
            let others_waiting = jobs.iter().any(allowed);
            let (threads, service) = match job.option_on(p) {
                Some(o) => match o.wide {
                    Some(w)
                        if p == ProcessorKind::Cpu
                            && job.class != PriorityClass::Background
                            && !others_waiting
                            && w.threads > 1
                            && w.threads <= free
                            && (!w.measured || w.service_s < 0.85 * o.service_s) =>
                    {
                        (w.threads, w.service_s)
                    }
                    _ => (1, o.service_s),
                },
                None => (1, f64::INFINITY),
            };
            free = free.saturating_sub(threads);
            if job.class == PriorityClass::Background {
                bg_running += 1;
                reserve_due = false;
            }
            out.push(Assignment {
                processor: p,
                threads,
                express: false,
                start: ctx.now,
                expected_finish: ctx.now + service,
                job,
            });
        }
        if free > 0 {
            continue;
        }
        let Some(lane) = ctx.express.get(&p).filter(|l| l.free_at <= ctx.now) else {
            continue;
        };
        let short = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| {
                j.option_on(p)
                    .is_some_and(|o| o.measured && o.service_s <= lane.max_s)
                    && (j.class != PriorityClass::Background || bg_running < bg.cap)
            })
            .min_by_key(|(_, j)| key(ctx, j))
            .map(|(i, _)| i);
        if let Some(i) = short {
            let job = jobs.remove(i);
            let service = job.service_on(p).unwrap_or(f64::INFINITY);
            out.push(Assignment {
                processor: p,
                threads: 1,
                express: true,
                start: ctx.now,
                expected_finish: ctx.now + service,
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

    /// The policy's ordering key of `job` (on the processor whose queue holds it).
    pub fn key(self, ctx: &Ctx<'_>, job: &Job) -> Key {
        match self {
            Policy::Fifo => fifo::key(ctx, job),
            Policy::Priority => priority::key(ctx, job),
            Policy::Edf => edf::key(ctx, job),
            Policy::LeastSlack => least_slack::key(ctx, job),
            Policy::FairShare => fair_share::key(ctx, job),
        }
    }

    pub fn schedule(self, ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
        pick_by(ctx, queue, |c, j| self.key(c, j))
    }
}

/// How an [`Arbiter`] behaves.
#[derive(Clone, Copy, Debug)]
pub struct ArbiterOptions {
    pub policy: Policy,
    /// Jobs one tenant may hold queued on one processor.
    pub queue_limit: usize,
    /// Refuse requests (and drop queued jobs) that cannot meet their deadline.
    pub admission: bool,
    /// Let jobs choose and change processor among their options.
    pub migration: bool,
    /// A request without a deadline is ordered as if due this many seconds after it
    /// became ready, and priority classes are this many seconds apart: the bound on how
    /// long the policies let such work wait behind others.
    pub aging_s: f64,
    /// Fraction of a processor's servers background jobs may hold at once (at least
    /// one), so realtime work always finds a free core on a multi-core CPU.
    pub background_share: f64,
    /// Fraction of a processor's time background work gets when it has work queued,
    /// however busy the other classes keep it.
    pub background_reserve: f64,
    /// Jobs expected to take at most this many seconds may use the express lane of a
    /// multi-server processor when every server is busy (see [`Express`]); 0: none.
    pub express_s: f64,
}

impl Default for ArbiterOptions {
    fn default() -> Self {
        ArbiterOptions {
            policy: Policy::LeastSlack,
            queue_limit: 64,
            admission: true,
            migration: true,
            aging_s: 0.5,
            background_share: 0.5,
            background_reserve: 0.15,
            express_s: 0.002,
        }
    }
}

/// Why a request was refused or dropped. Typed, so the daemon maps it to a status code
/// without reading the message.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the queue of the {processor} is full ({len} jobs, limit {limit})")]
    QueueFull {
        processor: ProcessorKind,
        len: usize,
        limit: usize,
    },
    /// Admission control: even where it would finish first, in the policy's order
    /// behind the queued work, it finishes after its deadline.
    #[error(
        "cannot meet its deadline: predicted finish in {:.1} ms, deadline in {:.1} ms (on the {processor})",
        predicted_s * 1e3,
        deadline_s * 1e3
    )]
    Deadline {
        processor: ProcessorKind,
        /// Seconds from submission to the predicted finish.
        predicted_s: f64,
        /// Seconds from submission to the deadline.
        deadline_s: f64,
    },
    /// Dropped from the queue: it can no longer finish in time.
    #[error("dropped: would finish {:.1} ms after its deadline", late_s * 1e3)]
    Expired { late_s: f64 },
    #[error("no processor of this arbiter can run stage {stage}")]
    NoProcessor { stage: usize },
    /// The stage could not be computed at all (its CPU fallback failed too).
    #[error("{0}")]
    Failed(String),
    #[error("the arbiter stopped")]
    Stopped,
}

impl Refusal {
    /// Refused or dropped for time (as opposed to capacity or failure).
    pub fn is_deadline(&self) -> bool {
        matches!(self, Refusal::Deadline { .. } | Refusal::Expired { .. })
    }
}

/// What happened to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Completed {
        request: u64,
        finish: f64,
    },
    /// Refused at submit, dropped later, or failed.
    Rejected {
        request: u64,
        reason: Refusal,
    },
}

impl Outcome {
    pub fn request(&self) -> u64 {
        match self {
            Outcome::Completed { request, .. } | Outcome::Rejected { request, .. } => *request,
        }
    }
}

/// A job on a processor now.
#[derive(Clone, Debug, PartialEq)]
pub struct Running {
    pub request: u64,
    pub stage: usize,
    pub processor: ProcessorKind,
    pub threads: usize,
    pub express: bool,
    pub class: PriorityClass,
    pub expected_finish: f64,
}

/// Busy seconds of background work, decayed with time constant [`RESERVE_WINDOW_S`].
#[derive(Clone, Copy, Debug, Default)]
struct Decayed {
    value: f64,
    at: f64,
}

/// Time constant over which the background reserve is judged.
pub const RESERVE_WINDOW_S: f64 = 1.0;

impl Decayed {
    fn at(&self, now: f64) -> f64 {
        self.value * (-(now - self.at).max(0.0) / RESERVE_WINDOW_S).exp()
    }

    fn add(&mut self, now: f64, seconds: f64) {
        self.value = self.at(now) + seconds;
        self.at = now;
    }
}

/// Queues, running jobs and request progress: the state the policies work on.
pub struct Arbiter {
    opts: ArbiterOptions,
    servers: BTreeMap<ProcessorKind, usize>,
    queue: Queue,
    running: Vec<Running>,
    pending: HashMap<u64, Request>,
    served: HashMap<String, f64>,
    background_busy: BTreeMap<ProcessorKind, Decayed>,
    outcomes: Vec<Outcome>,
}

/// One server per processor (accelerators; a one-core CPU).
pub fn one_each(kinds: &[ProcessorKind]) -> Vec<(ProcessorKind, usize)> {
    kinds.iter().map(|&k| (k, 1)).collect()
}

impl Arbiter {
    /// An arbiter over `servers`: each processor and how many jobs it runs at once
    /// (the CPU: its cores).
    pub fn new(servers: &[(ProcessorKind, usize)], opts: ArbiterOptions) -> Arbiter {
        Arbiter {
            opts,
            servers: servers.iter().map(|&(p, n)| (p, n.max(1))).collect(),
            queue: Queue::default(),
            running: Vec::new(),
            pending: HashMap::new(),
            served: HashMap::new(),
            background_busy: BTreeMap::new(),
            outcomes: Vec::new(),
        }
    }

    pub fn options(&self) -> ArbiterOptions {
        self.opts
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn running(&self) -> &[Running] {
        &self.running
    }

    pub fn servers(&self, p: ProcessorKind) -> usize {
        self.servers.get(&p).copied().unwrap_or(0)
    }

    fn ctx(&self, now: f64) -> Ctx<'_> {
        let mut servers = BTreeMap::new();
        let mut background = BTreeMap::new();
        let mut express = BTreeMap::new();
        for (&p, &n) in &self.servers {
            let mut times = Vec::with_capacity(n);
            let mut bg_running = 0;
            for r in self.running.iter().filter(|r| r.processor == p) {
                if r.class == PriorityClass::Background {
                    bg_running += 1;
                }
                if r.express {
                    continue;
                }
                for _ in 0..r.threads {
                    times.push(r.expected_finish.max(now + 1e-9));
                }
            }
            if n > 1 && self.opts.express_s > 0.0 {
                let free_at = self
                    .running
                    .iter()
                    .find(|r| r.processor == p && r.express)
                    .map_or(now, |r| r.expected_finish.max(now + 1e-9));
                express.insert(
                    p,
                    Express {
                        free_at,
                        max_s: self.opts.express_s,
                    },
                );
            }
            times.truncate(n);
            times.resize(n, now);
            times.sort_by(f64::total_cmp);
            servers.insert(p, times);
            let cap = ((n as f64 * self.opts.background_share).floor() as usize).clamp(1, n);
            let share = self
                .background_busy
                .get(&p)
                .map_or(0.0, |d| d.at(now) / (RESERVE_WINDOW_S * n as f64));
            background.insert(
                p,
                BackgroundState {
                    cap,
                    running: bg_running,
                    reserve_due: share < self.opts.background_reserve,
                },
            );
        }
        Ctx {
            now,
            servers,
            served: &self.served,
            aging_s: self.opts.aging_s,
            background,
            // Leave a quarter of the budget for the frame itself.
            express,
        }
    }

    fn job_for(&self, r: &Request, stage: usize, now: f64) -> Option<Job> {
        let s = r.stages.get(stage)?;
        let mut options: Vec<StageOption> = s
            .options
            .iter()
            .copied()
            .filter(|o| self.servers.contains_key(&o.processor))
            .collect();
        if !self.opts.migration {
            options.truncate(1);
        }
        let first = options.first()?.processor;
        let rest = r.stages.get(stage + 1..).unwrap_or(&[]);
        let mut job = Job {
            request: r.id,
            stage,
            tenant: r.tenant.clone(),
            class: r.class,
            weight: r.weight,
            deadline: r.deadline,
            ready_at: now,
            rest_s: rest.iter().map(Stage::fastest).sum(),
            rest_known_s: rest.iter().map(Stage::fastest_known).sum(),
            options,
            processor: first,
        };
        if self.opts.migration {
            let ctx = self.ctx(now);
            job.processor = migration::soonest(&ctx, &self.queue, &job, self.opts.policy).0;
        }
        Some(job)
    }

    /// Admits a request (its first stage is ready now) or refuses it with the reason.
    pub fn submit(&mut self, request: Request, now: f64) -> Result<(), Refusal> {
        let job = self
            .job_for(&request, 0, now)
            .ok_or(Refusal::NoProcessor { stage: 0 })?;
        admission::admit(
            &self.ctx(now),
            &self.queue,
            &job,
            self.opts.policy,
            self.opts.queue_limit,
            self.opts.admission,
        )?;
        self.queue.push(job);
        self.pending.insert(request.id, request);
        Ok(())
    }

    /// Gives every free server its next job: drops hopeless jobs (admission on),
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
            migration::migrate(&ctx, &mut queue, self.opts.policy);
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
            self.running.push(Running {
                request: a.job.request,
                stage: a.job.stage,
                processor: a.processor,
                threads: a.threads,
                express: a.express,
                class: a.job.class,
                expected_finish: a.expected_finish,
            });
        }
        assigned
    }

    fn take_running(&mut self, request: u64, stage: usize) -> Option<Running> {
        let i = self
            .running
            .iter()
            .position(|r| r.request == request && r.stage == stage)?;
        Some(self.running.swap_remove(i))
    }

    /// Records that stage `stage` of `request` finished after `took` seconds; readies
    /// the request's next stage or completes it.
    pub fn complete(&mut self, request: u64, stage: usize, now: f64, took: f64) {
        let Some(run) = self.take_running(request, stage) else {
            return;
        };
        if run.class == PriorityClass::Background {
            self.background_busy
                .entry(run.processor)
                .or_default()
                .add(now, took * run.threads as f64);
        }
        let Some(r) = self.pending.get(&request) else {
            return;
        };
        *self.served.entry(r.tenant.clone()).or_default() += took * run.threads as f64 / r.weight;
        let next = stage + 1;
        if next >= r.stages.len() {
            self.pending.remove(&request);
            self.outcomes.push(Outcome::Completed {
                request,
                finish: now,
            });
            return;
        }
        match self.job_for(r, next, now) {
            Some(job) => self.queue.push(job),
            None => {
                self.pending.remove(&request);
                self.outcomes.push(Outcome::Rejected {
                    request,
                    reason: Refusal::NoProcessor { stage: next },
                });
            }
        }
    }

    /// Records that a running stage failed for good (its CPU fallback failed too): its
    /// servers are free again and the request is refused with the reason.
    pub fn fail(&mut self, request: u64, stage: usize, reason: Refusal) {
        if self.take_running(request, stage).is_none() {
            return;
        }
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
            options: vec![StageOption::measured(p, service)],
            rest_s: 0.0,
            rest_known_s: 0.0,
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

    pub fn request(
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
                        .map(|(p, s)| StageOption::measured(p, s))
                        .collect(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
