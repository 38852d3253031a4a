//! DEPTH_TO_SPACE and SPACE_TO_DEPTH on NHWC tensors. Both are fixed permutations of a
//! 6-D view (`[N, H, W, b, b, C/b²]` against `[N, H, b, W, b, C/b²]`), so prepare writes
//! the permutation as a strided walk and eval is one strided copy.

use switchyard_interpreter::{
    BuiltinOp, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView,
    TensorViewMut,
};

use super::movement::{
    Walk, checked_input, copy_strided, count, expect_bytes, movable_elem, same_dtype,
};
use crate::registry::OpDescriptor;
use crate::support;
use crate::util::expect_rank;

/// DEPTH_TO_SPACE, SPACE_TO_DEPTH.
pub const DESCRIPTORS: &[OpDescriptor] = &[
    OpDescriptor::new(BuiltinOp::DepthToSpace, prepare)
        .gpu(gpu)
        .dsp(support::dsp_quantized),
    OpDescriptor::new(BuiltinOp::SpaceToDepth, prepare),
];

/// GPU: float32 DEPTH_TO_SPACE of an NHWC tensor (a gather per output element).
fn gpu(ctx: &switchyard_interpreter::NodeSupportCtx<'_>) -> Result<(), String> {
    support::arity(ctx, 1, 1, 1)?;
    let OpOptions::DepthToSpace { block_size: b } = ctx.node.options else {
        return Err("DEPTH_TO_SPACE without its options".into());
    };
    let x = support::input(ctx, 0)?;
    let out = support::output(ctx, 0)?;
    support::gpu_f32(&x, "input 0")?;
    support::gpu_f32(&out, "output 0")?;
    let &[n, h, w, c] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    if b == 0 || c % (b * b) != 0 {
        return Err(format!(
            "{c} channels are not a multiple of block {b} squared"
        ));
    }
    let expected = [n, h * b, w * b, c / (b * b)];
    if out.shape != expected {
        return Err(format!(
            "output shape {:?} should be {expected:?}",
            out.shape
        ));
    }
    support::gpu_count(out.shape)
}

struct Rearrange {
    elem: usize,
    in_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// The 6-D shape walked in output order, and where each step lands in the input.
    walk_shape: Vec<usize>,
    walk: Walk,
}

pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    ctx.expect_arity(1, 1, 1)?;
    let x = ctx.input(0)?;
    let elem = movable_elem(x.dtype)?;
    same_dtype(x.dtype, ctx.output(0)?.dtype)?;
    expect_rank("input", x.shape, 4)?;
    count(x.shape)?;
    let b = match &ctx.node.options {
        OpOptions::DepthToSpace { block_size } => *block_size,
        _ => 0,
    };
    if b == 0 {
        return Err(KernelError::invalid("block_size must be positive"));
    }
    let (n, h, w, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let s = |v: usize| v as isize;
    let (out_shape, walk_shape, strides) = match ctx.op().builtin() {
        Some(BuiltinOp::DepthToSpace) => {
            let bb = b
                .checked_mul(b)
                .filter(|&bb| c.is_multiple_of(bb))
                .ok_or_else(|| {
                    KernelError::shape(format!("depth {c} is not a multiple of block_size² ({b}²)"))
                })?;
            let co = c / bb;
            // Output [n, h, by, w, bx, co] reads input (n, h, w, (by * b + bx) * co + co_i).
            (
                vec![n, h * b, w * b, co],
                vec![n, h, b, w, b, co],
                vec![s(h * w * c), s(w * c), s(b * co), s(c), s(co), 1],
            )
        }
        Some(BuiltinOp::SpaceToDepth) => {
            if !h.is_multiple_of(b) || !w.is_multiple_of(b) {
                return Err(KernelError::shape(format!(
                    "height {h} and width {w} must be multiples of block_size {b}"
                )));
            }
            let (ho, wo) = (h / b, w / b);
            let depth = b
                .checked_mul(b)
                .and_then(|bb| bb.checked_mul(c))
                .ok_or_else(|| KernelError::shape("output depth overflows"))?;
            // Output [n, ho, wo, by, bx, c] reads input (n, ho * b + by, wo * b + bx, c).
            (
                vec![n, ho, wo, depth],
                vec![n, ho, wo, b, b, c],
                vec![s(h * w * c), s(b * w * c), s(b * c), s(w * c), s(c), 1],
            )
        }
        _ => {
            return Err(KernelError::unsupported(format!(
                "{} is not DEPTH_TO_SPACE or SPACE_TO_DEPTH",
                ctx.op()
            )));
        }
    };
    Ok(PreparedKernel::new(
        vec![out_shape.clone()],
        Rearrange {
            elem,
            in_shape: x.shape.to_vec(),
            out_shape,
            walk_shape,
            walk: Walk { offset: 0, strides },
        },
    ))
}

impl OpKernel for Rearrange {
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
            &Walk::contiguous(&self.walk_shape),
            &self.walk_shape,
            self.elem,
        )
    }

    fn name(&self) -> &str {
        "depth_to_space"
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{DType, OpKind, Quant};
    use switchyard_testkit::{Tolerance, assert_matches_litert};

    use super::super::movement::testing::{data, expect_error, resolvers};
    use super::*;

    fn model(
        op: BuiltinOp,
        shape: &[usize],
        out: &[usize],
        b: usize,
        dtype: DType,
    ) -> ModelBuilder {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let x = sg.tensor("x", dtype, shape);
        let y = sg.tensor("y", dtype, out);
        if dtype.is_quantized_int() {
            sg.set_quant(x, Quant::per_tensor(0.5, 1));
            sg.set_quant(y, Quant::per_tensor(0.5, 1));
        }
        sg.op(
            OpKind::Builtin(op),
            &[Some(x)],
            &[y],
            OpOptions::DepthToSpace { block_size: b },
        );
        sg.set_inputs(&[x]);
        sg.set_outputs(&[y]);
        mb
    }

    #[test]
    fn depth_to_space_matches_litert() {
        for (shape, b, out) in [
            ([1usize, 2, 3, 8], 2usize, [1usize, 4, 6, 2]),
            ([2, 3, 2, 9], 3, [2, 9, 6, 1]),
            ([1, 2, 2, 4], 1, [1, 2, 2, 4]),
        ] {
            for dtype in [DType::F32, DType::I8, DType::U8, DType::I32, DType::I64] {
                assert_matches_litert(
                    &format!("DEPTH_TO_SPACE {shape:?} b={b} {dtype}"),
                    &model(BuiltinOp::DepthToSpace, &shape, &out, b, dtype).finish(),
                    &[data(dtype, &shape, 5)],
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
    }

    #[test]
    fn space_to_depth_matches_litert() {
        for (shape, b, out) in [
            ([1usize, 4, 6, 2], 2usize, [1usize, 2, 3, 8]),
            ([2, 6, 3, 1], 3, [2, 2, 1, 9]),
        ] {
            for dtype in [DType::F32, DType::I8, DType::U8, DType::I32, DType::I64] {
                assert_matches_litert(
                    &format!("SPACE_TO_DEPTH {shape:?} b={b} {dtype}"),
                    &model(BuiltinOp::SpaceToDepth, &shape, &out, b, dtype).finish(),
                    &[data(dtype, &shape, 6)],
                    &resolvers(),
                    Some(Tolerance::Exact),
                );
            }
        }
    }

    #[test]
    fn bad_blocks_are_errors() {
        let x = data(DType::F32, &[1, 2, 3, 6], 1);
        let mb = model(
            BuiltinOp::DepthToSpace,
            &[1, 2, 3, 6],
            &[1, 4, 6, 1],
            2,
            DType::F32,
        );
        expect_error(&mb, std::slice::from_ref(&x), "not a multiple");
        let mb = model(
            BuiltinOp::SpaceToDepth,
            &[1, 2, 3, 6],
            &[1, 1, 1, 24],
            2,
            DType::F32,
        );
        expect_error(&mb, std::slice::from_ref(&x), "multiples of block_size");
        let mb = model(
            BuiltinOp::DepthToSpace,
            &[1, 2, 3, 6],
            &[1, 2, 3, 6],
            0,
            DType::F32,
        );
        expect_error(&mb, std::slice::from_ref(&x), "block_size must be positive");
        let x = data(DType::F32, &[2, 3, 6], 1);
        let mb = model(
            BuiltinOp::DepthToSpace,
            &[2, 3, 6],
            &[2, 3, 6],
            1,
            DType::F32,
        );
        expect_error(&mb, &[x], "rank 4");
    }
}
