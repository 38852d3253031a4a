// RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR on NHWC, with LiteRT's source
// coordinates (computed in f32 as its kernels do). A workgroup computes an 8 x 8 tile of
// output pixels for 4 channels; it stages the input patch under the tile in workgroup
// memory when the patch fits (upsampling, the common case), else reads the input
// directly. Workgroups: x over (batch, tile row, tile column), y over channel groups.
//
// p: [n, ih, iw, c, oh, ow, scale_h bits, scale_w bits, bilinear, align_corners,
//     half_pixel_centers, tiles_x, tiles_y]

@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<storage, read> p: array<u32>;

const TILE: u32 = 8u;
const CG: u32 = 4u;
const PATCH_MAX: u32 = 512u;

// [rows][cols][CG]
var<workgroup> in_tile: array<f32, 2048>;

// The source position of output index v along one axis, and the two source indices
// around it (bilinear), or the nearest one (in .y and .z alike).
fn source(v: u32, scale: f32, size: u32) -> vec3<f32> {
    let half_pixel = p[10] != 0u;
    if (p[8] != 0u) {
        var pos = f32(v) * scale;
        if (half_pixel) {
            pos = (f32(v) + 0.5) * scale - 0.5;
        }
        let lower = min(max(floor(pos), 0.0), f32(size - 1u));
        let upper = clamp(ceil(pos), 0.0, f32(size - 1u));
        return vec3<f32>(pos, lower, upper);
    }
    var offset = 0.0;
    if (half_pixel) {
        offset = 0.5;
    }
    let pos = (f32(v) + offset) * scale;
    var i = floor(pos);
    if (p[9] != 0u) {
        // f32::round: halves away from zero, like TfLiteRound.
        i = select(floor(pos + 0.5), ceil(pos - 0.5), pos < 0.0);
    }
    let idx = clamp(i, 0.0, f32(size - 1u));
    return vec3<f32>(pos, idx, idx);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let ih = p[1];
    let iw = p[2];
    let ch = p[3];
    let oh = p[4];
    let ow = p[5];
    let scale_h = bitcast<f32>(p[6]);
    let scale_w = bitcast<f32>(p[7]);
    let tiles_x = p[11];
    let tiles_y = p[12];
    let tx = wid.x % tiles_x;
    let r = wid.x / tiles_x;
    let ty = r % tiles_y;
    let n = r / tiles_y;
    let oy0 = ty * TILE;
    let ox0 = tx * TILE;
    let c0 = wid.y * CG;
    // Source coordinates are monotonic in the output index: the patch spans the first
    // row's lower source to the last row's upper one.
    let y_lo = u32(source(oy0, scale_h, ih).y);
    let y_hi = u32(source(min(oy0 + TILE - 1u, oh - 1u), scale_h, ih).z);
    let x_lo = u32(source(ox0, scale_w, iw).y);
    let x_hi = u32(source(min(ox0 + TILE - 1u, ow - 1u), scale_w, iw).z);
    let rows = y_hi - y_lo + 1u;
    let cols = x_hi - x_lo + 1u;
    let staged = rows * cols <= PATCH_MAX;
    if (staged) {
        for (var e = lid; e < rows * cols * CG; e += WORKGROUP_SIZE) {
            let c = e % CG;
            let q = e / CG;
            let px = q % cols;
            let py = q / cols;
            var v = 0.0;
            if (c0 + c < ch) {
                v = f32(x[((n * ih + y_lo + py) * iw + x_lo + px) * ch + c0 + c]);
            }
            in_tile[e] = v;
        }
    }
    workgroupBarrier();
    let oy = oy0 + lid / TILE;
    let ox = ox0 + lid % TILE;
    if (oy < oh && ox < ow) {
        let sy = source(oy, scale_h, ih);
        let sx = source(ox, scale_w, iw);
        let y0 = u32(sy.y);
        let y1 = u32(sy.z);
        let x0 = u32(sx.y);
        let x1 = u32(sx.z);
        let dy = sy.x - sy.y;
        let dx = sx.x - sx.y;
        for (var c = 0u; c < CG; c++) {
            let cc = c0 + c;
            if (cc >= ch) {
                break;
            }
            var v00 = 0.0;
            var v01 = 0.0;
            var v10 = 0.0;
            var v11 = 0.0;
            if (staged) {
                v00 = in_tile[((y0 - y_lo) * cols + x0 - x_lo) * CG + c];
                v01 = in_tile[((y0 - y_lo) * cols + x1 - x_lo) * CG + c];
                v10 = in_tile[((y1 - y_lo) * cols + x0 - x_lo) * CG + c];
                v11 = in_tile[((y1 - y_lo) * cols + x1 - x_lo) * CG + c];
            } else {
                v00 = f32(x[((n * ih + y0) * iw + x0) * ch + cc]);
                v01 = f32(x[((n * ih + y0) * iw + x1) * ch + cc]);
                v10 = f32(x[((n * ih + y1) * iw + x0) * ch + cc]);
                v11 = f32(x[((n * ih + y1) * iw + x1) * ch + cc]);
            }
            var v = v00;
            if (p[8] != 0u) {
                v = v00 * ((1.0 - dy) * (1.0 - dx)) + v01 * ((1.0 - dy) * dx)
                    + v10 * (dy * (1.0 - dx)) + v11 * (dy * dx);
            }
            let idx = ((n * oh + oy) * ow + ox) * ch + cc;
            out[idx] = S(epilogue(idx, v));
        }
    }
}
