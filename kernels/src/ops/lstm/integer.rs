//! Integer UNIDIRECTIONAL_SEQUENCE_LSTM (TFLite's "8x8→16"): int8 input, output and
//! hidden state, int8 weights, int16 cell state (a power-of-two scale), int32 biases,
//! int16 peephole and layer-norm weights, and five intermediate tensors that carry the
//! scales of the four gates' matmul outputs (when layer-normalised) and of the hidden
//! state.
//!
//! The arithmetic is LiteRT's `EvalInteger8x8_16` step for step: each gate accumulates
//! `bias + W·x` and `R·h` (zero points folded into the biases at prepare) rescaled to
//! Q3.12 and saturated to int16, the peephole term, the integer layer norm, then
//! gemmlowp's 16-bit logistic or tanh; the cell update and the hidden state use rounding
//! shifts and TFLite's multipliers. Every rounding and saturation is theirs, so the
//! outputs are bit-exact.

use switchyard_interpreter::{
    DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, TensorMeta, TensorView,
    TensorViewMut, ops::LstmOptions,
};

use super::{Lstm, Reusable, Types, idx, structure, zeroed};
use crate::fixedpoint;
use crate::quant::{
    inv_sqrt_quantized_multiplier_exp, multiply_by_quantized_multiplier as mbqm,
    quantize_multiplier, rounding_divide_by_pot,
};

const TYPES: Types = Types {
    kind: "int8",
    weights: DType::I8,
    peephole: DType::I16,
    bias: DType::I32,
    layer_norm: DType::I16,
    output_state: DType::I8,
    cell_state: DType::I16,
    output: DType::I8,
};

/// A multiplier and shift (TFLite's QuantizeMultiplier of a real scale).
type Scale = (i32, i32);

fn scale_of(real: f64) -> Scale {
    quantize_multiplier(real)
}

/// One gate's constants.
struct Gate {
    /// Input weights (`n_cell` × `n_input`) and `bias - input_zp · row_sum` (no bias under
    /// layer norm, where the bias is added after normalising).
    w: Vec<i8>,
    w_bias: Vec<i32>,
    w_scale: Scale,
    /// Recurrent weights (`n_cell` × `n_output`) and `-output_state_zp · row_sum`.
    r: Vec<i8>,
    r_bias: Vec<i32>,
    r_scale: Scale,
    peephole: Option<(Vec<i16>, Scale)>,
    layer_norm: Option<LayerNorm>,
}

struct LayerNorm {
    weights: Vec<i16>,
    bias: Vec<i32>,
    scale: Scale,
    variance_guard: i32,
}

struct Projection {
    w: Vec<i8>,
    /// `bias + hidden_zp · row_sum`.
    bias: Vec<i32>,
    scale: Scale,
    clip: i8,
}

struct IntegerLstm {
    lstm: Lstm,
    /// Input, forget, cell, output; no input gate under CIFG.
    gates: [Option<Gate>; 4],
    projection: Option<Projection>,
    /// log2 of the cell state's scale.
    cell_scale: i32,
    cell_clip: i16,
    hidden_scale: Scale,
    hidden_zp: i32,
    output_state_zp: i32,
    scratch: Reusable<Scratch>,
}

fn per_tensor_scale(t: &TensorMeta<'_>, what: &str) -> Result<(f32, i32), KernelError> {
    let q = t.quant.ok_or_else(|| {
        KernelError::invalid(format!(
            "{what} ({}) of an integer LSTM has no quantization",
            t.name
        ))
    })?;
    if q.scale.len() != 1 {
        return Err(KernelError::unsupported(format!(
            "{what} ({}) with per-channel scales in an integer LSTM",
            t.name
        )));
    }
    Ok((q.scale[0], q.zero_point_at(0) as i32))
}

fn constant<'a>(t: &TensorMeta<'a>, what: &str) -> Result<&'a [u8], KernelError> {
    t.data.ok_or_else(|| {
        KernelError::unsupported(format!(
            "{what} ({}) of an integer LSTM must be constant",
            t.name
        ))
    })
}

fn i8s(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| b as i8).collect()
}

fn i16s(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn i32s(bytes: &[u8]) -> Vec<i32> {
    crate::quant::le_i32s(bytes)
}

/// TFLite's CheckedLog2: the exponent of a power-of-two scale.
fn checked_log2(x: f32) -> Option<i32> {
    let log2 = x.ln() * (1.0 / 2f32.ln());
    let rounded = log2.round();
    ((log2 - rounded).abs() < 1e-3).then_some(rounded as i32)
}

/// `bias + zero_point · Σ_row w` (TFLite's PrecomputeZeroPointTimesWeightWithBias).
fn folded_bias(w: &[i8], cols: usize, bias: Option<&[i32]>, zero_point: i32) -> Vec<i32> {
    w.chunks_exact(cols.max(1))
        .enumerate()
        .map(|(r, row)| {
            let sum: i32 = row.iter().map(|&v| i32::from(v)).sum();
            bias.map_or(0, |b| b[r])
                .wrapping_add(sum.wrapping_mul(zero_point))
        })
        .collect()
}

pub(super) fn prepare(
    ctx: &PrepareCtx<'_>,
    opts: &LstmOptions,
) -> Result<PreparedKernel, KernelError> {
    let lstm = structure(ctx, opts, &TYPES)?;
    let (n_cell, n_input, n_output) = (lstm.n_cell, lstm.n_input, lstm.n_output);
    if lstm.peephole && n_output != n_cell {
        // LiteRT's integer peephole walks `n_output` elements of an `n_cell` vector.
        return Err(KernelError::unsupported(
            "integer LSTM with peepholes and a projection to another size",
        ));
    }
    if ctx.intermediates.len() != 5 {
        return Err(KernelError::invalid(format!(
            "an integer LSTM needs 5 intermediate tensors (gate and hidden scales), has {}",
            ctx.intermediates.len()
        )));
    }
    let x = ctx.input(idx::INPUT)?;
    let (input_scale, input_zp) = per_tensor_scale(&x, "input")?;
    let out_state = ctx.input(idx::OUTPUT_STATE)?;
    let (output_state_scale, output_state_zp) = per_tensor_scale(&out_state, "output state")?;
    let cell = ctx.input(idx::CELL_STATE)?;
    let (cell_state_scale, _) = per_tensor_scale(&cell, "cell state")?;
    let cell_scale = checked_log2(cell_state_scale).ok_or_else(|| {
        KernelError::unsupported(format!(
            "cell state scale {cell_state_scale} is not a power of two"
        ))
    })?;
    // The output tanh reads the cell state in Q(15 + cell_scale); gemmlowp's table of
    // formats stops at 6 integer bits, and the cell update shifts by 30 + cell_scale.
    if !(-15..=-9).contains(&cell_scale) {
        return Err(KernelError::unsupported(format!(
            "cell state scale 2^{cell_scale}: integer LSTMs take 2^-15 to 2^-9"
        )));
    }
    let out = ctx.output(0)?;
    let (output_scale, _) = per_tensor_scale(&out, "output")?;
    let intermediate = |i: usize| -> Result<(f32, i32), KernelError> {
        per_tensor_scale(&ctx.intermediates[i], "intermediate")
    };
    let mut gate_scale = [2f32.powi(-12); 4];
    if lstm.layer_norm {
        for (i, s) in gate_scale.iter_mut().enumerate() {
            *s = intermediate(i)?.0;
        }
    }
    let (hidden_scale, hidden_zp) = intermediate(4)?;
    if [input_scale, output_state_scale, hidden_scale, output_scale]
        .iter()
        .chain(&gate_scale)
        .any(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(KernelError::invalid(
            "integer LSTM with a non-positive or non-finite scale",
        ));
    }
    let cell_clip = if lstm.cell_clip > 0.0 {
        (lstm.cell_clip / cell_state_scale).clamp(-32768.0, 32767.0) as i16
    } else {
        0
    };
    let proj_clip = if lstm.proj_clip > 0.0 {
        (lstm.proj_clip / output_scale).clamp(-128.0, 127.0) as i8
    } else {
        0
    };

    let bias_of = |i: usize| -> Result<Option<Vec<i32>>, KernelError> {
        ctx.optional_input(i)
            .map(|t| constant(&t, "gate bias").map(i32s))
            .transpose()
    };
    let cell_pow = 2f64.powi(cell_scale);
    let mut gates: [Option<Gate>; 4] = [None, None, None, None];
    let weights = [
        (
            idx::W_INPUT,
            idx::R_INPUT,
            Some(idx::P_INPUT),
            idx::B_INPUT,
            idx::LN_INPUT,
        ),
        (
            idx::W_FORGET,
            idx::R_FORGET,
            Some(idx::P_FORGET),
            idx::B_FORGET,
            idx::LN_FORGET,
        ),
        (idx::W_CELL, idx::R_CELL, None, idx::B_CELL, idx::LN_CELL),
        (
            idx::W_OUTPUT,
            idx::R_OUTPUT,
            Some(idx::P_OUTPUT),
            idx::B_OUTPUT,
            idx::LN_OUTPUT,
        ),
    ];
    for (k, &(wi, ri, pi, bi, li)) in weights.iter().enumerate() {
        if k == 0 && lstm.cifg {
            continue;
        }
        let w = ctx.input(wi)?;
        let r = ctx.input(ri)?;
        let (w_scale, _) = per_tensor_scale(&w, "input weights")?;
        let (r_scale, _) = per_tensor_scale(&r, "recurrent weights")?;
        let w_data = i8s(constant(&w, "input weights")?);
        let r_data = i8s(constant(&r, "recurrent weights")?);
        let bias = bias_of(bi)?;
        let layer_norm = if lstm.layer_norm {
            let t = ctx.input(li)?;
            let (ln_scale, _) = per_tensor_scale(&t, "layer-norm coefficients")?;
            Some(LayerNorm {
                weights: i16s(constant(&t, "layer-norm coefficients")?),
                bias: bias.clone().unwrap_or_else(|| vec![0; n_cell]),
                scale: scale_of(f64::from(ln_scale)),
                variance_guard: ((10000.0 * ln_scale) as i32).max(1),
            })
        } else {
            None
        };
        let peephole = match pi {
            Some(pi) if lstm.peephole => {
                let t = ctx.input(pi)?;
                let (p_scale, _) = per_tensor_scale(&t, "peephole weights")?;
                let eff = (cell_pow * f64::from(p_scale) / f64::from(gate_scale[k])) as f32;
                Some((
                    i16s(constant(&t, "peephole weights")?),
                    scale_of(f64::from(eff)),
                ))
            }
            _ => None,
        };
        // Under layer norm the bias is added after normalising, not to the matmul.
        let matmul_bias = if lstm.layer_norm {
            None
        } else {
            bias.as_deref()
        };
        gates[k] = Some(Gate {
            w_bias: folded_bias(&w_data, n_input, matmul_bias, -input_zp),
            w: w_data,
            w_scale: scale_of(f64::from(w_scale * input_scale / gate_scale[k])),
            r_bias: folded_bias(&r_data, n_output, None, -output_state_zp),
            r: r_data,
            r_scale: scale_of(f64::from(r_scale * output_state_scale / gate_scale[k])),
            peephole,
            layer_norm,
        });
    }
    let projection = if lstm.projection {
        let w = ctx.input(idx::PROJ_W)?;
        let (p_scale, _) = per_tensor_scale(&w, "projection weights")?;
        let data = i8s(constant(&w, "projection weights")?);
        let bias = bias_of(idx::PROJ_B)?;
        Some(Projection {
            bias: folded_bias(&data, n_cell, bias.as_deref(), hidden_zp),
            w: data,
            scale: scale_of(f64::from(p_scale * hidden_scale / output_state_scale)),
            clip: proj_clip,
        })
    } else {
        None
    };
    let two15 = 2f64.powi(-15);
    let hidden = (two15 / f64::from(hidden_scale) * two15) as f32;
    let shape = lstm.output_shape();
    Ok(PreparedKernel::new(
        vec![shape],
        IntegerLstm {
            lstm,
            gates,
            projection,
            cell_scale,
            cell_clip,
            hidden_scale: scale_of(f64::from(hidden)),
            hidden_zp,
            output_state_zp,
            scratch: Reusable::new(Scratch::new(n_cell)?),
        },
    ))
}

/// `out[r] = sat16(out[r] + mbqm(bias[r] + Σ w[r]·x, scale))` (TFLite's
/// MatrixBatchVectorMultiplyAccumulate into an int16 gate, output zero point 0).
fn matmul_acc(w: &[i8], bias: &[i32], scale: Scale, x: &[i8], out: &mut [i16]) {
    let cols = x.len();
    for ((o, row), &b) in out.iter_mut().zip(w.chunks_exact(cols.max(1))).zip(bias) {
        let dot = row.iter().zip(x).fold(b, |acc, (&a, &v)| {
            acc.wrapping_add(i32::from(a) * i32::from(v))
        });
        let v = mbqm(dot, scale.0, scale.1).saturating_add(i32::from(*o));
        *o = v.clamp(-32768, 32767) as i16;
    }
}

/// TFLite's integer layer norm (ApplyLayerNorm) of one gate row, in place.
fn layer_norm(v: &mut [i16], ln: &LayerNorm) {
    const TWO_TO_20: i64 = 1 << 20;
    let n = v.len() as i64;
    let (mut sum, mut sum_sq) = (0i64, 0i64);
    for &x in v.iter() {
        let x = i64::from(x);
        sum += x;
        sum_sq += x * x;
    }
    let mean = (sum * 1024 / n) as i32;
    let temp = TWO_TO_20 / n;
    let variance = sum_sq * temp - i64::from(mean) * i64::from(mean);
    let mut variance2 = (variance / TWO_TO_20) as i32;
    if variance2 < 1 {
        variance2 = ln.variance_guard;
    }
    let (inv_a, inv_b) = inv_sqrt_quantized_multiplier_exp(variance2, -1);
    for ((x, &w), &b) in v.iter_mut().zip(&ln.weights).zip(&ln.bias) {
        let shifted = 1024i32.wrapping_mul(i32::from(*x)).wrapping_sub(mean);
        let rescaled = mbqm(shifted, inv_a, inv_b);
        // TFLite multiplies and adds in 32 bits before widening.
        let val3 = i64::from(rescaled.wrapping_mul(i32::from(w)).wrapping_add(b));
        let val4 = ((if val3 > 0 { val3 + 512 } else { val3 - 512 }) / 1024) as i32;
        let val5 = mbqm(val4, ln.scale.0, ln.scale.1 + 12);
        *x = val5.clamp(-32768, 32767) as i16;
    }
}

/// The Q2.13 · Q0.15 product of two int16 vectors, rounded down by `shift` bits.
fn mul_shift(a: i16, b: i16, shift: i32) -> i16 {
    rounding_divide_by_pot(i32::from(a) * i32::from(b), shift) as i16
}

/// Per-row scratch for one time step, allocated once per eval.
struct Scratch {
    gates: [Vec<i16>; 4],
    hidden: Vec<i16>,
    hidden_q: Vec<i8>,
}

impl Scratch {
    fn new(n_cell: usize) -> Result<Scratch, KernelError> {
        Ok(Scratch {
            gates: [
                zeroed(n_cell, "gates")?,
                zeroed(n_cell, "gates")?,
                zeroed(n_cell, "gates")?,
                zeroed(n_cell, "gates")?,
            ],
            hidden: zeroed(n_cell, "hidden state")?,
            hidden_q: zeroed(n_cell, "hidden state")?,
        })
    }

    fn bytes(n_cell: usize) -> usize {
        11 * n_cell
    }
}

impl IntegerLstm {
    /// One gate of one batch row: the two matmuls, peephole, layer norm, activation.
    fn gate(&self, k: usize, x: &[i8], h: &[i8], c: &[i16], out: &mut [i16]) {
        let Some(g) = &self.gates[k] else { return };
        out.fill(0);
        matmul_acc(&g.w, &g.w_bias, g.w_scale, x, out);
        matmul_acc(&g.r, &g.r_bias, g.r_scale, h, out);
        if let Some((p, s)) = &g.peephole {
            for ((o, &p), &c) in out.iter_mut().zip(p).zip(c) {
                let prod = mbqm(i32::from(p) * i32::from(c), s.0, s.1);
                *o = prod.saturating_add(i32::from(*o)).clamp(-32768, 32767) as i16;
            }
        }
        if let Some(ln) = &g.layer_norm {
            layer_norm(out, ln);
        }
        // The cell gate is always tanh in the integer kernel; the others are sigmoid.
        for v in out.iter_mut() {
            *v = if k == 2 {
                fixedpoint::tanh(*v, 3)
            } else {
                fixedpoint::logistic(*v, 3)
            };
        }
    }

    /// One time step of one batch row: updates `h` and `c`.
    fn step(&self, x: &[i8], h: &mut [i8], c: &mut [i16], s: &mut Scratch) {
        let [ig, fg, cg, og] = &mut s.gates;
        self.gate(0, x, h, c, ig);
        self.gate(1, x, h, c, fg);
        self.gate(2, x, h, c, cg);
        let shift = 30 + self.cell_scale;
        for k in 0..c.len() {
            let kept = mul_shift(fg[k], c[k], 15);
            let input_gate = if self.lstm.cifg {
                i16::MAX.wrapping_sub(fg[k])
            } else {
                ig[k]
            };
            let added = mul_shift(input_gate, cg[k], shift);
            let mut v = (i32::from(kept) + i32::from(added)).clamp(-32768, 32767) as i16;
            if self.cell_clip > 0 {
                v = v.clamp(-self.cell_clip, self.cell_clip);
            }
            c[k] = v;
        }
        self.gate(3, x, h, c, og);
        let tanh_bits = 15 + self.cell_scale;
        let (ha, hb) = self.hidden_scale;
        match &self.projection {
            Some(p) => {
                for k in 0..c.len() {
                    s.hidden[k] = fixedpoint::tanh(c[k], tanh_bits);
                    let v =
                        mbqm(i32::from(og[k]) * i32::from(s.hidden[k]), ha, hb) - self.hidden_zp;
                    s.hidden_q[k] = v.clamp(-128, 127) as i8;
                }
                let cols = c.len();
                for ((o, row), &b) in h.iter_mut().zip(p.w.chunks_exact(cols)).zip(&p.bias) {
                    let dot = row.iter().zip(&s.hidden_q).fold(b, |acc, (&w, &v)| {
                        acc.wrapping_add(i32::from(w) * i32::from(v))
                    });
                    let mut v = (mbqm(dot, p.scale.0, p.scale.1) + self.output_state_zp)
                        .clamp(-128, 127) as i8;
                    if p.clip > 0 {
                        v = v.clamp(-p.clip, p.clip);
                    }
                    *o = v;
                }
            }
            None => {
                for k in 0..c.len() {
                    let t = fixedpoint::tanh(c[k], tanh_bits);
                    let v = mbqm(i32::from(og[k]) * i32::from(t), ha, hb) + self.hidden_zp;
                    h[k] = v.clamp(-128, 127) as i8;
                }
            }
        }
    }
}

impl OpKernel for IntegerLstm {
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
            .i8s()?;
        let [out, h_state, c_state] = outputs else {
            return Err(KernelError::invalid(
                "LSTM expects its output and both state tensors",
            ));
        };
        let y = out.i8s_mut()?;
        let h_all = h_state.i8s_mut()?;
        let c_all = c_state.i16s_mut()?;
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
            || Scratch::new(nc),
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
        "lstm/int8x8_16"
    }

    fn memory_bytes(&self) -> usize {
        // The weight copies, folded biases and scratch made at prepare.
        let gates: usize = self
            .gates
            .iter()
            .flatten()
            .map(|g| {
                g.w.len()
                    + g.r.len()
                    + 4 * (g.w_bias.len() + g.r_bias.len())
                    + g.peephole.as_ref().map_or(0, |(p, _)| 2 * p.len())
                    + g.layer_norm
                        .as_ref()
                        .map_or(0, |l| 2 * l.weights.len() + 4 * l.bias.len())
            })
            .sum();
        gates
            + self
                .projection
                .as_ref()
                .map_or(0, |p| p.w.len() + 4 * p.bias.len())
            + Scratch::bytes(self.lstm.n_cell)
    }
}
