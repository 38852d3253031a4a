//! Float32 CONV_2D (NHWC, filters `[out][kh][kw][in]`) on the packed GEMM.
//!
//! A 1×1 convolution with stride 1 and no padding is a GEMM on the input as it lies in
//! memory. Any other shape gathers, for each block of `MR` output pixels, an im2col tile
//! of `MR × kh·kw·in` (zeros for padding taps) in a per-thread buffer and runs the same
//! micro-kernel over it: the tile is reused across all output-channel panels, so the
//! gather costs `1 / panels` of the arithmetic and no full im2col matrix is ever built.

use std::cell::RefCell;

use switchyard_interpreter::KernelError;

use super::gemm::{Isa, MR, NR, PackedB, SendPtr, Split, gemm, panel_kernel};
use super::pool::ThreadPool;

/// Geometry of one convolution, fixed at prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dil_h: usize,
    pub dil_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl ConvGeom {
    fn is_pointwise(&self) -> bool {
        self.k_h == 1
            && self.k_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.in_h == self.out_h
            && self.in_w == self.out_w
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.out_h * self.out_w * self.out_c
    }
}

/// A prepared float convolution: packed filters plus geometry.
#[derive(Debug)]
pub struct Conv2dF32 {
    pub geom: ConvGeom,
    packed: PackedB,
    clamp: (f32, f32),
    isa: Isa,
}

thread_local! {
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Conv2dF32 {
    /// `filter` is `[out_c][k_h][k_w][in_c]`, `bias` `[out_c]`.
    pub fn new(
        geom: ConvGeom,
        filter: &[f32],
        bias: Option<&[f32]>,
        clamp: (f32, f32),
        isa: Isa,
    ) -> Result<Self, KernelError> {
        let k = geom.k_h * geom.k_w * geom.in_c;
        let packed = PackedB::from_nk(filter, geom.out_c, k, bias)?;
        Ok(Conv2dF32 {
            geom,
            packed,
            clamp,
            isa,
        })
    }

    pub fn packed_bytes(&self) -> usize {
        self.packed.bytes()
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
                "conv expects {} input and {} output values, got {} and {}",
                g.input_len(),
                g.output_len(),
                input.len(),
                output.len()
            )));
        }
        let m = g.batch * g.out_h * g.out_w;
        if g.is_pointwise() {
            return gemm(
                self.isa,
                pool,
                m,
                input,
                g.in_c,
                self.packed.as_ref(),
                output,
                g.out_c,
                self.clamp,
            );
        }
        if m == 0 || g.out_c == 0 {
            return Ok(());
        }
        let k = self.packed.k;
        let panels = self.packed.panels();
        let mr = self.isa.mr();
        let split = Split::new(m, mr, panels, pool.threads());
        let out = SendPtr(output.as_mut_ptr());
        pool.run(split.tasks(), &|t| {
            let (r0, r1, p0, p1) = split.task(t, m, panels);
            TILE.with(|tile| {
                let mut tile = tile.borrow_mut();
                if tile.len() < mr * k {
                    tile.resize(mr * k, 0.0);
                }
                let mut r = r0;
                while r < r1 {
                    let rows = mr.min(r1 - r);
                    for i in 0..rows {
                        self.gather(input, r + i, &mut tile[i * k..(i + 1) * k]);
                    }
                    let mut ap = [std::ptr::null::<f32>(); MR];
                    for (i, p) in ap.iter_mut().enumerate() {
                        *p = tile[i.min(rows - 1) * k..].as_ptr();
                    }
                    for p in p0..p1 {
                        let nr = NR.min(g.out_c - p * NR);
                        let mut cr = [std::ptr::null_mut::<f32>(); MR];
                        for (i, q) in cr.iter_mut().enumerate() {
                            // SAFETY: pixel r + i < m, so the row lies inside output
                            // (length checked above) and p*NR + nr <= out_c.
                            *q = unsafe { out.get().add((r + i.min(rows - 1)) * g.out_c + p * NR) };
                        }
                        // SAFETY: tile rows hold k floats; output pointers as above;
                        // this task alone writes pixels r0..r1 × panels p0..p1.
                        unsafe {
                            panel_kernel(
                                self.isa,
                                rows,
                                &ap,
                                self.packed.as_ref(),
                                p,
                                &cr,
                                nr,
                                self.clamp,
                            )
                        };
                    }
                    r += rows;
                }
            });
        });
        Ok(())
    }

    /// Writes the receptive field of output pixel `pix` as one im2col row.
    fn gather(&self, input: &[f32], pix: usize, row: &mut [f32]) {
        let g = &self.geom;
        let ox = pix % g.out_w;
        let oy = (pix / g.out_w) % g.out_h;
        let b = pix / (g.out_w * g.out_h);
        let c = g.in_c;
        for ky in 0..g.k_h {
            let iy = (oy * g.stride_h + ky * g.dil_h) as isize - g.pad_top as isize;
            for kx in 0..g.k_w {
                let ix = (ox * g.stride_w + kx * g.dil_w) as isize - g.pad_left as isize;
                let dst = &mut row[(ky * g.k_w + kx) * c..(ky * g.k_w + kx + 1) * c];
                if iy < 0 || ix < 0 || iy as usize >= g.in_h || ix as usize >= g.in_w {
                    dst.fill(0.0);
                } else {
                    let at = ((b * g.in_h + iy as usize) * g.in_w + ix as usize) * c;
                    dst.copy_from_slice(&input[at..at + c]);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::optimized::gemm::tests::{assert_close, values};

    /// Direct nested loops over the definition of a convolution.
    pub fn naive_conv(
        g: &ConvGeom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        clamp: (f32, f32),
    ) -> Vec<f32> {
        let mut out = vec![0.0; g.output_len()];
        for b in 0..g.batch {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    for co in 0..g.out_c {
                        let mut s = bias[co] as f64;
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
                                for ci in 0..g.in_c {
                                    let xv = x[((b * g.in_h + iy as usize) * g.in_w + ix as usize)
                                        * g.in_c
                                        + ci];
                                    let wv = w[((co * g.k_h + ky) * g.k_w + kx) * g.in_c + ci];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((b * g.out_h + oy) * g.out_w + ox) * g.out_c + co] =
                            (s as f32).max(clamp.0).min(clamp.1);
                    }
                }
            }
        }
        out
    }

    /// SAME-style geometry from sizes (TFLite's padding arithmetic).
    #[allow(clippy::too_many_arguments)]
    pub fn geom(
        batch: usize,
        in_hw: (usize, usize),
        in_c: usize,
        out_c: usize,
        k: (usize, usize),
        stride: usize,
        dil: usize,
        same: bool,
    ) -> Option<ConvGeom> {
        use switchyard_interpreter::Padding;
        let pad = if same { Padding::Same } else { Padding::Valid };
        let (out_h, pad_top) =
            crate::util::conv_output_size(in_hw.0, k.0, stride, dil, pad).ok()?;
        let (out_w, pad_left) =
            crate::util::conv_output_size(in_hw.1, k.1, stride, dil, pad).ok()?;
        Some(ConvGeom {
            batch,
            in_h: in_hw.0,
            in_w: in_hw.1,
            in_c,
            out_h,
            out_w,
            out_c,
            k_h: k.0,
            k_w: k.1,
            stride_h: stride,
            stride_w: stride,
            dil_h: dil,
            dil_w: dil,
            pad_top,
            pad_left,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn conv_matches_naive(batch in 1usize..3, h in 1usize..12, w in 1usize..12, in_c in 1usize..9,
                              out_c in 1usize..40, kh in 1usize..4, kw in 1usize..4, stride in 1usize..3,
                              dil in 1usize..3, same in any::<bool>(), threads in 1usize..3, seed in 0u64..500) {
            let Some(g) = geom(batch, (h, w), in_c, out_c, (kh, kw), stride, dil, same) else {
                return Ok(());
            };
            let x = values(g.input_len(), seed);
            let f = values(out_c * kh * kw * in_c, seed + 1);
            let b = values(out_c, seed + 2);
            let clamp = (0.0, f32::INFINITY);
            let want = naive_conv(&g, &x, &f, &b, clamp);
            let pool = ThreadPool::new(threads);
            for isa in crate::optimized::gemm::tests::isas() {
                let conv = Conv2dF32::new(g, &f, Some(&b), clamp, isa).unwrap();
                let mut out = vec![f32::NAN; g.output_len()];
                conv.run(&pool, &x, &mut out).unwrap();
                assert_close(&out, &want, 1e-5);
            }
        }
    }

    #[test]
    fn pointwise_takes_the_direct_path() {
        let g = geom(1, (5, 7), 8, 20, (1, 1), 1, 1, true).unwrap();
        assert!(g.is_pointwise());
        let x = values(g.input_len(), 1);
        let f = values(20 * 8, 2);
        let b = values(20, 3);
        let clamp = (f32::NEG_INFINITY, f32::INFINITY);
        let conv = Conv2dF32::new(g, &f, Some(&b), clamp, Isa::detect()).unwrap();
        let mut out = vec![0.0; g.output_len()];
        conv.run(&ThreadPool::new(2), &x, &mut out).unwrap();
        assert_close(&out, &naive_conv(&g, &x, &f, &b, clamp), 1e-5);
        assert!(conv.run(&ThreadPool::new(1), &x[1..], &mut out).is_err());
    }
}
