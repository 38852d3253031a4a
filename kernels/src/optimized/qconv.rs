//! int8 CONV_2D and FULLY_CONNECTED on the packed int8 GEMM ([`super::qgemm`]).
//!
//! Per block of output pixels (rows), the im2col tile is gathered once, widened to
//! int16, padding taps set to the input zero point, then every column panel runs over
//! it; FULLY_CONNECTED's rows are the input rows as they lie. Blocks are split across
//! the worker pool like the float kernels.

// Lane and row loops index several fixed-size arrays in step; iterators would hide that.
#![allow(clippy::needless_range_loop)]

use std::cell::RefCell;

use switchyard_interpreter::KernelError;

use super::conv::ConvGeom;
use super::pool::ThreadPool;
use super::qgemm::{PackedQ, QIsa, QMR};

thread_local! {
    static QTILE: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
}

/// A prepared int8 convolution (a FULLY_CONNECTED is one with a 1×1 window over
/// `rows` pixels of `depth` channels).
#[derive(Debug)]
pub struct QConv {
    pub geom: ConvGeom,
    pub packed: PackedQ,
    /// The input zero point, written into padding taps.
    pub input_zero: i8,
    pub isa: QIsa,
}

/// Raw pointer that may cross into pool workers; each task writes disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut i8);
// SAFETY: tasks write disjoint output rows (see `QConv::run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer; a method so closures capture the whole (Sync) wrapper.
    fn get(self) -> *mut i8 {
        self.0
    }
}

/// Widens the im2col row of output pixel `pix` of `g` into `dst` (at least `k_h·k_w·in_c`
/// values; the rest is zeroed): taps in the padding hold `zero`, the input zero point, so
/// that they add nothing once the zero point is taken out.
pub(crate) fn gather_i16(g: &ConvGeom, input: &[i8], pix: usize, zero: i16, dst: &mut [i16]) {
    let ox = pix % g.out_w;
    let oy = (pix / g.out_w) % g.out_h;
    let b = pix / (g.out_w * g.out_h);
    let mut o = 0;
    for ky in 0..g.k_h {
        let iy = (oy * g.stride_h + ky * g.dil_h).checked_sub(g.pad_top);
        for kx in 0..g.k_w {
            let ix = (ox * g.stride_w + kx * g.dil_w).checked_sub(g.pad_left);
            let d = &mut dst[o..o + g.in_c];
            match (iy, ix) {
                (Some(iy), Some(ix)) if iy < g.in_h && ix < g.in_w => {
                    let base = ((b * g.in_h + iy) * g.in_w + ix) * g.in_c;
                    for (t, &x) in d.iter_mut().zip(&input[base..base + g.in_c]) {
                        *t = i16::from(x);
                    }
                }
                _ => d.fill(zero),
            }
            o += g.in_c;
        }
    }
    dst[o..].fill(0);
}

impl QConv {
    /// Output pixels, and bytes of one input/output pixel.
    fn pixels(&self) -> usize {
        let g = &self.geom;
        g.batch * g.out_h * g.out_w
    }

    /// Widens the im2col row of output pixel `pix` into `dst` (`kp` values).
    fn gather(&self, input: &[i8], pix: usize, dst: &mut [i16]) {
        gather_i16(&self.geom, input, pix, i16::from(self.input_zero), dst);
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
                "int8 conv buffers of {} and {} bytes, prepared for {} and {}",
                input.len(),
                output.len(),
                g.input_len(),
                g.output_len()
            )));
        }
        let m = self.pixels();
        let n = self.packed.n;
        let kp = self.packed.kp;
        let mr = self.isa.mr();
        let blocks = m.div_ceil(mr);
        // Enough blocks per task to amortise the hand-off, but at least one task per thread.
        let per_task = blocks.div_ceil(pool.threads() * 4).max(1);
        let tasks = blocks.div_ceil(per_task);
        let out = OutPtr(output.as_mut_ptr());
        let run_task = |t: usize| {
            QTILE.with(|tile| {
                let mut tile = tile.borrow_mut();
                if tile.len() < mr * kp {
                    tile.resize(mr * kp, 0);
                }
                for blk in t * per_task..((t + 1) * per_task).min(blocks) {
                    let r0 = blk * mr;
                    let rows = (m - r0).min(mr);
                    for i in 0..rows {
                        self.gather(input, r0 + i, &mut tile[i * kp..(i + 1) * kp]);
                    }
                    let mut ap = [tile.as_ptr(); QMR];
                    let mut op = [out.get(); QMR];
                    for i in 0..rows {
                        ap[i] = tile[i * kp..].as_ptr();
                        // SAFETY: row r0 + i < m lies inside the output (checked above).
                        op[i] = unsafe { out.get().add((r0 + i) * n) };
                    }
                    for p in 0..self.packed.panels() {
                        // SAFETY: each row pointer holds `kp` values, each output row `n`
                        // bytes, this task alone writes rows r0..r0 + rows, and `isa` was
                        // detected on (or forced by a test for) this CPU.
                        unsafe { self.packed.panel(self.isa, &ap, rows, p, &op) };
                    }
                }
            });
        };
        pool.run(tasks, &run_task);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::ops::ConvOptions;
    use switchyard_interpreter::{
        Activation, BuiltinOp, DType, Interpreter, Model, OpKind, OpOptions, OpResolver, Padding,
        Quant, Tensor,
    };

    use crate::optimized::qgemm::QIsa;
    use crate::{OptimizedResolver, ReferenceResolver};

    fn run(
        model: &Arc<Model>,
        r: Arc<dyn OpResolver>,
        x: &Tensor,
        threads: usize,
    ) -> (Vec<u8>, Vec<String>) {
        let mut it = Interpreter::new(
            model.clone(),
            r,
            switchyard_interpreter::InterpreterOptions {
                threads,
                ..Default::default()
            },
        )
        .unwrap();
        it.set_profiling(true);
        let out = it.run(&[x.view()]).unwrap();
        let names = it.profile().into_iter().map(|p| p.kernel).collect();
        (out[0].data.as_slice().to_vec(), names)
    }

    /// Per-channel int8 CONV_2D (and a FULLY_CONNECTED) on every ISA path equals the
    /// reference kernel (itself tested against LiteRT) bit for bit.
    #[test]
    fn int8_conv_and_fc_match_the_reference_on_every_path() {
        let cases = [
            // (in [h,w,c], out_c, k, stride, padding, activation)
            ([9, 9, 8], 24, 3, 1, Padding::Same, Activation::Relu6),
            ([10, 7, 3], 17, 3, 2, Padding::Same, Activation::None),
            ([6, 6, 16], 32, 1, 1, Padding::Valid, Activation::Relu),
            ([5, 8, 5], 9, 2, 2, Padding::Valid, Activation::None),
        ];
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (shape, oc, k, stride, padding, act) in cases {
            let [h, w, c] = shape;
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::I8, &[1, h, w, c]);
            sg.set_quant(x, Quant::per_tensor(0.05, -7));
            let wdata: Vec<u8> = (0..oc * k * k * c).map(|_| next() as u8).collect();
            let wt = sg.constant("w", DType::I8, &[oc, k, k, c], wdata);
            sg.set_quant(
                wt,
                Quant {
                    scale: (0..oc).map(|i| 0.002 + 0.0003 * i as f32).collect(),
                    zero_point: vec![0; oc],
                    axis: 0,
                },
            );
            let bias: Vec<i32> = (0..oc).map(|_| (next() % 4001) as i32 - 2000).collect();
            let bt = sg.constant("b", DType::I32, &[oc], bytemuck::cast_slice(&bias).to_vec());
            sg.set_quant(
                bt,
                Quant {
                    scale: (0..oc)
                        .map(|i| 0.05 * (0.002 + 0.0003 * i as f32))
                        .collect(),
                    zero_point: vec![0; oc],
                    axis: 0,
                },
            );
            let (oh, ow) = match padding {
                Padding::Same => (h.div_ceil(stride), w.div_ceil(stride)),
                Padding::Valid => ((h - k) / stride + 1, (w - k) / stride + 1),
            };
            let y = sg.tensor("y", DType::I8, &[1, oh, ow, oc]);
            sg.set_quant(y, Quant::per_tensor(0.08, 3));
            sg.op(
                OpKind::Builtin(BuiltinOp::Conv2d),
                &[Some(x), Some(wt), Some(bt)],
                &[y],
                OpOptions::Conv(ConvOptions {
                    padding,
                    stride_h: stride,
                    stride_w: stride,
                    dilation_h: 1,
                    dilation_w: 1,
                    activation: act,
                    ..Default::default()
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
                            .any(|n| n.ends_with(&format!("/{}", isa.name()))),
                        "{isa:?} not used: {names:?}"
                    );
                    assert_eq!(got, want, "{shape:?} k{k} s{stride} {isa:?} x{threads}");
                }
            }
        }
    }
}
