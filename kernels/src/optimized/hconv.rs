//! Hybrid (dynamic-range) CONV_2D and DEPTHWISE_CONV_2D: float activations quantized
//! per image at run time, int8 weights packed at prepare.
//!
//! The int32 sums LiteRT forms, `Σ w·(q − zp)` over the taps inside the image, are exact
//! in any order, so they are computed here by the packed int8 GEMM ([`super::qgemm`]):
//! im2col rows of the quantized image with the zero point in the padding taps (which then
//! add `w·0`), raw sums `Σ w·q`, and the zero point taken out as `zp·Σ_k w` per channel.
//! Wrapping int32 arithmetic makes that identity exact whatever the order. The float
//! rescale after it is the scalar kernels' ([`crate::ops::hybrid`]), operation for
//! operation, so outputs are bit-identical to them (and to LiteRT, which those are
//! tested against).

use std::cell::RefCell;

use switchyard_interpreter::KernelError;

use super::conv::ConvGeom;
use super::qconv::gather_i16;
use super::qgemm::{PackedQ, QIsa, QMR, QNR};

thread_local! {
    static TILE: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    static ROW: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// Grows a thread's scratch to `len` values, fallibly.
fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) -> Result<(), KernelError> {
    if v.len() < len {
        v.try_reserve(len - v.len())
            .map_err(|_| KernelError::invalid(format!("cannot allocate {len} scratch values")))?;
        v.resize(len, T::default());
    }
    Ok(())
}

/// A prepared hybrid CONV_2D on the packed int8 GEMM (one image of `geom`; the caller
/// loops over the batch, since each image has its own scale and zero point).
#[derive(Debug)]
pub struct HybridConv {
    pub geom: ConvGeom,
    packed: PackedQ,
    /// `Σ_k w[c][k]` per output channel.
    row_sums: Vec<i32>,
    pub isa: QIsa,
}

impl HybridConv {
    /// `w` is `[out_c][k_h·k_w·in_c]` int8; `geom.batch` must be 1.
    pub fn new(geom: ConvGeom, w: &[i8], row_sums: &[i32]) -> Result<HybridConv, KernelError> {
        let k = geom.k_h * geom.k_w * geom.in_c;
        if geom.batch != 1 || w.len() != geom.out_c * k || row_sums.len() != geom.out_c {
            return Err(KernelError::shape("hybrid convolution operands disagree"));
        }
        Ok(HybridConv {
            packed: PackedQ::raw(w, geom.out_c, k)?,
            row_sums: row_sums.to_vec(),
            geom,
            isa: QIsa::detect(),
        })
    }

    /// One image: `q` the quantized image, `zp` its zero point; each output is
    /// `float(acc) * (scales[c] * sf) + bias[c]`, clamped, as the scalar kernel writes it.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        q: &[i8],
        zp: i32,
        sf: f32,
        scales: &[f32],
        bias: Option<&[f32]>,
        clamp: (f32, f32),
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let g = &self.geom;
        let n = g.out_c;
        buffers_agree(g, q, out, scales, bias, "hybrid convolution")?;
        let zero = i16::try_from(zp)
            .map_err(|_| KernelError::invalid(format!("input zero point {zp} out of range")))?;
        let m = g.out_h * g.out_w;
        let kp = self.packed.kp;
        let mr = self.isa.mr();
        TILE.with(|tile| {
            let mut tile = tile.borrow_mut();
            grow(&mut tile, mr * kp)?;
            let mut acc = [[0i32; QNR]; QMR];
            let mut r0 = 0;
            while r0 < m {
                let rows = (m - r0).min(mr);
                for i in 0..rows {
                    gather_i16(g, q, r0 + i, zero, &mut tile[i * kp..(i + 1) * kp]);
                }
                let mut ap = [tile.as_ptr(); QMR];
                for (i, p) in ap.iter_mut().enumerate().take(rows) {
                    *p = tile[i * kp..].as_ptr();
                }
                for p in 0..self.packed.panels() {
                    // SAFETY: each row pointer holds `kp` values (the gather zeroed the
                    // tail), and `isa` was detected on (or forced by a test for) this CPU.
                    unsafe { self.packed.panel_acc(self.isa, &ap, rows, p, &mut acc) };
                    let c0 = p * QNR;
                    let cols = (n - c0).min(QNR);
                    for (i, acc_row) in acc.iter().enumerate().take(rows) {
                        let o = &mut out[(r0 + i) * n + c0..(r0 + i) * n + c0 + cols];
                        let lanes = o
                            .iter_mut()
                            .zip(acc_row)
                            .zip(&self.row_sums[c0..c0 + cols])
                            .zip(&scales[c0..c0 + cols]);
                        for (j, (((ov, &a), &rs), &s)) in lanes.enumerate() {
                            let a = a.wrapping_sub(zp.wrapping_mul(rs));
                            let v = a as f32 * (s * sf) + bias.map_or(0.0, |b| b[c0 + j]);
                            *ov = v.max(clamp.0).min(clamp.1);
                        }
                    }
                }
                r0 += rows;
            }
            Ok(())
        })
    }
}

/// A prepared hybrid DEPTHWISE_CONV_2D with depth multiplier 1, vectorised over
/// channels like the int8 one ([`super::qdepthwise`]).
#[derive(Debug)]
pub struct HybridDepthwise {
    pub geom: ConvGeom,
    /// `[k_h·k_w][c]` widened weights.
    w: Vec<i32>,
    pub isa: QIsa,
}

impl HybridDepthwise {
    /// `w` is `[1][k_h][k_w][c]`; `geom.batch` must be 1 and `in_c == out_c`.
    pub fn new(geom: ConvGeom, w: &[i8]) -> Result<HybridDepthwise, KernelError> {
        if geom.batch != 1 || geom.in_c != geom.out_c || w.len() != geom.k_h * geom.k_w * geom.out_c
        {
            return Err(KernelError::shape("hybrid depthwise operands disagree"));
        }
        let mut wide = Vec::new();
        grow(&mut wide, w.len())?;
        for (d, &v) in wide.iter_mut().zip(w) {
            *d = i32::from(v);
        }
        Ok(HybridDepthwise {
            geom,
            w: wide,
            isa: QIsa::detect(),
        })
    }

    /// One image, as [`HybridConv::run`], with LiteRT's depthwise order of the rescale:
    /// `(float(acc) * scales[c]) * sf + bias[c]`.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        q: &[i8],
        zp: i32,
        sf: f32,
        scales: &[f32],
        bias: Option<&[f32]>,
        clamp: (f32, f32),
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        let g = &self.geom;
        let c = g.out_c;
        buffers_agree(g, q, out, scales, bias, "hybrid depthwise")?;
        ROW.with(|row| {
            let mut row = row.borrow_mut();
            grow(&mut row, c)?;
            let acc = &mut row[..c];
            let args = DwArgs {
                q,
                zp,
                sf,
                scales,
                bias,
                clamp,
            };
            match self.isa {
                // SAFETY: `isa` was detected on (or forced by a test for) this CPU.
                #[cfg(target_arch = "x86_64")]
                QIsa::Avx2 | QIsa::Avx512 | QIsa::Avx512Vnni => unsafe {
                    self.image_avx2(&args, acc, out)
                },
                QIsa::Portable => self.image(&args, acc, out),
            }
            Ok(())
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn image_avx2(&self, a: &DwArgs<'_>, acc: &mut [i32], out: &mut [f32]) {
        self.image(a, acc, out)
    }

    #[inline(always)]
    fn image(&self, a: &DwArgs<'_>, acc: &mut [i32], out: &mut [f32]) {
        let g = &self.geom;
        let c = g.out_c;
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                acc.fill(0);
                for ky in 0..g.k_h {
                    let Some(iy) = (oy * g.stride_h + ky * g.dil_h)
                        .checked_sub(g.pad_top)
                        .filter(|&i| i < g.in_h)
                    else {
                        continue;
                    };
                    for kx in 0..g.k_w {
                        let Some(ix) = (ox * g.stride_w + kx * g.dil_w)
                            .checked_sub(g.pad_left)
                            .filter(|&i| i < g.in_w)
                        else {
                            continue;
                        };
                        let base = (iy * g.in_w + ix) * c;
                        let x = &a.q[base..base + c];
                        let t = (ky * g.k_w + kx) * c;
                        let w = &self.w[t..t + c];
                        for ((s, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                            *s = s.wrapping_add(wv.wrapping_mul(i32::from(xv) - a.zp));
                        }
                    }
                }
                let o0 = (oy * g.out_w + ox) * c;
                let o = &mut out[o0..o0 + c];
                for (j, ((ov, &s), &cs)) in o.iter_mut().zip(acc.iter()).zip(a.scales).enumerate() {
                    let v = (s as f32 * cs) * a.sf + a.bias.map_or(0.0, |b| b[j]);
                    *ov = v.max(a.clamp.0).min(a.clamp.1);
                }
            }
        }
    }
}

/// One image's run-time values for [`HybridDepthwise::image`].
struct DwArgs<'a> {
    q: &'a [i8],
    zp: i32,
    sf: f32,
    scales: &'a [f32],
    bias: Option<&'a [f32]>,
    clamp: (f32, f32),
}

/// The buffers one run is handed against the geometry prepared: the image, the output,
/// and one scale (and bias) per output channel.
fn buffers_agree(
    g: &ConvGeom,
    q: &[i8],
    out: &[f32],
    scales: &[f32],
    bias: Option<&[f32]>,
    what: &str,
) -> Result<(), KernelError> {
    let n = g.out_c;
    if q.len() != g.input_len()
        || out.len() != g.output_len()
        || scales.len() != n
        || bias.is_some_and(|b| b.len() != n)
    {
        return Err(KernelError::shape(format!("{what} buffers disagree")));
    }
    Ok(())
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

    use crate::optimized::qgemm::QIsa;
    use crate::{OptimizedResolver, ReferenceResolver};

    fn run(model: &Arc<Model>, r: Arc<dyn OpResolver>, x: &Tensor) -> (Vec<u8>, Vec<String>) {
        let mut it = Interpreter::new(model.clone(), r, InterpreterOptions::default()).unwrap();
        it.set_profiling(true);
        let out = it.run(&[x.view()]).unwrap();
        let names = it.profile().into_iter().map(|p| p.kernel).collect();
        (out[0].data.as_slice().to_vec(), names)
    }

    /// Hybrid CONV_2D (1×1 and k×k, padded and strided) and DEPTHWISE_CONV_2D on every
    /// ISA path equal the plain loops (themselves tested against LiteRT) bit for bit.
    #[test]
    fn hybrid_convolutions_match_the_plain_loops_on_every_path() {
        let cases = [
            // (depthwise, in [h,w,c], out_c, k, stride, padding, activation)
            (false, [9, 9, 8], 24, 3, 1, Padding::Same, Activation::Relu6),
            (false, [10, 7, 3], 17, 3, 2, Padding::Same, Activation::None),
            (
                false,
                [6, 6, 16],
                40,
                1,
                1,
                Padding::Valid,
                Activation::Relu,
            ),
            (true, [9, 9, 20], 20, 3, 1, Padding::Same, Activation::Relu6),
            (true, [8, 11, 13], 13, 3, 2, Padding::Same, Activation::None),
        ];
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (dw, shape, oc, k, stride, padding, act) in cases {
            let [h, w, c] = shape;
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &[1, h, w, c]);
            let (wshape, axis) = if dw {
                ([1, k, k, oc], 3)
            } else {
                ([oc, k, k, c], 0)
            };
            let wdata: Vec<u8> = (0..wshape.iter().product::<usize>())
                .map(|_| next() as u8)
                .collect();
            let wt = sg.constant("w", DType::I8, &wshape, wdata);
            sg.set_quant(
                wt,
                Quant {
                    scale: (0..oc).map(|i| 0.002 + 0.0003 * i as f32).collect(),
                    zero_point: vec![0; oc],
                    axis,
                },
            );
            let bias: Vec<f32> = (0..oc)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let bt = sg.constant("b", DType::F32, &[oc], bytemuck::cast_slice(&bias).to_vec());
            let (oh, ow) = match padding {
                Padding::Same => (h.div_ceil(stride), w.div_ceil(stride)),
                Padding::Valid => ((h - k) / stride + 1, (w - k) / stride + 1),
            };
            let y = sg.tensor("y", DType::F32, &[1, oh, ow, oc]);
            let (op, opts) = if dw {
                (
                    BuiltinOp::DepthwiseConv2d,
                    ConvOptions {
                        depth_multiplier: 1,
                        ..Default::default()
                    },
                )
            } else {
                (BuiltinOp::Conv2d, ConvOptions::default())
            };
            sg.op(
                OpKind::Builtin(op),
                &[Some(x), Some(wt), Some(bt)],
                &[y],
                OpOptions::Conv(ConvOptions {
                    padding,
                    stride_h: stride,
                    stride_w: stride,
                    dilation_h: 1,
                    dilation_w: 1,
                    activation: act,
                    ..opts
                }),
            );
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let model = Arc::new(Model::from_bytes(&mb.finish()).unwrap());
            let xdata: Vec<f32> = (0..h * w * c)
                .map(|_| (next() % 4001) as f32 / 1000.0 - 1.5)
                .collect();
            let xt = Tensor::from_bytes(DType::F32, vec![1, h, w, c], bytemuck::cast_slice(&xdata))
                .unwrap();
            let (want, _) = run(&model, Arc::new(ReferenceResolver), &xt);
            for isa in QIsa::available() {
                let (got, names) =
                    QIsa::forced(isa, || run(&model, Arc::new(OptimizedResolver), &xt));
                assert!(
                    names
                        .iter()
                        .any(|n| n.ends_with(&format!("/{}", isa.name()))),
                    "{isa:?} not used: {names:?}"
                );
                assert_eq!(got, want, "dw {dw} {shape:?} k{k} s{stride} {isa:?}");
            }
        }
    }
}
