//! TRANSPOSE of any rank: output dimension `i` is input dimension `perm[i]`. Prepare
//! turns the permutation into a strided walk over the input; eval is one strided copy,
//! which keeps whole contiguous runs together when the innermost dimension stays put.

use switchyard_interpreter::{
    KernelError, OpKernel, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
};

use super::movement::{
    Walk, checked_input, copy_strided, count, expect_bytes, known_ints, movable_elem,
    row_major_strides, same_dtype,
};
use crate::registry::OpDescriptor;
use switchyard_interpreter::BuiltinOp;

/// TRANSPOSE.
pub const DESCRIPTORS: &[OpDescriptor] = &[OpDescriptor::new(BuiltinOp::Transpose, prepare)];

struct Transpose {
    elem: usize,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    walk: Walk,
}

/// Validates `perm` as a permutation of `0..rank` (negative entries count from the end).
pub fn normalize_perm(perm: &[i64], rank: usize) -> Result<Vec<usize>, KernelError> {
    if perm.len() != rank {
        return Err(KernelError::shape(format!(
            "perm {perm:?} has {} entries for a rank-{rank} input",
            perm.len()
        )));
    }
    let mut seen = vec![false; rank];
    perm.iter()
        .map(|&p| {
            let q = if p < 0 { p + rank as i64 } else { p };
            match usize::try_from(q) {
                Ok(q) if q < rank && !std::mem::replace(&mut seen[q], true) => Ok(q),
                _ => Err(KernelError::invalid(format!(
                    "perm {perm:?} is not a permutation of 0..{rank}"
                ))),
            }
        })
        .collect()
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(2, 2, 1)?;
    let x = ctx.input(0)?;
    let elem = movable_elem(x.dtype)?;
    same_dtype(x.dtype, ctx.output(0)?.dtype)?;
    count(x.shape)?;
    let p = ctx.input(1)?;
    if p.shape.len() > 1 {
        return Err(KernelError::shape(format!(
            "perm must be a vector, has shape {:?}",
            p.shape
        )));
    }
    let perm = normalize_perm(&known_ints(&p, "perm")?, x.shape.len())?;
    let in_strides = row_major_strides(x.shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let walk = Walk {
        offset: 0,
        strides: perm.iter().map(|&p| in_strides[p] as isize).collect(),
    };
    Ok(PreparedKernel::new(
        vec![out_shape.clone()],
        Transpose {
            elem,
            in_shape: x.shape.to_vec(),
            out_shape,
            walk,
        },
    ))
}

impl OpKernel for Transpose {
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
        copy_strided(
            x.bytes,
            &self.walk,
            out.bytes,
            &Walk::contiguous(&self.out_shape),
            &self.out_shape,
            self.elem,
        )
    }

    fn name(&self) -> &str {
        "transpose"
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{BuiltinOp, DType, OpKind, OpOptions};
    use switchyard_testkit::{Tolerance, assert_matches_litert};

    use super::super::movement::testing::{data, expect_error, ints, resolvers};
    use super::*;

    fn model(shape: &[usize], perm: &[i32], dtype: DType, constant: bool) -> ModelBuilder {
        let out: Vec<usize> = perm
            .iter()
            .map(|&p| shape[(p + shape.len() as i32) as usize % shape.len()])
            .collect();
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, shape);
        let p = if constant {
            sg.constant_i32("perm", &[perm.len()], perm)
        } else {
            sg.tensor("perm", DType::I32, &[perm.len()])
        };
        let y = sg.tensor("y", dtype, &out);
        sg.op(
            OpKind::Builtin(BuiltinOp::Transpose),
            &[Some(x), Some(p)],
            &[y],
            OpOptions::None,
        );
        if constant {
            sg.set_inputs(&[x]);
        } else {
            sg.set_inputs(&[x, p]);
        }
        sg.set_outputs(&[y]);
        mb
    }

    #[test]
    fn transpose_matches_litert() {
        let cases: [(&[usize], &[i32]); 7] = [
            (&[3, 4], &[1, 0]),
            (&[2, 3, 4], &[0, 2, 1]),
            (&[2, 3, 4], &[2, 0, 1]),
            (&[1, 2, 3, 4], &[0, 3, 1, 2]),
            (&[2, 1, 3, 2, 2], &[4, 3, 2, 1, 0]),
            (&[2, 2, 1, 3, 2, 2], &[5, 0, 3, 1, 4, 2]),
            (&[5], &[0]),
        ];
        for (shape, perm) in cases {
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
                    &format!("TRANSPOSE {shape:?} {perm:?} {dtype}"),
                    &model(shape, perm, dtype, true).finish(),
                    &[data(dtype, shape, 7)],
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
        let (shape, perm) = cases[3];
        assert_matches_litert(
            "TRANSPOSE runtime perm",
            &model(shape, perm, DType::F32, false).finish(),
            &[data(DType::F32, shape, 8), ints(&[4], perm)],
            &resolvers(),
            Some(Tolerance::Exact),
        );
    }

    #[test]
    fn bad_permutations_are_errors() {
        assert!(normalize_perm(&[0, 0], 2).is_err());
        assert!(normalize_perm(&[0, 2], 2).is_err());
        assert!(normalize_perm(&[0], 2).is_err());
        assert_eq!(normalize_perm(&[-1, 0], 2).unwrap(), vec![1, 0]);
        let x = data(DType::F32, &[2, 3], 1);
        let mut mb = model(&[2, 3], &[1, 0], DType::F32, true);
        mb.main().spec_mut(1).data = Some(bytemuck::cast_slice(&[1i32, 1]).to_vec());
        expect_error(&mb, std::slice::from_ref(&x), "not a permutation");
        let mb = model(&[2, 3], &[1, 0], DType::F32, false);
        expect_error(&mb, &[x, ints(&[2], &[0, 5])], "not a permutation");
    }
}
