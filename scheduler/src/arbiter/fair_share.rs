//! Weighted fair share between tenants: the tenant that received the least processor
//! time per unit of weight goes next (earliest effective deadline within it), so one
//! tenant's flood cannot starve the others.

use super::{Assignment, Ctx, Job, Key, Queue, pick_by};

pub fn key(ctx: &Ctx<'_>, j: &Job) -> Key {
    let used = ctx.served.get(&j.tenant).copied().unwrap_or(0.0);
    Key([used, j.effective_deadline(ctx.aging_s), 0.0], j.request)
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
    fn the_least_served_tenant_goes_next() {
        // Requests 1 and 3 are tenant t1, 2 is t0; t1 has used more (weighted).
        let mut q = queue(vec![job(1, Cpu, 0.01, 0.1), job(2, Cpu, 0.01, 0.9)]);
        let served = HashMap::from([("t1".to_string(), 0.5), ("t0".to_string(), 0.1)]);
        let ctx = Ctx::idle(0.0, &[(Cpu, 1)], &served);
        assert_eq!(schedule(&ctx, &mut q)[0].job.request, 2);
    }
}
