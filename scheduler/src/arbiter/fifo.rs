//! First come, first served: what apps sharing a processor get without a scheduler.
//! The baseline for fixed placements.

use super::{Assignment, Ctx, Queue, pick_by};

pub fn schedule(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
    pick_by(ctx, queue, |_, j| (j.ready_at, j.request))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{job, queue};
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use switchyard_interpreter::ProcessorKind::Cpu;

    #[test]
    fn oldest_first() {
        let mut q = queue(vec![job(3, Cpu, 0.01, 0.02), job(1, Cpu, 0.01, 0.5)]);
        let (busy, served) = (BTreeMap::new(), HashMap::new());
        let ctx = Ctx {
            now: 0.0,
            free: vec![Cpu],
            busy_until: &busy,
            served: &served,
        };
        let a = schedule(&ctx, &mut q);
        assert_eq!(a[0].job.request, 1);
        assert_eq!(q.len(Cpu), 1);
    }
}
