// DEPTHWISE_CONV_2D, tiled: a workgroup computes RT = WORKGROUP_SIZE / CT output rows
// x 4 output columns x CT channels. It stages the input patch under the tile, for its
// channels, in workgroup memory (read once, coalesced along channels), then each
// invocation computes 4 pixels of one row for one channel. Workgroups: x over
// (batch, tile row, tile column), y over channel groups.
//
// p: [n, ih, iw, ic, oh, ow, oc, kh, kw, stride_h, stride_w, dilation_h, dilation_w,
//     pad_top, pad_left, multiplier, tiles_x, tiles_y, patch_h, patch_w]
// with patch_h = (RT - 1) * stride_h + (kh - 1) * dilation_h + 1 and
// patch_w = 3 * stride_w + (kw - 1) * dilation_w + 1; patch_h * patch_w * CT <= 2048.

override CT: u32 = 16u;

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read> w: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<S>;
@group(0) @binding(3) var<storage, read_write> out: array<S>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

// [patch_h][patch_w][CT]
var<workgroup> in_tile: array<f32, 2048>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let ih = i32(p[1]);
    let iw = i32(p[2]);
    let ic = p[3];
    let oh = p[4];
    let ow = p[5];
    let oc = p[6];
    let kh = p[7];
    let kw = p[8];
    let sh = p[9];
    let sw = p[10];
    let dh = p[11];
    let dw = p[12];
    let mult = p[15];
    let tiles_x = p[16];
    let tiles_y = p[17];
    let ph = p[18];
    let pw = p[19];
    let rt = WORKGROUP_SIZE / CT;
    let tx = wid.x % tiles_x;
    let r = wid.x / tiles_x;
    let ty = r % tiles_y;
    let n = r / tiles_y;
    let oy0 = ty * rt;
    let ox0 = tx * 4u;
    let o0 = wid.y * CT;
    let iy0 = i32(oy0 * sh) - i32(p[13]);
    let ix0 = i32(ox0 * sw) - i32(p[14]);
    for (var e = lid; e < ph * pw * CT; e += WORKGROUP_SIZE) {
        let c = e % CT;
        let q = e / CT;
        let px = q % pw;
        let py = q / pw;
        let o = o0 + c;
        let iy = iy0 + i32(py);
        let ix = ix0 + i32(px);
        var v = 0.0;
        if (o < oc && iy >= 0 && iy < ih && ix >= 0 && ix < iw) {
            v = f32(x[((n * u32(ih) + u32(iy)) * u32(iw) + u32(ix)) * ic + o / mult]);
        }
        in_tile[e] = v;
    }
    workgroupBarrier();
    let c = lid % CT;
    let row = lid / CT;
    let o = o0 + c;
    let oy = oy0 + row;
    if (o < oc && oy < oh) {
        var acc = vec4<f32>(f32(bias[o]));
        for (var ky = 0u; ky < kh; ky++) {
            let py = row * sh + ky * dh;
            for (var kx = 0u; kx < kw; kx++) {
                let wv = f32(w[(ky * kw + kx) * oc + o]);
                let px = kx * dw;
                let base = (py * pw + px) * CT + c;
                acc[0] += in_tile[base] * wv;
                acc[1] += in_tile[base + sw * CT] * wv;
                acc[2] += in_tile[base + 2u * sw * CT] * wv;
                acc[3] += in_tile[base + 3u * sw * CT] * wv;
            }
        }
        for (var j = 0u; j < 4u; j++) {
            let ox = ox0 + j;
            if (ox < ow) {
                let idx = ((n * oh + oy) * ow + ox) * oc + o;
                out[idx] = S(epilogue(idx, acc[j]));
            }
        }
    }
}
