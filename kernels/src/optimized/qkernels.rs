//! The optimized int8 kernels as [`OpKernel`]s, for the op files' `prepare_optimized`
//! to pick after their reference `prepare_params` validated the node and fixed the
//! requantization (so both registries requantize with the same multipliers).

use std::sync::Arc;

use switchyard_interpreter::{
    KernelError, OpKernel, PrepareCtx, TensorView, TensorViewMut, kernel::input,
};

use super::conv::ConvGeom;
use super::pool::{ThreadPool, shared_pool};
use super::qconv::QConv;
use super::qgemm::{PackedQ, QIsa};
use crate::ops::conv2d::QuantOutput;

struct QConvKernel {
    conv: QConv,
    pool: Arc<ThreadPool>,
    name: String,
}

impl OpKernel for QConvKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.i8s()?;
        let y = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .i8s_mut()?;
        self.conv.run(&self.pool, x, y)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// int8 CONV_2D or FULLY_CONNECTED (as a 1×1 convolution): `w` is `[out_c][k_h][k_w]
/// [in_c]`, requantization from the reference's [`QuantOutput`].
pub(crate) fn conv_i8(
    ctx: &PrepareCtx<'_>,
    geom: ConvGeom,
    w: &[i8],
    bias: Option<&[i32]>,
    q: &QuantOutput,
) -> Result<Option<Box<dyn OpKernel>>, KernelError> {
    let k = geom.k_h * geom.k_w * geom.in_c;
    if w.len() != geom.out_c * k || q.multipliers.len() != geom.out_c {
        return Ok(None);
    }
    let Ok(input_zero) = i8::try_from(-q.input_offset) else {
        return Ok(None);
    };
    let packed = PackedQ::new(
        w,
        geom.out_c,
        k,
        bias,
        q.input_offset,
        &q.multipliers,
        &q.shifts,
        q.output_offset,
        q.act_min,
        q.act_max,
    )?;
    let isa = QIsa::detect();
    let what = if geom.k_h * geom.k_w == 1 {
        "gemm"
    } else {
        "im2col"
    };
    Ok(Some(Box::new(QConvKernel {
        conv: QConv {
            geom,
            packed,
            input_zero,
            isa,
        },
        pool: shared_pool(ctx.threads),
        name: format!("{}/i8/{what}/{}", ctx.op(), isa.name()).to_lowercase(),
    })))
}

pub(crate) struct QDepthwiseKernel {
    pub dw: super::qdepthwise::QDepthwise,
    pub pool: Arc<ThreadPool>,
    pub name: String,
}

impl OpKernel for QDepthwiseKernel {
    fn eval(
        &self,
        inputs: &[Option<TensorView<'_>>],
        outputs: &mut [TensorViewMut<'_>],
    ) -> Result<(), KernelError> {
        let x = input(inputs, 0)?.i8s()?;
        let y = outputs
            .first_mut()
            .ok_or_else(|| KernelError::invalid("missing output"))?
            .i8s_mut()?;
        self.dw.run(&self.pool, x, y)
    }

    fn name(&self) -> &str {
        &self.name
    }
}
