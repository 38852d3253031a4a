//! gemmlowp's fixed-point math on int16 values, as TFLite's integer LSTM evaluates its
//! gates: a raw `i16` is a number in Q`m`.`15 - m` (`m` = the integer bits), and
//! `logistic` / `tanh` return Q0.15.
//!
//! Every step follows gemmlowp's scalar code, including its 16-bit wrap-arounds (plain
//! `+`, `-` and negation wrap; only the operations named saturating saturate), so the
//! results are LiteRT's bit for bit. The integer-bit count is a run-time argument here
//! where gemmlowp has a template parameter.

use crate::quant::rounding_divide_by_pot as rdbp32;

/// SaturatingRoundingDoublingHighMul on int16: `a·b / 2^15`, rounded, with -1·-1
/// saturated.
#[inline]
pub fn srdhm(a: i16, b: i16) -> i16 {
    if a == b && a == i16::MIN {
        return i16::MAX;
    }
    let ab = i32::from(a) * i32::from(b);
    let nudge = if ab >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((ab + nudge) / (1 << 15)) as i16
}

/// RoundingDivideByPOT on int16: divide by 2^`e`, rounding half away from zero.
#[inline]
pub fn rdbp(x: i16, e: u32) -> i16 {
    let mask = ((1i32 << e) - 1) as i16;
    let remainder = x & mask;
    let threshold = (mask >> 1).wrapping_add(i16::from(x < 0));
    (x >> e).wrapping_add(i16::from(remainder > threshold))
}

/// SaturatingRoundingMultiplyByPOT: a left shift that saturates for `e > 0`, a rounding
/// right shift for `e < 0`.
#[inline]
fn mul_pot(x: i16, e: i32) -> i16 {
    match e.cmp(&0) {
        std::cmp::Ordering::Equal => x,
        std::cmp::Ordering::Less => rdbp(x, (-e) as u32),
        std::cmp::Ordering::Greater => {
            let threshold = (1i32 << (15 - e)) - 1;
            let x32 = i32::from(x);
            if x32 > threshold {
                i16::MAX
            } else if x32 < -threshold {
                i16::MIN
            } else {
                (x32 << e) as i16
            }
        }
    }
}

/// Rescale<dst>(x in Q`src`): keeps the value, changes the integer bits.
#[inline]
fn rescale(x: i16, src: i32, dst: i32) -> i16 {
    mul_pot(x, src - dst)
}

/// A gemmlowp constant given as its 32-bit raw value, rounded to 16 bits.
#[inline]
fn constant(raw32: i32) -> i16 {
    rdbp32(raw32, 16) as i16
}

fn rounding_half_sum(a: i16, b: i16) -> i16 {
    let sum = i32::from(a) + i32::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i16
}

fn saturating_add(a: i16, b: i16) -> i16 {
    a.saturating_add(b)
}

/// exp(x) for x in [-1/4, 0), Q0.15 in and out.
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i16) -> i16 {
    let constant_term = constant(1_895_147_668);
    let one_third = constant(715_827_883);
    let x = a.wrapping_add(1 << 12);
    let x2 = srdhm(x, x);
    let x3 = srdhm(x2, x);
    let x4 = srdhm(x2, x2);
    let x4_over_4 = mul_pot(x4, -2);
    let poly = mul_pot(
        srdhm(x4_over_4.wrapping_add(x3), one_third).wrapping_add(x2),
        -1,
    );
    saturating_add(constant_term, srdhm(constant_term, x.wrapping_add(poly)))
}

/// exp(a) for a ≤ 0 given in Q`integer_bits`; the result is Q0.15.
pub fn exp_on_negative_values(a: i16, integer_bits: i32) -> i16 {
    let frac = 15 - integer_bits;
    let one_quarter: i16 = 1 << (frac - 2);
    let mask = one_quarter.wrapping_sub(1);
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(rescale(
        a_mod_quarter_minus_one_quarter,
        integer_bits,
        0,
    ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    for (exponent, multiplier) in [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ] {
        if integer_bits > exponent {
            let bit = ((1i32 << (frac + exponent)) as i16) & remainder;
            if bit != 0 {
                result = srdhm(result, constant(multiplier));
            }
        }
    }
    if integer_bits > 5 {
        let clamp = constant(-(1 << (36 - integer_bits)));
        if a < clamp {
            result = 0;
        }
    }
    if a == 0 { i16::MAX } else { result }
}

/// The Newton–Raphson iteration shared by 1/(1+x) and (1-x)/(1+x), x in (0, 1); returns
/// the Q2.13 approximation of 1/(1+x).
fn newton_one_over_one_plus_x(a: i16) -> i16 {
    let half_denominator = rounding_half_sum(a, i16::MAX);
    let c48_over_17 = constant(1_515_870_810);
    let c_neg_32_over_17 = constant(-1_010_580_540);
    let one_q2: i16 = 1 << 13;
    let mut x = c48_over_17.wrapping_add(srdhm(half_denominator, c_neg_32_over_17));
    for _ in 0..3 {
        let half_denominator_times_x = srdhm(half_denominator, x);
        let one_minus = one_q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(rescale(srdhm(x, one_minus), 4, 2));
    }
    x
}

/// 1/(1+x) for x in (0, 1), Q0.15.
fn one_over_one_plus_x_for_x_in_0_1(a: i16) -> i16 {
    // ExactMulByPot<-1> makes the Q2.13 value Q1.14 without touching the raw bits.
    rescale(newton_one_over_one_plus_x(a), 1, 0)
}

/// (1-x)/(1+x) for x in (0, 1), Q0.15.
fn one_minus_x_over_one_plus_x_for_x_in_0_1(a: i16) -> i16 {
    rescale(newton_one_over_one_plus_x(a).wrapping_sub(1 << 13), 2, 0)
}

/// gemmlowp::logistic: `a` in Q`integer_bits`, the result in Q0.15.
pub fn logistic(a: i16, integer_bits: i32) -> i16 {
    let abs = if a > 0 { a } else { a.wrapping_neg() };
    let if_positive =
        one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(abs.wrapping_neg(), integer_bits));
    if a == 0 {
        constant(1 << 30)
    } else if a > 0 {
        if_positive
    } else {
        i16::MAX.wrapping_sub(if_positive)
    }
}

/// gemmlowp::tanh: `a` in Q`integer_bits`, the result in Q0.15.
pub fn tanh(a: i16, integer_bits: i32) -> i16 {
    let n = if a < 0 { a } else { a.wrapping_neg() };
    // ExactMulByPot<1>: the same raw value read with one more integer bit is 2·n.
    let t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1));
    if a == 0 {
        0
    } else if a < 0 {
        t.wrapping_neg()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f(raw: i16, integer_bits: i32) -> f64 {
        f64::from(raw) / f64::from(1 << (15 - integer_bits))
    }

    #[test]
    fn logistic_and_tanh_follow_the_real_functions() {
        // gemmlowp's 16-bit approximations are within a few raw steps of the truth.
        for ib in [0, 3, 4, 6] {
            for raw in (i16::MIN..=i16::MAX).step_by(97) {
                let x = to_f(raw, ib);
                let s = to_f(logistic(raw, ib), 0);
                let t = to_f(tanh(raw, ib), 0);
                assert!(
                    (s - 1.0 / (1.0 + (-x).exp())).abs() < 4e-4,
                    "logistic({x}) = {s}"
                );
                assert!((t - x.tanh()).abs() < 4e-4, "tanh({x}) = {t}");
            }
        }
    }

    #[test]
    fn fixed_points_of_the_functions() {
        assert_eq!(logistic(0, 3), 1 << 14);
        assert_eq!(tanh(0, 3), 0);
        assert_eq!(exp_on_negative_values(0, 3), i16::MAX);
        // Saturated ends. -8 in Q3.12 negates to itself in 16 bits (gemmlowp's wrap), which
        // still lands on exp(-8): logistic(-8) = 0.000335 = 11 raw steps.
        assert_eq!(tanh(i16::MAX, 3), i16::MAX);
        assert!(
            (10..=12).contains(&logistic(i16::MIN, 3)),
            "{}",
            logistic(i16::MIN, 3)
        );
    }

    #[test]
    fn primitive_rounding() {
        assert_eq!(rdbp(5, 1), 3);
        assert_eq!(rdbp(-5, 1), -3);
        assert_eq!(srdhm(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(srdhm(16384, 16384), 8192);
        assert_eq!(mul_pot(4095, 3), 32760);
        assert_eq!(mul_pot(4096, 3), i16::MAX);
        assert_eq!(mul_pot(-4096, 3), i16::MIN);
        assert_eq!(constant(1 << 30), 16384);
    }
}
