// PAD / PADV2 with a constant value over up to MAX_RANK dimensions.
//
// p: [count, value bits, out_shape[MAX_RANK], in_shape[MAX_RANK], before[MAX_RANK]],
// shapes right-aligned with leading 1s.

const MAX_RANK: u32 = 6u;

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    var rem = i;
    var src = 0u;
    var stride = 1u;
    var inside = true;
    for (var d = 0u; d < MAX_RANK; d++) {
        let k = MAX_RANK - 1u - d;
        let c = rem % p[2u + k];
        rem = rem / p[2u + k];
        let before = p[2u + 2u * MAX_RANK + k];
        let dim = p[2u + MAX_RANK + k];
        if (c < before || c - before >= dim) {
            inside = false;
        } else {
            src += (c - before) * stride;
        }
        stride *= dim;
    }
    var v = pf(1u);
    if (inside) {
        v = f32(x[src]);
    }
    out[i] = S(epilogue(i, v));
}
