//! RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR on float32 NHWC with a constant size:
//! 8 x 8 output tiles, the input patch under a tile staged in workgroup memory.

use switchyard_interpreter::{BuiltinOp as B, DType, OpOptions};

use super::{NodeView, const_ints, count_u32, u32_of};
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::RESIZE;

/// Output tile side and channels per workgroup (the shader's TILE and CG).
const TILE: usize = 8;
const CHANNELS: usize = 4;

/// Input/output size ratio along one axis, as LiteRT computes it.
fn scale(input: usize, output: usize, align_corners: bool) -> f32 {
    if align_corners && output > 1 {
        (input - 1) as f32 / (output - 1) as f32
    } else {
        input as f32 / output as f32
    }
}

fn plan(v: &NodeView<'_>) -> Result<(Vec<u32>, [u32; 3]), String> {
    v.expect_arity(2, 2, 1)?;
    let bilinear = match v.node.builtin() {
        Some(B::ResizeBilinear) => true,
        Some(B::ResizeNearestNeighbor) => false,
        _ => return Err("not a resize".into()),
    };
    let OpOptions::Resize {
        align_corners,
        half_pixel_centers,
    } = v.node.options
    else {
        return Err("resize without its options".into());
    };
    if align_corners && half_pixel_centers {
        return Err("align_corners and half_pixel_centers cannot both be set".into());
    }
    let x = v.f32_input(0)?;
    let size = v.input(1)?;
    if size.dtype != DType::I32 {
        return Err(format!("size is {}, expected int32", size.dtype));
    }
    let out = v.f32_output(0)?;
    let &[n, ih, iw, c] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    let hw = const_ints(&size, "size")?;
    let &[h, w] = hw.as_slice() else {
        return Err(format!("size holds {} values, expected 2", hw.len()));
    };
    let (oh, ow) = match (usize::try_from(h), usize::try_from(w)) {
        (Ok(h), Ok(w)) if h > 0 && w > 0 => (h, w),
        _ => return Err(format!("output size {h}x{w} must be positive")),
    };
    if ih == 0 || iw == 0 {
        return Err(format!("cannot resize an empty image {:?}", x.shape));
    }
    if out.shape != [n, oh, ow, c] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, c]
        ));
    }
    count_u32(out.shape)?;
    count_u32(x.shape)?;
    let tiles_x = ow.div_ceil(TILE);
    let tiles_y = oh.div_ceil(TILE);
    let groups_x = u32_of(tiles_x * tiles_y * n, "tiles")?;
    let groups_y = u32_of(c.div_ceil(CHANNELS), "channel groups")?;
    if groups_x > 65_535 || groups_y > 65_535 {
        return Err(format!("{groups_x} x {groups_y} tiles exceed one dispatch"));
    }
    let mut params = Vec::with_capacity(13);
    for (d, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (c, "channels"),
        (oh, "height"),
        (ow, "width"),
    ] {
        params.push(u32_of(d, what)?);
    }
    params.push(scale(ih, oh, align_corners).to_bits());
    params.push(scale(iw, ow, align_corners).to_bits());
    params.push(u32::from(bilinear));
    params.push(u32::from(align_corners));
    params.push(u32::from(half_pixel_centers));
    params.push(tiles_x as u32);
    params.push(tiles_y as u32);
    Ok((params, [groups_x, groups_y, 1]))
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let (params, groups) = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    l.dispatch(Dispatch::new(
        &RESIZE,
        vec![x],
        out,
        params,
        Grid::Groups(groups),
    ));
    Ok(())
}
