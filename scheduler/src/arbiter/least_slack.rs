//! Least slack first: slack is the time a job can still wait and finish its request by
//! the deadline (deadline - now - its service - the rest of its request). Unlike EDF it
//! sees that a long multi-stage request with a later deadline may be the more urgent.
//! A job without a deadline counts as due [`Ctx::aging_s`] after it became ready, and
//! each class below realtime has one aging step more slack (jobs are not preempted, so
//! a realtime frame should not queue behind interactive work that can still wait).

use super::{Assignment, Ctx, Job, Key, Queue, pick_by};

pub fn slack(ctx: &Ctx<'_>, j: &Job) -> f64 {
    j.effective_deadline(ctx.aging_s) - ctx.now - j.service() - j.rest_s
}

pub fn key(ctx: &Ctx<'_>, j: &Job) -> Key {
    let s = slack(ctx, j);
    Key([s + j.class.rank() * ctx.aging_s, s, 0.0], j.request)
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
    fn long_work_with_a_later_deadline_can_be_more_urgent() {
        // Job 1: deadline 30 ms, 2 ms of work -> slack 28 ms.
        // Job 2: deadline 40 ms, 5 ms here + 30 ms later stages -> slack 5 ms.
        let a = job(1, Cpu, 0.002, 0.030);
        let mut b = job(2, Cpu, 0.005, 0.040);
        b.rest_s = 0.030;
        let mut q = queue(vec![a, b]);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 2);
    }

    #[test]
    fn a_realtime_frame_goes_before_interactive_work_that_can_still_wait() {
        // Interactive: 10 ms of slack; realtime: 18 ms. Realtime first, unless the
        // interactive job has less slack by more than an aging step.
        let mut rt = job(1, Cpu, 0.002, 0.020);
        rt.class = super::super::PriorityClass::Realtime;
        let it = job(2, Cpu, 0.020, 0.030);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        let mut q = queue(vec![rt.clone(), it]);
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 1);
        let mut late = job(3, Cpu, 0.020, 0.030 - ctx.aging_s);
        late.ready_at = -1.0;
        let mut q = queue(vec![rt, late]);
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 3);
    }
}
