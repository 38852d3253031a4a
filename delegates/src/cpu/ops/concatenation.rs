//! CONCATENATION (any axis; int8/uint8 inputs with different quantization are requantized
//! to the output's, as LiteRT does) and PACK (stacking along a new axis).

use switchyard_interpreter::{
    Activation, BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel,
    TensorView, TensorViewMut,
};

use crate::cpu::KernelMode;
use crate::cpu::quant::{dtype_range, load_q, store_q};
use crate::cpu::util::normalize_axis;

struct Concat {
    /// Bytes per "row" of each input along the axis (axis size * inner * elem size).
    chunk: Vec<usize>,
    outer: usize,
    /// Per input: (scale_in/scale_out, zp_in, zp_out) when it must be requantized.
    requant: Vec<Option<(f32, i32, i32)>>,
    dtype: DType,
    elem: usize,
    qrange: (i32, i32),
    activation: Activation,
}

pub fn prepare(ctx: &PrepareCtx<'_>, _mode: KernelMode) -> Result<PreparedKernel, KernelError> {
    if ctx.inputs.is_empty() {
        return Err(KernelError::invalid("no inputs"));
    }
    if ctx.outputs.len() != 1 {
        return Err(KernelError::invalid("expects one output"));
    }
    let first = ctx.input(0)?;
    let out = ctx.output(0)?;
    let is_pack = ctx.op().builtin() == Some(BuiltinOp::Pack);
    let (axis_opt, activation) = match &ctx.node.options {
        OpOptions::Concatenation { axis, activation } => (*axis as i64, *activation),
        _ => (0, Activation::None),
    };
    // PACK's axis lives in PackOptions (values_count, axis), which we do not decode;
    // LiteRT models use axis 0 by default.
    let base: Vec<usize> = first.shape.to_vec();
    let (axis, shapes): (usize, Vec<Vec<usize>>) = if is_pack {
        let axis = normalize_axis(0, base.len() + 1)?;
        let shapes = ctx
            .inputs
            .iter()
            .map(|i| {
                let i = i.ok_or_else(|| KernelError::invalid("missing input"))?;
                if i.shape != base.as_slice() {
                    return Err(KernelError::shape("PACK inputs must have equal shapes"));
                }
                let mut s = base.clone();
                s.insert(axis, 1);
                Ok(s)
            })
            .collect::<Result<_, _>>()?;
        (axis, shapes)
    } else {
        let axis = normalize_axis(axis_opt, base.len())?;
        let shapes = ctx
            .inputs
            .iter()
            .map(|i| {
                i.map(|i| i.shape.to_vec())
                    .ok_or_else(|| KernelError::invalid("missing input"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        (axis, shapes)
    };
    let rank = shapes[0].len();
    let mut out_shape = shapes[0].clone();
    out_shape[axis] = 0;
    for (k, s) in shapes.iter().enumerate() {
        let i = ctx.input(k)?;
        if i.dtype != first.dtype {
            return Err(KernelError::invalid("inputs have different dtypes"));
        }
        if s.len() != rank || (0..rank).any(|d| d != axis && s[d] != shapes[0][d]) {
            return Err(KernelError::shape(format!(
                "input {k} shape {s:?} does not match {:?} off axis {axis}",
                shapes[0]
            )));
        }
        out_shape[axis] += s[axis];
    }
    let elem = first.dtype.size();
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let chunk = shapes.iter().map(|s| s[axis] * inner * elem).collect();
    let quantized = matches!(first.dtype, DType::I8 | DType::U8 | DType::I16);
    let requant = (0..shapes.len())
        .map(|k| {
            if !quantized {
                return Ok(None);
            }
            let (Some(qi), Some(qo)) = (ctx.input(k)?.quant, out.quant) else {
                return Ok(None);
            };
            let (si, zi, so, zo) = (
                qi.scale_at(0),
                qi.zero_point_at(0) as i32,
                qo.scale_at(0),
                qo.zero_point_at(0) as i32,
            );
            Ok(if si == so && zi == zo {
                None
            } else {
                Some((si / so, zi, zo))
            })
        })
        .collect::<Result<Vec<_>, KernelError>>()?;
    let qrange = if quantized {
        dtype_range(first.dtype)?
    } else {
        (0, 0)
    };
    Ok(PreparedKernel::new(
        vec![out_shape],
        Concat {
            chunk,
            outer,
            requant,
            dtype: first.dtype,
            elem,
            qrange,
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
        let row: usize = self.chunk.iter().sum();
        for (k, x) in inputs.iter().enumerate() {
            let x = x
                .as_ref()
                .ok_or_else(|| KernelError::invalid("missing input"))?;
            let c = self.chunk[k];
            let offset: usize = self.chunk[..k].iter().sum();
            for o in 0..self.outer {
                let src = &x.bytes[o * c..(o + 1) * c];
                let dst_start = o * row + offset;
                match self.requant[k] {
                    None => out.bytes[dst_start..dst_start + c].copy_from_slice(src),
                    Some((ratio, zi, zo)) => {
                        let n = c / self.elem;
                        let base = dst_start / self.elem;
                        for e in 0..n {
                            let q = load_q(src, self.dtype, e);
                            let v = ((ratio * (q - zi) as f32).round() as i32 + zo)
                                .clamp(self.qrange.0, self.qrange.1);
                            store_q(out.bytes, self.dtype, base + e, v);
                        }
                    }
                }
            }
        }
        if self.dtype == DType::F32 && self.activation != Activation::None {
            for v in out.f32s_mut()? {
                *v = self.activation.apply(*v);
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "concatenation"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, OpResolver, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::cpu::CpuResolver;

    #[test]
    fn concatenation_matches_litert() {
        let resolvers: Vec<(&str, Arc<dyn OpResolver>)> = vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ];
        for (axis, shapes) in [
            (-1, [[2, 3, 4], [2, 3, 5]]),
            (1, [[2, 1, 4], [2, 3, 4]]),
            (0, [[1, 3, 4], [2, 3, 4]]),
        ] {
            // LiteRT requires equal quantization for int8 inputs; uint8 may be requantized.
            for (dtype, q) in [
                (DType::F32, None),
                (DType::I8, Some([(0.1, 2), (0.1, 2), (0.1, 2)])),
                (DType::U8, Some([(0.1, 130), (0.05, 120), (0.1, 128)])),
            ] {
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let a = sg.tensor("a", dtype, &shapes[0]);
                let b = sg.tensor("b", dtype, &shapes[1]);
                let mut out = shapes[0].to_vec();
                let ax = (axis + 3) as usize % 3;
                out[ax] += shapes[1][ax];
                let y = sg.tensor("y", dtype, &out);
                if let Some(q) = q {
                    for (t, (s, z)) in [a, b, y].into_iter().zip(q) {
                        sg.set_quant(t, Quant::per_tensor(s, z));
                    }
                }
                sg.op(
                    OpKind::Builtin(BuiltinOp::Concatenation),
                    &[Some(a), Some(b)],
                    &[y],
                    OpOptions::Concatenation {
                        axis,
                        activation: Activation::None,
                    },
                );
                sg.set_inputs(&[a, b]);
                sg.set_outputs(&[y]);
                let xa = random_tensor(dtype, &shapes[0], 1, -128.0, 255.0);
                let xb = random_tensor(dtype, &shapes[1], 2, -128.0, 255.0);
                assert_matches_litert(
                    &format!("CONCAT axis {axis} {dtype}"),
                    &mb.finish(),
                    &[xa, xb],
                    &resolvers,
                    None,
                );
            }
        }
    }
}
