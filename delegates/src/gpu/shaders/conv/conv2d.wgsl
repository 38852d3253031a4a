// CONV_2D as a tiled implicit GEMM: out[m, o] = bias[o] + sum_k A[m, k] * W[k, o] with
// m an output pixel (n, oy, ox), o an output channel and k a filter tap (ky, kx, c);
// A is gathered from the NHWC input on the fly (zero in the padding), W is the filter
// repacked at compile to [k][o] so a tile's channels are contiguous (or, for a filter
// known only at run time, read in its own OHWI = [o][k] layout).
//
// A workgroup computes a BM x BN tile (BM = 4 * TM pixels, BN = 4 * TN channels,
// TM * TN = WORKGROUP_SIZE): per step of BK taps it stages the A and W tiles in
// workgroup memory, then each invocation accumulates a 4 x 4 block in registers.
// Workgroups: x over pixel tiles, y over channel tiles.
//
// p: [n, ih, iw, ic, oh, ow, oc, kh, kw, stride_h, stride_w, dilation_h, dilation_w,
//     pad_top, pad_left, m (= n * oh * ow), k (= kh * kw * ic)]

override TN: u32 = 8u;
override TM: u32 = 8u;
// 1 when the filter is 1x1 with stride 1 and no padding: A[m, k] = x[m * ic + k].
override POINTWISE: u32 = 0u;
// 1 when w is [k][o] (repacked), 0 when it is [o][k].
override PACKED: u32 = 1u;

const BK: u32 = 8u;

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read> w: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<S>;
@group(0) @binding(3) var<storage, read_write> out: array<S>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

// [BK][BM] with BM <= 128, and [BK][BN] with BN <= 64.
var<workgroup> tile_a: array<f32, 1024>;
var<workgroup> tile_b: array<f32, 512>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let bm = 4u * TM;
    let bn = 4u * TN;
    let m0 = wid.x * bm;
    let n0 = wid.y * bn;
    let tn = lid % TN;
    let tm = lid / TN;
    let ih = p[1];
    let iw = p[2];
    let ic = p[3];
    let oh = p[4];
    let ow = p[5];
    let oc = p[6];
    let kw = p[8];
    let total_m = p[15];
    let total_k = p[16];
    // The tap this invocation stages (fixed for the whole loop), and the first of the
    // pixels it stages (then every WORKGROUP_SIZE / BK pixels).
    let my_k = lid % BK;
    let my_m = lid / BK;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < total_k; k0 += BK) {
        let k = k0 + my_k;
        let c = k % ic;
        let tap = k / ic;
        let kx = tap % kw;
        let ky = tap / kw;
        let dy = ky * p[11];
        let dx = kx * p[12];
        for (var mm = my_m; mm < bm; mm += WORKGROUP_SIZE / BK) {
            let m = m0 + mm;
            var v = 0.0;
            if (m < total_m && k < total_k) {
                if (POINTWISE == 1u) {
                    v = f32(x[m * ic + k]);
                } else {
                    let ox = m % ow;
                    let r = m / ow;
                    let oy = r % oh;
                    let n = r / oh;
                    let iy = i32(oy * p[9] + dy) - i32(p[13]);
                    let ix = i32(ox * p[10] + dx) - i32(p[14]);
                    if (iy >= 0 && iy < i32(ih) && ix >= 0 && ix < i32(iw)) {
                        v = f32(x[((n * ih + u32(iy)) * iw + u32(ix)) * ic + c]);
                    }
                }
            }
            tile_a[my_k * bm + mm] = v;
        }
        for (var e = lid; e < BK * bn; e += WORKGROUP_SIZE) {
            let nn = e % bn;
            let kk = k0 + e / bn;
            let o = n0 + nn;
            var v = 0.0;
            if (kk < total_k && o < oc) {
                v = f32(w[select(o * total_k + kk, kk * oc + o, PACKED == 1u)]);
            }
            tile_b[e] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let bo = kk * bn + tn * 4u;
            let b = vec4<f32>(tile_b[bo], tile_b[bo + 1u], tile_b[bo + 2u], tile_b[bo + 3u]);
            let ao = kk * bm + tm;
            acc[0] += tile_a[ao] * b;
            acc[1] += tile_a[ao + TM] * b;
            acc[2] += tile_a[ao + 2u * TM] * b;
            acc[3] += tile_a[ao + 3u * TM] * b;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm + i * TM;
        if (m < total_m) {
            for (var j = 0u; j < 4u; j++) {
                let o = n0 + tn * 4u + j;
                if (o < oc) {
                    let idx = m * oc + o;
                    out[idx] = S(epilogue(idx, acc[i][j] + f32(bias[o])));
                }
            }
        }
    }
}
