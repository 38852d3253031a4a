//! Fixed priority classes: realtime before interactive before background; first come,
//! first served within a class. Simple and predictable, but a class can starve the ones
//! below it under overload.

use super::{Assignment, Ctx, Queue, pick_by};

pub fn schedule(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
    pick_by(ctx, queue, |_, j| (j.class, j.ready_at, j.request))
}

#[cfg(test)]
mod tests {
    use super::super::PriorityClass;
    use super::super::testutil::{job, queue};
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use switchyard_interpreter::ProcessorKind::Cpu;

    #[test]
    fn realtime_beats_older_background() {
        let mut old = job(1, Cpu, 0.01, 0.5);
        old.class = PriorityClass::Background;
        let mut rt = job(2, Cpu, 0.01, 0.5);
        rt.class = PriorityClass::Realtime;
        let mut q = queue(vec![old, rt]);
        let (busy, served) = (BTreeMap::new(), HashMap::new());
        let ctx = Ctx {
            now: 0.0,
            free: vec![Cpu],
            busy_until: &busy,
            served: &served,
        };
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 2);
    }
}
