// SOFTMAX over the last axis with beta: one workgroup per row; the row maximum is
// subtracted first so exp() stays in range. Workgroups are numbered over x then y.
//
// p: [rows, depth, beta bits]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(ids: ReduceIds, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let valid = g < p[0];
    let row = select(0u, g, valid);
    let depth = p[1];
    let beta = pf(2u);
    let base = row * depth;
    var m = -3.4028235e38;
    for (var k = ids.lid; k < depth; k += WORKGROUP_SIZE) {
        m = max(m, f32(x[base + k]));
    }
    let top = wg_max(m, ids);
    var s = 0.0;
    for (var k = ids.lid; k < depth; k += WORKGROUP_SIZE) {
        s += exp((f32(x[base + k]) - top) * beta);
    }
    let total = wg_sum(s, ids);
    if (valid) {
        for (var k = ids.lid; k < depth; k += WORKGROUP_SIZE) {
            let i = base + k;
            out[i] = S(epilogue(i, exp((f32(x[i]) - top) * beta) / total));
        }
    }
}
