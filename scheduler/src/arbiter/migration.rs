//! Job migration: a queued job moves to another allowed processor when that one would
//! finish it sooner (its backlog plus its service time there, transfers included).

use switchyard_interpreter::ProcessorKind;

use super::{Ctx, Job, Queue};

/// A job moved between queues.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub request: u64,
    pub from: ProcessorKind,
    pub to: ProcessorKind,
}

/// The option that would finish `job` first given `queue`, and when.
pub fn soonest(ctx: &Ctx<'_>, queue: &Queue, job: &Job) -> (ProcessorKind, f64) {
    job.options
        .iter()
        .map(|o| (o.processor, ctx.backlog(queue, o.processor) + o.service_s))
        .fold((job.processor, f64::INFINITY), |best, x| {
            if x.1 < best.1 { x } else { best }
        })
}

/// Moves queued jobs, most urgent (earliest deadline) first, to the processor that
/// finishes them sooner by more than 5% (hysteresis, so jobs do not bounce).
pub fn migrate(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Move> {
    let mut all: Vec<Job> = queue.per.values_mut().flat_map(std::mem::take).collect();
    all.sort_by(|a, b| {
        a.deadline
            .total_cmp(&b.deadline)
            .then(a.ready_at.total_cmp(&b.ready_at))
            .then(a.request.cmp(&b.request))
    });
    let mut moves = Vec::new();
    let mut rebuilt = Queue::default();
    for mut job in all {
        let here = ctx.backlog(&rebuilt, job.processor) + job.service();
        let (p, there) = soonest(ctx, &rebuilt, &job);
        if p != job.processor && there < here * 0.95 {
            moves.push(Move {
                request: job.request,
                from: job.processor,
                to: p,
            });
            job.processor = p;
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
    use std::collections::{BTreeMap, HashMap};

    #[test]
    fn a_job_stuck_behind_a_busy_gpu_moves_to_the_idle_cpu() {
        let mut j = job(1, Gpu, 0.005, 1.0);
        j.options.push(StageOption {
            processor: Cpu,
            service_s: 0.012,
        });
        let mut q = queue(vec![j]);
        let busy = BTreeMap::from([(Gpu, 0.020)]);
        let served = HashMap::new();
        let ctx = Ctx {
            now: 0.0,
            free: vec![Cpu],
            busy_until: &busy,
            served: &served,
        };
        let m = migrate(&ctx, &mut q);
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
        let mut j = job(2, Gpu, 0.005, 1.0);
        j.options.push(StageOption {
            processor: Cpu,
            service_s: 0.012,
        });
        let mut q = queue(vec![j]);
        let busy = BTreeMap::from([(Gpu, 0.001)]);
        let ctx = Ctx {
            now: 0.0,
            free: vec![Cpu],
            busy_until: &busy,
            served: &served,
        };
        assert!(migrate(&ctx, &mut q).is_empty());
    }
}
