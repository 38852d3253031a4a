//! Admission control: refuse work that cannot meet its deadline or would overflow a
//! queue, with the reason, instead of letting it delay everyone else and miss anyway.

use super::{Ctx, Job, Queue};

/// Accepts `job` (the first stage of a new request) or says why not.
pub fn admit(
    ctx: &Ctx<'_>,
    queue: &Queue,
    job: &Job,
    limit: usize,
    check_deadline: bool,
) -> Result<(), String> {
    let len = queue.len(job.processor);
    if len >= limit {
        return Err(format!(
            "queue of {} is full ({len} jobs, limit {limit})",
            job.processor
        ));
    }
    if check_deadline {
        let finish = job
            .options
            .iter()
            .map(|o| ctx.now + ctx.backlog(queue, o.processor) + o.service_s)
            .fold(f64::INFINITY, f64::min)
            + job.rest_s;
        if finish > job.deadline {
            return Err(format!(
                "cannot meet its deadline: earliest finish {:.1} ms after arrival, deadline {:.1} ms",
                (finish - ctx.now) * 1e3,
                (job.deadline - ctx.now) * 1e3
            ));
        }
    }
    Ok(())
}

/// Removes queued jobs that can no longer finish their request by the deadline even if
/// started now on their fastest processor.
pub fn expired(ctx: &Ctx<'_>, queue: &mut Queue) -> Vec<(Job, String)> {
    let mut out = Vec::new();
    for jobs in queue.per.values_mut() {
        let mut i = 0;
        while i < jobs.len() {
            let j = &jobs[i];
            let late = ctx.now + j.fastest() + j.rest_s - j.deadline;
            if late > 0.0 {
                let job = jobs.remove(i);
                out.push((
                    job,
                    format!(
                        "dropped: would finish {:.1} ms after its deadline",
                        late * 1e3
                    ),
                ));
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
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use switchyard_interpreter::ProcessorKind::Cpu;

    #[test]
    fn full_queue_and_hopeless_deadline_are_refused() {
        let q = queue(vec![job(1, Cpu, 0.010, 1.0), job(2, Cpu, 0.010, 1.0)]);
        let (busy, served) = (BTreeMap::new(), HashMap::new());
        let ctx = Ctx {
            now: 0.0,
            free: vec![],
            busy_until: &busy,
            served: &served,
        };
        let err = admit(&ctx, &q, &job(3, Cpu, 0.01, 1.0), 2, true).unwrap_err();
        assert!(err.contains("full"), "{err}");
        // Behind 20 ms of queued work, a 10 ms job cannot make a 25 ms deadline.
        let err = admit(&ctx, &q, &job(3, Cpu, 0.01, 0.025), 8, true).unwrap_err();
        assert!(err.contains("deadline"), "{err}");
        assert!(admit(&ctx, &q, &job(3, Cpu, 0.01, 0.035), 8, true).is_ok());
        assert!(admit(&ctx, &q, &job(3, Cpu, 0.01, 0.025), 8, false).is_ok());
    }

    #[test]
    fn expired_jobs_leave_the_queue() {
        let mut q = queue(vec![job(1, Cpu, 0.010, 0.015), job(2, Cpu, 0.010, 1.0)]);
        let (busy, served) = (BTreeMap::new(), HashMap::new());
        let ctx = Ctx {
            now: 0.010,
            free: vec![],
            busy_until: &busy,
            served: &served,
        };
        let gone = expired(&ctx, &mut q);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0.request, 1);
        assert_eq!(q.len(Cpu), 1);
    }
}
