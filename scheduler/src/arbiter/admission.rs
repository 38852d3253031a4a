//! Admission control: refuse work that cannot meet its deadline or would overflow a
//! queue, with the reason, instead of letting it delay everyone else and miss anyway.
//! The queue limit is per tenant, so one tenant's flood cannot fill the queue others
//! need.
//!
//! The finish time of a new job is predicted in the order the policy will really
//! serve the queue (its key), on every server of the processor (list scheduling: each
//! job ahead of it takes the server that frees first). Only measured service times
//! count: a job whose own time is still a prior is always admitted, and unmeasured
//! jobs ahead of it count as zero, so nothing is refused on a guess.

use switchyard_interpreter::ProcessorKind;

use super::{Ctx, Job, Policy, Queue, Refusal};

/// Expected finish of `job` if it were queued on `p`: the servers' free times, then the
/// jobs queued on `p` that the policy serves before it. `known_only` counts unmeasured
/// service times as zero (for refusals); otherwise priors count too (for placement).
pub fn predict_finish(
    ctx: &Ctx<'_>,
    queue: &Queue,
    job: &Job,
    p: ProcessorKind,
    policy: Policy,
    known_only: bool,
) -> f64 {
    let service = |j: &Job| match j.option_on(p) {
        Some(o) if known_only => o.known_s(),
        Some(o) => o.service_s,
        None => f64::INFINITY,
    };
    let mut me = job.clone();
    me.processor = p;
    let mine = service(&me);
    if !mine.is_finite() {
        return f64::INFINITY;
    }
    let Some(mut servers) = ctx.servers.get(&p).cloned().filter(|s| !s.is_empty()) else {
        return f64::INFINITY;
    };
    let my_key = policy.key(ctx, &me);
    let mut ahead: Vec<(super::Key, f64)> = queue
        .jobs(p)
        .iter()
        .filter(|j| !(j.request == job.request && j.stage == job.stage))
        .map(|j| (policy.key(ctx, j), service(j)))
        .filter(|(k, _)| *k < my_key)
        .collect();
    ahead.sort_by_key(|a| a.0);
    for (_, s) in ahead {
        occupy(&mut servers, ctx.now, s);
    }
    let regular = earliest(&servers).max(ctx.now) + mine;
    let measured = job.option_on(p).is_some_and(|o| o.measured);
    match ctx.express.get(&p) {
        Some(lane) if measured && mine <= lane.max_s => {
            regular.min(lane.free_at.max(ctx.now) + mine)
        }
        _ => regular,
    }
}

/// The time the first server of a processor frees up.
pub(crate) fn earliest(servers: &[f64]) -> f64 {
    servers.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Gives the server that frees first a job of `seconds`.
pub(crate) fn occupy(servers: &mut [f64], now: f64, seconds: f64) {
    if let Some(slot) = servers.iter_mut().min_by(|a, b| a.total_cmp(b)) {
        *slot = slot.max(now) + seconds;
    }
}

/// Accepts `job` (the first stage of a new request, already in its chosen queue) or
/// says why not.
pub fn admit(
    ctx: &Ctx<'_>,
    queue: &Queue,
    job: &Job,
    policy: Policy,
    limit: usize,
    check_deadline: bool,
) -> Result<(), Refusal> {
    let len = queue
        .jobs(job.processor)
        .iter()
        .filter(|j| j.tenant == job.tenant)
        .count();
    if len >= limit {
        return Err(Refusal::QueueFull {
            processor: job.processor,
            len,
            limit,
        });
    }
    if !check_deadline || !job.has_deadline() || job.options.iter().any(|o| !o.measured) {
        return Ok(());
    }
    let (processor, finish) = job
        .options
        .iter()
        .map(|o| {
            let f = predict_finish(ctx, queue, job, o.processor, policy, true);
            (o.processor, f + job.rest_known_s)
        })
        .fold((job.processor, f64::INFINITY), |best, x| {
            if x.1 < best.1 { x } else { best }
        });
    if finish > job.deadline {
        return Err(Refusal::Deadline {
            processor,
            predicted_s: finish - ctx.now,
            deadline_s: job.deadline - ctx.now,
        });
    }
    Ok(())
}

/// Removes queued jobs that can no longer finish their request by the deadline even if
/// started now on their fastest processor (measured times only).
pub fn expired(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<(Job, Refusal)> {
    let mut out = Vec::new();
    for jobs in queue.per.values_mut() {
        let mut i = 0;
        while i < jobs.len() {
            let j = &jobs[i];
            let late = ctx.now + j.fastest_known() + j.rest_known_s - j.deadline;
            if j.has_deadline() && late > 0.0 {
                let job = jobs.remove(i);
                out.push((job, Refusal::Expired { late_s: late }));
            } else {
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{job, queue};
    use super::super::{PriorityClass, StageOption};
    use super::*;
    use std::collections::HashMap;
    use switchyard_interpreter::ProcessorKind::Cpu;

    #[test]
    fn full_queue_and_hopeless_deadline_are_refused_with_the_figures() {
        let q = queue(vec![job(1, Cpu, 0.010, 1.0), job(3, Cpu, 0.010, 1.0)]);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        let p = Policy::Fifo;
        // Jobs 1 and 3 are tenant t1's: its queue is full, tenant t0's is not.
        let err = admit(&ctx, &q, &job(5, Cpu, 0.01, 1.0), p, 2, true).unwrap_err();
        assert!(
            matches!(
                err,
                Refusal::QueueFull {
                    len: 2,
                    limit: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(admit(&ctx, &q, &job(4, Cpu, 0.01, 1.0), p, 2, true).is_ok());
        // Behind 20 ms of queued work, a 10 ms job cannot make a 25 ms deadline.
        match admit(&ctx, &q, &job(5, Cpu, 0.01, 0.025), p, 8, true) {
            Err(Refusal::Deadline {
                predicted_s,
                deadline_s,
                ..
            }) => {
                assert!((predicted_s - 0.030).abs() < 1e-9, "{predicted_s}");
                assert!((deadline_s - 0.025).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert!(admit(&ctx, &q, &job(5, Cpu, 0.01, 0.035), p, 8, true).is_ok());
        assert!(admit(&ctx, &q, &job(5, Cpu, 0.01, 0.025), p, 8, false).is_ok());
    }

    #[test]
    fn the_prediction_follows_the_policys_order_not_arrival() {
        // Two older background jobs of 20 ms each are queued; a realtime job with a
        // 15 ms deadline goes before them under the priority policy (and EDF, whose
        // queued jobs are due later), so it is admitted; under FIFO it is refused.
        let mut a = job(1, Cpu, 0.020, 10.0);
        a.class = PriorityClass::Background;
        let mut b = job(2, Cpu, 0.020, 10.0);
        b.class = PriorityClass::Background;
        let q = queue(vec![a, b]);
        let mut rt = job(3, Cpu, 0.005, 0.015);
        rt.class = PriorityClass::Realtime;
        rt.ready_at = 0.003;
        let served = HashMap::new();
        let ctx = Ctx::idle(0.003, &[(Cpu, 1)], &served);
        for p in [Policy::Priority, Policy::Edf, Policy::LeastSlack] {
            assert!(admit(&ctx, &q, &rt, p, 8, true).is_ok(), "{}", p.name());
        }
        assert!(admit(&ctx, &q, &rt, Policy::Fifo, 8, true).is_err());
    }

    #[test]
    fn two_cores_serve_two_queued_jobs_at_once() {
        // One core: 10 ms + 10 ms ahead -> finish at 30 ms. Two cores: at 20 ms.
        let q = queue(vec![job(1, Cpu, 0.010, 1.0), job(2, Cpu, 0.010, 1.0)]);
        let served = HashMap::new();
        let new = job(3, Cpu, 0.010, 1.0);
        let one = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        let two = Ctx::idle(0.0, &[(Cpu, 2)], &served);
        let f1 = predict_finish(&one, &q, &new, Cpu, Policy::Fifo, false);
        let f2 = predict_finish(&two, &q, &new, Cpu, Policy::Fifo, false);
        assert!(
            (f1 - 0.030).abs() < 1e-9 && (f2 - 0.020).abs() < 1e-9,
            "{f1} {f2}"
        );
    }

    #[test]
    fn a_model_without_measurements_is_admitted_whatever_its_prior() {
        let q = queue(vec![job(1, Cpu, 0.010, 1.0)]);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        let mut cold = job(3, Cpu, 0.0, 0.005);
        cold.options = vec![StageOption::prior(Cpu, 0.500)];
        assert!(admit(&ctx, &q, &cold, Policy::LeastSlack, 8, true).is_ok());
        // Unmeasured work ahead counts as nothing either.
        let mut ahead = job(1, Cpu, 0.0, 1.0);
        ahead.options = vec![StageOption::prior(Cpu, 0.500)];
        let q = queue(vec![ahead]);
        assert!(admit(&ctx, &q, &job(3, Cpu, 0.002, 0.005), Policy::Fifo, 8, true).is_ok());
    }

    #[test]
    fn expired_jobs_leave_the_queue() {
        let mut q = queue(vec![job(1, Cpu, 0.010, 0.015), job(2, Cpu, 0.010, 1.0)]);
        let served = HashMap::new();
        let ctx = Ctx::idle(0.010, &[(Cpu, 1)], &served);
        let gone = expired(&ctx, &mut q);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0.request, 1);
        assert!(matches!(gone[0].1, Refusal::Expired { .. }));
        assert_eq!(q.len(Cpu), 1);
    }
}
