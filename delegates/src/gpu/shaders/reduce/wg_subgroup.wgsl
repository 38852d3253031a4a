// Workgroup-wide reductions with subgroup operations: each subgroup reduces in
// registers, then one value per subgroup meets in workgroup memory. Every invocation
// of the workgroup must call them, in uniform control flow. Subgroups have at least 4
// invocations, so a workgroup has at most WORKGROUP_SIZE / 4 of them.

struct ReduceIds {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
}

var<workgroup> red_buf: array<f32, WORKGROUP_SIZE>;

fn wg_sum(v: f32, ids: ReduceIds) -> f32 {
    let s = subgroupAdd(v);
    if (ids.sg_lane == 0u) {
        red_buf[ids.sg_id] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var k = 0u; k < WORKGROUP_SIZE / 4u; k++) {
        if (k < ids.n_sg) {
            total += red_buf[k];
        }
    }
    workgroupBarrier();
    return total;
}

fn wg_max(v: f32, ids: ReduceIds) -> f32 {
    let s = subgroupMax(v);
    if (ids.sg_lane == 0u) {
        red_buf[ids.sg_id] = s;
    }
    workgroupBarrier();
    var best = -3.4028235e38;
    for (var k = 0u; k < WORKGROUP_SIZE / 4u; k++) {
        if (k < ids.n_sg) {
            best = max(best, red_buf[k]);
        }
    }
    workgroupBarrier();
    return best;
}
