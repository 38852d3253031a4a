//! Earliest deadline first: optimal on one processor when the load is feasible.

use super::{Assignment, Ctx, Queue, pick_by};

pub fn schedule(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
    pick_by(ctx, queue, |_, j| (j.deadline, j.request))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{job, queue};
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use switchyard_interpreter::ProcessorKind::{Cpu, Gpu};

    #[test]
    fn nearest_deadline_first_on_each_free_processor() {
        let mut q = queue(vec![
            job(1, Cpu, 0.01, 0.9),
            job(2, Cpu, 0.01, 0.1),
            job(3, Gpu, 0.01, 0.5),
            job(4, Gpu, 0.01, 0.2),
        ]);
        let (busy, served) = (BTreeMap::new(), HashMap::new());
        let ctx = Ctx {
            now: 0.0,
            free: vec![Cpu, Gpu],
            busy_until: &busy,
            served: &served,
        };
        let a = schedule(&ctx, &mut q);
        let ids: Vec<u64> = a.iter().map(|a| a.job.request).collect();
        assert_eq!(ids, vec![2, 4]);
    }
}
