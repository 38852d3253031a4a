//! Ops that only change the shape: RESHAPE, SQUEEZE, EXPAND_DIMS, and DENSIFY (the loader
//! already expanded sparse constants, so DENSIFY is a copy). The data is copied as bytes,
//! so every dtype works.

use switchyard_interpreter::{
    BuiltinOp, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut, kernel::input,
};

use crate::cpu::KernelMode;
use crate::cpu::util::normalize_axis;

/// Copies input 0 to output 0 byte for byte.
pub struct CopyKernel;

impl OpKernel for CopyKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        if out.bytes.len() != x.bytes.len() {
            return Err(KernelError::shape("reshape changes the number of bytes"));
        }
        out.bytes.copy_from_slice(x.bytes);
        Ok(())
    }

    fn name(&self) -> &str {
        "copy"
    }
}

/// Resolves a requested shape with at most one -1 against `count` elements.
pub fn resolve_shape(requested: &[i64], count: usize) -> Result<Vec<usize>, KernelError> {
    let mut unknown = None;
    let mut known = 1usize;
    for (i, &d) in requested.iter().enumerate() {
        match d {
            -1 if unknown.is_none() => unknown = Some(i),
            -1 => {
                return Err(KernelError::shape(format!(
                    "more than one -1 in {requested:?}"
                )));
            }
            d if d < 0 => {
                return Err(KernelError::shape(format!(
                    "negative dimension in {requested:?}"
                )));
            }
            d => {
                known = known
                    .checked_mul(d as usize)
                    .ok_or_else(|| KernelError::shape(format!("shape {requested:?} overflows")))?
            }
        }
    }
    let mut shape: Vec<usize> = requested.iter().map(|&d| d.max(0) as usize).collect();
    match unknown {
        Some(i) => {
            if known == 0 || !count.is_multiple_of(known) {
                return Err(KernelError::shape(format!(
                    "cannot reshape {count} elements to {requested:?}"
                )));
            }
            shape[i] = count / known;
        }
        None if known != count => {
            return Err(KernelError::shape(format!(
                "cannot reshape {count} elements to {requested:?}"
            )));
        }
        None => {}
    }
    Ok(shape)
}

pub fn prepare(ctx: &PrepareCtx<'_>, _mode: KernelMode) -> Result<PreparedKernel, KernelError> {
    let x = ctx.input(0)?;
    let count = x.element_count();
    let out_shape = match ctx.op().builtin() {
        Some(BuiltinOp::Reshape) => {
            ctx.expect_arity(1, 2, 1)?;
            // The shape input wins when present, then the option, then the stored shape.
            let requested: Vec<i64> = match ctx.optional_input(1) {
                Some(s) if !(s.shape.len() == 1 && s.shape[0] == 0 && s.data.is_some()) => {
                    match s.value() {
                        Some(v) => v.to_i64_vec()?,
                        None => return Err(KernelError::NeedsValues),
                    }
                }
                _ => match &ctx.node.options {
                    OpOptions::Reshape { new_shape: Some(s) } => {
                        s.iter().map(|&d| d as i64).collect()
                    }
                    _ => ctx.output(0)?.shape.iter().map(|&d| d as i64).collect(),
                },
            };
            resolve_shape(&requested, count)?
        }
        Some(BuiltinOp::Squeeze) => {
            ctx.expect_arity(1, 1, 1)?;
            let dims = match &ctx.node.options {
                OpOptions::Squeeze { dims } => dims.clone(),
                _ => vec![],
            };
            let rank = x.shape.len();
            let mut drop = vec![false; rank];
            if dims.is_empty() {
                for (i, &d) in x.shape.iter().enumerate() {
                    drop[i] = d == 1;
                }
            } else {
                for &d in &dims {
                    let a = normalize_axis(d as i64, rank)?;
                    if x.shape[a] != 1 {
                        return Err(KernelError::shape(format!(
                            "cannot squeeze dimension {a} of {:?}",
                            x.shape
                        )));
                    }
                    drop[a] = true;
                }
            }
            x.shape
                .iter()
                .zip(&drop)
                .filter(|(_, d)| !**d)
                .map(|(&s, _)| s)
                .collect()
        }
        Some(BuiltinOp::ExpandDims) => {
            ctx.expect_arity(2, 2, 1)?;
            let axis = ctx
                .input(1)?
                .value()
                .ok_or(KernelError::NeedsValues)?
                .to_i64_vec()?;
            let axis = *axis
                .first()
                .ok_or_else(|| KernelError::invalid("empty axis"))?;
            let a = normalize_axis(axis, x.shape.len() + 1)?;
            let mut shape = x.shape.to_vec();
            shape.insert(a, 1);
            shape
        }
        Some(BuiltinOp::Densify) => {
            ctx.expect_arity(1, 1, 1)?;
            x.shape.to_vec()
        }
        _ => return Err(KernelError::unsupported(ctx.op().to_string())),
    };
    if ctx.output(0)?.dtype != x.dtype {
        return Err(KernelError::invalid(
            "output dtype differs from input dtype",
        ));
    }
    Ok(PreparedKernel::new(vec![out_shape], CopyKernel))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{DType, OpKind, OpResolver};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::*;
    use crate::cpu::CpuResolver;

    fn resolvers() -> Vec<(&'static str, Arc<dyn OpResolver>)> {
        vec![
            ("reference", Arc::new(CpuResolver::reference())),
            ("optimized", Arc::new(CpuResolver::optimized())),
        ]
    }

    #[test]
    fn shape_ops_match_litert() {
        // RESHAPE with a shape tensor containing -1.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[2, 3, 4]);
        let s = sg.constant_i32("s", &[2], &[-1, 6]);
        let y = sg.tensor("y", DType::F32, &[4, 6]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Reshape),
            &[Some(x), Some(s)],
            &[y],
            OpOptions::Reshape { new_shape: None },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        assert_matches_litert(
            "RESHAPE",
            &mb.finish(),
            &[random_tensor(DType::F32, &[2, 3, 4], 1, -1.0, 1.0)],
            &resolvers(),
            None,
        );

        // SQUEEZE with explicit dims and EXPAND_DIMS with a negative axis, on int8.
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::I8, &[1, 3, 1, 4]);
        let y = sg.tensor("y", DType::I8, &[3, 1, 4]);
        let axis = sg.constant_i32("axis", &[], &[-1]);
        let z = sg.tensor("z", DType::I8, &[3, 1, 4, 1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Squeeze),
            &[Some(x)],
            &[y],
            OpOptions::Squeeze { dims: vec![0] },
        );
        sg.op(
            OpKind::Builtin(BuiltinOp::ExpandDims),
            &[Some(y), Some(axis)],
            &[z],
            OpOptions::None,
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[z]);
        assert_matches_litert(
            "SQUEEZE+EXPAND_DIMS",
            &mb.finish(),
            &[random_tensor(DType::I8, &[1, 3, 1, 4], 2, -128.0, 127.0)],
            &resolvers(),
            None,
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(resolve_shape(&[-1, -1], 6).is_err());
        assert!(resolve_shape(&[4, 2], 6).is_err());
        assert!(resolve_shape(&[-1, 4], 6).is_err());
        assert_eq!(resolve_shape(&[-1, 3], 6).unwrap(), vec![2, 3]);
    }
}
