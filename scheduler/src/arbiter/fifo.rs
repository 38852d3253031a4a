//! First come, first served: what apps sharing a processor get without a scheduler.
//! The baseline for fixed placements. Starvation-free by construction.

use super::{Assignment, Ctx, Job, Key, Queue, pick_by};

pub fn key(_: &Ctx<'_>, j: &Job) -> Key {
    Key([j.ready_at, 0.0, 0.0], j.request)
}

pub fn schedule(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
    pick_by(ctx, queue, key)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{job, queue};
    use super::*;
    use std::collections::HashMap;
    use switchyard_interpreter::ProcessorKind::Cpu;

    #[test]
    fn oldest_first() {
        let mut q = queue(vec![job(3, Cpu, 0.01, 0.02), job(1, Cpu, 0.01, 0.5)]);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        let a = schedule(&ctx, &mut q);
        assert_eq!(a[0].job.request, 1);
        assert_eq!(q.len(Cpu), 1);
    }
}
