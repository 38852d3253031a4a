//! BATCH_MATMUL: `[..., M, K] × [..., K, N] → [..., M, N]` with NumPy-style broadcasting
//! of the leading (batch) dimensions and optional transposition of either operand
//! (`adj_x`, `adj_y`), float32 and int8 (per-tensor, LiteRT's integer scheme).

use switchyard_interpreter::{
    DType, KernelError, OpKernel, OpOptions, PrepareCtx, PreparedKernel, TensorView, TensorViewMut,
    kernel::input,
};

use super::conv2d::{QElem, QuantOutput, Rounding, expect_len, first_output, quant_output};
use crate::registry::OpDescriptor;
use crate::util::{broadcast_shapes, for_each_broadcast};
use switchyard_interpreter::BuiltinOp;

/// BATCH_MATMUL.
pub const DESCRIPTORS: &[OpDescriptor] = &[OpDescriptor::new(BuiltinOp::BatchMatmul, prepare)
    .optimized(prepare_optimized)
    .work(crate::work::batch_matmul)];

/// Ranks LiteRT accepts for either operand.
const MIN_RANK: usize = 2;
const MAX_RANK: usize = 5;

/// What prepare decided for one BATCH_MATMUL node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BatchMatmulParams {
    pub lhs_batch: Vec<usize>,
    pub rhs_batch: Vec<usize>,
    pub out_batch: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub adj_x: bool,
    pub adj_y: bool,
    pub dtype: DType,
    pub quant: Option<QuantOutput>,
}

impl BatchMatmulParams {
    pub fn output_shape(&self) -> Vec<usize> {
        let mut s = self.out_batch.clone();
        s.extend([self.m, self.n]);
        s
    }
}

fn split_matrix(what: &str, shape: &[usize]) -> Result<(Vec<usize>, usize, usize), KernelError> {
    if !(MIN_RANK..=MAX_RANK).contains(&shape.len()) {
        return Err(KernelError::shape(format!(
            "{what} must have rank {MIN_RANK} to {MAX_RANK}, has shape {shape:?}"
        )));
    }
    let r = shape.len();
    Ok((shape[..r - 2].to_vec(), shape[r - 2], shape[r - 1]))
}

/// Validates a BATCH_MATMUL node and fixes its parameters.
pub(crate) fn prepare_params(ctx: &PrepareCtx<'_>) -> Result<BatchMatmulParams, KernelError> {
    ctx.expect_arity(2, 2, 1)?;
    let lhs = ctx.input(0)?;
    let rhs = ctx.input(1)?;
    let output = ctx.output(0)?;
    let (adj_x, adj_y) = match &ctx.node.options {
        OpOptions::BatchMatmul { adj_x, adj_y, .. } => (*adj_x, *adj_y),
        OpOptions::None => (false, false),
        _ => {
            return Err(KernelError::invalid(
                "BATCH_MATMUL node with foreign options",
            ));
        }
    };
    let (lhs_batch, l0, l1) = split_matrix("lhs", lhs.shape)?;
    let (rhs_batch, r0, r1) = split_matrix("rhs", rhs.shape)?;
    let (m, k) = if adj_x { (l1, l0) } else { (l0, l1) };
    let (rk, n) = if adj_y { (r1, r0) } else { (r0, r1) };
    if k != rk {
        return Err(KernelError::shape(format!(
            "inner dimensions differ: lhs {:?} (adj_x {adj_x}) and rhs {:?} (adj_y {adj_y})",
            lhs.shape, rhs.shape
        )));
    }
    let out_batch = broadcast_shapes(&lhs_batch, &rhs_batch)?;
    let dtype = lhs.dtype;
    if rhs.dtype != dtype || output.dtype != dtype {
        return Err(KernelError::unsupported(format!(
            "BATCH_MATMUL of {} × {} into {} (operands and output must share a dtype)",
            lhs.dtype, rhs.dtype, output.dtype
        )));
    }
    let quant = match dtype {
        DType::F32 => None,
        DType::I8 => Some(QuantOutput {
            // Unlike CONV_2D and FULLY_CONNECTED, LiteRT's int8 BATCH_MATMUL rounds
            // as TFLite's reference does (pinned by the tie test).
            rounding: Rounding::Gemmlowp,
            ..quant_output(
                &lhs,
                &rhs,
                &output,
                1,
                0,
                true,
                switchyard_interpreter::Activation::None,
            )?
        }),
        other => {
            return Err(KernelError::unsupported(format!(
                "BATCH_MATMUL on {other} (float32 and int8 are supported)"
            )));
        }
    };
    Ok(BatchMatmulParams {
        lhs_batch,
        rhs_batch,
        out_batch,
        m,
        k,
        n,
        adj_x,
        adj_y,
        dtype,
        quant,
    })
}

/// The reference registry's kernel.
pub fn prepare(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(hybrid) = super::hybrid::route(ctx)? {
        return Ok(hybrid);
    }
    let params = prepare_params(ctx)?;
    let shape = params.output_shape();
    Ok(PreparedKernel::new(
        vec![shape],
        BatchMatmulReference { params },
    ))
}

/// Optimized: float32 runs on the packed GEMM (optimized/batch_matmul.rs); int8 the
/// reference.
pub fn prepare_optimized(ctx: &PrepareCtx<'_>) -> Result<PreparedKernel, KernelError> {
    if let Some(hybrid) = super::hybrid::route(ctx)? {
        return Ok(hybrid);
    }
    let params = prepare_params(ctx)?;
    let shape = params.output_shape();
    if params.dtype != DType::F32 {
        return Ok(PreparedKernel::new(
            vec![shape],
            BatchMatmulReference { params },
        ));
    }
    let p = &params;
    let constant = crate::optimized::kernels::constant_f32(&ctx.input(1)?);
    let kernel = crate::optimized::batch_matmul::BatchMatmulF32::new(
        &crate::optimized::batch_matmul::MatmulShape {
            lhs_batch: &p.lhs_batch,
            rhs_batch: &p.rhs_batch,
            out_batch: &p.out_batch,
            m: p.m,
            k: p.k,
            n: p.n,
            adj_x: p.adj_x,
            adj_y: p.adj_y,
        },
        constant.as_deref(),
        crate::optimized::Isa::detect(),
        crate::optimized::shared_pool(ctx.threads),
    )?;
    Ok(PreparedKernel::new(vec![shape], kernel))
}

/// Plain loops, the oracle of the optimized kernels.
pub(crate) struct BatchMatmulReference {
    pub params: BatchMatmulParams,
}

impl BatchMatmulParams {
    /// Flat index of lhs element (i, kk) inside a batch that starts at `base`.
    #[inline(always)]
    fn lhs_at(&self, base: usize, i: usize, kk: usize) -> usize {
        if self.adj_x {
            base + kk * self.m + i
        } else {
            base + i * self.k + kk
        }
    }

    /// Flat index of rhs element (kk, j) inside a batch that starts at `base`.
    #[inline(always)]
    fn rhs_at(&self, base: usize, kk: usize, j: usize) -> usize {
        if self.adj_y {
            base + j * self.k + kk
        } else {
            base + kk * self.n + j
        }
    }

    /// Calls `f(out_base, lhs_base, rhs_base)` for every output matrix.
    fn for_each_batch(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (mk, kn, mn) = (self.m * self.k, self.k * self.n, self.m * self.n);
        for_each_broadcast(
            &self.lhs_batch,
            &self.rhs_batch,
            &self.out_batch,
            |o, a, b| f(o * mn, a * mk, b * kn),
        );
    }
}

/// Float32 reference, summing in f64 (see `conv2d::conv_f32`).
pub(crate) fn batch_matmul_f32(p: &BatchMatmulParams, lhs: &[f32], rhs: &[f32], out: &mut [f32]) {
    p.for_each_batch(|ob, lb, rb| {
        for i in 0..p.m {
            for j in 0..p.n {
                let mut acc = 0.0f64;
                for kk in 0..p.k {
                    acc += lhs[p.lhs_at(lb, i, kk)] as f64 * rhs[p.rhs_at(rb, kk, j)] as f64;
                }
                out[ob + i * p.n + j] = acc as f32;
            }
        }
    });
}

pub(crate) fn batch_matmul_quant<T: QElem>(
    p: &BatchMatmulParams,
    q: &QuantOutput,
    lhs: &[T],
    rhs: &[T],
    out: &mut [T],
) {
    p.for_each_batch(|ob, lb, rb| {
        for i in 0..p.m {
            for j in 0..p.n {
                let mut acc = 0i32;
                for kk in 0..p.k {
                    let x = lhs[p.lhs_at(lb, i, kk)].widen() + q.input_offset;
                    let y = rhs[p.rhs_at(rb, kk, j)].widen() + q.filter_offset;
                    acc = acc.wrapping_add(x.wrapping_mul(y));
                }
                out[ob + i * p.n + j] = T::narrow(q.requantize(acc, 0));
            }
        }
    });
}

impl OpKernel for BatchMatmulReference {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let p = &self.params;
        let lhs = input(inputs, 0)?;
        let rhs = input(inputs, 1)?;
        let out = first_output(outputs)?;
        let batch = |s: &[usize]| s.iter().product::<usize>();
        expect_len(
            "lhs",
            lhs.bytes.len(),
            lhs.dtype,
            batch(&p.lhs_batch) * p.m * p.k,
        )?;
        expect_len(
            "rhs",
            rhs.bytes.len(),
            rhs.dtype,
            batch(&p.rhs_batch) * p.k * p.n,
        )?;
        expect_len(
            "output",
            out.bytes.len(),
            out.dtype,
            batch(&p.out_batch) * p.m * p.n,
        )?;
        match (p.dtype, &p.quant) {
            (DType::F32, _) => batch_matmul_f32(p, lhs.f32s()?, rhs.f32s()?, out.f32s_mut()?),
            (DType::I8, Some(q)) => {
                batch_matmul_quant(p, q, lhs.i8s()?, rhs.i8s()?, out.i8s_mut()?)
            }
            (other, _) => return Err(KernelError::dtype("prepared BATCH_MATMUL dtype", other)),
        }
        Ok(())
    }

    fn name(&self) -> &str {
        match self.params.dtype {
            DType::F32 => "batch_matmul/f32/reference",
            _ => "batch_matmul/i8/reference",
        }
    }
}

#[cfg(test)]
mod tests {
    use switchyard_interpreter::builder::ModelBuilder;
    use switchyard_interpreter::{BuiltinOp, OpKind, Quant};
    use switchyard_testkit::{assert_matches_litert, random_tensor};

    use super::super::conv2d::testing::*;
    use super::*;

    #[derive(Clone, Debug)]
    struct Case {
        dtype: DType,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        adj_x: bool,
        adj_y: bool,
        ties: bool,
    }

    fn case(lhs: &[usize], rhs: &[usize], adj_x: bool, adj_y: bool) -> Case {
        Case {
            dtype: DType::F32,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            adj_x,
            adj_y,
            ties: false,
        }
    }

    fn output_shape(c: &Case) -> Vec<usize> {
        let (lb, l0, l1) = split_matrix("lhs", &c.lhs).expect("test shape");
        let (rb, r0, r1) = split_matrix("rhs", &c.rhs).expect("test shape");
        let m = if c.adj_x { l1 } else { l0 };
        let n = if c.adj_y { r0 } else { r1 };
        let mut s = broadcast_shapes(&lb, &rb).expect("test shape");
        s.extend([m, n]);
        s
    }

    fn depth(c: &Case) -> usize {
        let r = c.lhs.len();
        if c.adj_x { c.lhs[r - 2] } else { c.lhs[r - 1] }
    }

    fn build(c: &Case) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let a = sg.tensor("a", c.dtype, &c.lhs);
        let b = sg.tensor("b", c.dtype, &c.rhs);
        let y = sg.tensor("y", c.dtype, &output_shape(c));
        if c.dtype != DType::F32 {
            let (mut in_scale, mut out_scale) =
                scales(switchyard_interpreter::Activation::None, 0.01, depth(c));
            let mut rhs_scale = 0.01;
            if c.ties {
                (in_scale, out_scale) = (TIE_IN_SCALE, TIE_OUT_SCALE);
                rhs_scale = tie_filter_scales(1, false)[0];
            }
            sg.set_quant(a, Quant::per_tensor(in_scale, -3));
            sg.set_quant(b, Quant::per_tensor(rhs_scale, 0));
            sg.set_quant(y, Quant::per_tensor(out_scale, 5));
        }
        sg.op(
            OpKind::Builtin(BuiltinOp::BatchMatmul),
            &[Some(a), Some(b)],
            &[y],
            OpOptions::BatchMatmul {
                adj_x: c.adj_x,
                adj_y: c.adj_y,
                asymmetric_quantize_inputs: false,
            },
        );
        sg.set_inputs(&[a, b]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    fn check(c: &Case) {
        let name = format!("{c:?}");
        let (x, w) = if c.ties {
            (
                random_tensor(c.dtype, &c.lhs, 3, -6.0, 0.0),
                random_tensor(c.dtype, &c.rhs, 4, -3.0, 3.0),
            )
        } else {
            (random(c.dtype, &c.lhs, 3), random(c.dtype, &c.rhs, 4))
        };
        let model = build(c);
        let inputs = [x, w];
        if c.dtype != DType::F32 {
            assert_informative(&name, &model, &inputs);
        }
        assert_matches_litert(&name, &model, &inputs, &resolvers(), tol(c.dtype));
    }

    fn variants() -> Vec<Case> {
        vec![
            case(&[2, 3, 4], &[2, 4, 5], false, false),
            case(&[2, 4, 3], &[2, 4, 5], true, false),
            case(&[2, 3, 4], &[2, 5, 4], false, true),
            case(&[2, 4, 3], &[2, 5, 4], true, true),
            case(&[2, 1, 3, 4], &[3, 4, 5], false, false),
            case(&[1, 3, 4], &[2, 5, 4], false, true),
            case(&[3, 4], &[2, 2, 4, 6], false, false),
            case(&[2, 1, 1, 3, 4], &[1, 2, 4, 2], false, false),
        ]
    }

    #[test]
    fn optimized_float_matches_reference() {
        let mut cases = variants();
        cases.extend([
            // Attention's shapes: many heads (split over batches at 2 threads), and
            // one batch with more rows than a micro-kernel tile and a ragged panel.
            case(&[1, 4, 32, 16], &[1, 4, 16, 32], false, false),
            case(&[1, 4, 32, 32], &[1, 4, 32, 16], false, false),
            case(&[1, 37, 20], &[1, 19, 20], false, true),
            case(&[3, 20, 37], &[1, 20, 19], true, false),
            case(&[2, 0, 5], &[2, 5, 3], false, false),
        ]);
        for c in cases {
            let x = random(c.dtype, &c.lhs, 3);
            let w = random(c.dtype, &c.rhs, 4);
            crate::optimized::kernels::testing::assert_optimized_matches_reference(
                &format!("{c:?}"),
                &build(&c),
                &[x, w],
                "batch_matmul/f32/gemm",
            );
        }
    }

    #[test]
    fn optimized_constant_rhs_matches_reference() {
        for c in [
            case(&[2, 7, 24], &[24, 20], false, false),
            case(&[2, 3, 7, 24], &[3, 20, 24], false, true),
        ] {
            let w = random(c.dtype, &c.rhs, 4);
            let w = w.view();
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let a = sg.tensor("a", c.dtype, &c.lhs);
            let b = sg.constant_f32("b", &c.rhs, w.f32s().expect("f32"));
            let y = sg.tensor("y", c.dtype, &output_shape(&c));
            sg.op(
                OpKind::Builtin(BuiltinOp::BatchMatmul),
                &[Some(a), Some(b)],
                &[y],
                OpOptions::BatchMatmul {
                    adj_x: c.adj_x,
                    adj_y: c.adj_y,
                    asymmetric_quantize_inputs: false,
                },
            );
            sg.set_inputs(&[a]);
            sg.set_outputs(&[y]);
            let x = random(c.dtype, &c.lhs, 3);
            crate::optimized::kernels::testing::assert_optimized_matches_reference(
                &format!("constant {c:?}"),
                &mb.finish(),
                &[x],
                "batch_matmul/f32/gemm",
            );
        }
    }

    #[test]
    fn float_matches_litert() {
        for c in variants() {
            check(&c);
        }
    }

    #[test]
    fn int8_matches_litert() {
        for c in variants().into_iter().take(6) {
            check(&Case {
                dtype: DType::I8,
                ..c
            });
        }
    }

    #[test]
    fn int8_ties_match_litert() {
        for (lhs, rhs) in [([2, 3, 8], [2, 8, 5]), ([2, 12, 8], [2, 8, 12])] {
            check(&Case {
                dtype: DType::I8,
                ties: true,
                ..case(&lhs, &rhs, false, false)
            });
        }
    }

    /// The BATCH_MATMUL of the openWakeWord melspectrogram front end (float, the
    /// mel filterbank), cut out with its real operand.
    #[test]
    fn real_model_node_matches_litert() {
        assert_eq!(
            real_nodes_match_litert("oww_melspectrogram.tflite", BuiltinOp::BatchMatmul),
            1
        );
    }

    fn float_node(lhs: &[usize], rhs: &[usize]) -> Vec<u8> {
        let mut mb = ModelBuilder::new();
        let sg = mb.main();
        let a = sg.tensor("a", DType::F32, lhs);
        let b = sg.tensor("b", DType::F32, rhs);
        let y = sg.tensor("y", DType::F32, &[1, 1]);
        sg.op(
            OpKind::Builtin(BuiltinOp::BatchMatmul),
            &[Some(a), Some(b)],
            &[y],
            OpOptions::BatchMatmul {
                adj_x: false,
                adj_y: false,
                asymmetric_quantize_inputs: false,
            },
        );
        sg.set_inputs(&[a, b]);
        sg.set_outputs(&[y]);
        mb.finish()
    }

    #[test]
    fn invalid_nodes_are_prepare_errors() {
        let e = prepare_error(&float_node(&[2, 3, 4], &[2, 5, 4]));
        assert!(e.contains("inner dimensions"), "{e}");
        let e = prepare_error(&float_node(&[2, 3, 4], &[3, 4, 5]));
        assert!(e.contains("broadcast"), "{e}");
        let e = prepare_error(&float_node(&[4], &[4, 5]));
        assert!(e.contains("rank 2 to 5"), "{e}");
        let e = prepare_error(&float_node(&[1, 1, 1, 1, 2, 3], &[3, 4]));
        assert!(e.contains("rank 2 to 5"), "{e}");
    }
}
