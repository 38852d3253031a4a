//! The run-time quantization of hybrid kernels' float inputs, compiled a second time
//! with AVX2 enabled: on baseline x86-64 `f32::round` is a libm call per element, which
//! made quantizing the image cost more than the convolution after it. With SSE4.1 and up
//! LLVM lowers it to `trunc(x + copysign(pred(0.5), x))`, exact for every float, and
//! vectorises the loops; the results are bit-identical to the baseline build's.

/// `(min(lo0, x…), max(hi0, x…))` with `f32::min`/`max` (NaN-ignoring).
pub fn min_max(x: &[f32], lo0: f32, hi0: f32, avx2: bool) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is only set where AVX2 was detected (or a test forced a path
        // detected on this CPU).
        return unsafe { min_max_avx2(x, lo0, hi0) };
    }
    let _ = avx2;
    min_max_plain(x, lo0, hi0)
}

#[inline(always)]
fn min_max_plain(x: &[f32], lo0: f32, hi0: f32) -> (f32, f32) {
    let (mut lo, mut hi) = (lo0, hi0);
    for &v in x {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn min_max_avx2(x: &[f32], lo0: f32, hi0: f32) -> (f32, f32) {
    min_max_plain(x, lo0, hi0)
}

/// `q[i] = clamp(round(zp + x[i]·inv), lo, hi)`, rounding half away from zero (as
/// TfLiteRound): the hybrid kernels' input quantization (`zp` 0 for the symmetric one,
/// where `0 + y` rounds as `y`).
pub fn quantize(x: &[f32], q: &mut [i8], inv: f32, zp: f32, lo: i32, hi: i32, avx2: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: as in `min_max`.
        return unsafe { quantize_avx2(x, q, inv, zp, lo, hi) };
    }
    let _ = avx2;
    quantize_plain(x, q, inv, zp, lo, hi)
}

#[inline(always)]
fn quantize_plain(x: &[f32], q: &mut [i8], inv: f32, zp: f32, lo: i32, hi: i32) {
    for (o, &v) in q.iter_mut().zip(x) {
        *o = ((zp + v * inv).round() as i32).clamp(lo, hi) as i8;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_avx2(x: &[f32], q: &mut [i8], inv: f32, zp: f32, lo: i32, hi: i32) {
    quantize_plain(x, q, inv, zp, lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimized::qgemm::QIsa;

    /// Both paths agree bit for bit on ties, huge values, infinities, NaN and signed
    /// zeros, where a different rounding or cast would show.
    #[test]
    fn both_paths_quantize_alike() {
        let mut x: Vec<f32> = vec![
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            126.5,
            -127.5,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            -0.0,
            8388607.5,
            8388608.0,
        ];
        let mut s = 3u32;
        for _ in 0..200 {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            x.push((s >> 8) as f32 / 65536.0 - 128.0);
        }
        for (inv, zp) in [(1.0f32, 0.0f32), (0.37, -3.0), (2.0, 11.0)] {
            let mut want = vec![0i8; x.len()];
            quantize(&x, &mut want, inv, zp, -128, 127, false);
            let mm = min_max(&x[..x.len() - 200], 0.0, 0.0, false);
            for isa in QIsa::available() {
                let avx2 = isa != QIsa::Portable;
                let mut got = vec![0i8; x.len()];
                quantize(&x, &mut got, inv, zp, -128, 127, avx2);
                assert_eq!(got, want, "{isa:?} inv {inv} zp {zp}");
                let m2 = min_max(&x[..x.len() - 200], 0.0, 0.0, avx2);
                assert_eq!(
                    (m2.0.to_bits(), m2.1.to_bits()),
                    (mm.0.to_bits(), mm.1.to_bits())
                );
            }
        }
    }
}
