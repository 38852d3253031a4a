//! RESHAPE, SQUEEZE and EXPAND_DIMS: no dispatch, the output is the input's buffer.

use super::NodeView;
use crate::gpu::ir::Lowering;

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    v.expect_arity(1, 2, 1)?;
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    if x.element_count() != out.element_count() {
        return Err(format!(
            "output shape {:?} does not hold the input's {} elements",
            out.shape,
            x.element_count()
        ));
    }
    Ok(())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    check(v)?;
    let x = l.input(0)?;
    l.alias_output(0, x)
}
