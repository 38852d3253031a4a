// DEPTHWISE_CONV_2D, one invocation per output element: for filters whose input patch
// would not fit the tiled shader's workgroup memory (large kernels or dilations).
//
// p: [count, n, ih, iw, ic, oh, ow, oc, kh, kw, stride_h, stride_w, dilation_h,
//     dilation_w, pad_top, pad_left, multiplier]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read> w: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<S>;
@group(0) @binding(3) var<storage, read_write> out: array<S>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= p[0]) {
        return;
    }
    let ih = i32(p[2]);
    let iw = i32(p[3]);
    let ic = p[4];
    let oh = p[5];
    let ow = p[6];
    let oc = p[7];
    let kh = p[8];
    let kw = p[9];
    let o = i % oc;
    var r = i / oc;
    let ox = r % ow;
    r = r / ow;
    let oy = r % oh;
    let n = r / oh;
    let c = o / p[16];
    let iy0 = i32(oy * p[10]) - i32(p[14]);
    let ix0 = i32(ox * p[11]) - i32(p[15]);
    var acc = f32(bias[o]);
    for (var ky = 0u; ky < kh; ky++) {
        let iy = iy0 + i32(ky * p[12]);
        if (iy < 0 || iy >= ih) {
            continue;
        }
        for (var kx = 0u; kx < kw; kx++) {
            let ix = ix0 + i32(kx * p[13]);
            if (ix < 0 || ix >= iw) {
                continue;
            }
            let xi = ((n * u32(ih) + u32(iy)) * u32(iw) + u32(ix)) * ic + c;
            acc += f32(x[xi]) * f32(w[(ky * kw + kx) * oc + o]);
        }
    }
    out[i] = S(epilogue(i, acc));
}
