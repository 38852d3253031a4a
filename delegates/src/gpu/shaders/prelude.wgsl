// Shared by every shader (after the precision header, which declares `S`, the type
// every buffer holds: f32, or f16 in the fp16 variant; arithmetic is f32 throughout).
//
// Conventions:
// - Bindings in group 0: the op's inputs first (read-only storage), then its output
//   (read_write storage), then `p`, the op's parameters as 32-bit words (read-only
//   storage so shaders can index it like an array; floats in `p` are bit patterns),
//   then the operands of the epilogue fusion gave the dispatch.
// - Every output element is written once, as `S(epilogue(i, v))` with `i` its flat
//   (NHWC, dense) index; the epilogue is generated per dispatch.
// - Elementwise shaders run one invocation per output element, in workgroups of
//   WORKGROUP_SIZE, 2-D when one dimension would exceed the per-dimension limit
//   (`flat_id` turns the 2-D id back into a linear index). Tiled shaders say how they
//   map workgroups to tiles.

const WORKGROUP_SIZE: u32 = 64u;

// Channels (last dimension) of the output, for per-channel epilogue operands.
override EPI_C: u32 = 1u;

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

// A fused activation, numbered as TFLite's ActivationFunctionType: 1 relu,
// 2 relu_n1_to_1, 3 relu6 (only the clamps are fused; TANH never is).
fn clamp_act(code: u32, x: f32) -> f32 {
    switch code {
        case 1u: { return max(x, 0.0); }
        case 2u: { return clamp(x, -1.0, 1.0); }
        case 3u: { return clamp(x, 0.0, 6.0); }
        default: { return x; }
    }
}

// 0 relu, 1 relu6, 2 relu_n1_to_1, 3 tanh, 4 logistic, 5 hard_swish, 6 leaky_relu
// (alpha is its slope).
fn unary_op(op: u32, v: f32, alpha: f32) -> f32 {
    switch op {
        case 1u: { return clamp(v, 0.0, 6.0); }
        case 2u: { return clamp(v, -1.0, 1.0); }
        case 3u: { return tanh_f(v); }
        case 4u: { return logistic_f(v); }
        case 5u: { return v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 6u: { return select(v * alpha, v, v >= 0.0); }
        default: { return max(v, 0.0); }
    }
}

// 0 add, 1 sub, 2 mul, 3 div, 4 maximum, 5 minimum, 6 squared difference,
// 7 prelu (y is the slope).
fn binary_op(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        case 3u: { return x / y; }
        case 4u: { return max(x, y); }
        case 5u: { return min(x, y); }
        case 6u: { let d = x - y; return d * d; }
        case 7u: { return select(x * y, x, x >= 0.0); }
        default: { return x + y; }
    }
}
