// MEAN / SUM over one contiguous block of axes (spatial MEAN, global AVERAGE_POOL_2D):
// the input seen as [outer, rows, inner], one workgroup per output element (o, j),
// its invocations striding over the rows and meeting in a workgroup reduction.
// Workgroups are numbered over x then y (folded past the per-dimension limit).
//
// p: [outputs, rows, inner, mean]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(ids: ReduceIds, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = wid.x + wid.y * nwg.x;
    let valid = g < p[0];
    let gg = select(0u, g, valid);
    let rows = p[1];
    let inner = p[2];
    let o = gg / inner;
    let j = gg % inner;
    let base = o * rows * inner + j;
    var acc = 0.0;
    for (var r = ids.lid; r < rows; r += WORKGROUP_SIZE) {
        acc += f32(x[base + r * inner]);
    }
    let total = wg_sum(acc, ids);
    if (valid && ids.lid == 0u) {
        var v = total;
        if (p[3] != 0u) {
            v = total / f32(max(rows, 1u));
        }
        out[g] = S(epilogue(g, v));
    }
}
