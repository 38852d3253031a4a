// MEAN and SUM over any set of axes of a tensor of up to MAX_RANK dimensions, one
// invocation per output element (the general case; reductions over one contiguous
// block of axes use reduce_rows).
//
// p: [count, reduced_count, shape[MAX_RANK], strides[MAX_RANK], reduced[MAX_RANK]],
// right-aligned with leading 1s; reduced[d] is 1 for a reduced axis. Output element i
// enumerates the kept axes in order; the reduced ones are walked for each.

// 0 mean, 1 sum.
override OP: u32 = 0u;

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
    var base = 0u;
    for (var d = 0u; d < MAX_RANK; d++) {
        let k = MAX_RANK - 1u - d;
        if (p[2u + 2u * MAX_RANK + k] == 0u) {
            let dim = p[2u + k];
            base += (rem % dim) * p[2u + MAX_RANK + k];
            rem = rem / dim;
        }
    }
    let total = p[1];
    var sum = 0.0;
    for (var j = 0u; j < total; j++) {
        var r = j;
        var off = base;
        for (var d = 0u; d < MAX_RANK; d++) {
            let k = MAX_RANK - 1u - d;
            if (p[2u + 2u * MAX_RANK + k] != 0u) {
                let dim = p[2u + k];
                off += (r % dim) * p[2u + MAX_RANK + k];
                r = r / dim;
            }
        }
        sum += f32(x[off]);
    }
    var v = sum;
    if (OP == 0u) {
        v = sum / f32(max(total, 1u));
    }
    out[i] = S(epilogue(i, v));
}
