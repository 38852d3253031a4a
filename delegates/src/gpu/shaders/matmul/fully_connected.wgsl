// FULLY_CONNECTED: out[b, o] = bias[o] + sum_k x[b, k] * w[o, k]. One workgroup per
// output element: its invocations stride over k (reading a weight row contiguously)
// and meet in a workgroup reduction. Workgroups are numbered over x then y.
//
// p: [batches, k, o, outputs]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read> w: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<S>;
@group(0) @binding(3) var<storage, read_write> out: array<S>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(ids: ReduceIds, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let valid = g < p[3];
    let gg = select(0u, g, valid);
    let k = p[1];
    let outs = p[2];
    let o = gg % outs;
    let b = gg / outs;
    let xb = b * k;
    let wb = o * k;
    var acc = 0.0;
    for (var j = ids.lid; j < k; j += WORKGROUP_SIZE) {
        acc += f32(x[xb + j]) * f32(w[wb + j]);
    }
    let total = wg_sum(acc, ids);
    if (valid && ids.lid == 0u) {
        out[g] = S(epilogue(g, total + f32(bias[o])));
    }
}
