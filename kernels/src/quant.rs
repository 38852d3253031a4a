//! Integer quantization arithmetic with TFLite's rounding rules, shared by every
//! quantized kernel so that all of them round alike (bit-exact with LiteRT's reference
//! kernels).

use switchyard_interpreter::{Activation, DType, KernelError, Quant};

/// Splits a positive real multiplier into a Q31 fixed-point value and a power-of-two
/// exponent: `real ≈ multiplier * 2^(shift - 31)`.
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if real == 0.0 || !real.is_finite() {
        return (0, 0);
    }
    let (fraction, mut shift) = frexp(real);
    let mut q = (fraction * (1i64 << 31) as f64).round() as i64;
    if q == 1i64 << 31 {
        q /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    if shift > 30 {
        return (i32::MAX, 30);
    }
    (q as i32, shift)
}

/// `x = fraction * 2^exp` with `fraction` in [0.5, 1) (C's `frexp`).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 {
        return (0.0, 0);
    }
    let mut exp = x.abs().log2().floor() as i32 + 1;
    let mut fraction = x / 2f64.powi(exp);
    // Correct for log2 rounding at exact powers of two.
    if fraction.abs() >= 1.0 {
        fraction /= 2.0;
        exp += 1;
    } else if fraction.abs() < 0.5 {
        fraction *= 2.0;
        exp -= 1;
    }
    (fraction, exp)
}

/// gemmlowp's SaturatingRoundingDoublingHighMul.
#[inline(always)]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's RoundingDivideByPOT: divide by 2^exponent, rounding half away from zero.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's MultiplyByQuantizedMultiplier (double rounding, the reference default).
#[inline(always)]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.max(0);
    let right = (-shift).max(0);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_mul(1 << left), multiplier),
        right,
    )
}

/// TFLite's 64-bit-input MultiplyByQuantizedMultiplier: the multiplier is first reduced
/// to 16 bits (rounded), then one rounding shift. Used where products of several
/// quantized values exceed 32 bits (quantized REDUCE_PROD).
#[inline(always)]
pub fn multiply_by_quantized_multiplier_i64(x: i64, multiplier: i32, shift: i32) -> i32 {
    let reduced = if multiplier < 0x7FFF_0000 {
        (multiplier as i64 + (1 << 15)) >> 16
    } else {
        0x7FFF
    };
    let total_shift = 15 - shift as i64;
    let round = 1i64 << (total_shift - 1);
    (x.saturating_mul(reduced).saturating_add(round) >> total_shift)
        .clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

fn saturating_shl(x: i32, n: u32) -> i32 {
    (i64::from(x) << n).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// 1/sqrt(input) as (multiplier, shift): gemmlowp's five Newton steps in Q3.28, as
/// TFLite's GetInvSqrtQuantizedMultiplierExp with `reverse_shift` (int8 RSQRT, the
/// integer LSTM's layer norm).
pub fn inv_sqrt_quantized_multiplier_exp(mut input: i32, reverse_shift: i32) -> (i32, i32) {
    if input <= 1 {
        return (i32::MAX, 0);
    }
    let mut shift = 11;
    while input >= 1 << 29 {
        input /= 4;
        shift += 1;
    }
    let pairs = (input.leading_zeros() as i32 - 1) / 2 - 1;
    shift -= pairs;
    input <<= 2 * pairs;
    let half_input = rounding_divide_by_pot(input >> 1, 1);
    let half_three = (1 << 28) + (1 << 27);
    let mut x = 1 << 28;
    for _ in 0..5 {
        let x3 = saturating_shl(
            saturating_rounding_doubling_high_mul(saturating_rounding_doubling_high_mul(x, x), x),
            6,
        );
        let diff = (i64::from(saturating_rounding_doubling_high_mul(half_three, x))
            - i64::from(saturating_rounding_doubling_high_mul(half_input, x3)))
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        x = saturating_shl(diff, 3);
    }
    // x · sqrt(2)/2 in Q0.31.
    x = saturating_rounding_doubling_high_mul(x, 1_518_500_250);
    if shift < 0 {
        x = x.wrapping_shl((-shift) as u32);
        shift = 0;
    }
    (x, shift * reverse_shift)
}

/// Representable range of a quantized dtype.
pub fn dtype_range(dtype: DType) -> Result<(i32, i32), KernelError> {
    match dtype {
        DType::I8 => Ok((-128, 127)),
        DType::U8 => Ok((0, 255)),
        DType::I16 => Ok((-32768, 32767)),
        other => Err(KernelError::dtype("int8, uint8 or int16", other)),
    }
}

/// Clamp range of a quantized output with a fused activation.
pub fn activation_range(
    act: Activation,
    scale: f32,
    zero_point: i32,
    dtype: DType,
) -> Result<(i32, i32), KernelError> {
    let (qmin, qmax) = dtype_range(dtype)?;
    let q = |f: f32| zero_point + (f / scale).round() as i32;
    Ok(match act {
        Activation::Relu => (qmin.max(q(0.0)), qmax),
        Activation::Relu6 => (qmin.max(q(0.0)), qmax.min(q(6.0))),
        Activation::ReluN1To1 => (qmin.max(q(-1.0)), qmax.min(q(1.0))),
        _ => (qmin, qmax),
    })
}

/// Per-tensor scale and zero point, requiring quantization parameters to exist.
pub fn per_tensor(quant: Option<&Quant>, what: &str) -> Result<(f32, i32), KernelError> {
    let q = quant
        .ok_or_else(|| KernelError::invalid(format!("{what} has no quantization parameters")))?;
    Ok((q.scale_at(0), q.zero_point_at(0) as i32))
}

/// Float to quantized value with round-half-away-from-zero and saturation.
#[inline(always)]
pub fn quantize_value(x: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    ((x / scale).round() as i32)
        .saturating_add(zero_point)
        .clamp(qmin, qmax)
}

/// Reads element `i` of an int8/uint8/int16 buffer as i32.
#[inline(always)]
pub fn load_q(bytes: &[u8], dtype: DType, i: usize) -> i32 {
    match dtype {
        DType::I8 => bytes[i] as i8 as i32,
        DType::I16 => i16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as i32,
        _ => bytes[i] as i32,
    }
}

/// Writes element `i` of an int8/uint8/int16 buffer from an already clamped i32.
#[inline(always)]
pub fn store_q(bytes: &mut [u8], dtype: DType, i: usize, v: i32) {
    match dtype {
        DType::I8 => bytes[i] = v as i8 as u8,
        DType::I16 => bytes[2 * i..2 * i + 2].copy_from_slice(&(v as i16).to_le_bytes()),
        _ => bytes[i] = v as u8,
    }
}

/// Little-endian int32 values of a constant's bytes (a trailing partial value is
/// ignored; callers have checked the length).
pub fn le_i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_roundtrip() {
        for real in [0.0001, 0.25, 0.5, 0.75, 1.0, 1.5, 3.7, 100.0] {
            let (m, s) = quantize_multiplier(real);
            let back = m as f64 * 2f64.powi(s - 31);
            assert!((back - real).abs() / real < 1e-8, "{real} -> {m} {s}");
        }
    }

    #[test]
    fn rounding_matches_gemmlowp() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(-4, 1), -2);
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        // 100 * 0.5 = 50
        let (m, s) = quantize_multiplier(0.5);
        assert_eq!(multiply_by_quantized_multiplier(100, m, s), 50);
        let (m, s) = quantize_multiplier(0.3);
        assert_eq!(multiply_by_quantized_multiplier(10, m, s), 3);
    }

    #[test]
    fn activation_ranges() {
        assert_eq!(
            activation_range(Activation::Relu, 0.5, -10, DType::I8).unwrap(),
            (-10, 127)
        );
        assert_eq!(
            activation_range(Activation::Relu6, 0.1, 0, DType::U8).unwrap(),
            (0, 60)
        );
    }
}
