//! PAD and PADV2 (a constant border) and MIRROR_PAD (REFLECT or SYMMETRIC border), any
//! rank. `paddings` is a `[rank, 2]` int32/int64 tensor of (before, after) counts, known
//! at prepare or, when it is a runtime tensor, at run time (the node is then lazy).
//!
//! PAD's border is zero, which for int8/uint8/int16 means the output's zero point (the
//! quantized encoding of 0.0), as in LiteRT. PADV2's border is its third input's raw
//! value.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorMeta,
    TensorView, TensorViewMut, ops::MirrorPadMode,
};

use super::movement::{
    Walk, checked_input, copy_strided, count, expect_bytes, fill, known_ints, movable_elem,
    row_major_strides, same_dtype,
};
use crate::quant::dtype_range;
use crate::registry::OpDescriptor;
use crate::support;
use switchyard_interpreter::NodeSupportCtx;

/// Longest padded dimension MIRROR_PAD keeps a source map for (one offset per output
/// row of that dimension, built at prepare): far above any real image or sequence, far
/// below what a hostile shape would make prepare allocate (a 1.4e9-long dimension asked
/// for 11 GB of offsets).
const MAX_MIRROR_DIM: usize = 1 << 24;

/// PAD, PADV2, MIRROR_PAD.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Pad, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::PadV2, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::MirrorPad, prepare),
];

/// GPU: float32 up to rank 6, constant non-negative paddings, a constant float32 pad
/// value for PADV2.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    let v2 = ctx.node.builtin() == Some(BuiltinOp::PadV2);
    support::arity(ctx, 2, if v2 { 3 } else { 2 }, 1)?;
    let x = support::input(ctx, 0)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    let rank = x.shape.len();
    let paddings = support::const_ints(&support::input(ctx, 1)?, "paddings")?;
    if paddings.len() != 2 * rank {
        return Err(format!("{} padding values for rank {rank}", paddings.len()));
    }
    if v2 && let Some(c) = ctx.inputs.get(2).copied().flatten() {
        if c.dtype != DType::F32 || c.element_count() != 1 {
            return Err("the pad value must be one float32".into());
        }
        let d = c.data.ok_or("the pad value must be a constant")?;
        if d.len() < 4 {
            return Err("pad value data is short".into());
        }
    }
    let mut expected = Vec::with_capacity(rank);
    for d in 0..rank {
        let (b, a) = (paddings[2 * d], paddings[2 * d + 1]);
        if b < 0 || a < 0 {
            return Err(format!("negative padding {b}, {a} on axis {d}"));
        }
        expected.push(x.shape[d] + b as usize + a as usize);
    }
    if out.shape != expected.as_slice() {
        return Err(format!(
            "output shape {:?} should be {expected:?}",
            out.shape
        ));
    }
    support::gpu_rank(out.shape)?;
    support::gpu_count(out.shape)?;
    for &d in out.shape.iter().chain(x.shape) {
        support::gpu_u32(d, "dimension")?;
    }
    for &p in &paddings {
        support::gpu_u32(p as usize, "dimension")?;
    }
    Ok(())
}

/// Where a constant border's value comes from.
enum Border {
    Fixed(Vec<u8>),
    /// PADV2's `constant_values` input (read at every eval: it may be a runtime tensor).
    Input(usize),
}

struct ConstantPad {
    elem: usize,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// Where the input lands in the output.
    interior: Walk,
    border: Border,
}

struct MirrorPad {
    elem: usize,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// Per dimension: the input offset (in elements) each output coordinate reads.
    sources: Vec<Vec<usize>>,
}

/// Reads `paddings` as (before, after) pairs for a rank-`rank` input.
fn read_paddings(meta: &TensorMeta<'_>, rank: usize) -> Result<Vec<(usize, usize)>, KernelError> {
    if meta.shape != [rank, 2] {
        return Err(KernelError::shape(format!(
            "paddings must have shape [{rank}, 2], has {:?}",
            meta.shape
        )));
    }
    let v = known_ints(meta, "paddings")?;
    v.chunks_exact(2)
        .enumerate()
        .map(
            |(d, p)| match (usize::try_from(p[0]), usize::try_from(p[1])) {
                (Ok(b), Ok(a)) => Ok((b, a)),
                _ => Err(KernelError::invalid(format!(
                    "padding ({}, {}) of dimension {d} is negative",
                    p[0], p[1]
                ))),
            },
        )
        .collect()
}

/// The raw bytes of a zero element of `dtype` in the quantization of `meta`.
fn zero_of(dtype: DType, meta: &TensorMeta<'_>) -> Result<Vec<u8>, KernelError> {
    if !dtype.is_quantized_int() {
        return Ok(vec![0; dtype.size()]);
    }
    let zp = meta.quant.map_or(0, |q| q.zero_point_at(0));
    let (lo, hi) = dtype_range(dtype)?;
    if zp < lo as i64 || zp > hi as i64 {
        return Err(KernelError::invalid(format!(
            "zero point {zp} is outside the {dtype} range"
        )));
    }
    Ok(match dtype {
        DType::I16 => (zp as i16).to_le_bytes().to_vec(),
        _ => vec![zp as u8],
    })
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let op = ctx.op().builtin();
    match op {
        Some(BuiltinOp::Pad) => ctx.expect_arity(2, 2, 1)?,
        Some(BuiltinOp::PadV2) => ctx.expect_arity(2, 3, 1)?,
        Some(BuiltinOp::MirrorPad) => ctx.expect_arity(2, 2, 1)?,
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a pad",
                ctx.op()
            )));
        }
    }
    let x = ctx.input(0)?;
    let out = ctx.output(0)?;
    let elem = movable_elem(x.dtype)?;
    same_dtype(x.dtype, out.dtype)?;
    count(x.shape)?;
    let pads = read_paddings(&ctx.input(1)?, x.shape.len())?;
    let out_shape = x
        .shape
        .iter()
        .zip(&pads)
        .map(|(&n, &(b, a))| n.checked_add(b).and_then(|v| v.checked_add(a)))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| KernelError::shape("padded shape overflows"))?;
    let out_count = count(&out_shape)?;
    if op == Some(BuiltinOp::MirrorPad) {
        let mode = match &ctx.node.options {
            OpOptions::MirrorPad { mode } => *mode,
            _ => MirrorPadMode::Reflect,
        };
        let in_strides = row_major_strides(x.shape);
        let mut sources = Vec::with_capacity(pads.len());
        for (d, (&n, &(before, after))) in x.shape.iter().zip(&pads).enumerate() {
            // REFLECT mirrors around the edge element, SYMMETRIC repeats it.
            let limit = match mode {
                MirrorPadMode::Reflect => n.saturating_sub(1),
                MirrorPadMode::Symmetric => n,
            };
            if before > limit || after > limit {
                return Err(KernelError::invalid(format!(
                    "{mode:?} padding ({before}, {after}) of dimension {d} exceeds {limit} for size {n}"
                )));
            }
            let skip = usize::from(mode == MirrorPadMode::Reflect);
            // An empty output reads nothing; skipping its maps bounds them by its size.
            let len = if out_count == 0 {
                0
            } else {
                before + n + after
            };
            if len > MAX_MIRROR_DIM {
                return Err(KernelError::invalid(format!(
                    "{mode:?} padding: dimension {d} would be {len} long, more than {MAX_MIRROR_DIM}"
                )));
            }
            let mut map = Vec::new();
            map.try_reserve_exact(len).map_err(|_| {
                KernelError::invalid(format!("cannot allocate {len} source offsets"))
            })?;
            map.extend((0..len).map(|o| {
                let i = if o < before {
                    before - o - 1 + skip
                } else if o - before < n {
                    o - before
                } else {
                    2 * n - 1 - skip - (o - before)
                };
                i * in_strides[d]
            }));
            sources.push(map);
        }
        return Ok(PreparedKernel::new(
            vec![out_shape.clone()],
            MirrorPad {
                elem,
                in_shape: x.shape.to_vec(),
                out_shape,
                sources,
            },
        ));
    }
    let border = match ctx.optional_input(2) {
        Some(v) => {
            same_dtype(x.dtype, v.dtype)?;
            if v.element_count() != 1 {
                return Err(KernelError::shape(format!(
                    "constant_values must hold one value, has shape {:?}",
                    v.shape
                )));
            }
            Border::Input(2)
        }
        None => Border::Fixed(zero_of(x.dtype, &out)?),
    };
    let out_strides = row_major_strides(&out_shape);
    let interior = Walk {
        offset: pads
            .iter()
            .zip(&out_strides)
            .map(|(&(b, _), &s)| b * s)
            .sum(),
        strides: out_strides.iter().map(|&s| s as isize).collect(),
    };
    Ok(PreparedKernel::new(
        vec![out_shape.clone()],
        ConstantPad {
            elem,
            in_shape: x.shape.to_vec(),
            out_shape,
            interior,
            border,
        },
    ))
}

impl OpKernel for ConstantPad {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = checked_input(inputs, 0, &self.in_shape, self.elem)?;
        let value = match &self.border {
            Border::Fixed(v) => v.as_slice(),
            Border::Input(i) => checked_input(inputs, *i, &[1], self.elem)?.bytes,
        };
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        expect_bytes("output", out.bytes.len(), &self.out_shape, self.elem)?;
        fill(out.bytes, value);
        copy_strided(
            x.bytes,
            &Walk::contiguous(&self.in_shape),
            out.bytes,
            &self.interior,
            &self.in_shape,
            self.elem,
        )
    }

    fn name(&self) -> &str {
        "pad"
    }
}

impl OpKernel for MirrorPad {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = checked_input(inputs, 0, &self.in_shape, self.elem)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        expect_bytes("output", out.bytes.len(), &self.out_shape, self.elem)?;
        let e = self.elem;
        let Some((inner, outer_dims)) = self.sources.split_last() else {
            out.bytes.copy_from_slice(x.bytes);
            return Ok(());
        };
        if out.bytes.is_empty() {
            return Ok(());
        }
        let mut idx = vec![0usize; outer_dims.len()];
        let mut dst = 0;
        loop {
            let base: usize = outer_dims.iter().zip(&idx).map(|(m, &i)| m[i]).sum();
            for &s in inner {
                let src = (base + s) * e;
                out.bytes[dst..dst + e].copy_from_slice(&x.bytes[src..src + e]);
                dst += e;
            }
            let mut k = idx.len();
            loop {
                if k == 0 {
                    return Ok(());
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < outer_dims[k].len() {
                    break;
                }
                idx[k] = 0;
            }
        }
    }

    fn name(&self) -> &str {
        "mirror_pad"
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{OpKind, Quant, Tensor};
    use switchyard_testkit::{Tolerance, assert_matches_litert};

    use super::super::movement::testing::{data, expect_error, ints, resolvers};
    use super::*;

    struct Spec<'a> {
        op: BuiltinOp,
        dtype: DType,
        shape: &'a [usize],
        pads: &'a [i32],
        constant_pads: bool,
        /// PADV2's value: Some((bytes, constant)).
        value: Option<(Vec<u8>, bool)>,
        mode: MirrorPadMode,
    }

    fn spec<'a>(op: BuiltinOp, dtype: DType, shape: &'a [usize], pads: &'a [i32]) -> Spec<'a> {
        Spec {
            op,
            dtype,
            shape,
            pads,
            constant_pads: true,
            value: None,
            mode: MirrorPadMode::Reflect,
        }
    }

    fn build(s: &Spec<'_>) -> (ModelBuilder, Vec<Tensor>) {
        let out: Vec<usize> = s
            .shape
            .iter()
            .enumerate()
            .map(|(d, &n)| (n as i32 + s.pads[2 * d] + s.pads[2 * d + 1]).max(0) as usize)
            .collect();
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", s.dtype, s.shape);
        let p = if s.constant_pads {
            sg.constant_i32("paddings", &[s.shape.len(), 2], s.pads)
        } else {
            sg.tensor("paddings", DType::I32, &[s.shape.len(), 2])
        };
        let mut graph_inputs = vec![x];
        let mut inputs = vec![data(s.dtype, s.shape, 13)];
        if !s.constant_pads {
            graph_inputs.push(p);
            inputs.push(ints(&[s.shape.len(), 2], s.pads));
        }
        let v = s.value.as_ref().map(|(bytes, constant)| {
            let v = if *constant {
                sg.constant("value", s.dtype, &[], bytes.clone())
            } else {
                let v = sg.tensor("value", s.dtype, &[]);
                graph_inputs.push(v);
                inputs.push(Tensor::from_bytes(s.dtype, vec![], bytes).unwrap());
                v
            };
            if s.dtype.is_quantized_int() {
                sg.set_quant(
                    v,
                    Quant::per_tensor(0.2, -3 + if s.dtype == DType::U8 { 128 } else { 0 }),
                );
            }
            v
        });
        let y = sg.tensor("y", s.dtype, &out);
        if s.dtype.is_quantized_int() {
            let zp = -3 + if s.dtype == DType::U8 { 128 } else { 0 };
            sg.set_quant(x, Quant::per_tensor(0.2, zp));
            sg.set_quant(y, Quant::per_tensor(0.2, zp));
        }
        let options = match s.op {
            BuiltinOp::MirrorPad => OpOptions::MirrorPad { mode: s.mode },
            _ => OpOptions::None,
        };
        let mut ins = vec![Some(x), Some(p)];
        if let Some(v) = v {
            ins.push(Some(v));
        }
        sg.op(OpKind::Builtin(s.op), &ins, &[y], options);
        sg.set_inputs(&graph_inputs);
        sg.set_outputs(&[y]);
        (mb, inputs)
    }

    fn check(s: &Spec<'_>, label: &str) {
        let (mb, inputs) = build(s);
        assert_matches_litert(
            &format!(
                "{:?} {label} {} {:?} pads {:?}",
                s.op, s.dtype, s.shape, s.pads
            ),
            &mb.finish(),
            &inputs,
            &resolvers(),
            Some(Tolerance::Exact),
        );
    }

    #[test]
    fn pad_matches_litert() {
        let cases: [(&[usize], &[i32]); 4] = [
            (&[5], &[2, 1]),
            (&[2, 3], &[0, 1, 2, 0]),
            (&[1, 3, 4, 2], &[0, 0, 1, 2, 2, 1, 0, 0]),
            (&[2, 1, 2, 2, 3], &[1, 0, 0, 2, 1, 1, 0, 0, 2, 1]),
        ];
        for (shape, pads) in cases {
            for dtype in [
                DType::F32,
                DType::I8,
                DType::U8,
                DType::I16,
                DType::I32,
                DType::I64,
            ] {
                check(&spec(BuiltinOp::Pad, dtype, shape, pads), "const");
            }
        }
        let (shape, pads) = cases[2];
        check(
            &Spec {
                constant_pads: false,
                ..spec(BuiltinOp::Pad, DType::F32, shape, pads)
            },
            "runtime paddings",
        );
    }

    #[test]
    fn padv2_matches_litert() {
        let (shape, pads): (&[usize], &[i32]) = (&[1, 3, 4, 2], &[0, 0, 1, 2, 2, 1, 0, 0]);
        for constant in [true, false] {
            for (dtype, value) in [
                (DType::F32, 3.5f32.to_le_bytes().to_vec()),
                (DType::I8, vec![(-77i8) as u8]),
                (DType::U8, vec![200]),
                (DType::I32, 12345i32.to_le_bytes().to_vec()),
                (DType::I64, (-9i64).to_le_bytes().to_vec()),
            ] {
                check(
                    &Spec {
                        value: Some((value, constant)),
                        ..spec(BuiltinOp::PadV2, dtype, shape, pads)
                    },
                    &format!("value const={constant}"),
                );
            }
        }
    }

    #[test]
    fn mirror_pad_matches_litert() {
        let cases: [(&[usize], &[i32]); 3] = [
            (&[5], &[2, 1]),
            (&[3, 4], &[2, 1, 0, 3]),
            (&[1, 3, 4, 2], &[0, 0, 1, 2, 2, 1, 1, 0]),
        ];
        for mode in [MirrorPadMode::Reflect, MirrorPadMode::Symmetric] {
            for (shape, pads) in cases {
                for dtype in [DType::F32, DType::I8, DType::U8, DType::I32, DType::I64] {
                    check(
                        &Spec {
                            mode,
                            ..spec(BuiltinOp::MirrorPad, dtype, shape, pads)
                        },
                        &format!("{mode:?}"),
                    );
                }
            }
            // Symmetric allows a border as wide as the dimension.
            if mode == MirrorPadMode::Symmetric {
                check(
                    &Spec {
                        mode,
                        ..spec(BuiltinOp::MirrorPad, DType::F32, &[2, 3], &[2, 2, 3, 0])
                    },
                    "full width",
                );
            }
            check(
                &Spec {
                    mode,
                    constant_pads: false,
                    ..spec(BuiltinOp::MirrorPad, DType::F32, &[3, 4], &[2, 1, 0, 2])
                },
                &format!("{mode:?} runtime paddings"),
            );
        }
    }

    #[test]
    fn bad_paddings_are_errors() {
        let (mb, inputs) = build(&spec(BuiltinOp::Pad, DType::F32, &[2, 3], &[0, -1, 1, 1]));
        expect_error(&mb, &inputs, "negative");
        let (mb, inputs) = build(&Spec {
            constant_pads: false,
            ..spec(BuiltinOp::Pad, DType::F32, &[2, 3], &[0, -1, 1, 1])
        });
        expect_error(&mb, &inputs, "negative");
        let (mb, inputs) = build(&spec(
            BuiltinOp::MirrorPad,
            DType::F32,
            &[2, 3],
            &[0, 2, 1, 1],
        ));
        expect_error(&mb, &inputs, "exceeds 1");
        let (mb, inputs) = build(&Spec {
            mode: MirrorPadMode::Symmetric,
            ..spec(BuiltinOp::MirrorPad, DType::F32, &[2, 3], &[0, 3, 1, 1])
        });
        expect_error(&mb, &inputs, "exceeds 2");
        // A dimension so long that its source map would be a prepare-time allocation
        // of the model's choosing (the fuzzer asked for 11 GB): refused, not allocated.
        let long = [MAX_MIRROR_DIM];
        let (mb, inputs) = build(&spec(BuiltinOp::MirrorPad, DType::I8, &long, &[1, 1]));
        expect_error(&mb, &inputs, "more than 16777216");
        // Paddings of the wrong shape.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[2, 3]);
        let p = sg.constant_i32("paddings", &[2], &[1, 1]);
        let y = sg.tensor("y", DType::F32, &[4, 3]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Pad),
            &[Some(x), Some(p)],
            &[y],
            OpOptions::None,
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        expect_error(
            &mb,
            &[data(DType::F32, &[2, 3], 1)],
            "paddings must have shape [2, 2]",
        );
    }
}
