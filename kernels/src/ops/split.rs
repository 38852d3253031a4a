//! SPLIT (equal parts), SPLIT_V (given sizes, one of which may be -1) and UNPACK (unit
//! parts with the axis removed). All three cut one axis into consecutive pieces, so they
//! share one kernel: each output takes its slab of every outer row.

use switchyard_interpreter::{
    BuiltinOp, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut,
};

use super::movement::{
    checked_input, count, expect_bytes, known_ints, known_scalar, movable_elem, same_dtype,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::normalize_axis;

/// SPLIT, SPLIT_V, UNPACK.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Split, prepare).dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::SplitV, prepare).dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::Unpack, prepare),
];

struct Split {
    /// Which input holds the data (SPLIT takes the axis first).
    data_index: usize,
    elem: usize,
    outer: usize,
    /// Elements of one outer row of the input.
    row: usize,
    /// Elements each output takes from one outer row.
    parts: Vec<usize>,
}

/// Sizes of SPLIT_V's parts: at most one -1, which takes what the others leave.
pub fn resolve_sizes(sizes: &[i64], dim: usize) -> Result<Vec<usize>, KernelError> {
    let mut unknown = None;
    let mut known = 0usize;
    for (i, &s) in sizes.iter().enumerate() {
        match s {
            -1 if unknown.is_none() => unknown = Some(i),
            -1 => {
                return Err(KernelError::invalid(format!(
                    "size_splits {sizes:?} has more than one -1"
                )));
            }
            s if s < 0 => {
                return Err(KernelError::invalid(format!(
                    "size_splits {sizes:?} has a negative size"
                )));
            }
            s => {
                known = usize::try_from(s)
                    .ok()
                    .and_then(|s| known.checked_add(s))
                    .ok_or_else(|| {
                        KernelError::invalid(format!("size_splits {sizes:?} overflow"))
                    })?;
            }
        }
    }
    let mut out: Vec<usize> = sizes.iter().map(|&s| s.max(0) as usize).collect();
    match unknown {
        Some(i) if known <= dim => out[i] = dim - known,
        None if known == dim => {}
        _ => {
            return Err(KernelError::invalid(format!(
                "size_splits {sizes:?} do not add up to the axis size {dim}"
            )));
        }
    }
    Ok(out)
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let op = ctx.op().builtin();
    let outputs = ctx.outputs.len();
    if outputs == 0 {
        return Err(KernelError::invalid("expects at least one output"));
    }
    let (x, axis, sizes): (_, i64, Option<Vec<usize>>) = match op {
        Some(BuiltinOp::Split) => {
            ctx.expect_arity(2, 2, outputs)?;
            let num = match &ctx.node.options {
                OpOptions::Split { num_splits } => *num_splits,
                _ => outputs,
            };
            if num != outputs {
                return Err(KernelError::invalid(format!(
                    "num_splits {num} but {outputs} outputs"
                )));
            }
            (ctx.input(1)?, known_scalar(&ctx.input(0)?, "axis")?, None)
        }
        Some(BuiltinOp::SplitV) => {
            ctx.expect_arity(3, 3, outputs)?;
            let s = ctx.input(1)?;
            if s.shape.len() != 1 {
                return Err(KernelError::shape(format!(
                    "size_splits must be a vector, has shape {:?}",
                    s.shape
                )));
            }
            let sizes = known_ints(&s, "size_splits")?;
            if sizes.len() != outputs {
                return Err(KernelError::invalid(format!(
                    "{} size_splits for {outputs} outputs",
                    sizes.len()
                )));
            }
            let axis = known_scalar(&ctx.input(2)?, "axis")?;
            let x = ctx.input(0)?;
            let a = normalize_axis(axis, x.shape.len())?;
            let dim = *x
                .shape
                .get(a)
                .ok_or_else(|| KernelError::shape("cannot SPLIT_V a scalar"))?;
            (x, axis, Some(resolve_sizes(&sizes, dim)?))
        }
        Some(BuiltinOp::Unpack) => {
            ctx.expect_arity(1, 1, outputs)?;
            let (num, axis) = match &ctx.node.options {
                OpOptions::Unpack { num, axis } => (*num, *axis as i64),
                _ => (outputs, 0),
            };
            if num != outputs {
                return Err(KernelError::invalid(format!(
                    "UNPACK of {num} values has {outputs} outputs"
                )));
            }
            (ctx.input(0)?, axis, None)
        }
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a split",
                ctx.op()
            )));
        }
    };
    let elem = movable_elem(x.dtype)?;
    for k in 0..outputs {
        same_dtype(x.dtype, ctx.output(k)?.dtype)?;
    }
    if x.shape.is_empty() {
        return Err(KernelError::shape(format!("cannot {} a scalar", ctx.op())));
    }
    let a = normalize_axis(axis, x.shape.len())?;
    let dim = x.shape[a];
    let sizes = match sizes {
        Some(s) => s,
        None => {
            if !dim.is_multiple_of(outputs) {
                return Err(KernelError::shape(format!(
                    "axis {a} of size {dim} does not split into {outputs} equal parts"
                )));
            }
            vec![dim / outputs; outputs]
        }
    };
    count(x.shape)?;
    let outer: usize = x.shape[..a].iter().product();
    let inner: usize = x.shape[a + 1..].iter().product();
    let unpack = op == Some(BuiltinOp::Unpack);
    let shapes = sizes
        .iter()
        .map(|&s| {
            let mut shape = x.shape.to_vec();
            if unpack {
                shape.remove(a);
            } else {
                shape[a] = s;
            }
            shape
        })
        .collect();
    Ok(PreparedKernel::new(
        shapes,
        Split {
            data_index: usize::from(op == Some(BuiltinOp::Split)),
            elem,
            outer,
            row: dim * inner,
            parts: sizes.iter().map(|&s| s * inner).collect(),
        },
    ))
}

impl OpKernel for Split {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = checked_input(inputs, self.data_index, &[self.outer, self.row], self.elem)?;
        if outputs.len() != self.parts.len() {
            return Err(KernelError::invalid(format!(
                "expects {} outputs, got {}",
                self.parts.len(),
                outputs.len()
            )));
        }
        let e = self.elem;
        let mut offset = 0;
        for (k, (out, &n)) in outputs.iter_mut().zip(&self.parts).enumerate() {
            expect_bytes(
                format_args!("output {k}"),
                out.bytes.len(),
                &[self.outer, n],
                e,
            )?;
            for o in 0..self.outer {
                let src = (o * self.row + offset) * e;
                out.bytes[o * n * e..(o + 1) * n * e].copy_from_slice(&x.bytes[src..src + n * e]);
            }
            offset += n;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "split"
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{DType, OpKind, Quant};
    use switchyard_testkit::{Tolerance, assert_matches_litert};

    use super::super::movement::testing::{data, expect_error, ints, resolvers};
    use super::*;

    /// What LiteRT's SPLIT and SPLIT_V accept (our kernel also moves bool).
    const DTYPES: [DType; 6] = [
        DType::F32,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::I32,
        DType::I64,
    ];

    fn quantize(
        sg: &mut switchyard_interpreter::builder::SubgraphBuilder,
        dtype: DType,
        ts: &[usize],
    ) {
        if matches!(dtype, DType::I8 | DType::U8) {
            for &t in ts {
                sg.set_quant(t, Quant::per_tensor(0.25, 7));
            }
        }
    }

    fn split_model(
        dtype: DType,
        shape: &[usize],
        axis: i32,
        num: usize,
        const_axis: bool,
    ) -> ModelBuilder {
        let rank = shape.len() as i32;
        let a = ((axis + rank) % rank) as usize;
        let mut out = shape.to_vec();
        out[a] /= num;
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let ax = if const_axis {
            sg.constant_i32("axis", &[], &[axis])
        } else {
            sg.tensor("axis", DType::I32, &[])
        };
        let x = sg.tensor("x", dtype, shape);
        let ys: Vec<usize> = (0..num)
            .map(|k| sg.tensor(&format!("y{k}"), dtype, &out))
            .collect();
        let mut all = ys.clone();
        all.push(x);
        quantize(sg, dtype, &all);
        sg.op(
            OpKind::Builtin(BuiltinOp::Split),
            &[Some(ax), Some(x)],
            &ys,
            OpOptions::Split { num_splits: num },
        );
        if const_axis {
            sg.set_inputs(&[x]);
        } else {
            sg.set_inputs(&[x, ax]);
        }
        sg.set_outputs(&ys);
        mb
    }

    fn split_v_model(
        dtype: DType,
        shape: &[usize],
        axis: i32,
        sizes: &[i32],
        const_sizes: bool,
    ) -> ModelBuilder {
        let rank = shape.len() as i32;
        let a = ((axis + rank) % rank) as usize;
        let resolved = resolve_sizes(
            &sizes.iter().map(|&s| s as i64).collect::<Vec<_>>(),
            shape[a],
        )
        .unwrap();
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, shape);
        let s = if const_sizes {
            sg.constant_i32("sizes", &[sizes.len()], sizes)
        } else {
            sg.tensor("sizes", DType::I32, &[sizes.len()])
        };
        let ax = sg.constant_i32("axis", &[1], &[axis]);
        let ys: Vec<usize> = resolved
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let mut out = shape.to_vec();
                out[a] = n;
                sg.tensor(&format!("y{k}"), dtype, &out)
            })
            .collect();
        let mut all = ys.clone();
        all.push(x);
        quantize(sg, dtype, &all);
        sg.op(
            OpKind::Builtin(BuiltinOp::SplitV),
            &[Some(x), Some(s), Some(ax)],
            &ys,
            OpOptions::Split {
                num_splits: sizes.len(),
            },
        );
        if const_sizes {
            sg.set_inputs(&[x]);
        } else {
            sg.set_inputs(&[x, s]);
        }
        sg.set_outputs(&ys);
        mb
    }

    #[test]
    fn split_matches_litert() {
        for (k, dtype) in DTYPES.into_iter().enumerate() {
            let x = data(dtype, &[2, 6, 4], k as u64);
            for (axis, num) in [(1, 3), (-1, 2), (0, 2), (-3, 1)] {
                assert_matches_litert(
                    &format!("SPLIT axis {axis} into {num} {dtype}"),
                    &split_model(dtype, &[2, 6, 4], axis, num, true).finish(),
                    std::slice::from_ref(&x),
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
        // Axis known only at run time: the outputs are dynamic.
        assert_matches_litert(
            "SPLIT runtime axis",
            &split_model(DType::F32, &[2, 6, 4], 2, 2, false).finish(),
            &[data(DType::F32, &[2, 6, 4], 9), ints(&[], &[2])],
            &resolvers(),
            Some(Tolerance::Exact),
        );
    }

    #[test]
    fn split_v_matches_litert() {
        for (k, dtype) in DTYPES.into_iter().enumerate() {
            let x = data(dtype, &[3, 7, 2], k as u64);
            for (axis, sizes) in [
                (1, vec![2, 4, 1]),
                (1, vec![2, -1, 1]),
                (-1, vec![1, 1]),
                (0, vec![-1, 0, 2]),
            ] {
                assert_matches_litert(
                    &format!("SPLIT_V axis {axis} {sizes:?} {dtype}"),
                    &split_v_model(dtype, &[3, 7, 2], axis, &sizes, true).finish(),
                    std::slice::from_ref(&x),
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
        let sizes = [3, -1];
        assert_matches_litert(
            "SPLIT_V runtime sizes",
            &split_v_model(DType::I8, &[3, 7, 2], 1, &sizes, false).finish(),
            &[data(DType::I8, &[3, 7, 2], 3), ints(&[2], &sizes)],
            &resolvers(),
            Some(Tolerance::Exact),
        );
    }

    #[test]
    fn unpack_matches_litert() {
        for dtype in [DType::F32, DType::I8, DType::U8, DType::I32] {
            for axis in [0i32, 1, 2, -1, -2] {
                let shape = [2usize, 3, 4];
                let a = ((axis + 3) % 3) as usize;
                let mut out = shape.to_vec();
                let num = out.remove(a);
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let x = sg.tensor("x", dtype, &shape);
                let ys: Vec<usize> = (0..num)
                    .map(|k| sg.tensor(&format!("y{k}"), dtype, &out))
                    .collect();
                let mut all = ys.clone();
                all.push(x);
                quantize(sg, dtype, &all);
                sg.op(
                    OpKind::Builtin(BuiltinOp::Unpack),
                    &[Some(x)],
                    &ys,
                    OpOptions::Unpack { num, axis },
                );
                sg.set_inputs(&[x]);
                sg.set_outputs(&ys);
                assert_matches_litert(
                    &format!("UNPACK axis {axis} {dtype}"),
                    &mb.finish(),
                    &[data(dtype, &shape, 4)],
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
    }

    #[test]
    fn bad_splits_are_errors() {
        assert!(resolve_sizes(&[-1, -1], 4).is_err());
        assert!(resolve_sizes(&[1, 2], 4).is_err());
        assert!(resolve_sizes(&[5, -1], 4).is_err());
        assert!(resolve_sizes(&[-2, 6], 4).is_err());
        assert_eq!(resolve_sizes(&[1, -1], 4).unwrap(), vec![1, 3]);

        let x = data(DType::F32, &[2, 6, 4], 1);
        // Uneven split.
        let mut mb = split_model(DType::F32, &[2, 6, 4], 1, 3, true);
        mb.main().spec_mut(0).data = Some(bytemuck::cast_slice(&[2i32]).to_vec());
        expect_error(&mb, std::slice::from_ref(&x), "does not split into 3");
        // Axis out of range.
        let mut mb = split_model(DType::F32, &[2, 6, 4], 1, 2, true);
        mb.main().spec_mut(0).data = Some(bytemuck::cast_slice(&[3i32]).to_vec());
        expect_error(&mb, std::slice::from_ref(&x), "out of range");
        // Sizes that do not add up, known at prepare and at run time.
        let mut mb = split_v_model(DType::F32, &[2, 6, 4], 1, &[2, 4], true);
        mb.main().spec_mut(1).data = Some(bytemuck::cast_slice(&[2i32, 3]).to_vec());
        expect_error(&mb, std::slice::from_ref(&x), "do not add up");
        // A scalar cannot be split.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x0 = sg.tensor("x", DType::F32, &[]);
        let s = sg.constant_i32("sizes", &[1], &[1]);
        let ax = sg.constant_i32("axis", &[], &[0]);
        let y = sg.tensor("y", DType::F32, &[]);
        sg.op(
            OpKind::Builtin(BuiltinOp::SplitV),
            &[Some(x0), Some(s), Some(ax)],
            &[y],
            OpOptions::Split { num_splits: 1 },
        );
        sg.set_inputs(&[x0]);
        sg.set_outputs(&[y]);
        expect_error(&mb, &[data(DType::F32, &[], 1)], "scalar");
        let mb = split_v_model(DType::F32, &[2, 6, 4], 1, &[2, 4], false);
        expect_error(&mb, &[x, ints(&[2], &[4, 4])], "do not add up");
    }
}
