// Binary elementwise ops with NumPy broadcasting over up to MAX_RANK dimensions.
//
// p: [count, broadcast, out_shape[MAX_RANK], a_strides[MAX_RANK], b_strides[MAX_RANK]],
// shapes right-aligned (leading 1s); a stride is 0 along a broadcast dimension. When
// `broadcast` is 0 both inputs have the output's shape and are read at the output index.

// binary_op's code.
override OP: u32 = 0u;

const MAX_RANK: u32 = 6u;

@group(0) @binding(0) var<storage, read> a: array<S>;
@group(0) @binding(1) var<storage, read> b: array<S>;
@group(0) @binding(2) var<storage, read_write> out: array<S>;
@group(0) @binding(3) var<storage, read> p: array<u32>;

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
    out[i] = S(epilogue(i, binary_op(OP, f32(a[ia]), f32(b[ib]))));
}
