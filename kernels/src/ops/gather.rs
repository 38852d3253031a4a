//! GATHER along `axis` with `batch_dims` leading dimensions shared by params and
//! indices. Output shape is `params[..axis] ++ indices[batch_dims..] ++ params[axis+1..]`.
//! Index values are only known at run time, so an out-of-range index is an eval error
//! (LiteRT's behaviour too), checked before any byte moves.

use switchyard_interpreter::{
    DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
};

use super::movement::{checked_input, count, expect_bytes, ints_of, movable_elem, same_dtype};
use crate::registry::OpDescriptor;
use crate::util::normalize_axis;
use switchyard_interpreter::BuiltinOp;

/// GATHER.
pub const DESCRIPTORS: &[OpDescriptor] = &[OpDescriptor::new(BuiltinOp::Gather, prepare)];

struct Gather {
    elem: usize,
    params_shape: Vec<usize>,
    indices_shape: Vec<usize>,
    indices_dtype: DType,
    out_elems: usize,
    /// Product of the batch dimensions.
    batch: usize,
    /// Product of params dimensions between the batch dimensions and the axis.
    outer: usize,
    axis_size: usize,
    /// Elements per gathered slice (product of params dimensions after the axis).
    inner: usize,
    /// Indices per batch.
    per_batch: usize,
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(2, 2, 1)?;
    let params = ctx.input(0)?;
    let indices = ctx.input(1)?;
    let elem = movable_elem(params.dtype)?;
    same_dtype(params.dtype, ctx.output(0)?.dtype)?;
    if !matches!(indices.dtype, DType::I32 | DType::I64 | DType::I16) {
        return Err(KernelError::dtype(
            "int16, int32 or int64 indices",
            indices.dtype,
        ));
    }
    let (axis, batch_dims) = match &ctx.node.options {
        OpOptions::Gather { axis, batch_dims } => (*axis as i64, *batch_dims as i64),
        _ => (0, 0),
    };
    if params.shape.is_empty() {
        return Err(KernelError::shape("cannot gather from a scalar"));
    }
    let axis = normalize_axis(axis, params.shape.len())?;
    let irank = indices.shape.len() as i64;
    let bd = if batch_dims < 0 {
        batch_dims + irank
    } else {
        batch_dims
    };
    if bd < 0 || bd > irank || bd as usize > axis {
        return Err(KernelError::invalid(format!(
            "batch_dims {batch_dims} must lie in [0, {irank}] and not exceed axis {axis}"
        )));
    }
    let bd = bd as usize;
    if params.shape[..bd] != indices.shape[..bd] {
        return Err(KernelError::shape(format!(
            "batch dimensions of params {:?} and indices {:?} differ",
            params.shape, indices.shape
        )));
    }
    count(params.shape)?;
    let mut out_shape = params.shape[..axis].to_vec();
    out_shape.extend_from_slice(&indices.shape[bd..]);
    out_shape.extend_from_slice(&params.shape[axis + 1..]);
    let out_elems = count(&out_shape)?;
    Ok(PreparedKernel::new(
        vec![out_shape],
        Gather {
            elem,
            params_shape: params.shape.to_vec(),
            indices_shape: indices.shape.to_vec(),
            indices_dtype: indices.dtype,
            out_elems,
            batch: params.shape[..bd].iter().product(),
            outer: params.shape[bd..axis].iter().product(),
            axis_size: params.shape[axis],
            inner: params.shape[axis + 1..].iter().product(),
            per_batch: count(&indices.shape[bd..])?,
        },
    ))
}

impl OpKernel for Gather {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let params = checked_input(inputs, 0, &self.params_shape, self.elem)?;
        let idx = checked_input(inputs, 1, &self.indices_shape, self.indices_dtype.size())?;
        let indices = ints_of(self.indices_dtype, idx.bytes, "indices")?;
        if let Some(bad) = indices
            .iter()
            .find(|&&i| i < 0 || i >= self.axis_size as i64)
        {
            return Err(KernelError::invalid(format!(
                "gather index {bad} is out of range for an axis of size {}",
                self.axis_size
            )));
        }
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        expect_bytes("output", out.bytes.len(), &[self.out_elems], self.elem)?;
        let slab = self.inner * self.elem;
        let mut dst = 0;
        for b in 0..self.batch {
            let batch_indices = &indices[b * self.per_batch..(b + 1) * self.per_batch];
            for o in 0..self.outer {
                let base = (b * self.outer + o) * self.axis_size;
                for &i in batch_indices {
                    let src = (base + i as usize) * slab;
                    out.bytes[dst..dst + slab].copy_from_slice(&params.bytes[src..src + slab]);
                    dst += slab;
                }
            }
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "gather"
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{BuiltinOp, OpKind, Quant, Tensor};
    use switchyard_testkit::{Tolerance, assert_matches_litert};

    use super::super::movement::testing::{data, expect_error, ints, resolvers};
    use super::*;

    fn model(
        params: &[usize],
        indices: &[usize],
        axis: i32,
        batch_dims: i32,
        dtype: DType,
        index_dtype: DType,
        constant: Option<&[i32]>,
    ) -> ModelBuilder {
        let a = ((axis + params.len() as i32) % params.len() as i32) as usize;
        let bd = ((batch_dims + indices.len() as i32) % (indices.len() as i32).max(1)) as usize;
        let mut out = params[..a].to_vec();
        out.extend_from_slice(&indices[bd..]);
        out.extend_from_slice(&params[a + 1..]);
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let p = sg.tensor("params", dtype, params);
        let i = match constant {
            Some(v) => sg.constant_i32("indices", indices, v),
            None => sg.tensor("indices", index_dtype, indices),
        };
        let y = sg.tensor("y", dtype, &out);
        if dtype.is_quantized_int() {
            sg.set_quant(p, Quant::per_tensor(0.1, 3));
            sg.set_quant(y, Quant::per_tensor(0.1, 3));
        }
        sg.op(
            OpKind::Builtin(BuiltinOp::Gather),
            &[Some(p), Some(i)],
            &[y],
            OpOptions::Gather { axis, batch_dims },
        );
        if constant.is_some() {
            sg.set_inputs(&[p]);
        } else {
            sg.set_inputs(&[p, i]);
        }
        sg.set_outputs(&[y]);
        mb
    }

    fn index_tensor(dtype: DType, shape: &[usize], values: &[i32]) -> Tensor {
        match dtype {
            DType::I64 => {
                let v: Vec<i64> = values.iter().map(|&v| v as i64).collect();
                Tensor::from_bytes(DType::I64, shape.to_vec(), bytemuck::cast_slice(&v)).unwrap()
            }
            _ => ints(shape, values),
        }
    }

    #[test]
    fn gather_matches_litert() {
        let params = [3usize, 4, 5];
        for (axis, indices, values) in [
            (0, vec![2usize], vec![2, 0]),
            (1, vec![2, 3], vec![3, 0, 1, 1, 2, 3]),
            (-1, vec![4], vec![4, 0, 2, 2]),
            (2, vec![], vec![3]),
        ] {
            let values = &values[..indices.iter().product::<usize>()];
            for dtype in [
                DType::F32,
                DType::I8,
                DType::U8,
                DType::I16,
                DType::I32,
                DType::I64,
                DType::Bool,
            ] {
                assert_matches_litert(
                    &format!("GATHER axis {axis} indices {indices:?} {dtype}"),
                    &model(&params, &indices, axis, 0, dtype, DType::I32, None).finish(),
                    &[
                        data(dtype, &params, 2),
                        index_tensor(DType::I32, &indices, values),
                    ],
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
            assert_matches_litert(
                &format!("GATHER axis {axis} int64 indices"),
                &model(&params, &indices, axis, 0, DType::F32, DType::I64, None).finish(),
                &[
                    data(DType::F32, &params, 2),
                    index_tensor(DType::I64, &indices, values),
                ],
                &resolvers(),
                Some(Tolerance::Exact),
            );
            assert_matches_litert(
                &format!("GATHER axis {axis} constant indices"),
                &model(
                    &params,
                    &indices,
                    axis,
                    0,
                    DType::F32,
                    DType::I32,
                    Some(values),
                )
                .finish(),
                &[data(DType::F32, &params, 2)],
                &resolvers(),
                Some(Tolerance::Exact),
            );
        }
    }

    #[test]
    fn gather_with_batch_dims_matches_litert() {
        for (axis, batch_dims, indices, values) in [
            (1, 1, vec![3usize, 2], vec![0, 3, 1, 1, 2, 0]),
            (2, 1, vec![3, 2], vec![4, 0, 1, 3, 2, 2]),
            (2, -1, vec![3, 4], vec![0, 1, 2, 3, 4, 3, 2, 1, 0, 0, 1, 1]),
        ] {
            assert_matches_litert(
                &format!("GATHER axis {axis} batch_dims {batch_dims}"),
                &model(
                    &[3, 4, 5],
                    &indices,
                    axis,
                    batch_dims,
                    DType::F32,
                    DType::I32,
                    None,
                )
                .finish(),
                &[data(DType::F32, &[3, 4, 5], 3), ints(&indices, &values)],
                &resolvers(),
                Some(Tolerance::Exact),
            );
        }
    }

    #[test]
    fn bad_gathers_are_errors() {
        let p = data(DType::F32, &[3, 4], 1);
        // Runtime index out of range: an error from the run, no panic.
        let mb = model(&[3, 4], &[2], 1, 0, DType::F32, DType::I32, None);
        expect_error(
            &mb,
            &[p.clone(), ints(&[2], &[1, 4])],
            "gather index 4 is out of range",
        );
        expect_error(
            &mb,
            &[p.clone(), ints(&[2], &[-1, 0])],
            "gather index -1 is out of range",
        );
        // Constant index out of range fails at prepare (folded) time.
        let mb = model(&[3, 4], &[1], 0, 0, DType::F32, DType::I32, Some(&[3]));
        expect_error(&mb, std::slice::from_ref(&p), "out of range");
        // Bad options: the stored output shape does not matter, prepare refuses first.
        let bad = |axis: i32, batch_dims: i32, indices: &[usize]| {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("params", DType::F32, &[3, 4]);
            let i = sg.tensor("indices", DType::I32, indices);
            let y = sg.tensor("y", DType::F32, &[3, 2]);
            sg.op(
                OpKind::Builtin(BuiltinOp::Gather),
                &[Some(x), Some(i)],
                &[y],
                OpOptions::Gather { axis, batch_dims },
            );
            sg.set_inputs(&[x, i]);
            sg.set_outputs(&[y]);
            mb
        };
        expect_error(
            &bad(2, 0, &[2]),
            &[p.clone(), ints(&[2], &[0, 1])],
            "axis 2 out of range",
        );
        expect_error(
            &bad(0, 1, &[3, 2]),
            &[p.clone(), ints(&[3, 2], &[0; 6])],
            "batch_dims 1",
        );
        expect_error(
            &bad(1, 1, &[2, 2]),
            &[p, ints(&[2, 2], &[0; 4])],
            "batch dimensions",
        );
    }
}
