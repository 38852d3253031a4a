//! A small worker pool for splitting one kernel's work across `PrepareCtx::threads`.
//!
//! Why not spawn per call: a model runs ~100 kernels per inference and a thread spawn
//! costs tens of microseconds, comparable to a whole small convolution. Why not rayon:
//! its global pool is sized by the machine, not by the thread count the caller asked
//! for, and is shared with whatever else the process runs.
//!
//! Kernels prepared with the same thread count share one pool (a registry of weak
//! references), so a model holds `threads - 1` extra OS threads, not one set per node.
//! Workers spin briefly after a job (the next kernel usually follows within
//! microseconds) and then sleep on a condition variable. The caller always works on its
//! own tasks and never waits for a worker that has not started: on a loaded machine a
//! sleeping worker may not run for milliseconds, and the caller then simply does all
//! the tasks itself.
//!
//! If the pool is already running a job (two interpreters on one pool), the caller runs
//! its tasks inline instead of queueing: slower, never deadlocking.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;

/// Spin iterations before a worker goes to sleep (a few tens of microseconds).
const SPIN_ITERS: usize = 20_000;

type TaskFn = dyn Fn(usize) + Sync;

/// A job as workers see it: the caller's closure with its lifetime erased.
#[derive(Clone, Copy)]
struct Job {
    f: *const TaskFn,
    tasks: usize,
}

// SAFETY: the pointee is `Sync` and `ThreadPool::run` keeps it alive until every worker
// has acknowledged the job, so sending the pointer to workers is sound.
unsafe impl Send for Job {}

struct Shared {
    generation: AtomicU64,
    next: AtomicUsize,
    /// The generation workers may still join, or 0 once the caller has closed it.
    open: AtomicU64,
    /// Workers inside the current job; the caller returns only when this is 0.
    joined: AtomicUsize,
    shutdown: AtomicBool,
    job: Mutex<Option<Job>>,
    sleep: Mutex<()>,
    wake: Condvar,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    busy: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads())
    }
}

fn run_tasks(shared: &Shared, job: Job) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.tasks {
            break;
        }
        // SAFETY: see `Job`: the closure outlives this job.
        unsafe { (*job.f)(i) };
    }
}

fn worker(shared: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        while shared.generation.load(Ordering::Acquire) == seen
            && !shared.shutdown.load(Ordering::Acquire)
            && spins < SPIN_ITERS
        {
            std::hint::spin_loop();
            spins += 1;
        }
        {
            let mut guard = shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            while shared.generation.load(Ordering::Acquire) == seen
                && !shared.shutdown.load(Ordering::Acquire)
            {
                guard = shared.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = shared.generation.load(Ordering::Acquire);
        // Join, then check the job is still open: with SeqCst on both sides either the
        // caller sees us joined and waits, or we see it closed and never touch the job.
        shared.joined.fetch_add(1, Ordering::SeqCst);
        if shared.open.load(Ordering::SeqCst) == seen {
            let job = *shared.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(job) = job {
                run_tasks(&shared, job);
            }
        }
        shared.joined.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes the current job and waits for the workers inside it, also when the caller's
/// own tasks unwind, so no worker can touch the closure after `run` returns. A worker
/// that has not woken up yet is not waited for: under load (more runnable threads than
/// cores) waiting for it to be scheduled would cost more than the work it could take.
struct CloseGuard<'a> {
    shared: &'a Shared,
}

impl Drop for CloseGuard<'_> {
    fn drop(&mut self) {
        self.shared.open.store(0, Ordering::SeqCst);
        let mut spins = 0usize;
        while self.shared.joined.load(Ordering::SeqCst) > 0 {
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl ThreadPool {
    /// A pool running work on `threads` threads in all: the caller plus `threads - 1`
    /// workers.
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            open: AtomicU64::new(0),
            joined: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            job: Mutex::new(None),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("switchyard-cpu-{i}"))
                .spawn(move || worker(s));
            // A failed spawn (thread limit) only costs parallelism.
            if let Ok(h) = spawned {
                workers.push(h);
            }
        }
        ThreadPool {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// Threads that run a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0) .. f(tasks - 1)`, spread over the pool, and returns when all are done.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        let guard = if self.workers.is_empty() || tasks == 1 {
            None
        } else {
            self.busy.try_lock().ok()
        };
        let Some(_busy) = guard else {
            (0..tasks).for_each(f);
            return;
        };
        // SAFETY: erases the closure's lifetime; `CloseGuard` below waits until every
        // worker that joined the job has left it before this function returns or unwinds.
        let f_static: *const TaskFn =
            unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const TaskFn>(f) };
        let job = Job { f: f_static, tasks };
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        self.shared.next.store(0, Ordering::Relaxed);
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            let generation = self.shared.generation.load(Ordering::Relaxed) + 1;
            self.shared.open.store(generation, Ordering::SeqCst);
            self.shared.generation.store(generation, Ordering::SeqCst);
            self.shared.wake.notify_all();
        }
        let _close = CloseGuard {
            shared: &self.shared,
        };
        run_tasks(&self.shared, job);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
            self.shared.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// The pool for `threads`, shared by every kernel prepared with that count while any
/// of them is alive. `threads <= 1` gets a pool with no workers.
type Registry = Mutex<Vec<(usize, Weak<ThreadPool>)>>;

pub fn shared_pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Registry> = OnceLock::new();
    let threads = threads.max(1);
    let registry = POOLS.get_or_init(|| Mutex::new(Vec::new()));
    let mut pools = registry.lock().unwrap_or_else(|e| e.into_inner());
    pools.retain(|(_, w)| w.strong_count() > 0);
    if let Some(p) = pools
        .iter()
        .find(|(t, _)| *t == threads)
        .and_then(|(_, w)| w.upgrade())
    {
        return p;
    }
    let p = Arc::new(ThreadPool::new(threads));
    pools.push((threads, Arc::downgrade(&p)));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for tasks in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run(tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = shared_pool(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        pool.run(8, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 8);
        assert!(Arc::ptr_eq(&pool, &shared_pool(2)));
    }
}
