//! Hybrid (dynamic-range) UNIDIRECTIONAL_SEQUENCE_LSTM: float input, states and
//! output, int8 weights with one scale each (what TF's default post-training
//! quantization makes of an LSTM).
//!
//! As LiteRT's `EvalHybrid`: at every step the input row and the previous hidden state
//! are quantized to int8 (symmetrically, or with a zero point when the node's
//! `asymmetric_quantize_inputs` is set), each gate starts from its float bias and adds
//! `float(dot - row_sum · zero_point) · (row_scale · weight_scale)` for the input and
//! the recurrent weights; peepholes, layer norm, the cell update and the activations are
//! the float kernel's. With a projection the gated cell output is quantized the same
//! way before its matmul. A row that is all zeros is not quantized and adds nothing.

use switchyard_interpreter::{
    DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, TensorMeta, TensorView,
    TensorViewMut, ops::LstmOptions,
};

use super::{Lstm, Reusable, Types, check_activation, idx, normalize, sigmoid, structure, zeroed};
use crate::ops::hybrid::{quantize_row_asymmetric_with, quantize_row_symmetric_with, row_sums};

const TYPES: Types = Types {
    kind: "hybrid",
    weights: DType::I8,
    peephole: DType::I8,
    bias: DType::F32,
    layer_norm: DType::F32,
    output_state: DType::F32,
    cell_state: DType::F32,
    output: DType::F32,
};

/// Constant int8 weights with their one scale and row sums.
struct QMatrix {
    data: Vec<i8>,
    scale: f32,
    row_sums: Vec<i32>,
    cols: usize,
    /// The AVX2 dot product ([`crate::ops::hybrid::dot_i8`]); exact, so both registries
    /// take it (LSTM has one kernel).
    avx2: bool,
}

/// A quantized input row: values, scale and zero point.
struct QRow<'a> {
    q: &'a [i8],
    scale: f32,
    zero_point: i32,
}

impl QMatrix {
    fn new(t: &TensorMeta<'_>, what: &str) -> Result<QMatrix, KernelError> {
        let bytes = t.data.ok_or_else(|| {
            KernelError::unsupported(format!(
                "{what} ({}) of a hybrid LSTM must be constant",
                t.name
            ))
        })?;
        let scale = match t.quant.map(|q| q.scale.as_slice()) {
            Some([s]) => *s,
            _ => {
                return Err(KernelError::unsupported(format!(
                    "{what} ({}) of a hybrid LSTM needs exactly one scale",
                    t.name
                )));
            }
        };
        let cols = t.shape.last().copied().unwrap_or(1).max(1);
        let data: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let mut sums = vec![0; data.len() / cols];
        row_sums(&data, cols, &mut sums);
        Ok(QMatrix {
            data,
            scale,
            row_sums: sums,
            cols,
            avx2: crate::ops::hybrid::avx2_detected(),
        })
    }

    /// `out[r] += float(Σ w[r]·q - row_sum[r]·zp) · (row scale · weight scale)`, as
    /// LiteRT's hybrid MatrixBatchVectorMultiplyAccumulate.
    fn mul_acc(&self, x: &QRow<'_>, out: &mut [f32]) {
        let scale = x.scale * self.scale;
        for ((o, row), &sum) in out
            .iter_mut()
            .zip(self.data.chunks_exact(self.cols))
            .zip(&self.row_sums)
        {
            let dot = crate::ops::hybrid::dot_i8(row, x.q, self.avx2);
            let dot = dot.wrapping_sub(sum.wrapping_mul(x.zero_point));
            *o += dot as f32 * scale;
        }
    }
}

struct HybridLstm {
    lstm: Lstm,
    asymmetric: bool,
    /// Input, forget, cell, output (no input gate under CIFG).
    w: [Option<QMatrix>; 4],
    r: [Option<QMatrix>; 4],
    /// Peephole weights recovered to float (`scale · w`), for input, forget, output.
    peephole: [Option<Vec<f32>>; 3],
    bias: [Option<Vec<f32>>; 4],
    layer_norm: [Option<Vec<f32>>; 4],
    projection: Option<QMatrix>,
    projection_bias: Option<Vec<f32>>,
    scratch: Reusable<Scratch>,
}

fn float_const(t: Option<TensorMeta<'_>>, what: &str) -> Result<Option<Vec<f32>>, KernelError> {
    let Some(t) = t else { return Ok(None) };
    let bytes = t.data.ok_or_else(|| {
        KernelError::unsupported(format!(
            "{what} ({}) of a hybrid LSTM must be constant",
            t.name
        ))
    })?;
    Ok(Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

pub(super) fn prepare(
    ctx: &PrepareCtx<'_>,
    opts: &LstmOptions,
) -> Result<PreparedKernel, KernelError> {
    check_activation(opts)?;
    let lstm = structure(ctx, opts, &TYPES)?;
    let m = |i: usize, what: &str| -> Result<Option<QMatrix>, KernelError> {
        ctx.optional_input(i)
            .map(|t| QMatrix::new(&t, what))
            .transpose()
    };
    let w = [
        m(idx::W_INPUT, "input-to-input weights")?,
        m(idx::W_FORGET, "input-to-forget weights")?,
        m(idx::W_CELL, "input-to-cell weights")?,
        m(idx::W_OUTPUT, "input-to-output weights")?,
    ];
    let r = [
        m(idx::R_INPUT, "recurrent-to-input weights")?,
        m(idx::R_FORGET, "recurrent-to-forget weights")?,
        m(idx::R_CELL, "recurrent-to-cell weights")?,
        m(idx::R_OUTPUT, "recurrent-to-output weights")?,
    ];
    let mut peephole: [Option<Vec<f32>>; 3] = [None, None, None];
    for (slot, i) in peephole
        .iter_mut()
        .zip([idx::P_INPUT, idx::P_FORGET, idx::P_OUTPUT])
    {
        if let Some(p) = m(i, "peephole weights")? {
            *slot = Some(p.data.iter().map(|&v| p.scale * f32::from(v)).collect());
        }
    }
    let f = |i: usize, what: &str| float_const(ctx.optional_input(i), what);
    let bias = [
        f(idx::B_INPUT, "input gate bias")?,
        f(idx::B_FORGET, "forget gate bias")?,
        f(idx::B_CELL, "cell gate bias")?,
        f(idx::B_OUTPUT, "output gate bias")?,
    ];
    let layer_norm = if lstm.layer_norm {
        [
            f(idx::LN_INPUT, "layer-norm coefficients")?,
            f(idx::LN_FORGET, "layer-norm coefficients")?,
            f(idx::LN_CELL, "layer-norm coefficients")?,
            f(idx::LN_OUTPUT, "layer-norm coefficients")?,
        ]
    } else {
        [None, None, None, None]
    };
    let projection = m(idx::PROJ_W, "projection weights")?;
    let projection_bias = f(idx::PROJ_B, "projection bias")?;
    let shape = lstm.output_shape();
    let scratch = Reusable::new(Scratch::new(&lstm)?);
    Ok(PreparedKernel::new(
        vec![shape],
        HybridLstm {
            scratch,
            lstm,
            asymmetric: opts.asymmetric_quantize_inputs,
            w,
            r,
            peephole,
            bias,
            layer_norm,
            projection,
            projection_bias,
        },
    ))
}

/// Per-row scratch, allocated once per eval.
struct Scratch {
    gates: [Vec<f32>; 4],
    x_q: Vec<i8>,
    h_q: Vec<i8>,
    cell_q: Vec<i8>,
    hidden: Vec<f32>,
}

impl Scratch {
    fn new(l: &Lstm) -> Result<Scratch, KernelError> {
        let nc = l.n_cell;
        Ok(Scratch {
            gates: [
                zeroed(nc, "gates")?,
                zeroed(nc, "gates")?,
                zeroed(nc, "gates")?,
                zeroed(nc, "gates")?,
            ],
            x_q: zeroed(l.n_input, "quantized input")?,
            h_q: zeroed(l.n_output, "quantized state")?,
            cell_q: zeroed(nc, "quantized cell output")?,
            hidden: zeroed(nc, "cell output")?,
        })
    }

    fn bytes(l: &Lstm) -> usize {
        21 * l.n_cell + l.n_input + l.n_output
    }
}

impl HybridLstm {
    fn quantize<'a>(&self, x: &[f32], q: &'a mut [i8]) -> Option<QRow<'a>> {
        if x.iter().all(|&v| v == 0.0) {
            return None;
        }
        // The matrices carry the path detected at prepare.
        let avx2 = self.w.iter().flatten().any(|m| m.avx2);
        let (scale, zero_point) = if self.asymmetric {
            quantize_row_asymmetric_with(x, q, avx2)
        } else {
            (quantize_row_symmetric_with(x, q, avx2), 0)
        };
        Some(QRow {
            q,
            scale,
            zero_point,
        })
    }

    /// One gate: bias (0 under layer norm) + W·x + R·h (+ peephole ⊙ c), layer norm,
    /// activation.
    #[allow(clippy::too_many_arguments)]
    fn gate(
        &self,
        k: usize,
        x: Option<&QRow<'_>>,
        h: Option<&QRow<'_>>,
        peephole: Option<&[f32]>,
        c: &[f32],
        act: impl Fn(f32) -> f32,
        out: &mut [f32],
    ) {
        let (Some(w), Some(r), Some(bias)) = (&self.w[k], &self.r[k], &self.bias[k]) else {
            return;
        };
        let ln = self.layer_norm[k].as_deref();
        if ln.is_some() {
            out.fill(0.0);
        } else {
            out.copy_from_slice(bias);
        }
        if let Some(x) = x {
            w.mul_acc(x, out);
        }
        if let Some(h) = h {
            r.mul_acc(h, out);
        }
        if let Some(p) = peephole {
            for ((o, p), c) in out.iter_mut().zip(p).zip(c) {
                *o += p * c;
            }
        }
        if let Some(coeff) = ln {
            normalize(out);
            for ((o, k), b) in out.iter_mut().zip(coeff).zip(bias) {
                *o = *o * k + b;
            }
        }
        out.iter_mut().for_each(|v| *v = act(*v));
    }

    fn step(&self, x: &[f32], h: &mut [f32], c: &mut [f32], s: &mut Scratch) {
        let l = &self.lstm;
        let act = |v: f32| l.activation.apply(v);
        let Scratch {
            gates,
            x_q,
            h_q,
            cell_q,
            hidden,
        } = s;
        let [ig, fg, cg, og] = gates;
        let xq = self.quantize(x, x_q);
        let hq = self.quantize(h, h_q);
        let (xq, hq) = (xq.as_ref(), hq.as_ref());
        self.gate(0, xq, hq, self.peephole[0].as_deref(), c, sigmoid, ig);
        self.gate(1, xq, hq, self.peephole[1].as_deref(), c, sigmoid, fg);
        self.gate(2, xq, hq, None, c, act, cg);
        for k in 0..l.n_cell {
            let input_gate = if l.cifg { 1.0 - fg[k] } else { ig[k] };
            let mut v = fg[k] * c[k] + cg[k] * input_gate;
            if l.cell_clip > 0.0 {
                v = v.clamp(-l.cell_clip, l.cell_clip);
            }
            c[k] = v;
        }
        // The output gate's peephole looks at the updated cell state.
        self.gate(3, xq, hq, self.peephole[2].as_deref(), c, sigmoid, og);
        for k in 0..l.n_cell {
            hidden[k] = og[k] * act(c[k]);
        }
        match &self.projection {
            Some(p) => {
                match &self.projection_bias {
                    Some(b) => h.copy_from_slice(b),
                    None => h.fill(0.0),
                }
                if let Some(q) = self.quantize(hidden, cell_q) {
                    p.mul_acc(&q, h);
                }
                if l.proj_clip > 0.0 {
                    h.iter_mut()
                        .for_each(|v| *v = v.clamp(-l.proj_clip, l.proj_clip));
                }
            }
            None => h.copy_from_slice(hidden),
        }
    }
}

impl OpKernel for HybridLstm {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let l = &self.lstm;
        let x = inputs
            .get(idx::INPUT)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| KernelError::invalid("missing LSTM input"))?
            .f32s()?;
        let [out, h_state, c_state] = outputs else {
            return Err(KernelError::invalid(
                "LSTM expects its output and both state tensors",
            ));
        };
        let y = out.f32s_mut()?;
        let h_all = h_state.f32s_mut()?;
        let c_all = c_state.f32s_mut()?;
        let (nb, nt, ni, no, nc) = (l.n_batch, l.max_time, l.n_input, l.n_output, l.n_cell);
        if x.len() != nb * nt * ni
            || y.len() != nb * nt * no
            || h_all.len() != nb * no
            || c_all.len() != nb * nc
        {
            return Err(KernelError::shape(
                "LSTM buffers do not match the prepared shapes",
            ));
        }
        self.scratch.with(
            || Scratch::new(l),
            |s| {
                for b in 0..nb {
                    let h = &mut h_all[b * no..(b + 1) * no];
                    let c = &mut c_all[b * nc..(b + 1) * nc];
                    for t in 0..nt {
                        let row = l.row(t, b);
                        self.step(&x[row * ni..(row + 1) * ni], h, c, s);
                        y[row * no..(row + 1) * no].copy_from_slice(h);
                    }
                }
            },
        )
    }

    fn mutated_inputs(&self) -> &[usize] {
        &self.lstm.mutated
    }

    fn name(&self) -> &str {
        "lstm/hybrid"
    }

    fn memory_bytes(&self) -> usize {
        // The weight copies, row sums, float constants and scratch made at prepare.
        let q = |m: &QMatrix| m.data.len() + 4 * m.row_sums.len();
        let f = |v: &Vec<f32>| 4 * v.len();
        let matrices: usize = self
            .w
            .iter()
            .chain(&self.r)
            .chain(std::iter::once(&self.projection))
            .flatten()
            .map(q)
            .sum();
        let floats: usize = self
            .peephole
            .iter()
            .chain(&self.bias)
            .chain(&self.layer_norm)
            .chain(std::iter::once(&self.projection_bias))
            .flatten()
            .map(f)
            .sum();
        matrices + floats + Scratch::bytes(&self.lstm)
    }
}
