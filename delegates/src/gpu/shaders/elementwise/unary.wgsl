// Unary activations (unary_op's codes). p: [count, alpha bits (LEAKY_RELU)].

override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    out[i] = S(epilogue(i, unary_op(OP, f32(x[i]), pf(1u))));
}
