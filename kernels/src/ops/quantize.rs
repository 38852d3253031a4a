//! QUANTIZE (float -> int8/uint8/int16, and requantization between integer types),
//! DEQUANTIZE (int8/uint8/int16 per tensor or per channel, and float16 -> float32, which
//! MediaPipe models apply to every weight: the executor folds those at prepare), and CAST.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, PrepareCtx, PreparedKernel, Quant, TensorView,
    TensorViewMut, kernel::input,
};

use crate::quant::{
    dtype_range, load_q, multiply_by_quantized_multiplier, per_tensor, quantize_multiplier,
    quantize_value, store_q,
};
use crate::registry::OpDescriptor;
use crate::support;

/// QUANTIZE, DEQUANTIZE, CAST.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Quantize, prepare)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Dequantize, prepare).gpu(support::gpu_of_constant),
    OpDescriptor::new(BuiltinOp::Cast, prepare),
];

enum Kernel {
    Quantize {
        scale: f32,
        zp: i32,
        qmin: i32,
        qmax: i32,
        out: DType,
    },
    Requantize {
        in_dtype: DType,
        out: DType,
        zp_in: i32,
        zp_out: i32,
        m: (i32, i32),
        qmin: i32,
        qmax: i32,
    },
    /// Per-channel scales along `axis`; `inner` is the product of dims after the axis.
    Dequantize {
        in_dtype: DType,
        scales: Vec<f32>,
        zps: Vec<i32>,
        inner: usize,
    },
    DequantizeF16,
    Cast {
        from: DType,
        to: DType,
    },
}

struct Quantize {
    kernel: Kernel,
}

fn per_channel(q: &Quant, shape: &[usize]) -> Result<(Vec<f32>, Vec<i32>, usize), KernelError> {
    let channels = q.scale.len();
    if channels <= 1 {
        return Ok((vec![q.scale_at(0)], vec![q.zero_point_at(0) as i32], 1));
    }
    if shape.get(q.axis) != Some(&channels) {
        return Err(KernelError::shape(format!(
            "{channels} scales along axis {} of shape {shape:?}",
            q.axis
        )));
    }
    let inner = shape[q.axis + 1..].iter().product();
    Ok((
        q.scale.clone(),
        (0..channels).map(|c| q.zero_point_at(c) as i32).collect(),
        inner,
    ))
}

fn castable(d: DType) -> bool {
    matches!(
        d,
        DType::F32
            | DType::I32
            | DType::I64
            | DType::U8
            | DType::I8
            | DType::I16
            | DType::Bool
            | DType::F16
    )
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    let out = ctx.output(0)?;
    let kernel = match ctx.op().builtin() {
        Some(BuiltinOp::Quantize) => {
            let (so, zo) = per_tensor(out.quant, "output")?;
            let (qmin, qmax) = dtype_range(out.dtype)?;
            match x.dtype {
                DType::F32 => Kernel::Quantize {
                    scale: so,
                    zp: zo,
                    qmin,
                    qmax,
                    out: out.dtype,
                },
                DType::I8 | DType::U8 | DType::I16 => {
                    let (si, zi) = per_tensor(x.quant, "input")?;
                    Kernel::Requantize {
                        in_dtype: x.dtype,
                        out: out.dtype,
                        zp_in: zi,
                        zp_out: zo,
                        m: quantize_multiplier(si as f64 / so as f64),
                        qmin,
                        qmax,
                    }
                }
                other => return Err(KernelError::dtype("float32, int8, uint8 or int16", other)),
            }
        }
        Some(BuiltinOp::Dequantize) => {
            if out.dtype != DType::F32 {
                return Err(KernelError::dtype("float32 output", out.dtype));
            }
            match x.dtype {
                DType::F16 => Kernel::DequantizeF16,
                DType::I8 | DType::U8 | DType::I16 => {
                    let q = x.quant.ok_or_else(|| {
                        KernelError::invalid("input has no quantization parameters")
                    })?;
                    let (scales, zps, inner) = per_channel(q, x.shape)?;
                    Kernel::Dequantize {
                        in_dtype: x.dtype,
                        scales,
                        zps,
                        inner,
                    }
                }
                other => return Err(KernelError::dtype("float16, int8, uint8 or int16", other)),
            }
        }
        Some(BuiltinOp::Cast) => {
            if !castable(x.dtype) || !castable(out.dtype) {
                return Err(KernelError::unsupported(format!(
                    "CAST from {} to {}",
                    x.dtype, out.dtype
                )));
            }
            Kernel::Cast {
                from: x.dtype,
                to: out.dtype,
            }
        }
        _ => return Err(KernelError::unsupported(ctx.op().to_string())),
    };
    Ok(PreparedKernel::new(
        vec![x.shape.to_vec()],
        Quantize { kernel },
    ))
}

fn read_f64(bytes: &[u8], d: DType, i: usize) -> f64 {
    match d {
        DType::F32 => f32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]) as f64,
        DType::F16 => half::f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f64(),
        DType::I32 => i32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ]) as f64,
        DType::I64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8 * i..8 * i + 8]);
            i64::from_le_bytes(b) as f64
        }
        DType::Bool => (bytes[i] != 0) as u8 as f64,
        other => load_q(bytes, other, i) as f64,
    }
}

fn is_int(d: DType) -> bool {
    matches!(
        d,
        DType::I8 | DType::U8 | DType::I16 | DType::I32 | DType::I64
    )
}

fn read_i64(bytes: &[u8], d: DType, i: usize) -> i64 {
    let at = |w: usize| {
        let mut b = [0u8; 8];
        b[..w].copy_from_slice(&bytes[w * i..w * i + w]);
        b
    };
    match d {
        DType::I8 => i64::from(bytes[i] as i8),
        DType::I16 => i64::from(i16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])),
        DType::I32 => {
            let b = at(4);
            i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        DType::I64 => i64::from_le_bytes(at(8)),
        _ => i64::from(bytes[i]),
    }
}

/// Stores `v` as `d`, keeping its low bits (Rust's integer `as` wraps like static_cast).
fn write_wrapping(bytes: &mut [u8], d: DType, i: usize, v: i64) {
    match d {
        DType::I8 => bytes[i] = v as i8 as u8,
        DType::I16 => bytes[2 * i..2 * i + 2].copy_from_slice(&(v as i16).to_le_bytes()),
        DType::I32 => bytes[4 * i..4 * i + 4].copy_from_slice(&(v as i32).to_le_bytes()),
        DType::I64 => bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes()),
        _ => bytes[i] = v as u8,
    }
}

fn write_f64(bytes: &mut [u8], d: DType, i: usize, v: f64) {
    match d {
        DType::F32 => bytes[4 * i..4 * i + 4].copy_from_slice(&(v as f32).to_le_bytes()),
        DType::F16 => {
            bytes[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f64(v).to_le_bytes())
        }
        DType::I32 => bytes[4 * i..4 * i + 4].copy_from_slice(&(v as i32).to_le_bytes()),
        DType::I64 => bytes[8 * i..8 * i + 8].copy_from_slice(&(v as i64).to_le_bytes()),
        DType::Bool => bytes[i] = (v != 0.0) as u8,
        DType::I8 => bytes[i] = v as i8 as u8,
        DType::I16 => bytes[2 * i..2 * i + 2].copy_from_slice(&(v as i16).to_le_bytes()),
        _ => bytes[i] = v as u8,
    }
}

impl OpKernel for Quantize {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        let n = x.element_count();
        match &self.kernel {
            Kernel::Quantize {
                scale,
                zp,
                qmin,
                qmax,
                out: odt,
            } => {
                for (i, &v) in x.f32s()?.iter().enumerate() {
                    store_q(
                        out.bytes,
                        *odt,
                        i,
                        quantize_value(v, *scale, *zp, *qmin, *qmax),
                    );
                }
            }
            Kernel::Requantize {
                in_dtype,
                out: odt,
                zp_in,
                zp_out,
                m,
                qmin,
                qmax,
            } => {
                for i in 0..n {
                    // Saturating: zero points come from the model file.
                    let q = load_q(x.bytes, *in_dtype, i).saturating_sub(*zp_in);
                    let v = multiply_by_quantized_multiplier(q, m.0, m.1)
                        .saturating_add(*zp_out)
                        .clamp(*qmin, *qmax);
                    store_q(out.bytes, *odt, i, v);
                }
            }
            Kernel::Dequantize {
                in_dtype,
                scales,
                zps,
                inner,
            } => {
                let o = out.f32s_mut()?;
                let channels = scales.len();
                for (i, slot) in o.iter_mut().enumerate().take(n) {
                    let c = if channels == 1 {
                        0
                    } else {
                        (i / inner) % channels
                    };
                    *slot = scales[c] * (load_q(x.bytes, *in_dtype, i) - zps[c]) as f32;
                }
            }
            Kernel::DequantizeF16 => {
                for (o, v) in out.f32s_mut()?.iter_mut().zip(x.f16s()?) {
                    *o = v.to_f32();
                }
            }
            Kernel::Cast { from, to } if is_int(*from) && is_int(*to) => {
                // Between integer types LiteRT's kernel is C++'s static_cast: modulo the
                // target's width, not saturating (and exact for int64, which f64 is not).
                for i in 0..n {
                    write_wrapping(out.bytes, *to, i, read_i64(x.bytes, *from, i));
                }
            }
            Kernel::Cast { from, to } => {
                for i in 0..n {
                    write_f64(out.bytes, *to, i, read_f64(x.bytes, *from, i));
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.kernel {
            Kernel::Quantize { .. } => "quantize",
            Kernel::Requantize { .. } => "requantize",
            Kernel::Dequantize { .. } | Kernel::DequantizeF16 => "dequantize",
            Kernel::Cast { .. } => "cast",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, OpOptions, OpResolver};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::CpuResolver;

    fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    fn model(
        op: BuiltinOp,
        din: DType,
        qin: Option<Quant>,
        dout: DType,
        qout: Option<Quant>,
        shape: &[usize],
    ) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", din, shape);
        let y = sg.tensor("y", dout, shape);
        if let Some(q) = qin {
            sg.set_quant(x, q);
        }
        if let Some(q) = qout {
            sg.set_quant(y, q);
        }
        sg.op(OpKind::Builtin(op), &[Some(x)], &[y], OpOptions::None);
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn quantize_and_requantize_match_litert() {
        for (dt, zp) in [(DType::I8, -3), (DType::U8, 130)] {
            let m = model(
                BuiltinOp::Quantize,
                DType::F32,
                None,
                dt,
                Some(Quant::per_tensor(0.02, zp)),
                &[4, 33],
            );
            let x = random_tensor(DType::F32, &[4, 33], 31, -3.0, 3.0);
            assert_matches_litert(&format!("QUANTIZE f32->{dt}"), &m, &[x], &resolvers(), None);
        }
        // int8 -> uint8 as in mww_okay_nabu, and int8 -> int8 with a new scale.
        for (dout, qout) in [
            (DType::U8, Quant::per_tensor(0.00390625, 0)),
            (DType::I8, Quant::per_tensor(0.05, 7)),
        ] {
            let m = model(
                BuiltinOp::Quantize,
                DType::I8,
                Some(Quant::per_tensor(0.00390625, -128)),
                dout,
                Some(qout),
                &[1, 50],
            );
            let x = random_tensor(DType::I8, &[1, 50], 32, -128.0, 127.0);
            assert_matches_litert(
                &format!("QUANTIZE int8->{dout}"),
                &m,
                &[x],
                &resolvers(),
                None,
            );
        }
    }

    #[test]
    fn dequantize_matches_litert() {
        let m = model(
            BuiltinOp::Dequantize,
            DType::I8,
            Some(Quant::per_tensor(0.1, 4)),
            DType::F32,
            None,
            &[3, 7],
        );
        let x = random_tensor(DType::I8, &[3, 7], 33, -128.0, 127.0);
        assert_matches_litert("DEQUANTIZE int8", &m, &[x], &resolvers(), None);
        let m = model(
            BuiltinOp::Dequantize,
            DType::U8,
            Some(Quant::per_tensor(0.3, 128)),
            DType::F32,
            None,
            &[3, 7],
        );
        let x = random_tensor(DType::U8, &[3, 7], 34, 0.0, 255.0);
        assert_matches_litert("DEQUANTIZE uint8", &m, &[x], &resolvers(), None);
        let m = model(
            BuiltinOp::Dequantize,
            DType::F16,
            None,
            DType::F32,
            None,
            &[3, 7],
        );
        let x = random_tensor(DType::F16, &[3, 7], 35, -4.0, 4.0);
        assert_matches_litert("DEQUANTIZE f16", &m, &[x], &resolvers(), None);
    }

    #[test]
    fn per_channel_dequantize_of_a_constant_is_folded() {
        // Per-channel dequantization happens on weights, i.e. constants; LiteRT runs it too.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let w = sg.constant(
            "w",
            DType::I8,
            &[3, 2, 2],
            (0..12).map(|v| (v as i8 * 9 - 50) as u8).collect(),
        );
        sg.set_quant(
            w,
            Quant {
                scale: vec![0.1, 0.2, 0.5],
                zero_point: vec![0, 0, 0],
                axis: 0,
            },
        );
        let wf = sg.tensor("wf", DType::F32, &[3, 2, 2]);
        let x = sg.tensor("x", DType::F32, &[3, 2, 2]);
        let y = sg.tensor("y", DType::F32, &[3, 2, 2]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Dequantize),
            &[Some(w)],
            &[wf],
            OpOptions::None,
        );
        sg.op(
            OpKind::Builtin(BuiltinOp::Add),
            &[Some(x), Some(wf)],
            &[y],
            OpOptions::Activation(Default::default()),
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        let input = random_tensor(DType::F32, &[3, 2, 2], 36, -1.0, 1.0);
        assert_matches_litert(
            "DEQUANTIZE per-channel",
            &mb.finish(),
            &[input],
            &resolvers(),
            None,
        );
    }

    #[test]
    fn cast_matches_litert() {
        for (from, to, lo, hi) in [
            (DType::F32, DType::I32, -50.0, 50.0),
            (DType::I32, DType::F32, -1000.0, 1000.0),
            (DType::I32, DType::I64, -1000.0, 1000.0),
            (DType::U8, DType::F32, 0.0, 255.0),
            (DType::Bool, DType::F32, 0.0, 1.0),
        ] {
            let m = model(BuiltinOp::Cast, from, None, to, None, &[2, 9]);
            let x = random_tensor(from, &[2, 9], 37, lo, hi);
            assert_matches_litert(&format!("CAST {from}->{to}"), &m, &[x], &resolvers(), None);
        }
    }
}
