//! Ops that only change the shape: RESHAPE, SQUEEZE, EXPAND_DIMS, and DENSIFY (the loader
//! already expanded sparse constants to dense data, so DENSIFY is a copy, folded away at
//! prepare like any node with constant inputs). The data is copied as bytes, so every
//! fixed-size dtype works.

use switchyard_interpreter::{
    BuiltinOp, DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut,
};

use super::movement::{
    byte_len, checked_input, count, expect_bytes, known_ints, known_scalar, movable_elem,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::normalize_axis;
use switchyard_interpreter::NodeSupportCtx;

/// RESHAPE, SQUEEZE, EXPAND_DIMS, DENSIFY.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::Reshape, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized)
        .npu(support::npu_int8),
    OpDescriptor::new(BuiltinOp::Squeeze, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::ExpandDims, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::Densify, prepare).gpu(support::gpu_of_constant),
];

/// GPU: float32, the same elements in a new shape.
fn gpu(ctx: &NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 1, 2, 1)?;
    let x = support::input(ctx, 0)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    if x.element_count() != out.element_count() {
        return Err(format!(
            "output shape {:?} does not hold the input's {} elements",
            out.shape,
            x.element_count()
        ));
    }
    Ok(())
}

/// Copies input 0 to output 0 byte for byte.
pub struct CopyKernel {
    bytes: usize,
}

impl OpKernel for CopyKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = checked_input(inputs, 0, &[self.bytes], 1)?;
        let out = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?;
        expect_bytes("output", out.bytes.len(), &[self.bytes], 1)?;
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
                known = usize::try_from(d)
                    .ok()
                    .and_then(|d| known.checked_mul(d))
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

/// RESHAPE's requested shape, in LiteRT's order of preference: a 1-D int32 shape input,
/// then the `new_shape` option (where the legacy `[0]` means a scalar), then the shape
/// stored in the model for the output.
fn requested_shape(ctx: &PrepareCtx<'_>) -> Result<Vec<i64>, KernelError> {
    let vector = ctx
        .optional_input(1)
        .filter(|s| s.shape.len() == 1 && matches!(s.dtype, DType::I32 | DType::I64));
    if let Some(s) = vector {
        return known_ints(&s, "shape");
    }
    match &ctx.node.options {
        OpOptions::Reshape { new_shape: Some(s) } => Ok(if s.as_slice() == [0] {
            vec![]
        } else {
            s.iter().map(|&d| d as i64).collect()
        }),
        _ => Ok(ctx.output(0)?.shape.iter().map(|&d| d as i64).collect()),
    }
}

fn squeeze_shape(shape: &[usize], dims: &[i32]) -> Result<Vec<usize>, KernelError> {
    let rank = shape.len();
    let mut drop = vec![false; rank];
    if dims.is_empty() {
        for (i, &d) in shape.iter().enumerate() {
            drop[i] = d == 1;
        }
    } else {
        for &d in dims {
            let a = normalize_axis(d as i64, rank)?;
            if shape.get(a) != Some(&1) {
                return Err(KernelError::shape(format!(
                    "cannot squeeze dimension {a} of {shape:?}: its size is not 1"
                )));
            }
            drop[a] = true;
        }
    }
    Ok(shape
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(&s, _)| s)
        .collect())
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    let x = ctx.input(0)?;
    let n = count(x.shape)?;
    let out_shape = match ctx.op().builtin() {
        Some(BuiltinOp::Reshape) => {
            ctx.expect_arity(1, 2, 1)?;
            resolve_shape(&requested_shape(ctx)?, n)?
        }
        Some(BuiltinOp::Squeeze) => {
            ctx.expect_arity(1, 1, 1)?;
            let dims = match &ctx.node.options {
                OpOptions::Squeeze { dims } => dims.as_slice(),
                _ => &[],
            };
            squeeze_shape(x.shape, dims)?
        }
        Some(BuiltinOp::ExpandDims) => {
            ctx.expect_arity(2, 2, 1)?;
            let axis = known_scalar(&ctx.input(1)?, "axis")?;
            let a = normalize_axis(axis, x.shape.len() + 1)?;
            let mut shape = x.shape.to_vec();
            shape.insert(a, 1);
            shape
        }
        Some(BuiltinOp::Densify) => {
            ctx.expect_arity(1, 1, 1)?;
            x.shape.to_vec()
        }
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not a reshape op",
                ctx.op()
            )));
        }
    };
    let elem = movable_elem(x.dtype)?;
    super::movement::same_dtype(x.dtype, ctx.output(0)?.dtype)?;
    Ok(PreparedKernel::new(
        vec![out_shape],
        CopyKernel {
            bytes: byte_len(x.shape, elem)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{DType, OpKind};
    use switchyard_testkit::assert_matches_litert;

    use super::super::movement::testing::{data, expect_error, ints, resolvers};
    use super::*;

    fn reshape_model(
        dtype: DType,
        input: &[usize],
        shape_input: Option<(&[i32], bool)>,
        option: Option<Vec<i32>>,
        out: &[usize],
    ) -> ModelBuilder {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, input);
        let s = shape_input.map(|(values, constant)| {
            if constant {
                sg.constant_i32("shape", &[values.len()], values)
            } else {
                sg.tensor("shape", DType::I32, &[values.len()])
            }
        });
        let y = sg.tensor("y", dtype, out);
        // LiteRT dereferences an omitted (-1) shape input, so leave it out entirely.
        let ins: Vec<Option<usize>> = [Some(x), s].into_iter().flatten().map(Some).collect();
        sg.op(
            OpKind::Builtin(BuiltinOp::Reshape),
            &ins,
            &[y],
            OpOptions::Reshape { new_shape: option },
        );
        match (shape_input, s) {
            (Some((_, false)), Some(s)) => sg.set_inputs(&[x, s]),
            _ => sg.set_inputs(&[x]),
        }
        sg.set_outputs(&[y]);
        mb
    }

    #[test]
    fn reshape_matches_litert() {
        let dtypes = [
            DType::F32,
            DType::I8,
            DType::U8,
            DType::I16,
            DType::I32,
            DType::I64,
            DType::Bool,
        ];
        for (k, dtype) in dtypes.into_iter().enumerate() {
            // Constant shape tensor with -1, then the option alone.
            let mb = reshape_model(dtype, &[2, 3, 4], Some((&[-1, 6], true)), None, &[4, 6]);
            let x = data(dtype, &[2, 3, 4], k as u64);
            assert_matches_litert(
                &format!("RESHAPE const shape {dtype}"),
                &mb.finish(),
                std::slice::from_ref(&x),
                &resolvers(),
                None,
            );
            let mb = reshape_model(dtype, &[2, 3, 4], None, Some(vec![3, -1, 2]), &[3, 4, 2]);
            assert_matches_litert(
                &format!("RESHAPE option {dtype}"),
                &mb.finish(),
                &[x],
                &resolvers(),
                None,
            );
        }
        // Shape given at run time (a dynamic output), with and without -1.
        for shape in [[-1i32, 2, 2], [6, 2, 2]] {
            let mb = reshape_model(DType::F32, &[4, 6], Some((&shape, false)), None, &[6, 2, 2]);
            assert_matches_litert(
                &format!("RESHAPE runtime shape {shape:?}"),
                &mb.finish(),
                &[data(DType::F32, &[4, 6], 3), ints(&[3], &shape)],
                &resolvers(),
                None,
            );
        }
        // To a scalar, through the legacy [0] option.
        let mb = reshape_model(DType::F32, &[1, 1], None, Some(vec![0]), &[]);
        assert_matches_litert(
            "RESHAPE to scalar",
            &mb.finish(),
            &[data(DType::F32, &[1, 1], 4)],
            &resolvers(),
            None,
        );
    }

    #[test]
    fn squeeze_and_expand_dims_match_litert() {
        for (dims, out) in [
            (vec![0], vec![3, 1, 4]),
            (vec![-2, 0], vec![3, 4]),
            (vec![], vec![3, 4]),
        ] {
            for dtype in [DType::F32, DType::I8, DType::Bool] {
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let x = sg.tensor("x", dtype, &[1, 3, 1, 4]);
                let y = sg.tensor("y", dtype, &out);
                sg.op(
                    OpKind::Builtin(BuiltinOp::Squeeze),
                    &[Some(x)],
                    &[y],
                    OpOptions::Squeeze { dims: dims.clone() },
                );
                sg.set_inputs(&[x]);
                sg.set_outputs(&[y]);
                assert_matches_litert(
                    &format!("SQUEEZE {dims:?} {dtype}"),
                    &mb.finish(),
                    &[data(dtype, &[1, 3, 1, 4], 2)],
                    &resolvers(),
                    None,
                );
            }
        }
        for (axis, out, constant) in [
            (0, vec![1, 3, 4], true),
            (2, vec![3, 4, 1], true),
            (-1, vec![3, 4, 1], true),
            (-3, vec![1, 3, 4], true),
            (1, vec![3, 1, 4], false),
        ] {
            for dtype in [DType::F32, DType::U8, DType::I64] {
                let mut mb = ModelBuilder::new();
                let sg = mb.main();
                let x = sg.tensor("x", dtype, &[3, 4]);
                let a = if constant {
                    sg.constant_i32("axis", &[], &[axis])
                } else {
                    sg.tensor("axis", DType::I32, &[1])
                };
                let y = sg.tensor("y", dtype, &out);
                sg.op(
                    OpKind::Builtin(BuiltinOp::ExpandDims),
                    &[Some(x), Some(a)],
                    &[y],
                    OpOptions::None,
                );
                let mut inputs = vec![data(dtype, &[3, 4], 5)];
                if constant {
                    sg.set_inputs(&[x]);
                } else {
                    sg.set_inputs(&[x, a]);
                    inputs.push(ints(&[1], &[axis]));
                }
                sg.set_outputs(&[y]);
                assert_matches_litert(
                    &format!("EXPAND_DIMS {axis} {dtype} const={constant}"),
                    &mb.finish(),
                    &inputs,
                    &resolvers(),
                    None,
                );
            }
        }
    }

    /// DENSIFY of the sparse fp16 weights of a real model (expanded by the loader, copied
    /// by the kernel) against the tensors LiteRT's own DENSIFY produces.
    #[test]
    fn densify_of_real_sparse_weights_matches_litert() {
        use switchyard_interpreter::kernel::TensorMeta;
        use switchyard_interpreter::{Model, PrepareCtx, TensorView, TensorViewMut, npy};
        use switchyard_testkit::{compare, models_dir, python, repo_root};

        fn meta<'a>(
            t: &'a switchyard_interpreter::TensorDef,
            data: Option<&'a [u8]>,
        ) -> TensorMeta<'a> {
            TensorMeta {
                dtype: t.dtype,
                shape: &t.shape,
                quant: t.quant.as_ref(),
                data,
                name: &t.name,
            }
        }
        let path = models_dir().join("mp_pose_detection.tflite");
        let model = Model::from_path(&path).unwrap();
        let sg = &model.subgraphs[0];
        let nodes: Vec<_> = sg
            .nodes
            .iter()
            .filter(|n| n.builtin() == Some(BuiltinOp::Densify))
            .collect();
        assert!(nodes.len() >= 30, "pose detection has 38 DENSIFY nodes");
        let dir = tempfile::tempdir().unwrap();
        let outputs: Vec<String> = nodes.iter().map(|n| n.outputs[0].to_string()).collect();
        let status = std::process::Command::new(python())
            .arg(repo_root().join("scripts/litert_tensors.py"))
            .arg("--model")
            .arg(&path)
            .arg("--tensors")
            .arg(outputs.join(","))
            .arg("--out")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        for node in nodes {
            let (i, o) = (node.inputs[0].unwrap(), node.outputs[0]);
            let (input, output) = (&sg.tensors[i], &sg.tensors[o]);
            assert!(input.was_sparse, "{} is not sparse", input.name);
            let data = input.data.as_ref().unwrap().dense().unwrap();
            let data = &data[..];

            let ctx = PrepareCtx {
                node,
                inputs: vec![Some(meta(input, Some(data)))],
                outputs: vec![meta(output, None)],
                intermediates: Vec::new(),
                threads: 1,
            };
            for (name, r) in resolvers() {
                let prepared = r.prepare(&ctx).unwrap();
                assert_eq!(prepared.output_shapes, vec![input.shape.clone()]);
                let mut out = vec![0u8; data.len()];
                let view = TensorView {
                    dtype: input.dtype,
                    shape: &input.shape,
                    quant: None,
                    bytes: data,
                };
                let mut outs = [TensorViewMut {
                    dtype: output.dtype,
                    shape: &input.shape,
                    quant: None,
                    bytes: &mut out,
                }];
                prepared.kernel.eval(&[Some(view)], &mut outs).unwrap();
                let got = switchyard_interpreter::Tensor::from_bytes(
                    output.dtype,
                    input.shape.clone(),
                    &out,
                )
                .unwrap();
                let expected = npy::read(dir.path().join(format!("tensor_{o}.npy"))).unwrap();
                compare(&got, &expected, switchyard_testkit::Tolerance::Exact)
                    .unwrap_or_else(|e| panic!("[{name}] DENSIFY node {}: {e}", node.index));
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(resolve_shape(&[-1, -1], 6).is_err());
        assert!(resolve_shape(&[4, 2], 6).is_err());
        assert!(resolve_shape(&[-1, 4], 6).is_err());
        assert!(resolve_shape(&[-1, 0], 0).is_err());
        assert!(resolve_shape(&[-3, 2], 6).is_err());
        assert!(resolve_shape(&[i64::MAX, 4], 6).is_err());
        assert_eq!(resolve_shape(&[-1, 3], 6).unwrap(), vec![2, 3]);

        let mb = reshape_model(DType::F32, &[2, 3], Some((&[4, 2], true)), None, &[4, 2]);
        expect_error(&mb, &[data(DType::F32, &[2, 3], 1)], "cannot reshape");
        // A bad runtime shape fails the run, not the process.
        let mb = reshape_model(DType::F32, &[2, 3], Some((&[5], false)), None, &[5]);
        expect_error(
            &mb,
            &[data(DType::F32, &[2, 3], 1), ints(&[1], &[5])],
            "cannot reshape",
        );

        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[1, 3]);
        let y = sg.tensor("y", DType::F32, &[1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::Squeeze),
            &[Some(x)],
            &[y],
            OpOptions::Squeeze { dims: vec![1] },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        expect_error(&mb, &[data(DType::F32, &[1, 3], 1)], "cannot squeeze");
        assert!(squeeze_shape(&[], &[0]).is_err());
        assert_eq!(squeeze_shape(&[], &[]).unwrap(), Vec::<usize>::new());

        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", DType::F32, &[3]);
        let a = sg.constant_i32("axis", &[], &[3]);
        let y = sg.tensor("y", DType::F32, &[3, 1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::ExpandDims),
            &[Some(x), Some(a)],
            &[y],
            OpOptions::None,
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        expect_error(&mb, &[data(DType::F32, &[3], 1)], "axis 3 out of range");
    }
}
