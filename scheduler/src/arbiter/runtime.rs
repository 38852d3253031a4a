//! The arbiter on tokio, for the daemon: requests are submitted from any task with the
//! work they carry and awaited; one dispatcher task asks the policy for work whenever
//! something changed and runs each stage on the blocking pool (kernels and device calls
//! block), with the processor and thread count the arbiter chose, reporting back when
//! done. The policy logic stays in the sync [`Arbiter`]; the work travels with its
//! request through the queue and comes back to the submitter.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use switchyard_interpreter::ProcessorKind;
use tokio::sync::{Mutex, Notify, oneshot};

use super::{Arbiter, Job, Outcome, Refusal, Request};

/// Runs one stage of a request on a processor, blocking until it is done. The stage's
/// CPU fallback (delegate error or timeout) happens inside: an error here means the
/// stage could not be computed at all.
pub trait StageRunner<W>: Send + Sync + 'static {
    fn run(
        &self,
        work: &mut W,
        job: &Job,
        processor: ProcessorKind,
        threads: usize,
    ) -> Result<(), String>;
}

struct State<W> {
    arbiter: Arbiter,
    waiters: HashMap<u64, oneshot::Sender<(Outcome, Option<W>)>>,
    /// The work of every admitted request that is not running a stage right now.
    works: HashMap<u64, W>,
}

struct Inner<W> {
    state: Mutex<State<W>>,
    wake: Notify,
    clock: Instant,
    runner: Arc<dyn StageRunner<W>>,
}

/// A cloneable handle on the running arbiter.
pub struct ArbiterService<W> {
    inner: Arc<Inner<W>>,
}

impl<W> Clone for ArbiterService<W> {
    fn clone(&self) -> Self {
        ArbiterService {
            inner: self.inner.clone(),
        }
    }
}

impl<W: Send + 'static> ArbiterService<W> {
    pub fn new(arbiter: Arbiter, runner: Arc<dyn StageRunner<W>>) -> ArbiterService<W> {
        ArbiterService {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    arbiter,
                    waiters: HashMap::new(),
                    works: HashMap::new(),
                }),
                wake: Notify::new(),
                clock: Instant::now(),
                runner,
            }),
        }
    }

    /// Seconds on the arbiter's clock (request arrival times and deadlines use it).
    pub fn now(&self) -> f64 {
        self.inner.clock.elapsed().as_secs_f64()
    }

    /// Submits a request with its work and waits for its outcome: completed, or
    /// refused/dropped/failed with the reason. The work comes back unless it was lost
    /// with a failed stage. Stages run on the blocking pool.
    pub async fn submit(&self, request: Request, work: W) -> (Outcome, Option<W>) {
        self.submit_on(request, work, RunsOn::Pool).await
    }

    /// [`ArbiterService::submit`], choosing where a stage the arbiter can start at once
    /// runs. With [`RunsOn::Caller`] it runs on the calling thread, which must be one
    /// that may block (a dedicated thread in `block_on`, never a runtime worker): each
    /// handoff between threads costs a wake-up, tens of µs on small machines, which is
    /// most of a small request's fixed cost. The arbiter decides exactly as for a
    /// pooled stage; a stage that has to wait still runs on the pool when its turn
    /// comes.
    pub async fn submit_on(&self, request: Request, work: W, on: RunsOn) -> (Outcome, Option<W>) {
        let id = request.id;
        let (tx, rx) = oneshot::channel();
        let mut mine = None;
        {
            let mut st = self.inner.state.lock().await;
            let now = self.now();
            if let Err(reason) = st.arbiter.submit(request, now) {
                return (
                    Outcome::Rejected {
                        request: id,
                        reason,
                    },
                    Some(work),
                );
            }
            st.works.insert(id, work);
            st.waiters.insert(id, tx);
            if on == RunsOn::Caller {
                for a in st.arbiter.dispatch(now) {
                    if a.job.request == id && mine.is_none() {
                        match st.works.remove(&id) {
                            Some(w) => mine = Some((a, w)),
                            None => st.arbiter.fail(
                                id,
                                a.job.stage,
                                Refusal::Failed("the request's work is gone".into()),
                            ),
                        }
                    } else {
                        self.launch(&mut st, a);
                    }
                }
                deliver(&mut st);
            }
        }
        if let Some((a, mut work)) = mine {
            let (stage, p, threads) = (a.job.stage, a.processor, a.threads);
            let started = self.now();
            let runner = self.inner.runner.clone();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runner.run(&mut work, &a.job, p, threads)
            }))
            .map(|r| (work, r))
            .map_err(|_| "the stage panicked".to_string());
            let mut st = self.inner.state.lock().await;
            self.finish(&mut st, id, stage, started, r);
        }
        self.inner.wake.notify_one();
        rx.await.unwrap_or((
            Outcome::Rejected {
                request: id,
                reason: Refusal::Stopped,
            },
            None,
        ))
    }

    /// Starts an assigned stage on the blocking pool; it reports back when done.
    fn launch(&self, st: &mut State<W>, a: super::Assignment) {
        let (id, stage, p, threads) = (a.job.request, a.job.stage, a.processor, a.threads);
        let Some(mut work) = st.works.remove(&id) else {
            st.arbiter.fail(
                id,
                stage,
                Refusal::Failed("the request's work is gone".into()),
            );
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let runner = me.inner.runner.clone();
            let job = a.job;
            let started = me.now();
            let result = tokio::task::spawn_blocking(move || {
                let r = runner.run(&mut work, &job, p, threads);
                (work, r)
            })
            .await
            .map_err(|e| format!("stage task failed: {e}"));
            let mut st = me.inner.state.lock().await;
            me.finish(&mut st, id, stage, started, result);
            drop(st);
            me.inner.wake.notify_one();
        });
    }

    /// Reports a stage's end to the arbiter and hands out what it decided.
    fn finish(
        &self,
        st: &mut State<W>,
        id: u64,
        stage: usize,
        started: f64,
        result: Result<(W, Result<(), String>), String>,
    ) {
        let now = self.now();
        match result {
            Ok((work, Ok(()))) => {
                st.works.insert(id, work);
                st.arbiter.complete(id, stage, now, now - started);
            }
            Ok((work, Err(e))) => {
                st.works.insert(id, work);
                st.arbiter.fail(id, stage, Refusal::Failed(e));
            }
            Err(e) => st.arbiter.fail(id, stage, Refusal::Failed(e)),
        }
        deliver(st);
    }

    /// Dispatches until `shutdown` resolves. Stages already running finish on the
    /// blocking pool; waiters of unfinished requests learn that the arbiter stopped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            {
                let mut st = self.inner.state.lock().await;
                let now = self.now();
                for a in st.arbiter.dispatch(now) {
                    self.launch(&mut st, a);
                }
                deliver(&mut st);
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = &mut shutdown => break,
            }
        }
        let mut st = self.inner.state.lock().await;
        st.waiters.clear();
    }
}

/// Where a stage the arbiter can start at once runs (see [`ArbiterService::submit_on`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunsOn {
    /// The blocking pool: for callers on the runtime's workers (gRPC handlers).
    Pool,
    /// The submitting thread: for a dedicated thread that may block (the fast path).
    Caller,
}

fn deliver<W>(st: &mut State<W>) {
    for o in st.arbiter.take_outcomes() {
        let id = o.request();
        let work = st.works.remove(&id);
        if let Some(tx) = st.waiters.remove(&id) {
            let _ = tx.send((o, work));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ArbiterOptions, Policy, PriorityClass, Stage, StageOption};
    use super::*;
    use ProcessorKind::{Cpu, Gpu};
    use std::sync::Mutex as StdMutex;

    /// Records which (request, stage, processor) ran, in order; fails request 99.
    #[derive(Default)]
    struct Recorder(StdMutex<Vec<(u64, usize, ProcessorKind)>>);

    /// The work a request carries: the stages it saw.
    type Seen = Vec<usize>;

    impl StageRunner<Seen> for Recorder {
        fn run(
            &self,
            work: &mut Seen,
            job: &Job,
            p: ProcessorKind,
            _threads: usize,
        ) -> Result<(), String> {
            if job.request == 99 {
                return Err("device and cpu fallback both failed".into());
            }
            work.push(job.stage);
            if let Ok(mut v) = self.0.lock() {
                v.push((job.request, job.stage, p));
            }
            Ok(())
        }
    }

    fn request(svc: &ArbiterService<Seen>, id: u64, deadline_s: f64) -> Request {
        let now = svc.now();
        Request {
            id,
            tenant: "t".into(),
            app: "a".into(),
            class: PriorityClass::Interactive,
            weight: 1.0,
            arrival: now,
            deadline: now + deadline_s,
            stages: vec![
                Stage {
                    options: vec![StageOption::measured(Gpu, 0.001)],
                },
                Stage {
                    options: vec![StageOption::measured(Cpu, 0.001)],
                },
            ],
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_complete_stage_by_stage_and_failures_are_reported() {
        let rec = Arc::new(Recorder::default());
        let arb = Arbiter::new(
            &[(Cpu, 2), (Gpu, 1)],
            ArbiterOptions {
                policy: Policy::Edf,
                queue_limit: 16,
                migration: false,
                ..ArbiterOptions::default()
            },
        );
        let svc = ArbiterService::new(arb, rec.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let dispatcher = tokio::spawn(svc.clone().run(async {
            let _ = stop_rx.await;
        }));
        let (a, b, c, d) = tokio::join!(
            svc.submit(request(&svc, 1, 60.0), Vec::new()),
            svc.submit(request(&svc, 2, 60.0), Vec::new()),
            svc.submit(request(&svc, 99, 60.0), Vec::new()),
            // Cannot finish 2 ms of work in 1 µs: refused at once.
            svc.submit(request(&svc, 3, 1e-6), Vec::new()),
        );
        assert!(
            matches!(a.0, Outcome::Completed { request: 1, .. }),
            "{a:?}"
        );
        assert_eq!(
            a.1,
            Some(vec![0, 1]),
            "the work comes back with both stages"
        );
        assert!(
            matches!(b.0, Outcome::Completed { request: 2, .. }),
            "{b:?}"
        );
        match c.0 {
            Outcome::Rejected {
                request: 99,
                reason: Refusal::Failed(reason),
            } => assert!(reason.contains("fallback")),
            other => panic!("{other:?}"),
        }
        match d.0 {
            Outcome::Rejected { request: 3, reason } => assert!(reason.is_deadline()),
            other => panic!("{other:?}"),
        }
        let ran = rec.0.lock().unwrap().clone();
        for id in [1, 2] {
            let stages: Vec<(usize, ProcessorKind)> = ran
                .iter()
                .filter(|r| r.0 == id)
                .map(|r| (r.1, r.2))
                .collect();
            assert_eq!(stages, vec![(0, Gpu), (1, Cpu)]);
        }
        let _ = stop_tx.send(());
        dispatcher.await.unwrap();
    }

    /// Records the thread each stage ran on; panics on request 77.
    #[derive(Default)]
    struct Threads(StdMutex<Vec<(u64, usize, std::thread::ThreadId)>>);

    impl StageRunner<Seen> for Threads {
        fn run(
            &self,
            work: &mut Seen,
            job: &Job,
            _: ProcessorKind,
            _: usize,
        ) -> Result<(), String> {
            if job.request == 77 {
                panic!("a kernel bug");
            }
            work.push(job.stage);
            if let Ok(mut v) = self.0.lock() {
                v.push((job.request, job.stage, std::thread::current().id()));
            }
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stage_started_at_once_runs_on_the_caller_and_later_ones_on_the_pool() {
        let rec = Arc::new(Threads::default());
        let arb = Arbiter::new(&[(Cpu, 2), (Gpu, 1)], ArbiterOptions::default());
        let svc = ArbiterService::new(arb, rec.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let dispatcher = tokio::spawn(svc.clone().run(async {
            let _ = stop_rx.await;
        }));
        let me = std::thread::current().id();
        let (outcome, work) = svc
            .submit_on(request(&svc, 1, 60.0), Vec::new(), RunsOn::Caller)
            .await;
        assert!(
            matches!(outcome, Outcome::Completed { request: 1, .. }),
            "{outcome:?}"
        );
        assert_eq!(work, Some(vec![0, 1]));
        let ran = rec.0.lock().unwrap().clone();
        assert_eq!(ran.len(), 2, "{ran:?}");
        assert_eq!(
            (ran[0].1, ran[0].2),
            (0, me),
            "the first stage ran on the caller"
        );
        assert_ne!(
            ran[1].2, me,
            "the stage that waited for its turn ran on the pool"
        );

        // A stage that panics on the caller's thread fails its request; the service
        // and the caller live on.
        let (outcome, _) = svc
            .submit_on(request(&svc, 77, 60.0), Vec::new(), RunsOn::Caller)
            .await;
        match outcome {
            Outcome::Rejected {
                request: 77,
                reason: Refusal::Failed(reason),
            } => {
                assert!(reason.contains("panicked"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let (outcome, _) = svc
            .submit_on(request(&svc, 2, 60.0), Vec::new(), RunsOn::Caller)
            .await;
        assert!(
            matches!(outcome, Outcome::Completed { request: 2, .. }),
            "{outcome:?}"
        );
        let _ = stop_tx.send(());
        dispatcher.await.unwrap();
    }
}
