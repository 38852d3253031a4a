// TRANSPOSE_CONV (and MediaPipe's Convolution2DTransposeBias) in gather form: output
// pixel (oy, ox) of channel o sums, over the filter taps (ky, kx) with
// oy + pad_top - ky = iy * stride_h (and likewise for x) inside the input,
// x[iy, ix, :] . w[o, ky, kx, :]. A workgroup computes 64 consecutive output pixels of
// one channel (y) and stages that channel's filter slice in workgroup memory when it
// fits. Workgroups: x over pixel groups, y over output channels.
//
// p: [n, ih, iw, ic, oh, ow, oc, kh, kw, stride_h, stride_w, pad_top, pad_left, pixels]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read> w: array<S>;
@group(0) @binding(2) var<storage, read> bias: array<S>;
@group(0) @binding(3) var<storage, read_write> out: array<S>;
@group(0) @binding(4) var<storage, read> p: array<u32>;

const STAGE_MAX: u32 = 2048u;

var<workgroup> wtile: array<f32, STAGE_MAX>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let ih = p[1];
    let iw = p[2];
    let ic = p[3];
    let oh = p[4];
    let ow = p[5];
    let oc = p[6];
    let kh = p[7];
    let kw = p[8];
    let sh = p[9];
    let sw = p[10];
    let o = wid.y;
    let taps = kh * kw * ic;
    let staged = taps <= STAGE_MAX;
    if (staged) {
        for (var e = lid; e < taps; e += WORKGROUP_SIZE) {
            wtile[e] = f32(w[o * taps + e]);
        }
    }
    workgroupBarrier();
    let pix = wid.x * WORKGROUP_SIZE + lid;
    if (pix < p[13]) {
        let ox = pix % ow;
        let r = pix / ow;
        let oy = r % oh;
        let n = r / oh;
        var acc = f32(bias[o]);
        for (var ky = 0u; ky < kh; ky++) {
            let ty = i32(oy + p[11]) - i32(ky);
            if (ty < 0 || ty % i32(sh) != 0) {
                continue;
            }
            let iy = u32(ty) / sh;
            if (iy >= ih) {
                continue;
            }
            for (var kx = 0u; kx < kw; kx++) {
                let tx = i32(ox + p[12]) - i32(kx);
                if (tx < 0 || tx % i32(sw) != 0) {
                    continue;
                }
                let ix = u32(tx) / sw;
                if (ix >= iw) {
                    continue;
                }
                let xb = ((n * ih + iy) * iw + ix) * ic;
                let wb = (ky * kw + kx) * ic;
                if (staged) {
                    for (var c = 0u; c < ic; c++) {
                        acc += f32(x[xb + c]) * wtile[wb + c];
                    }
                } else {
                    for (var c = 0u; c < ic; c++) {
                        acc += f32(x[xb + c]) * f32(w[o * taps + wb + c]);
                    }
                }
            }
        }
        let idx = pix * oc + o;
        out[idx] = S(epilogue(idx, acc));
    }
}
