// Shared by every shader (prepended by the pipeline cache).
//
// Conventions:
// - Bindings in group 0: the op's inputs first (read-only storage), then its output
//   (read_write storage), then `p`, the op's parameters as 32-bit words (read-only
//   storage so shaders can index it like an array). Floats in `p` are bit patterns.
// - One invocation per output element unless a shader says otherwise. Dispatches are
//   2-D when one dimension would exceed the per-dimension workgroup limit; `flat_id`
//   turns the 2-D id back into a linear index.

const WORKGROUP_SIZE: u32 = 64u;

// Activation fused into the op's output, numbered as TFLite's ActivationFunctionType:
// 0 none, 1 relu, 2 relu_n1_to_1, 3 relu6 (the clamps; TANH is never fused).
override ACTIVATION: u32 = 0u;

fn flat_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_SIZE;
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p[i]);
}

// tanh without the driver's builtin, whose precision WGSL leaves to the implementation:
// an odd polynomial near zero (where (e - 1) / (e + 1) cancels) and exp elsewhere, with
// the tail clamped so exp cannot overflow.
fn tanh_f(x: f32) -> f32 {
    let ax = abs(x);
    if (ax < 0.3) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    }
    let e = exp(2.0 * min(ax, 15.0));
    return sign(x) * (e - 1.0) / (e + 1.0);
}

fn logistic_f(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn activate(x: f32) -> f32 {
    switch ACTIVATION {
        case 1u: { return max(x, 0.0); }
        case 2u: { return clamp(x, -1.0, 1.0); }
        case 3u: { return clamp(x, 0.0, 6.0); }
        default: { return x; }
    }
}
