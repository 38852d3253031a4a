//! PAD and PADV2 on float32 with constant paddings (and a constant pad value).

use switchyard_interpreter::{BuiltinOp as B, DType};

use super::{MAX_RANK, NodeView, const_ints, count_u32, pad_shape, u32_of};
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::PAD;

fn plan(v: &NodeView<'_>) -> Result<Vec<u32>, String> {
    let v2 = v.node.builtin() == Some(B::PadV2);
    if v2 {
        v.expect_arity(2, 3, 1)?;
    } else {
        v.expect_arity(2, 2, 1)?;
    }
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    let rank = x.shape.len();
    let paddings = const_ints(&v.input(1)?, "paddings")?;
    if paddings.len() != 2 * rank {
        return Err(format!("{} padding values for rank {rank}", paddings.len()));
    }
    let value = match v.optional_input(2) {
        Some(c) if v2 => {
            if c.dtype != DType::F32 || c.element_count() != 1 {
                return Err("the pad value must be one float32".into());
            }
            let d = c.data.ok_or("the pad value must be a constant")?;
            f32::from_le_bytes(
                d.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("pad value data is short")?,
            )
        }
        _ => 0.0,
    };
    let mut before = Vec::with_capacity(rank);
    let mut expected = Vec::with_capacity(rank);
    for d in 0..rank {
        let (b, a) = (paddings[2 * d], paddings[2 * d + 1]);
        if b < 0 || a < 0 {
            return Err(format!("negative padding {b}, {a} on axis {d}"));
        }
        let (b, a) = (b as usize, a as usize);
        before.push(b);
        expected.push(x.shape[d] + b + a);
    }
    if out.shape != expected.as_slice() {
        return Err(format!(
            "output shape {:?} should be {expected:?}",
            out.shape
        ));
    }
    let out_p = pad_shape(out.shape)?;
    let in_p = pad_shape(x.shape)?;
    let mut before_p = [0usize; MAX_RANK];
    before_p[MAX_RANK - rank..].copy_from_slice(&before);
    let mut params = vec![count_u32(out.shape)?, value.to_bits()];
    for d in out_p.iter().chain(&in_p).chain(&before_p) {
        params.push(u32_of(*d, "dimension")?);
    }
    Ok(params)
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let params = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let count = params[0];
    l.dispatch(Dispatch::new(
        &PAD,
        vec![x],
        out,
        params,
        Grid::Threads(count),
    ));
    Ok(())
}
