//! Job migration: a job goes to, and a queued job moves to, the allowed processor that
//! would finish it first: the servers' free times, the jobs the policy serves before
//! it there, and its own service time there (transfers included).

use switchyard_interpreter::ProcessorKind;

use super::admission::{earliest, occupy, predict_finish};
use super::{Ctx, Job, Policy, Queue};

/// A job moved between queues.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub request: u64,
    pub from: ProcessorKind,
    pub to: ProcessorKind,
}

/// How much slower than the best choice a stale figure may say its processor is and
/// still be measured again. A figure this far off is more than one unlucky run.
const EXPLORE_WITHIN: f64 = 4.0;

/// The option that would finish `job` first given `queue` in `policy`'s order, and when.
///
/// Except: an option whose figure is stale (a prior, one run, or old) goes first when
/// its processor is idle now, its figure is within [`EXPLORE_WITHIN`] of the best, and
/// the job's deadline still holds there. That run measures it again, so a processor
/// one slow run made look bad is not left out for good, at the cost of an occasional
/// run on an idle processor that is a little slower.
pub fn soonest(ctx: &Ctx<'_>, queue: &Queue, job: &Job, policy: Policy) -> (ProcessorKind, f64) {
    let finishes: Vec<(ProcessorKind, f64, bool)> = job
        .options
        .iter()
        .map(|o| {
            (
                o.processor,
                predict_finish(ctx, queue, job, o.processor, policy, false),
                o.stale,
            )
        })
        .collect();
    let best = finishes
        .iter()
        .fold((job.processor, f64::INFINITY), |best, &(p, t, _)| {
            if t < best.1 { (p, t) } else { best }
        });
    let idle = |p: ProcessorKind| ctx.free(p) > 0 && queue.jobs(p).is_empty();
    let best_stale = finishes.iter().any(|&(p, _, stale)| p == best.0 && stale);
    if !best_stale
        && let Some(&(p, t, _)) = finishes.iter().find(|&&(p, t, stale)| {
            stale
                && p != best.0
                && idle(p)
                && t.is_finite()
                && t - ctx.now <= EXPLORE_WITHIN * (best.1 - ctx.now)
                && t + job.rest_s <= job.deadline
        })
    {
        return (p, t);
    }
    best
}

/// Replays the queued jobs in the policy's order on every processor's servers and
/// moves each to the processor that finishes it more than 5% sooner (hysteresis, so
/// jobs do not bounce).
pub fn migrate(ctx: &Ctx<'_>, queue: &mut Queue, policy: Policy) -> Vec<Move> {
    let mut all: Vec<Job> = queue.per.values_mut().flat_map(std::mem::take).collect();
    all.sort_by_cached_key(|j| policy.key(ctx, j));
    let mut servers = ctx.servers.clone();
    let finish_on = |servers: &std::collections::BTreeMap<ProcessorKind, Vec<f64>>,
                     job: &Job,
                     p: ProcessorKind| {
        match (servers.get(&p), job.service_on(p)) {
            (Some(s), Some(t)) if !s.is_empty() => earliest(s).max(ctx.now) + t,
            _ => f64::INFINITY,
        }
    };
    let mut moves = Vec::new();
    let mut rebuilt = Queue::default();
    for mut job in all {
        let here = finish_on(&servers, &job, job.processor);
        let (p, there) = job
            .options
            .iter()
            .map(|o| (o.processor, finish_on(&servers, &job, o.processor)))
            .fold((job.processor, f64::INFINITY), |best, x| {
                if x.1 < best.1 { x } else { best }
            });
        // A job sent to measure a stale figure on an idle processor stays while that
        // processor can start it now (see `soonest`).
        let measuring = job.option_on(job.processor).is_some_and(|o| o.stale)
            && servers
                .get(&job.processor)
                .is_some_and(|s| !s.is_empty() && earliest(s) <= ctx.now);
        if !measuring && p != job.processor && (there < here * 0.95 || !here.is_finite()) {
            moves.push(Move {
                request: job.request,
                from: job.processor,
                to: p,
            });
            job.processor = p;
        }
        if let Some(s) = servers.get_mut(&job.processor) {
            occupy(s, ctx.now, job.service());
        }
        rebuilt.push(job);
    }
    *queue = rebuilt;
    moves
}

#[cfg(test)]
mod tests {
    use super::super::StageOption;
    use super::super::testutil::{job, queue};
    use super::*;
    use ProcessorKind::{Cpu, Gpu};
    use std::collections::HashMap;

    fn gpu_or_cpu(id: u64) -> Job {
        let mut j = job(id, Gpu, 0.005, 1.0);
        j.options.push(StageOption::measured(Cpu, 0.012));
        j
    }

    #[test]
    fn a_job_stuck_behind_a_busy_gpu_moves_to_the_idle_cpu() {
        let served = HashMap::new();
        let mut ctx = Ctx::idle(0.0, &[(Cpu, 1), (Gpu, 1)], &served);
        ctx.servers.insert(Gpu, vec![0.020]);
        let mut q = queue(vec![gpu_or_cpu(1)]);
        let m = migrate(&ctx, &mut q, Policy::Edf);
        assert_eq!(
            m,
            vec![Move {
                request: 1,
                from: Gpu,
                to: Cpu
            }]
        );
        assert_eq!(q.len(Cpu), 1);

        // With the GPU about to be free, it stays.
        ctx.servers.insert(Gpu, vec![0.001]);
        let mut q = queue(vec![gpu_or_cpu(2)]);
        assert!(migrate(&ctx, &mut q, Policy::Edf).is_empty());
    }

    #[test]
    fn queued_jobs_spread_over_gpu_and_cpu_cores() {
        // Five 5 ms GPU jobs (12 ms on a core): the GPU takes the first ones, the two
        // cores take the ones that would wait longer for the GPU.
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 2), (Gpu, 1)], &served);
        let mut q = queue((1..=5).map(gpu_or_cpu).collect());
        migrate(&ctx, &mut q, Policy::Fifo);
        assert_eq!((q.len(Gpu), q.len(Cpu)), (3, 2));
        let new = gpu_or_cpu(6);
        let (p, f) = soonest(&ctx, &q, &new, Policy::Fifo);
        // GPU frees at 15 ms -> 20 ms; the cores at 12 ms -> 24 ms.
        assert_eq!(p, Gpu);
        assert!((f - 0.020).abs() < 1e-9, "{f}");
    }

    /// GPU measured at 5 ms; the CPU's figure is stale at `cpu_s`.
    fn stale_cpu(id: u64, cpu_s: f64, deadline: f64) -> Job {
        let mut j = job(id, Gpu, 0.005, deadline);
        let mut cpu = StageOption::measured(Cpu, cpu_s);
        cpu.stale = true;
        j.options.push(cpu);
        j
    }

    #[test]
    fn a_stale_figure_is_measured_again_on_an_idle_processor_within_bounds() {
        let served = HashMap::new();
        let mut ctx = Ctx::idle(0.0, &[(Cpu, 1), (Gpu, 1)], &served);
        let q = queue(vec![]);
        // One slow CPU run (12 ms) must not keep the idle CPU out for good.
        assert_eq!(
            soonest(&ctx, &q, &stale_cpu(1, 0.012, 1.0), Policy::Edf).0,
            Cpu
        );
        // Not when the deadline would be missed there...
        assert_eq!(
            soonest(&ctx, &q, &stale_cpu(2, 0.012, 0.010), Policy::Edf).0,
            Gpu
        );
        // ...nor when the figure is far beyond one unlucky run...
        assert_eq!(
            soonest(&ctx, &q, &stale_cpu(3, 0.100, 1.0), Policy::Edf).0,
            Gpu
        );
        // ...nor when the CPU is busy.
        ctx.servers.insert(Cpu, vec![0.003]);
        assert_eq!(
            soonest(&ctx, &q, &stale_cpu(4, 0.012, 1.0), Policy::Edf).0,
            Gpu
        );
        // A fresh figure decides by finish time alone.
        ctx.servers.insert(Cpu, vec![0.0]);
        assert_eq!(soonest(&ctx, &q, &gpu_or_cpu(5), Policy::Edf).0, Gpu);
    }

    #[test]
    fn a_job_measuring_a_stale_figure_is_not_migrated_back() {
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1), (Gpu, 1)], &served);
        let mut j = stale_cpu(1, 0.012, 1.0);
        j.processor = Cpu;
        let mut q = queue(vec![j]);
        assert!(migrate(&ctx, &mut q, Policy::Edf).is_empty());
        assert_eq!(q.len(Cpu), 1);
    }
}
