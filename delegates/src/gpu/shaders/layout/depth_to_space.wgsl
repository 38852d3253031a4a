// DEPTH_TO_SPACE on NHWC: output (n, y, x, c) reads input
// (n, y / b, x / b, ((y % b) * b + x % b) * oc + c), oc = input channels / b².
//
// p: [count, ih, iw, ic, oh, ow, oc, block]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let ih = p[1];
    let iw = p[2];
    let ic = p[3];
    let oh = p[4];
    let ow = p[5];
    let oc = p[6];
    let b = p[7];
    let c = i % oc;
    var r = i / oc;
    let ox = r % ow;
    r = r / ow;
    let oy = r % oh;
    let n = r / oh;
    let src_c = ((oy % b) * b + ox % b) * oc + c;
    let src = ((n * ih + oy / b) * iw + ox / b) * ic + src_c;
    out[i] = S(epilogue(i, f32(x[src])));
}
