//! Float32 DEPTHWISE_CONV_2D (NHWC, filter `[1][kh][kw][c]`, depth multiplier 1),
//! vectorised over channels.
//!
//! NHWC puts one pixel's channels side by side, and the filter's channels line up with
//! them, so each output pixel is a sum over its in-bounds taps of two contiguous
//! channel vectors. Per pixel we list the valid taps once (padding handled there, not
//! per channel), then run the channel loop with the accumulators in registers, the
//! bias as their start value and the activation clamp before the single store.

use switchyard_interpreter::KernelError;

use super::conv::ConvGeom;
use super::gemm::{Isa, SendPtr};
use super::pool::ThreadPool;

/// A prepared depthwise convolution (`geom.in_c == geom.out_c`).
#[derive(Debug)]
pub struct DepthwiseF32 {
    pub geom: ConvGeom,
    /// `[kh * kw][c]`, as TFLite stores it.
    filter: Vec<f32>,
    bias: Vec<f32>,
    clamp: (f32, f32),
    isa: Isa,
}

/// The most taps a pixel can have on the stack; larger filters use a heap list.
const MAX_STACK_TAPS: usize = 64;

impl DepthwiseF32 {
    pub fn new(
        geom: ConvGeom,
        filter: &[f32],
        bias: Option<&[f32]>,
        clamp: (f32, f32),
        isa: Isa,
    ) -> Result<Self, KernelError> {
        let c = geom.out_c;
        if geom.in_c != c {
            return Err(KernelError::unsupported(format!(
                "optimized depthwise needs depth multiplier 1 (in {} out {c})",
                geom.in_c
            )));
        }
        if filter.len() != geom.k_h * geom.k_w * c || bias.is_some_and(|b| b.len() != c) {
            return Err(KernelError::shape("depthwise filter or bias size mismatch"));
        }
        // The channel loop is bound by loads, not arithmetic: 256-bit vectors suffice.
        #[cfg(target_arch = "x86_64")]
        let isa = match isa {
            Isa::Avx512
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma") =>
            {
                Isa::Avx2Fma
            }
            Isa::Avx512 => Isa::Portable,
            other => other,
        };
        Ok(DepthwiseF32 {
            geom,
            filter: filter.to_vec(),
            bias: bias.map_or_else(|| vec![0.0; c], <[f32]>::to_vec),
            clamp,
            isa,
        })
    }

    /// Bytes of the filter and bias copies it holds.
    pub fn weight_bytes(&self) -> usize {
        (self.filter.len() + self.bias.len()) * 4
    }

    pub fn run(
        &self,
        pool: &ThreadPool,
        input: &[f32],
        output: &mut [f32],
    ) -> Result<(), KernelError> {
        let g = &self.geom;
        if input.len() != g.input_len() || output.len() != g.output_len() {
            return Err(KernelError::shape(format!(
                "depthwise expects {} input and {} output values, got {} and {}",
                g.input_len(),
                g.output_len(),
                input.len(),
                output.len()
            )));
        }
        let rows = g.batch * g.out_h;
        if rows == 0 || g.out_w == 0 || g.out_c == 0 {
            return Ok(());
        }
        let threads = pool.threads();
        let tasks = if threads <= 1 {
            1
        } else {
            rows.min(threads * 4)
        };
        let per = rows.div_ceil(tasks);
        let out = SendPtr(output.as_mut_ptr());
        let row_len = g.out_w * g.out_c;
        pool.run(rows.div_ceil(per), &|t| {
            for row in t * per..((t + 1) * per).min(rows) {
                // SAFETY: row < batch * out_h, so this output row lies inside `output`
                // (length checked above); each row belongs to exactly one task.
                let orow = unsafe {
                    std::slice::from_raw_parts_mut(out.get().add(row * row_len), row_len)
                };
                self.row(input, row, orow);
            }
        });
        Ok(())
    }

    fn row(&self, input: &[f32], row: usize, orow: &mut [f32]) {
        let g = &self.geom;
        let c = g.out_c;
        let (b, oy) = (row / g.out_h, row % g.out_h);
        let taps_len = g.k_h * g.k_w;
        let mut stack = [(0usize, 0usize); MAX_STACK_TAPS];
        let mut heap = Vec::new();
        let taps: &mut [(usize, usize)] = if taps_len <= MAX_STACK_TAPS {
            &mut stack[..]
        } else {
            heap.resize(taps_len, (0, 0));
            &mut heap[..]
        };
        for ox in 0..g.out_w {
            let mut n = 0;
            for ky in 0..g.k_h {
                let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                if iy < 0 || iy as usize >= g.in_h {
                    continue;
                }
                for kx in 0..g.k_w {
                    let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                    if ix < 0 || ix as usize >= g.in_w {
                        continue;
                    }
                    taps[n] = (
                        ((b * g.in_h + iy as usize) * g.in_w + ix as usize) * c,
                        (ky * g.k_w + kx) * c,
                    );
                    n += 1;
                }
            }
            let dst = &mut orow[ox * c..(ox + 1) * c];
            match self.isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the AVX2 path is only chosen when the CPU has avx2 and fma;
                // every tap offset + c is within input/filter (in-bounds pixel, tap index
                // < kh*kw), and dst has c floats.
                Isa::Avx2Fma => unsafe { self.pixel_avx2(input, &taps[..n], dst) },
                _ => self.pixel_portable(input, &taps[..n], dst),
            }
        }
    }

    fn pixel_portable(&self, input: &[f32], taps: &[(usize, usize)], dst: &mut [f32]) {
        let c = dst.len();
        dst.copy_from_slice(&self.bias);
        for &(xi, wi) in taps {
            let (x, w) = (&input[xi..xi + c], &self.filter[wi..wi + c]);
            for ((d, &xv), &wv) in dst.iter_mut().zip(x).zip(w) {
                *d += xv * wv;
            }
        }
        let (lo, hi) = self.clamp;
        dst.iter_mut().for_each(|d| *d = d.max(lo).min(hi));
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; for each tap, `input[xi..xi + c]` and
    /// `filter[wi..wi + c]` must be in bounds with `c = dst.len()`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pixel_avx2(&self, input: &[f32], taps: &[(usize, usize)], dst: &mut [f32]) {
        use std::arch::x86_64::*;
        let c = dst.len();
        let (xp, wp, bp, dp) = (
            input.as_ptr(),
            self.filter.as_ptr(),
            self.bias.as_ptr(),
            dst.as_mut_ptr(),
        );
        let vlo = _mm256_set1_ps(self.clamp.0);
        let vhi = _mm256_set1_ps(self.clamp.1);
        let mut ch = 0;
        // SAFETY: every access is at channel index < c from a base the caller vouches
        // for (tap offsets) or from bias/dst, which hold c floats.
        unsafe {
            while ch + 32 <= c {
                let mut a0 = _mm256_loadu_ps(bp.add(ch));
                let mut a1 = _mm256_loadu_ps(bp.add(ch + 8));
                let mut a2 = _mm256_loadu_ps(bp.add(ch + 16));
                let mut a3 = _mm256_loadu_ps(bp.add(ch + 24));
                for &(xi, wi) in taps {
                    let x = xp.add(xi + ch);
                    let w = wp.add(wi + ch);
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(w), a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(8)), _mm256_loadu_ps(w.add(8)), a1);
                    a2 =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.add(16)), _mm256_loadu_ps(w.add(16)), a2);
                    a3 =
                        _mm256_fmadd_ps(_mm256_loadu_ps(x.add(24)), _mm256_loadu_ps(w.add(24)), a3);
                }
                _mm256_storeu_ps(dp.add(ch), _mm256_min_ps(_mm256_max_ps(a0, vlo), vhi));
                _mm256_storeu_ps(dp.add(ch + 8), _mm256_min_ps(_mm256_max_ps(a1, vlo), vhi));
                _mm256_storeu_ps(dp.add(ch + 16), _mm256_min_ps(_mm256_max_ps(a2, vlo), vhi));
                _mm256_storeu_ps(dp.add(ch + 24), _mm256_min_ps(_mm256_max_ps(a3, vlo), vhi));
                ch += 32;
            }
            while ch + 8 <= c {
                let mut a0 = _mm256_loadu_ps(bp.add(ch));
                for &(xi, wi) in taps {
                    a0 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(xp.add(xi + ch)),
                        _mm256_loadu_ps(wp.add(wi + ch)),
                        a0,
                    );
                }
                _mm256_storeu_ps(dp.add(ch), _mm256_min_ps(_mm256_max_ps(a0, vlo), vhi));
                ch += 8;
            }
            while ch < c {
                let mut s = *bp.add(ch);
                for &(xi, wi) in taps {
                    s = (*xp.add(xi + ch)).mul_add(*wp.add(wi + ch), s);
                }
                *dp.add(ch) = s.max(self.clamp.0).min(self.clamp.1);
                ch += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::optimized::conv::tests::geom;
    use crate::optimized::gemm::tests::{assert_close, values};

    fn naive_depthwise(
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        clamp: (f32, f32),
    ) -> Vec<f32> {
        let c = g.out_c;
        let mut out = vec![0.0; g.output_len()];
        for b in 0..g.batch {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    for ch in 0..c {
                        let mut s = bias[ch] as f64;
                        for ky in 0..g.k_h {
                            for kx in 0..g.k_w {
                                let iy =
                                    (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
                                let ix =
                                    (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy as usize >= g.in_h
                                    || ix as usize >= g.in_w
                                {
                                    continue;
                                }
                                s += x[((b * g.in_h + iy as usize) * g.in_w + ix as usize) * c + ch]
                                    as f64
                                    * w[(ky * g.k_w + kx) * c + ch] as f64;
                            }
                        }
                        out[((b * g.out_h + oy) * g.out_w + ox) * c + ch] =
                            (s as f32).max(clamp.0).min(clamp.1);
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn depthwise_matches_naive(batch in 1usize..3, h in 1usize..12, w in 1usize..12, c in 1usize..80,
                                   k in 1usize..6, stride in 1usize..3, dil in 1usize..3,
                                   same in any::<bool>(), threads in 1usize..3, seed in 0u64..500) {
            let Some(g) = geom(batch, (h, w), c, c, (k, k), stride, dil, same) else {
                return Ok(());
            };
            let x = values(g.input_len(), seed);
            let f = values(k * k * c, seed + 1);
            let b = values(c, seed + 2);
            let clamp = (-0.5, 6.0);
            let want = naive_depthwise(&g, &x, &f, &b, clamp);
            let pool = ThreadPool::new(threads);
            for isa in crate::optimized::gemm::tests::isas() {
                let dw = DepthwiseF32::new(g, &f, Some(&b), clamp, isa).unwrap();
                let mut out = vec![f32::NAN; g.output_len()];
                dw.run(&pool, &x, &mut out).unwrap();
                assert_close(&out, &want, 1e-5);
            }
        }
    }

    #[test]
    fn multiplier_other_than_one_is_declined() {
        let mut g = geom(1, (4, 4), 2, 4, (3, 3), 1, 1, true).unwrap();
        g.in_c = 2;
        let clamp = (f32::NEG_INFINITY, f32::INFINITY);
        assert!(DepthwiseF32::new(g, &[0.0; 36], None, clamp, Isa::Portable).is_err());
    }
}
