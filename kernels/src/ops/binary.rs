//! Binary elementwise arithmetic with NumPy broadcasting: ADD, SUB, MUL, DIV, MAXIMUM,
//! MINIMUM, SQUARED_DIFFERENCE, POW, FLOOR_DIV, FLOOR_MOD.
//!
//! Float and int32 compute directly. int8/uint8 ADD/SUB follow TFLite's scheme: both
//! inputs are rescaled to a common scale with 20 bits of headroom, summed, and rescaled to
//! the output, all in fixed point so results are bit-exact with LiteRT. MUL rescales the
//! product of the zero-point-corrected inputs once. MAXIMUM/MINIMUM compare raw values
//! (LiteRT requires equal quantization for them).

use switchyard_interpreter::{
    Activation, BuiltinOp, DType, KernelError, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

use crate::quant::{
    activation_range, load_q, multiply_by_quantized_multiplier, per_tensor, quantize_multiplier,
    store_q,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::{broadcast_shapes, for_each_broadcast};
use switchyard_interpreter::NodeSupportCtx;

/// ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, SQUARED_DIFFERENCE, POW, FLOOR_DIV, FLOOR_MOD.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Add, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Sub, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::Mul, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Div, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
    OpDescriptor::new(BuiltinOp::Maximum, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
    OpDescriptor::new(BuiltinOp::Minimum, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
    OpDescriptor::new(BuiltinOp::SquaredDifference, prepare)
        .optimized(prepare_optimized)
        .gpu(gpu),
    OpDescriptor::new(BuiltinOp::Pow, prepare).optimized(prepare_optimized),
    OpDescriptor::new(BuiltinOp::FloorDiv, prepare).optimized(prepare_optimized),
    OpDescriptor::new(BuiltinOp::FloorMod, prepare).optimized(prepare_optimized),
];

/// GPU: float32, NumPy broadcasting up to rank 6, a clamp as fused activation (also
/// PRELU's rule: the GPU runs it as a binary op).
pub(crate) fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 2, 2, 1)?;
    let a = support::input(ctx, 0)?;
    let b = support::input(ctx, 1)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&a, "input 0")?;
    support::gpu_f32(&b, "input 1")?;
    support::gpu_f32(&out, "output 0")?;
    let shape = broadcast_shapes(a.shape, b.shape).map_err(|e| e.to_string())?;
    if shape != out.shape {
        return Err(format!(
            "output shape {:?} is not the broadcast {shape:?}",
            out.shape
        ));
    }
    if let OpOptions::Activation(act) = &ctx.node.options {
        support::gpu_activation(*act)?;
    }
    support::gpu_count(&shape)?;
    for s in [&shape[..], a.shape, b.shape] {
        support::gpu_rank(s)?;
        for &d in s {
            support::gpu_u32(d, "dimension")?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    SquaredDifference,
    Pow,
    FloorDiv,
    FloorMod,
}

fn kind_of(op: BuiltinOp) -> Option<Kind> {
    Some(match op {
        BuiltinOp::Add => Kind::Add,
        BuiltinOp::Sub => Kind::Sub,
        BuiltinOp::Mul => Kind::Mul,
        BuiltinOp::Div => Kind::Div,
        BuiltinOp::Maximum => Kind::Max,
        BuiltinOp::Minimum => Kind::Min,
        BuiltinOp::SquaredDifference => Kind::SquaredDifference,
        BuiltinOp::Pow => Kind::Pow,
        BuiltinOp::FloorDiv => Kind::FloorDiv,
        BuiltinOp::FloorMod => Kind::FloorMod,
        _ => return None,
    })
}

/// Fixed-point parameters of a quantized ADD/SUB/MUL.
#[derive(Clone, Copy, Debug)]
struct QuantParams {
    zp1: i32,
    zp2: i32,
    zp_out: i32,
    m1: (i32, i32),
    m2: (i32, i32),
    m_out: (i32, i32),
    act_min: i32,
    act_max: i32,
}

/// Bits of headroom TFLite gives int8/uint8 inputs before summing.
const ADD_LEFT_SHIFT: i32 = 20;

struct Binary {
    kind: Kind,
    dtype: DType,
    out_dtype: DType,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    out_shape: Vec<usize>,
    activation: Activation,
    quant: Option<QuantParams>,
    /// Optimized mode: vectorisable loops for the common float cases.
    fast: bool,
}

/// The reference kernel (plain loops).
pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(int8) = super::int8_norm::route(ctx)? {
        return Ok(int8);
    }
    build(ctx, false)
}

/// The optimized kernel where this op has one for the node's dtypes, else the reference.
pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(int8) = super::int8_norm::route(ctx)? {
        return Ok(int8);
    }
    build(ctx, true)
}

fn build(ctx: &PrepareCtx<'_>, optimized: bool) -> Result<PreparedKernel, KernelError> {
    let op = ctx
        .op()
        .builtin()
        .and_then(kind_of)
        .ok_or_else(|| KernelError::unsupported(format!("{} is not a binary op", ctx.op())))?;
    ctx.expect_arity(2, 2, 1)?;
    let a = ctx.input(0)?;
    let b = ctx.input(1)?;
    let out = ctx.output(0)?;
    if a.dtype != b.dtype {
        return Err(KernelError::invalid(format!(
            "input dtypes differ: {} and {}",
            a.dtype, b.dtype
        )));
    }
    let out_shape = broadcast_shapes(a.shape, b.shape)?;
    let activation = match &ctx.node.options {
        OpOptions::Activation(act) => *act,
        _ => Activation::None,
    };
    let dtype = a.dtype;
    let quant = match dtype {
        DType::F32 => None,
        DType::I32 | DType::I64 => {
            if matches!(op, Kind::Pow | Kind::SquaredDifference) && dtype == DType::I64 {
                return Err(KernelError::unsupported(format!("{} on int64", ctx.op())));
            }
            None
        }
        DType::I8 | DType::U8 | DType::I16 => {
            if dtype == DType::I16 && matches!(op, Kind::Add | Kind::Sub) {
                // The 8-bit left shift of 20 overflows 16-bit inputs, and LiteRT's int16
                // ADD/SUB take other paths (power-of-two scales, a shift of 15): refuse
                // rather than compute something else.
                return Err(KernelError::unsupported(format!("{} on int16", ctx.op())));
            }
            let (s1, zp1) = per_tensor(a.quant, "input 0")?;
            let (s2, zp2) = per_tensor(b.quant, "input 1")?;
            let (so, zpo) = per_tensor(out.quant, "output")?;
            let (act_min, act_max) = activation_range(activation, so, zpo, out.dtype)?;
            let params = match op {
                Kind::Add | Kind::Sub => {
                    let twice_max = 2.0 * (s1 as f64).max(s2 as f64);
                    QuantParams {
                        zp1,
                        zp2,
                        zp_out: zpo,
                        m1: quantize_multiplier(s1 as f64 / twice_max),
                        m2: quantize_multiplier(s2 as f64 / twice_max),
                        m_out: quantize_multiplier(
                            twice_max / ((1i64 << ADD_LEFT_SHIFT) as f64 * so as f64),
                        ),
                        act_min,
                        act_max,
                    }
                }
                Kind::Mul => QuantParams {
                    zp1,
                    zp2,
                    zp_out: zpo,
                    m1: (0, 0),
                    m2: (0, 0),
                    m_out: quantize_multiplier(s1 as f64 * s2 as f64 / so as f64),
                    act_min,
                    act_max,
                },
                Kind::Max | Kind::Min => {
                    if s1 != so || s2 != so || zp1 != zpo || zp2 != zpo {
                        return Err(KernelError::unsupported(format!(
                            "quantized {} needs equal input and output quantization",
                            ctx.op()
                        )));
                    }
                    QuantParams {
                        zp1,
                        zp2,
                        zp_out: zpo,
                        m1: (0, 0),
                        m2: (0, 0),
                        m_out: (0, 0),
                        act_min,
                        act_max,
                    }
                }
                _ => {
                    return Err(KernelError::unsupported(format!(
                        "quantized {} is not supported",
                        ctx.op()
                    )));
                }
            };
            Some(params)
        }
        other => {
            return Err(KernelError::dtype(
                "float32, int32, int64, int8 or uint8",
                other,
            ));
        }
    };
    if out.dtype != dtype {
        return Err(KernelError::invalid(format!(
            "output dtype {} differs from input dtype {dtype}",
            out.dtype
        )));
    }
    Ok(PreparedKernel::new(
        vec![out_shape.clone()],
        Binary {
            kind: op,
            dtype,
            out_dtype: out.dtype,
            a_shape: a.shape.to_vec(),
            b_shape: b.shape.to_vec(),
            out_shape,
            activation,
            quant,
            fast: optimized,
        },
    ))
}

#[inline(always)]
fn float_op(kind: Kind, x: f32, y: f32) -> f32 {
    match kind {
        Kind::Add => x + y,
        Kind::Sub => x - y,
        Kind::Mul => x * y,
        Kind::Div => x / y,
        Kind::Max => x.max(y),
        Kind::Min => x.min(y),
        Kind::SquaredDifference => (x - y) * (x - y),
        Kind::Pow => x.powf(y),
        Kind::FloorDiv => (x / y).floor(),
        Kind::FloorMod => {
            let r = x % y;
            if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                r + y
            } else {
                r
            }
        }
    }
}

#[inline(always)]
fn int_op(kind: Kind, x: i64, y: i64) -> i64 {
    match kind {
        Kind::Add => x.wrapping_add(y),
        Kind::Sub => x.wrapping_sub(y),
        Kind::Mul => x.wrapping_mul(y),
        Kind::Div => {
            if y == 0 {
                0
            } else {
                x.wrapping_div(y)
            }
        }
        Kind::Max => x.max(y),
        Kind::Min => x.min(y),
        Kind::SquaredDifference => x.wrapping_sub(y).wrapping_mul(x.wrapping_sub(y)),
        Kind::Pow => {
            if y < 0 {
                0
            } else {
                x.wrapping_pow(y.min(u32::MAX as i64) as u32)
            }
        }
        // Wrapping division: i64::MIN / -1 overflows, and a model may hold exactly that;
        // the result wraps (to i64::MIN, remainder 0) instead of panicking.
        Kind::FloorDiv => {
            if y == 0 {
                0
            } else {
                let (q, r) = (x.wrapping_div(y), x.wrapping_rem(y));
                if r != 0 && ((r < 0) != (y < 0)) {
                    q.wrapping_sub(1)
                } else {
                    q
                }
            }
        }
        Kind::FloorMod => {
            if y == 0 {
                0
            } else {
                let r = x.wrapping_rem(y);
                if r != 0 && ((r < 0) != (y < 0)) {
                    r.wrapping_add(y)
                } else {
                    r
                }
            }
        }
    }
}

/// Which operand, if any, holds one value per run of the other's innermost elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rows {
    No,
    A,
    B,
    /// a per row and b per column of the output (or the other way round).
    OuterA,
    OuterB,
}

impl Binary {
    fn same_shape(&self) -> bool {
        self.a_shape == self.b_shape
    }

    /// Same-shape and scalar cases of the common ops, one monomorphic loop per op with
    /// the activation as a clamp, so LLVM vectorises them; `false` when not applicable.
    fn eval_f32_fast(&self, a: &[f32], b: &[f32], out: &mut [f32]) -> bool {
        #[inline(always)]
        fn run(
            a: &[f32],
            b: &[f32],
            out: &mut [f32],
            rows: Rows,
            act: Activation,
            f: impl Fn(f32, f32) -> f32,
        ) {
            if act == Activation::None {
                run_with(a, b, out, rows, &f);
            } else {
                let (lo, hi) = act.float_range();
                run_with(a, b, out, rows, |x, y| f(x, y).max(lo).min(hi));
            }
        }
        #[inline(always)]
        fn run_with(
            a: &[f32],
            b: &[f32],
            out: &mut [f32],
            rows: Rows,
            f: impl Fn(f32, f32) -> f32,
        ) {
            if let Rows::OuterA | Rows::OuterB = rows {
                // One operand per row, the other per column (a layer norm's
                // rsqrt(var) times gamma): out[r][c] = f(rows[r], cols[c]).
                let (per_row, per_col) = if rows == Rows::OuterA { (a, b) } else { (b, a) };
                let inner = per_col.len();
                for (orow, &r) in out.chunks_exact_mut(inner).zip(per_row) {
                    if rows == Rows::OuterA {
                        for (o, &c) in orow.iter_mut().zip(per_col) {
                            *o = f(r, c);
                        }
                    } else {
                        for (o, &c) in orow.iter_mut().zip(per_col) {
                            *o = f(c, r);
                        }
                    }
                }
            } else if rows == Rows::A {
                // Each value of a covers a run of b (a per-row operand, e.g. a mean).
                let inner = b.len() / a.len();
                for ((orow, brow), &x) in out
                    .chunks_exact_mut(inner)
                    .zip(b.chunks_exact(inner))
                    .zip(a)
                {
                    for (o, &y) in orow.iter_mut().zip(brow) {
                        *o = f(x, y);
                    }
                }
            } else if rows == Rows::B {
                let inner = a.len() / b.len();
                for ((orow, arow), &y) in out
                    .chunks_exact_mut(inner)
                    .zip(a.chunks_exact(inner))
                    .zip(b)
                {
                    for (o, &x) in orow.iter_mut().zip(arow) {
                        *o = f(x, y);
                    }
                }
            } else if a.len() > b.len() && b.len() > 1 {
                // b repeats along the leading axes (a per-channel scale or bias).
                for (orow, arow) in out.chunks_exact_mut(b.len()).zip(a.chunks_exact(b.len())) {
                    for ((o, &x), &y) in orow.iter_mut().zip(arow).zip(b) {
                        *o = f(x, y);
                    }
                }
            } else if b.len() > a.len() && a.len() > 1 {
                for (orow, brow) in out.chunks_exact_mut(a.len()).zip(b.chunks_exact(a.len())) {
                    for ((o, &x), &y) in orow.iter_mut().zip(a).zip(brow) {
                        *o = f(x, y);
                    }
                }
            } else if a.len() == b.len() {
                for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                    *o = f(x, y);
                }
            } else if b.len() == 1 {
                let y = b[0];
                for (o, &x) in out.iter_mut().zip(a) {
                    *o = f(x, y);
                }
            } else {
                let x = a[0];
                for (o, &y) in out.iter_mut().zip(b) {
                    *o = f(x, y);
                }
            }
        }
        /// `small` broadcasts over `full` by repeating whole: after dropping its leading
        /// 1s it is a suffix of `full`, which is the output shape.
        fn repeats(small: &[usize], full: &[usize], out: &[usize]) -> bool {
            let lead = small.iter().take_while(|&&d| d == 1).count();
            let tail = &small[lead..];
            full == out && tail.len() <= full.len() && full.ends_with(tail)
        }
        /// `small` holds one value per run of `full`'s innermost elements: with its
        /// rank padded by leading 1s, it equals `full` up to some axis and is 1 after.
        fn per_row(small: &[usize], full: &[usize], out: &[usize]) -> bool {
            if full != out || small.len() > full.len() {
                return false;
            }
            let pad = full.len() - small.len();
            let dim = |i: usize| if i < pad { 1 } else { small[i - pad] };
            let same = (0..full.len()).take_while(|&i| dim(i) == full[i]).count();
            same < full.len() && (same..full.len()).all(|i| dim(i) == 1)
        }
        let mut rows = Rows::No;
        let shapes_ok = self.same_shape()
            || b.len() == 1
            || a.len() == 1
            || repeats(&self.b_shape, &self.a_shape, &self.out_shape)
            || repeats(&self.a_shape, &self.b_shape, &self.out_shape)
            || {
                let (sa, sb, so) = (&self.a_shape, &self.b_shape, &self.out_shape);
                let count = |s: &[usize]| s.iter().product::<usize>();
                // Outer: one operand per row of the output, the other one row repeated.
                let outer = |r: &[usize], c: &[usize]| {
                    per_row(r, so, so)
                        && repeats(c, so, so)
                        && count(r).checked_mul(count(c)) == Some(count(so))
                };
                rows = if per_row(sb, sa, so) {
                    Rows::B
                } else if per_row(sa, sb, so) {
                    Rows::A
                } else if outer(sa, sb) {
                    Rows::OuterA
                } else if outer(sb, sa) {
                    Rows::OuterB
                } else {
                    Rows::No
                };
                rows != Rows::No
            };
        let clamp = self.activation;
        let expected = match rows {
            Rows::OuterA | Rows::OuterB => a.len() * b.len(),
            _ => a.len().max(b.len()),
        };
        if crate::optimized::clamp_of(clamp).is_none() || !shapes_ok || out.len() != expected {
            return false;
        }
        if a.is_empty() || b.is_empty() {
            return false;
        }
        match self.kind {
            Kind::Add => run(a, b, out, rows, clamp, |x, y| x + y),
            Kind::Sub => run(a, b, out, rows, clamp, |x, y| x - y),
            Kind::Mul => run(a, b, out, rows, clamp, |x, y| x * y),
            Kind::Div => run(a, b, out, rows, clamp, |x, y| x / y),
            Kind::Max => run(a, b, out, rows, clamp, f32::max),
            Kind::Min => run(a, b, out, rows, clamp, f32::min),
            Kind::SquaredDifference => run(a, b, out, rows, clamp, |x, y| (x - y) * (x - y)),
            _ => return false,
        }
        true
    }

    fn eval_f32(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        let act = self.activation;
        let kind = self.kind;
        if self.fast && self.eval_f32_fast(a, b, out) {
            return;
        }
        if self.same_shape() {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = act.apply(float_op(kind, x, y));
            }
        } else if b.len() == 1 {
            let y = b[0];
            for (o, &x) in out.iter_mut().zip(a) {
                *o = act.apply(float_op(kind, x, y));
            }
        } else if a.len() == 1 {
            let x = a[0];
            for (o, &y) in out.iter_mut().zip(b) {
                *o = act.apply(float_op(kind, x, y));
            }
        } else {
            for_each_broadcast(&self.a_shape, &self.b_shape, &self.out_shape, |o, i, j| {
                out[o] = act.apply(float_op(kind, a[i], b[j]));
            });
        }
    }

    /// Optimized int8 ADD/SUB/MUL of same-shaped operands (residual connections): one
    /// branch-free loop per op, vectorised under the CPU's features; the same integer
    /// arithmetic as `eval_quant`, so bit-exact with it. `false` when not applicable.
    fn eval_i8_fast(
        &self,
        a: &TensorView<'_>,
        b: &TensorView<'_>,
        out: &mut [u8],
        q: &QuantParams,
    ) -> bool {
        use crate::optimized::qelementwise::{QArith, QBinary, binary_i8};
        let op = match self.kind {
            Kind::Add => QBinary::Add,
            Kind::Sub => QBinary::Sub,
            Kind::Mul => QBinary::Mul,
            _ => return false,
        };
        if self.dtype != DType::I8 || self.out_dtype != DType::I8 || !self.same_shape() {
            return false;
        }
        let p = QArith {
            zp1: q.zp1,
            zp2: q.zp2,
            zp_out: q.zp_out,
            m1: q.m1,
            m2: q.m2,
            m_out: q.m_out,
            act_min: q.act_min,
            act_max: q.act_max,
            left_shift: ADD_LEFT_SHIFT,
        };
        binary_i8(
            op,
            &p,
            bytemuck::cast_slice(a.bytes),
            bytemuck::cast_slice(b.bytes),
            bytemuck::cast_slice_mut(out),
            crate::optimized::qgemm::QIsa::detect(),
        );
        true
    }

    fn eval_quant(&self, a: &TensorView<'_>, b: &TensorView<'_>, out: &mut [u8], q: &QuantParams) {
        let (dt, odt) = (self.dtype, self.out_dtype);
        let kind = self.kind;
        let compute = |x: i32, y: i32| -> i32 {
            let v = match kind {
                Kind::Add | Kind::Sub => {
                    let sx = multiply_by_quantized_multiplier(
                        (x - q.zp1).wrapping_mul(1 << ADD_LEFT_SHIFT),
                        q.m1.0,
                        q.m1.1,
                    );
                    let sy = multiply_by_quantized_multiplier(
                        (y - q.zp2).wrapping_mul(1 << ADD_LEFT_SHIFT),
                        q.m2.0,
                        q.m2.1,
                    );
                    // Saturating: hostile scales can put each rescaled operand near 2^31.
                    let raw = if kind == Kind::Add {
                        sx.saturating_add(sy)
                    } else {
                        sx.saturating_sub(sy)
                    };
                    multiply_by_quantized_multiplier(raw, q.m_out.0, q.m_out.1)
                        .saturating_add(q.zp_out)
                }
                Kind::Mul => multiply_by_quantized_multiplier(
                    (x - q.zp1).wrapping_mul(y - q.zp2),
                    q.m_out.0,
                    q.m_out.1,
                )
                .saturating_add(q.zp_out),
                Kind::Max => x.max(y),
                _ => x.min(y),
            };
            v.clamp(q.act_min, q.act_max)
        };
        for_each_broadcast(&self.a_shape, &self.b_shape, &self.out_shape, |o, i, j| {
            let v = compute(load_q(a.bytes, dt, i), load_q(b.bytes, dt, j));
            store_q(out, odt, o, v);
        });
    }

    fn eval_int<T: Copy + Into<i64>>(
        &self,
        a: &[T],
        b: &[T],
        out: &mut [T],
        from: impl Fn(i64) -> T,
    ) {
        let (lo, hi) = match self.activation {
            Activation::Relu => (0, i64::MAX),
            Activation::Relu6 => (0, 6),
            Activation::ReluN1To1 => (-1, 1),
            _ => (i64::MIN, i64::MAX),
        };
        let kind = self.kind;
        for_each_broadcast(&self.a_shape, &self.b_shape, &self.out_shape, |o, i, j| {
            out[o] = from(int_op(kind, a[i].into(), b[j].into()).clamp(lo, hi));
        });
    }
}

impl switchyard_interpreter::OpKernel for Binary {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        // The loops index with the prepared shapes: every buffer must hold them, in bytes.
        let bytes = |shape: &[usize], dtype: DType| {
            shape
                .iter()
                .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        };
        for (what, got, shape, dtype) in [
            ("input 0", a.bytes.len(), &self.a_shape, a.dtype),
            ("input 1", b.bytes.len(), &self.b_shape, b.dtype),
            ("output", out.bytes.len(), &self.out_shape, out.dtype),
        ] {
            let want_dtype = if what == "output" {
                self.out_dtype
            } else {
                self.dtype
            };
            if dtype != want_dtype || bytes(shape, dtype) != Some(got) {
                return Err(KernelError::shape(format!(
                    "{what} is {got} bytes of {dtype}, prepared for {want_dtype} of shape {shape:?}"
                )));
            }
        }
        match self.dtype {
            DType::F32 => self.eval_f32(a.f32s()?, b.f32s()?, out.f32s_mut()?),
            DType::I32 => self.eval_int(a.i32s()?, b.i32s()?, out.i32s_mut()?, |v| v as i32),
            DType::I64 => self.eval_int(a.i64s()?, b.i64s()?, out.i64s_mut()?, |v| v),
            _ => {
                let q = self
                    .quant
                    .as_ref()
                    .ok_or_else(|| KernelError::invalid("quantized op without parameters"))?;
                if !(self.fast && self.eval_i8_fast(a, b, out.bytes, q)) {
                    self.eval_quant(a, b, out.bytes, q);
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "binary"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, OpResolver, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::CpuResolver;

    fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    struct Case {
        op: BuiltinOp,
        dtype: DType,
        a: Vec<usize>,
        b: Vec<usize>,
        act: Activation,
        quant: Option<[(f32, i64); 3]>,
    }

    fn run(case: &Case) {
        let out_shape = broadcast_shapes(&case.a, &case.b).unwrap();
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let a = sg.tensor("a", case.dtype, &case.a);
        let b = sg.tensor("b", case.dtype, &case.b);
        let y = sg.tensor("y", case.dtype, &out_shape);
        if let Some(q) = case.quant {
            for (t, (s, z)) in [a, b, y].into_iter().zip(q) {
                sg.set_quant(t, Quant::per_tensor(s, z));
            }
        }
        let options = match case.op {
            BuiltinOp::Add | BuiltinOp::Sub | BuiltinOp::Mul | BuiltinOp::Div => {
                OpOptions::Activation(case.act)
            }
            _ => OpOptions::None,
        };
        sg.op(OpKind::Builtin(case.op), &[Some(a), Some(b)], &[y], options);
        sg.set_inputs(&[a, b]);
        sg.set_outputs(&[y]);
        let (lo, hi) = match case.dtype {
            DType::F32 => (-2.0, 2.0),
            DType::I32 => (-50.0, 50.0),
            _ => (-128.0, 255.0),
        };
        let mut xa = random_tensor(case.dtype, &case.a, 1, lo, hi);
        let xb = random_tensor(case.dtype, &case.b, 2, lo, hi);
        if matches!(
            case.op,
            BuiltinOp::Div | BuiltinOp::FloorDiv | BuiltinOp::FloorMod
        ) {
            // Keep divisors away from zero.
            xa = random_tensor(case.dtype, &case.a, 1, lo, hi);
        }
        let xb = if matches!(
            case.op,
            BuiltinOp::Div | BuiltinOp::FloorDiv | BuiltinOp::FloorMod
        ) {
            match case.dtype {
                DType::F32 => random_tensor(DType::F32, &case.b, 2, 0.5, 3.0),
                _ => random_tensor(case.dtype, &case.b, 2, 1.0, 9.0),
            }
        } else if case.op == BuiltinOp::Pow {
            random_tensor(case.dtype, &case.b, 2, 0.0, 3.0)
        } else {
            xb
        };
        let xa = if case.op == BuiltinOp::Pow && case.dtype == DType::F32 {
            random_tensor(DType::F32, &case.a, 1, 0.1, 2.0)
        } else {
            xa
        };
        let name = format!(
            "{:?} {:?} {:?}x{:?} {:?}",
            case.op, case.dtype, case.a, case.b, case.act
        );
        assert_matches_litert(&name, &mb.finish(), &[xa, xb], &resolvers(), None);
    }

    fn case(op: BuiltinOp, dtype: DType, a: &[usize], b: &[usize]) -> Case {
        Case {
            op,
            dtype,
            a: a.to_vec(),
            b: b.to_vec(),
            act: Activation::None,
            quant: None,
        }
    }

    #[test]
    fn float_ops_with_broadcasting() {
        use BuiltinOp::*;
        for op in [
            Add,
            Sub,
            Mul,
            Div,
            Maximum,
            Minimum,
            SquaredDifference,
            Pow,
            FloorDiv,
            FloorMod,
        ] {
            run(&case(op, DType::F32, &[2, 3, 4], &[2, 3, 4]));
            run(&case(op, DType::F32, &[2, 3, 4], &[4]));
        }
        run(&case(Add, DType::F32, &[2, 1, 4], &[3, 1]));
        run(&case(Mul, DType::F32, &[1], &[5, 2]));
        // Per-channel operands on either side (the optimized repeat path).
        run(&case(Mul, DType::F32, &[1, 1, 1, 6], &[1, 3, 2, 6]));
        run(&case(Sub, DType::F32, &[2, 3, 5], &[1, 3, 5]));
        // Per-row operands (a layer norm's mean and variance; the optimized row path).
        for op in [SquaredDifference, Mul, Div, Sub] {
            run(&case(op, DType::F32, &[1, 4, 6], &[1, 4, 1]));
            run(&case(op, DType::F32, &[2, 3, 1, 1], &[2, 3, 2, 5]));
        }
        run(&case(Add, DType::F32, &[3, 1], &[3, 4]));
        // Outer broadcasts (per-row times per-column).
        run(&case(Mul, DType::F32, &[1, 5, 1], &[6]));
        run(&case(Sub, DType::F32, &[1, 6], &[4, 1]));
    }

    #[test]
    fn fused_activations() {
        for act in [Activation::Relu, Activation::Relu6, Activation::ReluN1To1] {
            for op in [BuiltinOp::Add, BuiltinOp::Mul, BuiltinOp::Sub] {
                run(&Case {
                    act,
                    ..case(op, DType::F32, &[4, 5], &[5])
                });
            }
        }
    }

    #[test]
    fn int32_ops() {
        use BuiltinOp::*;
        for op in [Add, Sub, Mul, Maximum, Minimum, FloorDiv, FloorMod] {
            run(&case(op, DType::I32, &[3, 4], &[4]));
        }
    }

    #[test]
    fn quantized_add_sub_mul() {
        let q = [(0.05, -3), (0.1, 10), (0.12, -1)];
        for dtype in [DType::I8, DType::U8] {
            let shift = if dtype == DType::U8 { 128 } else { 0 };
            let q = q.map(|(s, z)| (s, z + shift));
            for op in [BuiltinOp::Add, BuiltinOp::Sub, BuiltinOp::Mul] {
                for act in [Activation::None, Activation::Relu] {
                    run(&Case {
                        act,
                        quant: Some(q),
                        ..case(op, dtype, &[2, 3, 8], &[8])
                    });
                }
            }
            let same = [(0.05, 3 + shift); 3];
            run(&Case {
                quant: Some(same),
                ..case(BuiltinOp::Maximum, dtype, &[4, 4], &[4])
            });
            run(&Case {
                quant: Some(same),
                ..case(BuiltinOp::Minimum, dtype, &[4, 4], &[4, 4])
            });
        }
    }

    #[test]
    fn incompatible_shapes_are_errors() {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let a = sg.tensor("a", DType::F32, &[2, 3]);
        let b = sg.tensor("b", DType::F32, &[3, 2]);
        let y = sg.tensor("y", DType::F32, &[2, 3]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Add),
            &[Some(a), Some(b)],
            &[y],
            OpOptions::None,
        );
        sg.set_inputs(&[a, b]);
        sg.set_outputs(&[y]);
        let model = Arc::new(switchyard_interpreter::Model::from_bytes(&mb.finish()).unwrap());
        let r = switchyard_interpreter::Interpreter::new(
            model,
            Arc::new(CpuResolver::reference()),
            Default::default(),
        );
        assert!(r.is_err());
    }

    /// Issue 10, defect 12: INT64 FLOOR_DIV and FLOOR_MOD of i64::MIN by -1 overflowed
    /// (`div_euclid`/`%` panic) and brought the run down; they wrap now, and ordinary
    /// operands still floor.
    #[test]
    fn int64_floor_div_and_mod_of_min_by_minus_one_do_not_panic() {
        for (op, want) in [
            (BuiltinOp::FloorDiv, [i64::MIN, -4, -4, 3, 0]),
            (BuiltinOp::FloorMod, [0, -1, 1, 1, 0]),
        ] {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let a = sg.tensor("a", DType::I64, &[5]);
            let b = sg.tensor("b", DType::I64, &[5]);
            let y = sg.tensor("y", DType::I64, &[5]);
            sg.op(
                OpKind::Builtin(op),
                &[Some(a), Some(b)],
                &[y],
                OpOptions::None,
            );
            sg.set_inputs(&[a, b]);
            sg.set_outputs(&[y]);
            let model = Arc::new(switchyard_interpreter::Model::from_bytes(&mb.finish()).unwrap());
            let xs: [i64; 5] = [i64::MIN, 7, -7, 7, 5];
            let ys: [i64; 5] = [-1, -2, 2, 2, 0];
            let ta = switchyard_interpreter::Tensor::from_bytes(
                DType::I64,
                vec![5],
                bytemuck::cast_slice(&xs),
            )
            .unwrap();
            let tb = switchyard_interpreter::Tensor::from_bytes(
                DType::I64,
                vec![5],
                bytemuck::cast_slice(&ys),
            )
            .unwrap();
            for (name, r) in resolvers() {
                let mut it =
                    switchyard_interpreter::Interpreter::new(model.clone(), r, Default::default())
                        .unwrap();
                let out = it.run(&[ta.view(), tb.view()]).unwrap();
                let got: Vec<i64> = out[0]
                    .data
                    .as_slice()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!(got, want, "{op:?} {name}");
            }
        }
    }
}
