// Binary elementwise ops with NumPy broadcasting over up to MAX_RANK dimensions.
//
// p: [count, broadcast, out_shape[MAX_RANK], a_strides[MAX_RANK], b_strides[MAX_RANK]],
// shapes right-aligned (leading 1s); a stride is 0 along a broadcast dimension. When
// `broadcast` is 0 both inputs have the output's shape and are read at the output index.

// 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum, 6 squared difference,
// 7 prelu (b is alpha).
override OP: u32 = 0u;

const MAX_RANK: u32 = 6u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

fn apply(x: f32, y: f32) -> f32 {
    switch OP {
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return max(x, y); }
        case 5u: { return min(x, y); }
        case 6u: { let d = x - y; return d * d; }
        case 7u: { return select(x * y, x, x >= 0.0); }
        default: { return x + y; }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    var ia = i;
    var ib = i;
    if (p[1] != 0u) {
        ia = 0u;
        ib = 0u;
        var rem = i;
        for (var d = 0u; d < MAX_RANK; d++) {
            let k = MAX_RANK - 1u - d;
            let dim = p[2u + k];
            let c = rem % dim;
            rem = rem / dim;
            ia += c * p[2u + MAX_RANK + k];
            ib += c * p[2u + 2u * MAX_RANK + k];
        }
    }
    out[i] = activate(apply(a[ia], b[ib]));
}
