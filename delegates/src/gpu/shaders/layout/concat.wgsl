// One input of CONCATENATION: copies x, seen as [outer, x_row], into rows of length
// out_row of the output, starting at `offset` within each row.
//
// p: [count, x_row, out_row, offset]

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let row = i / p[1];
    let col = i % p[1];
    out[row * p[2] + p[3] + col] = activate(x[i]);
}
