// One input of CONCATENATION: copies x, seen as [outer, x_row], into rows of length
// out_row of the output, starting at `offset` within each row. Every output element is
// written by exactly one input's dispatch, so each applies the node's epilogue.
//
// p: [count, x_row, out_row, offset]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let row = i / p[1];
    let col = i % p[1];
    let o = row * p[2] + p[3] + col;
    out[o] = S(epilogue(o, f32(x[i])));
}
