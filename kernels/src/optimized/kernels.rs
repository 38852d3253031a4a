//! The optimized float32 kernels as [`OpKernel`]s, for the op files' `prepare` to pick
//! under [`OptimizedResolver`](crate::OptimizedResolver).
//!
//! Each `try_*` runs after the op's reference `prepare` has validated the node and
//! computed its output shape, and returns `None` when the fast path does not apply
//! (non-float tensors, weights only known at run time, TANH/SIGN_BIT activations,
//! depth multiplier other than 1): the reference kernel then stays in place.

use std::sync::Arc;

use switchyard_interpreter::{
    DType, KernelError, OpKernel, OpOptions, PrepareCtx, TensorMeta, TensorView, TensorViewMut,
    kernel::input,
};

use super::conv::{Conv2dF32, ConvGeom};
use super::depthwise::DepthwiseF32;
use super::gemm::{Isa, PackedB, clamp_of, gemm};
use super::pool::{ThreadPool, shared_pool};
use crate::util::conv_output_size;

/// A float tensor's values when they are known at prepare.
pub(crate) fn constant_f32(meta: &TensorMeta<'_>) -> Option<Vec<f32>> {
    if meta.dtype != DType::F32 {
        return None;
    }
    let bytes = meta.data?;
    if bytes.len() != meta.element_count() * 4 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// The optional bias input: `Some(None)` when absent, `None` when present but not a
/// known float vector of `n` values.
fn constant_bias(ctx: &PrepareCtx<'_>, i: usize, n: usize) -> Option<Option<Vec<f32>>> {
    match ctx.optional_input(i) {
        None => Some(None),
        Some(b) => {
            let v = constant_f32(&b)?;
            (v.len() == n).then_some(Some(v))
        }
    }
}

fn f32_io(ctx: &PrepareCtx<'_>) -> bool {
    ctx.input(0).is_ok_and(|x| x.dtype == DType::F32)
        && ctx.output(0).is_ok_and(|y| y.dtype == DType::F32)
}

fn io<'a, 'b>(
    inputs: &'b [Option<TensorView<'a>>],
    outputs: &'b mut [TensorViewMut<'_>],
) -> Result<(&'a [f32], &'b mut [f32]), KernelError> {
    let x = input(inputs, 0)?.f32s()?;
    let y = outputs
        .first_mut()
        .ok_or_else(|| KernelError::invalid("missing output"))?
        .f32s_mut()?;
    Ok((x, y))
}

/// Geometry of a NHWC convolution whose output shape prepare already computed.
fn geometry(
    ctx: &PrepareCtx<'_>,
    out_shape: &[usize],
    k_h: usize,
    k_w: usize,
    out_c: usize,
) -> Option<ConvGeom> {
    let OpOptions::Conv(o) = &ctx.node.options else {
        return None;
    };
    let x = ctx.input(0).ok()?;
    let [batch, in_h, in_w, in_c] = *x.shape else {
        return None;
    };
    let (out_h, pad_top) = conv_output_size(in_h, k_h, o.stride_h, o.dilation_h, o.padding).ok()?;
    let (out_w, pad_left) =
        conv_output_size(in_w, k_w, o.stride_w, o.dilation_w, o.padding).ok()?;
    let g = ConvGeom {
        batch,
        in_h,
        in_w,
        in_c,
        out_h,
        out_w,
        out_c,
        k_h,
        k_w,
        stride_h: o.stride_h,
        stride_w: o.stride_w,
        dil_h: o.dilation_h,
        dil_w: o.dilation_w,
        pad_top,
        pad_left,
    };
    (out_shape == [batch, out_h, out_w, out_c]).then_some(g)
}

struct ConvKernel {
    conv: Conv2dF32,
    pool: Arc<ThreadPool>,
    name: &'static str,
}

impl OpKernel for ConvKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let (x, y) = io(inputs, outputs)?;
        self.conv.run(&self.pool, x, y)
    }
    fn name(&self) -> &str {
        self.name
    }
    /// Filter and bias live packed in the kernel.
    fn consumed_inputs(&self) -> &[usize] {
        &[1, 2]
    }
    fn memory_bytes(&self) -> usize {
        self.conv.packed_bytes()
    }
}

/// CONV_2D, float32, constant filter `[out][kh][kw][in]`.
pub fn try_conv2d(
    ctx: &PrepareCtx<'_>,
    out_shape: &[usize],
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let OpOptions::Conv(o) = &ctx.node.options else {
        return Ok(None);
    };
    let Some(clamp) = clamp_of(o.activation) else {
        return Ok(None);
    };
    let filter = ctx.input(1)?;
    let [out_c, k_h, k_w, f_in] = *filter.shape else {
        return Ok(None);
    };
    if !f32_io(ctx) || ctx.input(0)?.shape.get(3) != Some(&f_in) {
        return Ok(None);
    }
    let (Some(w), Some(bias)) = (constant_f32(&filter), constant_bias(ctx, 2, out_c)) else {
        return Ok(None);
    };
    let Some(g) = geometry(ctx, out_shape, k_h, k_w, out_c) else {
        return Ok(None);
    };
    let isa = Isa::detect();
    let conv = Conv2dF32::new(g, &w, bias.as_deref(), clamp, isa)?;
    let pointwise = k_h == 1 && k_w == 1 && g.stride_h == 1 && g.stride_w == 1;
    let name = match (isa, pointwise) {
        (Isa::Portable, true) => "conv2d/f32/gemm/portable",
        (Isa::Portable, false) => "conv2d/f32/im2col-tile/portable",
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma, true) => "conv2d/f32/gemm/avx2",
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2Fma, false) => "conv2d/f32/im2col-tile/avx2",
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, true) => "conv2d/f32/gemm/avx512",
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, false) => "conv2d/f32/im2col-tile/avx512",
    };
    Ok(Some(Box::new(ConvKernel {
        conv,
        pool: shared_pool(ctx.threads),
        name,
    })))
}

struct DepthwiseKernel {
    dw: DepthwiseF32,
    pool: Arc<ThreadPool>,
    name: &'static str,
}

impl OpKernel for DepthwiseKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let (x, y) = io(inputs, outputs)?;
        self.dw.run(&self.pool, x, y)
    }
    fn name(&self) -> &str {
        self.name
    }
    /// Filter and bias live packed in the kernel.
    fn consumed_inputs(&self) -> &[usize] {
        &[1, 2]
    }
    fn memory_bytes(&self) -> usize {
        self.dw.weight_bytes()
    }
}

/// DEPTHWISE_CONV_2D, float32, constant filter `[1][kh][kw][c]`, multiplier 1.
pub fn try_depthwise(
    ctx: &PrepareCtx<'_>,
    out_shape: &[usize],
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let OpOptions::Conv(o) = &ctx.node.options else {
        return Ok(None);
    };
    let Some(clamp) = clamp_of(o.activation) else {
        return Ok(None);
    };
    let filter = ctx.input(1)?;
    let [1, k_h, k_w, out_c] = *filter.shape else {
        return Ok(None);
    };
    if !f32_io(ctx) || ctx.input(0)?.shape.get(3) != Some(&out_c) {
        return Ok(None);
    }
    let (Some(w), Some(bias)) = (constant_f32(&filter), constant_bias(ctx, 2, out_c)) else {
        return Ok(None);
    };
    let Some(g) = geometry(ctx, out_shape, k_h, k_w, out_c) else {
        return Ok(None);
    };
    let isa = Isa::detect();
    let dw = DepthwiseF32::new(g, &w, bias.as_deref(), clamp, isa)?;
    let name = match isa {
        Isa::Portable => "depthwise/f32/portable",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => "depthwise/f32/avx2",
    };
    Ok(Some(Box::new(DepthwiseKernel {
        dw,
        pool: shared_pool(ctx.threads),
        name,
    })))
}

struct FcKernel {
    packed: PackedB,
    clamp: (f32, f32),
    isa: Isa,
    pool: Arc<ThreadPool>,
    name: &'static str,
}

impl OpKernel for FcKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let (x, y) = io(inputs, outputs)?;
        let (k, n) = (self.packed.k, self.packed.n);
        if k == 0 || x.len() % k != 0 || y.len() != x.len() / k * n {
            return Err(KernelError::shape(format!(
                "fully connected: {} inputs and {} outputs for k={k}, n={n}",
                x.len(),
                y.len()
            )));
        }
        let m = x.len() / k;
        gemm(
            self.isa,
            &self.pool,
            m,
            x,
            k,
            self.packed.as_ref(),
            y,
            n,
            self.clamp,
        )
    }
    fn name(&self) -> &str {
        self.name
    }
    /// Filter and bias live packed in the kernel.
    fn consumed_inputs(&self) -> &[usize] {
        &[1, 2]
    }
    fn memory_bytes(&self) -> usize {
        self.packed.bytes()
    }
}

/// FULLY_CONNECTED, float32, constant weights `[out][in]` in the default layout.
pub fn try_fully_connected(
    ctx: &PrepareCtx<'_>,
    out_shape: &[usize],
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let OpOptions::FullyConnected {
        activation,
        weights_format: 0,
        ..
    } = ctx.node.options
    else {
        return Ok(None);
    };
    let Some(clamp) = clamp_of(activation) else {
        return Ok(None);
    };
    let weights = ctx.input(1)?;
    let [n, k] = *weights.shape else {
        return Ok(None);
    };
    let x = ctx.input(0)?;
    if !f32_io(ctx) || k == 0 || x.element_count() % k != 0 {
        return Ok(None);
    }
    if out_shape.iter().product::<usize>() != x.element_count() / k * n {
        return Ok(None);
    }
    let (Some(w), Some(bias)) = (constant_f32(&weights), constant_bias(ctx, 2, n)) else {
        return Ok(None);
    };
    let isa = Isa::detect();
    let packed = PackedB::from_nk(&w, n, k, bias.as_deref())?;
    let name = match isa {
        Isa::Portable => "fully_connected/f32/gemm/portable",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => "fully_connected/f32/gemm/avx2",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "fully_connected/f32/gemm/avx512",
    };
    Ok(Some(Box::new(FcKernel {
        packed,
        clamp,
        isa,
        pool: shared_pool(ctx.threads),
        name,
    })))
}

/// Shared by the op files' tests: the optimized resolver against the reference one on
/// one-op models, at one and two threads.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use switchyard_interpreter::{Interpreter, InterpreterOptions, Model, Tensor};

    use crate::CpuResolver;

    fn run(
        model: &Arc<Model>,
        inputs: &[Tensor],
        resolver: CpuResolver,
        threads: usize,
    ) -> (Vec<Tensor>, Vec<String>) {
        let options = InterpreterOptions {
            threads,
            ..Default::default()
        };
        let mut it = Interpreter::new(model.clone(), Arc::new(resolver), options).expect("prepare");
        it.set_profiling(true);
        let views: Vec<_> = inputs.iter().map(|t| t.view()).collect();
        let out = it.run(&views).expect("run");
        let kernels = it.profile().into_iter().map(|p| p.kernel).collect();
        (out, kernels)
    }

    /// Optimized outputs agree with the reference within 1e-4 relative (absolute below
    /// 1.0), and a kernel whose name starts with `kernel` ran.
    pub fn assert_optimized_matches_reference(
        case: &str,
        model: &[u8],
        inputs: &[Tensor],
        kernel: &str,
    ) {
        let model = Arc::new(Model::from_bytes(model).expect("model"));
        let (want, _) = run(&model, inputs, CpuResolver::reference(), 1);
        for threads in [1, 2] {
            let (got, kernels) = run(&model, inputs, CpuResolver::optimized(), threads);
            assert!(
                kernels.iter().any(|k| k.starts_with(kernel)),
                "{case}: expected a {kernel} kernel, ran {kernels:?}"
            );
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.shape, w.shape, "{case}");
                let (g, w) = (g.view(), w.view());
                let (g, w) = (g.f32s().expect("f32"), w.f32s().expect("f32"));
                for (i, (&x, &y)) in g.iter().zip(w).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                        "{case}, {threads} thread(s), element {i}: optimized {x}, reference {y}"
                    );
                }
            }
        }
    }
}
