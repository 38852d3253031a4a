//! UNIDIRECTIONAL_SEQUENCE_LSTM, float32, with every optional part of LiteRT's kernel:
//! CIFG (coupled input and forget gates, when the input-gate weights are omitted),
//! peephole connections, projection (with optional bias), layer normalisation, cell and
//! projection clipping, time-major or batch-major input.
//!
//! The hidden and cell states (inputs 18 and 19) are variable tensors: the kernel reads
//! and updates them in place through [`OpKernel::mutated_inputs`], so they carry over
//! from one invoke to the next exactly as in LiteRT. Each gate is computed as LiteRT
//! does: bias (or zero under layer norm) + W·x + R·h (+ peephole ⊙ c), then layer norm
//! scaled by its coefficients plus the bias, then the activation.

use crate::registry::OpDescriptor;
use switchyard_interpreter::BuiltinOp;
use switchyard_interpreter::{
    Activation, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorMeta,
    TensorView, TensorViewMut, ops::LstmOptions,
};

/// UNIDIRECTIONAL_SEQUENCE_LSTM.
pub const DESCRIPTORS: &[OpDescriptor] =
    &[OpDescriptor::new(BuiltinOp::UnidirectionalSequenceLstm, prepare).work(crate::work::lstm)];

mod hybrid;
mod integer;

/// Input positions (the schema's order).
pub(crate) mod idx {
    pub const INPUT: usize = 0;
    pub const W_INPUT: usize = 1;
    pub const W_FORGET: usize = 2;
    pub const W_CELL: usize = 3;
    pub const W_OUTPUT: usize = 4;
    pub const R_INPUT: usize = 5;
    pub const R_FORGET: usize = 6;
    pub const R_CELL: usize = 7;
    pub const R_OUTPUT: usize = 8;
    pub const P_INPUT: usize = 9;
    pub const P_FORGET: usize = 10;
    pub const P_OUTPUT: usize = 11;
    pub const B_INPUT: usize = 12;
    pub const B_FORGET: usize = 13;
    pub const B_CELL: usize = 14;
    pub const B_OUTPUT: usize = 15;
    pub const PROJ_W: usize = 16;
    pub const PROJ_B: usize = 17;
    pub const OUTPUT_STATE: usize = 18;
    pub const CELL_STATE: usize = 19;
    pub const LN_INPUT: usize = 20;
    pub const LN_FORGET: usize = 21;
    pub const LN_CELL: usize = 22;
    pub const LN_OUTPUT: usize = 23;
}

/// Fixed shape and structure of one LSTM node (the float kernel itself; the hybrid
/// and integer kernels hold one).
#[derive(Clone, Debug)]
pub(crate) struct Lstm {
    pub time_major: bool,
    pub max_time: usize,
    pub n_batch: usize,
    pub n_input: usize,
    pub n_cell: usize,
    pub n_output: usize,
    pub cifg: bool,
    pub peephole: bool,
    pub projection: bool,
    pub projection_bias: bool,
    pub layer_norm: bool,
    pub activation: Activation,
    pub cell_clip: f32,
    pub proj_clip: f32,
    pub mutated: [usize; 2],
}

fn shape_err(what: &str, t: &TensorMeta<'_>, want: &[usize]) -> KernelError {
    KernelError::shape(format!(
        "{what} ({}) must have shape {want:?}, has {:?}",
        t.name, t.shape
    ))
}

/// The dtype each role of an LSTM's tensors has in one kind of LSTM (float, hybrid,
/// integer).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Types {
    pub kind: &'static str,
    pub weights: DType,
    pub peephole: DType,
    pub bias: DType,
    pub layer_norm: DType,
    pub output_state: DType,
    pub cell_state: DType,
    pub output: DType,
}

const FLOAT: Types = Types {
    kind: "float32",
    weights: DType::F32,
    peephole: DType::F32,
    bias: DType::F32,
    layer_norm: DType::F32,
    output_state: DType::F32,
    cell_state: DType::F32,
    output: DType::F32,
};

/// An optional tensor of exactly `shape` and `dtype`; whether it is present.
fn check(
    ctx: &PrepareCtx<'_>,
    i: usize,
    what: &str,
    shape: &[usize],
    dtype: DType,
    kind: &str,
) -> Result<bool, KernelError> {
    let Some(t) = ctx.optional_input(i) else {
        return Ok(false);
    };
    if t.dtype != dtype {
        return Err(KernelError::unsupported(format!(
            "{what} ({}) of type {} in a {kind} LSTM, which takes {dtype}",
            t.name, t.dtype
        )));
    }
    if t.shape != shape {
        return Err(shape_err(what, &t, shape));
    }
    Ok(true)
}

fn require(present: bool, what: &str) -> Result<(), KernelError> {
    if present {
        Ok(())
    } else {
        Err(KernelError::invalid(format!("missing {what}")))
    }
}

/// The options of an LSTM node.
pub(crate) fn options(ctx: &PrepareCtx<'_>) -> Result<LstmOptions, KernelError> {
    if ctx.inputs.len() != 20 && ctx.inputs.len() != 24 {
        return Err(KernelError::invalid(format!(
            "expects 20 or 24 inputs, has {}",
            ctx.inputs.len()
        )));
    }
    if ctx.outputs.len() != 1 {
        return Err(KernelError::invalid(format!(
            "expects 1 output, has {}",
            ctx.outputs.len()
        )));
    }
    let opts: LstmOptions = match &ctx.node.options {
        OpOptions::Lstm(o) => o.clone(),
        _ => {
            return Err(KernelError::invalid(
                "UNIDIRECTIONAL_SEQUENCE_LSTM without its options",
            ));
        }
    };
    if !(opts.cell_clip >= 0.0 && opts.proj_clip >= 0.0) {
        return Err(KernelError::invalid(format!(
            "clips must be non-negative, are {} and {}",
            opts.cell_clip, opts.proj_clip
        )));
    }
    Ok(opts)
}

/// Validates the node's shapes, which optional parts it has and every tensor's dtype
/// (by `types`), and returns its structure. Shared by the float, hybrid and integer
/// kernels.
pub(crate) fn structure(
    ctx: &PrepareCtx<'_>,
    opts: &LstmOptions,
    types: &Types,
) -> Result<Lstm, KernelError> {
    let kind = types.kind;
    let x = ctx.input(idx::INPUT)?;
    let &[d0, d1, n_input] = x.shape else {
        return Err(KernelError::shape(format!(
            "input must have rank 3, has shape {:?}",
            x.shape
        )));
    };
    let (max_time, n_batch) = if opts.time_major { (d0, d1) } else { (d1, d0) };
    let w_forget = ctx.input(idx::W_FORGET)?;
    let &[n_cell, _] = w_forget.shape else {
        return Err(shape_err(
            "input-to-forget weights",
            &w_forget,
            &[0, n_input],
        ));
    };
    let r_output = ctx.input(idx::R_OUTPUT)?;
    let &[_, n_output] = r_output.shape else {
        return Err(shape_err(
            "recurrent-to-output weights",
            &r_output,
            &[n_cell, 0],
        ));
    };
    if n_cell == 0 || n_output == 0 {
        return Err(KernelError::shape("LSTM with no cells or outputs"));
    }
    let wx = [n_cell, n_input];
    let rh = [n_cell, n_output];
    let vc = [n_cell];
    let c = |i: usize, what: &str, shape: &[usize], dtype: DType| {
        check(ctx, i, what, shape, dtype, kind)
    };
    for (i, what) in [
        (idx::W_FORGET, "input-to-forget weights"),
        (idx::W_CELL, "input-to-cell weights"),
        (idx::W_OUTPUT, "input-to-output weights"),
    ] {
        require(c(i, what, &wx, types.weights)?, what)?;
    }
    for (i, what) in [
        (idx::R_FORGET, "recurrent-to-forget weights"),
        (idx::R_CELL, "recurrent-to-cell weights"),
        (idx::R_OUTPUT, "recurrent-to-output weights"),
    ] {
        require(c(i, what, &rh, types.weights)?, what)?;
    }
    for (i, what) in [
        (idx::B_FORGET, "forget gate bias"),
        (idx::B_CELL, "cell gate bias"),
        (idx::B_OUTPUT, "output gate bias"),
    ] {
        require(c(i, what, &vc, types.bias)?, what)?;
    }
    let w_input = c(idx::W_INPUT, "input-to-input weights", &wx, types.weights)?;
    let r_input = c(
        idx::R_INPUT,
        "recurrent-to-input weights",
        &rh,
        types.weights,
    )?;
    let b_input = c(idx::B_INPUT, "input gate bias", &vc, types.bias)?;
    if w_input != r_input || w_input != b_input {
        return Err(KernelError::invalid(
            "input-gate weights, recurrent weights and bias must be all present or all absent (CIFG)",
        ));
    }
    let cifg = !w_input;
    let p_input = c(idx::P_INPUT, "cell-to-input peephole", &vc, types.peephole)?;
    let p_forget = c(
        idx::P_FORGET,
        "cell-to-forget peephole",
        &vc,
        types.peephole,
    )?;
    let p_output = c(
        idx::P_OUTPUT,
        "cell-to-output peephole",
        &vc,
        types.peephole,
    )?;
    let peephole = p_forget || p_output;
    if p_forget != p_output || (peephole && !cifg && !p_input) || (p_input && (cifg || !peephole)) {
        return Err(KernelError::invalid(
            "peephole weights must be given for every gate that exists, or for none",
        ));
    }
    let projection = c(
        idx::PROJ_W,
        "projection weights",
        &[n_output, n_cell],
        types.weights,
    )?;
    let projection_bias = c(idx::PROJ_B, "projection bias", &[n_output], types.bias)?;
    if projection_bias && !projection {
        return Err(KernelError::invalid(
            "projection bias without projection weights",
        ));
    }
    if !projection && n_output != n_cell {
        return Err(KernelError::shape(format!(
            "without projection the output size ({n_output}) must equal the cell count ({n_cell})"
        )));
    }
    let ln = types.layer_norm;
    let (ln_i, ln_f, ln_c, ln_o) = if ctx.inputs.len() == 24 {
        (
            c(idx::LN_INPUT, "input layer-norm coefficients", &vc, ln)?,
            c(idx::LN_FORGET, "forget layer-norm coefficients", &vc, ln)?,
            c(idx::LN_CELL, "cell layer-norm coefficients", &vc, ln)?,
            c(idx::LN_OUTPUT, "output layer-norm coefficients", &vc, ln)?,
        )
    } else {
        (false, false, false, false)
    };
    let layer_norm = ln_f;
    if ln_f != ln_c || ln_f != ln_o || ln_i != (layer_norm && !cifg) {
        return Err(KernelError::invalid(
            "layer-norm coefficients must be given for every gate that exists, or for none",
        ));
    }
    for (i, what, shape, dtype) in [
        (
            idx::OUTPUT_STATE,
            "output state",
            [n_batch, n_output],
            types.output_state,
        ),
        (
            idx::CELL_STATE,
            "cell state",
            [n_batch, n_cell],
            types.cell_state,
        ),
    ] {
        let t = ctx.input(i)?;
        if t.dtype != dtype {
            return Err(KernelError::unsupported(format!(
                "{what} ({}) of type {} in a {kind} LSTM, which takes {dtype}",
                t.name, t.dtype
            )));
        }
        if t.shape != shape {
            return Err(shape_err(what, &t, &shape));
        }
        if t.data.is_some() {
            return Err(KernelError::invalid(format!(
                "{what} ({}) must be a variable tensor, not a constant",
                t.name
            )));
        }
    }
    let out = ctx.output(0)?;
    if out.dtype != types.output {
        return Err(KernelError::dtype(types.kind, out.dtype));
    }
    Ok(Lstm {
        time_major: opts.time_major,
        max_time,
        n_batch,
        n_input,
        n_cell,
        n_output,
        cifg,
        peephole,
        projection,
        projection_bias,
        layer_norm,
        activation: opts.activation,
        cell_clip: opts.cell_clip,
        proj_clip: opts.proj_clip,
        mutated: [idx::OUTPUT_STATE, idx::CELL_STATE],
    })
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let opts = options(ctx)?;
    let x = ctx.input(idx::INPUT)?;
    let weights = ctx.input(idx::W_FORGET)?.dtype;
    match (x.dtype, weights) {
        (DType::I8, _) => return integer::prepare(ctx, &opts),
        (DType::F32, DType::I8) => return hybrid::prepare(ctx, &opts),
        (DType::F32, _) => {}
        (other, _) => {
            return Err(KernelError::unsupported(format!(
                "LSTM input of type {other}: float32 (with float32 or int8 weights) and int8 are supported"
            )));
        }
    }
    check_activation(&opts)?;
    let lstm = structure(ctx, &opts, &FLOAT)?;
    let shape = lstm.output_shape();
    let scratch = Reusable::new(Scratch::new(lstm.n_cell)?);
    Ok(PreparedKernel::new(
        vec![shape],
        FloatLstm { lstm, scratch },
    ))
}

/// The cell activations a float or hybrid LSTM accepts.
pub(crate) fn check_activation(opts: &LstmOptions) -> Result<(), KernelError> {
    if matches!(opts.activation, Activation::None | Activation::SignBit) {
        // LiteRT leaves the cell output unwritten for "none"; no real model uses it.
        return Err(KernelError::unsupported(format!(
            "LSTM activation {:?}",
            opts.activation
        )));
    }
    Ok(())
}

impl Lstm {
    /// The output's shape: the input's, with the last dimension the output size.
    pub(crate) fn output_shape(&self) -> Vec<usize> {
        let (d0, d1) = if self.time_major {
            (self.max_time, self.n_batch)
        } else {
            (self.n_batch, self.max_time)
        };
        vec![d0, d1, self.n_output]
    }

    /// Row of (time `t`, batch `b`) in the input and output.
    pub(crate) fn row(&self, t: usize, b: usize) -> usize {
        if self.time_major {
            t * self.n_batch + b
        } else {
            b * self.max_time + t
        }
    }
}

/// `n` default values, or an error where the allocator refuses (a model's sizes are not
/// trusted to fit).
pub(crate) fn zeroed<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>, KernelError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        KernelError::invalid(format!("cannot allocate the LSTM's {what} ({n} values)"))
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// Per-eval scratch made once at prepare, so an invoke allocates nothing. A second
/// session evaluating the same plan at the same moment finds it taken and makes its own
/// rather than waiting.
pub(crate) struct Reusable<S>(std::sync::Mutex<S>);

impl<S> Reusable<S> {
    pub(crate) fn new(s: S) -> Self {
        Reusable(std::sync::Mutex::new(s))
    }

    pub(crate) fn with<R>(
        &self,
        make: impl FnOnce() -> Result<S, KernelError>,
        f: impl FnOnce(&mut S) -> R,
    ) -> Result<R, KernelError> {
        use std::sync::TryLockError;
        match self.0.try_lock() {
            Ok(mut s) => Ok(f(&mut s)),
            // Every step overwrites the scratch before reading it: a panic mid-eval left
            // nothing that matters.
            Err(TryLockError::Poisoned(p)) => Ok(f(&mut p.into_inner())),
            Err(TryLockError::WouldBlock) => Ok(f(&mut make()?)),
        }
    }
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `out[r] += Σ_c m[r][c] · v[c]` for a row-major `rows × cols` matrix.
fn mat_vec_acc(m: &[f32], v: &[f32], out: &mut [f32]) {
    let cols = v.len();
    if cols == 0 {
        return;
    }
    for (o, row) in out.iter_mut().zip(m.chunks_exact(cols)) {
        *o += dot(row, v);
    }
}

/// Σ a[i]·b[i] over 16 independent partial sums: a single running sum is one long
/// chain of dependent adds that cannot vectorise (float addition is not reassociated).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..L {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Normalises `v` to zero mean and unit variance (LiteRT's MeanStddevNormalization).
pub(crate) fn normalize(v: &mut [f32]) {
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + 1e-8).sqrt();
    v.iter_mut().for_each(|x| *x = (*x - mean) * inv);
}

/// The float weights of one node, looked up once per eval.
struct Weights<'a> {
    w: [Option<&'a [f32]>; 4],
    r: [Option<&'a [f32]>; 4],
    p: [Option<&'a [f32]>; 3],
    b: [Option<&'a [f32]>; 4],
    ln: [Option<&'a [f32]>; 4],
    proj_w: Option<&'a [f32]>,
    proj_b: Option<&'a [f32]>,
}

fn opt_f32<'a>(
    inputs: &[Option<TensorView<'a>>],
    i: usize,
) -> Result<Option<&'a [f32]>, KernelError> {
    inputs
        .get(i)
        .and_then(|t| t.as_ref())
        .map(|t| t.f32s())
        .transpose()
}

impl Lstm {
    /// One gate for one batch row: (bias | 0) + W·x + R·h (+ p ⊙ c), layer norm, activation.
    #[allow(clippy::too_many_arguments)]
    fn gate(
        &self,
        w: &[f32],
        r: &[f32],
        peep: Option<&[f32]>,
        bias: &[f32],
        ln: Option<&[f32]>,
        x: &[f32],
        h: &[f32],
        c: &[f32],
        act: impl Fn(f32) -> f32,
        out: &mut [f32],
    ) {
        if ln.is_some() {
            out.fill(0.0);
        } else {
            out.copy_from_slice(bias);
        }
        mat_vec_acc(w, x, out);
        mat_vec_acc(r, h, out);
        if let Some(p) = peep {
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

    /// One time step of one batch row: updates `h` and `c` in place.
    fn step(
        &self,
        wt: &Weights<'_>,
        x: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        scratch: &mut Scratch,
    ) {
        let act = |v: f32| self.activation.apply(v);
        let missing: &[f32] = &[];
        let Scratch { i, f, g, o, hidden } = scratch;
        if !self.cifg {
            self.gate(
                wt.w[0].unwrap_or(missing),
                wt.r[0].unwrap_or(missing),
                wt.p[0],
                wt.b[0].unwrap_or(missing),
                wt.ln[0],
                x,
                h,
                c,
                sigmoid,
                i,
            );
        }
        self.gate(
            wt.w[1].unwrap_or(missing),
            wt.r[1].unwrap_or(missing),
            wt.p[1],
            wt.b[1].unwrap_or(missing),
            wt.ln[1],
            x,
            h,
            c,
            sigmoid,
            f,
        );
        self.gate(
            wt.w[2].unwrap_or(missing),
            wt.r[2].unwrap_or(missing),
            None,
            wt.b[2].unwrap_or(missing),
            wt.ln[2],
            x,
            h,
            c,
            act,
            g,
        );
        for k in 0..self.n_cell {
            let input_gate = if self.cifg { 1.0 - f[k] } else { i[k] };
            let mut v = f[k] * c[k] + g[k] * input_gate;
            if self.cell_clip > 0.0 {
                v = v.clamp(-self.cell_clip, self.cell_clip);
            }
            c[k] = v;
        }
        // The output gate's peephole looks at the updated cell state.
        self.gate(
            wt.w[3].unwrap_or(missing),
            wt.r[3].unwrap_or(missing),
            wt.p[2],
            wt.b[3].unwrap_or(missing),
            wt.ln[3],
            x,
            h,
            c,
            sigmoid,
            o,
        );
        for k in 0..self.n_cell {
            hidden[k] = o[k] * act(c[k]);
        }
        match wt.proj_w {
            Some(pw) => {
                match wt.proj_b {
                    Some(pb) => h.copy_from_slice(pb),
                    None => h.fill(0.0),
                }
                mat_vec_acc(pw, hidden, h);
                if self.proj_clip > 0.0 {
                    h.iter_mut()
                        .for_each(|v| *v = v.clamp(-self.proj_clip, self.proj_clip));
                }
            }
            None => h.copy_from_slice(hidden),
        }
    }
}

struct Scratch {
    i: Vec<f32>,
    f: Vec<f32>,
    g: Vec<f32>,
    o: Vec<f32>,
    hidden: Vec<f32>,
}

impl Scratch {
    fn new(n_cell: usize) -> Result<Scratch, KernelError> {
        Ok(Scratch {
            i: zeroed(n_cell, "gates")?,
            f: zeroed(n_cell, "gates")?,
            g: zeroed(n_cell, "gates")?,
            o: zeroed(n_cell, "gates")?,
            hidden: zeroed(n_cell, "cell output")?,
        })
    }
}

/// The float kernel: the node's structure and its reusable scratch.
struct FloatLstm {
    lstm: Lstm,
    scratch: Reusable<Scratch>,
}

impl OpKernel for FloatLstm {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        self.lstm.eval_float(inputs, outputs, &self.scratch)
    }

    fn mutated_inputs(&self) -> &[usize] {
        &self.lstm.mutated
    }

    fn name(&self) -> &str {
        "lstm/f32"
    }

    fn memory_bytes(&self) -> usize {
        5 * 4 * self.lstm.n_cell
    }
}

impl Lstm {
    fn eval_float(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
        scratch: &Reusable<Scratch>,
    ) -> Result<(), KernelError> {
        let x = inputs
            .get(idx::INPUT)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| KernelError::invalid("missing LSTM input"))?
            .f32s()?;
        let w = |i| opt_f32(inputs, i);
        let wt = Weights {
            w: [
                w(idx::W_INPUT)?,
                w(idx::W_FORGET)?,
                w(idx::W_CELL)?,
                w(idx::W_OUTPUT)?,
            ],
            r: [
                w(idx::R_INPUT)?,
                w(idx::R_FORGET)?,
                w(idx::R_CELL)?,
                w(idx::R_OUTPUT)?,
            ],
            p: [w(idx::P_INPUT)?, w(idx::P_FORGET)?, w(idx::P_OUTPUT)?],
            b: [
                w(idx::B_INPUT)?,
                w(idx::B_FORGET)?,
                w(idx::B_CELL)?,
                w(idx::B_OUTPUT)?,
            ],
            ln: if self.layer_norm {
                [
                    w(idx::LN_INPUT)?,
                    w(idx::LN_FORGET)?,
                    w(idx::LN_CELL)?,
                    w(idx::LN_OUTPUT)?,
                ]
            } else {
                [None; 4]
            },
            proj_w: if self.projection {
                w(idx::PROJ_W)?
            } else {
                None
            },
            proj_b: if self.projection_bias {
                w(idx::PROJ_B)?
            } else {
                None
            },
        };
        let (nc, ni, no) = (self.n_cell, self.n_input, self.n_output);
        let sized = |v: &[Option<&[f32]>], len: usize| v.iter().flatten().all(|w| w.len() == len);
        if !sized(&wt.w, nc * ni)
            || !sized(&wt.r, nc * no)
            || !sized(&wt.p, nc)
            || !sized(&wt.b, nc)
            || !sized(&wt.ln, nc)
            || !sized(&[wt.proj_w], no * nc)
            || !sized(&[wt.proj_b], no)
            || [1, 2, 3]
                .iter()
                .any(|&k| wt.w[k].is_none() || wt.r[k].is_none() || wt.b[k].is_none())
            || (!self.cifg && (wt.w[0].is_none() || wt.r[0].is_none() || wt.b[0].is_none()))
        {
            return Err(KernelError::shape(
                "LSTM weights do not match the prepared shapes",
            ));
        }
        let [out, h_state, c_state] = outputs else {
            return Err(KernelError::invalid(
                "LSTM expects its output and both state tensors",
            ));
        };
        let y = out.f32s_mut()?;
        let h_all = h_state.f32s_mut()?;
        let c_all = c_state.f32s_mut()?;
        let (nb, nt, ni, no, nc) = (
            self.n_batch,
            self.max_time,
            self.n_input,
            self.n_output,
            self.n_cell,
        );
        if x.len() != nb * nt * ni
            || y.len() != nb * nt * no
            || h_all.len() != nb * no
            || c_all.len() != nb * nc
        {
            return Err(KernelError::shape(
                "LSTM buffers do not match the prepared shapes",
            ));
        }
        scratch.with(
            || Scratch::new(nc),
            |scratch| {
                for b in 0..nb {
                    let h = &mut h_all[b * no..(b + 1) * no];
                    let c = &mut c_all[b * nc..(b + 1) * nc];
                    for t in 0..nt {
                        let row = self.row(t, b);
                        self.step(&wt, &x[row * ni..(row + 1) * ni], h, c, scratch);
                        y[row * no..(row + 1) * no].copy_from_slice(h);
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{BuiltinOp, OpKind, Tensor};
    use switchyard_testkit::single_op::{IntegerLstm, integer_lstm};
    use switchyard_testkit::{Rng, assert_matches_litert_seq, random_tensor};

    use super::*;
    use crate::ops::testing::{prepare_error, resolvers};

    #[derive(Clone)]
    struct Case {
        batch: usize,
        time: usize,
        n_input: usize,
        n_cell: usize,
        /// Some(n_output) adds a projection to that size.
        projection: Option<usize>,
        projection_bias: bool,
        cifg: bool,
        peephole: bool,
        layer_norm: bool,
        time_major: bool,
        activation: Activation,
        cell_clip: f32,
        proj_clip: f32,
        /// Writes only the 20 inputs of older models.
        twenty_inputs: bool,
        /// Some(asymmetric): a hybrid LSTM (int8 weights, one scale each) quantizing its
        /// inputs asymmetrically or not.
        hybrid: Option<bool>,
    }

    fn base() -> Case {
        Case {
            batch: 2,
            time: 3,
            n_input: 4,
            n_cell: 5,
            projection: None,
            projection_bias: false,
            cifg: false,
            peephole: false,
            layer_norm: false,
            time_major: false,
            activation: Activation::Tanh,
            cell_clip: 0.0,
            proj_clip: 0.0,
            twenty_inputs: false,
            hybrid: None,
        }
    }

    fn n_output(c: &Case) -> usize {
        c.projection.unwrap_or(c.n_cell)
    }

    fn input_shape(c: &Case) -> [usize; 3] {
        if c.time_major {
            [c.time, c.batch, c.n_input]
        } else {
            [c.batch, c.time, c.n_input]
        }
    }

    fn model(c: &Case) -> Vec<u8> {
        let mut rng = Rng::new(42);
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let no = n_output(c);
        let nc = c.n_cell;
        let hybrid = c.hybrid;
        // Weights (not biases or layer-norm coefficients) are int8 in a hybrid LSTM.
        let mut weight = |sg: &mut switchyard_interpreter::builder::SubgraphBuilder,
                          name: &str,
                          shape: &[usize],
                          lo: f32,
                          hi: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
            let quantized = hybrid.is_some()
                && !name.starts_with('b')
                && !name.starts_with("ln")
                && name != "proj_b";
            if quantized {
                let scale = hi.abs().max(lo.abs()) / 127.0;
                let q: Vec<u8> = v
                    .iter()
                    .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8)
                    .collect();
                let t = sg.constant(name, DType::I8, shape, q);
                sg.set_quant(t, switchyard_interpreter::Quant::per_tensor(scale, 0));
                return Some(t);
            }
            Some(sg.constant_f32(name, shape, &v))
        };
        let x = sg.tensor("x", DType::F32, &input_shape(c));
        let mut ins: Vec<Option<usize>> = vec![Some(x)];
        for gate in ["input", "forget", "cell", "output"] {
            ins.push(if gate == "input" && c.cifg {
                None
            } else {
                weight(sg, &format!("w_{gate}"), &[nc, c.n_input], -0.6, 0.6)
            });
        }
        for gate in ["input", "forget", "cell", "output"] {
            ins.push(if gate == "input" && c.cifg {
                None
            } else {
                weight(sg, &format!("r_{gate}"), &[nc, no], -0.6, 0.6)
            });
        }
        for gate in ["input", "forget", "output"] {
            ins.push(if !c.peephole || (gate == "input" && c.cifg) {
                None
            } else {
                weight(sg, &format!("p_{gate}"), &[nc], -0.5, 0.5)
            });
        }
        for gate in ["input", "forget", "cell", "output"] {
            ins.push(if gate == "input" && c.cifg {
                None
            } else {
                weight(sg, &format!("b_{gate}"), &[nc], -0.3, 0.3)
            });
        }
        ins.push(
            c.projection
                .and_then(|_| weight(sg, "proj_w", &[no, nc], -0.6, 0.6)),
        );
        ins.push(if c.projection_bias {
            weight(sg, "proj_b", &[no], -0.2, 0.2)
        } else {
            None
        });
        let h = sg.tensor("h_state", DType::F32, &[c.batch, no]);
        sg.set_variable(h);
        let cs = sg.tensor("c_state", DType::F32, &[c.batch, nc]);
        sg.set_variable(cs);
        ins.push(Some(h));
        ins.push(Some(cs));
        if !c.twenty_inputs {
            for gate in ["input", "forget", "cell", "output"] {
                ins.push(if !c.layer_norm || (gate == "input" && c.cifg) {
                    None
                } else {
                    weight(sg, &format!("ln_{gate}"), &[nc], 0.5, 1.5)
                });
            }
        }
        let [d0, d1, _] = input_shape(c);
        let y = sg.tensor("y", DType::F32, &[d0, d1, no]);
        sg.op(
            OpKind::Builtin(BuiltinOp::UnidirectionalSequenceLstm),
            &ins,
            &[y],
            OpOptions::Lstm(LstmOptions {
                activation: c.activation,
                cell_clip: c.cell_clip,
                proj_clip: c.proj_clip,
                time_major: c.time_major,
                asymmetric_quantize_inputs: c.hybrid == Some(true),
            }),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn run(name: &str, c: &Case) {
        // Several invokes on one interpreter: the state must carry over like LiteRT's.
        let invokes: Vec<Vec<Tensor>> = (0..3)
            .map(|k| {
                vec![random_tensor(
                    DType::F32,
                    &input_shape(c),
                    50 + k,
                    -1.5,
                    1.5,
                )]
            })
            .collect();
        assert_matches_litert_seq(name, &model(c), &invokes, &resolvers(), None);
    }

    #[test]
    fn plain_lstm_matches_litert_over_invokes() {
        run("plain", &base());
        run(
            "plain time-major, 20 inputs",
            &Case {
                time_major: true,
                twenty_inputs: true,
                ..base()
            },
        );
        run(
            "relu, one batch, long sequence",
            &Case {
                activation: Activation::Relu,
                batch: 1,
                time: 9,
                ..base()
            },
        );
    }

    #[test]
    fn cifg_peephole_and_clipping_match_litert() {
        run(
            "cifg + peephole + cell clip, time-major",
            &Case {
                cifg: true,
                peephole: true,
                cell_clip: 0.4,
                time_major: true,
                ..base()
            },
        );
        run(
            "peephole",
            &Case {
                peephole: true,
                ..base()
            },
        );
    }

    #[test]
    fn projection_and_layer_norm_match_litert() {
        run(
            "projection + bias + clip + layer norm",
            &Case {
                projection: Some(3),
                projection_bias: true,
                proj_clip: 0.3,
                layer_norm: true,
                ..base()
            },
        );
        run(
            "cifg + layer norm + peephole + projection without bias",
            &Case {
                cifg: true,
                layer_norm: true,
                peephole: true,
                projection: Some(2),
                activation: Activation::Relu6,
                time_major: true,
                ..base()
            },
        );
    }

    #[test]
    fn hybrid_lstms_match_litert() {
        for asymmetric in [false, true] {
            run(
                &format!("hybrid, asymmetric {asymmetric}"),
                &Case {
                    hybrid: Some(asymmetric),
                    ..base()
                },
            );
            run(
                &format!("hybrid cifg + peephole + clip, time-major, asymmetric {asymmetric}"),
                &Case {
                    hybrid: Some(asymmetric),
                    cifg: true,
                    peephole: true,
                    cell_clip: 0.4,
                    time_major: true,
                    ..base()
                },
            );
            run(
                &format!("hybrid projection + layer norm + peephole, asymmetric {asymmetric}"),
                &Case {
                    hybrid: Some(asymmetric),
                    projection: Some(3),
                    projection_bias: true,
                    proj_clip: 0.3,
                    layer_norm: true,
                    peephole: true,
                    ..base()
                },
            );
        }
    }

    fn run_integer(name: &str, spec: &IntegerLstm) {
        // Three invokes: the int8 hidden and int16 cell states carry over.
        let (model, inputs) = integer_lstm(spec, &[11, 12, 13]);
        let invokes: Vec<Vec<Tensor>> = inputs.into_iter().map(|t| vec![t]).collect();
        assert_matches_litert_seq(
            name,
            &model,
            &invokes,
            &resolvers(),
            Some(switchyard_testkit::Tolerance::Exact),
        );
    }

    #[test]
    fn integer_lstms_are_bit_exact_with_litert() {
        let d = IntegerLstm::default();
        run_integer("int8 plain", &d);
        run_integer(
            "int8 time-major, cifg, cell clip, cell scale 2^-15",
            &IntegerLstm {
                time_major: true,
                cifg: true,
                cell_clip: 0.3,
                cell_scale_log2: -15,
                ..d.clone()
            },
        );
        run_integer(
            "int8 layer norm + peephole",
            &IntegerLstm {
                layer_norm: true,
                peephole: true,
                ..d.clone()
            },
        );
        run_integer(
            "int8 projection + clip + layer norm, one batch, long sequence",
            &IntegerLstm {
                projection: Some(3),
                proj_clip: 0.2,
                layer_norm: true,
                batch: 1,
                time: 9,
                ..d.clone()
            },
        );
        run_integer(
            "int8 cifg + layer norm + peephole, time-major",
            &IntegerLstm {
                cifg: true,
                layer_norm: true,
                peephole: true,
                time_major: true,
                ..d
            },
        );
    }

    /// Prepares the only node of `model` and returns what its kernel says it holds.
    fn kernel_bytes(model: &[u8]) -> usize {
        use switchyard_interpreter::Model;
        let m = Model::from_bytes(model).expect("test model loads");
        let sg = &m.subgraphs[0];
        let node = &sg.nodes[0];
        let meta = |t: usize| {
            let d = &sg.tensors[t];
            TensorMeta {
                dtype: d.dtype,
                shape: &d.shape,
                quant: d.quant.as_ref(),
                data: d.data.as_ref().map(|c| c.as_slice()),
                name: &d.name,
            }
        };
        let ctx = PrepareCtx {
            node,
            inputs: node.inputs.iter().map(|t| t.map(meta)).collect(),
            outputs: node.outputs.iter().map(|&t| meta(t)).collect(),
            intermediates: switchyard_interpreter::kernel::intermediate_metas(sg, node),
            threads: 1,
        };
        prepare(&ctx).expect("prepares").kernel.memory_bytes()
    }

    #[test]
    fn integer_and_hybrid_kernels_charge_their_weight_copies() {
        // Default integer spec: 4 gates of 4x6 input and 4x4 recurrent int8 weights,
        // each with two folded int32 bias vectors of 4; scratch of 4 int16 gates, an
        // int16 and an int8 hidden vector.
        let (integer, _) = integer_lstm(&IntegerLstm::default(), &[1]);
        assert_eq!(
            kernel_bytes(&integer),
            4 * (24 + 16 + 4 * 8) + 4 * (8 + 2 + 1)
        );
        // Hybrid base case: 4 gates of 5x4 and 5x5 int8 weights with int32 row sums,
        // and four float biases of 5; scratch of 4 float gates, a float cell output and
        // int8 copies of the input, the state and the cell output.
        let hybrid = Case {
            hybrid: Some(false),
            ..base()
        };
        let (nc, ni) = (hybrid.n_cell, hybrid.n_input);
        let want =
            4 * (nc * ni + nc * nc + 2 * 4 * nc) + 4 * 4 * nc + (4 * 4 * nc + 4 * nc + ni + 2 * nc);
        assert_eq!(kernel_bytes(&model(&hybrid)), want);
    }

    #[test]
    fn busy_scratch_is_replaced_not_waited_for() {
        let r = Reusable::new(vec![1u8]);
        let inner = r
            .with(
                || Ok(vec![9]),
                |outer| {
                    outer[0] = 2;
                    // Taken: a fresh one, without deadlock.
                    r.with(|| Ok(vec![9]), |s| s[0]).expect("fresh scratch")
                },
            )
            .expect("scratch");
        assert_eq!(inner, 9);
        assert_eq!(r.with(|| Ok(vec![9]), |s| s[0]).expect("scratch"), 2);
    }

    #[test]
    fn bad_lstms_are_rejected_at_prepare() {
        let e = prepare_error(&model(&Case {
            projection_bias: true,
            ..base()
        }));
        assert!(e.to_string().contains("projection bias"), "{e}");
        let e = prepare_error(&model(&Case {
            activation: Activation::None,
            ..base()
        }));
        assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
        let e = prepare_error(&model(&Case {
            cell_clip: -1.0,
            ..base()
        }));
        assert!(e.to_string().contains("clip"), "{e}");
    }

    #[test]
    fn malformed_lstm_nodes_are_errors() {
        // Wrong weight shape, missing forget weights, half-given CIFG, and too few
        // inputs: each built by hand from a valid node.
        let build = |edit: &dyn Fn(
            &mut Vec<Option<usize>>,
            &mut switchyard_interpreter::builder::SubgraphBuilder,
        )| {
            let c = base();
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &input_shape(&c));
            let w = sg.constant_f32("w", &[5, 4], &[0.1; 20]);
            let r = sg.constant_f32("r", &[5, 5], &[0.1; 25]);
            let b = sg.constant_f32("b", &[5], &[0.0; 5]);
            let h = sg.tensor("h", DType::F32, &[2, 5]);
            sg.set_variable(h);
            let cs = sg.tensor("c", DType::F32, &[2, 5]);
            sg.set_variable(cs);
            let mut ins = vec![
                Some(x),
                Some(w),
                Some(w),
                Some(w),
                Some(w),
                Some(r),
                Some(r),
                Some(r),
                Some(r),
                None,
                None,
                None,
                Some(b),
                Some(b),
                Some(b),
                Some(b),
                None,
                None,
                Some(h),
                Some(cs),
            ];
            edit(&mut ins, sg);
            let y = sg.tensor("y", DType::F32, &[2, 3, 5]);
            sg.op(
                OpKind::Builtin(BuiltinOp::UnidirectionalSequenceLstm),
                &ins,
                &[y],
                OpOptions::Lstm(LstmOptions {
                    activation: Activation::Tanh,
                    ..Default::default()
                }),
            );
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            prepare_error(&mb.finish())
        };
        let e = build(&|ins, sg| ins[3] = Some(sg.constant_f32("bad", &[4, 5], &[0.0; 20])));
        assert!(matches!(e, KernelError::Shape(_)), "{e}");
        let e = build(&|ins, _| ins[2] = None);
        assert!(e.to_string().contains("missing"), "{e}");
        let e = build(&|ins, _| ins[1] = None);
        assert!(e.to_string().contains("CIFG"), "{e}");
        let e = build(&|ins, _| ins.truncate(19));
        assert!(e.to_string().contains("20 or 24"), "{e}");
        let e = build(&|ins, sg| ins[10] = Some(sg.constant_f32("p", &[5], &[0.0; 5])));
        assert!(e.to_string().contains("peephole"), "{e}");
        let e = build(&|ins, sg| ins[0] = Some(sg.tensor("x2", DType::F32, &[6, 4])));
        assert!(matches!(e, KernelError::Shape(_)), "{e}");
        let e = build(&|ins, sg| ins[18] = Some(sg.tensor("h2", DType::F32, &[2, 4])));
        assert!(matches!(e, KernelError::Shape(_)), "{e}");
    }
}
