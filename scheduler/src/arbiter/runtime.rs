//! The arbiter on tokio, for the daemon: requests are submitted from any task and
//! awaited; one dispatcher task asks the policy for work whenever something changed
//! and runs each job on the blocking pool (kernels and device calls block), reporting
//! back when done. The policy logic stays in the sync [`Arbiter`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use switchyard_interpreter::ProcessorKind;
use tokio::sync::{Mutex, Notify, oneshot};

use super::{Arbiter, Job, Outcome, Request};

/// Runs one stage of a request on a processor, blocking until it is done. The stage's
/// CPU fallback (delegate error or timeout) happens inside: an error here means the
/// stage could not be computed at all.
pub trait StageRunner: Send + Sync + 'static {
    fn run(&self, job: &Job, processor: ProcessorKind) -> Result<(), String>;
}

struct State {
    arbiter: Arbiter,
    waiters: HashMap<u64, oneshot::Sender<Outcome>>,
}

struct Inner {
    state: Mutex<State>,
    wake: Notify,
    clock: Instant,
    runner: Arc<dyn StageRunner>,
}

/// A cloneable handle on the running arbiter.
#[derive(Clone)]
pub struct ArbiterService {
    inner: Arc<Inner>,
}

impl ArbiterService {
    pub fn new(arbiter: Arbiter, runner: Arc<dyn StageRunner>) -> ArbiterService {
        ArbiterService {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    arbiter,
                    waiters: HashMap::new(),
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

    /// Submits a request and waits for its outcome: completed, or refused/dropped with
    /// the reason.
    pub async fn submit(&self, request: Request) -> Outcome {
        let id = request.id;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.inner.state.lock().await;
            let now = self.now();
            if let Err(reason) = st.arbiter.submit(request, now) {
                return Outcome::Rejected {
                    request: id,
                    reason,
                };
            }
            st.waiters.insert(id, tx);
        }
        self.inner.wake.notify_one();
        rx.await.unwrap_or(Outcome::Rejected {
            request: id,
            reason: "arbiter stopped".into(),
        })
    }

    /// Dispatches until `shutdown` resolves. Jobs already running finish on the
    /// blocking pool; waiters of unfinished requests learn that the arbiter stopped.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            {
                let mut st = self.inner.state.lock().await;
                let now = self.now();
                let assigned = st.arbiter.dispatch(now);
                deliver(&mut st);
                for a in assigned {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let runner = me.inner.runner.clone();
                        let job = a.job.clone();
                        let p = a.processor;
                        let started = me.now();
                        let result = tokio::task::spawn_blocking(move || runner.run(&job, p)).await;
                        let mut st = me.inner.state.lock().await;
                        let now = me.now();
                        match result {
                            Ok(Ok(())) => st.arbiter.complete(p, now, now - started),
                            Ok(Err(e)) => st.arbiter.fail(p, e),
                            Err(e) => st.arbiter.fail(p, format!("stage task failed: {e}")),
                        }
                        deliver(&mut st);
                        drop(st);
                        me.inner.wake.notify_one();
                    });
                }
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

fn deliver(st: &mut State) {
    for o in st.arbiter.take_outcomes() {
        let id = match &o {
            Outcome::Completed { request, .. } | Outcome::Rejected { request, .. } => *request,
        };
        if let Some(tx) = st.waiters.remove(&id) {
            let _ = tx.send(o);
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

    impl StageRunner for Recorder {
        fn run(&self, job: &Job, p: ProcessorKind) -> Result<(), String> {
            if job.request == 99 {
                return Err("device and cpu fallback both failed".into());
            }
            if let Ok(mut v) = self.0.lock() {
                v.push((job.request, job.stage, p));
            }
            Ok(())
        }
    }

    fn request(svc: &ArbiterService, id: u64, deadline_s: f64) -> Request {
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
                    options: vec![StageOption {
                        processor: Gpu,
                        service_s: 0.001,
                    }],
                },
                Stage {
                    options: vec![StageOption {
                        processor: Cpu,
                        service_s: 0.001,
                    }],
                },
            ],
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_complete_stage_by_stage_and_failures_are_reported() {
        let rec = Arc::new(Recorder::default());
        let arb = Arbiter::new(
            &[Cpu, Gpu],
            ArbiterOptions {
                policy: Policy::Edf,
                queue_limit: 16,
                admission: true,
                migration: true,
            },
        );
        let svc = ArbiterService::new(arb, rec.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let dispatcher = tokio::spawn(svc.clone().run(async {
            let _ = stop_rx.await;
        }));
        let (a, b, c, d) = tokio::join!(
            svc.submit(request(&svc, 1, 60.0)),
            svc.submit(request(&svc, 2, 60.0)),
            svc.submit(request(&svc, 99, 60.0)),
            // Cannot finish 2 ms of work in 1 µs: refused at once.
            svc.submit(request(&svc, 3, 1e-6)),
        );
        assert!(matches!(a, Outcome::Completed { request: 1, .. }), "{a:?}");
        assert!(matches!(b, Outcome::Completed { request: 2, .. }), "{b:?}");
        match c {
            Outcome::Rejected {
                request: 99,
                reason,
            } => assert!(reason.contains("fallback")),
            other => panic!("{other:?}"),
        }
        match d {
            Outcome::Rejected { request: 3, reason } => assert!(reason.contains("deadline")),
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
}
