// Unary activations. p: [count, alpha bits (LEAKY_RELU)].

// 0 relu, 1 relu6, 2 relu_n1_to_1, 3 tanh, 4 logistic, 5 hard_swish, 6 leaky_relu.
override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

fn apply(v: f32) -> f32 {
    switch OP {
        case 1u: { return clamp(v, 0.0, 6.0); }
        case 2u: { return clamp(v, -1.0, 1.0); }
        case 3u: { return tanh_f(v); }
        case 4u: { return logistic_f(v); }
        case 5u: { return v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 6u: { return select(v * pf(1u), v, v >= 0.0); }
        default: { return max(v, 0.0); }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    out[i] = apply(x[i]);
}
