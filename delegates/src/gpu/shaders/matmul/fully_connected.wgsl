// FULLY_CONNECTED: out[b, o] = bias[o] + sum_k x[b, k] * w[o, k].
//
// p: [count, k, o]

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let k = p[1];
    let o = i % p[2];
    let row = i / p[2];
    let xb = row * k;
    let wb = o * k;
    var acc = bias[o];
    for (var j = 0u; j < k; j++) {
        acc += x[xb + j] * w[wb + j];
    }
    out[i] = activate(acc);
}
