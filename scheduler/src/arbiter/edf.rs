//! Earliest deadline first: optimal on one processor when the load is feasible. A job
//! without a deadline counts as due [`Ctx::aging_s`] after it became ready, and each
//! class below realtime counts as due one aging step later (jobs are not preempted, so
//! a realtime frame should not queue behind interactive work that can still wait).

use super::{Assignment, Ctx, Job, Key, Queue, pick_by};

pub fn key(ctx: &Ctx<'_>, j: &Job) -> Key {
    Key(
        [
            j.effective_deadline(ctx.aging_s) + j.class.rank() * ctx.aging_s,
            j.effective_deadline(ctx.aging_s),
            0.0,
        ],
        j.request,
    )
}

pub fn schedule(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
    pick_by(ctx, queue, key)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{job, queue};
    use super::*;
    use std::collections::HashMap;
    use switchyard_interpreter::ProcessorKind::{Cpu, Gpu};

    #[test]
    fn nearest_deadline_first_on_each_free_processor() {
        let mut q = queue(vec![
            job(1, Cpu, 0.01, 0.9),
            job(2, Cpu, 0.01, 0.1),
            job(3, Gpu, 0.01, 0.5),
            job(4, Gpu, 0.01, 0.2),
        ]);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1), (Gpu, 1)], &served);
        let a = schedule(&ctx, &mut q);
        let ids: Vec<u64> = a.iter().map(|a| a.job.request).collect();
        assert_eq!(ids, vec![2, 4]);
    }
}
