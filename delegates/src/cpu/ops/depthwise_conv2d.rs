//! Not implemented yet.

use switchyard_interpreter::{KernelError, PrepareCtx, PreparedKernel};

use crate::cpu::KernelMode;

pub fn prepare(ctx: &PrepareCtx<'_>, _mode: KernelMode) -> Result<PreparedKernel, KernelError> {
    Err(KernelError::unsupported(format!(
        "{} is not implemented yet",
        ctx.op()
    )))
}
