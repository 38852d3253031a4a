//! CONCATENATION (any axis, optional fused ReLU-family activation) and PACK (stacking
//! equal-shaped inputs along a new axis, i.e. concatenation of the inputs with a unit
//! dimension inserted).
//!
//! Quantized inputs whose scale or zero point differ from the output's are requantized
//! with LiteRT's float formula `round(q * (s_in / s_out) - z_in * (s_in / s_out)) + z_out`
//! (its uint8 `ConcatenationWithScaling`); inputs already in the output's quantization are
//! copied. LiteRT refuses differing int8 quantization; we requantize int8 and int16 the
//! same way, which agrees with LiteRT on every model it accepts.

use switchyard_interpreter::{
    Activation, BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel,
    TensorView, TensorViewMut,
};

use super::movement::{count, expect_bytes, movable_elem, same_dtype};
use crate::quant::{activation_range, dtype_range, load_q, store_q};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::normalize_axis;
use switchyard_interpreter::NodeSupportCtx;

/// CONCATENATION, PACK.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Concatenation, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Pack, prepare),
];

/// GPU: float32 inputs that differ from the output only along the axis, a clamp as
/// fused activation.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    let OpOptions::Concatenation { axis, activation } = &ctx.node.options else {
        return Err("CONCATENATION without its options".into());
    };
    if ctx.inputs.is_empty() || ctx.outputs.len() != 1 {
        return Err("expects at least one input and one output".into());
    }
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&out, "output 0")?;
    let rank = out.shape.len();
    let axis = normalize_axis(i64::from(*axis), rank).map_err(|e| e.to_string())?;
    let outer: usize = out.shape[..axis].iter().product();
    let inner: usize = out.shape[axis + 1..].iter().product();
    let out_row = out.shape[axis] * inner;
    support::gpu_u32(out_row, "row")?;
    let mut offset = 0usize;
    for i in 0..ctx.inputs.len() {
        let x = support::input(ctx, i)?;
        support::gpu_f32(&x, &format!("input {i}"))?;
        let same_elsewhere =
            x.shape.len() == rank && (0..rank).all(|d| d == axis || x.shape[d] == out.shape[d]);
        if !same_elsewhere {
            return Err(format!(
                "input {i} shape {:?} does not fit output {:?} along axis {axis}",
                x.shape, out.shape
            ));
        }
        support::gpu_count(x.shape)?;
        let row = x.shape[axis] * inner;
        support::gpu_u32(row.max(1), "row")?;
        support::gpu_u32(offset, "offset")?;
        offset += row;
    }
    if offset != out_row || outer * out_row != out.element_count() {
        return Err(format!(
            "inputs fill {offset} of the output's {out_row} values per row"
        ));
    }
    support::gpu_activation(*activation)
}

/// How one quantized input maps to the output's quantization.
#[derive(Clone, Copy, Debug)]
struct Requant {
    scale: f32,
    bias: f32,
    zp_out: i32,
}

struct Concat {
    dtype: DType,
    elem: usize,
    outer: usize,
    /// Elements each input contributes per outer index (its axis size times the inner
    /// size).
    rows: Vec<usize>,
    requant: Vec<Option<Requant>>,
    /// Clamp of quantized outputs: the dtype range narrowed by the fused activation.
    qclamp: Option<(i32, i32)>,
    activation: Activation,
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if ctx.inputs.is_empty() {
        return Err(KernelError::invalid("expects at least one input"));
    }
    if ctx.outputs.len() != 1 {
        return Err(KernelError::invalid(format!(
            "expects 1 output, has {}",
            ctx.outputs.len()
        )));
    }
    let first = ctx.input(0)?;
    let out = ctx.output(0)?;
    let dtype = first.dtype;
    let elem = movable_elem(dtype)?;
    same_dtype(dtype, out.dtype)?;
    let inputs = (0..ctx.inputs.len())
        .map(|k| ctx.input(k))
        .collect::<Result<Vec<_>, _>>()?;
    for (k, i) in inputs.iter().enumerate() {
        if i.dtype != dtype {
            return Err(KernelError::invalid(format!(
                "input {k} is {}, input 0 is {dtype}",
                i.dtype
            )));
        }
    }
    let (axis, shapes, activation): (usize, Vec<Vec<usize>>, Activation) = match ctx.op().builtin()
    {
        Some(BuiltinOp::Pack) => {
            let (values_count, axis) = match &ctx.node.options {
                OpOptions::Pack { values_count, axis } => (*values_count, *axis),
                _ => (inputs.len(), 0),
            };
            if values_count != inputs.len() {
                return Err(KernelError::invalid(format!(
                    "PACK of {values_count} values has {} inputs",
                    inputs.len()
                )));
            }
            let axis = normalize_axis(axis as i64, first.shape.len() + 1)?;
            let mut shapes = Vec::with_capacity(inputs.len());
            for (k, i) in inputs.iter().enumerate() {
                if i.shape != first.shape {
                    return Err(KernelError::shape(format!(
                        "PACK input {k} has shape {:?}, input 0 has {:?}",
                        i.shape, first.shape
                    )));
                }
                let mut s = i.shape.to_vec();
                s.insert(axis, 1);
                shapes.push(s);
            }
            (axis, shapes, Activation::None)
        }
        Some(BuiltinOp::Concatenation) => {
            let (axis, activation) = match &ctx.node.options {
                OpOptions::Concatenation { axis, activation } => (*axis, *activation),
                _ => (0, Activation::None),
            };
            if first.shape.is_empty() {
                return Err(KernelError::shape("cannot concatenate scalars"));
            }
            let axis = normalize_axis(axis as i64, first.shape.len())?;
            (
                axis,
                inputs.iter().map(|i| i.shape.to_vec()).collect(),
                activation,
            )
        }
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a concatenation",
                ctx.op()
            )));
        }
    };
    let rank = shapes[0].len();
    let mut out_shape = shapes[0].clone();
    out_shape[axis] = 0;
    for (k, s) in shapes.iter().enumerate() {
        if s.len() != rank || (0..rank).any(|d| d != axis && s[d] != shapes[0][d]) {
            return Err(KernelError::shape(format!(
                "input {k} of shape {s:?} does not match {:?} off axis {axis}",
                shapes[0]
            )));
        }
        out_shape[axis] = out_shape[axis]
            .checked_add(s[axis])
            .ok_or_else(|| KernelError::shape("concatenated axis overflows"))?;
    }
    count(&out_shape)?;
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let rows = shapes.iter().map(|s| s[axis] * inner).collect();

    let quantized = dtype.is_quantized_int();
    if !matches!(
        activation,
        Activation::None | Activation::Relu | Activation::Relu6 | Activation::ReluN1To1
    ) || (activation != Activation::None && !quantized && dtype != DType::F32)
    {
        return Err(KernelError::unsupported(format!(
            "{} with fused {activation:?} on {dtype}",
            ctx.op()
        )));
    }
    let mut requant = vec![None; inputs.len()];
    let mut qclamp = None;
    if quantized {
        if let Some(qo) = out.quant {
            let (so, zo) = (qo.scale_at(0), qo.zero_point_at(0) as i32);
            for (k, i) in inputs.iter().enumerate() {
                let Some(qi) = i.quant else { continue };
                let (si, zi) = (qi.scale_at(0), qi.zero_point_at(0) as i32);
                if si != so || zi != zo {
                    let scale = si * (1.0 / so);
                    requant[k] = Some(Requant {
                        scale,
                        bias: -(zi as f32) * scale,
                        zp_out: zo,
                    });
                }
            }
            qclamp = Some(activation_range(activation, so, zo, dtype)?);
        } else if activation != Activation::None {
            return Err(KernelError::invalid(
                "quantized output with a fused activation has no quantization parameters",
            ));
        } else {
            qclamp = Some(dtype_range(dtype)?);
        }
    }
    Ok(PreparedKernel::new(
        vec![out_shape],
        Concat {
            dtype,
            elem,
            outer,
            rows,
            requant,
            qclamp,
            activation,
        },
    ))
}

impl OpKernel for Concat {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        let row: usize = self.rows.iter().sum();
        expect_bytes("output", out.bytes.len(), &[self.outer, row], self.elem)?;
        if inputs.len() != self.rows.len() {
            return Err(KernelError::invalid(format!(
                "expects {} inputs, got {}",
                self.rows.len(),
                inputs.len()
            )));
        }
        let mut offset = 0;
        for (k, x) in inputs.iter().enumerate() {
            let x = x
                .as_ref()
                .ok_or_else(|| KernelError::invalid(format!("missing input {k}")))?;
            let n = self.rows[k];
            expect_bytes(
                format_args!("input {k}"),
                x.bytes.len(),
                &[self.outer, n],
                self.elem,
            )?;
            for o in 0..self.outer {
                let src = &x.bytes[o * n * self.elem..(o + 1) * n * self.elem];
                let dst_elem = o * row + offset;
                match (self.requant[k], self.qclamp) {
                    (Some(r), Some((lo, hi))) => {
                        for e in 0..n {
                            let q = load_q(src, self.dtype, e) as f32;
                            let v = ((q * r.scale + r.bias).round() as i32)
                                .saturating_add(r.zp_out)
                                .clamp(lo, hi);
                            store_q(out.bytes, self.dtype, dst_elem + e, v);
                        }
                    }
                    _ => out.bytes[dst_elem * self.elem..(dst_elem + n) * self.elem]
                        .copy_from_slice(src),
                }
            }
            offset += n;
        }
        if self.activation != Activation::None {
            if self.dtype == DType::F32 {
                for v in out.f32s_mut()? {
                    *v = self.activation.apply(*v);
                }
            } else if let Some((lo, hi)) = self.qclamp {
                for e in 0..self.outer * row {
                    let v = load_q(out.bytes, self.dtype, e).clamp(lo, hi);
                    store_q(out.bytes, self.dtype, e, v);
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        if self.requant.iter().any(Option::is_some) {
            "concatenation/requantize"
        } else {
            "concatenation/copy"
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, Quant, Tensor};
    use switchyard_testkit::{
        Tolerance, assert_matches_litert, compare, litert_run, switchyard_run,
    };

    use super::super::movement::testing::{data, expect_error, resolvers};
    use super::*;

    fn concat_model(
        dtype: DType,
        shapes: &[&[usize]],
        axis: i32,
        activation: Activation,
        quant: Option<&[(f32, i64)]>,
    ) -> ModelBuilder {
        let rank = shapes[0].len() as i32;
        let ax = ((axis + rank) % rank) as usize;
        let mut out = shapes[0].to_vec();
        out[ax] = shapes.iter().map(|s| s[ax]).sum();
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let xs: Vec<usize> = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| sg.tensor(&format!("x{k}"), dtype, s))
            .collect();
        let y = sg.tensor("y", dtype, &out);
        if let Some(q) = quant {
            for (&t, &(s, z)) in xs.iter().chain([&y]).zip(q) {
                sg.set_quant(t, Quant::per_tensor(s, z));
            }
        }
        let ins: Vec<Option<usize>> = xs.iter().map(|&x| Some(x)).collect();
        sg.op(
            OpKind::Builtin(BuiltinOp::Concatenation),
            &ins,
            &[y],
            OpOptions::Concatenation { axis, activation },
        );
        sg.set_inputs(&xs);
        sg.set_outputs(&[y]);
        mb
    }

    fn inputs(dtype: DType, shapes: &[&[usize]]) -> Vec<Tensor> {
        shapes
            .iter()
            .enumerate()
            .map(|(k, s)| data(dtype, s, k as u64 + 1))
            .collect()
    }

    #[test]
    fn concatenation_matches_litert() {
        let cases: [(i32, &[&[usize]]); 4] = [
            (-1, &[&[2, 3, 4], &[2, 3, 5]]),
            (1, &[&[2, 1, 4], &[2, 3, 4], &[2, 2, 4]]),
            (0, &[&[1, 3, 4], &[2, 3, 4]]),
            (-2, &[&[1, 2], &[3, 2]]),
        ];
        for (axis, shapes) in cases {
            for dtype in [
                DType::F32,
                DType::I8,
                DType::U8,
                DType::I16,
                DType::I32,
                DType::I64,
            ] {
                let q: Option<Vec<(f32, i64)>> = match dtype {
                    DType::I8 => Some(vec![(0.1, 2); 4]),
                    DType::I16 => Some(vec![(0.5, 0); 4]),
                    DType::U8 => Some(vec![(0.1, 130), (0.05, 120), (0.2, 100), (0.1, 128)]),
                    _ => None,
                };
                let q = q.map(|q| {
                    let mut q = q[..shapes.len()].to_vec();
                    q.push((0.1, if dtype == DType::U8 { 128 } else { 2 }));
                    if dtype == DType::I16 {
                        q = vec![(0.5, 0); shapes.len() + 1];
                    }
                    q
                });
                let mb = concat_model(dtype, shapes, axis, Activation::None, q.as_deref());
                assert_matches_litert(
                    &format!("CONCATENATION axis {axis} {dtype}"),
                    &mb.finish(),
                    &inputs(dtype, shapes),
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
    }

    /// LiteRT refuses int8 inputs quantized unlike the output; the same concatenation in
    /// uint8 (every zero point shifted by 128) is its oracle.
    #[test]
    fn int8_requantization_matches_litert_uint8() {
        let shapes: &[&[usize]] = &[&[2, 5], &[2, 7]];
        let q8 = [(0.1f32, -10i64), (0.037, 20), (0.07, 5)];
        let q_u8: Vec<(f32, i64)> = q8.iter().map(|&(s, z)| (s, z + 128)).collect();
        let xs8 = inputs(DType::I8, shapes);
        let xs_u8: Vec<Tensor> = xs8
            .iter()
            .map(|t| {
                let bytes: Vec<u8> = t.data.as_slice().iter().map(|&b| b ^ 0x80).collect();
                Tensor::from_bytes(DType::U8, t.shape.clone(), &bytes).unwrap()
            })
            .collect();
        let expected = litert_run(
            &concat_model(DType::U8, shapes, 1, Activation::None, Some(&q_u8)).finish(),
            &xs_u8,
            switchyard_testkit::LiteRtKernels::Builtin,
        )
        .unwrap();
        let shifted: Vec<u8> = expected[0]
            .data
            .as_slice()
            .iter()
            .map(|&b| b ^ 0x80)
            .collect();
        let expected = Tensor::from_bytes(DType::I8, expected[0].shape.clone(), &shifted).unwrap();
        let model = concat_model(DType::I8, shapes, 1, Activation::None, Some(&q8)).finish();
        for (name, r) in resolvers() {
            let got = switchyard_run(&model, &xs8, r).unwrap();
            compare(&got[0], &expected, Tolerance::Exact)
                .unwrap_or_else(|e| panic!("[{name}] {e}"));
        }
    }

    /// The fused activation equals the unfused concatenation followed by the activation
    /// op, which LiteRT runs.
    #[test]
    fn fused_activation_matches_concat_then_activation() {
        let shapes: &[&[usize]] = &[&[2, 3], &[2, 4]];
        for (act, op) in [
            (Activation::Relu, BuiltinOp::Relu),
            (Activation::Relu6, BuiltinOp::Relu6),
            (Activation::ReluN1To1, BuiltinOp::ReluN1To1),
        ] {
            for (dtype, q) in [
                (DType::F32, None),
                (DType::U8, Some(vec![(0.05f32, 128i64); 3])),
                (DType::I8, Some(vec![(0.05f32, 0i64); 3])),
            ] {
                let xs = inputs(dtype, shapes);
                let mut unfused = concat_model(dtype, shapes, 1, Activation::None, q.as_deref());
                let sg = unfused.main();
                let z = sg.tensor("z", dtype, &[2, 7]);
                if let Some(q) = &q {
                    sg.set_quant(z, Quant::per_tensor(q[0].0, q[0].1));
                }
                // Tensor 2 is the concatenation's output ("y").
                sg.op(OpKind::Builtin(op), &[Some(2)], &[z], OpOptions::None);
                sg.set_outputs(&[z]);
                let expected = litert_run(
                    &unfused.finish(),
                    &xs,
                    switchyard_testkit::LiteRtKernels::Builtin,
                )
                .unwrap();
                let fused = concat_model(dtype, shapes, 1, act, q.as_deref()).finish();
                for (name, r) in resolvers() {
                    let got = switchyard_run(&fused, &xs, r).unwrap();
                    compare(&got[0], &expected[0], Tolerance::Exact)
                        .unwrap_or_else(|e| panic!("[{name}] {act:?} {dtype}: {e}"));
                }
            }
        }
    }

    #[test]
    fn pack_matches_litert() {
        for axis in [0, 1, 2, -1, -3] {
            for dtype in [DType::F32, DType::I8, DType::U8, DType::I32, DType::I64] {
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let xs: Vec<usize> = (0..3)
                    .map(|k| sg.tensor(&format!("x{k}"), dtype, &[2, 4]))
                    .collect();
                let mut out = vec![2, 4];
                out.insert(((axis + 3) % 3) as usize, 3);
                let y = sg.tensor("y", dtype, &out);
                if dtype.is_quantized_int() {
                    for &t in xs.iter().chain([&y]) {
                        sg.set_quant(t, Quant::per_tensor(0.5, 3));
                    }
                }
                let ins: Vec<Option<usize>> = xs.iter().map(|&x| Some(x)).collect();
                sg.op(
                    OpKind::Builtin(BuiltinOp::Pack),
                    &ins,
                    &[y],
                    OpOptions::Pack {
                        values_count: 3,
                        axis,
                    },
                );
                sg.set_inputs(&xs);
                sg.set_outputs(&[y]);
                assert_matches_litert(
                    &format!("PACK axis {axis} {dtype}"),
                    &mb.finish(),
                    &inputs(dtype, &[&[2, 4], &[2, 4], &[2, 4]]),
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
    }

    #[test]
    fn bad_concatenations_are_errors() {
        let shapes: &[&[usize]] = &[&[2, 3], &[3, 3]];
        let mb = concat_model(DType::F32, shapes, 1, Activation::None, None);
        expect_error(&mb, &inputs(DType::F32, shapes), "does not match");
        let shapes: &[&[usize]] = &[&[2, 3], &[2, 3]];
        let mb = concat_model(DType::F32, shapes, 2, Activation::None, None);
        expect_error(&mb, &inputs(DType::F32, shapes), "out of range");
        let mb = concat_model(DType::F32, shapes, 1, Activation::Tanh, None);
        expect_error(&mb, &inputs(DType::F32, shapes), "unsupported");

        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let a = sg.tensor("a", DType::F32, &[2, 3]);
        let b = sg.tensor("b", DType::F32, &[2, 4]);
        let y = sg.tensor("y", DType::F32, &[2, 2, 3]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Pack),
            &[Some(a), Some(b)],
            &[y],
            OpOptions::Pack {
                values_count: 2,
                axis: 0,
            },
        );
        sg.set_inputs(&[a, b]);
        sg.set_outputs(&[y]);
        expect_error(
            &mb,
            &[data(DType::F32, &[2, 3], 1), data(DType::F32, &[2, 4], 2)],
            "PACK input 1 has shape",
        );
    }
}
