//! int8 DEPTHWISE_CONV_2D (depth multiplier 1), vectorised over channels.
//!
//! Per output pixel, each valid window tap adds `(x + input_offset) · w` for all channels
//! into an int32 row (the loop LLVM turns into sign-extend, multiply, add on 8, 16 or 4
//! lanes under each path's target features), then the row is requantized per channel
//! exactly as LiteRT's builtin int8 depthwise does: round half up for the channels its
//! SIMD code handles (whole groups of 8) and gemmlowp's rounding for the rest.

use std::cell::RefCell;

use switchyard_interpreter::KernelError;

use super::conv::ConvGeom;
use super::pool::ThreadPool;
use super::qgemm::QIsa;

thread_local! {
    static ROW: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// A prepared int8 depthwise convolution.
#[derive(Debug)]
pub struct QDepthwise {
    pub geom: ConvGeom,
    /// `[k_h·k_w][c]` widened weights.
    w: Vec<i32>,
    bias: Vec<i32>,
    input_offset: i32,
    mult: Vec<i32>,
    left: Vec<i32>,
    right: Vec<i32>,
    /// Channels below this round half up, the rest as gemmlowp.
    half_up_below: usize,
    output_offset: i32,
    act_min: i32,
    act_max: i32,
    pub isa: QIsa,
}

#[derive(Clone, Copy)]
struct OutPtr(*mut i8);
// SAFETY: tasks write disjoint output rows (see `QDepthwise::run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer; a method so closures capture the whole (Sync) wrapper.
    fn get(self) -> *mut i8 {
        self.0
    }
}

/// Doubling high multiply and rounding shift of one lane; `half_up` picks LiteRT's
/// SIMD rounding, else gemmlowp's RoundingDivideByPOT.
#[inline(always)]
fn requant_lane(x: i32, m: i32, left: i32, right: i32, half_up: bool) -> i32 {
    let a = i64::from(x.wrapping_mul(1i32.wrapping_shl(left as u32)));
    let ab = a * i64::from(m);
    let nudge = if ab >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    let v = ab + nudge;
    let high = ((v + ((v >> 63) & ((1i64 << 31) - 1))) >> 31) as i32;
    if half_up {
        ((i64::from(high) + ((1i64 << right) >> 1)) >> right) as i32
    } else {
        let mask = ((1i64 << right) - 1) as i32;
        let remainder = high & mask;
        let threshold = (mask >> 1) + i32::from(high < 0);
        (high >> right) + i32::from(remainder > threshold)
    }
}

impl QDepthwise {
    /// `w` is `[1][k_h][k_w][c]`, `bias` `[c]`; per-channel `multiplier` and signed
    /// `shift`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        geom: ConvGeom,
        w: &[i8],
        bias: Option<&[i32]>,
        input_offset: i32,
        multiplier: &[i32],
        shift: &[i32],
        half_up_below: usize,
        output_offset: i32,
        act_min: i32,
        act_max: i32,
        isa: QIsa,
    ) -> Result<QDepthwise, KernelError> {
        let c = geom.out_c;
        if geom.in_c != c
            || w.len() != geom.k_h * geom.k_w * c
            || bias.is_some_and(|b| b.len() != c)
            || multiplier.len() != c
            || shift.len() != c
        {
            return Err(KernelError::shape("int8 depthwise operands disagree"));
        }
        if shift.iter().any(|&s| !(-31..=30).contains(&s)) {
            return Err(KernelError::unsupported(
                "requantization shift out of range",
            ));
        }
        Ok(QDepthwise {
            geom,
            w: w.iter().map(|&v| i32::from(v)).collect(),
            bias: bias.map_or_else(|| vec![0; c], <[i32]>::to_vec),
            input_offset,
            mult: multiplier.to_vec(),
            left: shift.iter().map(|&s| s.max(0)).collect(),
            right: shift.iter().map(|&s| (-s).max(0)).collect(),
            half_up_below,
            output_offset,
            act_min,
            act_max,
            isa,
        })
    }

    /// Output pixel `pix` into `out` (`c` bytes), using `acc` (`c` int32s) as scratch.
    #[inline(always)]
    fn pixel<const AVX2: bool>(&self, input: &[i8], pix: usize, acc: &mut [i32], out: &mut [i8]) {
        let g = &self.geom;
        let c = g.out_c;
        let ox = pix % g.out_w;
        let oy = (pix / g.out_w) % g.out_h;
        let b = pix / (g.out_w * g.out_h);
        acc.copy_from_slice(&self.bias);
        let off = self.input_offset;
        for ky in 0..g.k_h {
            let Some(iy) = (oy * g.stride_h + ky * g.dil_h).checked_sub(g.pad_top) else {
                continue;
            };
            if iy >= g.in_h {
                continue;
            }
            for kx in 0..g.k_w {
                let Some(ix) = (ox * g.stride_w + kx * g.dil_w).checked_sub(g.pad_left) else {
                    continue;
                };
                if ix >= g.in_w {
                    continue;
                }
                let base = ((b * g.in_h + iy) * g.in_w + ix) * c;
                let x = &input[base..base + c];
                let w = &self.w[(ky * g.k_w + kx) * c..(ky * g.k_w + kx + 1) * c];
                for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                    *a = a.wrapping_add((i32::from(xv) + off).wrapping_mul(wv));
                }
            }
        }
        let n8 = self.half_up_below.min(c);
        let mut j0 = 0;
        #[cfg(target_arch = "x86_64")]
        if AVX2 {
            // SAFETY: only the AVX2 and AVX-512 entry points set `AVX2`, and they run
            // where those features were detected (or a test forced them on this CPU).
            unsafe { self.half_up8_avx2(acc, out, n8 & !7) };
            j0 = n8 & !7;
        }
        for j in j0..n8 {
            let v = requant_lane(acc[j], self.mult[j], self.left[j], self.right[j], true);
            out[j] = v
                .wrapping_add(self.output_offset)
                .clamp(self.act_min, self.act_max) as i8;
        }
        for j in n8..c {
            let v = requant_lane(acc[j], self.mult[j], self.left[j], self.right[j], false);
            out[j] = v
                .wrapping_add(self.output_offset)
                .clamp(self.act_min, self.act_max) as i8;
        }
    }

    /// Channels `0..n` (a multiple of 8) requantized rounding half up, 8 at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    fn half_up8_avx2(&self, acc: &[i32], out: &mut [i8], n: usize) {
        use std::arch::x86_64::*;

        use super::qgemm::{clamp_pack16_avx2, requant8_avx2};
        let ld = |s: &[i32], j: usize| {
            let s = &s[j..j + 8];
            // SAFETY: `s` is eight int32s.
            unsafe { _mm256_loadu_si256(s.as_ptr() as *const __m256i) }
        };
        let mut j = 0;
        while j + 8 <= n {
            let v = requant8_avx2(
                ld(acc, j),
                ld(&self.mult, j),
                ld(&self.left, j),
                ld(&self.right, j),
            );
            let packed = clamp_pack16_avx2(v, v, self.output_offset, self.act_min, self.act_max);
            let bytes = _mm_cvtsi128_si64(packed).to_le_bytes().map(|b| b as i8);
            out[j..j + 8].copy_from_slice(&bytes);
            j += 8;
        }
    }

    #[inline(always)]
    fn rows<const AVX2: bool>(
        &self,
        input: &[i8],
        out: OutPtr,
        p0: usize,
        p1: usize,
        acc: &mut [i32],
    ) {
        let c = self.geom.out_c;
        for pix in p0..p1 {
            // SAFETY: pixel rows p0..p1 belong to this task alone and lie inside the
            // output, whose length `run` checked.
            let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(pix * c), c) };
            self.pixel::<AVX2>(input, pix, acc, o);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn rows_avx2(&self, input: &[i8], out: OutPtr, p0: usize, p1: usize, acc: &mut [i32]) {
        self.rows::<true>(input, out, p0, p1, acc)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
    fn rows_avx512(&self, input: &[i8], out: OutPtr, p0: usize, p1: usize, acc: &mut [i32]) {
        self.rows::<true>(input, out, p0, p1, acc)
    }

    pub fn run(
        &self,
        pool: &ThreadPool,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<(), KernelError> {
        let g = &self.geom;
        if input.len() != g.input_len() || output.len() != g.output_len() {
            return Err(KernelError::shape(format!(
                "int8 depthwise buffers of {} and {} bytes, prepared for {} and {}",
                input.len(),
                output.len(),
                g.input_len(),
                g.output_len()
            )));
        }
        let pixels = g.batch * g.out_h * g.out_w;
        let c = g.out_c;
        let per_task = pixels.div_ceil(pool.threads() * 4).max(16);
        let tasks = pixels.div_ceil(per_task);
        let out = OutPtr(output.as_mut_ptr());
        let task = |t: usize| {
            ROW.with(|row| {
                let mut row = row.borrow_mut();
                if row.len() < c {
                    row.resize(c, 0);
                }
                let acc = &mut row[..c];
                let (p0, p1) = (t * per_task, ((t + 1) * per_task).min(pixels));
                match self.isa {
                    // SAFETY: `isa` was detected on (or forced by a test for) this CPU.
                    #[cfg(target_arch = "x86_64")]
                    QIsa::Avx2 => unsafe { self.rows_avx2(input, out, p0, p1, acc) },
                    #[cfg(target_arch = "x86_64")]
                    QIsa::Avx512 | QIsa::Avx512Vnni => unsafe {
                        self.rows_avx512(input, out, p0, p1, acc)
                    },
                    QIsa::Portable => self.rows::<false>(input, out, p0, p1, acc),
                }
            });
        };
        pool.run(tasks, &task);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::ops::ConvOptions;
    use switchyard_interpreter::{
        Activation, BuiltinOp, DType, Interpreter, InterpreterOptions, Model, OpKind, OpOptions,
        OpResolver, Padding, Quant, Tensor,
    };

    use super::QIsa;
    use crate::{OptimizedResolver, ReferenceResolver};

    fn run(
        model: &Arc<Model>,
        r: Arc<dyn OpResolver>,
        x: &Tensor,
        threads: usize,
    ) -> (Vec<u8>, Vec<String>) {
        let options = InterpreterOptions {
            threads,
            ..Default::default()
        };
        let mut it = Interpreter::new(model.clone(), r, options).unwrap();
        it.set_profiling(true);
        let out = it.run(&[x.view()]).unwrap();
        let names = it.profile().into_iter().map(|p| p.kernel).collect();
        (out[0].data.as_slice().to_vec(), names)
    }

    /// Per-channel int8 DEPTHWISE_CONV_2D on every ISA path equals the reference (itself
    /// tested against LiteRT) bit for bit, including the channels past the last whole
    /// group of 8, which LiteRT rounds differently.
    #[test]
    fn int8_depthwise_matches_the_reference_on_every_path() {
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (h, w, c, k, stride, padding, act) in [
            (9, 9, 20, 3, 1, Padding::Same, Activation::Relu6),
            (8, 11, 8, 3, 2, Padding::Same, Activation::None),
            (7, 7, 35, 5, 1, Padding::Valid, Activation::Relu),
        ] {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::I8, &[1, h, w, c]);
            sg.set_quant(x, Quant::per_tensor(0.05, 9));
            let wdata: Vec<u8> = (0..k * k * c).map(|_| next() as u8).collect();
            let wt = sg.constant("w", DType::I8, &[1, k, k, c], wdata);
            let scales: Vec<f32> = (0..c).map(|i| 0.003 + 0.0005 * i as f32).collect();
            sg.set_quant(
                wt,
                Quant {
                    scale: scales.clone(),
                    zero_point: vec![0; c],
                    axis: 3,
                },
            );
            let bias: Vec<i32> = (0..c).map(|_| (next() % 2001) as i32 - 1000).collect();
            let bt = sg.constant("b", DType::I32, &[c], bytemuck::cast_slice(&bias).to_vec());
            sg.set_quant(
                bt,
                Quant {
                    scale: scales.iter().map(|s| s * 0.05).collect(),
                    zero_point: vec![0; c],
                    axis: 0,
                },
            );
            let (oh, ow) = match padding {
                Padding::Same => (h.div_ceil(stride), w.div_ceil(stride)),
                Padding::Valid => ((h - k) / stride + 1, (w - k) / stride + 1),
            };
            let y = sg.tensor("y", DType::I8, &[1, oh, ow, c]);
            sg.set_quant(y, Quant::per_tensor(0.06, -4));
            sg.op(
                OpKind::Builtin(BuiltinOp::DepthwiseConv2d),
                &[Some(x), Some(wt), Some(bt)],
                &[y],
                OpOptions::Conv(ConvOptions {
                    padding,
                    stride_h: stride,
                    stride_w: stride,
                    dilation_h: 1,
                    dilation_w: 1,
                    depth_multiplier: 1,
                    activation: act,
                }),
            );
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let model = Arc::new(Model::from_bytes(&mb.finish()).unwrap());
            let xdata: Vec<u8> = (0..h * w * c).map(|_| next() as u8).collect();
            let xt = Tensor::from_bytes(DType::I8, vec![1, h, w, c], &xdata).unwrap();
            let (want, _) = run(&model, Arc::new(ReferenceResolver), &xt, 1);
            for isa in QIsa::available() {
                for threads in [1, 2] {
                    let (got, names) = QIsa::forced(isa, || {
                        run(&model, Arc::new(OptimizedResolver), &xt, threads)
                    });
                    assert!(
                        names
                            .iter()
                            .any(|n| n == &format!("depthwise/i8/{}", isa.name())),
                        "{isa:?} not used: {names:?}"
                    );
                    assert_eq!(got, want, "{h}x{w}x{c} k{k} s{stride} {isa:?} x{threads}");
                }
            }
        }
    }
}
