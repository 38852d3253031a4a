//! Priority classes: realtime before interactive before background, first come first
//! served within a class. Classes age: each is [`Ctx::aging_s`] behind the one above,
//! so a background job that has waited two aging steps goes before a fresh realtime
//! one. Without aging, a saturated upper class would starve the classes below it.

use super::{Assignment, Ctx, Job, Key, Queue, pick_by};

pub fn key(ctx: &Ctx<'_>, j: &Job) -> Key {
    Key(
        [j.ready_at + j.class.rank() * ctx.aging_s, j.ready_at, 0.0],
        j.request,
    )
}

pub fn schedule(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<Assignment> {
    pick_by(ctx, queue, key)
}

#[cfg(test)]
mod tests {
    use super::super::PriorityClass;
    use super::super::testutil::{job, queue};
    use super::*;
    use std::collections::HashMap;
    use switchyard_interpreter::ProcessorKind::Cpu;

    #[test]
    fn realtime_beats_older_background_until_it_has_aged() {
        let served = HashMap::new();
        let mut old = job(1, Cpu, 0.01, 0.5);
        old.class = PriorityClass::Background;
        let mut rt = job(2, Cpu, 0.01, 0.5);
        rt.class = PriorityClass::Realtime;
        let mut q = queue(vec![old.clone(), rt.clone()]);
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 2);
        // The background job waited more than two aging steps: it goes first.
        old.ready_at = -2.5 * ctx.aging_s;
        let mut q = queue(vec![old, rt]);
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 1);
    }
}
