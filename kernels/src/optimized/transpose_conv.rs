//! Float32 transposed convolution on the packed GEMM: one input row of pixels at a
//! time, `cols = X_row · W` gives every pixel's contribution to each filter tap
//! (`[in_w][KH·KW·OC]`), which is then added into the output at the tap's position.
//! The filter is repacked at prepare with taps outermost (`n = (ky·KW + kx)·OC + oc`),
//! so each tap's contribution is a contiguous run of `OC` floats.

use std::cell::RefCell;

use switchyard_interpreter::KernelError;

use super::gemm::{Isa, PackedB, gemm};
use super::pool::ThreadPool;

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Geometry of a transposed convolution (NHWC), as the op's prepare derived it.
#[derive(Clone, Debug)]
pub struct TransposeGeom {
    pub batches: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

/// A prepared float transposed convolution.
pub struct TransposeConvF32 {
    g: TransposeGeom,
    packed: PackedB,
    clamp: (f32, f32),
    isa: Isa,
}

impl TransposeConvF32 {
    /// `weights` is `[OC][KH][KW][IC]`.
    pub fn new(
        g: TransposeGeom,
        weights: &[f32],
        clamp: (f32, f32),
        isa: Isa,
    ) -> Result<Self, KernelError> {
        let taps = g.k_h * g.k_w;
        let (ic, oc) = (g.in_c, g.out_c);
        if weights.len() != oc * taps * ic {
            return Err(KernelError::shape(format!(
                "transpose conv weights: {} floats for {oc}x{}x{}x{ic}",
                weights.len(),
                g.k_h,
                g.k_w
            )));
        }
        // [OC][tap][IC] -> [tap][OC][IC]: rows of the [n][k] matrix PackedB takes.
        let mut w = Vec::new();
        w.try_reserve_exact(weights.len())
            .map_err(|_| KernelError::invalid("cannot allocate repacked weights"))?;
        for t in 0..taps {
            for o in 0..oc {
                w.extend_from_slice(&weights[(o * taps + t) * ic..(o * taps + t + 1) * ic]);
            }
        }
        let packed = PackedB::from_nk(&w, taps * oc, ic, None)?;
        Ok(TransposeConvF32 {
            g,
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
        bias: Option<&[f32]>,
        output: &mut [f32],
    ) -> Result<(), KernelError> {
        let g = &self.g;
        let (in_px, out_px) = (g.batches * g.in_h * g.in_w, g.batches * g.out_h * g.out_w);
        if input.len() != in_px * g.in_c
            || output.len() != out_px * g.out_c
            || bias.is_some_and(|b| b.len() != g.out_c)
        {
            return Err(KernelError::shape(format!(
                "transpose conv expects {} input and {} output values, got {} and {}",
                in_px * g.in_c,
                out_px * g.out_c,
                input.len(),
                output.len()
            )));
        }
        if g.out_c == 0 {
            return Ok(());
        }
        match bias {
            Some(b) => output
                .chunks_exact_mut(g.out_c)
                .for_each(|px| px.copy_from_slice(b)),
            None => output.fill(0.0),
        }
        let n = g.k_h * g.k_w * g.out_c;
        if g.in_w > 0 && n > 0 && g.in_c > 0 {
            COLS.with(|cols| -> Result<(), KernelError> {
                let mut cols = cols.borrow_mut();
                let len = g.in_w * n;
                let have = cols.len();
                if have < len {
                    cols.try_reserve_exact(len - have).map_err(|_| {
                        KernelError::invalid("cannot allocate transpose conv scratch")
                    })?;
                    cols.resize(len, 0.0);
                }
                let cols = &mut cols[..len];
                let none = (f32::NEG_INFINITY, f32::INFINITY);
                for b in 0..g.batches {
                    for iy in 0..g.in_h {
                        let row = (b * g.in_h + iy) * g.in_w * g.in_c;
                        let x = &input[row..row + g.in_w * g.in_c];
                        gemm(
                            self.isa,
                            pool,
                            g.in_w,
                            x,
                            g.in_c,
                            self.packed.as_ref(),
                            cols,
                            n,
                            none,
                        )?;
                        self.scatter(cols, b, iy, output);
                    }
                }
                Ok(())
            })?;
        }
        let (lo, hi) = self.clamp;
        if lo > f32::NEG_INFINITY || hi < f32::INFINITY {
            output.iter_mut().for_each(|v| *v = v.max(lo).min(hi));
        }
        Ok(())
    }

    /// Adds input row `iy`'s tap contributions (`cols`, `[in_w][tap][OC]`) into the
    /// output rows they land on, skipping taps cropped by the padding.
    fn scatter(&self, cols: &[f32], b: usize, iy: usize, output: &mut [f32]) {
        let g = &self.g;
        let oc = g.out_c;
        let n = g.k_h * g.k_w * oc;
        for ky in 0..g.k_h {
            let Some(oy) = (iy * g.stride_h + ky)
                .checked_sub(g.pad_top)
                .filter(|&y| y < g.out_h)
            else {
                continue;
            };
            let out_row = (b * g.out_h + oy) * g.out_w;
            for ix in 0..g.in_w {
                for kx in 0..g.k_w {
                    let Some(ox) = (ix * g.stride_w + kx)
                        .checked_sub(g.pad_left)
                        .filter(|&x| x < g.out_w)
                    else {
                        continue;
                    };
                    let src = ix * n + (ky * g.k_w + kx) * oc;
                    let dst = (out_row + ox) * oc;
                    for (o, &c) in output[dst..dst + oc].iter_mut().zip(&cols[src..src + oc]) {
                        *o += c;
                    }
                }
            }
        }
    }
}
