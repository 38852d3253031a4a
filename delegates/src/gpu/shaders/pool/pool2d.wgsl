// MAX_POOL_2D and AVERAGE_POOL_2D over NHWC. Padding never counts: the average divides
// by the number of input elements under the window, as TFLite does.
//
// p: [count, n, ih, iw, c, oh, ow, kh, kw, stride_h, stride_w, pad_top, pad_left]

// 0 max, 1 average.
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
    let ih = i32(p[2]);
    let iw = i32(p[3]);
    let c = p[4];
    let oh = p[5];
    let ow = p[6];
    let ch = i % c;
    var r = i / c;
    let ox = r % ow;
    r = r / ow;
    let oy = r % oh;
    let n = r / oh;
    let iy0 = i32(oy * p[9]) - i32(p[11]);
    let ix0 = i32(ox * p[10]) - i32(p[12]);
    var best = -3.4028235e38;
    var sum = 0.0;
    var count = 0u;
    for (var ky = 0u; ky < p[7]; ky++) {
        let iy = iy0 + i32(ky);
        if (iy < 0 || iy >= ih) {
            continue;
        }
        for (var kx = 0u; kx < p[8]; kx++) {
            let ix = ix0 + i32(kx);
            if (ix < 0 || ix >= iw) {
                continue;
            }
            let v = f32(x[((n * u32(ih) + u32(iy)) * u32(iw) + u32(ix)) * c + ch]);
            best = max(best, v);
            sum += v;
            count += 1u;
        }
    }
    var v = best;
    if (OP == 1u) {
        v = sum / f32(max(count, 1u));
    }
    out[i] = S(epilogue(i, v));
}
