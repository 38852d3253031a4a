// Workgroup-wide reductions through workgroup memory (no subgroup operations: the
// adapter lacks them or the options turned them off). Every invocation of the
// workgroup must call them, in uniform control flow.

struct ReduceIds {
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> red_buf: array<f32, WORKGROUP_SIZE>;

fn wg_sum(v: f32, ids: ReduceIds) -> f32 {
    red_buf[ids.lid] = v;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (ids.lid < s) {
            red_buf[ids.lid] = red_buf[ids.lid] + red_buf[ids.lid + s];
        }
        workgroupBarrier();
    }
    let r = red_buf[0];
    workgroupBarrier();
    return r;
}

fn wg_max(v: f32, ids: ReduceIds) -> f32 {
    red_buf[ids.lid] = v;
    workgroupBarrier();
    for (var s = WORKGROUP_SIZE / 2u; s > 0u; s = s / 2u) {
        if (ids.lid < s) {
            red_buf[ids.lid] = max(red_buf[ids.lid], red_buf[ids.lid + s]);
        }
        workgroupBarrier();
    }
    let r = red_buf[0];
    workgroupBarrier();
    return r;
}
